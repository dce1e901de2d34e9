//! `keys.toml`: each band's AES key and each BTHome device's bind key (`[bthome."MAC"]`),
//! secrets that must not be world-readable.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Problem, Problems};
use crate::engine::{DeviceKey, Keyring};

mod bthome_entries;
use bthome_entries::bthome_entries;

/// `silent_after` of a BTHome device when its entry gives none: a few hours, for a button in
/// beacon mode (heard every few seconds to minutes), so that a resident out for the afternoon
/// is not reported, but a dead battery is within the day.
pub const BTHOME_SILENT_AFTER: &str = "2h";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    devices: BTreeMap<String, toml::Value>,
    #[serde(default)]
    bthome: BTreeMap<String, toml::Value>,
}

/// Loads and checks a key file; every problem is reported, not only the first.
///
/// Refused before a byte is read: anything that is not a regular file (checked by `stat`, and
/// again on the file opened with `O_NONBLOCK`, so a named pipe never blocks), a file readable
/// by every user, a file the group or every user may change, and a file whose own directory
/// the group or every user may change without the sticky bit (they could replace the file).
pub fn load(path: &Path) -> Result<Keyring, Problems> {
    let one = |problem: String, fix: &str| Problems(vec![Problem::new(path, "", problem, fix)]);
    let meta = std::fs::metadata(path).map_err(|e| {
        one(
            format!("cannot read the key file: {e}"),
            "check the path (config key keys_file) and that the bandgate user may read it",
        )
    })?;
    check_regular(path, &meta)?;
    let mut problems = check_mode(path, &meta);
    problems.extend(check_directories(path));
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let text = read_regular(path).map_err(|p| Problems(vec![p]))?;
    parse(path, &text)
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "named pipe (FIFO)";
        }
        if t.is_socket() {
            return "socket";
        }
        if t.is_char_device() {
            return "character device";
        }
        if t.is_block_device() {
            return "block device";
        }
    }
    if t.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

fn not_regular(path: &Path, t: std::fs::FileType) -> Problem {
    Problem::new(
        path,
        "",
        format!("the key file is a {}, not a regular file", kind_of(t)),
        "keys_file must name the key file itself, a regular file such as /etc/bandgate/keys.toml",
    )
}

fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), Problems> {
    if meta.is_file() {
        Ok(())
    } else {
        Err(Problems(vec![not_regular(path, meta.file_type())]))
    }
}

/// Reads the file without ever blocking on a named pipe swapped in after the `stat`.
fn read_regular(path: &Path) -> Result<String, Problem> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        Problem::new(
            path,
            "",
            format!("cannot read the key file: {e}"),
            "check that the bandgate user may read it",
        )
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let mut file = options.open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(cannot)?;
    Ok(text)
}

/// Who besides the owner `mode` lets do something: "every user", "its group".
#[cfg(unix)]
fn others(mode: u32, world_bit: u32, group_bit: u32) -> Option<&'static str> {
    if mode & world_bit != 0 {
        Some("every user on this machine")
    } else if mode & group_bit != 0 {
        Some("every member of its group")
    } else {
        None
    }
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &std::fs::Metadata) -> Vec<Problem> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    let shown = path.display();
    let mut problems = Vec::new();
    if mode & 0o004 != 0 {
        problems.push(Problem::new(
            path,
            "",
            format!("the key file is readable by every user on this machine (mode {mode:04o}); anyone who reads it can forge SOS frames or silence them"),
            format!("run: chmod 600 {shown} (and chown it to the bandgate user)"),
        ));
    }
    if let Some(who) = others(mode, 0o002, 0o020) {
        problems.push(Problem::new(
            path,
            "",
            format!("the key file can be changed by {who} (mode {mode:04o}); whoever changes it can swap a band's key, and that band's SOS then fails as auth"),
            format!("run: chmod go-w {shown} (the Debian package's setting: chown root:bandgate {shown} && chmod 640 {shown})"),
        ));
    }
    problems
}

#[cfg(not(unix))]
fn check_mode(_: &Path, _: &std::fs::Metadata) -> Vec<Problem> {
    Vec::new()
}

/// The key file's own directory (and, for a symbolic link, the directory of the file it
/// names) must not let others replace the file: not group- or world-writable, unless it has
/// the sticky bit (like /tmp), where only a file's owner may rename or delete it.
#[cfg(unix)]
fn check_directories(path: &Path) -> Vec<Problem> {
    use std::os::unix::fs::PermissionsExt;
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(real) = std::fs::canonicalize(path) {
        let d = parent(&real);
        if std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&d) {
            dirs.push(d);
        }
    }
    let mut problems = Vec::new();
    for dir in dirs {
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o1000 != 0 {
            continue;
        }
        if let Some(who) = others(mode, 0o002, 0o020) {
            let shown = dir.display();
            problems.push(Problem::new(
                path,
                "",
                format!("the key file's directory {shown} can be changed by {who} (mode {mode:04o}, no sticky bit); whoever can write there can replace the key file"),
                format!("run: chmod go-w {shown}, or keep the key file in a directory only root may change, such as /etc/bandgate"),
            ));
        }
    }
    problems
}

#[cfg(not(unix))]
fn check_directories(_: &Path) -> Vec<Problem> {
    Vec::new()
}

/// Parses the text of a key file (no permission check), naming `path` in every problem.
pub fn parse(path: &Path, text: &str) -> Result<Keyring, Problems> {
    let file: KeysFile = toml::from_str(text).map_err(|e| {
        Problems(vec![Problem::new(
            path,
            "",
            format!("not a valid key file: {}", e.message()),
            "the file holds [devices], with lines like 17 = \"eea7171f8b19f17864f43aa4d1cfbdd6\", and [bthome.\"MAC\"] sections",
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
                Some(k) if k.0.iter().all(|b| *b == k.0[0]) => {
                    problems.push(Problem::new(
                        path,
                        &entry,
                        format!("the key is the byte {:02x} sixteen times, a placeholder and not a secret: anyone can forge this band's frames, its SOS and its cancel", k.0[0]),
                        "run bandgate enrol for this band to make a random key and program the band with it, or copy the band's real key from its enrolment record",
                    ));
                    None
                }
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
    bthome_entries(path, &file.bthome, &mut keyring, &mut problems);
    if problems.is_empty() {
        Ok(keyring)
    } else {
        Err(Problems(problems))
    }
}
