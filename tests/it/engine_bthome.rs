//! The engine with BTHome devices (`shared/spec/bthome.md`, "What a frame means"), in
//! simulated time: presses raise SOS alerts named by the counter, a double press cancels, the
//! counter survives a restart until the device is enrolled again, and a button's silence rule
//! is its own.

use std::time::{Duration, Instant};

use bandgate::engine::bthome::{self, BtHomeDevice, ButtonEvent, EventSet, Mac};
use bandgate::engine::*;
use jiff::Timestamp;

use crate::harness::sim::{keyring, local, setup, COMPANY};

const MAC: Mac = [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5];
const KEY: DeviceKey = DeviceKey([
    0x23, 0x1d, 0x39, 0xc1, 0xd7, 0xcc, 0x1a, 0xb1, 0xae, 0xe2, 0x24, 0xcd, 0x09, 0x6d, 0xb9, 0x32,
]);

/// Bands 17 and 18, and the button as device 9001 with `silent_after` and `enrolled`.
fn ring(silent_after: Option<Duration>, enrolled: &str) -> Keyring {
    let mut k = keyring();
    k.insert_bthome(
        MAC,
        BtHomeDevice {
            device_id: 9001,
            key: KEY,
            sos: EventSet::default_sos(),
            cancel: EventSet::default_cancel(),
            silent_after,
            enrolment: format!("{}/{enrolled}", BtHomeDevice::key_check(&KEY)),
        },
    );
    k
}

/// The simulated community, with a resident wearing the button.
fn community() -> Setup {
    let mut s = setup();
    let mut r = s.residents[&17].clone();
    r.id = "r9001".into();
    r.device_id = 9001;
    s.residents.insert(9001, r);
    s
}

struct World {
    engine: Engine,
    setup: Setup,
    t0: Instant,
    now: Instant,
    wall0: Timestamp,
    outputs: Vec<Output>,
}

impl World {
    fn new(keys: Keyring) -> World {
        let t0 = Instant::now();
        let setup = community();
        World {
            engine: Engine::new(setup.clone(), Intake::new(COMPANY, keys), t0),
            setup,
            t0,
            now: t0,
            wall0: local(10, 0),
            outputs: Vec::new(),
        }
    }

    fn wall(&self) -> Timestamp {
        self.wall0 + (self.now - self.t0)
    }

    /// Both clocks now, as the engine takes them.
    fn clock(&self) -> Now {
        Now {
            mono: self.now,
            wall: self.wall(),
        }
    }

    fn press(&mut self, counter: u32, events: &[ButtonEvent], battery: Option<u8>) -> Heard {
        let data = bthome::seal(&MAC, &KEY, counter, true, counter as u8, battery, events);
        let heard = self
            .engine
            .handle_bthome(self.clock(), &MAC, &data, Some(-55));
        self.drain();
        heard
    }

    fn advance(&mut self, secs: u64) {
        let target = self.now + Duration::from_secs(secs);
        while let Some(due) = self.engine.poll_timeout() {
            if due > target {
                break;
            }
            self.now = due.max(self.now);
            self.engine.handle_timeout(self.clock());
            self.drain();
        }
        self.now = target;
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            self.outputs.push(o);
        }
    }

    fn restart(&mut self, keys: Keyring) {
        let snap = self.engine.snapshot(self.clock());
        self.now += Duration::from_secs(5);
        self.engine = Engine::restore(
            self.setup.clone(),
            Intake::new(COMPANY, keys),
            self.clock(),
            snap,
        );
        self.drain();
    }

    fn alert_ids(&self) -> Vec<String> {
        self.engine.alerts().map(|a| a.id.clone()).collect()
    }
}

fn alert_id(h: &Heard) -> Option<String> {
    match h {
        Heard::Accepted { alert_id, .. } => alert_id.clone(),
        Heard::Rejected(r) => panic!("refused: {r}"),
    }
}

