//! The engine's durable form: what survives a restart or a power cut.
//!
//! Deadlines are kept as wall-clock times here (a monotonic `Instant` means nothing after a
//! reboot); on restore a deadline that has passed fires at once. These records are plain data
//! with serde so the store can keep them as it likes; the engine never reads a file.

use serde::{Deserialize, Serialize};

use jiff::{SignedDuration, Timestamp};

use super::alert::Kind;
use super::time::wall_plus;

/// One alert as stored. Field meanings follow `alert::Alert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub kind: String,
    /// `open`, `acknowledged`, `on_scene` or `resolved`.
    pub state: String,
    /// The state's own deadline (`remind_at`, `lapse_at`, `remind_at`, `clear_at`).
    pub due: Timestamp,
    /// Only when open below the last tier.
    pub escalate_at: Option<Timestamp>,
    pub verify_until: Option<Timestamp>,
    pub cancel_requested: bool,
    pub tier: u8,
    pub device_id: Option<u32>,
    pub raised_at: Timestamp,
    pub updated_at: Timestamp,
    pub notified: Vec<String>,
    pub paged: Vec<String>,
    pub delivered_to: Vec<String>,
    pub declined: Vec<String>,
    pub acked_by: Option<String>,
    pub acked_at: Option<Timestamp>,
    pub on_scene_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<Timestamp>,
    pub resolution: Option<String>,
    pub battery_pct: Option<u8>,
    pub rssi: Option<i16>,
    /// The first seq and the latest ones (bounded: `alert::SEQS_KEPT`).
    pub seqs: Vec<u32>,
    /// A `gateway_fault`'s description of what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Band frames merged into the alert (records older than issue 19 read 0).
    #[serde(default)]
    pub presses: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_press_at: Option<Timestamp>,
    /// A coalesced press waiting to be paged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub press_due: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub device_fault_suspected: bool,
    /// A band's silence held to see whether many fall silent together.
    #[serde(default, skip_serializing_if = "is_false")]
    pub held: bool,
    /// The gateway notice that stands for this band's silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouped_in: Option<String>,
    /// Only on a gateway notice of many silent bands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_bands: Option<SilentBandsRecord>,
    /// The fallback ladders (`engine::fallback`); records older than issue 14 have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ladders: Vec<LadderRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<ContactRecord>,
}

/// `alert::Ladder` as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LadderRecord {
    pub staff_id: String,
    pub next: usize,
    pub due: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub held: bool,
}

