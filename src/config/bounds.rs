//! Limits on every duration and count of `bandgate.toml`.
//!
//! Two kinds (the README's Configuration section lists them):
//! - **hard limits** no value may pass, errors like any other (exit 78): every duration from
//!   1 second to 30 days (`engine::time::{MIN_DELAY, MAX_DELAY}`), so that no timer can
//!   overflow, panic, page in a storm or in effect never fire; at most `MAX_ACK_TIMEOUTS`
//!   waits in `escalation.ack_timeouts`;
//! - **recommended ranges**, per key, for a real site: a value outside is a warning
//!   (`check-config` lists it and exits 0, the daemon logs it at start), because tests, demos
//!   and trials rightly use second-scale timers.

use std::time::Duration;

pub use crate::engine::time::{MAX_DELAY, MIN_DELAY};

use super::sections::{alerts, ble, escalation, fallback, mqtt, supervision};

/// At most this many waits in `escalation.ack_timeouts` (so at most 6 tiers).
pub const MAX_ACK_TIMEOUTS: usize = 5;
/// Only the first two tiers page different people (the rota, then the resident's team); the
/// last adds the supervisors. More waits are tiers that are skipped at once.
pub const RECOMMENDED_ACK_TIMEOUTS: usize = 2;
/// `supervision.low_battery_pct`: recommended range.
pub const LOW_BATTERY_PCT: (u8, u8) = (10, 50);

/// The recommended range of one duration key, and what goes wrong outside it.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// The key, `[i]` left out for list entries (`escalation.ack_timeouts`).
    pub key: &'static str,
    pub low: Duration,
    pub high: Duration,
    /// The key's default (the section's constant).
    pub default: &'static str,
    /// What happens on a real site below `low` / above `high`.
    pub too_short: &'static str,
    pub too_long: &'static str,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const MIN: u64 = 60;
const HOUR: u64 = 3600;

/// Every duration key of `bandgate.toml`, with its recommended range.
pub const RANGES: &[Range] = &[
    Range {
        key: "ble.silence_restart",
        low: secs(30),
        high: secs(10 * MIN),
        default: ble::SILENCE_RESTART,
        too_short: "a quiet spell restarts the radio's scan, and three in a row restart the gateway",
        too_long: "a radio that stopped hearing anything goes unnoticed this long",
    },
    Range {
        key: "mqtt.status_interval",
        low: secs(10),
        high: secs(10 * MIN),
        default: mqtt::STATUS_INTERVAL,
        too_short: "the gateway status is re-published very often",
        too_long: "dashboards show a stale gateway status this long",
    },
    Range {
        key: "mqtt.device_state_interval",
        low: secs(10),
        high: secs(HOUR),
        default: mqtt::DEVICE_STATE_INTERVAL,
        too_short: "every band's state is re-published very often (broker and phone load)",
        too_long: "a band's battery and worn state shown on phones is this old",
    },
    Range {
        key: "alerts.resolved_retention",
        low: secs(MIN),
        high: secs(24 * HOUR),
        default: alerts::RESOLVED_RETENTION,
        too_short: "a resolved alert leaves the phones' board before everyone saw how it ended",
        too_long: "resolved alerts stay on the phones' board this long",
    },
    Range {
        key: "escalation.ack_timeouts",
        low: secs(30),
        high: secs(10 * MIN),
        default: escalation::ACK_TIMEOUTS[0],
        too_short: "the next tier is paged before the people on this one could answer",
        too_long: "an emergency nobody answers waits this long before more people are paged",
    },
    Range {
        key: "escalation.renotify_every",
        low: secs(10),
        high: secs(5 * MIN),
        default: escalation::RENOTIFY_EVERY,
        too_short: "the phones on duty are paged every few seconds",
        too_long: "a person who missed the first page is not paged again for this long",
    },
    Range {
        key: "escalation.repeat_every",
        low: secs(10),
        high: secs(5 * MIN),
        default: escalation::REPEAT_EVERY,
        too_short: "at the last tier every phone is paged every few seconds until someone acks",
        too_long: "an emergency nobody claimed is paged again only this rarely",
    },
    Range {
        key: "escalation.claim_timeout",
        low: secs(2 * MIN),
        high: secs(HOUR),
        default: escalation::CLAIM_TIMEOUT,
        too_short: "a person who said \"I'm going\" loses the claim before they can get there",
        too_long: "a person who claimed an alert and never arrived leaves the resident waiting this long before anyone else is paged",
    },
    Range {
        key: "escalation.cancel_verify_timeout",
        low: secs(MIN),
        high: secs(30 * MIN),
        default: escalation::CANCEL_VERIFY_TIMEOUT,
        too_short: "escalation resumes before staff could phone the resident",
        too_long: "a cancelled alert nobody verified waits this long before escalation resumes",
    },
    Range {
        key: "supervision.silent_after",
        low: secs(15 * MIN),
        high: secs(24 * HOUR),
        default: supervision::SILENT_AFTER,
        too_short: "a band briefly out of range raises a device_silent alert",
        too_long: "a dead, removed or broken band goes unnoticed this long",
    },
    Range {
        key: "fallback.after",
        low: secs(20),
        high: secs(5 * MIN),
        default: fallback::AFTER,
        too_short: "people are sent an SMS before their phone had a fair chance to confirm the page (a phone waking from sleep over a weak network takes seconds)",
        too_long: "a person whose phone never got the page is not texted or called for this long",
    },
    Range {
        key: "fallback.step_every",
        low: secs(MIN),
        high: secs(10 * MIN),
        default: fallback::STEP_EVERY[0],
        too_short: "SMS and calls follow each other faster than a person can pick up the phone, and carriers flag a number that calls one callee more than once a minute",
        too_long: "a person who did not answer is called again only this rarely",
    },
    Range {
        key: "fallback.ring_for",
        low: secs(20),
        high: secs(90),
        default: fallback::RING_FOR,
        too_short: "the call is hung up before an old phone in a pocket can be answered",
        too_long: "the carrier's voicemail or a \"not answering\" announcement takes the call first (usually after 30 to 60 s)",
    },
];

/// The recommended range of `key` (`escalation.ack_timeouts[1]` finds `ack_timeouts`).
pub fn range(key: &str) -> Option<&'static Range> {
    let base = key.split('[').next().unwrap_or(key);
    RANGES.iter().find(|r| r.key == base)
}

/// A duration as a config value would say it: `"90s"`, `"5m"`, `"24h"`, `"30d"`.
pub fn show(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        return humantime::format_duration(d).to_string();
    }
    if s % (24 * HOUR) == 0 && s >= 2 * 24 * HOUR {
        format!("{}d", s / (24 * HOUR))
    } else if s % HOUR == 0 {
        format!("{}h", s / HOUR)
    } else if s % MIN == 0 {
        format!("{}m", s / MIN)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_shown_as_a_config_would_write_them() {
        assert_eq!(show(secs(90)), "90s");
        assert_eq!(show(secs(300)), "5m");
        assert_eq!(show(secs(24 * HOUR)), "24h");
        assert_eq!(show(MAX_DELAY), "30d");
        assert_eq!(show(Duration::from_millis(1500)), "1s 500ms");
        for r in RANGES {
            assert!(
                MIN_DELAY <= r.low && r.low < r.high && r.high <= MAX_DELAY,
                "{r:?}"
            );
            let d = humantime::parse_duration(r.default).unwrap();
            assert!(
                r.low <= d && d <= r.high,
                "default outside its range: {r:?}"
            );
        }
    }
}
