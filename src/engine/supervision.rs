//! Watching the bands themselves: telemetry, silent bands, low batteries.
//!
//! A band not heard for `silent_after` raises `device_silent` (never before one full window
//! since start-up, so a restart does not page about every band at once); it clears itself
//! when the band is heard again. A battery under `low_battery_pct` raises one `low_battery`
//! notice per band per local day.
//!
//! Many bands falling silent together is one problem (a dead radio, a jammed building), not
//! thousands: a band's silence is held for `SILENCE_WINDOW`; when more than `HANDFUL` are held
//! together, one gateway notice (`gateway-{gateway_id}-silent-{n}`, kind `device_silent`, no
//! band) pages tier 1 for all of them, naming a few, and each band's own `device_silent` alert
//! stays open but quiet (stored, listed, never published or paged). While that notice is open,
//! further silences join it. A band heard again clears its own alert quietly; the notice
//! resolves when the last of its bands is heard. Emergencies never pass through here.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::alert::{
    Alert, DeviceState, Grouping, Kind, Output, Resolution, SilentBands, SilentDevice,
};
use super::frame::{BandEvent, Frame};
use super::replay::ReplayWindow;
use super::snapshot::DeviceRecord;
use super::time::later;
use super::time::Now;
use super::Engine;

/// A band's battery must fall this many points before its state is re-published early.
const BATTERY_STEP: u8 = 5;

/// How long a band's silence is held to see whether others fall silent with it.
pub const SILENCE_WINDOW: Duration = Duration::from_secs(10);
/// Silences noticed per `handle_timeout`: when thousands of bands fall silent at once (a dead
/// adapter), the rest stay due for the next call, so the loop looks at its alarm lane in
/// between instead of opening every quiet alert in one turn.
pub const SILENCES_PER_TIMEOUT: usize = 512;
/// More silences than this within one window make one gateway notice.
pub const HANDFUL: usize = 5;
/// Bands named in the gateway notice.
pub const NAMED: usize = 5;

/// Silences held until `until`, and the gateway notice that new silences join while it is open.
#[derive(Debug, Default)]
pub(super) struct HeldSilences {
    until: Option<Instant>,
    ids: Vec<String>,
    notice: Option<String>,
}

impl HeldSilences {
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

/// What supervision takes from an accepted frame, whatever its format.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeardDevice {
    pub device_id: u32,
    pub battery_pct: u8,
    pub worn: bool,
    /// Heart rate, SpO2, steps (a band's heartbeat only).
    pub vitals: (Option<u8>, Option<u8>, Option<u32>),
}

#[derive(Debug, Clone, Default)]
pub(super) struct Band {
    pub last_seen: Option<Instant>,
    pub last_seen_wall: Option<Timestamp>,
    pub battery_pct: Option<u8>,
    pub worn: Option<bool>,
    /// Battery and worn as last published, and when.
    published: Option<(Instant, u8, bool)>,
    silence_due: Option<Instant>,
    silent_count: u32,
    battery_count: u32,
    low_battery_day: Option<String>,
}

impl Band {
    pub fn from_record(r: &DeviceRecord) -> Band {
        Band {
            last_seen_wall: r.last_seen,
            battery_pct: r.battery_pct,
            worn: r.worn,
            silent_count: r.silent_count,
            battery_count: r.battery_count,
            low_battery_day: r.low_battery_day.clone(),
            ..Band::default()
        }
    }

    pub fn record(band: Option<&Band>, device_id: u32, window: ReplayWindow) -> DeviceRecord {
        let (window_top, window_seen) = window.to_parts();
        let empty = Band::default();
        let b = band.unwrap_or(&empty);
        DeviceRecord {
            device_id,
            window_top,
            window_seen,
            last_seen: b.last_seen_wall,
            battery_pct: b.battery_pct,
            worn: b.worn,
            silent_count: b.silent_count,
            battery_count: b.battery_count,
            low_battery_day: b.low_battery_day.clone(),
            enrolment: None,
        }
    }
}