/// `alert::Contact` as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    pub staff_id: String,
    pub channel: String,
    pub step: u8,
    pub at: Timestamp,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AlertRecord {
    /// A stored open SOS of band `device_id`, raised by its press `seq` at `raised_at`, at
    /// tier 1 and paged to nobody yet: due a minute later, escalating a minute after that.
    /// The one record literal: tests, benches and tools add what they need with struct update
    /// syntax (the engine's records come from its alerts, `Engine::take_changes`).
    pub fn sos(id: &str, device_id: u32, seq: u32, raised_at: Timestamp) -> AlertRecord {
        let at = |s: i64| wall_plus(raised_at, SignedDuration::from_secs(s));
        AlertRecord {
            id: id.to_string(),
            kind: Kind::Sos.as_str().to_string(),
            state: "open".into(),
            due: at(60),
            escalate_at: Some(at(120)),
            verify_until: None,
            cancel_requested: false,
            tier: 1,
            device_id: Some(device_id),
            raised_at,
            updated_at: at(1),
            notified: Vec::new(),
            paged: Vec::new(),
            delivered_to: Vec::new(),
            declined: Vec::new(),
            acked_by: None,
            acked_at: None,
            on_scene_at: None,
            resolved_by: None,
            resolved_at: None,
            resolution: None,
            battery_pct: Some(80),
            rssi: Some(-61),
            seqs: vec![seq],
            detail: None,
            presses: 1,
            last_press_at: None,
            press_due: None,
            device_fault_suspected: false,
            held: false,
            grouped_in: None,
            silent_bands: None,
            ladders: Vec::new(),
            contacts: Vec::new(),
        }
    }

    /// Paged to `people` (`notified` and `paged`).
    pub fn paged_to(self, people: &[&str]) -> AlertRecord {
        let people: Vec<String> = people.iter().map(|p| p.to_string()).collect();
        AlertRecord {
            notified: people.clone(),
            paged: people,
            ..self
        }
    }

    /// Whether this version can restore the record: its kind and state must be known ones.
    pub fn readable(&self) -> Result<(), String> {
        if Kind::parse(&self.kind).is_none() {
            return Err(format!("unknown alert kind {:?}", self.kind));
        }
        if !["open", "acknowledged", "on_scene", "resolved"].contains(&self.state.as_str()) {
            return Err(format!("unknown alert state {:?}", self.state));
        }
        Ok(())
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `alert::SilentBands` as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentBandsRecord {
    pub count: u32,
    pub still_silent: u32,
    pub named: Vec<u32>,
}

/// One band as stored: its replay window and what supervision remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: u32,
    pub window_top: Option<u32>,
    pub window_seen: u64,
    pub last_seen: Option<Timestamp>,
    pub battery_pct: Option<u8>,
    pub worn: Option<bool>,
    /// How many `device_silent` / `low_battery` alerts this band has had (for their ids).
    pub silent_count: u32,
    pub battery_count: u32,
    /// Local day of the last `low_battery` notice (`YYYY-MM-DD`).
    pub low_battery_day: Option<String>,
    /// A BTHome device's enrolment (`bthome::BtHomeDevice::enrolment`) when its counter was
    /// stored: a counter stored under another enrolment is forgotten at restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolment: Option<String>,
}

/// Counters that belong to the gateway as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetaRecord {
    pub test_count: u32,
    /// How many `gateway_fault` alerts this gateway raised (for their ids).
    #[serde(default)]
    pub fault_count: u32,
    /// How many gateway notices of many silent bands there were (for their ids).
    #[serde(default)]
    pub silent_groups: u32,
}

/// What changed since the last `Engine::take_changes`: write it in one transaction before
/// performing the outputs that go with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub alerts: Vec<AlertRecord>,
    /// Alerts whose retention ended: delete them.
    pub removed_alerts: Vec<String>,
    pub devices: Vec<DeviceRecord>,
    pub meta: Option<MetaRecord>,
}

impl Changes {
    /// These changes followed by `later`, as one set: what to write when a commit of `self`
    /// failed and must be retried with the next one. The later record of a band or alert
    /// wins, and an alert removed later is not written back.
    pub fn then(self, later: Changes) -> Changes {
        let mut alerts: Vec<AlertRecord> = self
            .alerts
            .into_iter()
            .filter(|a| {
                !later.removed_alerts.contains(&a.id) && !later.alerts.iter().any(|b| b.id == a.id)
            })
            .collect();
        let mut removed_alerts: Vec<String> = self
            .removed_alerts
            .into_iter()
            .filter(|id| {
                !later.alerts.iter().any(|b| &b.id == id) && !later.removed_alerts.contains(id)
            })
            .collect();
        let mut devices: Vec<DeviceRecord> = self
            .devices
            .into_iter()
            .filter(|d| !later.devices.iter().any(|e| e.device_id == d.device_id))
            .collect();
        alerts.extend(later.alerts);
        removed_alerts.extend(later.removed_alerts);
        devices.extend(later.devices);
        Changes {
            alerts,
            removed_alerts,
            devices,
            meta: later.meta.or(self.meta),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.removed_alerts.is_empty()
            && self.devices.is_empty()
            && self.meta.is_none()
    }
}

/// The whole durable state, as loaded at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub alerts: Vec<AlertRecord>,
    pub devices: Vec<DeviceRecord>,
    pub meta: MetaRecord,
}
