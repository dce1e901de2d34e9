//! The pure core: frames in, decisions out. No IO, no clock reads, no async, no tokio.
//!
//! Every input is a method call carrying `now`; every effect leaves as a value. That is what
//! lets tests drive years of simulated time in milliseconds and replay a log exactly.

pub mod alert;
pub mod bthome;
mod buttons;
mod device_map;
mod escalation;
pub mod fallback;
mod fault;
pub mod frame;
mod index;
mod record;
pub mod replay;
pub mod setup;
pub mod snapshot;
mod supervision;
pub mod time;

use device_map::DeviceMap;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use jiff::Timestamp;

pub use alert::{
    Action, Alert, Claim, Closure, Contact, ContactReport, ContactRequest, DeviceState, Grouping,
    Kind, Ladder, Next, NotifyReason, Outcome, Output, Presses, Refusal, Resolution, SilentBands,
    SilentDevice, State, SEQS_KEPT,
};
pub use buttons::BtHomeFrame;
pub use fallback::{OnDuty, PresenceRefusal};
pub use frame::{BandEvent, DeviceKey, Frame, Keyring, Reject};
pub use replay::ReplayWindow;
pub use setup::{
    Channel, Channels, Escalation, Fallback, Locale, Resident, Rota, Setup, Shift, Staff,
    Supervision, WearerCancel, CALL_GAP,
};
pub use snapshot::{AlertRecord, Changes, DeviceRecord, MetaRecord, Snapshot};
pub use supervision::SILENCES_PER_TIMEOUT;
pub use time::Now;

/// Quiet alerts' records per `take_background` batch the loop writes (once a second): small
/// enough that the write never holds an alarm back for long.
pub const BACKGROUND_BATCH: usize = 256;

/// Steps 1 to 6 of the wire spec: decode, authenticate, then the per-band replay window.
#[derive(Debug, Clone)]
pub struct Intake {
    company_id: u16,
    keys: Keyring,
    windows: DeviceMap<ReplayWindow>,
    rejected: [u64; Reject::ALL.len()],
    accepted: u64,
    /// BTHome devices warned about as `stale` since their last accepted frame.
    stale_warned: BTreeSet<u32>,
}

impl Intake {
    pub fn new(company_id: u16, keys: Keyring) -> Intake {
        Intake {
            company_id,
            keys,
            windows: DeviceMap::default(),
            rejected: [0; Reject::ALL.len()],
            accepted: 0,
            stale_warned: BTreeSet::new(),
        }
    }

    pub fn company_id(&self) -> u16 {
        self.company_id
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Accepts a frame only if it is authentic and new; counts every refusal by reason.
    pub fn accept(&mut self, data: &[u8]) -> Result<Frame, Reject> {
        let result = frame::open(data, self.company_id, &self.keys).and_then(|f| {
            self.windows.entry(f.device_id).or_default().accept(f.seq)?;
            Ok(f)
        });
        match result {
            Ok(_) => self.accepted += 1,
            Err(r) => self.rejected[r as usize] += 1,
        }
        result
    }

    /// A band's replay window, for the durable store.
    pub fn window(&self, device_id: u32) -> Option<ReplayWindow> {
        self.windows.get(&device_id).copied()
    }

    /// Every band's window, for the durable store.
    pub fn windows(&self) -> impl Iterator<Item = (u32, ReplayWindow)> + '_ {
        self.windows.iter().map(|(id, w)| (*id, *w))
    }

    /// Restores a window saved before a restart, so old frames stay refused.
    pub fn restore_window(&mut self, device_id: u32, window: ReplayWindow) {
        self.windows.insert(device_id, window);
    }

    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// How many frames were refused for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected[reason as usize]
    }
}

/// What a band's frame did, for the caller's log and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Authentic and new; `alert_id` names the alert it raised or updated, if any.
    Accepted {
        frame: Frame,
        alert_id: Option<String>,
    },
    Rejected(Reject),
}

/// Counters of refused or odd inputs, for the gateway status and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub refused_actions: BTreeMap<&'static str, u64>,
    pub unmatched_cancels: u64,
    pub rota_gaps: u64,
    /// Modem reports naming no recorded fallback step.
    pub unmatched_contact_reports: u64,
    /// Stored alerts restored although they described an impossible combination (a claim on
    /// an open alert, a resolved one without its resolution): repaired, logged, kept.
    pub repaired_records: u64,
}