impl Engine {
    /// Arms the silence watch of every resident's band that has no open `device_silent`.
    pub(super) fn start_supervision(&mut self, now: Instant) {
        // Restored silences: held ones are held again, and an open notice is joined again.
        for a in self.alerts.values().filter(|a| !a.is_resolved()) {
            match a.grouping {
                Grouping::Held => {
                    self.held_silences.ids.push(a.id.clone());
                    self.held_silences.until = Some(later(now, SILENCE_WINDOW));
                }
                Grouping::Notice(_) => self.held_silences.notice = Some(a.id.clone()),
                _ => {}
            }
        }
        let ids: Vec<u32> = self.setup.residents.keys().copied().collect();
        for id in ids {
            if self
                .open_alert_of(id, |k| k == Kind::DeviceSilent)
                .is_none()
            {
                self.arm_silence(id, now);
            }
        }
    }

    /// Arms the device's silence watch `silent_after` from `now` (its own for a BTHome device;
    /// none at all for one whose `silent_after` is off).
    fn arm_silence(&mut self, device_id: u32, now: Instant) {
        let due = self.silent_after_of(device_id).map(|d| later(now, d));
        let band = self.devices.entry(device_id).or_default();
        let old = std::mem::replace(&mut band.silence_due, due);
        if let Some(old) = old {
            self.silence.remove(&(old, device_id));
        }
        if let Some(due) = due {
            self.silence.insert((due, device_id));
        }
    }

    /// Telemetry of an accepted frame; clears a `device_silent` of this band.
    pub(super) fn heard_band(&mut self, now: Now, frame: &Frame, rssi: Option<i16>, alarm: bool) {
        let vitals = match frame.event {
            BandEvent::Heartbeat {
                heart_rate,
                spo2,
                steps,
            } => (heart_rate, spo2, Some(steps)),
            _ => (None, None, None),
        };
        let heard = HeardDevice {
            device_id: frame.device_id,
            battery_pct: frame.battery_pct,
            worn: frame.worn,
            vitals,
        };
        self.heard_device(now, &heard, rssi, alarm);
    }

    /// Telemetry of an accepted frame of any format (a band's, a BTHome device's).
    pub(super) fn heard_device(
        &mut self,
        now: Now,
        frame: &HeardDevice,
        rssi: Option<i16>,
        alarm: bool,
    ) {
        let id = frame.device_id;
        let interval = self.setup.device_state_interval;
        // A silent band's device state says it is silent: the first frame heard replaces it.
        let was_silent = self
            .open_alert_of(id, |k| k == Kind::DeviceSilent)
            .is_some();
        let band = self.devices.entry(id).or_default();
        band.last_seen = Some(now.mono);
        band.last_seen_wall = Some(now.wall);
        band.battery_pct = Some(frame.battery_pct);
        band.worn = Some(frame.worn);
        let publish = match band.published {
            _ if was_silent => true,
            None => true,
            Some((at, battery, worn)) => {
                worn != frame.worn
                    || battery.saturating_sub(frame.battery_pct) >= BATTERY_STEP
                    || now.mono.saturating_duration_since(at) >= interval
            }
        };
        if publish {
            band.published = Some((now.mono, frame.battery_pct, frame.worn));
        }
        // The replay window moves on every accepted frame, so the band is always dirty: an
        // alarm's band is written with its alert, a heartbeat's in the next telemetry batch.
        if alarm {
            self.urgent_devices.insert(id);
        } else {
            self.dirty_devices.insert(id);
        }
        if publish {
            let (heart_rate, spo2, steps) = frame.vitals;
            self.emit(Output::DeviceState(DeviceState {
                device_id: id,
                last_seen: now.wall,
                rssi,
                battery_pct: frame.battery_pct,
                worn: frame.worn,
                heart_rate,
                spo2,
                steps,
            }));
        }
        if self.setup.residents.contains_key(&id) {
            self.arm_silence(id, now.mono);
        }
        if let Some(alert_id) = self.open_alert_of(id, |k| k == Kind::DeviceSilent) {
            self.silent_band_heard(now, id, &alert_id);
        }
        if frame.battery_pct < self.setup.supervision.low_battery_pct {
            self.low_battery(now, id, frame.battery_pct, rssi);
        }
    }

