//! `[web]`: the duty console's listener (plain HTTP or HTTPS) and the broker address the page
//! connects to. Without the section no console is served.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::config::checked::{ConsoleTls, Web};
use crate::config::diagnose::Check;

/// `listen`: every address of the gateway, port 8080.
pub const LISTEN: &str = "0.0.0.0:8080";
/// `broker_url`: Mosquitto's WebSocket listener on the host the phone loaded the page from.
pub const BROKER_URL: &str = "ws://{host}:9001";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawWeb {
    listen: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    broker_url: Option<String>,
}

impl Check {
    pub(in crate::config) fn web(&mut self, raw: RawWeb) -> Option<Web> {
        let listen_text = raw.listen.unwrap_or_else(|| LISTEN.to_string());
        let listen = match listen_text.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    "web.listen",
                    format!("{listen_text:?} is not an address and port"),
                    format!("write ADDRESS:PORT, e.g. {LISTEN:?} (every address) or \"192.168.1.10:8080\" (the centre's LAN only)"),
                );
                None
            }
        };
        let tls = match (raw.cert_file.as_deref(), raw.key_file.as_deref()) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = self.path(cert);
                let key = self.path(key);
                self.readable("web.cert_file", &cert, "the console's certificate (PEM)");
                self.readable("web.key_file", &key, "the console's private key (PEM)");
                Some(ConsoleTls { cert, key })
            }
            (Some(_), None) => {
                self.problem(
                    "web.key_file",
                    "cert_file is set but key_file is not: HTTPS needs both",
                    "add key_file = \"/etc/bandgate/tls/console.key\", or remove cert_file for plain HTTP",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(
                    "web.cert_file",
                    "key_file is set but cert_file is not: HTTPS needs both",
                    "add cert_file = \"/etc/bandgate/tls/console.pem\", or remove key_file for plain HTTP",
                );
                None
            }
        };
        let broker_url = raw.broker_url.unwrap_or_else(|| BROKER_URL.to_string());
        let scheme_ok = broker_url.starts_with("ws://") || broker_url.starts_with("wss://");
        if !scheme_ok || broker_url.len() <= "wss://".len() {
            self.problem(
                "web.broker_url",
                format!("{broker_url:?} is not a WebSocket address"),
                format!("write ws://HOST:PORT (or wss:// with TLS), e.g. {BROKER_URL:?}; {{host}} is the host name the phone opened the console with"),
            );
        } else if tls.is_some() && broker_url.starts_with("ws://") {
            // Browsers refuse ws:// from a page loaded over HTTPS (mixed content).
            self.problem(
                "web.broker_url",
                format!("{broker_url:?} is plain ws:// but the console is served over HTTPS: the phone's browser refuses to connect (mixed content)"),
                "use wss:// with a TLS WebSocket listener in Mosquitto, or serve the console without cert_file/key_file",
            );
        }
        Some(Web {
            listen: listen?,
            tls,
            broker_url,
        })
    }

    /// A file the daemon must read at start.
    fn readable(&mut self, key: &str, path: &Path, what: &str) {
        if let Err(e) = std::fs::File::open(path) {
            self.problem(
                key,
                format!("{what} {} cannot be read: {e}", path.display()),
                "correct the path, or make the file readable by the bandgate user",
            );
        }
    }
}
