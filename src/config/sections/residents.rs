//! `[[residents]]`: who wears which band, their address for the pages, and their team (tier 2).
//! A long list is read one entry at a time (see `cut`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

use crate::config::diagnose::Check;
use crate::config::read::ResidentEntries;
use crate::engine::{Keyring, Resident};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResident {
    id: String,
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    notes: String,
    device_id: i64,
    #[serde(default)]
    team: Vec<String>,
}

impl Check {
    /// `refs` gets every staff id named here; `keys` (when the key file could be read) must
    /// hold every band's key.
    pub(in crate::config) fn residents(
        &mut self,
        entries: ResidentEntries<'_>,
        refs: &mut Vec<(String, String)>,
        keys: Option<&Keyring>,
        keys_file: &Path,
    ) -> BTreeMap<u32, Resident> {
        // Gathered in a list and built into the map at the end: a map built at once has full
        // nodes, one filled by inserts is about half empty (a megabyte for 10,000 residents).
        let count = entries.len();
        let mut residents: Vec<(u32, Resident)> = Vec::with_capacity(count);
        let mut by_band: HashMap<u32, usize> = HashMap::with_capacity(count);
        let mut ids = BTreeSet::new();
        let mut entries = entries;
        for i in 0..count {
            let key = format!("residents[{i}]");
            let Some(v) = entries.next(self, &key) else {
                continue;
            };
            let Some(raw) = self.take::<RawResident>(&key, v) else {
                continue;
            };
            if !ids.insert(raw.id.clone()) {
                self.problem(
                    &format!("{key}.id"),
                    format!("the resident id {:?} is used twice", raw.id),
                    "give every resident their own id",
                );
            }
            for (t, id) in raw.team.iter().enumerate() {
                refs.push((format!("{key}.team[{t}]"), id.clone()));
            }
            let Ok(device_id) = u32::try_from(raw.device_id) else {
                self.problem(
                    &format!("{key}.device_id"),
                    format!("{} is not a wristband id (0 to 4294967295)", raw.device_id),
                    "copy the number printed on the band or its enrolment record",
                );
                continue;
            };
            if let Some(other) = by_band.get(&device_id).map(|&n| residents[n].1.id.clone()) {
                self.problem(
                    &format!("{key}.device_id"),
                    format!("band {device_id} is already worn by resident {other:?}"),
                    "each band belongs to one resident; check the number on the band",
                );
                continue;
            }
            if let Some(keys) = keys {
                if !keys.contains(device_id) {
                    self.problem(
                        &format!("{key}.device_id"),
                        format!("band {device_id} has no key in the key file, so its frames cannot be read"),
                        format!(
                            "add {device_id} = \"<32 hex digits>\" under [devices] in {}",
                            keys_file.display()
                        ),
                    );
                }
            }
            by_band.insert(device_id, residents.len());
            residents.push((
                device_id,
                Resident {
                    id: raw.id,
                    name: raw.name,
                    address: raw.address,
                    phone: raw.phone,
                    notes: raw.notes,
                    device_id,
                    team: raw.team,
                },
            ));
        }
        residents.into_iter().collect()
    }
}
