//! The MQTT adapter: the only module that knows topics and JSON (see `spec/mqtt-contract.md`).
//!
//! - rendering engine outputs into `Publish`es (pure functions, here),
//! - parsing what duty phones send (`parse_ack`, here),
//! - the human one-line `text` of an alert (`text`),
//! - the broker connection with reconnects and PUBACK tracking (`link`).

pub mod guard;
mod link;
pub mod presence;
pub mod text;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::adapters::modem::ModemHealth;
use crate::engine::fallback::OnDuty;
use crate::engine::{
    Action, Alert, DeviceState, Grouping, Output, Resolution, Setup, SilentDevice,
};

pub use link::{
    connect, connect_with, tls_config, Broker, LinkEvent, MqttLink, MqttSettings,
    MAX_INCOMING_PACKET, PUBLISH_QUEUE,
};

/// Largest phone message parsed; anything longer is refused unread.
pub const MAX_ACK_PAYLOAD: usize = 4 * 1024;

/// The topic names under one prefix (`bandgate/{site_id}` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// `prefix` without a trailing slash (one is trimmed if given).
    pub fn new(prefix: impl Into<String>) -> Topics {
        let mut prefix = prefix.into();
        while prefix.ends_with('/') {
            prefix.pop();
        }
        Topics { prefix }
    }

    /// The contract's default prefix for a site.
    pub fn for_site(site_id: &str) -> Topics {
        Topics::new(format!("bandgate/{site_id}"))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn alert(&self, alert_id: &str) -> String {
        format!("{}/alerts/{alert_id}", self.prefix)
    }

    pub fn notify(&self, staff_id: &str) -> String {
        format!("{}/notify/{staff_id}", self.prefix)
    }

    pub fn status(&self, gateway_id: &str) -> String {
        format!("{}/gateways/{gateway_id}/status", self.prefix)
    }

    pub fn device_state(&self, device_id: u32) -> String {
        format!("{}/devices/{device_id}/state", self.prefix)
    }

    /// What the gateway subscribes to: every phone's ack topic.
    pub fn ack_filter(&self) -> String {
        format!("{}/ack/+", self.prefix)
    }

    /// The topic one phone writes to (the broker's ACL ties `{staff_id}` to its username).
    pub fn ack(&self, staff_id: &str) -> String {
        format!("{}/ack/{staff_id}", self.prefix)
    }

    /// The `{staff_id}` of an ack topic, if `topic` is one.
    pub fn ack_staff<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        let staff = rest.strip_prefix("/ack/")?;
        (!staff.is_empty() && !staff.contains('/')).then_some(staff)
    }
}

/// One message for the broker (also what the store's outbox keeps, as `OutboxMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

impl Publish {
    /// The payload as text (payloads are UTF-8 JSON or empty), for logs and tests.
    pub fn payload_str(&self) -> &str {
        std::str::from_utf8(&self.payload).unwrap_or("<binary>")
    }
}

/// RFC 3339 UTC with exactly three digits of milliseconds: `2026-11-23T03:44:14.120Z`.
pub fn format_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn time_opt(t: Option<Timestamp>) -> Option<String> {
    t.map(format_time)
}

#[derive(Serialize)]
struct ResidentDoc<'a> {
    id: &'a str,
    name: &'a str,
    address: &'a str,
    phone: &'a str,
    notes: &'a str,
}

/// The alert document, keys in the contract's order.
#[derive(Serialize)]
struct AlertDoc<'a> {
    alert_id: &'a str,
    kind: &'static str,
    state: &'static str,
    cancel_requested: bool,
    tier: u8,
    resident: Option<ResidentDoc<'a>>,
    device_id: Option<u32>,
    gateway_id: &'a str,
    raised_at: String,
    updated_at: String,
    notified: &'a [String],
    delivered_to: &'a [String],
    acked_by: Option<&'a str>,
    acked_at: Option<String>,
    on_scene_at: Option<String>,
    resolved_by: Option<&'a str>,
    resolved_at: Option<String>,
    resolution: Option<&'static str>,
    battery_pct: Option<u8>,
    rssi: Option<i16>,
    /// What the fallback ladder did (SMS, calls), oldest first.
    contacts: Vec<ContactDoc<'a>>,
    text: String,
    // Extensions (issue 19), after the contract's keys and only when they say something, so
    // an alert of one press reads exactly as the contract's example.
    /// Band presses merged into this alert, when more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    presses: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_press_at: Option<String>,
    /// The band pressed far faster than a person can: probably a broken band.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    device_fault_suspected: bool,
    /// The gateway notice of many silent bands.
    #[serde(skip_serializing_if = "Option::is_none")]
    silent_bands: Option<SilentBandsDoc<'a>>,
    // Extensions (issue 16), for the duty console: who declined (their phones stop ringing),
    // and the `[[staff]] name` of everyone the document names by id.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    declined: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    names: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct ContactDoc<'a> {
    staff_id: &'a str,
    channel: &'static str,
    step: u8,
    at: String,
    outcome: &'static str,
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct SilentBandsDoc<'a> {
    count: u32,
    still_silent: u32,
    /// A few of the bands, by device id.
    named: &'a [u32],
}

