//! The engine's stored form of an alert, through `Engine::restore` and `Engine::snapshot`:
//! every state comes back as it was stored, and a record describing an impossible
//! combination (a bug, a hand edit, an older version) is restored as the nearest possible
//! state, counted, and paged when nobody is known to hold it: never lost.

use std::time::Instant;

use bandgate::engine::*;
use jiff::{SignedDuration, Timestamp};

use crate::harness::sim::*;

fn clock() -> Now {
    Now {
        mono: Instant::now(),
        wall: local(10, 0),
    }
}

fn restore(r: AlertRecord, now: Now) -> Engine {
    let snapshot = Snapshot {
        alerts: vec![r],
        ..Snapshot::default()
    };
    Engine::restore(setup(), Intake::new(COMPANY, keyring()), now, snapshot)
}

/// An open SOS of band 17 raised at `now`, paged to zhang.
fn sos(now: Now) -> AlertRecord {
    AlertRecord::sos("17-101", 17, 101, now.wall).paged_to(&["zhang"])
}

fn at(now: Now, s: i64) -> Timestamp {
    now.wall.checked_add(SignedDuration::from_secs(s)).unwrap()
}

#[test]
fn every_state_comes_back_as_it_was_stored() {
    let now = clock();
    let open = AlertRecord {
        due: at(now, 20),
        escalate_at: Some(at(now, 60)),
        ..sos(now)
    };
    let claimed = AlertRecord {
        state: "acknowledged".into(),
        due: at(now, 900),
        escalate_at: None,
        acked_by: Some("zhang".into()),
        acked_at: Some(at(now, -5)),
        ..sos(now)
    };
    let on_scene = AlertRecord {
        state: "on_scene".into(),
        on_scene_at: Some(at(now, -1)),
        ..claimed.clone()
    };
    let resolved = AlertRecord {
        state: "resolved".into(),
        due: at(now, 600),
        resolved_by: Some("li".into()),
        resolved_at: Some(now.wall),
        resolution: Some("real_emergency".into()),
        ..on_scene.clone()
    };
    let records = [
        AlertRecord {
            escalate_at: None,
            ..open.clone()
        },
        AlertRecord {
            escalate_at: None,
            cancel_requested: true,
            verify_until: Some(at(now, 300)),
            ..open.clone()
        },
        AlertRecord {
            acked_by: None,
            acked_at: None,
            on_scene_at: None,
            resolved_by: Some("wearer".into()),
            resolution: Some("wearer_cancel_verified".into()),
            ..resolved.clone()
        },
        open,
        claimed,
        on_scene,
        resolved,
    ];
    for r in records {
        let e = restore(r.clone(), now);
        assert_eq!(e.snapshot(now).alerts, vec![r.clone()], "{}", r.state);
        assert_eq!(e.counters().repaired_records, 0);
    }
}

#[test]
fn a_claim_on_an_open_alert_is_dropped_and_counted() {
    let now = clock();
    let e = restore(
        AlertRecord {
            acked_by: Some("zhang".into()),
            acked_at: Some(now.wall),
            on_scene_at: Some(now.wall),
            resolution: Some("false_alarm".into()),
            ..sos(now)
        },
        now,
    );
    assert_eq!(e.counters().repaired_records, 1);
    let a = e.alert("17-101").unwrap();
    assert_eq!(a.state.name(), "open");
    assert!(a.state.escalate_at().is_some());
    let dropped = (a.acked_by(), a.on_scene_at(), a.resolution());
    assert_eq!(dropped, (None, None, None));
}

#[test]
fn a_resolved_alert_without_its_resolution_is_kept_as_resolved_other() {
    let now = clock();
    let r = AlertRecord {
        state: "resolved".into(),
        resolution: Some("a code of a later version".into()),
        ..sos(now)
    };
    let e = restore(r.clone(), now);
    assert_eq!(e.counters().repaired_records, 1);
    let a = e.alert("17-101").unwrap();
    assert_eq!(a.resolution(), Some(Resolution::Other));
    assert_eq!(a.resolved_by(), Some("unknown"));
    assert_eq!(a.resolved_at(), Some(r.updated_at));
}

#[test]
fn escalating_while_verifying_a_cancel_verifies_until_the_earlier() {
    let now = clock();
    let e = restore(
        AlertRecord {
            due: at(now, 20),
            escalate_at: Some(at(now, 45)),
            cancel_requested: true,
            verify_until: Some(at(now, 300)),
            ..sos(now)
        },
        now,
    );
    assert_eq!(e.counters().repaired_records, 1);
    let a = e.alert("17-101").unwrap();
    let in_45_s = now.mono + std::time::Duration::from_secs(45);
    assert_eq!(a.state.verify_until(), Some(in_45_s));
    assert_eq!(a.state.escalate_at(), None);
}

/// Acknowledged without a claimer: nobody is known to be going, so it is open again and
/// paged at once.
#[test]
fn an_acknowledged_alert_without_a_claimer_is_restored_counted_and_paged_at_once() {
    let now = clock();
    let mut e = restore(
        AlertRecord {
            state: "acknowledged".into(),
            ..sos(now)
        },
        now,
    );
    assert_eq!(e.counters().repaired_records, 1);
    assert_eq!(
        e.alert("17-101").unwrap().state,
        State::Open {
            remind_at: now.mono,
            next: Next::Remind
        }
    );
    assert!(e.poll_timeout().is_some_and(|t| t <= now.mono));
    e.handle_timeout(now);
    let paged = std::iter::from_fn(|| e.poll_output()).any(|o| {
        matches!(o, Output::Notify { ref staff_id, ref alert, .. }
            if staff_id == "zhang" && alert.id == "17-101")
    });
    assert!(paged, "the restored alert was not paged");
}
