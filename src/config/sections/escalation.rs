//! `[escalation]`: how long each tier waits before the next is paged, how often people are
//! paged again, and what a wearer's cancel does.

use std::time::Duration;

use serde::Deserialize;

use crate::config::bounds;
use crate::config::diagnose::Check;
use crate::engine::{Escalation, WearerCancel};

/// `ack_timeouts`: the wait at tier 1, then at tier 2.
pub const ACK_TIMEOUTS: [&str; 2] = ["60s", "60s"];
pub const RENOTIFY_EVERY: &str = "20s";
pub const REPEAT_EVERY: &str = "60s";
pub const CLAIM_TIMEOUT: &str = "15m";
/// `wearer_cancel`: staff phone the resident before the alert is closed.
pub const WEARER_CANCEL: &str = "verify";
pub const CANCEL_VERIFY_TIMEOUT: &str = "5m";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawEscalation {
    ack_timeouts: Option<Vec<String>>,
    renotify_every: Option<String>,
    repeat_every: Option<String>,
    claim_timeout: Option<String>,
    wearer_cancel: Option<String>,
    cancel_verify_timeout: Option<String>,
    #[serde(default)]
    supervisors: Vec<String>,
}

impl Check {
    /// `refs` gets every staff id named here, to be looked up once `[[staff]]` is read.
    pub(in crate::config) fn escalation(
        &mut self,
        raw: RawEscalation,
        refs: &mut Vec<(String, String)>,
    ) -> Escalation {
        let list = raw
            .ack_timeouts
            .unwrap_or_else(|| ACK_TIMEOUTS.map(String::from).to_vec());
        let ack_timeouts = self.ack_timeouts(&list);
        let wearer_cancel = match raw.wearer_cancel.as_deref().unwrap_or(WEARER_CANCEL) {
            "verify" => WearerCancel::Verify,
            "close" => WearerCancel::Close,
            other => {
                self.problem(
                    "escalation.wearer_cancel",
                    format!("unknown choice {other:?}"),
                    "use \"verify\" (staff confirm by phone) or \"close\" (the wearer's cancel resolves the alert)",
                );
                WearerCancel::Verify
            }
        };
        for (i, id) in raw.supervisors.iter().enumerate() {
            refs.push((format!("escalation.supervisors[{i}]"), id.clone()));
        }
        let mut duration = |key: &str, raw: Option<String>, default: &str| {
            self.duration(&format!("escalation.{key}"), raw.as_deref(), default)
        };
        Escalation {
            ack_timeouts,
            renotify_every: duration("renotify_every", raw.renotify_every, RENOTIFY_EVERY),
            repeat_every: duration("repeat_every", raw.repeat_every, REPEAT_EVERY),
            claim_timeout: duration("claim_timeout", raw.claim_timeout, CLAIM_TIMEOUT),
            wearer_cancel,
            cancel_verify_timeout: duration(
                "cancel_verify_timeout",
                raw.cancel_verify_timeout,
                CANCEL_VERIFY_TIMEOUT,
            ),
            supervisors: raw.supervisors,
        }
    }

    fn ack_timeouts(&mut self, list: &[String]) -> Vec<Duration> {
        if list.is_empty() {
            self.problem(
                "escalation.ack_timeouts",
                "the list is empty, so nobody but the supervisors would ever be paged",
                "give one wait per tier before the supervisors, e.g. ack_timeouts = [\"60s\", \"60s\"]",
            );
            return Vec::new();
        }
        if list.len() > bounds::MAX_ACK_TIMEOUTS {
            self.problem(
                "escalation.ack_timeouts",
                format!(
                    "{} waits, so {} tiers; at most {} waits are accepted",
                    list.len(),
                    list.len() + 1,
                    bounds::MAX_ACK_TIMEOUTS
                ),
                "give one wait per tier before the supervisors: tier 1 is who is on duty, tier 2 adds the resident's team, e.g. ack_timeouts = [\"60s\", \"60s\"]",
            );
            return Vec::new();
        }
        if list.len() > bounds::RECOMMENDED_ACK_TIMEOUTS {
            self.warning(
                "escalation.ack_timeouts",
                format!(
                    "{} waits, but only tier 1 (who is on duty) and tier 2 (adds the resident's team) page different people before the supervisors: {} nobody new and {} skipped at once",
                    list.len(),
                    if list.len() == 3 {
                        "tier 3 pages".to_string()
                    } else {
                        format!("tiers 3 to {} page", list.len())
                    },
                    if list.len() == 3 { "is" } else { "are" }
                ),
                "give two waits, e.g. ack_timeouts = [\"60s\", \"60s\"]",
            );
        }
        list.iter()
            .enumerate()
            .map(|(i, d)| {
                self.duration(
                    &format!("escalation.ack_timeouts[{i}]"),
                    Some(d),
                    ACK_TIMEOUTS[0],
                )
            })
            .collect()
    }
}
