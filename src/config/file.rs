//! `bandgate.toml` plus `BANDGATE__SECTION__KEY` environment overrides, checked into a typed
//! [`Config`].
//!
//! Loading runs in three steps so that one run reports every problem: the merged tree is read
//! section by section (and entry by entry) into raw serde structs, so a typo in one place does
//! not hide a mistake in another; unknown keys are reported and dropped rather than stopping
//! the run; then the raw values are checked and cross-referenced into the engine's `Setup`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{ConfigError, Environment, File, FileFormat, Value, ValueKind};
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{bounds, cut, keys, Problem, Problems};
use crate::engine::{
    Escalation, Keyring, Locale, Resident, Rota, Setup, Shift, Staff, Supervision, WearerCancel,
};

/// Where the daemon and `check-config` look when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/bandgate/bandgate.toml";

/// The environment variable prefix: `BANDGATE__MQTT__URL` overrides `[mqtt] url`.
const ENV_PREFIX: &str = "BANDGATE";
const ENV_SEPARATOR: &str = "__";
const ENV_ORIGIN: &str = "the environment";

/// The whole validated configuration of one gateway.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub site_id: String,
    pub gateway_id: String,
    pub state_dir: PathBuf,
    pub keys_file: PathBuf,
    /// The operator's control socket (`bandgate status`, `alerts`, `ack`, ...).
    pub control_socket: PathBuf,
    pub setup: Setup,
    pub keys: Keyring,
    pub ble: BleConfig,
    pub mqtt: MqttConfig,
    pub publish_vitals: bool,
    /// Values that are allowed but outside their recommended range (see `bounds`):
    /// `check-config` lists them, the daemon logs them at start.
    pub warnings: Vec<Problem>,
}

/// Where advertisements come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Bluez,
    Replay,
    Simulate,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Bluez => "bluez",
            SourceKind::Replay => "replay",
            SourceKind::Simulate => "simulate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BleConfig {
    pub source: SourceKind,
    pub adapter: Option<String>,
    pub company_id: u16,
    pub silence_restart: Duration,
    pub replay_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    /// Read from `password_file`, surrounding whitespace trimmed.
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Default `bandgate/{site_id}`.
    pub topic_prefix: String,
    pub status_interval: Duration,
    pub device_state_interval: Duration,
}

// ---- raw shapes: what the file may say, nothing checked yet ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    site_id: Option<String>,
    gateway_id: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    state_dir: Option<String>,
    keys_file: Option<String>,
    control_socket: Option<String>,
    // Sections are read on their own (see `take`), so they stay untyped here.
    ble: Option<Value>,
    mqtt: Option<Value>,
    alerts: Option<Value>,
    escalation: Option<Value>,
    supervision: Option<Value>,
    privacy: Option<Value>,
    staff: Option<Vec<Value>>,
    rota: Option<Vec<Value>>,
    residents: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBle {
    source: Option<String>,
    adapter: Option<String>,
    company_id: Option<i64>,
    silence_restart: Option<String>,
    replay_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    topic_prefix: Option<String>,
    status_interval: Option<String>,
    device_state_interval: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    resolved_retention: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    ack_timeouts: Option<Vec<String>>,
    renotify_every: Option<String>,
    repeat_every: Option<String>,
    claim_timeout: Option<String>,
    wearer_cancel: Option<String>,
    cancel_verify_timeout: Option<String>,
    #[serde(default)]
    supervisors: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSupervision {
    silent_after: Option<String>,
    low_battery_pct: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    publish_vitals: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaff {
    id: String,
    name: String,
    #[serde(default)]
    phone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    days: Vec<String>,
    from: String,
    to: String,
    staff: Vec<String>,
}

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

/// Loads `path`, applies `BANDGATE__*` environment overrides and checks everything.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let mut check = Check {
        file: path.to_path_buf(),
        dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        from_env: BTreeSet::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let text = read_text(path).map_err(|p| Problems(vec![p]))?;
    // A long list of residents is read one entry at a time (see `cut`); the rest as a tree.
    let cut = cut::cut_residents(&text);
    let tree = match &cut {
        Some(cut) => read_tree(path, &text, &cut.rest, |at| cut.file_offset(at)),
        None => read_tree(path, &text, &text, |at| at),
    }
    .map_err(|p| Problems(vec![p]))?;
    // Only which values came from the environment is kept, not a copy of the whole tree.
    env_paths(&tree, "", &mut check.from_env);
    let entries = cut.map(|c| ResidentEntries::Texts {
        file: &text,
        texts: c.residents.into_iter(),
    });
    let config = check.build(tree, entries);
    match config {
        Some(c) if check.problems.is_empty() => Ok(c),
        _ => Err(Problems(check.problems)),
    }
}

/// Only `control_socket` of `path` (or `BANDGATE__CONTROL_SOCKET`), for the operator commands:
/// operators may not read the key file, so the whole configuration is not checked here.
pub fn control_socket(path: &Path) -> Result<PathBuf, Problem> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let from_env = std::env::var(format!("{ENV_PREFIX}{ENV_SEPARATOR}CONTROL_SOCKET")).ok();
    let raw = match from_env {
        Some(v) => v,
        None => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Problem::new(
                    path,
                    "",
                    format!("cannot read the configuration file: {e}"),
                    "pass --socket PATH, or a --config your user may read",
                )
            })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                Problem::new(
                    path,
                    "",
                    format!("not valid TOML: {}", e.message().trim()),
                    "run bandgate check-config",
                )
            })?;
            match table.get("control_socket") {
                None => crate::adapters::control::DEFAULT_SOCKET.to_string(),
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(Problem::new(
                        path,
                        "control_socket",
                        format!("a {}, not a quoted path", other.type_str()),
                        "write control_socket = \"/run/bandgate/bandgate.sock\"",
                    ))
                }
            }
        }
    };
    Ok(dir.join(raw))
}

