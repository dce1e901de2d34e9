//! Time arithmetic that cannot panic, and the limits that `check-config` enforces.
//!
//! Every deadline the engine sets is `later(when, configured duration)`: the duration is held
//! to `MIN_DELAY ..= MAX_DELAY` and the addition is checked, so no configured value (even one
//! `check-config` would refuse, given through `Setup` directly) can overflow an `Instant` or a
//! `Timestamp`, stall the engine in a loop of zero-length waits, or panic.
//!
//! Deadlines are stored as wall-clock times and turned back into delays at start; a clock that
//! went back while the gateway was down (a Raspberry Pi without RTC after a power cut) would
//! push every stored deadline into the future by as much. `Limits` bounds each restored
//! deadline by the longest wait its state allows; anything later is fired at once.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use super::alert::{Alert, Kind, Next, State};
use super::setup::Setup;

/// The two clocks, read once per input by the loop and passed to the engine together: `mono`
/// (monotonic) for deadlines, `wall` for documents, the rota and what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: Timestamp,
}

/// The shortest wait bandgate accepts anywhere (`check-config` refuses less).
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// The longest wait bandgate accepts anywhere (`check-config` refuses more): 30 days.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Reminder period of a `low_battery` notice that nobody closed.
pub const LOW_BATTERY_REMINDER: Duration = Duration::from_secs(24 * 3600);

/// The engine's own floor: tests drive it with millisecond timers, and a zero wait would make
/// a deadline that never moves past `now`.
const ENGINE_MIN_DELAY: Duration = Duration::from_millis(1);

/// `d` as the engine uses it: at least a millisecond, at most `MAX_DELAY`.
pub fn held(d: Duration) -> Duration {
    d.clamp(ENGINE_MIN_DELAY, MAX_DELAY)
}

/// `t + d` without panicking: `d` is held to the engine's range, and if even that does not fit
/// (an `Instant` near the end of its range) the result is the latest moment that does, never
/// earlier than `t`.
pub fn later(t: Instant, d: Duration) -> Instant {
    let d = held(d);
    if let Some(x) = t.checked_add(d) {
        return x;
    }
    // Not reachable with a real monotonic clock; halve until it fits.
    let mut step = d;
    while !step.is_zero() {
        step /= 2;
        if let Some(x) = t.checked_add(step) {
            return x;
        }
    }
    t
}

/// `wall + d` (negative `d` allowed), saturating at the ends of `Timestamp`'s range.
pub fn wall_plus(wall: Timestamp, d: SignedDuration) -> Timestamp {
    match wall.checked_add(d) {
        Ok(t) => t,
        Err(_) if d.is_negative() => Timestamp::MIN,
        Err(_) => Timestamp::MAX,
    }
}

/// The longest wait each state of an alert can have, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    renotify: Duration,
    repeat: Duration,
    ack: Duration,
    claim: Duration,
    verify: Duration,
    retention: Duration,
    silent: Duration,
    /// The longest wait of a fallback ladder's step: its deadline, a gap, or the call gap.
    ladder: Duration,
}

/// A restored deadline that was further ahead than its state allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clamped {
    /// `due`, `escalate_at` or `verify_until`.
    pub which: &'static str,
    /// How far ahead of now the stored deadline was.
    pub ahead: Duration,
    /// The longest wait the state allows.
    pub allowed: Duration,
}

impl Limits {
    pub fn new(setup: &Setup) -> Limits {
        let e = &setup.escalation;
        Limits {
            renotify: held(e.renotify_every),
            repeat: held(e.repeat_every),
            ack: held(e.ack_timeouts.iter().copied().max().unwrap_or_default()),
            claim: held(e.claim_timeout),
            verify: held(e.cancel_verify_timeout),
            retention: held(setup.resolved_retention),
            silent: held(setup.supervision.silent_after),
            ladder: held(setup.fallback.as_ref().map_or(Duration::ZERO, |f| {
                f.step_every
                    .iter()
                    .copied()
                    .chain([f.after, f.call_gap])
                    .max()
                    .unwrap_or_default()
            })),
        }
    }

    /// The longest wait before the state's own deadline (`remind_at`, `lapse_at`, `clear_at`).
    fn state_wait(&self, a: &Alert) -> Duration {
        match a.state {
            State::Open { .. } => match a.kind {
                Kind::DeviceSilent => self.silent,
                Kind::LowBattery => LOW_BATTERY_REMINDER,
                Kind::Test => self.repeat,
                _ => self.renotify.max(self.repeat),
            },
            State::Acknowledged { .. } | State::OnScene { .. } => self.claim,
            State::Resolved { .. } => self.retention,
        }
    }

    /// Brings every deadline of a just-restored alert to at most `now` plus the longest wait
    /// its state allows; one further ahead (the clock went back, or the setting was
    /// shortened) is due at `now`. Returns what was moved.
    pub fn clamp(&self, a: &mut Alert, now: Instant) -> Vec<Clamped> {
        let mut moved = Vec::new();
        let mut fix = |which: &'static str, t: &mut Instant, allowed: Duration| {
            if *t > later(now, allowed) {
                moved.push(Clamped {
                    which,
                    ahead: t.saturating_duration_since(now),
                    allowed,
                });
                *t = now;
            }
        };
        let wait = self.state_wait(a);
        match &mut a.state {
            State::Open { remind_at, next } => {
                fix("due", remind_at, wait);
                match next {
                    Next::Escalate(e) => fix("escalate_at", e, self.ack),
                    Next::Verify(v) => fix("verify_until", v, self.verify),
                    Next::Remind => {}
                }
            }
            State::Acknowledged { lapse_at: t, .. }
            | State::OnScene { remind_at: t, .. }
            | State::Resolved { clear_at: t, .. } => fix("due", t, wait),
        }
        // A coalesced press waits at most one `renotify_every` for its page.
        if let Some(p) = &mut a.presses.due {
            fix("press_due", p, self.renotify);
        }
        // A ladder's next step waits at most its longest gap.
        for l in &mut a.ladders {
            if let Some(d) = &mut l.due {
                fix("ladder_due", d, self.ladder);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_plus_saturates() {
        assert_eq!(
            wall_plus(Timestamp::MAX, SignedDuration::from_millis(1)),
            Timestamp::MAX
        );
        assert_eq!(
            wall_plus(Timestamp::MIN, SignedDuration::from_millis(-1)),
            Timestamp::MIN
        );
        let t = Timestamp::from_second(1_000).unwrap();
        assert_eq!(
            wall_plus(t, SignedDuration::from_secs(1)),
            Timestamp::from_second(1_001).unwrap()
        );
    }
}
