//! No configuration `check-config` accepts can make the engine panic; and the engine itself
//! survives any duration at all (given through `Setup` directly, past every bound).
//!
//! Durations are drawn within and around the hard limits (1 s and 30 days): nanoseconds,
//! just under and over each limit, the limits themselves, values that overflow an `Instant`
//! (`"300000000000y"`). The engine is then driven by frames, phone actions, time to each
//! deadline, and restarts with the wall clock moved either way.

use std::time::Duration;

use bandgate::config as file;
use bandgate::config::bounds::{MAX_ACK_TIMEOUTS, MAX_DELAY, MIN_DELAY};
use bandgate::engine::*;
use proptest::prelude::*;

use crate::harness::sim::*;
use crate::harness::vectors::write_private;

/// A duration as a config string, around the limits. Mostly within them: a configuration
/// is accepted only when all of its ~14 durations are, and only an accepted one reaches the
/// engine (with an even mix, about one case in 3,000 did).
fn duration_text() -> impl Strategy<Value = String> {
    let within = prop_oneof![
        Just("1s".to_string()),
        (1u64..600).prop_map(|n| format!("{n}s")),
        (1u64..48).prop_map(|n| format!("{n}h")),
        (29u64..=30).prop_map(|n| format!("{n}d")),
        Just("30days 0s".to_string()),
    ];
    let around = prop_oneof![
        (1u64..1_000_000_000).prop_map(|n| format!("{n}ns")),
        (1u64..2_000).prop_map(|n| format!("{n}ms")),
        Just("31d".to_string()),
        (1u64..3).prop_map(|n| format!("30days {n}s")),
        Just("300000000000y".to_string()),
        Just("500000000000y".to_string()),
    ];
    prop_oneof![24 => within, 1 => around]
}

#[derive(Debug, Clone)]
struct Timers {
    silence_restart: String,
    status_interval: String,
    device_state_interval: String,
    resolved_retention: String,
    ack_timeouts: Vec<String>,
    renotify_every: String,
    repeat_every: String,
    claim_timeout: String,
    cancel_verify_timeout: String,
    silent_after: String,
    close_on_cancel: bool,
}

fn timers() -> impl Strategy<Value = Timers> {
    (
        (
            duration_text(),
            duration_text(),
            duration_text(),
            duration_text(),
        ),
        proptest::collection::vec(duration_text(), 1..=6),
        (
            duration_text(),
            duration_text(),
            duration_text(),
            duration_text(),
            duration_text(),
        ),
        any::<bool>(),
    )
        .prop_map(|((a, b, c, d), acks, (e, f, g, h, i), close)| Timers {
            silence_restart: a,
            status_interval: b,
            device_state_interval: c,
            resolved_retention: d,
            ack_timeouts: acks,
            renotify_every: e,
            repeat_every: f,
            claim_timeout: g,
            cancel_verify_timeout: h,
            silent_after: i,
            close_on_cancel: close,
        })
}

fn config_text(t: &Timers) -> String {
    let acks = t
        .ack_timeouts
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"site_id = "props"
gateway_id = "gw-props"
timezone = "Asia/Shanghai"
state_dir = "state"
keys_file = "keys.toml"

[ble]
source = "simulate"
silence_restart = "{}"

[mqtt]
status_interval = "{}"
device_state_interval = "{}"

[alerts]
resolved_retention = "{}"

[escalation]
ack_timeouts = [{acks}]
renotify_every = "{}"
repeat_every = "{}"
claim_timeout = "{}"
wearer_cancel = "{}"
cancel_verify_timeout = "{}"
supervisors = ["chen"]

[supervision]
silent_after = "{}"

[[staff]]
id = "zhang"
name = "张伟"

[[staff]]
id = "li"
name = "李娜"

[[staff]]
id = "wang"
name = "王芳"

[[staff]]
id = "chen"
name = "陈静"

[[rota]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "08:00"
to = "20:00"
staff = ["zhang"]

[[residents]]
id = "r017"
name = "王秀英"
device_id = 17
team = ["li", "wang"]

[[residents]]
id = "r018"
name = "刘桂兰"
device_id = 18
team = ["wang"]
"#,
        t.silence_restart,
        t.status_interval,
        t.device_state_interval,
        t.resolved_retention,
        t.renotify_every,
        t.repeat_every,
        t.claim_timeout,
        if t.close_on_cancel { "close" } else { "verify" },
        t.cancel_verify_timeout,
        t.silent_after,
    )
}

#[derive(Debug, Clone)]
enum Op {
    Band {
        device: u32,
        event: u8,
    },
    Phone {
        staff: usize,
        alert: usize,
        action: u8,
    },
    Advance {
        ms: u64,
    },
    /// To the engine's next deadline (however far), and a little past it.
    ToDeadline {
        past_ms: u64,
    },
    /// Down for a while; the wall clock moved by `clock_s` meanwhile (either way, up to a year).
    Restart {
        down_ms: u64,
        clock_s: i64,
    },
    Test,
}

const STAFF: [&str; 5] = ["zhang", "li", "wang", "chen", "ghost"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (prop_oneof![Just(17u32), Just(18u32)], 0u8..5)
            .prop_map(|(device, event)| Op::Band { device, event }),
        3 => (0usize..5, 0usize..6, 0u8..5)
            .prop_map(|(staff, alert, action)| Op::Phone { staff, alert, action }),
        2 => (0u64..120_000).prop_map(|ms| Op::Advance { ms }),
        3 => (0u64..2_000).prop_map(|past_ms| Op::ToDeadline { past_ms }),
        1 => (0u64..3_600_000, -31_536_000i64..31_536_000)
            .prop_map(|(down_ms, clock_s)| Op::Restart { down_ms, clock_s }),
        1 => Just(Op::Test),
    ]
}

