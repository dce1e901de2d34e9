//! `bandgate enrol`: a fresh key for a new wristband, added to `keys.toml` without disturbing
//! what is there (comments included), written atomically, and what the installer must do next.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::config::{self, Problems};
use crate::engine::frame;

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The key file (or bandgate.toml) is wrong as it stands: the loader's own problems.
    #[error("{0}")]
    Config(Problems),
    #[error("{0}")]
    Refused(String),
    #[error("{0:#}")]
    Io(anyhow::Error),
}

impl From<std::io::Error> for EnrolError {
    fn from(e: std::io::Error) -> Self {
        EnrolError::Io(e.into())
    }
}

/// What `bandgate.toml` says about the resident (read leniently, see `config::lenient`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResidentCheck {
    /// The resident already has this band's device id: nothing to change.
    Matches { name: String },
    /// The resident has no `device_id` yet.
    NoDevice { name: String },
    /// The resident wears another band.
    Other { name: String, device_id: i64 },
    /// No `[[residents]]` entry with this id.
    Missing,
}

/// The parts of `bandgate.toml` that enrolment needs.
#[derive(Debug, Clone)]
pub struct Site {
    pub keys_file: PathBuf,
    pub company_id: u16,
    pub resident: ResidentCheck,
    /// Another resident already listed with this device id.
    pub taken_by: Option<String>,
}

/// Reads what enrolment needs from `bandgate.toml`, without the full check (which would
/// refuse a resident whose band has no key yet, the very thing being fixed).
pub fn read_site(config: &Path, resident: &str, device_id: u32) -> Result<Site, EnrolError> {
    let site = config::lenient::enrolment(config).map_err(|e| match e {
        config::lenient::Unread::Io(e) => {
            EnrolError::Io(anyhow::anyhow!("cannot read {}: {e}", config.display()))
        }
        config::lenient::Unread::Syntax(message) => {
            EnrolError::Config(Problems(vec![config::Problem::new(
                config,
                "",
                format!("not valid TOML: {message}"),
                "run bandgate check-config",
            )]))
        }
    })?;
    let mut check = ResidentCheck::Missing;
    let mut taken_by = None;
    for r in site.residents {
        if r.id == resident {
            let name = r.name;
            check = match r.device_id {
                Some(d) if d == i64::from(device_id) => ResidentCheck::Matches { name },
                Some(d) => ResidentCheck::Other { name, device_id: d },
                None => ResidentCheck::NoDevice { name },
            };
        } else if r.device_id == Some(i64::from(device_id)) {
            taken_by = Some(r.id);
        }
    }
    Ok(Site {
        keys_file: site.keys_file,
        company_id: site.company_id,
        resident: check,
        taken_by,
    })
}

/// A new random AES-128 key from the operating system's generator.
pub fn fresh_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// Adds `device_id = "<hex>"` under `[devices]` of `path` and returns the key's hex; `note`
/// becomes the line's comment. Refuses a device id that has a key and a file the loader would
/// refuse (world-readable, malformed). A missing file is created (mode 0600).
///
/// The new file is written next to the old one (same owner, same mode, 0600 when new), synced,
/// then renamed over it: a power cut leaves the old file or the new one, never half of one.
pub fn add_key(
    path: &Path,
    device_id: u32,
    key: [u8; 16],
    note: &str,
) -> Result<String, EnrolError> {
    // A symlinked key file is edited where it points, not replaced by a plain file.
    let resolved = std::fs::canonicalize(path).ok();
    let path = resolved.as_deref().unwrap_or(path);
    let existing = match std::fs::metadata(path) {
        Ok(meta) => {
            let keyring = config::keys::load(path).map_err(EnrolError::Config)?;
            if keyring.contains(device_id) {
                return Err(EnrolError::Refused(format!(
                    "device {device_id} already has a key in {}; enrolling it again would lock out the band that has it. \
                     To replace the band (new band, same device id), delete the line `{device_id} = \"...\"` under [devices] \
                     first, then run bandgate enrol again and provision the new band",
                    path.display()
                )));
            }
            Some((std::fs::read_to_string(path)?, meta))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(EnrolError::Io(anyhow::anyhow!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let text = match &existing {
        Some((text, _)) => text.clone(),
        None => {
            "# bandgate key file: each wristband's AES-128 key (32 hex digits), by device id.\n\
                 # SECRET: keep it chmod 600, owned by the bandgate user.\n\n[devices]\n"
                .to_string()
        }
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        EnrolError::Refused(format!("{}: not valid TOML: {e}", path.display()))
    })?;
    let devices = doc
        .entry("devices")
        .or_insert_with(toml_edit::table)
        .as_table_like_mut()
        .ok_or_else(|| {
            EnrolError::Refused(format!(
                "{}: devices is not a table; the file holds one table, [devices]",
                path.display()
            ))
        })?;
    let hex = hex::encode(key);
    let mut value = toml_edit::Value::from(hex.as_str());
    if !note.is_empty() {
        value.decor_mut().set_suffix(format!("  # {note}"));
    }
    devices.insert(&device_id.to_string(), toml_edit::Item::Value(value));
    let mut out = doc.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    // The loader must accept what we wrote, or we write nothing.
    let check = config::keys::parse(path, &out).map_err(EnrolError::Config)?;
    if !check.contains(device_id) {
        return Err(EnrolError::Io(anyhow::anyhow!(
            "the new key did not read back from the edited file; nothing written"
        )));
    }
    write_atomic(path, out.as_bytes(), existing.as_ref().map(|(_, m)| m))?;
    Ok(hex)
}

pub(super) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    like: Option<&std::fs::Metadata>,
) -> Result<(), EnrolError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("keys.toml");
    let tmp = dir.join(format!(".{name}.enrol-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(meta) = like {
            // The daemon reads the file as its own user: keep the owner (needs root when it
            // differs from ours; as that user it is ours already) and the mode, minus any
            // bits for others.
            let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
            file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o770))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| EnrolError::Io(anyhow::anyhow!("writing {}: {e}", path.display())))
}