impl<'a> AlertDoc<'a> {
    fn new(alert: &'a Alert, setup: &'a Setup) -> AlertDoc<'a> {
        let resident = alert
            .device_id
            .and_then(|d| setup.resident(d))
            .map(|r| ResidentDoc {
                id: &r.id,
                name: &r.name,
                address: &r.address,
                phone: &r.phone,
                notes: &r.notes,
            });
        AlertDoc {
            alert_id: &alert.id,
            kind: alert.kind.as_str(),
            state: alert.state.name(),
            cancel_requested: alert.cancel_requested,
            tier: alert.tier,
            resident,
            device_id: alert.device_id,
            gateway_id: &setup.gateway_id,
            raised_at: format_time(alert.raised_at),
            updated_at: format_time(alert.updated_at),
            notified: &alert.notified,
            delivered_to: &alert.delivered_to,
            acked_by: alert.acked_by(),
            acked_at: time_opt(alert.acked_at()),
            on_scene_at: time_opt(alert.on_scene_at()),
            resolved_by: alert.resolved_by(),
            resolved_at: time_opt(alert.resolved_at()),
            resolution: alert.resolution().map(Resolution::as_str),
            battery_pct: alert.battery_pct,
            rssi: alert.rssi,
            contacts: alert
                .contacts
                .iter()
                .map(|c| ContactDoc {
                    staff_id: &c.staff_id,
                    channel: c.channel.as_str(),
                    step: c.step,
                    at: format_time(c.at),
                    outcome: c.outcome.as_str(),
                    detail: c.detail.as_deref(),
                })
                .collect(),
            text: text::summary(alert, setup),
            presses: (alert.presses.count > 1).then_some(alert.presses.count),
            last_press_at: (alert.presses.count > 1)
                .then_some(alert.presses.last_at)
                .flatten()
                .map(format_time),
            device_fault_suspected: alert.presses.fault_suspected,
            silent_bands: match &alert.grouping {
                Grouping::Notice(b) => Some(SilentBandsDoc {
                    count: b.count,
                    still_silent: b.still_silent,
                    named: &b.named,
                }),
                _ => None,
            },
            declined: &alert.declined,
            names: alert
                .notified
                .iter()
                .chain(&alert.declined)
                .map(String::as_str)
                .chain(alert.acked_by())
                .chain(alert.resolved_by())
                .filter_map(|id| setup.staff.get(id).map(|s| (id, s.name.as_str())))
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct NotifyDoc<'a> {
    reason: &'static str,
    alert: AlertDoc<'a>,
}

#[derive(Serialize)]
struct DeviceDoc<'a> {
    device_id: u32,
    resident_id: Option<&'a str>,
    /// `null` only for a silent band never heard since its records began.
    last_seen: Option<String>,
    gateway_id: &'a str,
    rssi: Option<i16>,
    battery_pct: Option<u8>,
    worn: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heart_rate: Option<Option<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spo2: Option<Option<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Option<u32>>,
    /// Extension (issue 19): the band was not heard for `silent_after`; present only then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    silent: bool,
}

fn json(doc: &impl Serialize) -> Vec<u8> {
    // Our own structs of strings and numbers: serialising them cannot fail.
    serde_json::to_vec(doc).expect("wire documents serialise")
}

/// The alert document alone, as published on `{p}/alerts/{alert_id}`.
pub fn alert_document(alert: &Alert, setup: &Setup) -> Vec<u8> {
    json(&AlertDoc::new(alert, setup))
}