    fn low_battery(&mut self, now: Now, id: u32, battery: u8, rssi: Option<i16>) {
        let today = self.setup.rota.local_day(now.wall).to_string();
        if self.open_alert_of(id, |k| k == Kind::LowBattery).is_some() {
            return;
        }
        let band = self.devices.entry(id).or_default();
        if band.low_battery_day.as_deref() == Some(today.as_str()) {
            return;
        }
        band.low_battery_day = Some(today);
        band.battery_count += 1;
        let alert_id = format!("{id}-battery-{}", band.battery_count);
        self.urgent_devices.insert(id);
        tracing::info!(
            alert_id,
            device_id = id,
            battery_pct = battery,
            "battery low"
        );
        let alert = Alert::new(alert_id, Kind::LowBattery, now).of_band(id, Some(battery), rssi);
        self.open_alert(now, alert);
    }

    /// Opens a quiet `device_silent` for every band whose silence is due: held for
    /// `SILENCE_WINDOW`, or joined to the open gateway notice.
    pub(super) fn fire_silence(&mut self, now: Now) {
        let notice = self.open_notice();
        let mut joined: Vec<u32> = Vec::new();
        let mut noticed = 0;
        while let Some(&(due, id)) = self.silence.first() {
            if due > now.mono || noticed == SILENCES_PER_TIMEOUT {
                break;
            }
            noticed += 1;
            self.silence.remove(&(due, id));
            let band = self.devices.entry(id).or_default();
            band.silence_due = None;
            band.silent_count += 1;
            let alert_id = format!("{id}-silent-{}", band.silent_count);
            let battery = band.battery_pct;
            let silent = SilentDevice {
                device_id: id,
                last_seen: band.last_seen_wall,
                battery_pct: band.battery_pct,
                worn: band.worn,
            };
            // Written with its quiet alert, in the background batches.
            self.background_devices.insert(id);
            tracing::debug!(
                alert_id,
                device_id = id,
                "band not heard for silent_after; held to see whether others fall silent with it"
            );
            let mut alert =
                Alert::new(alert_id.clone(), Kind::DeviceSilent, now).of_band(id, battery, None);
            match &notice {
                Some(n) => {
                    alert.grouping = Grouping::In(n.clone());
                    joined.push(id);
                }
                None => {
                    alert.grouping = Grouping::Held;
                    self.held_silences.ids.push(alert_id);
                    self.held_silences
                        .until
                        .get_or_insert(later(now.mono, SILENCE_WINDOW));
                }
            }
            self.open_alert(now, alert);
            self.emit(Output::DeviceSilent(silent));
        }
        if let (Some(n), false) = (notice, joined.is_empty()) {
            let by = u32::try_from(joined.len()).unwrap_or(u32::MAX);
            self.grow_notice(&n, by, &joined);
            self.republish(now, &n);
        }
    }

    /// A gateway notice that a person resolved while some of its bands are still silent
    /// (the radio was mended, but a band is really dead or its wearer gone): those bands no
    /// longer have anything standing for them, so each is paged on its own from now on.
    pub(super) fn release_notice(&mut self, now: Now, notice: &str) {
        let resolved_notice = self
            .alerts
            .get(notice)
            .is_some_and(|a| a.is_resolved() && matches!(a.grouping, Grouping::Notice(_)));
        if !resolved_notice {
            return;
        }
        let member = Grouping::In(notice.to_string());
        let still_silent: Vec<String> = self
            .alerts
            .values()
            .filter(|a| !a.is_resolved() && a.grouping == member)
            .map(|a| a.id.clone())
            .collect();
        for id in still_silent {
            self.page_alone(now, &id);
        }
    }

    /// The gateway notice of many silent bands, while it is unresolved.
    fn open_notice(&self) -> Option<String> {
        let id = self.held_silences.notice.as_ref()?;
        let a = self.alerts.get(id)?;
        (!a.is_resolved()).then(|| id.clone())
    }

    fn grow_notice(&mut self, notice: &str, by: u32, devices: &[u32]) {
        if let Some(a) = self.alerts.get_mut(notice) {
            if let Grouping::Notice(b) = &mut a.grouping {
                b.count = b.count.saturating_add(by);
                b.still_silent = b.still_silent.saturating_add(by);
                for d in devices {
                    if b.named.len() < NAMED {
                        b.named.push(*d);
                    }
                }
                self.dirty_alerts.insert(notice.to_string());
            }
        }
    }

