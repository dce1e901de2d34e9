//! `[fallback]`: reaching a person whose phone did not confirm a page, by SMS and ring calls
//! through a 4G modem (ModemManager); and `[[staff]] channels`, how each person can be
//! reached. Without the section no SMS or call is ever made.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::adapters::webhook::WebhookUrl;
use crate::config::diagnose::{closest, Check};
use crate::engine::{Channel, Channels, Fallback, Staff, CALL_GAP};

pub const AFTER: &str = "45s";
pub const STEPS: [&str; 3] = ["sms", "call", "call"];
pub const STEP_EVERY: [&str; 2] = ["60s", "120s"];
pub const MODEM: &str = "auto";
pub const RING_FOR: &str = "40s";
/// `[[staff]] channels` when not given.
pub const CHANNELS: [&str; 3] = ["mqtt", "sms", "call"];
/// At most this many steps: each is an SMS or a call to one person about one alert.
pub const MAX_STEPS: usize = 8;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawFallback {
    after: Option<String>,
    steps: Option<Vec<String>>,
    step_every: Option<Vec<String>>,
    modem: Option<String>,
    ring_for: Option<String>,
    webhook_url: Option<String>,
    webhook_secret_file: Option<String>,
}

/// Which modem the fallback uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModemChoice {
    /// The first modem ModemManager lists.
    Auto,
    /// No modem: every SMS and call step is recorded as failed (the ladder is still kept,
    /// so the alert document shows who could not be reached).
    None,
    /// A modem's D-Bus object path, e.g. `/org/freedesktop/ModemManager1/Modem/0`.
    Path(String),
}

/// `[fallback]`, checked: the engine's policy and the adapters' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackConfig {
    pub policy: Fallback,
    pub modem: ModemChoice,
    pub webhook: Option<Webhook>,
}

/// `webhook_url` and the key of `webhook_secret_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: WebhookUrl,
    pub secret: Secret,
}

