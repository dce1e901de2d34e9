//! When the BLE source must restart its scan, rebuild its BlueZ connection or give up: pure
//! decisions driven by `now` values and probe results, so they are unit-tested without a radio.
//!
//! Two independent judges, both fed by `ble.rs`:
//! - `Watchdog`: silence from *everyone* means the scan has gone deaf (BlueZ stops discovery
//!   without telling anyone; its signals just stop). Each silence
//!   of `silence` escalates one step: restart the scan, recreate the manager, give up (the
//!   process exits non-zero and systemd restarts it). Anything heard resets the ladder.
//! - `BluezHealth`: what a poll of the bus says about `org.bluez` and the adapter (owner,
//!   present, powered, discovering), turned into the action that fixes it.

use std::time::{Duration, Instant};

/// One rung of the silence ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceStep {
    RestartScan,
    RecreateManager,
    GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DogState {
    /// The adapter is known to be away (powered off, bluetoothd gone): silence is expected.
    Paused,
    /// Listening since `since` (last advert, last step, or resume) after `strikes` silences.
    Armed { since: Instant, strikes: u8 },
}

/// The silence watchdog.
#[derive(Debug, Clone)]
pub struct Watchdog {
    silence: Duration,
    state: DogState,
}

impl Watchdog {
    pub fn new(now: Instant, silence: Duration) -> Watchdog {
        Watchdog {
            silence,
            state: DogState::Armed {
                since: now,
                strikes: 0,
            },
        }
    }

    /// An advertisement (from anyone) arrived: the radio works.
    pub fn heard(&mut self, now: Instant) {
        if let DogState::Armed { .. } = self.state {
            self.state = DogState::Armed {
                since: now,
                strikes: 0,
            };
        }
    }

    /// The adapter went away for a known reason; silence proves nothing until `resume`.
    pub fn pause(&mut self) {
        self.state = DogState::Paused;
    }

    /// Scanning again after a pause: a fresh ladder. Does nothing when already armed, so a
    /// manager recreated *by* the watchdog keeps its strikes.
    pub fn resume(&mut self, now: Instant) {
        if self.state == DogState::Paused {
            self.state = DogState::Armed {
                since: now,
                strikes: 0,
            };
        }
    }

    pub fn is_paused(&self) -> bool {
        self.state == DogState::Paused
    }

    /// Silences in a row since anything was heard (0 while paused): while above 0 the scan
    /// is presumed deaf, whatever BlueZ says about the adapter.
    pub fn silences(&self) -> u8 {
        match self.state {
            DogState::Paused => 0,
            DogState::Armed { strikes, .. } => strikes,
        }
    }

    /// When `on_timeout` must next be called; `None` while paused.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            DogState::Paused => None,
            DogState::Armed { since, .. } => Some(since + self.silence),
        }
    }

    /// Called at (or after) `deadline()`: the step to take, if the silence really lasted.
    /// Each step restarts the silence clock, so the next step needs a whole new silence.
    pub fn on_timeout(&mut self, now: Instant) -> Option<SilenceStep> {
        let DogState::Armed { since, strikes } = self.state else {
            return None;
        };
        if now < since + self.silence {
            return None;
        }
        let strikes = strikes.saturating_add(1);
        self.state = DogState::Armed {
            since: now,
            strikes,
        };
        Some(match strikes {
            1 => SilenceStep::RestartScan,
            2 => SilenceStep::RecreateManager,
            _ => SilenceStep::GiveUp,
        })
    }
}

/// What one poll of the system bus found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Our own connection to the system bus died: the bus daemon went away (calls on the
    /// old connection would hang forever).
    pub bus_lost: bool,
    /// Unique bus name owning `org.bluez` (`:1.42`), `None` when bluetoothd is not running or
    /// the bus did not answer.
    pub owner: Option<String>,
    /// The adapter's state, `None` when it is not there (unplugged, bluetoothd gone).
    pub adapter: Option<AdapterProbe>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterProbe {
    pub powered: bool,
    pub discovering: bool,
}

