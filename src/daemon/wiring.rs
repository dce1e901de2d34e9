//! `run`: turns a checked configuration into the loop's parts — the store, the engine, the
//! broker link, the advertisement source, the control socket — and runs the loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::{clock, Daemon, Inputs, Site, CONTROL_QUEUE};
use crate::adapters::control;
use crate::adapters::lanes::{advert_lanes, AdvertTx};
use crate::adapters::mqtt::{self, LinkEvent, MqttLink, MqttSettings, Topics};
use crate::adapters::store::{Recovered, Store};
use crate::adapters::{ble, modem, replay, simulate, webhook};
use crate::config::{Config, Source};
use crate::daemon::health::StoreHealth;
use crate::engine::{Engine, Intake, Now, Setup};

/// How `run` was asked to start, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replay source: ignore the capture's gaps.
    pub fast_replay: bool,
    /// Simulate source: replaces the default simulation (the demo scripts its SOS here).
    pub simulate: Option<simulate::SimulateSettings>,
    /// The MQTT version the duty console speaks to the broker's WebSocket listener: 5 unless
    /// that listener speaks only 3.1.1 (the demo's embedded broker says 4).
    pub console_mqtt_version: Option<u8>,
}

/// Runs the gateway until `shutdown` completes (graceful) or a source fails for good (error:
/// the process exits non-zero and systemd restarts it).
pub async fn run(
    mut cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started_at = Timestamp::now();
    let (store, engine, health) = restore(&mut cfg)?;
    let topics = Topics::new(cfg.mqtt.topic_prefix.clone());
    let (link, link_events) = connect_broker(&cfg, &topics)?;

    let keys = Arc::new(cfg.keys.clone());
    let (radio_tx, radio) = watch::channel(ble::BleStatus::default());
    let (tx, adverts) = advert_lanes(cfg.ble.company_id, keys.clone());
    let source = spawn_source(&cfg, &opts, &engine, keys, tx, radio_tx)?;
    let (control_tx, control) = mpsc::channel(CONTROL_QUEUE);
    let control_socket = bind_control(&cfg, control_tx);
    if let Some(web) = cfg.web.clone() {
        let version = opts.console_mqtt_version.unwrap_or(5);
        tokio::spawn(crate::adapters::web::serve(
            web,
            console_site(&cfg, version),
        ));
    }
    let site = site(&cfg, topics, started_at);
    tracing::info!(
        gateway_id = site.gateway_id,
        source = cfg.ble.source.name(),
        broker = site.broker,
        bands = site.devices_enrolled,
        "bandgate running"
    );
    let (modem, webhook) = start_fallback(&cfg);
    drop(cfg);
    let inputs = Inputs {
        adverts,
        link: link_events,
        control,
        source,
        radio,
        shutdown: Box::pin(shutdown),
    };
    let result = Daemon::new(engine, store, link, site)
        .with_health(health)
        .with_modem(modem)
        .with_webhook(webhook)
        .run(inputs)
        .await;
    drop(control_socket);
    result
}

/// The operator's socket is a convenience: without it alarms still flow, so a failure to
/// bind is logged, not fatal.
fn bind_control(
    cfg: &Config,
    tx: mpsc::Sender<control::Pending>,
) -> Option<control::ControlSocket> {
    control::ControlSocket::bind(&cfg.control_socket, tx)
        .map_err(|e| {
            tracing::warn!(
                error = format!("{e:#}"),
                "no control socket: bandgate status/alerts/ack will not reach this daemon"
            )
        })
        .ok()
}

/// What the status document and the logs say about this gateway.
fn site(cfg: &Config, topics: Topics, started_at: Timestamp) -> Site {
    let adapter = match &cfg.ble.source {
        Source::Bluez => cfg
            .ble
            .radio
            .adapter
            .clone()
            .unwrap_or_else(|| "first".into()),
        other => other.name().to_string(),
    };
    Site {
        gateway_id: cfg.gateway_id.clone(),
        broker: cfg.mqtt.broker.url.clone(),
        topics,
        publish_vitals: cfg.publish_vitals,
        devices_enrolled: cfg.keys.len(),
        status_interval: cfg.mqtt.status_interval,
        started_at,
        adapter,
        // A radio is not ok until its source says it scans: the source's first report may be
        // "not ok", which equals the watch's initial value and so is never sent as a change.
        adapter_ok: cfg.ble.source != Source::Bluez,
        // Filled in by the source's first report (`radio`).
        scan: "",
    }
}

/// The fallback ladder's modem and webhook: tasks of their own; a missing modem is its
/// warning, never a reason not to start.
fn start_fallback(
    cfg: &Config,
) -> (
    Option<modem::ModemLink>,
    Option<mpsc::Sender<webhook::WebhookJob>>,
) {
    let modem = match (&cfg.modem, &cfg.setup.fallback) {
        (Some(choice), Some(f)) => Some(modem::start(modem::ModemSettings {
            choice: choice.clone(),
            ring_for: f.ring_for,
        })),
        _ => None,
    };
    let webhook = match (&cfg.webhook, &modem) {
        (Some(w), Some(m)) => Some(webhook::start(
            webhook::WebhookSettings {
                url: w.url.clone(),
                secret: w.secret.0.clone(),
                gateway_id: cfg.gateway_id.clone(),
            },
            m.report_tx.clone(),
        )),
        _ => None,
    };
    (modem, webhook)
}

