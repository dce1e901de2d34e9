//! The two bounded lanes between advertisement sources and the daemon loop.
//!
//! Which lane a frame takes is decided by authenticating it with `engine::frame::open` (or
//! `engine::bthome::open` for BTHome service data; a microsecond): only an authentic SOS,
//! fall, no-motion or cancel (for a BTHome device: an event in its `sos` or `cancel` list)
//! takes the alarm lane, so a forger cannot flood it. Repeats of one frame (a band re-sends each one many times) are all
//! alarms too; the engine's replay window drops them cheaply.
//!
//! The alarm lane is fair between bands: each band has its own small queue and the loop takes
//! one frame per band in turn, so a band that storms (a stuck button: thousands of SOS frames
//! with fresh seqs) delays another band's first alarm by at most one frame of each band
//! waiting. A band's queue holds `ALARM_PER_BAND` frames; past that its surplus collapses: a
//! frame of a kind the queue already holds (after its first frame) is dropped and counted,
//! and a frame of a new kind (a Cancel after many SOS) takes the place of the newest repeat.
//! The frame at the head of a band's queue (its first alarm) is never dropped, so the lane
//! never waits on a source and never loses a band's first alarm or its last kind of news.
//! The lane is bounded by `ALARM_PER_BAND` × the bands enrolled (only authentic frames enter).

use std::collections::{HashMap, VecDeque};
use std::mem::Discriminant;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
pub use tokio::sync::mpsc::error::TryRecvError;

use crate::engine::{bthome, frame, BandEvent, Keyring};

/// One advertisement under our company id, or BTHome service data, as a source heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The advertiser's Bluetooth address as text (`C8:FD:19:00:00:11`).
    pub addr: String,
    pub rssi: Option<i16>,
    /// Manufacturer data after the company id, or (`format` BtHome) the service data under
    /// `bthome::UUID` from the device-information byte on.
    pub data: Vec<u8>,
    /// Wall-clock time of reception.
    pub received_at: jiff::Timestamp,
    pub format: Format,
}

/// Which frame format an advert's `data` is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// bandgate's wire format (`wire-format.md`), manufacturer data under our company id.
    #[default]
    Band,
    /// BTHome v2 service data (`bthome.md`).
    BtHome,
}

/// The address of a BTHome advert as its MAC; an address that is not one (a test's, a
/// capture's) names no device.
pub fn mac_of(addr: &str) -> bthome::Mac {
    bthome::parse_mac(addr).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Alarm,
    Telemetry,
}

/// Capacity of the telemetry lane; past it heartbeats are dropped and counted.
pub const TELEMETRY_CAPACITY: usize = 4096;
/// Alarm frames one band may have waiting; past it the band's surplus collapses (see above).
pub const ALARM_PER_BAND: usize = 8;

/// The alarm lane's shared state: a queue per band and the bands' turns.
#[derive(Debug, Default)]
struct FairQueue {
    bands: HashMap<u32, VecDeque<(Discriminant<BandEvent>, Advert)>>,
    /// Bands with frames waiting, in the order they get their next turn.
    turns: VecDeque<u32>,
    collapsed: u64,
}

impl FairQueue {
    fn push(&mut self, device_id: u32, kind: Discriminant<BandEvent>, advert: Advert) {
        let q = self.bands.entry(device_id).or_default();
        if q.is_empty() {
            self.turns.push_back(device_id);
        }
        if q.len() < ALARM_PER_BAND {
            q.push_back((kind, advert));
            return;
        }
        self.collapsed += 1;
        // The same frame heard again (bands repeat each one): nothing new.
        if q.iter().any(|(_, a)| a.data == advert.data) {
            return;
        }
        // A new frame goes to the back, so that the newest frame of every kind keeps its place
        // in arrival order (a press after a Cancel must reach the engine after it). To make
        // room it takes out the oldest frame of its own kind behind the head; failing that (a
        // kind of news the queue does not hold), the newest frame whose kind is there twice
        // (one exists: there are fewer kinds than places). Never the head.
        let evict = (1..q.len()).find(|&i| q[i].0 == kind).or_else(|| {
            (1..q.len()).rev().find(|&i| {
                let k = q[i].0;
                q.iter().filter(|(other, _)| *other == k).count() > 1
            })
        });
        if let Some(i) = evict {
            q.remove(i);
            q.push_back((kind, advert));
        }
    }

    fn pop(&mut self) -> Option<Advert> {
        let device_id = self.turns.pop_front()?;
        let q = self.bands.get_mut(&device_id)?;
        let (_, advert) = q.pop_front()?;
        if q.is_empty() {
            self.bands.remove(&device_id);
        } else {
            self.turns.push_back(device_id);
        }
        Some(advert)
    }

    fn len(&self) -> usize {
        self.bands.values().map(VecDeque::len).sum()
    }
}

