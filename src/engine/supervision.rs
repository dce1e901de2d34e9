//! Watching the bands themselves: telemetry, silent bands, low batteries.
//!
//! A band not heard for `silent_after` raises `device_silent` (never before one full window
//! since start-up, so a restart does not page about every band at once); it clears itself
//! when the band is heard again. A battery under `low_battery_pct` raises one `low_battery`
//! notice per band per local day.

use std::time::Instant;

use jiff::Timestamp;

use super::alert::{DeviceState, Kind, Output, Resolution};
use super::frame::{BandEvent, Frame};
use super::replay::ReplayWindow;
use super::snapshot::DeviceRecord;
use super::time::later;
use super::Engine;

/// A band's battery must fall this many points before its state is re-published early.
const BATTERY_STEP: u8 = 5;

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
        }
    }
}

impl Engine {
    /// Arms the silence watch of every resident's band that has no open `device_silent`.
    pub(super) fn start_supervision(&mut self, now: Instant) {
        let ids: Vec<u32> = self.setup.residents.keys().copied().collect();
        for id in ids {
            if self
                .open_alert_of(id, |k| k == Kind::DeviceSilent)
                .is_none()
            {
                self.arm_silence(id, later(now, self.setup.supervision.silent_after));
            }
        }
    }

    fn arm_silence(&mut self, device_id: u32, due: Instant) {
        let band = self.devices.entry(device_id).or_default();
        if let Some(old) = band.silence_due.replace(due) {
            self.silence.remove(&(old, device_id));
        }
        self.silence.insert((due, device_id));
    }

    /// Telemetry of an accepted frame; clears a `device_silent` of this band.
    pub(super) fn heard_band(
        &mut self,
        now: Instant,
        wall: Timestamp,
        frame: &Frame,
        rssi: Option<i16>,
        alarm: bool,
    ) {
        let id = frame.device_id;
        let interval = self.setup.device_state_interval;
        let band = self.devices.entry(id).or_default();
        band.last_seen = Some(now);
        band.last_seen_wall = Some(wall);
        band.battery_pct = Some(frame.battery_pct);
        band.worn = Some(frame.worn);
        let publish = match band.published {
            None => true,
            Some((at, battery, worn)) => {
                worn != frame.worn
                    || battery.saturating_sub(frame.battery_pct) >= BATTERY_STEP
                    || now.saturating_duration_since(at) >= interval
            }
        };
        if publish {
            band.published = Some((now, frame.battery_pct, frame.worn));
        }
        // The replay window moves on every accepted frame, so the band is always dirty: an
        // alarm's band is written with its alert, a heartbeat's in the next telemetry batch.
        if alarm {
            self.urgent_devices.insert(id);
        } else {
            self.dirty_devices.insert(id);
        }
        if publish {
            let (heart_rate, spo2, steps) = match frame.event {
                BandEvent::Heartbeat {
                    heart_rate,
                    spo2,
                    steps,
                } => (heart_rate, spo2, Some(steps)),
                _ => (None, None, None),
            };
            self.emit(Output::DeviceState(DeviceState {
                device_id: id,
                last_seen: wall,
                rssi,
                battery_pct: frame.battery_pct,
                worn: frame.worn,
                heart_rate,
                spo2,
                steps,
            }));
        }
        if self.setup.residents.contains_key(&id) {
            self.arm_silence(id, later(now, self.setup.supervision.silent_after));
        }
        if let Some(alert_id) = self.open_alert_of(id, |k| k == Kind::DeviceSilent) {
            tracing::info!(
                alert_id,
                device_id = id,
                "band heard again; device_silent clears"
            );
            self.resolve(now, wall, &alert_id, "gateway", Resolution::DeviceFault);
        }
        if frame.battery_pct < self.setup.supervision.low_battery_pct {
            self.low_battery(now, wall, id, frame.battery_pct, rssi);
        }
    }

    fn low_battery(
        &mut self,
        now: Instant,
        wall: Timestamp,
        id: u32,
        battery: u8,
        rssi: Option<i16>,
    ) {
        let today = self.setup.rota.local_day(wall).to_string();
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
        self.raise(
            now,
            wall,
            alert_id,
            Kind::LowBattery,
            Some(id),
            None,
            Some(battery),
            rssi,
            None,
        );
    }

    pub(super) fn fire_silence(&mut self, now: Instant, wall: Timestamp) {
        while let Some(&(due, id)) = self.silence.first() {
            if due > now {
                break;
            }
            self.silence.remove(&(due, id));
            let band = self.devices.entry(id).or_default();
            band.silence_due = None;
            band.silent_count += 1;
            let alert_id = format!("{id}-silent-{}", band.silent_count);
            let battery = band.battery_pct;
            self.urgent_devices.insert(id);
            tracing::warn!(alert_id, device_id = id, "band not heard for silent_after");
            self.raise(
                now,
                wall,
                alert_id,
                Kind::DeviceSilent,
                Some(id),
                None,
                battery,
                None,
                None,
            );
        }
    }

    /// The unresolved alert of `device_id` whose kind satisfies `kind`.
    pub(super) fn open_alert_of(
        &self,
        device_id: u32,
        kind: impl Fn(Kind) -> bool,
    ) -> Option<String> {
        self.alerts
            .values()
            .find(|a| a.device_id == Some(device_id) && !a.is_resolved() && kind(a.kind))
            .map(|a| a.id.clone())
    }
}
