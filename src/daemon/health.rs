//! Whether the gateway can trust its durable state, and when the supervisors must hear that
//! it cannot: pure rules, time in, for the daemon loop.
//!
//! - What the store could not bring back at start (`store::Loss`) is paged at once
//!   (`gateway_fault`) and keeps the gateway `degraded` until a person resolves that page.
//! - A store that is not durable (in memory) keeps the gateway `degraded` for good.
//! - A store failing at run time makes the gateway `degraded` at once, and is paged once it
//!   has failed for `FAILING_FOR` without a single success; one page per failing spell, and
//!   none while the page of an earlier spell is still unresolved (a flapping disk must not
//!   become a page storm: the open page repeats by itself).

use std::time::{Duration, Instant};

use crate::adapters::store::{loss_summary, Loss};

/// How long the store must fail before the supervisors are paged.
pub const FAILING_FOR: Duration = Duration::from_secs(60);

/// See the module doc.
#[derive(Debug, Clone, Default)]
pub struct StoreHealth {
    /// What was lost at start (one line each), and whether it was paged, as which alert.
    lost: Vec<String>,
    lost_detail: Option<String>,
    lost_alert: Option<String>,
    /// Why the store keeps nothing across a restart, when it does not.
    not_durable: Option<String>,
    /// Since when the store has failed without a success in between.
    failing_since: Option<Instant>,
    /// This failing spell was paged.
    failing_paged: bool,
    /// The last run-time fault page.
    failing_alert: Option<String>,
}

impl StoreHealth {
    /// The health of a store opened by `Store::recover` with these `losses`.
    pub fn at_start(losses: &[Loss]) -> StoreHealth {
        let not_durable = losses.iter().find_map(|l| match l {
            Loss::NotDurable { .. } => Some(l.short()),
            _ => None,
        });
        let mut lost: Vec<String> = Vec::new();
        for l in losses {
            let short = l.short();
            if !matches!(l, Loss::NotDurable { .. }) && !lost.contains(&short) {
                lost.push(short);
            }
        }
        StoreHealth {
            lost,
            lost_detail: (!losses.is_empty()).then(|| loss_summary(losses)),
            not_durable,
            ..StoreHealth::default()
        }
    }

    /// The outcome of a store operation at `now` (a commit, a telemetry write).
    pub fn observe(&mut self, now: Instant, store_ok: bool) {
        if store_ok {
            self.failing_since = None;
            self.failing_paged = false;
        } else if self.failing_since.is_none() {
            self.failing_since = Some(now);
        }
    }

    /// The `gateway_fault` to raise now, if one is due: its detail. `unresolved` says whether
    /// an alert (by id) is still unresolved. Call `raised` with the alert's id afterwards.
    pub fn due_fault(&self, now: Instant, unresolved: impl Fn(&str) -> bool) -> Option<Fault> {
        if self.lost_alert.is_none() {
            if let Some(detail) = &self.lost_detail {
                return Some(Fault {
                    cause: Cause::Start,
                    detail: detail.clone(),
                });
            }
        }
        let since = self.failing_since?;
        let failing = now.saturating_duration_since(since);
        if self.failing_paged
            || failing < FAILING_FOR
            || self.failing_alert.as_deref().is_some_and(&unresolved)
        {
            return None;
        }
        Some(Fault {
            cause: Cause::Failing,
            detail: format!(
                "the state store has been failing for {} s (see the gateway's log): alerts \
                 are paged, but what changes now is lost at a restart or power cut",
                failing.as_secs()
            ),
        })
    }

    /// The fault `due_fault` gave was raised as alert `alert_id`.
    pub fn raised(&mut self, fault: &Fault, alert_id: &str) {
        match fault.cause {
            Cause::Start => self.lost_alert = Some(alert_id.to_string()),
            Cause::Failing => {
                self.failing_paged = true;
                self.failing_alert = Some(alert_id.to_string());
            }
        }
    }

    /// Why the gateway is degraded now (empty: `ok`), for the status and `bandgate status`.
    pub fn reasons(&self, now: Instant, unresolved: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = &self.not_durable {
            out.push(why.clone());
        }
        let lost_open = match &self.lost_alert {
            None => !self.lost.is_empty(),
            Some(id) => unresolved(id),
        };
        if lost_open {
            out.extend(self.lost.iter().map(|l| format!("at start: {l}")));
        }
        if let Some(since) = self.failing_since {
            out.push(format!(
                "the state store has been failing for {} s",
                now.saturating_duration_since(since).as_secs()
            ));
        }
        out
    }
}

