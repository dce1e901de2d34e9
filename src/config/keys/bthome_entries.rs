//! The `[bthome."MAC"]` entries of `keys.toml`, each checked in full (`bthome.md`,
//! `config.md`): one function per key, every problem named at its entry and key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::BTHOME_SILENT_AFTER;
use crate::config::Problem;
use crate::engine::bthome::{self, BtHomeDevice, ButtonEvent, EventSet};
use crate::engine::{DeviceKey, Keyring};

/// The keys a `[bthome."MAC"]` entry may have.
const BTHOME_KEYS: [&str; 6] = [
    "device_id",
    "key",
    "sos",
    "cancel",
    "silent_after",
    "enrolled",
];

/// Checks every entry; the good ones go into `keyring`, which already holds the bands.
pub(super) fn bthome_entries(
    path: &Path,
    entries: &BTreeMap<String, toml::Value>,
    keyring: &mut Keyring,
    problems: &mut Vec<Problem>,
) {
    let mut seen_macs: BTreeMap<bthome::Mac, String> = BTreeMap::new();
    let mut seen_ids: BTreeMap<u32, String> = BTreeMap::new();
    for (mac_text, value) in entries {
        let mut entry = Entry {
            path,
            name: format!("bthome.\"{mac_text}\""),
            problems,
        };
        let mac = entry.mac(mac_text, &mut seen_macs);
        let Some(table) = value.as_table() else {
            entry.problem(
                "",
                format!("is a {}, not a table", value.type_str()),
                "write it as a section: [bthome.\"54:48:E6:8F:80:A5\"] followed by device_id = ... and key = \"...\"",
            );
            continue;
        };
        entry.unknown_keys(table);
        let device_id = entry.device_id(table, keyring, mac_text, &mut seen_ids);
        let key = entry.key(table);
        let sos = entry.events(table, "sos", EventSet::default_sos());
        let cancel = entry.events(table, "cancel", EventSet::default_cancel());
        entry.sos_and_cancel(sos, cancel);
        let silent_after = entry.silent_after(table);
        let enrolled = entry.enrolled(table);
        if let (Some(mac), Some(device_id), Some(key)) = (mac, device_id, key) {
            let enrolment = format!("{}/{enrolled}", BtHomeDevice::key_check(&key));
            keyring.insert_bthome(
                mac,
                BtHomeDevice {
                    device_id,
                    key,
                    sos,
                    cancel,
                    silent_after,
                    enrolment,
                },
            );
        }
    }
}

/// One entry being checked: where its problems are written.
struct Entry<'a> {
    path: &'a Path,
    /// `bthome."MAC"`, as the operator wrote the address.
    name: String,
    problems: &'a mut Vec<Problem>,
}