/// The sans-IO engine: intake, escalation and supervision behind one API.
///
/// Inputs: `handle_frame`, `handle_action`, `raise_test`, `handle_timeout`, each with `Now`:
/// the monotonic `mono` (for deadlines) and the wall-clock `wall` (for documents and the rota).
/// Outputs: `poll_output` until `None`; then `take_changes` for the store; then sleep until
/// `poll_timeout`.
#[derive(Debug)]
pub struct Engine {
    setup: Setup,
    intake: Intake,
    alerts: BTreeMap<String, Alert>,
    /// `alerts` by band and by deadline.
    index: index::AlertIndex,
    devices: HashMap<u32, supervision::Band>,
    /// Silence deadlines of bands without an open `device_silent` alert.
    silence: BTreeSet<(Instant, u32)>,
    /// Silences held to see whether many bands fall silent together.
    held_silences: supervision::HeldSilences,
    outputs: VecDeque<Output>,
    dirty_alerts: BTreeSet<String>,
    removed_alerts: Vec<String>,
    /// Bands whose record must be written with the next alert commit: an alarm frame moved
    /// their replay window, or a counter in an alert id moved.
    urgent_devices: BTreeSet<u32>,
    /// Records of quiet alerts (silences the gateway notice stands for), their removals and
    /// their bands: written in batches by `take_background`, never with an alarm's commit
    /// (thousands of them would hold it back).
    background_alerts: BTreeSet<String>,
    background_removed: Vec<String>,
    background_devices: BTreeSet<u32>,
    /// Bands whose record changed by telemetry only (heartbeats): written in batches.
    dirty_devices: BTreeSet<u32>,
    /// Where the next `take_telemetry` starts in `dirty_devices`.
    telemetry_cursor: u32,
    meta: MetaRecord,
    meta_dirty: bool,
    counters: Counters,
    /// `now` of the last `handle_timeout`, so `poll_timeout` can be checked for progress.
    last_timeout: Option<Instant>,
    /// Alerts whose last claim change was their claimer's decline (which escalated), by
    /// alert id, with that person and the open state the escalation set: their next acks and
    /// declines page nobody and keep to those clocks. Cleared by any other event on the
    /// alert (a deadline, a band press, anyone else's action). At most one entry per alert.
    flapping: BTreeMap<String, (String, State)>,
    /// (alert id, person) told by a late ack who holds the claim: told once per claim.
    late_told: BTreeSet<(String, String)>,
    /// The duty consoles' presence (not durable: retained on the broker).
    presence: fallback::Presence,
    /// When each number was last called by a ladder (never two calls within `call_gap`).
    calls: BTreeMap<String, Instant>,
}

impl Engine {
    /// A fresh engine at start-up: every enrolled resident's band gets one full
    /// `silent_after` window before it can be reported silent.
    pub fn new(setup: Setup, intake: Intake, now: Instant) -> Engine {
        Engine::restore(
            setup,
            intake,
            Now {
                mono: now,
                wall: Timestamp::UNIX_EPOCH,
            },
            Snapshot::default(),
        )
    }