/// Drives `setup` through `ops`; panics (failing the property) if the engine does, or if it
/// loops without moving its deadline on (checked by `Sim::advance`).
fn drive(setup: Setup, ops: &[Op]) {
    let mut s = Sim::new(setup, local(10, 0));
    let mut ids: Vec<String> = Vec::new();
    for op in ops {
        match *op {
            Op::Band { device, event } => {
                let seq_before = s.seqs.get(&device).copied().unwrap_or(100);
                let ev = match event {
                    0 => BandEvent::Sos,
                    1 => BandEvent::Fall { impact_dg: 20 },
                    2 => BandEvent::Cancel { of_seq: seq_before },
                    3 => BandEvent::NoMotion { minutes: 60 },
                    _ => BandEvent::Heartbeat {
                        heart_rate: None,
                        spo2: None,
                        steps: 1,
                    },
                };
                if let Heard::Accepted {
                    alert_id: Some(id), ..
                } = s.frame_with(device, 10, true, ev)
                {
                    ids.push(id);
                }
            }
            Op::Phone {
                staff,
                alert,
                action,
            } => {
                let id = ids.get(alert).cloned().unwrap_or_else(|| "17-0".into());
                let action = match action {
                    0 => Action::Delivered,
                    1 => Action::Ack,
                    2 => Action::Decline,
                    3 => Action::OnScene,
                    _ => Action::Resolve(Resolution::RealEmergency),
                };
                let _ = s.act(STAFF[staff], &id, action);
            }
            Op::Advance { ms } => s.advance(ms as f64 / 1000.0),
            Op::ToDeadline { past_ms } => {
                if let Some(due) = s.engine.poll_timeout() {
                    let wait = due.saturating_duration_since(s.now);
                    s.advance(wait.as_secs_f64() + past_ms as f64 / 1000.0);
                }
            }
            Op::Restart { down_ms, clock_s } => {
                s.restart_with_clock(down_ms as f64 / 1000.0, clock_s as f64)
            }
            Op::Test => {
                if let Ok(id) = s.engine.raise_test(s.clock(), None) {
                    ids.push(id);
                }
                s.drain();
            }
        }
        for a in s.engine.alerts() {
            assert!(a.deadline() > s.now, "{} has no future deadline", a.id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_configuration_check_config_accepts_makes_the_engine_panic(
        t in timers(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bandgate.toml");
        std::fs::write(&path, config_text(&t)).unwrap();
        write_private(
            dir.path(),
            "keys.toml",
            "[devices]\n17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"\n18 = \"aace5fdf9d6b09ce7216fe2472301eaa\"\n",
        );
        match file::load(&path) {
            Ok(cfg) => {
                // What was accepted keeps the hard limits...
                let e = &cfg.setup.escalation;
                let all = [
                    cfg.ble.radio.silence_restart,
                    cfg.mqtt.status_interval,
                    cfg.mqtt.device_state_interval,
                    cfg.setup.resolved_retention,
                    e.renotify_every,
                    e.repeat_every,
                    e.claim_timeout,
                    e.cancel_verify_timeout,
                    cfg.setup.supervision.silent_after,
                ];
                for d in all.iter().chain(&e.ack_timeouts) {
                    prop_assert!(MIN_DELAY <= *d && *d <= MAX_DELAY, "{d:?} accepted");
                }
                prop_assert!(!e.ack_timeouts.is_empty() && e.ack_timeouts.len() <= MAX_ACK_TIMEOUTS);
                // ...and the engine runs on it without a panic.
                drive(cfg.setup, &ops);
            }
            Err(problems) => {
                // A refusal names the key it is about.
                for p in &problems.0 {
                    prop_assert!(!p.key.is_empty() && !p.fix.is_empty(), "{p}");
                }
            }
        }
    }

    #[test]
    fn the_engine_survives_any_duration_given_directly(
        d in proptest::collection::vec(prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            (1u64..1_000_000).prop_map(Duration::from_nanos),
            (1u64..100_000).prop_map(Duration::from_secs),
            (29u64..40).prop_map(|n| Duration::from_secs(n * 86_400)),
            (u64::MAX / 4..u64::MAX).prop_map(Duration::from_secs),
        ], 9),
        waits in 0usize..12,
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let mut setup = setup();
        setup.escalation.ack_timeouts = vec![d[0]; waits];
        setup.escalation.renotify_every = d[1];
        setup.escalation.repeat_every = d[2];
        setup.escalation.claim_timeout = d[3];
        setup.escalation.cancel_verify_timeout = d[4];
        setup.supervision.silent_after = d[5];
        setup.resolved_retention = d[6];
        setup.device_state_interval = d[7];
        if d[8] < Duration::from_secs(1) {
            setup.escalation.wearer_cancel = WearerCancel::Close;
        }
        // Zero waits are held to a millisecond: keep each step's simulated time short so a
        // case stays fast, but let deadlines be reached.
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|o| match o {
                Op::Advance { ms } => Op::Advance { ms: ms % 3_000 },
                other => other,
            })
            .collect();
        drive(setup, &ops);
    }
}