#[test]
fn a_press_raises_an_sos_named_by_its_counter_and_a_double_press_cancels_it() {
    let mut w = World::new(ring(Some(Duration::from_secs(7200)), ""));
    // A beacon (no event) raises nothing.
    assert_eq!(alert_id(&w.press(9, &[ButtonEvent::None], Some(90))), None);
    let id = alert_id(&w.press(10, &[ButtonEvent::Press], Some(90))).unwrap();
    assert_eq!(id, "9001-10");
    let a = w.engine.alert(&id).unwrap();
    assert_eq!(
        (a.kind, a.device_id, a.battery_pct),
        (Kind::Sos, Some(9001), Some(90))
    );
    assert!(w.outputs.iter().any(|o| matches!(o, Output::Notify { staff_id, reason: NotifyReason::New, .. } if staff_id == "zhang")));
    // The device repeats its frame: refused as a duplicate, no second alert.
    assert_eq!(
        w.press(10, &[ButtonEvent::Press], Some(90)),
        Heard::Rejected(Reject::Duplicate)
    );
    // Another press while it is open updates the same alert; a long press too.
    assert_eq!(
        alert_id(&w.press(11, &[ButtonEvent::LongPress], Some(90))).as_deref(),
        Some("9001-10")
    );
    // Multi-button: the second button's double press cancels the open alert.
    assert_eq!(
        alert_id(&w.press(12, &[ButtonEvent::None, ButtonEvent::DoublePress], Some(90))).as_deref(),
        Some("9001-10")
    );
    assert!(w.engine.alert(&id).unwrap().cancel_requested);
    assert!(w.outputs.iter().any(|o| matches!(
        o,
        Output::Notify {
            reason: NotifyReason::CancelRequested,
            ..
        }
    )));
    // A press and a cancel in one frame: the SOS wins (withdraws the cancel).
    w.press(
        13,
        &[ButtonEvent::DoublePress, ButtonEvent::Press],
        Some(90),
    );
    assert!(!w.engine.alert(&id).unwrap().cancel_requested);
    assert_eq!(w.alert_ids(), ["9001-10"]);
    // Resolved, a cancel has nothing to cancel: ignored and counted.
    w.engine
        .handle_action(
            w.clock(),
            "zhang",
            &id,
            Action::Resolve(Resolution::FalseAlarm),
        )
        .unwrap();
    let before = w.engine.counters().unmatched_cancels;
    w.press(14, &[ButtonEvent::DoublePress], Some(90));
    assert_eq!(w.engine.counters().unmatched_cancels, before + 1);
    // Unencrypted from the enrolled MAC: a downgrade, counted.
    let plain = bthome::plain(true, 1, Some(90), &[ButtonEvent::Press]);
    let wall = w.wall();
    assert_eq!(
        w.engine
            .handle_bthome(Now { mono: w.now, wall }, &MAC, &plain, None),
        Heard::Rejected(Reject::Downgrade)
    );
    assert_eq!(w.engine.intake().rejected(Reject::Downgrade), 1);
    assert_eq!(w.engine.intake().rejected(Reject::Duplicate), 1);
}

#[test]
fn an_older_counter_stays_stale_across_a_restart_until_the_device_is_enrolled_again() {
    let mut w = World::new(ring(None, "2026-11-01"));
    alert_id(&w.press(500, &[ButtonEvent::Press], Some(80))).unwrap();
    w.restart(ring(None, "2026-11-01"));
    // Replayed after the restart, the press is a duplicate; the device's counter went back
    // (a battery change) and its frames are stale.
    assert_eq!(
        w.press(500, &[ButtonEvent::Press], Some(80)),
        Heard::Rejected(Reject::Duplicate)
    );
    assert_eq!(
        w.press(3, &[ButtonEvent::Press], Some(80)),
        Heard::Rejected(Reject::Stale)
    );
    assert_eq!(
        w.press(4, &[ButtonEvent::Press], Some(80)),
        Heard::Rejected(Reject::Stale)
    );
    // Enrolled again (bandgate enrol writes a new `enrolled`): the counter starts afresh.
    w.restart(ring(None, "2026-11-26"));
    assert!(matches!(
        w.press(5, &[ButtonEvent::Press], Some(80)),
        Heard::Accepted { .. }
    ));
    let snap = w.engine.snapshot(w.clock());
    let stored = snap.devices.iter().find(|d| d.device_id == 9001).unwrap();
    assert_eq!(stored.window_top, Some(5));
    assert!(stored
        .enrolment
        .as_deref()
        .unwrap()
        .ends_with("/2026-11-26"));
}

#[test]
fn a_button_is_reported_silent_by_its_own_rule_and_never_when_it_is_off() {
    let mut w = World::new(ring(Some(Duration::from_secs(2 * 3600)), ""));
    w.press(1, &[ButtonEvent::None], Some(90));
    // Bands are silent after 30 minutes; the button is not.
    w.advance(31 * 60);
    let silent = |w: &World, d: u32| {
        w.engine
            .alerts()
            .any(|a| a.kind == Kind::DeviceSilent && a.device_id == Some(d) && !a.is_resolved())
    };
    assert!(silent(&w, 17));
    assert!(!silent(&w, 9001));
    // A beacon keeps it heard; two hours after the last one it is silent.
    w.press(2, &[ButtonEvent::None], Some(90));
    w.advance(2 * 3600 - 60);
    assert!(!silent(&w, 9001));
    w.advance(120);
    assert!(silent(&w, 9001));
    // Heard again: its device_silent clears.
    w.press(3, &[ButtonEvent::None], Some(90));
    assert!(!silent(&w, 9001));

    // With silent_after = "off" it is never reported silent.
    let mut w = World::new(ring(None, ""));
    w.press(1, &[ButtonEvent::None], Some(90));
    w.advance(20 * 24 * 3600);
    assert!(!silent(&w, 9001));
    assert!(silent(&w, 18));
}

#[test]
fn a_low_battery_report_raises_its_notice_and_a_frame_without_battery_keeps_the_last() {
    let mut w = World::new(ring(None, ""));
    w.press(1, &[ButtonEvent::None], Some(15));
    assert!(
        w.alert_ids().iter().any(|id| id == "9001-battery-1"),
        "{:?}",
        w.alert_ids()
    );
    let id = alert_id(&w.press(2, &[ButtonEvent::Press], None)).unwrap();
    assert_eq!(w.engine.alert(&id).unwrap().battery_pct, Some(15));
}
