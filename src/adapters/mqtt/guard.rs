//! What keeps one phone from drowning the gateway (the contract's "A phone cannot drown the
//! gateway"): a per-person rate limit on phone messages, and refusal logs aggregated to one
//! line per reason per interval. Both are pure: time comes in as `now`, nothing is read or
//! written, memory is bounded whatever the traffic.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The contract's default: over 20 messages a second from one person, messages are dropped.
pub const DEFAULT_RATE: u32 = 20;
/// People tracked one by one. The broker's ACL ties an ack topic to a user, so this is the
/// number of accounts that wrote lately; past it (a broker without that ACL, a topic spray)
/// newcomers share one bucket, so they can drown only each other.
pub const MAX_TRACKED: usize = 4096;
/// How often a reason's refusals are summed up in one log line.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A per-person rate limit: `rate` messages a second on average, bursts of up to `rate`.
///
/// One "theoretical arrival time" per person (GCRA, the token bucket's twin): a message is
/// admitted when that time is no further than `burst` intervals ahead of `now`, and moves
/// it one interval on. A person whose time is in the past is idle and is forgotten first.
#[derive(Debug, Clone)]
pub struct RateLimit {
    interval: Duration,
    tolerance: Duration,
    people: HashMap<String, Instant>,
    /// The shared bucket of people past `MAX_TRACKED`.
    others: Option<Instant>,
    max_tracked: usize,
    dropped: u64,
}

impl RateLimit {
    /// `rate` messages a second per person (at least 1).
    pub fn new(rate: u32) -> RateLimit {
        RateLimit::with_capacity(rate, MAX_TRACKED)
    }

    pub fn with_capacity(rate: u32, max_tracked: usize) -> RateLimit {
        let rate = rate.max(1);
        let interval = Duration::from_secs(1) / rate;
        RateLimit {
            interval,
            tolerance: interval * (rate - 1),
            people: HashMap::new(),
            others: None,
            max_tracked: max_tracked.max(1),
            dropped: 0,
        }
    }

    /// Whether `staff_id`'s message arriving at `now` may be handled; `false`: drop it.
    pub fn admit(&mut self, now: Instant, staff_id: &str) -> bool {
        let admitted = match self.people.get_mut(staff_id) {
            Some(tat) => Self::take(tat, now, self.interval, self.tolerance),
            None => {
                if self.people.len() >= self.max_tracked {
                    self.people.retain(|_, tat| *tat > now);
                }
                if self.people.len() < self.max_tracked {
                    let mut tat = now;
                    let ok = Self::take(&mut tat, now, self.interval, self.tolerance);
                    self.people.insert(staff_id.to_owned(), tat);
                    ok
                } else {
                    let tat = self.others.get_or_insert(now);
                    Self::take(tat, now, self.interval, self.tolerance)
                }
            }
        };
        if !admitted {
            self.dropped += 1;
        }
        admitted
    }

    fn take(tat: &mut Instant, now: Instant, interval: Duration, tolerance: Duration) -> bool {
        let start = (*tat).max(now);
        if start > now + tolerance {
            return false;
        }
        *tat = start + interval;
        true
    }

    /// Messages refused since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// People tracked one by one now (never more than the capacity).
    pub fn tracked(&self) -> usize {
        self.people.len()
    }
}

/// One log line's worth: `count` refusals for `reason` since `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub reason: &'static str,
    pub count: u64,
    pub over: Duration,
    /// What the first of them was (staff, alert, topic), for the person reading the log.
    pub example: String,
}

impl Summary {
    /// Writes the one warn line.
    pub fn log(&self) {
        tracing::warn!(
            reason = self.reason,
            count = self.count,
            over_s = self.over.as_secs_f64().round() as u64,
            example = self.example,
            "phone messages refused (one line per reason per interval)"
        );
    }
}

#[derive(Debug, Clone)]
struct Tally {
    since: Instant,
    count: u64,
    example: Option<String>,
}

/// Refusal logs aggregated by reason. The first refusal of a reason after a quiet interval
/// is logged at once, in full (`note` says so); the rest are counted and come out of `tick`
/// as one `Summary` per reason per interval. Reasons are a fixed set of codes, so memory is
/// bounded.
#[derive(Debug, Clone)]
pub struct RefusalLog {
    interval: Duration,
    tallies: BTreeMap<&'static str, Tally>,
}

impl Default for RefusalLog {
    fn default() -> RefusalLog {
        RefusalLog::new(LOG_INTERVAL)
    }
}