impl Entry<'_> {
    fn problem(&mut self, key: &str, what: String, fix: &str) {
        let at = if key.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{key}", self.name)
        };
        self.problems.push(Problem::new(self.path, at, what, fix));
    }

    fn mac(
        &mut self,
        mac_text: &str,
        seen: &mut BTreeMap<bthome::Mac, String>,
    ) -> Option<bthome::Mac> {
        let Some(mac) = bthome::parse_mac(mac_text) else {
            self.problem(
                "",
                format!("{mac_text:?} is not a Bluetooth address"),
                "write the device's MAC address as six pairs of hex digits, e.g. [bthome.\"54:48:E6:8F:80:A5\"] (the Shelly app shows it; bandgate scan lists BTHome devices heard)",
            );
            return None;
        };
        if let Some(other) = seen.insert(mac, mac_text.to_string()) {
            self.problem(
                "",
                format!("the same device as [bthome.\"{other}\"] (addresses are matched whatever their case)"),
                "keep one entry per device",
            );
        }
        Some(mac)
    }

    fn unknown_keys(&mut self, table: &toml::Table) {
        for k in table.keys() {
            if !BTHOME_KEYS.contains(&k.as_str()) {
                self.problem(
                    k,
                    format!("unknown key {k:?}"),
                    &format!(
                        "remove it; the keys allowed here are {}",
                        BTHOME_KEYS.join(", ")
                    ),
                );
            }
        }
    }

    fn device_id(
        &mut self,
        table: &toml::Table,
        keyring: &Keyring,
        mac_text: &str,
        seen: &mut BTreeMap<u32, String>,
    ) -> Option<u32> {
        let Some(v) = table.get("device_id") else {
            self.problem(
                "device_id",
                "missing: the device id residents and alert ids name this device by".into(),
                "add device_id = <a number no band uses>, e.g. device_id = 9001",
            );
            return None;
        };
        let Some(Ok(id)) = v.as_integer().map(u32::try_from) else {
            self.problem(
                "device_id",
                format!("{v} is not a number from 0 to 4294967295"),
                "write a whole number without quotes, e.g. device_id = 9001",
            );
            return None;
        };
        if keyring.is_band(id) {
            self.problem(
                "device_id",
                format!("device id {id} is also a band's (under [devices]); alert ids and residents could not tell them apart"),
                "give this device an id no band uses",
            );
        } else if let Some(other) = seen.insert(id, mac_text.to_string()) {
            self.problem(
                "device_id",
                format!("device id {id} is also [bthome.\"{other}\"]'s"),
                "give each device its own id",
            );
        }
        Some(id)
    }

    fn key(&mut self, table: &toml::Table) -> Option<DeviceKey> {
        let Some(v) = table.get("key") else {
            self.problem(
                "key",
                "missing: the device's bind key (encryption must be on: an alarm source must be encrypted)".into(),
                "turn encryption on in the Shelly app (or the BTHome firmware) and copy its 32-hex-digit bind key here, or run bandgate enrol --bthome <MAC> to make one",
            );
            return None;
        };
        match v.as_str().map(DeviceKey::from_hex) {
            Some(Some(k)) if k.0.iter().all(|b| *b == k.0[0]) => {
                self.problem(
                    "key",
                    format!("the key is the byte {:02x} sixteen times, a placeholder and not a secret: anyone can forge this device's presses", k.0[0]),
                    "run bandgate enrol --bthome <MAC> to make a random key and set it on the device",
                );
                None
            }
            Some(Some(k)) => Some(k),
            Some(None) => {
                self.problem(
                    "key",
                    "not a bind key: a bind key is exactly 32 hex digits (0-9, a-f), in quotes"
                        .into(),
                    "copy the bind key again from the Shelly app or the device's firmware settings",
                );
                None
            }
            None => {
                self.problem(
                    "key",
                    format!("the key is a {}, not a quoted string", v.type_str()),
                    "write the key in quotes: key = \"231d39c1d7cc1ab1aee224cd096db932\"",
                );
                None
            }
        }
    }

    /// `sos` or `cancel`: a list of button event names.
    fn events(&mut self, table: &toml::Table, name: &str, default: EventSet) -> EventSet {
        let Some(v) = table.get(name) else {
            return default;
        };
        let allowed = ButtonEvent::NAMED.map(ButtonEvent::name).join(", ");
        let Some(list) = v.as_array() else {
            self.problem(
                name,
                format!("is a {}, not a list", v.type_str()),
                &format!("write a list of button events, e.g. {name} = [\"press\"]; the events are {allowed}"),
            );
            return default;
        };
        let mut found = Vec::new();
        for item in list {
            match item.as_str().map(|t| (t, ButtonEvent::parse(t))) {
                Some((_, Some(e))) => found.push(e),
                Some(("none", None)) => self.problem(
                    name,
                    "\"none\" is the event of a frame without a press (a beacon): it cannot mean anything".into(),
                    &format!("remove it; the events are {allowed}"),
                ),
                _ => self.problem(
                    name,
                    format!("{item} is not a button event"),
                    &format!("use the events' names in quotes: {allowed}"),
                ),
            }
        }
        EventSet::of(&found)
    }

    fn sos_and_cancel(&mut self, sos: EventSet, cancel: EventSet) {
        if sos == EventSet::default() {
            self.problem(
                "sos",
                "no button event raises an SOS: this device could never call for help".into(),
                "list at least one event, e.g. sos = [\"press\", \"long_press\"] (the default)",
            );
        }
        if sos.intersects(cancel) {
            let both: Vec<&str> = sos
                .names()
                .filter(|n| cancel.names().any(|c| c == *n))
                .collect();
            self.problem(
                "cancel",
                format!("{} would both raise and cancel an SOS", both.join(", ")),
                "list each event in sos or in cancel, not both",
            );
        }
    }

    fn silent_after(&mut self, table: &toml::Table) -> Option<Duration> {
        let v = match table.get("silent_after") {
            None => return humantime::parse_duration(BTHOME_SILENT_AFTER).ok(),
            Some(v) if v.as_str() == Some("off") => return None,
            Some(v) => v,
        };
        let bounds = crate::config::bounds::MIN_DELAY..=crate::config::bounds::MAX_DELAY;
        match v.as_str().map(|t| humantime::parse_duration(t.trim())) {
            Some(Ok(d)) if bounds.contains(&d) => Some(d),
            _ => {
                self.problem(
                    "silent_after",
                    format!("{v} is not a duration from 1s to 30d, nor \"off\""),
                    &format!("write how long the device may go unheard, in quotes, e.g. silent_after = \"2h\" (default {BTHOME_SILENT_AFTER:?}; a few times its beacon interval), or \"off\" for a device without beacons"),
                );
                None
            }
        }
    }

    fn enrolled(&mut self, table: &toml::Table) -> String {
        let Some(v) = table.get("enrolled") else {
            return String::new();
        };
        if let Some(t) = v.as_str() {
            return t.to_string();
        }
        self.problem(
            "enrolled",
            format!("is a {}, not a quoted string", v.type_str()),
            "leave it as bandgate enrol wrote it, e.g. enrolled = \"2026-11-26T15:41:07Z\"",
        );
        String::new()
    }
}