/// What to publish for one engine output. Vital signs go out only with `publish_vitals`.
pub fn render(output: &Output, setup: &Setup, topics: &Topics, publish_vitals: bool) -> Publish {
    match output {
        Output::AlertChanged(alert) => Publish {
            topic: topics.alert(&alert.id),
            payload: alert_document(alert, setup),
            qos: 1,
            retain: true,
        },
        Output::Notify {
            staff_id,
            reason,
            alert,
        } => Publish {
            topic: topics.notify(staff_id),
            payload: json(&NotifyDoc {
                reason: reason.as_str(),
                alert: AlertDoc::new(alert, setup),
            }),
            qos: 1,
            retain: false,
        },
        Output::AlertCleared { alert_id } => Publish {
            topic: topics.alert(alert_id),
            payload: Vec::new(),
            qos: 1,
            retain: true,
        },
        Output::DeviceState(d) => Publish {
            topic: topics.device_state(d.device_id),
            payload: json(&device_doc(d, setup, publish_vitals)),
            qos: 0,
            retain: true,
        },
        Output::DeviceSilent(d) => Publish {
            topic: topics.device_state(d.device_id),
            payload: json(&silent_doc(d, setup)),
            qos: 0,
            retain: true,
        },
        // Not for the broker: the daemon hands contacts to the modem before rendering. Should
        // one get here, the alert's document is the harmless thing to publish.
        Output::Contact(r) => Publish {
            topic: topics.alert(&r.alert.id),
            payload: alert_document(&r.alert, setup),
            qos: 1,
            retain: true,
        },
    }
}

fn device_doc<'a>(d: &DeviceState, setup: &'a Setup, publish_vitals: bool) -> DeviceDoc<'a> {
    let vital = |v| publish_vitals.then_some(v);
    DeviceDoc {
        device_id: d.device_id,
        resident_id: setup.resident(d.device_id).map(|r| r.id.as_str()),
        last_seen: Some(format_time(d.last_seen)),
        gateway_id: &setup.gateway_id,
        rssi: d.rssi,
        battery_pct: Some(d.battery_pct),
        worn: Some(d.worn),
        heart_rate: vital(d.heart_rate),
        spo2: vital(d.spo2),
        steps: publish_vitals.then_some(d.steps),
        silent: false,
    }
}

fn silent_doc<'a>(d: &SilentDevice, setup: &'a Setup) -> DeviceDoc<'a> {
    DeviceDoc {
        device_id: d.device_id,
        resident_id: setup.resident(d.device_id).map(|r| r.id.as_str()),
        last_seen: d.last_seen.map(format_time),
        gateway_id: &setup.gateway_id,
        rssi: None,
        battery_pct: d.battery_pct,
        worn: d.worn,
        heart_rate: None,
        spo2: None,
        steps: None,
        silent: true,
    }
}

/// What the gateway says about itself on `{p}/gateways/{gateway_id}/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    pub gateway_id: String,
    pub started_at: Timestamp,
    /// The radio adapter's name (`hci0`), or the source (`replay`, `simulate`).
    pub adapter: String,
    pub adapter_ok: bool,
    /// The radio's scan in force (`active`, `passive`, `active-fallback`); empty (left out)
    /// for the replay and simulated sources.
    pub scan: &'static str,
    pub devices_enrolled: usize,
    pub devices_heard_15m: usize,
    pub open_alerts: usize,
    pub outbox_len: usize,
    /// Frames that were authentic and new since start (the engine's intake).
    pub frames_accepted: u64,
    /// Telemetry adverts dropped since start because the loop fell behind.
    pub telemetry_dropped: u64,
    /// The durable store is failing or was lost (`state: degraded`; see `gateway_fault`).
    pub degraded: bool,
    /// The fallback ladder's modem; `None` without `[fallback]` (the key is left out).
    pub modem: Option<ModemHealth>,
    /// Who is on duty now and whether a live, armed duty console is there.
    pub on_duty: Vec<OnDuty>,
}

#[derive(Serialize)]
struct StatusDoc<'a> {
    online: bool,
    gateway_id: &'a str,
    version: &'static str,
    started_at: String,
    adapter: &'a str,
    adapter_ok: bool,
    /// Extension (issue 13): `active`, `passive`, or `active-fallback` (passive scanning is
    /// configured but BlueZ could not give it); left out for replay and simulation.
    #[serde(skip_serializing_if = "str::is_empty")]
    scan: &'a str,
    devices_enrolled: usize,
    devices_heard_15m: usize,
    open_alerts: usize,
    outbox_len: usize,
    frames_accepted: u64,
    telemetry_dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    modem: Option<&'a ModemHealth>,
    /// Extension (issue 14): each person on duty now, `console` true (a live, armed duty
    /// console), false (every console gone) or null (never published presence).
    on_duty: &'a [OnDuty],
    state: &'static str,
}

