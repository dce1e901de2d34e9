//! The high stage: the checked configuration, in the types the engine and the adapters take
//! (`Setup`, the BLE source with its own settings, the parsed broker), built from the sections
//! once every one of them has been read and every cross-reference checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Value, ValueKind};

use super::diagnose::{closest, Check};
use super::read::{self, ResidentEntries};
use super::sections::fallback::{ModemChoice, RawFallback, StaffChannels, Webhook};
use super::sections::site::RawTop;
use super::{keys, Problem, Problems};
use crate::adapters::mqtt::Broker;
use crate::engine::{Keyring, Rota, Setup, Staff};

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
    pub ble: Ble,
    pub mqtt: Mqtt,
    pub publish_vitals: bool,
    /// `[fallback] modem`; `None` without a `[fallback]` section (no modem is looked for).
    pub modem: Option<ModemChoice>,
    /// `[fallback] webhook_url` with its key.
    pub webhook: Option<Webhook>,
    /// `[web]`: the duty console, served only when the section is present.
    pub web: Option<Web>,
    /// Values that are allowed but outside their recommended range (see `bounds`):
    /// `check-config` lists them, the daemon logs them at start.
    pub warnings: Vec<Problem>,
}

/// `[ble]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ble {
    pub source: Source,
    pub company_id: u16,
    /// The radio's settings: the `bluez` source's, and `bandgate scan`'s whatever the source
    /// (checked, limits included, whatever the source).
    pub radio: Radio,
}

/// How the radio is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Radio {
    /// `None`: the first adapter BlueZ lists.
    pub adapter: Option<String>,
    /// No advertisement from anyone this long: restart the scan (then BlueZ, then exit).
    pub silence_restart: Duration,
    /// Active discovery (the default) or passive scanning through BlueZ's advertisement
    /// monitor (`[ble] scan`).
    pub scan: crate::adapters::ble::ScanMode,
}

/// Where advertisements come from, with what only that source needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The radio, driven as `Ble::radio` says.
    Bluez,
    /// A capture file (or a named pipe fed live).
    Replay { file: PathBuf },
    /// Simulated bands, one per resident.
    Simulate,
}

impl Source {
    /// The name `ble.source` gives it.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Bluez => "bluez",
            Source::Replay { .. } => "replay",
            Source::Simulate => "simulate",
        }
    }
}

/// `[web]`, checked: where the duty console is served and where its page connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Web {
    pub listen: std::net::SocketAddr,
    /// HTTPS when set: only a secure context gets Wake Lock, notifications and an offline cache.
    pub tls: Option<ConsoleTls>,
    /// What the page connects to; `{host}` is replaced (in the page) by the host it was loaded
    /// from.
    pub broker_url: String,
}

/// The console's certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[mqtt]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mqtt {
    /// The broker's URL, parsed once: the link connects to this.
    pub broker: Broker,
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

/// Loads `path`, applies `BANDGATE__*` environment overrides and checks everything; every
/// problem is reported, not only the first.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = read::read_text(path).map_err(|p| Problems(vec![p]))?;
    let doc = read::document(path, &text).map_err(|p| Problems(vec![p]))?;
    let mut check = Check::new(path, doc.from_env);
    let config = build(&mut check, doc.tree, doc.residents);
    match config {
        Some(c) if check.problems.is_empty() => Ok(c),
        _ => Err(Problems(check.problems)),
    }
}

/// The top level, read with its three long lists taken out first, so that reading it (which
/// keeps a copy for retries) does not copy every resident; each entry is read on its own later.
pub(super) fn top(check: &mut Check, mut tree: Value) -> Option<RawTop> {
    if !matches!(tree.kind, ValueKind::Table(_)) {
        check.problem(
            "",
            "the file is not a TOML table",
            "start from config/bandgate.toml",
        );
        return None;
    }
    let mut lists: [Option<Value>; 3] = [None, None, None];
    if let ValueKind::Table(t) = &mut tree.kind {
        for (slot, name) in lists.iter_mut().zip(["staff", "rota", "residents"]) {
            *slot = t.shift_remove(name);
        }
    }
    let mut top: RawTop = check.take("", tree)?;
    let [staff, rota, residents] = lists;
    top.staff = staff.and_then(|v| check.entries("staff", v));
    top.rota = rota.and_then(|v| check.entries("rota", v));
    top.residents = residents.and_then(|v| check.entries("residents", v));
    Some(top)
}

