//! The low stage, diagnosing: `Check` collects every problem (file, key, what is wrong, the
//! fix) and every warning while the sections read their raw structs out of the tree, so one
//! run reports everything; unknown keys are reported and dropped rather than stopping the run.
//!
//! It also holds what every section shares: durations with their limits (see `bounds`), paths
//! relative to the config file, and serde's errors put in the words of a TOML file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{ConfigError, File, FileFormat, Value, ValueKind};
use serde::de::DeserializeOwned;

use super::read::{env_var, syntax_problem};
use super::{bounds, Problem};

/// Every problem and warning found so far, named with the file (and, for a value from the
/// environment, its variable).
pub(super) struct Check {
    file: PathBuf,
    /// The config file's directory: relative paths start here.
    dir: PathBuf,
    /// Keys (`mqtt.url`, `residents[2].team`) whose value came from the environment.
    from_env: BTreeSet<String>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Check {
    pub fn new(file: &Path, from_env: BTreeSet<String>) -> Check {
        Check {
            file: file.to_path_buf(),
            dir: file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            from_env,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The file every problem names.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn problem(&mut self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let p = self.named(key, problem.into(), fix.into());
        self.problems.push(p);
    }

    /// Allowed, but not what a real site should run with (see `bounds`).
    pub fn warning(&mut self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let p = self.named(key, problem.into(), fix.into());
        self.warnings.push(p);
    }

    fn named(&self, key: &str, mut problem: String, fix: String) -> Problem {
        if let Some(var) = self.env_var_for(key) {
            problem.push_str(&format!(" (set by the environment variable {var})"));
        }
        Problem::new(&self.file, key, problem, fix)
    }

    /// `BANDGATE__MQTT__URL` if the value at `key` (or the entry holding it) came from there.
    pub fn env_var_for(&self, key: &str) -> Option<String> {
        let mut path = String::new();
        let mut from_env = None;
        for part in key.split('.').filter(|p| !p.is_empty()) {
            let (name, index) = match part.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
            if self.from_env.contains(&path) {
                from_env = Some(key.split('[').next().unwrap_or(key).to_string());
            }
            if let Some(i) = index {
                path.push_str(&format!("[{i}]"));
                if self.from_env.contains(&path) {
                    from_env = Some(key.split('[').next().unwrap_or(key).to_string());
                }
            }
        }
        from_env.map(|k| env_var(&k))
    }

    /// The entries of a `[[key]]` list, without copying them; anything else is reported as
    /// `take` would.
    pub fn entries(&mut self, key: &str, value: Value) -> Option<Vec<Value>> {
        match value.kind {
            ValueKind::Array(entries) => Some(entries),
            _ => self.take(key, value),
        }
    }

    /// The one resident of an entry's text (`[[residents]]` and its keys), starting at `at` in
    /// `file`.
    pub fn entry_value(&mut self, key: &str, file: &str, at: usize, text: &str) -> Option<Value> {
        let built = config::Config::builder()
            .add_source(File::from_str(text, FileFormat::Toml))
            .build();
        let tree = match built {
            Ok(c) => c.cache,
            Err(e) => {
                let problem =
                    syntax_problem(&self.file, file, text, |o| at + o).unwrap_or_else(|| {
                        Problem::new(
                            &self.file,
                            key,
                            format!("cannot read this entry: {e}"),
                            "compare with the example config/bandgate.toml",
                        )
                    });
                self.problems.push(problem);
                return None;
            }
        };
        let one = match tree.kind {
            ValueKind::Table(mut t) => match t.shift_remove("residents").map(|v| v.kind) {
                Some(ValueKind::Array(mut one)) if one.len() == 1 => one.pop(),
                _ => None,
            },
            _ => None,
        };
        if one.is_none() {
            // Not expected (the text was cut at a [[residents]] header), but never dropped quietly.
            self.problem(
                key,
                "this [[residents]] entry could not be read on its own",
                "compare with the example config/bandgate.toml",
            );
        }
        one
    }

    /// Reads `value` (found at `key`) into `T`, reporting unknown keys one by one and
    /// carrying on without them; any other mismatch is one problem and `None`.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str, mut value: Value) -> Option<T> {
        loop {
            let err = match T::deserialize(value.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let (at, inner) = split_error(err);
            let full = join_key(key, at.as_deref().unwrap_or(""));
            let Some((field, expected)) = parse_unknown_field(&inner.to_string()) else {
                self.mismatch(key, &full, inner);
                return None;
            };
            self.unknown_key(&join_key(&full, &field), &field, &expected);
            // Unknown keys can only sit at the top of what `take` reads (sections are flat).
            let removed = at.is_none()
                && match &mut value.kind {
                    ValueKind::Table(t) => t.shift_remove(&field).is_some(),
                    _ => false,
                };
            if !removed {
                return None;
            }
        }
    }

    /// `field` (at `entry`) is not one of the `expected` keys: a typo's nearest key, or the list.
    fn unknown_key(&mut self, entry: &str, field: &str, expected: &[String]) {
        let env_var = self.env_var_for(entry);
        match closest(field, expected) {
            Some(near) => self.problem(
                entry,
                format!("unknown key {field:?}; did you mean {near:?}?"),
                match env_var {
                    Some(var) => format!(
                        "rename the variable to {}{}",
                        var.strip_suffix(&field.to_uppercase()).unwrap_or(&var),
                        near.to_uppercase()
                    ),
                    None => format!("rename it to {near}"),
                },
            ),
            None => self.problem(
                entry,
                format!("unknown key {field:?}"),
                if expected.is_empty() {
                    "remove it".to_string()
                } else {
                    format!(
                        "remove it; the keys allowed here are {}",
                        expected.join(", ")
                    )
                },
            ),
        }
    }

    /// A missing key or a value of the wrong shape at `full` (inside what was read at `key`).
    fn mismatch(&mut self, key: &str, full: &str, inner: ConfigError) {
        let found_where = match inner {
            ConfigError::NotFound(missing) => {
                let entry = join_key(key, &missing);
                self.problem(
                    &entry,
                    "this required key is missing",
                    format!("add it, e.g. {}", example_for(last_segment(&missing))),
                );
                return;
            }
            ConfigError::Type {
                unexpected,
                expected,
                ..
            } => Ok((unexpected.to_string(), expected.to_string())),
            // serde's own "invalid type: string \"sat\", expected a sequence"
            other => {
                let text = other.to_string();
                match text
                    .strip_prefix("invalid type: ")
                    .and_then(|t| t.split_once(", expected "))
                {
                    Some((found, expected)) => Ok((found.to_string(), expected.to_string())),
                    None => Err(text),
                }
            }
        };
        match found_where {
            Ok((found, expected)) => self.problem(
                full,
                format!("found a {found} where {} belongs", plain(&expected)),
                format!("write {}", describe_expected(&expected, full)),
            ),
            Err(text) => self.problem(full, text, "compare with the example config/bandgate.toml"),
        }
    }

    pub fn section<T: DeserializeOwned + Default>(&mut self, key: &str, value: Option<Value>) -> T {
        match value {
            None => T::default(),
            Some(v) if matches!(v.kind, ValueKind::Table(_)) => {
                self.take(key, v).unwrap_or_default()
            }
            Some(v) => {
                self.problem(
                    key,
                    format!("must be a table, found {}", kind_name(&v.kind)),
                    format!("write it as a section: a line [{key}] followed by its keys"),
                );
                T::default()
            }
        }
    }

    pub fn duration(&mut self, key: &str, raw: Option<&str>, default: &str) -> Duration {
        let text = raw.unwrap_or(default);
        match humantime::parse_duration(text.trim()) {
            Ok(d) if d > Duration::ZERO => {
                self.check_bounds(key, text, d);
                d
            }
            Ok(_) => {
                self.problem(
                    key,
                    format!("the duration {text:?} is zero"),
                    format!("give a time longer than zero, e.g. {default:?}"),
                );
                humantime::parse_duration(default).unwrap_or(Duration::from_secs(60))
            }
            Err(e) => {
                self.problem(
                    key,
                    format!("{text:?} is not a duration ({e})"),
                    format!("write a number with a unit in quotes, e.g. \"90s\", \"30m\" or \"2h\" (default {default:?})"),
                );
                humantime::parse_duration(default).unwrap_or(Duration::from_secs(60))
            }
        }
    }

    /// The hard limits every duration must keep (an error) and the recommended range of its
    /// key (a warning).
    fn check_bounds(&mut self, key: &str, text: &str, d: Duration) {
        let range = bounds::range(key);
        let advice = range
            .map(|r| {
                format!(
                    "; for a real site {} to {} is recommended (default {:?})",
                    bounds::show(r.low),
                    bounds::show(r.high),
                    r.default
                )
            })
            .unwrap_or_default();
        if d < bounds::MIN_DELAY {
            self.problem(
                key,
                format!("{text:?} is shorter than 1 second, the shortest wait bandgate accepts: a timer this short would page or check in a storm"),
                format!("give at least \"1s\"{advice}"),
            );
            return;
        }
        if d > bounds::MAX_DELAY {
            self.problem(
                key,
                format!("{text:?} is longer than 30 days, the longest wait bandgate accepts: a timer this long would in effect never fire"),
                format!("give at most \"30d\"{advice}"),
            );
            return;
        }
        let Some(r) = range else { return };
        let shown = bounds::show(d);
        if d < r.low {
            self.warning(
                key,
                format!(
                    "{shown} is below the recommended {} to {}: on a real site {}",
                    bounds::show(r.low),
                    bounds::show(r.high),
                    r.too_short
                ),
                format!(
                    "fine for a test or a demo; otherwise give at least {:?} (default {:?})",
                    bounds::show(r.low),
                    r.default
                ),
            );
        } else if d > r.high {
            self.warning(
                key,
                format!(
                    "{shown} is above the recommended {} to {}: on a real site {}",
                    bounds::show(r.low),
                    bounds::show(r.high),
                    r.too_long
                ),
                format!(
                    "give at most {:?} (default {:?}) unless you mean it",
                    bounds::show(r.high),
                    r.default
                ),
            );
        }
    }

    /// A path from the file: relative ones are taken from the config file's directory.
    pub fn path(&self, raw: &str) -> PathBuf {
        let p = Path::new(raw);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Splits a config error into where it happened (relative key) and what happened.
fn split_error(e: ConfigError) -> (Option<String>, ConfigError) {
    match e {
        ConfigError::At { error, key, .. } => (key, *error),
        ConfigError::Type {
            origin,
            unexpected,
            expected,
            key,
        } => (
            key,
            ConfigError::Type {
                origin,
                unexpected,
                expected,
                key: None,
            },
        ),
        ConfigError::NotFound(key) => (None, ConfigError::NotFound(key)),
        other => (None, other),
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" into `x` and `[a, b]`.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// The allowed name nearest to a misspelt one, if it is close enough to be a typo.
pub(super) fn closest<'a, S: AsRef<str>>(word: &str, candidates: &'a [S]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c.as_ref()), c.as_ref()))
        .filter(|(d, c)| *d <= 2.max(c.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

fn join_key(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

fn kind_name(kind: &ValueKind) -> &'static str {
    match kind {
        ValueKind::Nil => "nothing",
        ValueKind::Boolean(_) => "true/false value",
        ValueKind::I64(_) | ValueKind::I128(_) | ValueKind::U64(_) | ValueKind::U128(_) => "number",
        ValueKind::Float(_) => "decimal number",
        ValueKind::String(_) => "text",
        ValueKind::Table(_) => "table",
        ValueKind::Array(_) => "list",
    }
}

/// serde's names for shapes, in the words of a TOML file.
fn plain(expected: &str) -> &str {
    match expected {
        "a sequence" | "sequence" => "a list",
        "a map" | "map" => "a table",
        other => other,
    }
}

fn describe_expected(expected: &str, key: &str) -> String {
    if matches!(key, "staff" | "rota" | "residents") {
        return format!("each entry under its own [[{key}]] line (double brackets)");
    }
    let name = last_segment(key);
    match expected {
        "a sequence" | "sequence" => {
            format!("a list in square brackets, e.g. {}", example_for(name))
        }
        "a boolean" => format!("true or false, e.g. {name} = false"),
        "a map" | "map" => "a table".to_string(),
        other if other.contains("integer") => format!("a whole number, e.g. {}", example_for(name)),
        _ => format!("{expected}, e.g. {}", example_for(name)),
    }
}

/// An example line for a key, for fixes.
fn example_for(name: &str) -> String {
    let name = name.split('[').next().unwrap_or(name);
    match name {
        "id" => "id = \"zhang\"".into(),
        "name" => "name = \"张伟\"".into(),
        "device_id" => "device_id = 17".into(),
        "days" => "days = [\"mon\", \"tue\"]".into(),
        "from" => "from = \"08:00\"".into(),
        "to" => "to = \"20:00\"".into(),
        "staff" => "staff = [\"zhang\"]".into(),
        "team" => "team = [\"li\", \"wang\"]".into(),
        "supervisors" => "supervisors = [\"chen\"]".into(),
        "ack_timeouts" => "ack_timeouts = [\"60s\", \"60s\"]".into(),
        "residents" | "rota" => format!("[[{name}]] entries with double brackets"),
        other => format!("{other} = ... as in config/bandgate.toml"),
    }
}

/// An id that can be an MQTT topic level and user name.
pub(super) fn is_topic_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key() {
        let keys = ["renotify_every", "repeat_every", "claim_timeout"];
        assert_eq!(closest("renotfy_every", &keys), Some("renotify_every"));
        assert_eq!(closest("colour", &keys), None);
    }

    #[test]
    fn serde_unknown_field_messages() {
        assert_eq!(
            parse_unknown_field("unknown field `nmae`, expected one of `id`, `name`"),
            Some(("nmae".into(), vec!["id".into(), "name".into()]))
        );
        assert_eq!(
            parse_unknown_field("unknown field `x`, expected `a` or `b`"),
            Some(("x".into(), vec!["a".into(), "b".into()]))
        );
    }
}
