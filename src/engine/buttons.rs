//! BTHome devices as alarm sources (`shared/spec/bthome.md`, "What a frame means"): their
//! intake (enrolled, encrypted, authentic, a newer counter), what their button events mean,
//! and their own silence rule.
//!
//! A BTHome device is known by the `device_id` it was enrolled with, exactly like a band: its
//! counter takes the place of a band's seq (in the replay window's stored form, and in alert
//! ids `"{device_id}-{counter}"`), so the alert, supervision and store code is the bands'.
//! - An event in the device's `sos` list raises an SOS (or updates and re-pages its open
//!   alert); one in its `cancel` list cancels its most recent unresolved alert like a band's
//!   Cancel; with several buttons any button's event counts, and an SOS wins over a cancel in
//!   the same frame (the safe reading). Anything else is telemetry.
//! - A button has no wear sensor and may not report its battery: supervision sees it worn,
//!   with its last reported battery (100 % until it reports one).
//! - Silence: `silent_after` of its own `keys.toml` entry, or never (`"off"`).
//! - The counter is stored with the enrolment it was accepted under; enrolling the device again
//!   (or changing its key) forgets it at the next start, the one way out of `stale` after a
//!   device's counter went back.

use std::time::Duration;

use super::bthome::{self, EventSet, Mac, Reading};
use super::frame::{BandEvent, Frame, Reject};
use super::snapshot::DeviceRecord;
use super::supervision::HeardDevice;
use super::time::Now;
use super::{Engine, Heard, Intake, Kind};

/// An accepted BTHome frame and what its device's events mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BtHomeFrame {
    pub device_id: u32,
    /// The frame's counter (accepted frames are always encrypted).
    pub counter: u32,
    pub sos: EventSet,
    pub cancel: EventSet,
    pub reading: Reading,
}

impl BtHomeFrame {
    /// Any button's event is in the device's `sos` list.
    pub fn is_sos(&self) -> bool {
        self.reading.buttons.iter().any(|e| self.sos.contains(e))
    }

    /// Any button's event is in the `cancel` list, and none in `sos`.
    pub fn is_cancel(&self) -> bool {
        !self.is_sos() && self.reading.buttons.iter().any(|e| self.cancel.contains(e))
    }
}

impl Intake {
    /// A BTHome frame heard from `mac`: accepted only if its device is enrolled, it is
    /// encrypted and authentic, and its counter is newer than the last accepted. Every refusal
    /// is counted by reason, like a band's.
    pub fn accept_bthome(&mut self, mac: &Mac, data: &[u8]) -> Result<BtHomeFrame, Reject> {
        let result = bthome::open(data, mac, self.keys.bthome()).and_then(|(device, reading)| {
            let counter = reading.counter.ok_or(Reject::Downgrade)?;
            let window = self.windows.entry(device.device_id).or_default();
            let last = window.top();
            match window.accept_counter(counter) {
                Err(Reject::Stale) => {
                    if self.stale_warned.insert(device.device_id) {
                        tracing::warn!(
                            device_id = device.device_id,
                            mac = %bthome::format_mac(&reading.mac),
                            counter,
                            last_counter = last,
                            "BTHome device sent an older counter than the last accepted: a replayed frame, or its counter went back (battery change, reset). Its frames stay refused as stale until it is enrolled again: bandgate enrol --bthome {} --device-id {} --resident ..., then restart bandgate",
                            bthome::format_mac(&reading.mac),
                            device.device_id
                        );
                    }
                    return Err(Reject::Stale);
                }
                Err(r) => return Err(r),
                Ok(()) => {}
            }
            self.stale_warned.remove(&device.device_id);
            Ok(BtHomeFrame {
                device_id: device.device_id,
                counter,
                sos: device.sos,
                cancel: device.cancel,
                reading,
            })
        });
        match result {
            Ok(_) => self.accepted += 1,
            Err(r) => self.rejected[r as usize] += 1,
        }
        result
    }

    /// What a stored record of `device_id` must name as its enrolment (`None` for a band).
    pub(super) fn enrolment_of(&self, device_id: u32) -> Option<String> {
        self.keys
            .bthome()
            .by_device_id(device_id)
            .map(|(_, d)| d.enrolment.clone())
    }

    /// Whether a stored record's counter or window still holds: it was stored under the
    /// enrolment the device has now. A BTHome device enrolled again starts afresh.
    pub(super) fn window_holds(&self, record: &DeviceRecord) -> bool {
        let now = self.enrolment_of(record.device_id);
        if now == record.enrolment {
            return true;
        }
        if now.is_some() && record.window_top.is_some() {
            tracing::info!(
                device_id = record.device_id,
                stored_counter = record.window_top,
                "BTHome device enrolled again (or its key changed): its stored counter is forgotten, the next frame starts afresh"
            );
        }
        false
    }
}

impl Engine {
    /// A BTHome device's advertisement (service data under `bthome::UUID`, from the
    /// device-information byte on) heard from `mac`: intake, telemetry, then the alert it
    /// raises or cancels.
    pub fn handle_bthome(&mut self, now: Now, mac: &Mac, data: &[u8], rssi: Option<i16>) -> Heard {
        let f = match self.intake.accept_bthome(mac, data) {
            Ok(f) => f,
            Err(r) => return Heard::Rejected(r),
        };
        let id = f.device_id;
        let battery_pct = f
            .reading
            .battery_pct
            .or_else(|| self.devices.get(&id).and_then(|d| d.battery_pct))
            .unwrap_or(100);
        let event = if f.is_sos() {
            BandEvent::Sos
        } else if f.is_cancel() {
            BandEvent::Cancel { of_seq: f.counter }
        } else {
            // Telemetry only (a beacon, a packet id, a button event that means nothing here).
            BandEvent::Heartbeat {
                heart_rate: None,
                spo2: None,
                steps: 0,
            }
        };
        let frame = Frame {
            device_id: id,
            seq: f.counter,
            battery_pct,
            worn: true,
            event,
        };
        let alarm = !matches!(event, BandEvent::Heartbeat { .. });
        self.heard_device(
            now,
            &HeardDevice {
                device_id: id,
                battery_pct,
                worn: true,
                vitals: (None, None, None),
            },
            rssi,
            alarm,
        );
        let alert_id = match event {
            BandEvent::Sos => Some(self.raise_or_update(now, &frame, rssi, Kind::Sos)),
            BandEvent::Cancel { .. } => self.cancel_latest(now, id, f.counter),
            _ => None,
        };
        Heard::Accepted { frame, alert_id }
    }

    /// A button's cancel: the device's most recent unresolved emergency, cancelled as a band's
    /// Cancel of it would be. With none open it is ignored, counted and logged.
    fn cancel_latest(&mut self, now: Now, device_id: u32, counter: u32) -> Option<String> {
        let latest = self
            .index
            .of_device(device_id)
            .filter_map(|id| self.alerts.get(id))
            .filter(|a| a.kind.is_emergency() && !a.is_resolved())
            .max_by_key(|a| a.raised_at)
            .and_then(|a| a.seqs.last().copied());
        // With nothing open, `wearer_cancel` finds no alert for this counter: counted, logged.
        self.wearer_cancel(now, device_id, latest.unwrap_or(counter))
    }

    /// How long `device_id` may go unheard before `device_silent`: a BTHome device's own
    /// `silent_after` (`None`: never), else `[supervision] silent_after`.
    pub(super) fn silent_after_of(&self, device_id: u32) -> Option<Duration> {
        match self.intake.keys().bthome().by_device_id(device_id) {
            Some((_, d)) => d.silent_after,
            None => Some(self.setup.supervision.silent_after),
        }
    }
}