fn build(check: &mut Check, tree: Value, cut: Option<ResidentEntries<'_>>) -> Option<Config> {
    let mut top = top(check, tree)?;
    if let (Some(_), Some(cut)) = (&top.residents, &cut) {
        check.problem(
            "residents",
            format!(
                "residents are given twice: as {} [[residents]] entries and as one value",
                cut.len()
            ),
            "keep only the [[residents]] entries",
        );
    }
    let site = check.site(&top);
    let ble = check.section("ble", top.ble.take());
    let mqtt = check.section("mqtt", top.mqtt.take());
    let alerts = check.section("alerts", top.alerts.take());
    let escalation = check.section("escalation", top.escalation.take());
    let supervision = check.section("supervision", top.supervision.take());
    let privacy = check.section("privacy", top.privacy.take());
    let fallback: Option<RawFallback> = optional(check, "fallback", top.fallback.take());
    let web = optional(check, "web", top.web.take()).map(|raw| check.web(raw));

    let ble = check.ble(ble);
    let mqtt = check.mqtt(mqtt, site.site_id.as_deref().unwrap_or(""));
    let resolved_retention = check.alerts(alerts);
    let mut channels = StaffChannels::new();
    let staff = check.staff(top.staff.unwrap_or_default(), &mut channels);
    let fallback = check.fallback(fallback, &staff, channels);
    // (key, staff id) of every staff id named, checked once all are read.
    let mut refs: Vec<(String, String)> = Vec::new();
    let shifts = check.shifts(top.rota.unwrap_or_default(), &mut refs);
    let escalation = check.escalation(escalation, &mut refs);
    let supervision = check.supervision(supervision);
    let publish_vitals = check.privacy(privacy);

    let keys = keys::load(&site.keys_file)
        .map_err(|p| check.problems.extend(p.0))
        .ok();
    let entries = cut
        .unwrap_or_else(|| ResidentEntries::Values(top.residents.unwrap_or_default().into_iter()));
    let residents = check.residents(entries, &mut refs, keys.as_ref(), &site.keys_file);
    staff_refs(check, &refs, &staff);

    let mqtt = mqtt?;
    let setup = Setup {
        gateway_id: site.gateway_id.clone()?,
        locale: site.locale,
        staff,
        residents,
        rota: Rota {
            tz: site.tz,
            shifts,
        },
        escalation,
        supervision,
        resolved_retention,
        device_state_interval: mqtt.device_state_interval,
        fallback: fallback.as_ref().map(|f| f.policy.clone()),
    };
    Some(Config {
        path: check.file().to_path_buf(),
        site_id: site.site_id?,
        gateway_id: site.gateway_id?,
        state_dir: site.state_dir,
        keys_file: site.keys_file,
        control_socket: site.control_socket,
        setup,
        keys: keys?,
        ble: ble?,
        mqtt,
        publish_vitals,
        modem: fallback.as_ref().map(|f| f.modem.clone()),
        webhook: fallback.and_then(|f| f.webhook),
        web: match web {
            None => None,
            Some(w) => Some(w?),
        },
        warnings: std::mem::take(&mut check.warnings),
    })
}

/// A section that is served only when present (`[fallback]`, `[web]`).
fn optional<T: serde::de::DeserializeOwned + Default>(
    check: &mut Check,
    name: &str,
    value: Option<Value>,
) -> Option<T> {
    value.map(|v| check.section(name, Some(v)))
}

/// Every staff id named (`refs`: key, id) must be listed under `[[staff]]`.
fn staff_refs(check: &mut Check, refs: &[(String, String)], staff: &BTreeMap<String, Staff>) {
    for (key, id) in refs {
        if !staff.contains_key(id) {
            let ids: Vec<&str> = staff.keys().map(String::as_str).collect();
            let hint = closest(id, &ids)
                .map(|near| format!(" (did you mean {near:?}?)"))
                .unwrap_or_default();
            check.problem(
                key,
                format!("staff id {id:?} is not listed under [[staff]]{hint}"),
                format!("add a [[staff]] entry with id = {id:?}, or correct the id"),
            );
        }
    }
}
