//! The two bounded lanes between advertisement sources and the daemon loop.
//!
//! Which lane a frame takes is decided by authenticating it with `engine::frame::open` (a
//! microsecond): only an authentic SOS, fall, no-motion or cancel takes the alarm lane, so a
//! forger cannot flood it. Repeats of one frame (a band re-sends each one many times) are all
//! alarms too; the engine's replay window drops them cheaply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::engine::{frame, BandEvent, Keyring};

/// One advertisement under our company id, as a source heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The advertiser's Bluetooth address as text (`C8:FD:19:00:00:11`).
    pub addr: String,
    pub rssi: Option<i16>,
    /// Manufacturer data after the company id.
    pub data: Vec<u8>,
    /// Wall-clock time of reception.
    pub received_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Alarm,
    Telemetry,
}

/// Capacity of the telemetry lane; past it heartbeats are dropped and counted.
pub const TELEMETRY_CAPACITY: usize = 4096;
/// Capacity of the alarm lane; a full alarm lane makes the source wait, never drop.
pub const ALARM_CAPACITY: usize = 1024;

/// The sending side, cloned into each source.
#[derive(Clone)]
pub struct AdvertTx {
    alarms: mpsc::Sender<Advert>,
    telemetry: mpsc::Sender<Advert>,
    company_id: u16,
    keys: Arc<Keyring>,
    dropped: Arc<AtomicU64>,
}

/// The receiving side, owned by the daemon loop: poll `alarms` first.
pub struct AdvertRx {
    pub alarms: mpsc::Receiver<Advert>,
    pub telemetry: mpsc::Receiver<Advert>,
    dropped: Arc<AtomicU64>,
}

impl AdvertRx {
    /// Telemetry adverts dropped because the daemon fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

pub fn advert_lanes(company_id: u16, keys: Arc<Keyring>) -> (AdvertTx, AdvertRx) {
    let (atx, arx) = mpsc::channel(ALARM_CAPACITY);
    let (ttx, trx) = mpsc::channel(TELEMETRY_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        AdvertTx {
            alarms: atx,
            telemetry: ttx,
            company_id,
            keys,
            dropped: dropped.clone(),
        },
        AdvertRx {
            alarms: arx,
            telemetry: trx,
            dropped,
        },
    )
}

impl AdvertTx {
    pub fn company_id(&self) -> u16 {
        self.company_id
    }

    /// Which lane `data` belongs in.
    pub fn lane(&self, data: &[u8]) -> Lane {
        match frame::open(data, self.company_id, &self.keys) {
            Ok(f) if !matches!(f.event, BandEvent::Heartbeat { .. }) => Lane::Alarm,
            _ => Lane::Telemetry,
        }
    }

    /// Hands an advertisement to the daemon. Alarms wait for room; telemetry is dropped and
    /// counted when its lane is full. Returns `false` once the daemon has gone away.
    pub async fn send(&self, advert: Advert) -> bool {
        match self.lane(&advert.data) {
            Lane::Alarm => self.alarms.send(advert).await.is_ok(),
            Lane::Telemetry => match self.telemetry.try_send(advert) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            },
        }
    }

    /// Telemetry adverts dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
