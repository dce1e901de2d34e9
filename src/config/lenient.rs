//! Lenient reading, for the commands that need a key or two of `bandgate.toml` and must work
//! where the full check would refuse: operators may not read the key file, and `enrol` is run
//! to fix the very thing the check refuses (a resident whose band has no key yet).
//!
//! The file is read by the same low stage as the daemon's (`read`, environment overrides
//! included), and the same section defaults apply; only a value of the wrong type is taken as
//! absent instead of refused, and nothing else is checked.

use std::path::{Path, PathBuf};

use config::{Value, ValueKind};
use serde::de::DeserializeOwned;

use super::diagnose::Check;
use super::read::{self, ResidentEntries};
use super::sections::{ble, site};
use super::Problem;

/// `control_socket` of `path` (or `BANDGATE__CONTROL_SOCKET`), for the operator commands. The
/// `[[residents]]` entries are not read, so a broken one does not keep an operator from the
/// running daemon.
pub fn control_socket(path: &Path) -> Result<PathBuf, Problem> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // The variable alone is enough: the file need not be readable then.
    if let Ok(v) = std::env::var(read::env_var("control_socket")) {
        return Ok(dir.join(v));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problem::new(
            path,
            "",
            format!("cannot read the configuration file: {e}"),
            "pass --socket PATH, or a --config your user may read",
        )
    })?;
    let doc = document(path, &text).map_err(|message| {
        Problem::new(
            path,
            "",
            format!("not valid TOML: {message}"),
            "run bandgate check-config",
        )
    })?;
    match lookup(&doc.tree, "control_socket") {
        None => Ok(dir.join(site::CONTROL_SOCKET)),
        Some(Value {
            kind: ValueKind::String(s),
            ..
        }) => Ok(dir.join(s)),
        Some(other) => Err(Problem::new(
            path,
            "control_socket",
            format!("a {}, not a quoted path", toml_type(&other.kind)),
            format!("write control_socket = {:?}", site::CONTROL_SOCKET),
        )),
    }
}

/// What `bandgate enrol` needs of `bandgate.toml`.
#[derive(Debug, Clone)]
pub struct Enrolment {
    pub keys_file: PathBuf,
    pub company_id: u16,
    /// Every `[[residents]]` entry, in file order, with what it says (ids and names `""`
    /// where absent).
    pub residents: Vec<EnrolledResident>,
}

/// One `[[residents]]` entry as far as enrolment cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledResident {
    pub id: String,
    pub name: String,
    pub device_id: Option<i64>,
}

/// Why a file could not be read for enrolment.
#[derive(Debug)]
pub enum Unread {
    Io(std::io::Error),
    /// Not TOML; the parser's message.
    Syntax(String),
}

/// Reads what enrolment needs, without the full check.
pub fn enrolment(path: &Path) -> Result<Enrolment, Unread> {
    let text = std::fs::read_to_string(path).map_err(Unread::Io)?;
    let doc = document(path, &text).map_err(Unread::Syntax)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let keys_file =
        dir.join(get::<String>(&doc.tree, "keys_file").unwrap_or(site::KEYS_FILE.into()));
    let company_id = get::<i64>(&doc.tree, "ble.company_id")
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(ble::COMPANY_ID);
    let mut entries = match doc.residents {
        Some(cut) => cut,
        None => ResidentEntries::Values(match lookup(&doc.tree, "residents") {
            Some(Value {
                kind: ValueKind::Array(a),
                ..
            }) => a.clone().into_iter(),
            _ => Vec::new().into_iter(),
        }),
    };
    // Only an entry's text that is not TOML is reported here (`next` reads, it does not check).
    let mut ignored = Check::new(path, Default::default());
    let mut residents = Vec::with_capacity(entries.len());
    for i in 0..entries.len() {
        let Some(entry) = entries.next(&mut ignored, &format!("residents[{i}]")) else {
            continue;
        };
        residents.push(EnrolledResident {
            id: get(&entry, "id").unwrap_or_default(),
            name: get(&entry, "name").unwrap_or_default(),
            device_id: get(&entry, "device_id"),
        });
    }
    // An entry that is not TOML makes the file unreadable, as it does for the daemon.
    if let Some(p) = ignored.problems.first() {
        return Err(Unread::Syntax(
            syntax_message(&text).unwrap_or_else(|| p.problem.clone()),
        ));
    }
    Ok(Enrolment {
        keys_file,
        company_id,
        residents,
    })
}

/// The low stage's document, with a syntax error as the TOML parser words it. The entries of a
/// long `[[residents]]` list are not parsed here (see `syntax_message`).
fn document<'t>(path: &Path, text: &'t str) -> Result<read::Document<'t>, String> {
    read::document(path, text).map_err(|p| syntax_message(text).unwrap_or(p.problem))
}

/// The TOML parser's words for what is wrong with `text`. Only asked once something was found
/// wrong: parsing a whole long file at once is what `cut` avoids (it costs ~40 MB for 10,000
/// residents).
fn syntax_message(text: &str) -> Option<String> {
    let e = text.parse::<toml::Table>().err()?;
    Some(e.message().trim().to_string())
}

/// The value at a dotted `key` of `tree`.
fn lookup<'v>(tree: &'v Value, key: &str) -> Option<&'v Value> {
    key.split('.').try_fold(tree, |v, name| match &v.kind {
        ValueKind::Table(t) => t.get(name),
        _ => None,
    })
}

/// The value at `key` as a `T`; `None` when absent or of another type.
fn get<T: DeserializeOwned>(tree: &Value, key: &str) -> Option<T> {
    T::deserialize(lookup(tree, key)?.clone()).ok()
}

/// The TOML name of a value's type, as `toml` says it.
fn toml_type(kind: &ValueKind) -> &'static str {
    match kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "boolean",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => {
            "integer"
        }
        ValueKind::Float(_) => "float",
        ValueKind::String(_) => "string",
        ValueKind::Table(_) => "table",
        ValueKind::Array(_) => "array",
    }
}
