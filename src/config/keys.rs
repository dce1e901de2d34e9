//! `keys.toml`: each band's AES key, a secret that must not be world-readable.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Problem, Problems};
use crate::engine::{DeviceKey, Keyring};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    devices: BTreeMap<String, toml::Value>,
}

/// Loads and checks a key file; every problem is reported, not only the first.
pub fn load(path: &Path) -> Result<Keyring, Problems> {
    let one = |key: &str, problem: String, fix: &str| {
        Problems(vec![Problem::new(path, key, problem, fix)])
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        one(
            "",
            format!("cannot read the key file: {e}"),
            "check the path (config key keys_file) and that the bandgate user may read it",
        )
    })?;
    check_not_world_readable(path, &meta)?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        one(
            "",
            format!("cannot read the key file: {e}"),
            "check that the bandgate user may read it",
        )
    })?;
    parse(path, &text)
}

#[cfg(unix)]
fn check_not_world_readable(path: &Path, meta: &std::fs::Metadata) -> Result<(), Problems> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(Problems(vec![Problem::new(
            path,
            "",
            format!("the key file is readable by every user on this machine (mode {mode:04o}); anyone who reads it can forge SOS frames or silence them"),
            format!("run: chmod 600 {} (and chown it to the bandgate user)", path.display()),
        )]));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_world_readable(_: &Path, _: &std::fs::Metadata) -> Result<(), Problems> {
    Ok(())
}

/// Parses the text of a key file (no permission check), naming `path` in every problem.
pub fn parse(path: &Path, text: &str) -> Result<Keyring, Problems> {
    let file: KeysFile = toml::from_str(text).map_err(|e| {
        Problems(vec![Problem::new(
            path,
            "",
            format!("not a valid key file: {}", e.message()),
            "the file holds one table, [devices], with lines like 17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"",
        )])
    })?;
    let mut problems = Vec::new();
    let mut keyring = Keyring::new();
    for (id, value) in &file.devices {
        let entry = format!("devices.{id}");
        let device_id = match id.parse::<u32>() {
            Ok(n) if id == &n.to_string() => Some(n),
            _ => {
                problems.push(Problem::new(
                    path,
                    &entry,
                    format!("device id {id:?} is not a number from 0 to 4294967295"),
                    "use the wristband's numeric device id as the key, e.g. 17 = \"...\"",
                ));
                None
            }
        };
        let key = match value.as_str() {
            Some(s) => match DeviceKey::from_hex(s) {
                Some(k) => Some(k),
                None => {
                    problems.push(Problem::new(
                        path,
                        &entry,
                        format!("the key is {} characters of which {} are not hex digits; a key is exactly 32 hex digits (0-9, a-f)", s.chars().count(), s.chars().filter(|c| !c.is_ascii_hexdigit()).count()),
                        "copy the key again from the enrolment record, or run bandgate enrol to make a new one",
                    ));
                    None
                }
            },
            None => {
                problems.push(Problem::new(
                    path,
                    &entry,
                    format!("the key is a {}, not a quoted string", value.type_str()),
                    "write the key in quotes: 17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\"",
                ));
                None
            }
        };
        if let (Some(id), Some(key)) = (device_id, key) {
            keyring.insert(id, key);
        }
    }
    if problems.is_empty() {
        Ok(keyring)
    } else {
        Err(Problems(problems))
    }
}
