//! The top level of `bandgate.toml`: the site's and gateway's names, language, time zone and
//! where the gateway keeps its files. The sections below it are read on their own.

use std::path::PathBuf;

use config::Value;
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::config::diagnose::{is_topic_word, Check};
use crate::engine::Locale;

/// `locale`: the language of the pages' text.
pub const LOCALE: &str = "zh-CN";
/// `timezone`: the rota's local time.
pub const TIMEZONE: &str = "Asia/Shanghai";
pub const STATE_DIR: &str = "/var/lib/bandgate";
pub const KEYS_FILE: &str = "/etc/bandgate/keys.toml";
/// `control_socket`: where the daemon listens for operator commands (systemd's
/// RuntimeDirectory).
pub const CONTROL_SOCKET: &str = "/run/bandgate/bandgate.sock";

/// The top level as written; sections stay untyped here, each is read on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawTop {
    pub site_id: Option<String>,
    pub gateway_id: Option<String>,
    pub locale: Option<String>,
    pub timezone: Option<String>,
    pub state_dir: Option<String>,
    pub keys_file: Option<String>,
    pub control_socket: Option<String>,
    pub ble: Option<Value>,
    pub mqtt: Option<Value>,
    pub alerts: Option<Value>,
    pub escalation: Option<Value>,
    pub supervision: Option<Value>,
    pub privacy: Option<Value>,
    pub fallback: Option<Value>,
    pub web: Option<Value>,
    pub staff: Option<Vec<Value>>,
    pub rota: Option<Vec<Value>>,
    pub residents: Option<Vec<Value>>,
}

/// The top-level values, checked.
pub(in crate::config) struct Site {
    pub site_id: Option<String>,
    pub gateway_id: Option<String>,
    pub locale: Locale,
    pub tz: TimeZone,
    pub state_dir: PathBuf,
    pub keys_file: PathBuf,
    pub control_socket: PathBuf,
}

impl Check {
    pub(in crate::config) fn site(&mut self, top: &RawTop) -> Site {
        let site_id = self.name("site_id", top.site_id.as_deref(), "guanghuiyuan");
        let gateway_id = self.name("gateway_id", top.gateway_id.as_deref(), "gw-guanghuiyuan-1");
        let locale = match top.locale.as_deref().unwrap_or(LOCALE) {
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
        let tz_name = top.timezone.as_deref().unwrap_or(TIMEZONE);
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
        Site {
            site_id,
            gateway_id,
            locale,
            tz,
            state_dir: self.path(top.state_dir.as_deref().unwrap_or(STATE_DIR)),
            keys_file: self.path(top.keys_file.as_deref().unwrap_or(KEYS_FILE)),
            control_socket: self.path(top.control_socket.as_deref().unwrap_or(CONTROL_SOCKET)),
        }
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
}
