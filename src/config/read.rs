//! The low stage, reading: `bandgate.toml` as text, its syntax checked (a typo gets a line and
//! column), merged with the `BANDGATE__SECTION__KEY` environment overrides into one tree, and a
//! long `[[residents]]` list cut into entries read one at a time (see `cut`).
//!
//! Nothing here knows what a key means; `diagnose` and the sections do.

use std::collections::BTreeSet;
use std::path::Path;

use config::{Environment, File, FileFormat, Value, ValueKind};

use super::diagnose::Check;
use super::{cut, Problem};

/// The environment variable prefix: `BANDGATE__MQTT__URL` overrides `[mqtt] url`.
pub(super) const ENV_PREFIX: &str = "BANDGATE";
pub(super) const ENV_SEPARATOR: &str = "__";
/// The origin the `config` crate gives values from the environment.
const ENV_ORIGIN: &str = "the environment";

/// The variable that overrides `key` (`mqtt.url` → `BANDGATE__MQTT__URL`).
pub(super) fn env_var(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.replace('.', ENV_SEPARATOR).to_uppercase()
    )
}

/// What the file and the environment say, not yet interpreted.
pub(super) struct Document<'t> {
    /// The file merged with the environment, without the entries in `residents`.
    pub tree: Value,
    /// The `[[residents]]` entries cut out of the text, when it could be cut.
    pub residents: Option<ResidentEntries<'t>>,
    /// Keys (`mqtt.url`, `residents[2].team`) whose value came from the environment.
    pub from_env: BTreeSet<String>,
}

/// Reads `text` (the file at `path`) and the environment into a document.
pub(super) fn document<'t>(path: &Path, text: &'t str) -> Result<Document<'t>, Problem> {
    // A long list of residents is read one entry at a time (see `cut`); the rest as a tree.
    let cut = cut::cut_residents(text);
    let tree = match &cut {
        Some(cut) => read_tree(path, text, &cut.rest, |at| cut.file_offset(at)),
        None => read_tree(path, text, text, |at| at),
    }?;
    // Only which values came from the environment is kept, not a copy of the whole tree.
    let mut from_env = BTreeSet::new();
    env_paths(&tree, "", &mut from_env);
    let residents = cut.map(|c| ResidentEntries::Texts {
        file: text,
        texts: c.residents.into_iter(),
    });
    Ok(Document {
        tree,
        residents,
        from_env,
    })
}

pub(super) fn read_text(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Problem::new(
                path,
                "",
                "the configuration file does not exist",
                format!(
                    "copy the example and edit it: cp config/bandgate.toml {} (from the bandgate source tree), or pass --config PATH",
                    path.display()
                ),
            )
        } else {
            Problem::new(
                path,
                "",
                format!("cannot read the configuration file: {e}"),
                "check that the bandgate user may read it",
            )
        }
    })
}

/// A TOML syntax error in `part` (which starts at `file_offset(0)` of `file`), with the line
/// and column in the file.
pub(super) fn syntax_problem(
    path: &Path,
    file: &str,
    part: &str,
    file_offset: impl Fn(usize) -> usize,
) -> Option<Problem> {
    let e = part.parse::<toml::Table>().err()?;
    let (line, column) = line_column(file, file_offset(e.span().map_or(0, |s| s.start)));
    Some(Problem::new(
        path,
        "",
        format!(
            "not valid TOML at line {line}, column {column}: {}",
            e.message().trim()
        ),
        "look near that place for a missing quote, bracket, comma or '='; text values need double quotes",
    ))
}

/// `text` (the file, or what is left of it after `cut`; syntax-checked, so a typo gets a line
/// and column in `file`) merged with the environment.
fn read_tree(
    path: &Path,
    file: &str,
    text: &str,
    file_offset: impl Fn(usize) -> usize,
) -> Result<Value, Problem> {
    if let Some(p) = syntax_problem(path, file, text, file_offset) {
        return Err(p);
    }
    let built = config::Config::builder()
        // From the text already read: values then carry no origin string each (the file is
        // named in every problem anyway), which for 10,000 residents is megabytes.
        .add_source(File::from_str(text, FileFormat::Toml))
        .add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("escalation.ack_timeouts")
                .with_list_parse_key("escalation.supervisors"),
        )
        .build()
        .map_err(|e| {
            Problem::new(
                path,
                "",
                format!("cannot load the configuration: {e}"),
                "check the file and the BANDGATE__* environment variables",
            )
        })?;
    Ok(built.cache)
}

/// Collects the keys of `value` (under `prefix`) that came from the environment.
fn env_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if value.origin() == Some(ENV_ORIGIN) && !prefix.is_empty() {
        out.insert(prefix.to_string());
    }
    match &value.kind {
        ValueKind::Table(t) => {
            for (name, v) in t {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                env_paths(v, &path, out);
            }
        }
        ValueKind::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                env_paths(v, &format!("{prefix}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The `[[residents]]` entries, as read from the tree or cut from the text (see `cut`).
pub(super) enum ResidentEntries<'t> {
    Values(std::vec::IntoIter<Value>),
    /// Not yet parsed: each entry's text and its offset in `file` (for line numbers).
    Texts {
        file: &'t str,
        texts: std::vec::IntoIter<(usize, &'t str)>,
    },
}

impl ResidentEntries<'_> {
    pub fn len(&self) -> usize {
        match self {
            ResidentEntries::Values(v) => v.len(),
            ResidentEntries::Texts { texts, .. } => texts.len(),
        }
    }

    /// The next entry as a value; `None` at the end, or (with the problem reported) if its
    /// text is not TOML.
    pub fn next(&mut self, check: &mut Check, key: &str) -> Option<Value> {
        match self {
            ResidentEntries::Values(v) => v.next(),
            ResidentEntries::Texts { file, texts } => {
                let (at, text) = texts.next()?;
                check.entry_value(key, file, at, text)
            }
        }
    }
}
