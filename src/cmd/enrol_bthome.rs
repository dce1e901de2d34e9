//! `bandgate enrol --bthome MAC`: a BTHome device (a Shelly BLU Button1, ...) added to
//! `keys.toml` as `[bthome."MAC"]`, with its bind key given or made here, or enrolled again
//! (after its counter went back): a new `enrolled` time, which makes the gateway forget the
//! stored counter at its next start (`engine::buttons`).

use std::path::{Path, PathBuf};

use super::enrol::{
    failed, fresh_key, resident_advice, site_and_keys, write_atomic, EnrolError, Site,
};
use crate::config;
use crate::engine::bthome::{self, Mac};
use crate::engine::DeviceKey;

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The bind key, 32 lowercase hex digits (what the Shelly app and BTHome firmware take).
    pub key_hex: String,
    /// The MAC was enrolled already: this was an enrolment again.
    pub again: bool,
}

/// Adds or renews `[bthome."MAC"]` in the key file at `path`: `device_id`, the key (`key`, or
/// the one it has when enrolled again, or a fresh one), `enrolled` = `now`. Refuses a device
/// id another band or device has, and a MAC enrolled under another device id. The loader must
/// accept the result, or nothing is written.
pub fn add_bthome(
    path: &Path,
    mac: Mac,
    device_id: u32,
    key: Option<DeviceKey>,
    now: &str,
) -> Result<Enrolled, EnrolError> {
    let resolved = std::fs::canonicalize(path).ok();
    let path = resolved.as_deref().unwrap_or(path);
    let (text, meta, old_key) = current(path, mac, device_id)?;
    let again = old_key.is_some();
    let key = key.or(old_key).unwrap_or_else(|| DeviceKey(fresh_key()));
    let out = with_entry(&text, path, mac, device_id, &key, now)?;
    let check = config::keys::parse(path, &out).map_err(EnrolError::Config)?;
    if check.bthome().get(&mac).map(|d| d.device_id) != Some(device_id) {
        return Err(EnrolError::Io(anyhow::anyhow!(
            "the new entry did not read back from the edited file; nothing written"
        )));
    }
    write_atomic(path, out.as_bytes(), meta.as_ref())?;
    Ok(Enrolled {
        key_hex: key.to_hex(),
        again,
    })
}