/// A `gateway_fault` to raise (see `StoreHealth::due_fault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub cause: Cause,
    /// What went wrong, for the alert's `text` and the log.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Lost at start (`Store::recover`'s losses).
    Start,
    /// The store has been failing at run time for `FAILING_FOR`.
    Failing,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn emptied() -> Loss {
        Loss::Emptied {
            path: PathBuf::from("/var/lib/bandgate/bandgate.sqlite3"),
            how: "zero bytes long".into(),
        }
    }

    #[test]
    fn a_clean_start_is_ok_and_pages_nobody() {
        let t0 = Instant::now();
        let h = StoreHealth::at_start(&[]);
        assert_eq!(h.due_fault(t0, |_| true), None);
        assert!(h.reasons(t0, |_| true).is_empty());
    }

    #[test]
    fn a_loss_at_start_is_paged_at_once_and_degrades_until_resolved() {
        let t0 = Instant::now();
        let mut h = StoreHealth::at_start(&[emptied()]);
        let fault = h.due_fault(t0, |_| true).expect("paged at start");
        assert_eq!(fault.cause, Cause::Start);
        assert!(fault.detail.contains("zero bytes long"), "{}", fault.detail);
        assert_eq!(
            h.reasons(t0, |_| true),
            ["at start: state database came back empty"]
        );
        h.raised(&fault, "gateway-gw-fault-1");
        assert_eq!(h.due_fault(t0, |_| true), None, "paged once");
        assert_eq!(h.reasons(t0, |id| id == "gateway-gw-fault-1").len(), 1);
        // A supervisor resolved the page: ok again.
        assert!(h.reasons(t0, |_| false).is_empty());
    }

    #[test]
    fn an_in_memory_store_stays_degraded_after_its_page_is_resolved() {
        let t0 = Instant::now();
        let loss = Loss::NotDurable {
            state_dir: PathBuf::from("/var/lib/bandgate"),
            error: "Read-only file system".into(),
        };
        let mut h = StoreHealth::at_start(&[loss]);
        let fault = h.due_fault(t0, |_| true).unwrap();
        assert!(fault.detail.contains("Read-only file system"));
        h.raised(&fault, "f-1");
        assert_eq!(
            h.reasons(t0, |_| false),
            ["state directory not writable: no durability"]
        );
    }

    #[test]
    fn a_store_failing_for_a_minute_is_paged_once_per_spell() {
        let t0 = Instant::now();
        let mut h = StoreHealth::at_start(&[]);
        h.observe(t0, false);
        assert_eq!(h.reasons(t0, |_| true).len(), 1, "degraded at once");
        // Failing again later does not move the start of the spell.
        h.observe(t0 + Duration::from_secs(30), false);
        assert_eq!(h.due_fault(t0 + Duration::from_secs(59), |_| true), None);
        let fault = h
            .due_fault(t0 + FAILING_FOR, |_| true)
            .expect("due at 60 s");
        assert_eq!(fault.cause, Cause::Failing);
        assert!(
            fault.detail.contains("failing for 60 s"),
            "{}",
            fault.detail
        );
        h.raised(&fault, "f-1");
        assert_eq!(h.due_fault(t0 + Duration::from_secs(600), |_| false), None);

        // It recovers: ok. It fails again while f-1 is open: no second page.
        let t1 = t0 + Duration::from_secs(700);
        h.observe(t1, true);
        assert!(h.reasons(t1, |_| true).is_empty());
        h.observe(t1, false);
        assert_eq!(h.due_fault(t1 + FAILING_FOR * 2, |id| id == "f-1"), None);
        // Once f-1 is resolved, a new spell of a minute is paged again.
        let again = h.due_fault(t1 + FAILING_FOR * 2, |_| false);
        assert_eq!(again.map(|f| f.cause), Some(Cause::Failing));
    }

    #[test]
    fn a_success_in_between_restarts_the_minute() {
        let t0 = Instant::now();
        let mut h = StoreHealth::at_start(&[]);
        h.observe(t0, false);
        h.observe(t0 + Duration::from_secs(50), true);
        h.observe(t0 + Duration::from_secs(51), false);
        assert_eq!(h.due_fault(t0 + Duration::from_secs(100), |_| false), None);
        assert!(h
            .due_fault(t0 + Duration::from_secs(111), |_| false)
            .is_some());
    }
}