/// What to do about a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthStep {
    /// All is well (or still away, already reported).
    Nothing,
    /// The adapter or bluetoothd just went away: report it, pause the watchdog.
    Lost(&'static str),
    /// The adapter is back and powered but not discovering: start the scan again.
    RestartScan(&'static str),
    /// bluetoothd is a new process (or came back): our D-Bus state is stale, rebuild it.
    RecreateManager(&'static str),
}

/// `HealthStep::RestartScan`'s reason when a powered adapter was seen not discovering (for a
/// passive scan: its monitor not in force).
pub const STOPPED_DISCOVERING: &str = "adapter stopped discovering";

/// Probes a powered adapter must be seen not discovering before the scan is restarted: one
/// probe can race a `StartDiscovery` still on its way.
pub const NOT_DISCOVERING_PROBES: u8 = 2;

/// Judges successive probes.
#[derive(Debug, Clone, Default)]
pub struct BluezHealth {
    owner: Option<String>,
    lost: bool,
    not_discovering: u8,
}

impl BluezHealth {
    /// Starts from the owner seen when the manager was created.
    pub fn new(owner: Option<String>) -> BluezHealth {
        BluezHealth {
            owner,
            lost: false,
            not_discovering: 0,
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    pub fn observe(&mut self, probe: &Probe) -> HealthStep {
        if probe.bus_lost {
            // Unique names restart with a new bus, so the owner check cannot be trusted.
            self.owner = None;
            self.lost = true;
            self.not_discovering = 0;
            return HealthStep::RecreateManager("lost the connection to the system bus");
        }
        let Some(owner) = probe.owner.as_ref() else {
            self.not_discovering = 0;
            return self.lose("bluetoothd is not on the bus");
        };
        if self.owner.as_ref() != Some(owner) {
            // A new bluetoothd (or the first one since we started) knows nothing of our
            // discovery session or filter: start from a clean connection, as at start-up.
            self.owner = Some(owner.clone());
            self.lost = false;
            self.not_discovering = 0;
            return HealthStep::RecreateManager("bluetoothd changed owner (restarted)");
        }
        let Some(adapter) = probe.adapter else {
            self.not_discovering = 0;
            return self.lose("adapter is gone");
        };
        if !adapter.powered {
            self.not_discovering = 0;
            return self.lose("adapter is powered off");
        }
        let was_lost = std::mem::replace(&mut self.lost, false);
        if adapter.discovering {
            self.not_discovering = 0;
            return HealthStep::Nothing;
        }
        if was_lost {
            self.not_discovering = 0;
            return HealthStep::RestartScan("adapter is back");
        }
        self.not_discovering += 1;
        if self.not_discovering >= NOT_DISCOVERING_PROBES {
            self.not_discovering = 0;
            HealthStep::RestartScan(STOPPED_DISCOVERING)
        } else {
            HealthStep::Nothing
        }
    }

    fn lose(&mut self, why: &'static str) -> HealthStep {
        if std::mem::replace(&mut self.lost, true) {
            HealthStep::Nothing
        } else {
            HealthStep::Lost(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(60);

    #[test]
    fn silence_climbs_the_ladder_one_rung_per_silence() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(t0, S);
        assert_eq!(dog.deadline(), Some(t0 + S));
        assert_eq!(dog.on_timeout(t0 + S - Duration::from_millis(1)), None);
        assert_eq!(dog.on_timeout(t0 + S), Some(SilenceStep::RestartScan));
        assert_eq!(dog.deadline(), Some(t0 + 2 * S));
        assert_eq!(
            dog.on_timeout(t0 + S),
            None,
            "a step needs a whole new silence"
        );
        assert_eq!(
            dog.on_timeout(t0 + 2 * S),
            Some(SilenceStep::RecreateManager)
        );
        assert_eq!(dog.on_timeout(t0 + 3 * S), Some(SilenceStep::GiveUp));
    }

    #[test]
    fn hearing_anything_resets_the_ladder() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(t0, S);
        assert_eq!(dog.silences(), 0);
        assert_eq!(dog.on_timeout(t0 + S), Some(SilenceStep::RestartScan));
        assert_eq!(dog.silences(), 1);
        assert_eq!(
            dog.on_timeout(t0 + 2 * S),
            Some(SilenceStep::RecreateManager)
        );
        assert_eq!(dog.silences(), 2);
        dog.heard(t0 + 2 * S + Duration::from_secs(1));
        assert_eq!(dog.silences(), 0);
        assert_eq!(dog.on_timeout(t0 + 3 * S), None);
        assert_eq!(
            dog.on_timeout(t0 + 3 * S + Duration::from_secs(1)),
            Some(SilenceStep::RestartScan)
        );
    }

    #[test]
    fn the_deadline_always_moves_forward_after_a_step() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(t0, S);
        let mut now = t0;
        for _ in 0..5 {
            let d = dog.deadline().unwrap();
            assert!(d > now);
            now = d;
            dog.on_timeout(now);
        }
    }

    #[test]
    fn a_paused_watchdog_never_fires_and_resumes_with_a_fresh_ladder() {
        let t0 = Instant::now();
        let mut dog = Watchdog::new(t0, S);
        assert_eq!(dog.on_timeout(t0 + S), Some(SilenceStep::RestartScan));
        dog.pause();
        assert_eq!(dog.silences(), 0, "a known reason replaces the presumption");
        assert_eq!(dog.deadline(), None);
        assert_eq!(dog.on_timeout(t0 + 10 * S), None);
        dog.heard(t0 + 10 * S);
        assert!(
            dog.is_paused(),
            "hearing does not unpause; the adapter probe does"
        );
        dog.resume(t0 + 10 * S);
        assert_eq!(dog.on_timeout(t0 + 11 * S), Some(SilenceStep::RestartScan));
        // Resuming an armed dog (manager recreated by the watchdog) keeps its strikes.
        dog.resume(t0 + 11 * S);
        assert_eq!(
            dog.on_timeout(t0 + 12 * S),
            Some(SilenceStep::RecreateManager)
        );
    }

    fn probe(owner: Option<&str>, adapter: Option<(bool, bool)>) -> Probe {
        Probe {
            bus_lost: false,
            owner: owner.map(str::to_string),
            adapter: adapter.map(|(powered, discovering)| AdapterProbe {
                powered,
                discovering,
            }),
        }
    }

    #[test]
    fn a_healthy_scan_needs_nothing() {
        let mut h = BluezHealth::new(Some(":1.1".into()));
        for _ in 0..5 {
            assert_eq!(
                h.observe(&probe(Some(":1.1"), Some((true, true)))),
                HealthStep::Nothing
            );
        }
    }

    #[test]
    fn bluetoothd_gone_is_reported_once_then_its_return_recreates_the_manager() {
        let mut h = BluezHealth::new(Some(":1.1".into()));
        assert!(matches!(h.observe(&probe(None, None)), HealthStep::Lost(_)));
        assert!(h.is_lost());
        assert_eq!(h.observe(&probe(None, None)), HealthStep::Nothing);
        assert!(matches!(
            h.observe(&probe(Some(":1.9"), Some((true, false)))),
            HealthStep::RecreateManager(_)
        ));
        assert!(!h.is_lost());
    }

    #[test]
    fn a_fast_restart_between_probes_is_caught_by_the_owner() {
        let mut h = BluezHealth::new(Some(":1.1".into()));
        assert!(matches!(
            h.observe(&probe(Some(":1.2"), Some((true, true)))),
            HealthStep::RecreateManager(_)
        ));
        assert_eq!(
            h.observe(&probe(Some(":1.2"), Some((true, true)))),
            HealthStep::Nothing
        );
    }

    #[test]
    fn power_off_then_on_restarts_the_scan_at_once() {
        let mut h = BluezHealth::new(Some(":1.1".into()));
        assert!(matches!(
            h.observe(&probe(Some(":1.1"), Some((false, false)))),
            HealthStep::Lost(_)
        ));
        assert_eq!(
            h.observe(&probe(Some(":1.1"), Some((false, false)))),
            HealthStep::Nothing
        );
        assert!(matches!(
            h.observe(&probe(Some(":1.1"), Some((true, false)))),
            HealthStep::RestartScan(_)
        ));
    }

    #[test]
    fn discovery_stopped_behind_our_back_restarts_after_two_probes() {
        let mut h = BluezHealth::new(Some(":1.1".into()));
        let stopped = probe(Some(":1.1"), Some((true, false)));
        assert_eq!(h.observe(&stopped), HealthStep::Nothing);
        assert!(matches!(h.observe(&stopped), HealthStep::RestartScan(_)));
        assert_eq!(h.observe(&stopped), HealthStep::Nothing);
        assert!(matches!(h.observe(&stopped), HealthStep::RestartScan(_)));
    }

    #[test]
    fn losing_the_bus_recreates_the_manager() {
        let mut h = BluezHealth::new(Some(":1.1".into()));
        let lost = Probe {
            bus_lost: true,
            owner: None,
            adapter: None,
        };
        assert!(matches!(h.observe(&lost), HealthStep::RecreateManager(_)));
    }

    #[test]
    fn adapter_unplugged_then_back() {
        let mut h = BluezHealth::new(Some(":1.1".into()));
        assert!(matches!(
            h.observe(&probe(Some(":1.1"), None)),
            HealthStep::Lost(_)
        ));
        assert!(matches!(
            h.observe(&probe(Some(":1.1"), Some((true, false)))),
            HealthStep::RestartScan(_)
        ));
    }
}
