//! The pure core: frames in, decisions out. No IO, no clock reads, no async, no tokio.
//!
//! Every input is a method call carrying `now`; every effect leaves as a value. That is what
//! lets tests drive years of simulated time in milliseconds and replay a log exactly.

mod device_map;
pub mod frame;
pub mod replay;

use device_map::DeviceMap;

pub use frame::{BandEvent, DeviceKey, Frame, Keyring, Reject};
pub use replay::ReplayWindow;

/// Steps 1 to 6 of the wire spec: decode, authenticate, then the per-band replay window.
#[derive(Debug, Clone)]
pub struct Intake {
    company_id: u16,
    keys: Keyring,
    windows: DeviceMap<ReplayWindow>,
    rejected: [u64; Reject::ALL.len()],
    accepted: u64,
}

impl Intake {
    pub fn new(company_id: u16, keys: Keyring) -> Intake {
        Intake {
            company_id,
            keys,
            windows: DeviceMap::default(),
            rejected: [0; Reject::ALL.len()],
            accepted: 0,
        }
    }

    pub fn company_id(&self) -> u16 {
        self.company_id
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Accepts a frame only if it is authentic and new; counts every refusal by reason.
    pub fn accept(&mut self, data: &[u8]) -> Result<Frame, Reject> {
        let result = frame::open(data, self.company_id, &self.keys).and_then(|f| {
            self.windows.entry(f.device_id).or_default().accept(f.seq)?;
            Ok(f)
        });
        match result {
            Ok(_) => self.accepted += 1,
            Err(r) => self.rejected[r as usize] += 1,
        }
        result
    }

    /// A band's replay window, for the durable store.
    pub fn window(&self, device_id: u32) -> Option<ReplayWindow> {
        self.windows.get(&device_id).copied()
    }

    /// Every band's window, for the durable store.
    pub fn windows(&self) -> impl Iterator<Item = (u32, ReplayWindow)> + '_ {
        self.windows.iter().map(|(id, w)| (*id, *w))
    }

    /// Restores a window saved before a restart, so old frames stay refused.
    pub fn restore_window(&mut self, device_id: u32, window: ReplayWindow) {
        self.windows.insert(device_id, window);
    }

    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// How many frames were refused for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected[reason as usize]
    }
}