/// A shared key: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Check {
    /// `[[staff]] channels`: the default when absent; unknown names and an empty list are
    /// problems.
    pub(in crate::config) fn channels(&mut self, key: &str, raw: Option<&[String]>) -> Channels {
        let Some(list) = raw else {
            return Channels::default();
        };
        let mut c = Channels {
            mqtt: false,
            sms: false,
            call: false,
        };
        for (i, name) in list.iter().enumerate() {
            match name.as_str() {
                "mqtt" => c.mqtt = true,
                "sms" => c.sms = true,
                "call" => c.call = true,
                other => {
                    let hint = closest(other, &CHANNELS)
                        .map(|n| format!(" (did you mean {n:?}?)"))
                        .unwrap_or_default();
                    self.problem(
                        &format!("{key}[{i}]"),
                        format!("unknown channel {other:?}{hint}"),
                        "use \"mqtt\" (the duty app), \"sms\" and \"call\", e.g. channels = [\"sms\", \"call\"] for a guardian without the app",
                    );
                }
            }
        }
        if list.is_empty() {
            self.problem(
                key,
                "the list is empty, so this person could never be reached",
                "leave channels out (the app, SMS and calls), or e.g. channels = [\"sms\", \"call\"]",
            );
        }
        c
    }

    /// `[fallback]` (`None` when the section is absent), with the staff's channels checked
    /// against it: a person without the app must be reachable by the ladder.
    pub(in crate::config) fn fallback(
        &mut self,
        raw: Option<RawFallback>,
        staff: &BTreeMap<String, Staff>,
        channels: StaffChannels,
    ) -> Option<FallbackConfig> {
        let Some(raw) = raw else {
            for (id, (i, c)) in &channels {
                if !c.mqtt {
                    self.problem(
                        &format!("staff[{i}].channels"),
                        format!("{id:?} has no \"mqtt\" channel, but there is no [fallback] section, so no SMS or call is ever made: this person would never be reached"),
                        "add a [fallback] section (see config/bandgate.toml), or add \"mqtt\" to their channels",
                    );
                }
            }
            return None;
        };
        let after = self.duration("fallback.after", raw.after.as_deref(), AFTER);
        let ring_for = self.duration("fallback.ring_for", raw.ring_for.as_deref(), RING_FOR);
        let given = raw.steps.as_ref().map_or(STEPS.len(), Vec::len);
        let steps = self.steps(raw.steps);
        let step_every = self.step_every(raw.step_every, given);
        let modem = self.modem(raw.modem.as_deref());
        let webhook = self.webhook(raw.webhook_url, raw.webhook_secret_file, &steps);
        self.reachable(staff, &channels, &steps);
        let channels = channels
            .into_iter()
            .filter(|(_, (_, c))| *c != Channels::default())
            .map(|(id, (_, c))| (id, c))
            .collect();
        Some(FallbackConfig {
            policy: Fallback {
                after,
                steps,
                step_every,
                ring_for,
                call_gap: CALL_GAP,
                channels,
            },
            modem,
            webhook,
        })
    }

    /// `webhook_url` and `webhook_secret_file`: both or neither; the URL parsed, the secret
    /// read (not world-readable); a `"webhook"` step needs them, and they want such a step.
    fn webhook(
        &mut self,
        url: Option<String>,
        secret_file: Option<String>,
        steps: &[Channel],
    ) -> Option<Webhook> {
        let uses = steps.contains(&Channel::Webhook);
        match (&url, &secret_file) {
            (None, None) => {
                if uses {
                    self.problem(
                        "fallback.steps",
                        "a \"webhook\" step, but no webhook_url: the step could never be taken",
                        "add webhook_url and webhook_secret_file under [fallback], or remove the step",
                    );
                }
                return None;
            }
            (Some(_), None) => {
                self.problem(
                    "fallback.webhook_secret_file",
                    "webhook_url is set but webhook_secret_file is not: requests would go unsigned",
                    "add webhook_secret_file = \"/etc/bandgate/webhook-secret\" (the shared HMAC key, one line, chmod 640 root:bandgate)",
                );
                return None;
            }
            (None, Some(_)) => {
                self.problem(
                    "fallback.webhook_url",
                    "webhook_secret_file is set but webhook_url is not",
                    "add webhook_url = \"https://platform.example/bandgate/fallback\", or remove webhook_secret_file",
                );
                return None;
            }
            (Some(_), Some(_)) => {}
        }
        let (url, secret_file) = (url?, secret_file?);
        let parsed = match WebhookUrl::parse(url.trim()) {
            Ok(u) => Some(u),
            Err(why) => {
                self.problem(
                    "fallback.webhook_url",
                    format!("{url:?} is not a webhook address: {why}"),
                    "write the platform's address, e.g. \"https://platform.example/bandgate/fallback\"",
                );
                None
            }
        };
        let secret = self.webhook_secret(&secret_file);
        if !uses {
            self.warning(
                "fallback.webhook_url",
                "set, but no step of the ladder is \"webhook\": nothing is ever posted",
                "add \"webhook\" to steps, e.g. steps = [\"webhook\", \"call\"]",
            );
        }
        Some(Webhook {
            url: parsed?,
            secret: secret?,
        })
    }

    /// `modem`: "auto", "none" or a ModemManager object path.
    fn modem(&mut self, raw: Option<&str>) -> ModemChoice {
        match raw.unwrap_or(MODEM).trim() {
            "auto" => ModemChoice::Auto,
            "none" => {
                self.warning(
                    "fallback.modem",
                    "\"none\": no SMS or call can be made; every step of the ladder is recorded as failed",
                    "use \"auto\" once a 4G modem is plugged in and ModemManager sees it (mmcli -L)",
                );
                ModemChoice::None
            }
            p if p.starts_with("/org/freedesktop/ModemManager1/Modem/") => {
                ModemChoice::Path(p.to_string())
            }
            other => {
                self.problem(
                    "fallback.modem",
                    format!("{other:?} is neither \"auto\", \"none\" nor a modem's D-Bus path"),
                    "use \"auto\" (the first modem ModemManager lists), or the path `mmcli -L` prints, e.g. \"/org/freedesktop/ModemManager1/Modem/0\"",
                );
                ModemChoice::Auto
            }
        }
    }

    /// Every person must be reachable by the app or by a step of the ladder, and a person the
    /// ladder would text or call needs a phone number.
    fn reachable(
        &mut self,
        staff: &BTreeMap<String, Staff>,
        channels: &StaffChannels,
        steps: &[Channel],
    ) {
        for (id, s) in staff {
            let (i, c) = channels.get(id).copied().unwrap_or_default();
            let reachable = steps.iter().any(|step| c.has(*step));
            if !c.mqtt && !reachable {
                self.problem(
                    &format!("staff[{}].channels", i),
                    format!("{id:?} has no \"mqtt\" channel and none of [fallback] steps' channels: this person would never be reached"),
                    "give them a channel the ladder uses, e.g. channels = [\"sms\", \"call\"]",
                );
            } else if reachable && s.phone.trim().is_empty() {
                if c.mqtt {
                    self.warning(
                        &format!("staff[{}].phone", i),
                        format!("{id:?} has no phone number: the fallback ladder cannot reach them by SMS or call (each step is recorded as failed)"),
                        "add phone = \"138...\", or channels = [\"mqtt\"] if they are reached by the app only",
                    );
                } else {
                    self.problem(
                        &format!("staff[{}].phone", i),
                        format!("{id:?} is reached by SMS or call only, but has no phone number: this person would never be reached"),
                        "add phone = \"138...\"",
                    );
                }
            }
        }
    }

    /// The HMAC key shared with the platform: one line, not readable by every user.
    fn webhook_secret(&mut self, secret_file: &str) -> Option<Secret> {
        let path = self.path(secret_file);
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(s) if s.trim().is_empty() => {
                self.problem(
                    "fallback.webhook_secret_file",
                    format!("{shown} is empty"),
                    "write the key shared with the platform into it, on one line",
                );
                None
            }
            Ok(s) => {
                use std::os::unix::fs::PermissionsExt;
                let world = std::fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o004 != 0)
                    .unwrap_or(false);
                if world {
                    self.problem(
                        "fallback.webhook_secret_file",
                        format!("{shown} is readable by every user: anyone on the gateway could sign requests"),
                        format!("sudo chown root:bandgate {shown} && sudo chmod 640 {shown}"),
                    );
                    None
                } else {
                    Some(Secret(s.trim().as_bytes().to_vec()))
                }
            }
            Err(e) => {
                self.problem(
                    "fallback.webhook_secret_file",
                    format!("cannot read {shown}: {e}"),
                    "check the path and that the bandgate user may read the file",
                );
                None
            }
        }
    }

    fn steps(&mut self, raw: Option<Vec<String>>) -> Vec<Channel> {
        let list = raw.unwrap_or_else(|| STEPS.map(String::from).to_vec());
        if list.is_empty() {
            self.problem(
                "fallback.steps",
                "the list is empty, so the ladder would never reach anyone",
                "give the steps in order, e.g. steps = [\"sms\", \"call\", \"call\"], or remove [fallback]",
            );
        }
        if list.len() > MAX_STEPS {
            self.problem(
                "fallback.steps",
                format!(
                    "{} steps; at most {MAX_STEPS} are accepted (each is an SMS or a call to one person about one alert)",
                    list.len()
                ),
                "give a short ladder, e.g. steps = [\"sms\", \"call\", \"call\"]",
            );
            return Vec::new();
        }
        let mut steps = Vec::new();
        for (i, s) in list.iter().enumerate() {
            match Channel::parse(s) {
                Some(c) => steps.push(c),
                None => {
                    let hint = closest(s, &["sms", "call", "webhook"])
                        .map(|n| format!(" (did you mean {n:?}?)"))
                        .unwrap_or_default();
                    self.problem(
                        &format!("fallback.steps[{i}]"),
                        format!("unknown step {s:?}{hint}"),
                        "each step is \"sms\", \"call\" or \"webhook\", e.g. steps = [\"sms\", \"call\", \"call\"]",
                    );
                }
            }
        }
        steps
    }

    fn step_every(&mut self, raw: Option<Vec<String>>, steps: usize) -> Vec<Duration> {
        let given = raw.is_some();
        let list = raw.unwrap_or_else(|| STEP_EVERY.map(String::from).to_vec());
        let wanted = steps.saturating_sub(1);
        if list.len() != wanted {
            if given || steps != STEPS.len() {
                let fix = if wanted == 0 {
                    "remove step_every: one step needs no gap".to_string()
                } else {
                    format!(
                        "give {wanted} durations, e.g. step_every = [{}]",
                        (0..wanted)
                            .map(|i| format!("{:?}", STEP_EVERY[i.min(1)]))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                self.problem(
                    "fallback.step_every",
                    format!(
                        "{} gaps for {steps} steps; the ladder needs one gap between each two steps, so {wanted}",
                        list.len()
                    ),
                    fix,
                );
            }
            return Vec::new();
        }
        list.iter()
            .enumerate()
            .map(|(i, d)| {
                self.duration(
                    &format!("fallback.step_every[{i}]"),
                    Some(d),
                    STEP_EVERY[i.min(1)],
                )
            })
            .collect()
    }
}

/// Each person's channels and the index of their `[[staff]]` entry (for naming keys).
pub(in crate::config) type StaffChannels = BTreeMap<String, (usize, Channels)>;
