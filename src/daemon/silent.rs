//! Silent bands' device states waiting to be rendered: when thousands of bands fall silent at
//! once (a dead adapter, a jammed building), rendering every document in the turn that notices
//! it held an SOS arriving meanwhile for that whole turn (~120 ms for 5,000 in a debug build).
//! They are taken a batch per turn instead, as a deadline (after alarms and the broker), and a
//! band heard again before its turn is dropped from the queue: its fresh state wins.

use std::collections::{HashMap, VecDeque};

use crate::engine::SilentDevice;

/// Silent device states rendered per loop turn.
pub const SILENT_STATES_PER_TURN: usize = 256;

#[derive(Debug, Default)]
pub struct SilentBacklog {
    /// Device ids in the order they fell silent (an id may stand twice; the map decides).
    order: VecDeque<u32>,
    waiting: HashMap<u32, SilentDevice>,
}

impl SilentBacklog {
    pub fn push(&mut self, device: SilentDevice) {
        self.order.push_back(device.device_id);
        self.waiting.insert(device.device_id, device);
    }

    /// The band was heard: its silent state must not overwrite the fresh one.
    pub fn heard(&mut self, device_id: u32) {
        if !self.waiting.is_empty() {
            self.waiting.remove(&device_id);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Up to `n` states, oldest first.
    pub fn take(&mut self, n: usize) -> Vec<SilentDevice> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            if let Some(d) = self.waiting.remove(&id) {
                out.push(d);
            }
        }
        if self.waiting.is_empty() {
            self.order.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(device_id: u32) -> SilentDevice {
        SilentDevice {
            device_id,
            last_seen: None,
            battery_pct: Some(50),
            worn: Some(true),
        }
    }

    #[test]
    fn taken_oldest_first_in_batches_and_a_band_heard_meanwhile_is_dropped() {
        let mut b = SilentBacklog::default();
        for id in 1..=5 {
            b.push(silent(id));
        }
        b.heard(2);
        let first: Vec<u32> = b.take(2).iter().map(|d| d.device_id).collect();
        assert_eq!(first, [1, 3]);
        // Band 4 falls silent again (a newer state): it is sent once, the newer one.
        let mut again = silent(4);
        again.battery_pct = Some(10);
        b.push(again.clone());
        let rest = b.take(10);
        assert_eq!(rest, [again, silent(5)]);
        assert!(b.is_empty());
        assert!(b.take(10).is_empty());
    }
}