impl RefusalLog {
    pub fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            tallies: BTreeMap::new(),
        }
    }

    /// A refusal for `reason` at `now`. `true`: log this one now, in full (the first after a
    /// quiet interval); `false`: it is counted for the next `tick`. `example` is called at
    /// most once per reason per interval.
    pub fn note(
        &mut self,
        now: Instant,
        reason: &'static str,
        example: impl FnOnce() -> String,
    ) -> bool {
        match self.tallies.get_mut(reason) {
            None => {
                self.tallies.insert(
                    reason,
                    Tally {
                        since: now,
                        count: 0,
                        example: None,
                    },
                );
                true
            }
            Some(t) => {
                if t.example.is_none() {
                    t.example = Some(example());
                }
                t.count += 1;
                false
            }
        }
    }

    /// When `tick` next has something to do.
    pub fn due(&self) -> Option<Instant> {
        self.tallies.values().map(|t| t.since + self.interval).min()
    }

    /// The summaries of every reason whose interval is over at `now`; a reason with nothing
    /// counted in its interval is forgotten (its next refusal is logged at once again).
    pub fn tick(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = Vec::new();
        let interval = self.interval;
        self.tallies.retain(|reason, t| {
            if t.since + interval > now {
                return true;
            }
            if t.count == 0 {
                return false;
            }
            out.push(Summary {
                reason,
                count: t.count,
                over: now - t.since,
                example: t.example.take().unwrap_or_default(),
            });
            t.since = now;
            t.count = 0;
            true
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn twenty_a_second_per_person_and_others_unaffected() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(DEFAULT_RATE);
        // A flood of 12,000 in one second from zhang: a burst of 20, then one per 50 ms.
        let admitted = (0..12_000)
            .filter(|i| r.admit(t0 + Duration::from_micros(i * 1_000_000 / 12_000), "zhang"))
            .count();
        assert!((20..=41).contains(&admitted), "{admitted}");
        assert_eq!(r.dropped(), 12_000 - admitted as u64);
        // li, meanwhile, is not touched by zhang's flood.
        assert!(r.admit(ms(t0, 999), "li"));
        // A person at a steady 20/s is never refused.
        let mut steady = RateLimit::new(DEFAULT_RATE);
        assert!((0..400).all(|i| steady.admit(ms(t0, i * 50), "wang")));
        // After a quiet second zhang has a full burst again.
        let later = ms(t0, 3000);
        assert!((0..20).all(|i| r.admit(later + Duration::from_micros(i), "zhang")));
        assert!(!r.admit(later + Duration::from_micros(30), "zhang"));
    }

    #[test]
    fn memory_is_bounded_and_idle_people_are_forgotten_first() {
        let t0 = Instant::now();
        let mut r = RateLimit::with_capacity(20, 100);
        for i in 0..10_000 {
            r.admit(t0, &format!("spray-{i}"));
            assert!(r.tracked() <= 100);
        }
        // Past the capacity everyone new shares a bucket: the spray is mostly refused...
        assert!(r.dropped() > 9_000, "{}", r.dropped());
        // ...and once the tracked ones are idle, a real person gets a bucket of their own.
        let later = ms(t0, 2000);
        assert!((0..20).all(|_| r.admit(later, "zhang")));
        assert!(r.tracked() <= 100);
    }

    #[test]
    fn one_line_per_reason_per_interval_with_a_count() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(Duration::from_secs(10));
        let mut full = 0;
        // 100,000 refusals of one reason and 3 of another over 25 s.
        for i in 0..100_000u64 {
            let t = t0 + Duration::from_micros(i * 250);
            if log.note(t, "rate_limited", || format!("zhang #{i}")) {
                full += 1;
            }
        }
        assert!(log.note(ms(t0, 5), "not_permitted", || "li".into()));
        assert!(!log.note(ms(t0, 6), "not_permitted", || "li".into()));
        assert_eq!(full, 1, "only the first is logged at once");
        assert_eq!(log.due(), Some(ms(t0, 10_000)));
        assert!(log.tick(ms(t0, 9_999)).is_empty());
        let lines = log.tick(ms(t0, 25_000));
        assert_eq!(
            lines,
            vec![
                Summary {
                    reason: "not_permitted",
                    count: 1,
                    over: Duration::from_millis(24_995),
                    example: "li".into(),
                },
                Summary {
                    reason: "rate_limited",
                    count: 99_999,
                    over: Duration::from_secs(25),
                    example: "zhang #1".into(),
                },
            ]
        );
        // A quiet interval: the reason is forgotten, its next refusal is logged at once.
        assert!(log.tick(ms(t0, 35_000)).is_empty());
        assert_eq!(log.due(), None);
        assert!(log.note(ms(t0, 36_000), "rate_limited", String::new));
    }
}