/// What the firmware provisioning needs, and what the installer does next.
pub fn report(
    keys_file: &Path,
    device_id: u32,
    resident: &str,
    hex: &str,
    company_id: u16,
    site: Option<(&Path, &Site)>,
) -> String {
    let mut out = format!(
        "enrolled band {device_id} for resident {resident}: key added to {}\n\n\
         firmware provisioning:\n\
         \x20 device id    {device_id}\n\
         \x20 key          {hex}\n\
         \x20 company id   0x{company_id:04X}\n\
         \x20 wire format  version 0x{:02X}\n\n",
        keys_file.display(),
        frame::VERSION
    );
    out.push_str(&resident_advice(device_id, resident, site));
    out
}

/// What the installer must change in `bandgate.toml` for `resident` to have `device_id`.
pub(super) fn resident_advice(
    device_id: u32,
    resident: &str,
    site: Option<(&Path, &Site)>,
) -> String {
    let mut out = String::new();
    match site {
        None => out.push_str(&format!(
            "in bandgate.toml, the resident {resident:?} needs device_id = {device_id} \
             (pass --config to check it)\n"
        )),
        Some((config, site)) => {
            let c = config.display();
            match &site.resident {
                ResidentCheck::Matches { name } => out.push_str(&format!(
                    "{c}: resident {resident} ({name}) already has device_id = {device_id}: nothing to change\n"
                )),
                ResidentCheck::NoDevice { name } => out.push_str(&format!(
                    "{c}: resident {resident} ({name}) has no band yet: add this line to its [[residents]] entry:\n  device_id = {device_id}\n"
                )),
                ResidentCheck::Other { name, device_id: old } => out.push_str(&format!(
                    "{c}: resident {resident} ({name}) wears band {old}: change its line to\n  device_id = {device_id}\n\
                     and remove key {old} from the key file once the old band is retired\n"
                )),
                ResidentCheck::Missing => out.push_str(&format!(
                    "{c}: there is no resident {resident:?}: add an entry:\n\
                     [[residents]]\nid = {resident:?}\nname = \"...\"\naddress = \"...\"\nphone = \"...\"\ndevice_id = {device_id}\nteam = []\n"
                )),
            }
            if let Some(other) = &site.taken_by {
                out.push_str(&format!(
                    "warning: resident {other:?} is also listed with device_id = {device_id}; one band belongs to one resident\n"
                ));
            }
            out.push_str(&format!(
                "then: bandgate check-config --config {c} && sudo systemctl restart bandgate\n"
            ));
        }
    }
    out
}

/// How an enrolment error ends the command: 78 for a key file or config the daemon would
/// refuse as it stands, 1 otherwise.
pub(super) fn failed(e: EnrolError) -> super::Failure {
    match e {
        EnrolError::Config(_) => super::Failure::Config(format!("bandgate enrol: {e}")),
        _ => super::Failure::Failed(format!("bandgate enrol: {e}")),
    }
}

/// The site read from `--config` (checking the resident), and the key file: `--keys`, else
/// the config's `keys_file`, else the default.
pub(super) fn site_and_keys(
    config: Option<&Path>,
    keys: Option<PathBuf>,
    resident: &str,
    device_id: u32,
) -> Result<(Option<Site>, PathBuf), super::Failure> {
    let site = match config {
        Some(c) => Some(read_site(c, resident, device_id).map_err(failed)?),
        None => None,
    };
    let keys = keys
        .or_else(|| site.as_ref().map(|s| s.keys_file.clone()))
        .unwrap_or_else(|| PathBuf::from(crate::config::sections::site::KEYS_FILE));
    Ok((site, keys))
}

/// `bandgate enrol`: exit 0 when the key was added, 1 when refused, 78 for a key file the
/// daemon would refuse as it stands.
pub fn enrol(
    device_id: u32,
    resident: &str,
    keys: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<super::Done, super::Failure> {
    let (site, keys) = site_and_keys(config.as_deref(), keys, resident, device_id)?;
    let note = format!(
        "resident {resident}, enrolled {}",
        jiff::Zoned::now().date()
    );
    let hex = add_key(&keys, device_id, fresh_key(), &note).map_err(failed)?;
    let company_id = site
        .as_ref()
        .map_or(crate::config::sections::ble::COMPANY_ID, |s| s.company_id);
    print!(
        "{}",
        report(
            &keys,
            device_id,
            resident,
            &hex,
            company_id,
            config.as_deref().zip(site.as_ref())
        )
    );
    Ok(super::Done::Ok)
}
