//! Indexes over the engine's alerts, by band and by deadline, so that a frame or a timer costs
//! the same with five open alerts as with five thousand (a dead radio opens one per band).
//!
//! The alerts themselves stay in `Engine::alerts`; these only name them. Every insertion and
//! removal of an alert, and every change that may move its deadline (`Engine::with_alert`),
//! goes through here.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::alert::Alert;
use super::device_map::DeviceMap;

#[derive(Debug, Default)]
pub(super) struct AlertIndex {
    /// Every alert of a band, resolved ones included, by id.
    by_device: DeviceMap<BTreeSet<String>>,
    by_deadline: BTreeSet<(Instant, String)>,
    deadline_of: HashMap<String, Instant>,
}

impl AlertIndex {
    pub fn insert(&mut self, a: &Alert) {
        if let Some(d) = a.device_id {
            self.by_device.entry(d).or_default().insert(a.id.clone());
        }
        self.set_deadline(&a.id, a.deadline());
    }

    pub fn remove(&mut self, id: &str, device_id: Option<u32>) {
        if let Some(d) = device_id {
            if let Some(ids) = self.by_device.get_mut(&d) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_device.remove(&d);
                }
            }
        }
        if let Some(old) = self.deadline_of.remove(id) {
            self.by_deadline.remove(&(old, id.to_string()));
        }
    }

    pub fn set_deadline(&mut self, id: &str, deadline: Instant) {
        match self.deadline_of.get_mut(id) {
            Some(old) if *old == deadline => {}
            Some(old) => {
                self.by_deadline.remove(&(*old, id.to_string()));
                *old = deadline;
                self.by_deadline.insert((deadline, id.to_string()));
            }
            None => {
                self.deadline_of.insert(id.to_string(), deadline);
                self.by_deadline.insert((deadline, id.to_string()));
            }
        }
    }

    /// Ids of the alerts of `device_id` (resolved ones included).
    pub fn of_device(&self, device_id: u32) -> impl Iterator<Item = &String> {
        self.by_device.get(&device_id).into_iter().flatten()
    }

    /// The earliest deadline of any alert.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(t, _)| *t)
    }

    /// Ids of the alerts due at or before `now`, earliest first.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.by_deadline
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }
}