    /// At the end of the window: a handful of silences are paged one by one; more make one
    /// gateway notice that stands for them all.
    pub(super) fn release_held_silences(&mut self, now: Now) {
        if self.held_silences.until.is_none_or(|t| t > now.mono) {
            return;
        }
        self.held_silences.until = None;
        let ids: Vec<String> = std::mem::take(&mut self.held_silences.ids)
            .into_iter()
            .filter(|id| {
                self.alerts
                    .get(id)
                    .is_some_and(|a| !a.is_resolved() && a.grouping == Grouping::Held)
            })
            .collect();
        if ids.is_empty() {
            return;
        }
        let devices: Vec<u32> = ids
            .iter()
            .filter_map(|id| self.alerts.get(id).and_then(|a| a.device_id))
            .collect();
        let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let existing = self.open_notice();
        if existing.is_none() && ids.len() <= HANDFUL {
            for id in &ids {
                self.page_alone(now, id);
            }
            return;
        }
        let notice = existing.clone().unwrap_or_else(|| {
            self.meta.silent_groups += 1;
            self.meta_dirty = true;
            format!(
                "gateway-{}-silent-{}",
                self.setup.gateway_id, self.meta.silent_groups
            )
        });
        for id in &ids {
            if let Some(a) = self.alerts.get_mut(id) {
                a.grouping = Grouping::In(notice.clone());
                self.dirty_alerts.insert(id.clone());
            }
        }
        if existing.is_some() {
            self.grow_notice(&notice, count, &devices);
            self.republish(now, &notice);
            return;
        }
        tracing::warn!(
            alert_id = notice,
            bands = ids.len(),
            named = ?&devices[..devices.len().min(NAMED)],
            "many bands fell silent together: one notice for all of them (radio or adapter?)"
        );
        let mut alert = Alert::new(notice.clone(), Kind::DeviceSilent, now);
        alert.grouping = Grouping::Notice(SilentBands {
            count,
            still_silent: count,
            named: devices.iter().take(NAMED).copied().collect(),
        });
        self.held_silences.notice = Some(notice);
        self.open_alert(now, alert);
    }

    /// A band whose `device_silent` is open was heard: the alert clears (quietly when the
    /// gateway notice stands for it; the notice resolves with its last band).
    fn silent_band_heard(&mut self, now: Now, device_id: u32, alert_id: &str) {
        let grouping = self.alerts.get(alert_id).map(|a| a.grouping.clone());
        match &grouping {
            Some(Grouping::In(_) | Grouping::Held) => tracing::debug!(
                alert_id,
                device_id,
                "band heard again; its grouped device_silent clears"
            ),
            _ => tracing::info!(
                alert_id,
                device_id,
                "band heard again; device_silent clears"
            ),
        }
        self.resolve(now, alert_id, "gateway", Resolution::DeviceFault);
        let Some(Grouping::In(notice)) = grouping else {
            return;
        };
        let mut last = false;
        if let Some(a) = self.alerts.get_mut(&notice) {
            if let Grouping::Notice(b) = &mut a.grouping {
                b.still_silent = b.still_silent.saturating_sub(1);
                last = b.still_silent == 0 && !a.is_resolved();
                self.dirty_alerts.insert(notice.clone());
            }
        }
        if last {
            tracing::info!(
                alert_id = notice,
                "every band of the notice heard again; the notice clears"
            );
            self.resolve(now, &notice, "gateway", Resolution::DeviceFault);
        }
    }

    /// The unresolved alert of `device_id` whose kind satisfies `kind`.
    pub(super) fn open_alert_of(
        &self,
        device_id: u32,
        kind: impl Fn(Kind) -> bool,
    ) -> Option<String> {
        self.index
            .of_device(device_id)
            .filter_map(|id| self.alerts.get(id))
            .find(|a| !a.is_resolved() && kind(a.kind))
            .map(|a| a.id.clone())
    }
}