    /// An engine continuing from a stored snapshot (see `snapshot`): deadlines that passed
    /// while it was down are due at once, and so is one further ahead than its state allows
    /// (the wall clock went back while it was down: see `time::Limits`), with a warning.
    pub fn restore(setup: Setup, mut intake: Intake, now: Now, snapshot: Snapshot) -> Engine {
        let mut devices = HashMap::new();
        for d in &snapshot.devices {
            if intake.window_holds(d) {
                intake.restore_window(
                    d.device_id,
                    ReplayWindow::from_parts(d.window_top, d.window_seen),
                );
            }
            devices.insert(d.device_id, supervision::Band::from_record(d));
        }
        let limits = time::Limits::new(&setup);
        let mut repaired = 0;
        let alerts: BTreeMap<String, Alert> = snapshot
            .alerts
            .iter()
            .filter_map(|r| record::alert_from_record(r, now, &mut repaired))
            .map(|mut a| {
                for c in limits.clamp(&mut a, now.mono) {
                    tracing::warn!(
                        alert_id = a.id,
                        state = a.state.name(),
                        deadline = c.which,
                        ahead_s = c.ahead.as_secs(),
                        allowed_s = c.allowed.as_secs(),
                        "stored deadline is further ahead than its state allows (the clock went back while the gateway was down, or the setting was shortened): due now"
                    );
                }
                (a.id.clone(), a)
            })
            .collect();
        let mut index = index::AlertIndex::default();
        for a in alerts.values() {
            index.insert(a);
        }
        let mut engine = Engine {
            setup,
            intake,
            alerts,
            index,
            devices,
            silence: BTreeSet::new(),
            held_silences: supervision::HeldSilences::default(),
            outputs: VecDeque::new(),
            dirty_alerts: BTreeSet::new(),
            removed_alerts: Vec::new(),
            urgent_devices: BTreeSet::new(),
            background_alerts: BTreeSet::new(),
            background_removed: Vec::new(),
            background_devices: BTreeSet::new(),
            dirty_devices: BTreeSet::new(),
            telemetry_cursor: 0,
            meta: snapshot.meta,
            meta_dirty: false,
            counters: Counters {
                repaired_records: repaired,
                ..Counters::default()
            },
            last_timeout: None,
            flapping: BTreeMap::new(),
            late_told: BTreeSet::new(),
            presence: fallback::Presence::default(),
            calls: BTreeMap::new(),
        };
        engine.start_supervision(now.mono);
        engine.settle_after_restore(now);
        engine
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    pub fn intake(&self) -> &Intake {
        &self.intake
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Unresolved and recently resolved alerts, by id.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    pub fn alert(&self, id: &str) -> Option<&Alert> {
        self.alerts.get(id)
    }

    pub fn open_alerts(&self) -> usize {
        self.alerts.values().filter(|a| !a.is_resolved()).count()
    }

    /// Bands heard since `since` (wall clock).
    pub fn devices_heard_since(&self, since: Timestamp) -> usize {
        self.devices
            .values()
            .filter(|b| b.last_seen_wall.is_some_and(|t| t >= since))
            .count()
    }

    /// The next effect to perform, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Silent bands due to be noticed at `now` and not noticed yet (left for the next
    /// `handle_timeout`).
    pub fn silences_due(&self, now: Instant) -> usize {
        self.silence.range(..=(now, u32::MAX)).count()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.index.next_deadline(),
            self.silence.first().map(|(t, _)| *t),
            self.held_silences.until(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires every deadline at or before `now`, except that at most `SILENCES_PER_TIMEOUT`
    /// silent bands are noticed per call: the others stay due (`poll_timeout` at or before
    /// `now`, `silences_due` > 0) for the next call, which the caller makes after looking at
    /// its other inputs.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last_timeout = Some(now.mono);
        self.fire_silence(now);
        self.release_held_silences(now);
        self.fire_alert_deadlines(now);
    }

    /// A band's advertisement: intake, telemetry, then the alert it raises or touches.
    pub fn handle_frame(&mut self, now: Now, data: &[u8], rssi: Option<i16>) -> Heard {
        let frame = match self.intake.accept(data) {
            Ok(f) => f,
            Err(r) => return Heard::Rejected(r),
        };
        let alarm = !matches!(frame.event, BandEvent::Heartbeat { .. });
        self.heard_band(now, &frame, rssi, alarm);
        let alert_id = match frame.event {
            BandEvent::Sos => Some(self.raise_or_update(now, &frame, rssi, Kind::Sos)),
            BandEvent::Fall { .. } => Some(self.raise_or_update(now, &frame, rssi, Kind::Fall)),
            BandEvent::NoMotion { .. } => {
                Some(self.raise_or_update(now, &frame, rssi, Kind::NoMotion))
            }
            BandEvent::Cancel { of_seq } => self.wearer_cancel(now, frame.device_id, of_seq),
            BandEvent::Heartbeat { .. } => None,
        };
        Heard::Accepted { frame, alert_id }
    }

    /// What must be committed with the outputs just polled, in durable form: changed
    /// alerts, and the bands that go with them. Heartbeat-only band changes are left for
    /// `take_telemetry`, so an alert's commit stays small however many bands are heard.
    pub fn take_changes(&mut self, now: Now) -> Changes {
        let mut alerts = Vec::new();
        for id in std::mem::take(&mut self.dirty_alerts) {
            let Some(a) = self.alerts.get(&id) else {
                continue;
            };
            if a.is_quiet() {
                self.background_alerts.insert(id);
            } else {
                self.background_alerts.remove(&id);
                alerts.push(record::alert_record(a, now));
            }
        }
        let urgent = std::mem::take(&mut self.urgent_devices);
        for id in &urgent {
            self.dirty_devices.remove(id);
            self.background_devices.remove(id);
        }
        let devices = urgent
            .into_iter()
            .map(|id| self.device_record(id))
            .collect();
        Changes {
            alerts,
            removed_alerts: std::mem::take(&mut self.removed_alerts),
            devices,
            meta: std::mem::take(&mut self.meta_dirty).then_some(self.meta),
        }
    }

    /// Up to `max` bands whose record changed by telemetry only (replay window, battery,
    /// last seen), for a batched, lighter write. Empty when nothing is pending.
    /// Bands are taken in id order from where the last call stopped, wrapping round, so a
    /// band with a high id is written even while low ids keep changing.
    pub fn take_telemetry(&mut self, max: usize) -> Vec<DeviceRecord> {
        let from = self.telemetry_cursor;
        let ids: Vec<u32> = self
            .dirty_devices
            .range(from..)
            .chain(self.dirty_devices.range(..from))
            .take(max)
            .copied()
            .collect();
        for id in &ids {
            self.dirty_devices.remove(id);
        }
        self.telemetry_cursor = ids.last().map_or(0, |&id| id.wrapping_add(1));
        ids.into_iter().map(|id| self.device_record(id)).collect()
    }

    /// Up to `max` records of quiet alerts (and as many of their bands and removals), for a
    /// batched write off the alarms' path, e.g. with the telemetry. Empty when nothing waits.
    /// These are silences that one gateway notice stands for: a power cut may lose the last
    /// batch, and a band still silent after a restart is found silent again.
    pub fn take_background(&mut self, now: Now, max: usize) -> Changes {
        // Quiet alerts changed since the last commit wait here, not for the next alarm's.
        let alerts = &self.alerts;
        let quiet: Vec<String> = self
            .dirty_alerts
            .iter()
            .filter(|id| alerts.get(*id).is_some_and(Alert::is_quiet))
            .cloned()
            .collect();
        for id in quiet {
            self.dirty_alerts.remove(&id);
            self.background_alerts.insert(id);
        }
        let ids: Vec<String> = self.background_alerts.iter().take(max).cloned().collect();
        let mut alerts = Vec::with_capacity(ids.len());
        for id in ids {
            self.background_alerts.remove(&id);
            if let Some(a) = self.alerts.get(&id) {
                alerts.push(record::alert_record(a, now));
            }
        }
        let n = self.background_removed.len().min(max);
        let removed_alerts: Vec<String> = self.background_removed.drain(..n).collect();
        let bands: Vec<u32> = self.background_devices.iter().take(max).copied().collect();
        for id in &bands {
            self.background_devices.remove(id);
            self.dirty_devices.remove(id);
        }
        Changes {
            alerts,
            removed_alerts,
            devices: bands.into_iter().map(|id| self.device_record(id)).collect(),
            meta: None,
        }
    }

    /// A `take_background` batch that could not be written: taken again later.
    pub fn retake_background(&mut self, changes: &Changes) {
        for a in &changes.alerts {
            if self.alerts.contains_key(&a.id) {
                self.background_alerts.insert(a.id.clone());
            }
        }
        self.background_removed
            .extend(changes.removed_alerts.iter().cloned());
        self.background_devices
            .extend(changes.devices.iter().map(|d| d.device_id));
    }

    /// Bands of a `take_telemetry` batch that could not be written: taken again later.
    pub fn retake_telemetry(&mut self, device_ids: impl IntoIterator<Item = u32>) {
        self.dirty_devices.extend(device_ids);
    }

    /// The whole durable state (for tests and a full rewrite of the store).
    pub fn snapshot(&self, now: Now) -> Snapshot {
        let mut ids: Vec<u32> = self.devices.keys().copied().collect();
        ids.extend(self.intake.windows().map(|(id, _)| id));
        ids.sort_unstable();
        ids.dedup();
        Snapshot {
            alerts: self
                .alerts
                .values()
                .map(|a| record::alert_record(a, now))
                .collect(),
            devices: ids.into_iter().map(|id| self.device_record(id)).collect(),
            meta: self.meta,
        }
    }

    fn device_record(&self, id: u32) -> DeviceRecord {
        let window = self.intake.window(id).unwrap_or_default();
        let mut record = supervision::Band::record(self.devices.get(&id), id, window);
        record.enrolment = self.intake.enrolment_of(id);
        record
    }

    fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }
}