/// The retained "online" status document.
pub fn status(topics: &Topics, s: &GatewayStatus) -> Publish {
    Publish {
        topic: topics.status(&s.gateway_id),
        payload: json(&StatusDoc {
            online: true,
            gateway_id: &s.gateway_id,
            version: env!("CARGO_PKG_VERSION"),
            started_at: format_time(s.started_at),
            adapter: &s.adapter,
            adapter_ok: s.adapter_ok,
            scan: s.scan,
            devices_enrolled: s.devices_enrolled,
            devices_heard_15m: s.devices_heard_15m,
            open_alerts: s.open_alerts,
            outbox_len: s.outbox_len,
            frames_accepted: s.frames_accepted,
            telemetry_dropped: s.telemetry_dropped,
            modem: s.modem.as_ref(),
            on_duty: &s.on_duty,
            state: if s.degraded { "degraded" } else { "ok" },
        }),
        qos: 1,
        retain: true,
    }
}

#[derive(Serialize)]
struct OfflineDoc<'a> {
    online: bool,
    gateway_id: &'a str,
}

/// The MQTT last will: the broker publishes it (retained) when the gateway vanishes.
pub fn last_will(topics: &Topics, gateway_id: &str) -> Publish {
    Publish {
        topic: topics.status(gateway_id),
        payload: json(&OfflineDoc {
            online: false,
            gateway_id,
        }),
        qos: 1,
        retain: true,
    }
}

/// A phone's action on an alert, as read from `{p}/ack/{staff_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneAck {
    /// From the topic (the broker's ACL ties it to the phone's username), never the payload.
    pub staff_id: String,
    pub alert_id: String,
    pub action: Action,
    pub note: Option<String>,
}

/// Why a phone message was ignored. `as_str` is the reason code logged and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("not an ack topic: {0}")]
    WrongTopic(String),
    #[error("payload of {0} bytes is over the {MAX_ACK_PAYLOAD} byte limit")]
    TooLarge(usize),
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("alert_id missing or empty")]
    MissingAlertId,
    #[error("action missing")]
    MissingAction,
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("resolve without a resolution")]
    MissingResolution,
    #[error("unknown resolution {0:?}")]
    UnknownResolution(String),
}

impl AckError {
    pub fn as_str(&self) -> &'static str {
        match self {
            AckError::WrongTopic(_) => "wrong_topic",
            AckError::TooLarge(_) => "too_large",
            AckError::Malformed(_) => "malformed_json",
            AckError::MissingAlertId => "missing_alert_id",
            AckError::MissingAction => "missing_action",
            AckError::UnknownAction(_) => "unknown_action",
            AckError::MissingResolution => "missing_resolution",
            AckError::UnknownResolution(_) => "unknown_resolution",
        }
    }
}

/// The phone's JSON; unknown keys are ignored, as the contract requires.
#[derive(Deserialize)]
struct AckWire {
    alert_id: Option<String>,
    action: Option<String>,
    resolution: Option<String>,
    note: Option<String>,
}

/// Reads one phone message. Never panics, whatever the bytes.
pub fn parse_ack(topics: &Topics, topic: &str, payload: &[u8]) -> Result<PhoneAck, AckError> {
    let staff_id = topics
        .ack_staff(topic)
        .ok_or_else(|| AckError::WrongTopic(topic.to_owned()))?;
    if payload.len() > MAX_ACK_PAYLOAD {
        return Err(AckError::TooLarge(payload.len()));
    }
    let wire: AckWire =
        serde_json::from_slice(payload).map_err(|e| AckError::Malformed(e.to_string()))?;
    let alert_id = wire
        .alert_id
        .filter(|a| !a.is_empty())
        .ok_or(AckError::MissingAlertId)?;
    let action = match wire.action.as_deref().ok_or(AckError::MissingAction)? {
        "delivered" => Action::Delivered,
        "ack" => Action::Ack,
        "decline" => Action::Decline,
        "on_scene" => Action::OnScene,
        "resolve" => {
            let code = wire.resolution.ok_or(AckError::MissingResolution)?;
            Action::Resolve(Resolution::parse(&code).ok_or(AckError::UnknownResolution(code))?)
        }
        other => return Err(AckError::UnknownAction(other.to_owned())),
    };
    Ok(PhoneAck {
        staff_id: staff_id.to_owned(),
        alert_id,
        action,
        note: wire.note,
    })
}

#[cfg(test)]
mod tests;
