//! The simulate source: bands that exist only in software, sealed with the real keys and
//! decoded by the real decoder, for the demo and for trying a configuration without radios.
//!
//! Each band sends a heartbeat every `heartbeat_every` (with jitter) and repeats every frame a
//! few times, as real bands do; scripted events (the demo's SOS) go out at their time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::lanes::{Advert, AdvertTx};
use crate::engine::{BandEvent, Frame, Keyring};

#[derive(Debug, Clone)]
pub struct SimulateSettings {
    pub bands: Vec<u32>,
    pub company_id: u16,
    pub heartbeat_every: Duration,
    /// Each frame is sent this many times, back to back (the gateway must de-duplicate).
    pub repeats: u32,
    /// Mean time between random SOS/fall presses across all bands; `None` for none.
    pub random_alarm_every: Option<Duration>,
    /// Events at fixed times after start: (delay, band, event).
    pub script: Vec<(Duration, u32, BandEvent)>,
}

impl SimulateSettings {
    pub fn new(bands: Vec<u32>, company_id: u16) -> SimulateSettings {
        SimulateSettings {
            bands,
            company_id,
            heartbeat_every: Duration::from_secs(60),
            repeats: 3,
            random_alarm_every: Some(Duration::from_secs(30 * 60)),
            script: Vec::new(),
        }
    }
}

struct Band {
    seq: u32,
    battery: u8,
    steps: u32,
}

/// The simulated bands and what is due next.
struct Simulator {
    settings: SimulateSettings,
    start: Instant,
    bands: HashMap<u32, Band>,
    script: std::iter::Peekable<std::vec::IntoIter<(Duration, u32, BandEvent)>>,
    next_heartbeat: Vec<(Instant, u32)>,
}

/// Runs until the daemon goes away.
pub async fn run(
    settings: SimulateSettings,
    keys: Arc<Keyring>,
    tx: AdvertTx,
) -> anyhow::Result<()> {
    let mut sim = Simulator::new(settings, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut due = sim.scripted(now);
        due.extend(sim.heartbeats(now));
        due.extend(sim.random_alarm());
        for (id, event) in due {
            if !sim.send(id, event, &keys, &tx) {
                return Ok(());
            }
        }
    }
}

impl Simulator {
    fn new(settings: SimulateSettings, start: Instant) -> Simulator {
        // Seqs start from the clock so a restarted simulator is not refused as a replay.
        let seq =
            u32::try_from(jiff::Timestamp::now().as_second() % 1_000_000_000).unwrap_or(1) * 2;
        let bands = settings
            .bands
            .iter()
            .map(|&id| {
                let band = Band {
                    seq,
                    battery: 90,
                    steps: 0,
                };
                (id, band)
            })
            .collect();
        let mut script = settings.script.clone();
        script.sort_by_key(|(t, _, _)| *t);
        let next_heartbeat = settings
            .bands
            .iter()
            .map(|&id| {
                let jitter = rand::thread_rng().gen_range(0.0..1.0);
                (start + settings.heartbeat_every.mul_f64(jitter), id)
            })
            .collect();
        Simulator {
            settings,
            start,
            bands,
            script: script.into_iter().peekable(),
            next_heartbeat,
        }
    }

    /// The script's events whose time has come.
    fn scripted(&mut self, now: Instant) -> Vec<(u32, BandEvent)> {
        let mut due = Vec::new();
        while let Some((t, _, _)) = self.script.peek() {
            if self.start + *t > now {
                break;
            }
            let (_, band, event) = self.script.next().expect("peeked");
            due.push((band, event));
        }
        due
    }

    fn heartbeats(&mut self, now: Instant) -> Vec<(u32, BandEvent)> {
        let mut due = Vec::new();
        for (t, id) in self.next_heartbeat.iter_mut() {
            if *t > now {
                continue;
            }
            *t = now + self.settings.heartbeat_every;
            let b = self.bands.get_mut(id).expect("band of the settings");
            b.steps += rand::thread_rng().gen_range(0..120);
            due.push((
                *id,
                BandEvent::Heartbeat {
                    heart_rate: Some(rand::thread_rng().gen_range(60..90)),
                    spo2: Some(rand::thread_rng().gen_range(95..100)),
                    steps: b.steps,
                },
            ));
        }
        due
    }

    /// A random SOS or fall, on average once per `random_alarm_every` (called every 100 ms).
    fn random_alarm(&self) -> Option<(u32, BandEvent)> {
        let mean = self.settings.random_alarm_every?;
        let bands = &self.settings.bands;
        let p = 0.1 / mean.as_secs_f64().max(0.1);
        if bands.is_empty() || !rand::thread_rng().gen_bool(p.min(1.0)) {
            return None;
        }
        let id = bands[rand::thread_rng().gen_range(0..bands.len())];
        let event = if rand::thread_rng().gen_bool(0.5) {
            BandEvent::Sos
        } else {
            BandEvent::Fall { impact_dg: 25 }
        };
        Some((id, event))
    }

    /// Seals the event as the band's next frame and sends it `repeats` times; false once the
    /// daemon is gone.
    fn send(&mut self, id: u32, event: BandEvent, keys: &Keyring, tx: &AdvertTx) -> bool {
        let Some(b) = self.bands.get_mut(&id) else {
            tracing::warn!(
                device_id = id,
                "simulated event for a band that is not simulated"
            );
            return true;
        };
        b.seq = b.seq.wrapping_add(1);
        let frame = Frame {
            device_id: id,
            seq: b.seq,
            battery_pct: b.battery,
            worn: true,
            event,
        };
        let Some(data) = keys.seal(&frame, self.settings.company_id) else {
            tracing::warn!(device_id = id, "simulated band has no key; skipped");
            return true;
        };
        for _ in 0..self.settings.repeats.max(1) {
            let advert = Advert {
                addr: format!(
                    "C8:FD:19:{:02X}:{:02X}:{:02X}",
                    (id >> 16) as u8,
                    (id >> 8) as u8,
                    id as u8
                ),
                rssi: Some(-55 - rand::thread_rng().gen_range(0..30)),
                data: data.clone(),
                received_at: jiff::Timestamp::now(),
                format: crate::adapters::Format::Band,
            };
            if !tx.send(advert) {
                return false;
            }
        }
        true
    }
}
