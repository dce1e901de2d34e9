//! `bandgate demo`: the whole life of one SOS alert on this machine, without radio or outside
//! broker, shown as the duty phones receive it.
//!
//! The example community (`config/bandgate.toml` and `keys.toml`, compiled in) is written to a
//! fresh directory with short timers; simulated bands (sealed with the real keys) heartbeat and
//! one presses SOS; the real daemon (`daemon::run`) runs in this process against a broker on a
//! loopback port (`broker`); and `phones` subscribes as the duty phones do, prints what each
//! receives and answers for the staff.

mod broker;
pub mod mosquitto;
mod phones;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

pub use broker::{BrokerChoice, NO_BROKER_HELP};

use crate::adapters::mqtt::Topics;
use crate::adapters::simulate::SimulateSettings;
use crate::config::Config;
use crate::engine::BandEvent;

const EXAMPLE_CONFIG: &str = include_str!("../../config/bandgate.toml");
const EXAMPLE_KEYS: &str = include_str!("../../config/keys.toml");

/// The demo's timers: the whole alert fits in well under a minute.
pub const ACK_TIMEOUT: &str = "6s";
pub const RENOTIFY_EVERY: &str = "3s";
pub const RESOLVED_RETENTION: &str = "5s";
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// The demo gives up (exit 1) if the alert has not been cleared this long after the SOS.
const GIVE_UP_AFTER: Duration = Duration::from_secs(90);
/// ... or this long, once a person on the duty console took the alert over.
const GIVE_UP_WITH_A_PERSON: Duration = Duration::from_secs(15 * 60);
/// The password the demo's console links carry (the demo's broker takes anyone).
const DEMO_PASSWORD: &str = "demo";

#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub broker: BrokerChoice,
    /// `zh-CN` or `en`; `None` keeps the example's (zh-CN).
    pub locale: Option<String>,
    /// When the scripted band presses SOS, after the start.
    pub sos_after: Duration,
}

/// How the demo ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The alert went through every state and its retained copy was cleared.
    Complete,
    /// Ctrl-C.
    Interrupted,
}

/// The demo's directory: config, keys, state and logs, kept after the run for reading.
pub fn prepare_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("bandgate-demo-{}", std::process::id()));
    if dir.exists() {
        // A directory of an earlier process with the same pid: its state is not ours.
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // The key file's directory must not be group-writable (a umask of 002 would make it so).
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(dir)
}

/// The log file the daemon writes to during the demo (the terminal is the phones').
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("bandgate.log")
}