/// The key file as it is (or the header of a new one), its metadata, and the key the device
/// has if it is enrolled again; refuses a device id or MAC that belongs to another entry.
fn current(
    path: &Path,
    mac: Mac,
    device_id: u32,
) -> Result<(String, Option<std::fs::Metadata>, Option<DeviceKey>), EnrolError> {
    let shown = bthome::format_mac(&mac);
    match std::fs::metadata(path) {
        Ok(meta) => {
            let keyring = config::keys::load(path).map_err(EnrolError::Config)?;
            let old = keyring.bthome().get(&mac).cloned();
            match &old {
                Some(d) if d.device_id != device_id => {
                    return Err(EnrolError::Refused(format!(
                        "{shown} is enrolled as device {} in {}; to enrol it again give --device-id {} (to change its id, edit device_id in its [bthome] entry)",
                        d.device_id,
                        path.display(),
                        d.device_id
                    )))
                }
                None if keyring.contains(device_id) => {
                    return Err(EnrolError::Refused(format!(
                        "device id {device_id} is taken in {} (a band or another BTHome device has it); choose another",
                        path.display()
                    )))
                }
                _ => {}
            }
            Ok((
                std::fs::read_to_string(path)?,
                Some(meta),
                old.map(|d| d.key),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
            "# bandgate key file: each wristband's AES-128 key (32 hex digits), by device id,\n\
             # and each BTHome device's bind key, by MAC address.\n\
             # SECRET: keep it chmod 600, owned by the bandgate user.\n\n[devices]\n"
                .to_string(),
            None,
            None,
        )),
        Err(e) => Err(EnrolError::Io(anyhow::anyhow!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// `text` with `[bthome."MAC"]` added or renewed, comments and layout kept.
fn with_entry(
    text: &str,
    path: &Path,
    mac: Mac,
    device_id: u32,
    key: &DeviceKey,
    now: &str,
) -> Result<String, EnrolError> {
    let shown = bthome::format_mac(&mac);
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        EnrolError::Refused(format!("{}: not valid TOML: {e}", path.display()))
    })?;
    let bthome = doc
        .entry("bthome")
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_like_mut()
        .ok_or_else(|| {
            EnrolError::Refused(format!(
                "{}: bthome is not a table of [bthome.\"MAC\"] sections",
                path.display()
            ))
        })?;
    // The entry as the file writes its MAC (any case), or a new one as keys.toml writes it.
    let name = bthome
        .iter()
        .map(|(k, _)| k.to_string())
        .find(|k| bthome::parse_mac(k) == Some(mac))
        .unwrap_or_else(|| shown.clone());
    let entry = bthome
        .entry(&name)
        .or_insert_with(toml_edit::table)
        .as_table_like_mut()
        .ok_or_else(|| {
            EnrolError::Refused(format!(
                "{}: bthome.\"{name}\" is not a table",
                path.display()
            ))
        })?;
    entry.insert("device_id", toml_edit::value(i64::from(device_id)));
    entry.insert("key", toml_edit::value(key.to_hex()));
    entry.insert("enrolled", toml_edit::value(now));
    let mut out = doc.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// What the installer sets on the device, and does next.
pub fn report(
    keys_file: &Path,
    mac: &Mac,
    device_id: u32,
    resident: &str,
    done: &Enrolled,
    site: Option<(&Path, &Site)>,
) -> String {
    let mac = bthome::format_mac(mac);
    let mut out = if done.again {
        format!(
            "enrolled BTHome device {device_id} ({mac}) again for resident {resident} in {}: \
             its stored counter is forgotten when bandgate restarts, so its frames are accepted again\n\n",
            keys_file.display()
        )
    } else {
        format!(
            "enrolled BTHome device {device_id} ({mac}) for resident {resident}: bind key added to {}\n\n",
            keys_file.display()
        )
    };
    out.push_str(&format!(
        "on the device (Shelly app: the device's settings, Encryption; BTHome firmware: its bind key):\n\
         \x20 encryption   on\n\
         \x20 bind key     {}\n\
         \x20 beacon mode  on (bandgate hears it between presses; not heard for silent_after, 2h by default, it is reported silent)\n\n",
        done.key_hex
    ));
    out.push_str(&resident_advice(device_id, resident, site));
    if site.is_none() {
        out.push_str("then: sudo systemctl restart bandgate\n");
    }
    out
}

/// `bandgate enrol --bthome MAC`: exit 0 when written, 64 for a bad MAC or key, 1 when
/// refused, 78 for a key file the daemon would refuse as it stands.
pub fn enrol_bthome(
    mac: &str,
    key: Option<&str>,
    device_id: u32,
    resident: &str,
    keys: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<super::Done, super::Failure> {
    let Some(mac) = bthome::parse_mac(mac) else {
        eprintln!("bandgate enrol: --bthome {mac:?} is not a Bluetooth address; write it as the Shelly app shows it, e.g. 54:48:E6:8F:80:A5");
        return Err(super::Failure::Usage);
    };
    let key = match key {
        None => None,
        Some(k) => {
            match DeviceKey::from_hex(k.trim()) {
                Some(k) => Some(k),
                None => {
                    eprintln!("bandgate enrol: --key must be the device's bind key, exactly 32 hex digits");
                    return Err(super::Failure::Usage);
                }
            }
        }
    };
    let (site, keys) = site_and_keys(config.as_deref(), keys, resident, device_id)?;
    let now = jiff::Timestamp::now().to_string();
    let done = add_bthome(&keys, mac, device_id, key, &now).map_err(failed)?;
    print!(
        "{}",
        report(
            &keys,
            &mac,
            device_id,
            resident,
            &done,
            config.as_deref().zip(site.as_ref())
        )
    );
    Ok(super::Done::Ok)
}