fn read_text(path: &Path) -> Result<String, Problem> {
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
fn syntax_problem(
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
enum ResidentEntries<'t> {
    Values(std::vec::IntoIter<Value>),
    /// Not yet parsed: each entry's text and its offset in `file` (for line numbers).
    Texts {
        file: &'t str,
        texts: std::vec::IntoIter<(usize, &'t str)>,
    },
}

impl ResidentEntries<'_> {
    fn len(&self) -> usize {
        match self {
            ResidentEntries::Values(v) => v.len(),
            ResidentEntries::Texts { texts, .. } => texts.len(),
        }
    }

    /// The next entry as a value; `None` at the end, or (with the problem reported) if its
    /// text is not TOML.
    fn next(&mut self, check: &mut Check, key: &str) -> Option<Value> {
        match self {
            ResidentEntries::Values(v) => v.next(),
            ResidentEntries::Texts { file, texts } => {
                let (at, text) = texts.next()?;
                check.entry_value(key, file, at, text)
            }
        }
    }
}

struct Check {
    file: PathBuf,
    dir: PathBuf,
    /// Keys (`mqtt.url`, `residents[2].team`) whose value came from the environment.
    from_env: BTreeSet<String>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Check {
    fn problem(&mut self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let p = self.named(key, problem.into(), fix.into());
        self.problems.push(p);
    }

    /// Allowed, but not what a real site should run with (see `bounds`).
    fn warning(&mut self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
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
    fn env_var_for(&self, key: &str) -> Option<String> {
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
        from_env.map(|k| {
            format!(
                "{ENV_PREFIX}{ENV_SEPARATOR}{}",
                k.replace('.', ENV_SEPARATOR).to_uppercase()
            )
        })
    }

    /// The entries of a `[[key]]` list, without copying them; anything else is reported as
    /// `take` would.
    fn entries(&mut self, key: &str, value: Value) -> Option<Vec<Value>> {
        match value.kind {
            ValueKind::Array(entries) => Some(entries),
            _ => self.take(key, value),
        }
    }

    /// The one resident of an entry's text (`[[residents]]` and its keys), starting at `at` in
    /// `file`.
    fn entry_value(&mut self, key: &str, file: &str, at: usize, text: &str) -> Option<Value> {
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
    fn take<T: DeserializeOwned>(&mut self, key: &str, mut value: Value) -> Option<T> {
        loop {
            let err = match T::deserialize(value.clone()) {
                Ok(t) => return Some(t),
                Err(e) => e,
            };
            let (at, inner) = split_error(err);
            let full = join_key(key, at.as_deref().unwrap_or(""));
            let message = inner.to_string();
            if let Some((field, expected)) = parse_unknown_field(&message) {
                let entry = join_key(&full, &field);
                let env_var = self.env_var_for(&entry);
                match closest(&field, &expected) {
                    Some(near) => self.problem(
                        &entry,
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
                        &entry,
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
                // Unknown keys can only sit at the top of what `take` reads (sections are flat).
                let removed = at.is_none()
                    && match &mut value.kind {
                        ValueKind::Table(t) => t.shift_remove(&field).is_some(),
                        _ => false,
                    };
                if removed {
                    continue;
                }
                return None;
            }
            match inner {
                ConfigError::NotFound(missing) => {
                    let entry = join_key(key, &missing);
                    self.problem(
                        &entry,
                        "this required key is missing",
                        format!("add it, e.g. {}", example_for(last_segment(&missing))),
                    );
                }
                ConfigError::Type {
                    unexpected,
                    expected,
                    ..
                } => {
                    let fix = format!("write {}", describe_expected(expected, &full));
                    self.problem(
                        &full,
                        format!("found a {unexpected} where {} belongs", plain(expected)),
                        fix,
                    );
                }
                other => {
                    let text = other.to_string();
                    // serde's own "invalid type: string \"sat\", expected a sequence"
                    match text
                        .strip_prefix("invalid type: ")
                        .and_then(|t| t.split_once(", expected "))
                    {
                        Some((found, expected)) => {
                            let fix = format!("write {}", describe_expected(expected, &full));
                            self.problem(
                                &full,
                                format!("found a {found} where {} belongs", plain(expected)),
                                fix,
                            );
                        }
                        None => self.problem(
                            &full,
                            text,
                            "compare with the example config/bandgate.toml",
                        ),
                    }
                }
            }
            return None;
        }
    }

    fn section<T: DeserializeOwned + Default>(&mut self, key: &str, value: Option<Value>) -> T {
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

    fn duration(&mut self, key: &str, raw: Option<&str>, default: &str) -> Duration {
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
    fn path(&self, raw: &str) -> PathBuf {
        let p = Path::new(raw);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn build(&mut self, tree: Value, cut: Option<ResidentEntries<'_>>) -> Option<Config> {
        if !matches!(tree.kind, ValueKind::Table(_)) {
            self.problem(
                "",
                "the file is not a TOML table",
                "start from config/bandgate.toml",
            );
            return None;
        }
        // The three long lists are taken out before the top level is read, so that reading it
        // (which keeps a copy for retries) does not copy every resident; each entry is read on
        // its own later.
        let mut tree = tree;
        let mut lists: [Option<Value>; 3] = [None, None, None];
        if let ValueKind::Table(t) = &mut tree.kind {
            for (slot, name) in lists.iter_mut().zip(["staff", "rota", "residents"]) {
                *slot = t.shift_remove(name);
            }
        }
        let mut top: RawTop = self.take("", tree)?;
        let [staff, rota, residents] = lists;
        top.staff = staff.and_then(|v| self.entries("staff", v));
        top.rota = rota.and_then(|v| self.entries("rota", v));
        top.residents = residents.and_then(|v| self.entries("residents", v));
        if let (Some(_), Some(cut)) = (&top.residents, &cut) {
            self.problem(
                "residents",
                format!(
                    "residents are given twice: as {} [[residents]] entries and as one value",
                    cut.len()
                ),
                "keep only the [[residents]] entries",
            );
        }

        let site_id = self.name("site_id", top.site_id.as_deref(), "guanghuiyuan");
        let gateway_id = self.name("gateway_id", top.gateway_id.as_deref(), "gw-guanghuiyuan-1");
        let locale = match top.locale.as_deref().unwrap_or("zh-CN") {
            "zh-CN" => Locale::ZhCn,
            "en" => Locale::En,
            other => {
                self.problem(
                    "locale",
                    format!("unknown locale {other:?}"),
                    "use \"zh-CN\" (Chinese) or \"en\" (English)",
                );
                Locale::ZhCn
            }
        };
        let tz_name = top.timezone.as_deref().unwrap_or("Asia/Shanghai");
        let tz = match TimeZone::get(tz_name) {
            Ok(tz) => tz,
            Err(_) => {
                self.problem(
                    "timezone",
                    format!("unknown time zone {tz_name:?}"),
                    "use an IANA time zone name such as \"Asia/Shanghai\"",
                );
                TimeZone::UTC
            }
        };
        let state_dir = self.path(top.state_dir.as_deref().unwrap_or("/var/lib/bandgate"));
        let keys_file = self.path(
            top.keys_file
                .as_deref()
                .unwrap_or("/etc/bandgate/keys.toml"),
        );

        let control_socket = self.path(
            top.control_socket
                .as_deref()
                .unwrap_or(crate::adapters::control::DEFAULT_SOCKET),
        );

        let ble: RawBle = self.section("ble", top.ble);
        let mqtt: RawMqtt = self.section("mqtt", top.mqtt);
        let alerts: RawAlerts = self.section("alerts", top.alerts);
        let escalation: RawEscalation = self.section("escalation", top.escalation);
        let supervision: RawSupervision = self.section("supervision", top.supervision);
        let privacy: RawPrivacy = self.section("privacy", top.privacy);

        let ble = self.ble(ble);
        let mqtt = self.mqtt(mqtt, site_id.as_deref().unwrap_or(""));
        let resolved_retention = self.duration(
            "alerts.resolved_retention",
            alerts.resolved_retention.as_deref(),
            "10m",
        );

        let staff = self.staff(top.staff.unwrap_or_default());
        let known = |id: &str| staff.contains_key(id);
        let mut refs: Vec<(String, String)> = Vec::new(); // (key, staff id) to check

        let shifts = self.shifts(top.rota.unwrap_or_default(), &mut refs);
        let escalation = self.escalation(escalation, &mut refs);
        let supervision = self.supervision(supervision);

        let keys = keys::load(&keys_file)
            .map_err(|p| self.problems.extend(p.0))
            .ok();
        let entries = cut.unwrap_or_else(|| {
            ResidentEntries::Values(top.residents.unwrap_or_default().into_iter())
        });
        let residents = self.residents(entries, &mut refs, keys.as_ref(), &keys_file);

        for (key, id) in refs {
            if !known(&id) {
                let hint = closest(&id, &staff.keys().map(String::as_str).collect::<Vec<_>>())
                    .map(|near| format!(" (did you mean {near:?}?)"))
                    .unwrap_or_default();
                self.problem(
                    &key,
                    format!("staff id {id:?} is not listed under [[staff]]{hint}"),
                    format!("add a [[staff]] entry with id = {id:?}, or correct the id"),
                );
            }
        }

        let setup = Setup {
            gateway_id: gateway_id.clone()?,
            locale,
            staff,
            residents,
            rota: Rota { tz, shifts },
            escalation,
            supervision,
            resolved_retention,
            device_state_interval: mqtt.as_ref()?.device_state_interval,
        };
        Some(Config {
            path: self.file.clone(),
            site_id: site_id?,
            gateway_id: gateway_id?,
            state_dir,
            keys_file,
            control_socket,
            setup,
            keys: keys?,
            ble: ble?,
            mqtt: mqtt?,
            publish_vitals: privacy.publish_vitals.unwrap_or(false),
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// An id that ends up in MQTT topics: required, no spaces, no `/`, `+` or `#`.
    fn name(&mut self, key: &str, raw: Option<&str>, example: &str) -> Option<String> {
        match raw {
            None => {
                self.problem(
                    key,
                    "this required key is missing",
                    format!("add it, e.g. {key} = {example:?}"),
                );
                None
            }
            Some(s) if !is_topic_word(s) => {
                self.problem(
                    key,
                    format!("{s:?} cannot be used in MQTT topics"),
                    format!("use letters, digits, '-' and '_' only, e.g. {example:?}"),
                );
                None
            }
            Some(s) => Some(s.to_string()),
        }
    }

    fn ble(&mut self, raw: RawBle) -> Option<BleConfig> {
        let source = match raw.source.as_deref().unwrap_or("bluez") {
            "bluez" => Some(SourceKind::Bluez),
            "replay" => Some(SourceKind::Replay),
            "simulate" => Some(SourceKind::Simulate),
            other => {
                self.problem(
                    "ble.source",
                    format!("unknown source {other:?}"),
                    "use \"bluez\" (the radio), \"replay\" (a capture file) or \"simulate\"",
                );
                None
            }
        };
        let company_id = match raw.company_id {
            None => Some(0xFFFF),
            Some(n) => match u16::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.problem(
                        "ble.company_id",
                        format!("{n} is not a Bluetooth company id (0 to 65535)"),
                        "use the id the bands advertise under, e.g. company_id = 0xFFFF",
                    );
                    None
                }
            },
        };
        let silence_restart =
            self.duration("ble.silence_restart", raw.silence_restart.as_deref(), "60s");
        let replay_file = raw.replay_file.as_deref().map(|p| self.path(p));
        if source == Some(SourceKind::Replay) {
            match &replay_file {
                None => self.problem(
                    "ble.replay_file",
                    "source = \"replay\" needs a capture file to replay",
                    "add replay_file = \"capture.jsonl\" under [ble], or use source = \"bluez\"",
                ),
                // Not `is_file`: a named pipe is a fine capture (a live feed, as bench/run.sh uses).
                Some(p) if !p.exists() || p.is_dir() => {
                    let shown = p.display().to_string();
                    self.problem(
                        "ble.replay_file",
                        format!("the file {shown} does not exist"),
                        "correct the path (relative paths start at the config file's directory)",
                    )
                }
                Some(_) => {}
            }
        }
        Some(BleConfig {
            source: source?,
            adapter: raw.adapter,
            company_id: company_id?,
            silence_restart,
            replay_file,
        })
    }

    fn mqtt(&mut self, raw: RawMqtt, site_id: &str) -> Option<MqttConfig> {
        let url = raw
            .url
            .clone()
            .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
        let parsed = match parse_broker_url(&url) {
            Ok(p) => Some(p),
            Err(why) => {
                self.problem(
                    "mqtt.url",
                    format!("{url:?} is not a broker address: {why}"),
                    "write mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS, e.g. \"mqtt://127.0.0.1:1883\"",
                );
                None
            }
        };
        let password_file = raw.password_file.as_deref().map(|p| self.path(p));
        let password = match &password_file {
            None => None,
            Some(p) => match std::fs::read_to_string(p) {
                Ok(s) if s.trim().is_empty() => {
                    let shown = p.display().to_string();
                    self.problem(
                        "mqtt.password_file",
                        format!("{shown} is empty"),
                        "write the gateway's MQTT password into it, on one line",
                    );
                    None
                }
                Ok(s) => Some(s.trim().to_string()),
                Err(e) => {
                    let shown = p.display().to_string();
                    self.problem(
                        "mqtt.password_file",
                        format!("cannot read {shown}: {e}"),
                        "check the path and that the bandgate user may read the file",
                    );
                    None
                }
            },
        };
        if password_file.is_some() && raw.username.is_none() {
            self.problem(
                "mqtt.username",
                "password_file is set but username is not",
                "add username = \"<the gateway's MQTT user>\" under [mqtt]",
            );
        }
        let ca_file = raw.ca_file.as_deref().map(|p| self.path(p));
        if let Some(p) = &ca_file {
            if !p.is_file() {
                let shown = p.display().to_string();
                self.problem(
                    "mqtt.ca_file",
                    format!("the CA certificate {shown} does not exist"),
                    "correct the path, or remove ca_file to use the system's certificates",
                );
            } else if matches!(&parsed, Some((_, _, false))) {
                self.problem(
                    "mqtt.ca_file",
                    "a CA certificate is given but the url is mqtt:// (no TLS)",
                    "use mqtts:// in url, or remove ca_file",
                );
            }
        }
        let topic_prefix = raw
            .topic_prefix
            .clone()
            .unwrap_or_else(|| format!("bandgate/{site_id}"));
        if topic_prefix.is_empty()
            || topic_prefix.contains(['+', '#'])
            || topic_prefix.starts_with('/')
            || topic_prefix.ends_with('/')
        {
            self.problem(
                "mqtt.topic_prefix",
                format!("{topic_prefix:?} is not a topic prefix"),
                "use topic levels without '+' or '#' and no leading or trailing '/', e.g. \"bandgate/guanghuiyuan\"",
            );
        }
        let status_interval = self.duration(
            "mqtt.status_interval",
            raw.status_interval.as_deref(),
            "60s",
        );
        let device_state_interval = self.duration(
            "mqtt.device_state_interval",
            raw.device_state_interval.as_deref(),
            "60s",
        );
        let (host, port, tls) = parsed?;
        Some(MqttConfig {
            url,
            host,
            port,
            tls,
            username: raw.username,
            password,
            password_file,
            ca_file,
            topic_prefix,
            status_interval,
            device_state_interval,
        })
    }

    fn escalation(&mut self, raw: RawEscalation, refs: &mut Vec<(String, String)>) -> Escalation {
        let ack_timeouts = match raw.ack_timeouts {
            None => vec![Duration::from_secs(60), Duration::from_secs(60)],
            Some(list) if list.is_empty() => {
                self.problem(
                    "escalation.ack_timeouts",
                    "the list is empty, so nobody but the supervisors would ever be paged",
                    "give one wait per tier before the supervisors, e.g. ack_timeouts = [\"60s\", \"60s\"]",
                );
                Vec::new()
            }
            Some(list) if list.len() > bounds::MAX_ACK_TIMEOUTS => {
                self.problem(
                    "escalation.ack_timeouts",
                    format!(
                        "{} waits, so {} tiers; at most {} waits are accepted",
                        list.len(),
                        list.len() + 1,
                        bounds::MAX_ACK_TIMEOUTS
                    ),
                    "give one wait per tier before the supervisors: tier 1 is who is on duty, tier 2 adds the resident's team, e.g. ack_timeouts = [\"60s\", \"60s\"]",
                );
                Vec::new()
            }
            Some(list) => {
                if list.len() > bounds::RECOMMENDED_ACK_TIMEOUTS {
                    self.warning(
                        "escalation.ack_timeouts",
                        format!(
                            "{} waits, but only tier 1 (who is on duty) and tier 2 (adds the resident's team) page different people before the supervisors: {} nobody new and {} skipped at once",
                            list.len(),
                            if list.len() == 3 {
                                "tier 3 pages".to_string()
                            } else {
                                format!("tiers 3 to {} page", list.len())
                            },
                            if list.len() == 3 { "is" } else { "are" }
                        ),
                        "give two waits, e.g. ack_timeouts = [\"60s\", \"60s\"]",
                    );
                }
                list.iter()
                    .enumerate()
                    .map(|(i, d)| {
                        self.duration(&format!("escalation.ack_timeouts[{i}]"), Some(d), "60s")
                    })
                    .collect()
            }
        };
        let wearer_cancel = match raw.wearer_cancel.as_deref().unwrap_or("verify") {
            "verify" => WearerCancel::Verify,
            "close" => WearerCancel::Close,
            other => {
                self.problem(
                    "escalation.wearer_cancel",
                    format!("unknown choice {other:?}"),
                    "use \"verify\" (staff confirm by phone) or \"close\" (the wearer's cancel resolves the alert)",
                );
                WearerCancel::Verify
            }
        };
        for (i, id) in raw.supervisors.iter().enumerate() {
            refs.push((format!("escalation.supervisors[{i}]"), id.clone()));
        }
        Escalation {
            ack_timeouts,
            renotify_every: self.duration(
                "escalation.renotify_every",
                raw.renotify_every.as_deref(),
                "20s",
            ),
            repeat_every: self.duration(
                "escalation.repeat_every",
                raw.repeat_every.as_deref(),
                "60s",
            ),
            claim_timeout: self.duration(
                "escalation.claim_timeout",
                raw.claim_timeout.as_deref(),
                "15m",
            ),
            wearer_cancel,
            cancel_verify_timeout: self.duration(
                "escalation.cancel_verify_timeout",
                raw.cancel_verify_timeout.as_deref(),
                "5m",
            ),
            supervisors: raw.supervisors,
        }
    }

    fn supervision(&mut self, raw: RawSupervision) -> Supervision {
        let (low, high) = bounds::LOW_BATTERY_PCT;
        let low_battery_pct = match raw.low_battery_pct {
            None => 20,
            Some(n) => match u8::try_from(n) {
                Ok(0) => {
                    self.warning(
                        "supervision.low_battery_pct",
                        "0 means no band ever raises a low_battery notice: a band runs flat unnoticed until it is reported silent",
                        format!("use {low} to {high}, e.g. low_battery_pct = 20"),
                    );
                    0
                }
                Ok(n) if n < low || (high < n && n <= 100) => {
                    self.warning(
                        "supervision.low_battery_pct",
                        if n < low {
                            format!("{n}% is below the recommended {low} to {high}: a band may run flat within a day of its notice")
                        } else {
                            format!("{n}% is above the recommended {low} to {high}: bands raise a low_battery notice every day while still well charged")
                        },
                        format!("use {low} to {high}, e.g. low_battery_pct = 20"),
                    );
                    n
                }
                Ok(n) if n <= 100 => n,
                _ => {
                    self.problem(
                        "supervision.low_battery_pct",
                        format!("{n} is not a percentage"),
                        "use a whole number from 0 to 100, e.g. low_battery_pct = 20",
                    );
                    20
                }
            },
        };
        Supervision {
            silent_after: self.duration(
                "supervision.silent_after",
                raw.silent_after.as_deref(),
                "30m",
            ),
            low_battery_pct,
        }
    }

    fn staff(&mut self, entries: Vec<Value>) -> BTreeMap<String, Staff> {
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

    fn shifts(&mut self, entries: Vec<Value>, refs: &mut Vec<(String, String)>) -> Vec<Shift> {
        let mut shifts = Vec::new();
        for (i, v) in entries.into_iter().enumerate() {
            let key = format!("rota[{i}]");
            let Some(raw) = self.take::<RawShift>(&key, v) else {
                continue;
            };
            let mut days = Vec::new();
            for (d, name) in raw.days.iter().enumerate() {
                match parse_day(name) {
                    Some(day) => days.push(day),
                    None => self.problem(
                        &format!("{key}.days[{d}]"),
                        format!("{name:?} is not a day"),
                        "use mon, tue, wed, thu, fri, sat or sun",
                    ),
                }
            }
            if raw.days.is_empty() {
                self.problem(
                    &format!("{key}.days"),
                    "no days are given, so this shift never runs",
                    "list its days, e.g. days = [\"mon\", \"tue\"]",
                );
            }
            if raw.staff.is_empty() {
                self.problem(
                    &format!("{key}.staff"),
                    "nobody is on this shift",
                    "list the staff ids on duty, e.g. staff = [\"zhang\"]",
                );
            }
            let from = self.time(&format!("{key}.from"), &raw.from);
            let to = self.time(&format!("{key}.to"), &raw.to);
            for (s, id) in raw.staff.iter().enumerate() {
                refs.push((format!("{key}.staff[{s}]"), id.clone()));
            }
            if let (Some(from), Some(to)) = (from, to) {
                shifts.push(Shift {
                    days,
                    from,
                    to,
                    staff: raw.staff,
                });
            }
        }
        shifts
    }

    fn time(&mut self, key: &str, raw: &str) -> Option<Time> {
        let t = parse_hh_mm(raw);
        if t.is_none() {
            self.problem(
                key,
                format!("{raw:?} is not a time of day"),
                "write local 24-hour time as \"HH:MM\", e.g. \"08:00\" or \"20:30\"",
            );
        }
        t
    }

    fn residents(
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

fn is_topic_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn parse_day(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// Exactly `HH:MM`, 24-hour.
fn parse_hh_mm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

/// `mqtt://host:port` or `mqtts://host:port` (port defaults to 1883 / 8883); IPv6 in brackets.
fn parse_broker_url(url: &str) -> Result<(String, u16, bool), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err("it must start with mqtt:// or mqtts://".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '@']) {
        return Err("it must be only a host and a port, with no path or user".into());
    }
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or("an IPv6 address lacks its ']'")?;
        (h, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = match port {
        None => {
            if tls {
                8883
            } else {
                1883
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("the port {p:?} is not a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port, tls))
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
fn closest<'a, S: AsRef<str>>(word: &str, candidates: &'a [S]) -> Option<&'a str> {
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
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883, false))
        );
        assert_eq!(
            parse_broker_url("mqtts://b.example"),
            Ok(("b.example".into(), 8883, true))
        );
        assert_eq!(
            parse_broker_url("mqtt://[::1]:1884"),
            Ok(("::1".into(), 1884, false))
        );
        assert!(parse_broker_url("tcp://x:1").is_err());
        assert!(parse_broker_url("mqtt://:1883").is_err());
        assert!(parse_broker_url("mqtt://x:99999").is_err());
    }

    #[test]
    fn times_are_strict() {
        assert_eq!(parse_hh_mm("08:00"), Time::new(8, 0, 0, 0).ok());
        assert_eq!(parse_hh_mm("23:59"), Time::new(23, 59, 0, 0).ok());
        for bad in ["8:00", "24:00", "12:60", "0800", "08:00:00", "ab:cd"] {
            assert_eq!(parse_hh_mm(bad), None, "{bad}");
        }
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