/// Runs the demo in `dir` (from `prepare_dir`) until the alert is cleared or Ctrl-C.
pub fn run(args: DemoArgs, dir: &Path) -> anyhow::Result<Ending> {
    let broker = broker::Broker::start(args.broker, dir)?;
    let web_port = mosquitto::free_port()?;
    let cfg = write_community(dir, &broker, web_port, args.locale.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ending = runtime.block_on(run_async(cfg, &broker, dir, args.sos_after));
    drop(broker);
    ending
}

async fn run_async(
    cfg: Config,
    broker: &broker::Broker,
    dir: &Path,
    sos_after: Duration,
) -> anyhow::Result<Ending> {
    let topics = Topics::new(cfg.mqtt.topic_prefix.clone());
    let band = sos_band(&cfg).context("the example community has no resident with a band")?;
    intro(&cfg, broker, dir, band, sos_after);

    // The phones subscribe before the gateway starts, so they miss nothing.
    let phones = phones::Phones::connect(&cfg, topics.clone(), broker.port).await?;

    let settings = SimulateSettings {
        heartbeat_every: HEARTBEAT_EVERY,
        random_alarm_every: None,
        script: vec![(sos_after, band, BandEvent::Sos)],
        ..SimulateSettings::new(
            cfg.setup.residents.keys().copied().collect(),
            cfg.ble.company_id,
        )
    };
    let opts = crate::daemon::RunOptions {
        simulate: Some(settings),
        console_mqtt_version: Some(broker.ws_mqtt_version),
        ..Default::default()
    };
    let person = phones.person_took_over();
    let give_up = async move {
        tokio::time::sleep(sos_after + GIVE_UP_AFTER).await;
        let until = tokio::time::Instant::now() + GIVE_UP_WITH_A_PERSON;
        while person.load(std::sync::atomic::Ordering::Relaxed)
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut daemon = tokio::spawn(crate::daemon::run(cfg, opts, async {
        let _ = stop_rx.await;
    }));

    let outcome = tokio::select! {
        r = phones.run() => r.map(Some),
        r = &mut daemon => Err(match r {
            Ok(Ok(())) => anyhow::anyhow!("the gateway stopped by itself"),
            Ok(Err(e)) => e.context("the gateway failed"),
            Err(e) => anyhow::anyhow!("the gateway panicked: {e}"),
        }),
        _ = give_up => Err(anyhow::anyhow!(
            "the alert was not through within {} s of the SOS; see the log {}",
            GIVE_UP_AFTER.as_secs(),
            log_path(dir).display()
        )),
        _ = tokio::signal::ctrl_c() => Ok(None),
    };
    let _ = stop_tx.send(());
    if !daemon.is_finished() {
        // The daemon's graceful stop waits for the broker to take the outbox (a few seconds
        // at most).
        let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    }
    match outcome? {
        Some(summary) => {
            summary.print();
            if summary.complete() {
                Ok(Ending::Complete)
            } else {
                anyhow::bail!("the alert did not go through every state")
            }
        }
        None => {
            println!("\ninterrupted (Ctrl-C)");
            Ok(Ending::Interrupted)
        }
    }
}

/// The resident whose band presses SOS: the first with a team, so that tier 2 pages someone
/// besides tier 1.
fn sos_band(cfg: &Config) -> Option<u32> {
    let residents = &cfg.setup.residents;
    residents
        .values()
        .find(|r| !r.team.is_empty())
        .or_else(|| residents.values().next())
        .map(|r| r.device_id)
}

fn intro(cfg: &Config, broker: &broker::Broker, dir: &Path, band: u32, sos_after: Duration) {
    let resident = cfg
        .setup
        .resident(band)
        .map(|r| r.name.as_str())
        .unwrap_or("?");
    let prefix = &cfg.mqtt.topic_prefix;
    println!("bandgate demo: simulated wristbands, the real gateway, and the duty phones' view");
    println!(
        "  community  {} residents, {} staff (config/bandgate.toml) -> {}",
        cfg.setup.residents.len(),
        cfg.setup.staff.len(),
        cfg.path.display()
    );
    println!("  broker     {} on 127.0.0.1:{}", broker.name, broker.port);
    println!(
        "  watch      mosquitto_sub -h 127.0.0.1 -p {} -t 'bandgate/#' -v",
        broker.port
    );
    println!("  logs       {}", log_path(dir).display());
    println!(
        "  timers     tier 1 and tier 2 wait {ACK_TIMEOUT} each for an ack, reminders every {RENOTIFY_EVERY}, a resolved alert stays {RESOLVED_RETENTION}"
    );
    println!(
        "  script     {} bands heartbeat every {} s; {resident}'s band ({band}) presses SOS after {} s;",
        cfg.setup.residents.len(),
        HEARTBEAT_EVERY.as_secs(),
        sos_after.as_secs()
    );
    println!(
        "             nobody on tier 1 answers; a tier-2 person acks, goes on scene, resolves"
    );
    println!(
        "  phones     subscribed to {prefix}/notify/# and {prefix}/alerts/# (and devices/+/state)"
    );
    if let Some(web) = &cfg.web {
        let port = web.listen.port();
        println!(
            "  console    the duty page: http://127.0.0.1:{port}/ (MQTT {} over WebSockets on port {})",
            if broker.ws_mqtt_version == 5 { "5" } else { "3.1.1" },
            broker.ws_port
        );
        for staff in cfg.setup.staff.values() {
            println!(
                "             sign in as {} ({}): {}",
                staff.name,
                staff.id,
                super::console_link::link("http", "127.0.0.1", port, &staff.id, DEMO_PASSWORD)
            );
        }
        println!(
            "             open a link, tap 开始值班: it rings when its person is paged. Answer there and the"
        );
        println!(
            "             scripted phones step back. More time before the SOS: demo --sos-after 60"
        );
    }
    println!();
}

/// Writes the example community with the demo's broker, state directory and short timers,
/// and loads it as the daemon would.
fn write_community(
    dir: &Path,
    broker: &broker::Broker,
    web_port: u16,
    locale: Option<&str>,
) -> anyhow::Result<Config> {
    let port = broker.port;
    use std::os::unix::fs::PermissionsExt;

    let mut doc: toml::Table = EXAMPLE_CONFIG
        .parse()
        .context("the compiled-in example config is not TOML")?;
    let s = |v: &str| toml::Value::String(v.to_string());
    doc.insert("state_dir".into(), s("state"));
    if let Some(locale) = locale {
        doc.insert("locale".into(), s(locale));
    }
    let mut section = |name: &str, entries: Vec<(&str, toml::Value)>| {
        let table = doc
            .entry(name.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let toml::Value::Table(t) = table {
            for (k, v) in entries {
                t.insert(k.to_string(), v);
            }
        }
    };
    section("ble", vec![("source", s("simulate"))]);
    section(
        "mqtt",
        vec![("url", s(&format!("mqtt://127.0.0.1:{port}")))],
    );
    section(
        "alerts",
        vec![("resolved_retention", s(RESOLVED_RETENTION))],
    );
    section(
        "escalation",
        vec![
            (
                "ack_timeouts",
                toml::Value::Array(vec![s(ACK_TIMEOUT), s(ACK_TIMEOUT)]),
            ),
            ("renotify_every", s(RENOTIFY_EVERY)),
            ("repeat_every", s(RENOTIFY_EVERY)),
        ],
    );
    section(
        "web",
        vec![
            ("listen", s(&format!("127.0.0.1:{web_port}"))),
            (
                "broker_url",
                s(&format!("ws://{{host}}:{}", broker.ws_port)),
            ),
        ],
    );
    let text = format!(
        "# Written by `bandgate demo` from config/bandgate.toml: simulated bands, the demo's\n\
         # broker, state in ./state, short timers.\n\n{}",
        toml::to_string(&doc).context("writing the demo config")?
    );
    let path = dir.join("bandgate.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let keys = dir.join("keys.toml");
    std::fs::write(&keys, EXAMPLE_KEYS).with_context(|| format!("writing {}", keys.display()))?;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600))?;
    crate::config::load(&path).map_err(|problems| {
        anyhow::anyhow!(
            "the demo's configuration {} is refused:\n{problems}",
            path.display()
        )
    })
}

/// `bandgate demo`: 0 once the alert went through every state, 130 on Ctrl-C, 1 otherwise.
pub fn demo(args: DemoArgs) -> Result<super::Done, super::Failure> {
    let failed = |e: anyhow::Error| super::Failure::Failed(format!("bandgate demo: {e:#}"));
    let dir = prepare_dir().map_err(failed)?;
    // The terminal is the phones' view; the gateway logs to a file.
    let log = log_path(&dir);
    match std::fs::File::create(&log) {
        Ok(file) => {
            // rumqttd logs every ordinary disconnect at error: off unless RUST_LOG asks.
            let filter =
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,bandgate=info,rumqttd=off")
                });
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        Err(e) => eprintln!(
            "bandgate demo: cannot write {} ({e}); no logs",
            log.display()
        ),
    }
    match run(args, &dir).map_err(failed)? {
        Ending::Complete => Ok(super::Done::Ok),
        Ending::Interrupted => Ok(super::Done::Interrupted),
    }
}