/// The receiving end of the alarm lane: one frame per band in turn.
pub struct AlarmRx {
    queue: Arc<Mutex<FairQueue>>,
    /// Rung after every push; closed when every sender is gone.
    bell: mpsc::Receiver<()>,
}

impl AlarmRx {
    /// The next alarm frame, bands in turn; `None` once every source has gone and the lane
    /// is empty. Cancel-safe (a `select!` branch may drop it at any await).
    pub async fn recv(&mut self) -> Option<Advert> {
        loop {
            if let Some(a) = self.pop() {
                return Some(a);
            }
            if self.bell.recv().await.is_none() {
                return self.pop();
            }
        }
    }

    pub fn try_recv(&mut self) -> Result<Advert, TryRecvError> {
        if let Some(a) = self.pop() {
            return Ok(a);
        }
        match self.bell.try_recv() {
            Err(TryRecvError::Disconnected) => self.pop().ok_or(TryRecvError::Disconnected),
            _ => self.pop().ok_or(TryRecvError::Empty),
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Alarm frames dropped as a band's surplus (repeats of what it already had waiting).
    pub fn collapsed(&self) -> u64 {
        lock(&self.queue).collapsed
    }

    fn pop(&self) -> Option<Advert> {
        lock(&self.queue).pop()
    }
}

/// The queue's lock: a panic while it was held (none can happen: push and pop do not panic)
/// must not stop alarms, so a poisoned lock is used as it is.
fn lock(q: &Mutex<FairQueue>) -> std::sync::MutexGuard<'_, FairQueue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sending side, cloned into each source.
#[derive(Clone)]
pub struct AdvertTx {
    alarms: Arc<Mutex<FairQueue>>,
    bell: mpsc::Sender<()>,
    telemetry: mpsc::Sender<Advert>,
    company_id: u16,
    keys: Arc<Keyring>,
    dropped: Arc<AtomicU64>,
}

/// The receiving side, owned by the daemon loop: poll `alarms` first.
pub struct AdvertRx {
    pub alarms: AlarmRx,
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
    let queue = Arc::new(Mutex::new(FairQueue::default()));
    let (bell_tx, bell_rx) = mpsc::channel(1);
    let (ttx, trx) = mpsc::channel(TELEMETRY_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        AdvertTx {
            alarms: queue.clone(),
            bell: bell_tx,
            telemetry: ttx,
            company_id,
            keys,
            dropped: dropped.clone(),
        },
        AdvertRx {
            alarms: AlarmRx {
                queue,
                bell: bell_rx,
            },
            telemetry: trx,
            dropped,
        },
    )
}

impl AdvertTx {
    pub fn company_id(&self) -> u16 {
        self.company_id
    }

    /// Which lane `advert` belongs in.
    pub fn lane(&self, advert: &Advert) -> Lane {
        match self.alarm(advert) {
            Some(_) => Lane::Alarm,
            None => Lane::Telemetry,
        }
    }

    /// The device and kind of an authentic alarm frame (an SOS, fall, no-motion or cancel of
    /// a band; an SOS or cancel of a BTHome device by its lists), if it is one.
    fn alarm(&self, advert: &Advert) -> Option<(u32, Discriminant<BandEvent>)> {
        match advert.format {
            Format::Band => frame::open(&advert.data, self.company_id, &self.keys)
                .ok()
                .filter(|f| !matches!(f.event, BandEvent::Heartbeat { .. }))
                .map(|f| (f.device_id, std::mem::discriminant(&f.event))),
            Format::BtHome => {
                let (device, reading) =
                    bthome::open(&advert.data, &mac_of(&advert.addr), self.keys.bthome()).ok()?;
                let any = |set: bthome::EventSet| reading.buttons.iter().any(|e| set.contains(e));
                let event = if any(device.sos) {
                    BandEvent::Sos
                } else if any(device.cancel) {
                    BandEvent::Cancel { of_seq: 0 }
                } else {
                    return None;
                };
                Some((device.device_id, std::mem::discriminant(&event)))
            }
        }
    }

    /// Hands an advertisement to the daemon, never waiting (so a source may call it from
    /// inside a D-Bus dispatch): alarms take their band's turn, a storming band's surplus
    /// collapsing; telemetry is dropped and counted when its lane is full. Returns `false` once
    /// the daemon has gone away.
    pub fn send(&self, advert: Advert) -> bool {
        match self.alarm(&advert) {
            Some((device_id, kind)) => {
                if self.bell.is_closed() {
                    return false;
                }
                lock(&self.alarms).push(device_id, kind, advert);
                match self.bell.try_send(()) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(())) => true,
                    Err(mpsc::error::TrySendError::Closed(())) => false,
                }
            }
            None => match self.telemetry.try_send(advert) {
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
