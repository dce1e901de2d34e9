//! `[[staff]]`: the people who may be paged; each id is also the phone's MQTT user name.

use std::collections::BTreeMap;

use config::Value;
use serde::Deserialize;

use crate::config::diagnose::{is_topic_word, Check};
use crate::config::sections::fallback::StaffChannels;
use crate::engine::Staff;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaff {
    id: String,
    name: String,
    #[serde(default)]
    phone: String,
    channels: Option<Vec<String>>,
}

impl Check {
    /// `channels` gets each person's channels (`[[staff]] channels`, see `fallback`).
    pub(in crate::config) fn staff(
        &mut self,
        entries: Vec<Value>,
        channels: &mut StaffChannels,
    ) -> BTreeMap<String, Staff> {
        let mut staff = BTreeMap::new();
        for (i, v) in entries.into_iter().enumerate() {
            let key = format!("staff[{i}]");
            let Some(raw) = self.take::<RawStaff>(&key, v) else {
                continue;
            };
            if !is_topic_word(&raw.id) {
                self.problem(
                    &format!("{key}.id"),
                    format!("{:?} cannot be an MQTT user name and topic level", raw.id),
                    "use letters, digits, '-' and '_' only, e.g. id = \"zhang\"",
                );
                continue;
            }
            if staff.contains_key(&raw.id) {
                self.problem(
                    &format!("{key}.id"),
                    format!("the staff id {:?} is used twice", raw.id),
                    "give every person their own id",
                );
                continue;
            }
            let c = self.channels(&format!("{key}.channels"), raw.channels.as_deref());
            channels.insert(raw.id.clone(), (i, c));
            staff.insert(
                raw.id.clone(),
                Staff {
                    id: raw.id,
                    name: raw.name,
                    phone: raw.phone,
                },
            );
        }
        staff
    }
}
