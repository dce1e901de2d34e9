//! Property tests over random sequences of frames, phone actions, time and restarts.
//!
//! Whatever happens: no busy loop (`poll_timeout` moves past the `now` of `handle_timeout`, or
//! fewer silences are left to notice),
//! every unresolved alert has a future deadline, only a person's `resolve` (or ack of a test,
//! or a silent band heard again) ends an alert, and an open emergency is never left
//! 2 × max(ack timeout, renotify) without a page.

use std::collections::HashSet;
use std::time::Duration;

use bandgate::engine::*;
use proptest::prelude::*;

use crate::harness::sim::*;

#[derive(Debug, Clone)]
enum Op {
    Band {
        device: u32,
        event: u8,
        battery: u8,
    },
    Phone {
        staff: usize,
        alert: usize,
        action: u8,
        resolution: usize,
    },
    Advance {
        ms: u64,
    },
    Restart {
        down_ms: u64,
    },
    Test {
        staff: usize,
    },
}

const STAFF: [&str; 6] = ["zhang", "li", "wang", "chen", "zhao", "ghost"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop_oneof![Just(17u32), Just(18u32)], 0u8..5, 0u8..=100)
            .prop_map(|(device, event, battery)| Op::Band { device, event, battery }),
        4 => (0usize..6, 0usize..8, 0u8..5, 0usize..7)
            .prop_map(|(staff, alert, action, resolution)| Op::Phone { staff, alert, action, resolution }),
        4 => (0u64..200_000).prop_map(|ms| Op::Advance { ms }),
        1 => (0u64..900_000).prop_map(|down_ms| Op::Restart { down_ms }),
        1 => (0usize..6).prop_map(|staff| Op::Test { staff }),
    ]
}

fn run(start_hour: i8, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut s = Sim::at(local(start_hour, 0));
    let mut ids: Vec<String> = Vec::new();
    let limit = {
        let e = &s.setup.escalation;
        let ack = e.ack_timeouts.iter().max().copied().unwrap_or_default();
        2 * ack.max(e.renotify_every).max(e.repeat_every)
    };
    for op in ops {
        let before = s.outputs.len();
        // Alerts this step may legitimately end.
        let mut may_end: HashSet<String> = HashSet::new();
        let mut silent_band: Option<u32> = None;
        match op {
            Op::Band {
                device,
                event,
                battery,
            } => {
                let seq_before = s.seqs.get(&device).copied().unwrap_or(100);
                let ev = match event {
                    0 => BandEvent::Sos,
                    1 => BandEvent::Fall { impact_dg: 20 },
                    2 => BandEvent::NoMotion { minutes: 60 },
                    3 => BandEvent::Cancel { of_seq: seq_before },
                    _ => BandEvent::Heartbeat {
                        heart_rate: None,
                        spo2: None,
                        steps: 1,
                    },
                };
                silent_band = Some(device);
                s.frame_with(device, battery, true, ev);
            }
            Op::Phone {
                staff,
                alert,
                action,
                resolution,
            } => {
                let alert_id = ids.get(alert).cloned().unwrap_or_else(|| "17-0".into());
                let action = match action {
                    0 => Action::Delivered,
                    1 => Action::Ack,
                    2 => Action::Decline,
                    3 => Action::OnScene,
                    _ => Action::Resolve(Resolution::ALL[resolution]),
                };
                let was_test = s
                    .engine
                    .alert(&alert_id)
                    .is_some_and(|a| a.kind == Kind::Test);
                if matches!(action, Action::Resolve(_)) || (was_test && action == Action::Ack) {
                    may_end.insert(alert_id.clone());
                }
                let _ = s.act(STAFF[staff], &alert_id, action);
            }
            Op::Advance { ms } => s.advance(ms as f64 / 1000.0),
            Op::Restart { down_ms } => {
                // The snapshot survives a restore unchanged.
                let snap = s.engine.snapshot(s.clock());
                let again = Engine::restore(
                    s.setup.clone(),
                    Intake::new(COMPANY, keyring()),
                    s.clock(),
                    snap.clone(),
                )
                .snapshot(s.clock());
                prop_assert_eq!(&again, &snap);
                s.restart(down_ms as f64 / 1000.0);
            }
            Op::Test { staff } => {
                let _ = s.engine.raise_test(s.clock(), Some(STAFF[staff]));
                s.drain();
            }
        }
        for (_, out) in &s.outputs[before..] {
            if let Output::AlertChanged(a) = out {
                if !ids.contains(&a.id) {
                    ids.push(a.id.clone());
                }
                if a.is_resolved() && a.resolved_at() == Some(a.updated_at) {
                    let silent_cleared = a.kind == Kind::DeviceSilent
                        && a.resolution() == Some(Resolution::DeviceFault)
                        && silent_band == a.device_id;
                    prop_assert!(
                        may_end.contains(&a.id) || silent_cleared,
                        "{} ended without a person resolving it: {:?}",
                        a.id,
                        a
                    );
                }
            }
        }
        for a in s.engine.alerts() {
            prop_assert!(
                a.deadline() > s.now,
                "{} has no future deadline ({:?})",
                a.id,
                a.state
            );
            if a.kind.is_emergency() && matches!(a.state, State::Open { .. }) {
                let last = s.last_page(&a.id).unwrap_or_default();
                prop_assert!(
                    s.elapsed() - last <= limit,
                    "{} open and unpaged for {:?}",
                    a.id,
                    s.elapsed() - last
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_engine_keeps_its_promises(start_hour in 0i8..24, ops in proptest::collection::vec(op(), 1..80)) {
        run(start_hour, ops)?;
    }
}

#[test]
fn a_long_quiet_night_of_simulated_time_runs_in_milliseconds() {
    // A month of simulated time with one open alert nobody answers: paging never stops and
    // the engine's deadlines always move forward.
    let mut s = Sim::at(local(23, 0));
    let id = s.sos(17);
    s.advance(30.0 * 24.0 * 3600.0);
    let last = s.last_page(&id).unwrap();
    assert!(s.elapsed() - last <= Duration::from_secs(60));
}
