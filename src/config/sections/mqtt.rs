//! `[mqtt]`: the broker, the gateway's credentials, the topic prefix and how often state is
//! re-published. The broker's URL is parsed here once, into what the MQTT link connects to.

use std::path::Path;

use serde::Deserialize;

use crate::adapters::mqtt::Broker;
use crate::config::checked::Mqtt;
use crate::config::diagnose::Check;

/// `url`: Mosquitto on the gateway itself.
pub const URL: &str = "mqtt://127.0.0.1:1883";
/// The port of an `mqtt://` URL that names none.
pub const PORT: u16 = 1883;
/// The port of an `mqtts://` URL that names none.
pub const TLS_PORT: u16 = 8883;
/// `topic_prefix`: `{site_id}` is replaced by the site's id.
pub const TOPIC_PREFIX: &str = "bandgate/{site_id}";
pub const STATUS_INTERVAL: &str = "60s";
pub const DEVICE_STATE_INTERVAL: &str = "60s";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawMqtt {
    url: Option<String>,
    username: Option<String>,
    password_file: Option<String>,
    ca_file: Option<String>,
    topic_prefix: Option<String>,
    status_interval: Option<String>,
    device_state_interval: Option<String>,
}

impl Check {
    pub(in crate::config) fn mqtt(&mut self, raw: RawMqtt, site_id: &str) -> Option<Mqtt> {
        let url = raw.url.unwrap_or_else(|| URL.to_string());
        let broker = match parse_broker_url(&url) {
            Ok(b) => Some(b),
            Err(why) => {
                self.problem(
                    "mqtt.url",
                    format!("{url:?} is not a broker address: {why}"),
                    format!("write mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS, e.g. {URL:?}"),
                );
                None
            }
        };
        let password_file = raw.password_file.as_deref().map(|p| self.path(p));
        let password = password_file.as_deref().and_then(|p| self.password(p));
        if password_file.is_some() && raw.username.is_none() {
            self.problem(
                "mqtt.username",
                "password_file is set but username is not",
                "add username = \"<the gateway's MQTT user>\" under [mqtt]",
            );
        }
        let ca_file = raw.ca_file.as_deref().map(|p| self.path(p));
        if let Some(p) = &ca_file {
            self.ca_file(p, broker.as_ref().map(|b| b.tls));
        }
        let topic_prefix = raw
            .topic_prefix
            .unwrap_or_else(|| TOPIC_PREFIX.replace("{site_id}", site_id));
        self.topic_prefix(&topic_prefix);
        let status_interval = self.duration(
            "mqtt.status_interval",
            raw.status_interval.as_deref(),
            STATUS_INTERVAL,
        );
        let device_state_interval = self.duration(
            "mqtt.device_state_interval",
            raw.device_state_interval.as_deref(),
            DEVICE_STATE_INTERVAL,
        );
        Some(Mqtt {
            broker: broker?,
            username: raw.username,
            password,
            password_file,
            ca_file,
            topic_prefix,
            status_interval,
            device_state_interval,
        })
    }

    /// The password in `path`, surrounding whitespace trimmed.
    fn password(&mut self, path: &Path) -> Option<String> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(s) if s.trim().is_empty() => {
                self.problem(
                    "mqtt.password_file",
                    format!("{shown} is empty"),
                    "write the gateway's MQTT password into it, on one line",
                );
                None
            }
            Ok(s) => Some(s.trim().to_string()),
            Err(e) => {
                self.problem(
                    "mqtt.password_file",
                    format!("cannot read {shown}: {e}"),
                    "check the path and that the bandgate user may read the file",
                );
                None
            }
        }
    }

    /// `tls`: whether the url asks for TLS (`None`: the url is wrong).
    fn ca_file(&mut self, path: &Path, tls: Option<bool>) {
        if !path.is_file() {
            let shown = path.display().to_string();
            self.problem(
                "mqtt.ca_file",
                format!("the CA certificate {shown} does not exist"),
                "correct the path, or remove ca_file to use the system's certificates",
            );
        } else if tls == Some(false) {
            self.problem(
                "mqtt.ca_file",
                "a CA certificate is given but the url is mqtt:// (no TLS)",
                "use mqtts:// in url, or remove ca_file",
            );
        }
    }

    fn topic_prefix(&mut self, prefix: &str) {
        if prefix.is_empty()
            || prefix.contains(['+', '#'])
            || prefix.starts_with('/')
            || prefix.ends_with('/')
        {
            self.problem(
                "mqtt.topic_prefix",
                format!("{prefix:?} is not a topic prefix"),
                "use topic levels without '+' or '#' and no leading or trailing '/', e.g. \"bandgate/guanghuiyuan\"",
            );
        }
    }
}

/// `mqtt://host:port` or `mqtts://host:port` (port defaults to 1883 / 8883); IPv6 in brackets.
/// The one parser of a broker URL: the MQTT link connects to what it returns.
pub fn parse_broker_url(url: &str) -> Result<Broker, String> {
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
        None if tls => TLS_PORT,
        None => PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("the port {p:?} is not a number from 1 to 65535")),
        },
    };
    Ok(Broker {
        url: url.to_string(),
        host: host.to_string(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> Result<(String, u16, bool), String> {
        parse_broker_url(url).map(|b| (b.host, b.port, b.tls))
    }

    #[test]
    fn broker_urls() {
        let p = parts;
        assert_eq!(
            p("mqtt://127.0.0.1:1883"),
            Ok(("127.0.0.1".into(), 1883, false))
        );
        assert_eq!(
            p("mqtt://broker.local"),
            Ok(("broker.local".into(), 1883, false))
        );
        assert_eq!(p("mqtts://b.example"), Ok(("b.example".into(), 8883, true)));
        assert_eq!(p("mqtt://[::1]:1884"), Ok(("::1".into(), 1884, false)));
        assert_eq!(p("mqtts://[::1]:8884/"), Ok(("::1".into(), 8884, true)));
        assert!(p("tcp://x:1").is_err());
        assert!(p("mqtt://:1883").is_err());
        assert!(p("mqtt://x:99999").is_err());
        assert!(p("mqtt://host/path").is_err());
        assert_eq!(
            parse_broker_url("mqtts://b.example/").map(|b| b.url),
            Ok("mqtts://b.example/".to_string())
        );
    }
}