/// What the duty console's page is told about the site; `mqtt_version` 4 where the broker's
/// WebSocket listener speaks only MQTT 3.1.1 (the demo's embedded broker).
pub fn console_site(cfg: &Config, mqtt_version: u8) -> crate::adapters::web::ConsoleSite {
    crate::adapters::web::ConsoleSite {
        broker_url: cfg
            .web
            .as_ref()
            .map(|w| w.broker_url.clone())
            .unwrap_or_default(),
        topic_prefix: cfg.mqtt.topic_prefix.clone(),
        site_id: cfg.site_id.clone(),
        locale: cfg.setup.locale.tag(),
        supervisors: cfg.setup.escalation.supervisors.clone(),
        mqtt_version,
    }
}

/// Opens the durable state whatever the disk holds (what was lost is logged and paged:
/// `health`) and restores the engine from it. The residents move into the engine.
fn restore(cfg: &mut Config) -> anyhow::Result<(Store, Engine, StoreHealth)> {
    let Recovered {
        store,
        snapshot,
        losses,
    } = Store::recover(&cfg.state_dir)?;
    for loss in &losses {
        tracing::error!(state_dir = %cfg.state_dir.display(), lost = loss.short(), "{loss}");
    }
    let health = StoreHealth::at_start(&losses);
    let (now, wall) = clock();
    let restored = snapshot.alerts.len();
    let intake = Intake::new(cfg.ble.company_id, cfg.keys.clone());
    // The residents move into the engine (one copy of 10,000 of them is megabytes).
    let residents = std::mem::take(&mut cfg.setup.residents);
    let mut setup = Setup {
        residents,
        ..cfg.setup.clone()
    };
    test_call_gap(&mut setup);
    let engine = Engine::restore(setup, intake, Now { mono: now, wall }, snapshot);
    tracing::info!(
        state_dir = %cfg.state_dir.display(),
        alerts = restored,
        outbox = store.outbox_len().unwrap_or(0),
        "state restored"
    );
    Ok((store, engine, health))
}

/// The broker link, subscribed to the phones' ack topics and the consoles' presence.
fn connect_broker(
    cfg: &Config,
    topics: &Topics,
) -> anyhow::Result<(MqttLink, mpsc::Receiver<LinkEvent>)> {
    let settings = MqttSettings {
        broker: cfg.mqtt.broker.clone(),
        client_id: cfg.gateway_id.clone(),
        username: cfg.mqtt.username.clone(),
        password: cfg.mqtt.password.clone(),
        ca_file: cfg.mqtt.ca_file.clone(),
        keep_alive: Duration::from_secs(30),
        last_will: mqtt::last_will(topics, &cfg.gateway_id),
    };
    // Every person's ack topic too: after a packet it cannot read, the link subscribes them one
    // by one, so it can name the bad topic and keep the others.
    // And the duty consoles' presence (read, never written).
    let one_by_one = cfg
        .setup
        .staff
        .keys()
        .flat_map(|s| [topics.ack(s), topics.presence_of_staff(s)])
        .collect();
    mqtt::connect_with(
        settings,
        vec![topics.ack_filter(), topics.presence_filter()],
        one_by_one,
    )
}

fn spawn_source(
    cfg: &Config,
    opts: &RunOptions,
    engine: &Engine,
    keys: Arc<crate::engine::Keyring>,
    tx: AdvertTx,
    radio: watch::Sender<ble::BleStatus>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    Ok(match &cfg.ble.source {
        Source::Replay { file } => {
            let settings = replay::ReplaySettings {
                file: file.clone(),
                company_id: cfg.ble.company_id,
                fast: opts.fast_replay,
            };
            tokio::spawn(async move { replay::run(settings, tx).await.map(|_| ()) })
        }
        Source::Simulate => {
            let settings = opts.simulate.clone().unwrap_or_else(|| {
                simulate::SimulateSettings::new(
                    engine.setup().residents.keys().copied().collect(),
                    cfg.ble.company_id,
                )
            });
            tokio::spawn(simulate::run(settings, keys, tx))
        }
        Source::Bluez => {
            let settings = ble::BleSettings {
                adapter: cfg.ble.radio.adapter.clone(),
                company_id: cfg.ble.company_id,
                silence_restart: cfg.ble.radio.silence_restart,
                scan: cfg.ble.radio.scan,
                bthome: !keys.bthome().is_empty(),
            };
            tokio::spawn(ble::run(settings, tx, radio, std::future::pending()))
        }
    })
}

/// Test-only: `BANDGATE_TEST_CALL_GAP_MS=N` in the environment shortens the fallback ladder's
/// one-call-a-minute rule per number to N ms, so that the black-box tests (`tests/it/modem.rs`)
/// can place several calls to one number in seconds. Logged at warn; never set it in
/// production (carriers flag a number that calls one callee more often than once a minute).
fn test_call_gap(setup: &mut Setup) {
    let Some(ms) = std::env::var("BANDGATE_TEST_CALL_GAP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    if let Some(f) = &mut setup.fallback {
        f.call_gap = Duration::from_millis(ms.max(1));
        tracing::warn!(
            call_gap_ms = ms,
            "BANDGATE_TEST_CALL_GAP_MS is set: calls to one number may follow each other faster than once a minute (tests only)"
        );
    }
}
