//! The demo's MQTT broker on a free loopback port: rumqttd inside the process (feature `demo`)
//! or a `mosquitto` child with its own config file in the demo's directory.

use std::path::Path;

use anyhow::bail;
#[cfg(feature = "demo")]
use anyhow::Context;

use super::mosquitto::{self, Mosquitto};

/// Which broker `bandgate demo` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerChoice {
    /// The embedded one if this build has it (feature `demo`), else mosquitto.
    Auto,
    /// rumqttd inside this process (needs a build with `--features demo`).
    Embedded,
    /// A `mosquitto` binary from PATH (or /usr/sbin), started with its own config.
    Mosquitto,
}

/// A running broker; a mosquitto child is killed on drop. The embedded broker's threads end
/// with the process (rumqttd has no stop).
pub struct Broker {
    pub port: u16,
    /// The WebSocket listener the duty console connects to.
    pub ws_port: u16,
    /// The MQTT version its WebSocket listener speaks: 5 (Mosquitto) or 4 (rumqttd's speaks
    /// only 3.1.1).
    pub ws_mqtt_version: u8,
    /// What the user is told: "embedded (rumqttd)" or the mosquitto path.
    pub name: String,
    /// The mosquitto child (killed on drop); `None` for the embedded broker.
    _mosquitto: Option<Mosquitto>,
}

/// How to get a broker when this build has none and mosquitto is not installed.
pub const NO_BROKER_HELP: &str = "the demo needs an MQTT broker: this build has none inside it \
and mosquitto is not installed (not on PATH, not in /usr/sbin); either
  - run the demo with its embedded broker:  cargo run --release --features demo -- demo
  - or install Mosquitto:                    sudo apt install mosquitto";

impl Broker {
    pub fn start(choice: BrokerChoice, dir: &Path) -> anyhow::Result<Broker> {
        match choice {
            BrokerChoice::Embedded => embedded(),
            BrokerChoice::Mosquitto => mosquitto(dir),
            BrokerChoice::Auto if cfg!(feature = "demo") => embedded(),
            BrokerChoice::Auto => match mosquitto::find() {
                Some(_) => mosquitto(dir),
                None => bail!("{NO_BROKER_HELP}"),
            },
        }
    }
}

/// The largest packet the demo's broker takes from any client: the shipped Mosquitto
/// config's `max_packet_size`, well under what the gateway reads.
const MAX_PACKET: usize = 256 * 1024;
const _: () = assert!(MAX_PACKET <= crate::adapters::mqtt::MAX_INCOMING_PACKET);

fn mosquitto(dir: &Path) -> anyhow::Result<Broker> {
    // `max_packet_size`: as in config/mosquitto.conf, no client may publish what the
    // gateway cannot read (mqtt::MAX_INCOMING_PACKET is larger).
    // The console's WebSocket listener: Mosquitto 2.0's ignores an address after the port, so
    // it is bound to the loopback interface by name (the demo's broker takes anyone).
    let ws_port = mosquitto::free_port()?;
    let child = Mosquitto::start(dir, |port| {
        format!(
            "listener {port} 127.0.0.1\nlistener {ws_port}\nprotocol websockets\nbind_interface lo\n\
             allow_anonymous true\npersistence false\nmax_packet_size {MAX_PACKET}\n"
        )
    })?;
    mosquitto::wait_for_port(ws_port, || Ok(()))?;
    Ok(Broker {
        ws_port,
        ws_mqtt_version: 5,
        port: child.port(),
        name: format!("mosquitto ({})", child.binary().display()),
        _mosquitto: Some(child),
    })
}

#[cfg(not(feature = "demo"))]
fn embedded() -> anyhow::Result<Broker> {
    bail!("this build has no embedded broker; build it with: cargo run --release --features demo -- demo")
}

#[cfg(feature = "demo")]
fn embedded() -> anyhow::Result<Broker> {
    use std::collections::HashMap;

    let port = mosquitto::free_port()?;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        // rumqttd reads no packet larger than this: like `max_packet_size` in
        // config/mosquitto.conf, so that no phone can publish what the gateway cannot read
        // (a packet over mqtt::MAX_INCOMING_PACKET drops the gateway's connection).
        max_payload_size: MAX_PACKET,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "demo".into(),
        listen: ([127, 0, 0, 1], port).into(),
        tls: None,
        next_connection_delay_ms: 1,
        connections: connections.clone(),
    };
    // The duty console's listener (MQTT 3.1.1 over WebSockets: rumqttd has no v5 there).
    let ws_port = mosquitto::free_port()?;
    let ws = rumqttd::ServerSettings {
        name: "demo-ws".into(),
        listen: ([127, 0, 0, 1], ws_port).into(),
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("demo".to_string(), server)])),
        ws: Some(HashMap::from([("demo-ws".to_string(), ws)])),
        ..Default::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            // Returns only when its servers ended (e.g. the port could not be bound).
            let why = match broker.start() {
                Ok(()) => "the embedded broker stopped".to_string(),
                Err(e) => format!("the embedded broker failed: {e}"),
            };
            let _ = done_tx.send(why);
        })
        .context("starting the embedded broker's thread")?;
    mosquitto::wait_for_port(port, || match done_rx.try_recv() {
        Ok(why) => bail!("{why}"),
        Err(_) => Ok(()),
    })?;
    mosquitto::wait_for_port(ws_port, || Ok(()))?;
    Ok(Broker {
        port,
        ws_port,
        ws_mqtt_version: 4,
        name: "embedded (rumqttd)".into(),
        _mosquitto: None,
    })
}
