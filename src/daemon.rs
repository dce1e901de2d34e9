//! The event loop: one task owns the engine and selects over the radio lanes, the broker, the
//! engine's next deadline and shutdown.
//!
//! Order of work for every input: engine call → render outputs → one durable commit (alert
//! transitions and their outbox rows together) → publish. The outbox is the truth: rows are
//! deleted on PUBACK only, re-sent from the start after every reconnect and after a restart,
//! so an alert raised is delivered at least once across broker outages and power cuts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::adapters::lanes::{advert_lanes, Advert, AdvertRx};
use crate::adapters::mqtt::{self, GatewayStatus, LinkEvent, MqttLink, MqttSettings, Topics};
use crate::adapters::store::{OutboxMessage, Store};
use crate::adapters::{ble, replay, simulate};
use crate::config::file::{Config, SourceKind};
use crate::control;
use crate::engine::{Engine, Heard, Intake, Output, Setup};

/// Outbox rows handed to the link per read of the store.
const PUMP_BATCH: usize = 64;
/// Telemetry adverts handled per turn of the loop before looking at alarms again.
const TELEMETRY_BATCH: usize = 256;
/// Heartbeat-only band records (replay windows, battery) are written this often, in batches.
const TELEMETRY_FLUSH: Duration = Duration::from_secs(1);
/// Band records written per telemetry flush: small enough that a flush never holds the loop
/// long, large enough that 10,000 bands heard every few seconds are each written within 5 s.
const TELEMETRY_ROWS: usize = 2000;
/// How long a graceful shutdown waits for the broker to take the outbox.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Operator requests waiting for the loop (each client waits at most 5 s anyway).
const CONTROL_QUEUE: usize = 16;
/// Link ids at or above this are not outbox rows (status, device state): never stored.
const VOLATILE_ID_BASE: u64 = 1 << 62;

/// How `run` was asked to start, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replay source: ignore the capture's gaps.
    pub fast_replay: bool,
    /// Simulate source: replaces the default simulation (the demo scripts its SOS here).
    pub simulate: Option<simulate::SimulateSettings>,
}

struct Daemon {
    cfg: Config,
    engine: Engine,
    store: Store,
    link: MqttLink,
    topics: Topics,
    connected: bool,
    /// Highest outbox id handed to the link since the last (re)connect.
    cursor: Option<i64>,
    /// The link refused a row (its queue was full): pump again on the next PUBACK, not only on
    /// the next engine event, which may be a timeout minutes away.
    pump_stalled: bool,
    volatile_id: u64,
    started_at: Timestamp,
    adapter: String,
    adapter_ok: bool,
    store_ok: bool,
    ack_errors: std::collections::BTreeMap<&'static str, u64>,
    /// Last read of the lanes' drop counter (the lanes belong to the loop, not to `Daemon`).
    telemetry_dropped: u64,
    /// Telemetry drops already logged.
    dropped_reported: u64,
    /// State changes and outbox messages whose commit failed, retried with the next one.
    unsaved: Option<(crate::engine::Changes, Vec<OutboxMessage>)>,
}

fn clock() -> (std::time::Instant, Timestamp) {
    (Instant::now().into_std(), Timestamp::now())
}

/// Runs the gateway until `shutdown` completes (graceful) or a source fails for good (error:
/// the process exits non-zero and systemd restarts it).
pub async fn run(
    mut cfg: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started_at = Timestamp::now();
    let store = Store::open(&cfg.state_dir)?;
    let snapshot = store
        .load()
        .with_context(|| format!("loading state from {}", cfg.state_dir.display()))?;
    let (now, wall) = clock();
    let restored = snapshot.alerts.len();
    let intake = Intake::new(cfg.ble.company_id, cfg.keys.clone());
    // The residents move into the engine (one copy of 10,000 of them is megabytes); the rest
    // of the setup is small and stays readable in `cfg`.
    let residents = std::mem::take(&mut cfg.setup.residents);
    let setup = Setup {
        residents,
        ..cfg.setup.clone()
    };
    let mut engine = Engine::restore(setup, intake, now, wall, snapshot);
    tracing::info!(
        state_dir = %cfg.state_dir.display(),
        alerts = restored,
        outbox = store.outbox_len().unwrap_or(0),
        "state restored"
    );
    if engine.poll_timeout().is_some_and(|d| d <= now) {
        tracing::warn!("deadlines passed while the gateway was down: firing them now");
        engine.handle_timeout(now, wall);
    }

    let topics = Topics::new(cfg.mqtt.topic_prefix.clone());
    let settings = MqttSettings {
        url: cfg.mqtt.url.clone(),
        client_id: cfg.gateway_id.clone(),
        username: cfg.mqtt.username.clone(),
        password: cfg.mqtt.password.clone(),
        ca_file: cfg.mqtt.ca_file.clone(),
        keep_alive: Duration::from_secs(30),
        last_will: mqtt::last_will(&topics, &cfg.gateway_id),
    };
    let (link, mut link_events) = mqtt::connect(settings, vec![topics.ack_filter()])?;

    let keys = Arc::new(cfg.keys.clone());
    let (ble_status_tx, mut ble_status) = watch::channel(ble::BleStatus::default());
    let (tx, mut rx) = advert_lanes(cfg.ble.company_id, keys.clone());
    let adapter = match cfg.ble.source {
        SourceKind::Bluez => cfg.ble.adapter.clone().unwrap_or_else(|| "first".into()),
        other => other.name().to_string(),
    };
    let mut source: tokio::task::JoinHandle<anyhow::Result<()>> = match cfg.ble.source {
        SourceKind::Replay => {
            let file = cfg
                .ble
                .replay_file
                .clone()
                .context("ble.source = \"replay\" needs ble.replay_file")?;
            let settings = replay::ReplaySettings {
                file,
                company_id: cfg.ble.company_id,
                fast: opts.fast_replay,
            };
            tokio::spawn(async move { replay::run(settings, tx).await.map(|_| ()) })
        }
        SourceKind::Simulate => {
            let settings = opts.simulate.clone().unwrap_or_else(|| {
                simulate::SimulateSettings::new(
                    engine.setup().residents.keys().copied().collect(),
                    cfg.ble.company_id,
                )
            });
            tokio::spawn(simulate::run(settings, keys, tx))
        }
        SourceKind::Bluez => {
            let settings = ble::BleSettings {
                adapter: cfg.ble.adapter.clone(),
                company_id: cfg.ble.company_id,
                silence_restart: cfg.ble.silence_restart,
            };
            let status = ble_status_tx.clone();
            tokio::spawn(ble::run(settings, tx, status, std::future::pending()))
        }
    };

    // The operator's socket is a convenience: without it alarms still flow, so a failure to
    // bind is logged, not fatal.
    let (control_tx, mut control_rx) = tokio::sync::mpsc::channel(CONTROL_QUEUE);
    let control_socket = match control::ControlSocket::bind(&cfg.control_socket, control_tx) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "no control socket: bandgate status/alerts/ack will not reach this daemon"
            );
            None
        }
    };

    let cfg_source = cfg.ble.source;
    let mut d = Daemon {
        cfg,
        engine,
        store,
        link,
        topics,
        connected: false,
        cursor: None,
        pump_stalled: false,
        volatile_id: VOLATILE_ID_BASE,
        started_at,
        adapter,
        // A radio is not ok until its source says it scans: the source's first report may be
        // "not ok", which equals the watch's initial value and so is never sent as a change.
        adapter_ok: cfg_source != SourceKind::Bluez,
        store_ok: true,
        ack_errors: Default::default(),
        telemetry_dropped: 0,
        dropped_reported: 0,
        unsaved: None,
    };
    d.flush();

    notify_systemd(&[sd_notify::NotifyState::Ready]);
    let watchdog = watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut status_tick = tokio::time::interval(d.cfg.mqtt.status_interval);
    let mut telemetry_tick = tokio::time::interval(TELEMETRY_FLUSH);
    tracing::info!(
        gateway_id = d.cfg.gateway_id,
        source = d.cfg.ble.source.name(),
        broker = d.cfg.mqtt.url,
        bands = d.cfg.keys.len(),
        "bandgate running"
    );

    tokio::pin!(shutdown);
    let mut source_done = false;
    let result = loop {
        let deadline = d.engine.poll_timeout().map(Instant::from_std);
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            Some(advert) = rx.alarms.recv() => d.advert(advert),
            Some(ev) = link_events.recv() => d.link_event(ev),
            _ = timer => {
                let (now, wall) = clock();
                d.engine.handle_timeout(now, wall);
                d.flush();
            }
            Some(pending) = control_rx.recv() => d.control(pending),
            done = &mut source, if !source_done => {
                source_done = true;
                match done {
                    Ok(Ok(())) => tracing::info!("advertisement source finished; alerts keep escalating"),
                    Ok(Err(e)) => break Err(e.context("advertisement source failed")),
                    Err(e) => break Err(anyhow::anyhow!("advertisement source panicked: {e}")),
                }
            }
            _ = status_tick.tick() => {
                d.telemetry_dropped = rx.dropped();
                d.publish_status();
            }
            Ok(()) = ble_status.changed() => {
                let st = ble_status.borrow_and_update().clone();
                if !st.adapter.is_empty() {
                    d.adapter = st.adapter.clone();
                }
                if st.adapter_ok != d.adapter_ok {
                    d.adapter_ok = st.adapter_ok;
                    if st.adapter_ok {
                        tracing::info!(adapter = d.adapter, "radio adapter scanning again");
                    } else {
                        tracing::warn!(adapter = d.adapter, "radio adapter not scanning: bands are not heard until it recovers");
                    }
                    d.publish_status();
                }
            }
            _ = telemetry_tick.tick() => d.flush_telemetry(&rx),
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                notify_systemd(&[sd_notify::NotifyState::Watchdog]);
            }
            // Last: a lane that never empties (overload) must not starve the ticks above,
            // which only fire when due (the watchdog ping, status, telemetry writes).
            Some(advert) = rx.telemetry.recv() => d.telemetry(advert, &mut rx),
        }
    };
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    drop(control_socket);
    source.abort();
    d.shutdown(&mut link_events).await;
    result
}

impl Daemon {
    fn advert(&mut self, advert: Advert) {
        let (now, _) = clock();
        self.frame(now, advert);
        self.flush();
    }

    fn telemetry(&mut self, first: Advert, rx: &mut AdvertRx) {
        let (now, _) = clock();
        self.frame(now, first);
        for _ in 0..TELEMETRY_BATCH {
            match rx.telemetry.try_recv() {
                Ok(a) => self.frame(now, a),
                Err(_) => break,
            }
        }
        self.flush();
    }

    fn frame(&mut self, now: std::time::Instant, advert: Advert) {
        match self
            .engine
            .handle_frame(now, advert.received_at, &advert.data, advert.rssi)
        {
            Heard::Accepted { frame, alert_id } => tracing::debug!(
                device_id = frame.device_id,
                seq = frame.seq,
                event = frame.event.name(),
                rssi = advert.rssi,
                alert_id,
                "frame accepted"
            ),
            Heard::Rejected(reason) => tracing::debug!(
                addr = advert.addr,
                reason = reason.as_str(),
                data = hex::encode(&advert.data),
                "frame rejected"
            ),
        }
    }

    /// An operator's request from the control socket, answered like a phone's message.
    fn control(&mut self, pending: control::Pending) {
        let (now, wall) = clock();
        let facts = control::Facts {
            gateway_id: self.cfg.gateway_id.clone(),
            started_at: self.started_at,
            adapter: self.adapter.clone(),
            adapter_ok: self.adapter_ok,
            broker_connected: self.connected,
            store_ok: self.store_ok,
            devices_enrolled: self.cfg.keys.len(),
            outbox_len: self
                .store
                .outbox_len()
                .map_err(|e| tracing::error!(error = %e, "cannot count the outbox"))
                .ok(),
            messages_ignored: self
                .ack_errors
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        };
        let response = control::answer(&mut self.engine, now, wall, &facts, pending.request);
        self.flush();
        let _ = pending.reply.send(response);
    }

    fn link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                tracing::info!(
                    broker = self.cfg.mqtt.url,
                    "broker connected; re-sending the outbox"
                );
                self.connected = true;
                self.cursor = None;
                self.publish_status();
                self.pump();
            }
            LinkEvent::Disconnected(why) => {
                if self.connected {
                    tracing::warn!(
                        broker = self.cfg.mqtt.url,
                        error = why,
                        "broker connection lost; escalation goes on, pages wait in the outbox"
                    );
                }
                self.connected = false;
            }
            LinkEvent::PubAcked(id) => {
                if id < VOLATILE_ID_BASE {
                    if let Err(e) = self.store.mark_sent(&[id as i64]) {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "cannot mark an outbox row sent; it will be sent again"
                        );
                    }
                }
                if self.pump_stalled {
                    self.pump();
                }
            }
            LinkEvent::Message { topic, payload } => {
                match mqtt::parse_ack(&self.topics, &topic, &payload) {
                    Ok(ack) => {
                        let (now, wall) = clock();
                        match self.engine.handle_action(
                            now,
                            wall,
                            &ack.staff_id,
                            &ack.alert_id,
                            ack.action,
                        ) {
                            Ok(()) => tracing::info!(
                                staff_id = ack.staff_id,
                                alert_id = ack.alert_id,
                                action = ack.action.name(),
                                note = ack.note,
                                "phone action"
                            ),
                            Err(r) => tracing::warn!(
                                staff_id = ack.staff_id,
                                alert_id = ack.alert_id,
                                action = ack.action.name(),
                                reason = r.as_str(),
                                "phone action ignored"
                            ),
                        }
                        self.flush();
                    }
                    Err(e) => {
                        *self.ack_errors.entry(e.as_str()).or_default() += 1;
                        tracing::warn!(topic, bytes = payload.len(), reason = e.as_str(), error = %e, "phone message ignored");
                    }
                }
            }
        }
    }

    /// Renders what the engine asked for, commits it, then publishes it.
    fn flush(&mut self) {
        self.flush_and_retry(false);
    }

    /// `flush`; with `retry`, also commits what an earlier failed commit holds when nothing new
    /// came (from the telemetry tick: a broken store is tried once a second, not per frame).
    fn flush_and_retry(&mut self, retry: bool) {
        let mut durable: Vec<OutboxMessage> = Vec::new();
        let mut volatile = Vec::new();
        while let Some(output) = self.engine.poll_output() {
            let msg = mqtt::render(
                &output,
                self.engine.setup(),
                &self.topics,
                self.cfg.publish_vitals,
            );
            match output {
                Output::DeviceState(_) => volatile.push(msg),
                _ => durable.push(msg),
            }
        }
        if !durable.is_empty() || (retry && self.unsaved.is_some()) {
            let (now, wall) = clock();
            let mut changes = self.engine.take_changes(now, wall);
            let fresh = durable.len();
            // What an earlier failed commit could not store goes first, in its order.
            if let Some((earlier, mut messages)) = self.unsaved.take() {
                changes = earlier.then(changes);
                messages.append(&mut durable);
                durable = messages;
            }
            match self.store.commit(&changes, &durable) {
                Ok(_) => {
                    self.store_ok = true;
                    fault_after_commit();
                }
                Err(e) => {
                    // Delivery comes before durability: publish what we could not store now
                    // (only this call's messages: the held ones went out when they were
                    // new), and keep it all (state and messages) for the next commit, so that
                    // a broker that is down at this moment still gets every page later.
                    self.store_ok = false;
                    tracing::error!(error = format!("{e:#}"), "state store failed; publishing without it (not restart-safe until it recovers)");
                    volatile.extend(durable[durable.len() - fresh..].iter().cloned());
                    self.unsaved = Some((changes, durable));
                }
            }
        }
        for msg in volatile {
            self.publish_volatile(&msg);
        }
        self.pump();
    }

    fn flush_telemetry(&mut self, rx: &AdvertRx) {
        if self.unsaved.is_some() {
            self.flush_and_retry(true);
        }
        // LOOP(19): records of quiet alerts (silent bands one gateway notice stands for) are
        // written here in batches, never with an alarm's commit; retaken when they fail.
        let (now, wall) = clock();
        let background = self
            .engine
            .take_background(now, wall, crate::engine::BACKGROUND_BATCH);
        if let Err(e) = self.store.commit(&background, &[]) {
            self.store_ok = false;
            tracing::error!(
                error = format!("{e:#}"),
                "cannot write silent bands' alerts to the state store; trying again in a second"
            );
            self.engine.retake_background(&background);
        }
        let devices = self.engine.take_telemetry(TELEMETRY_ROWS);
        let written = self.store.commit_telemetry(&devices);
        if written.is_ok() && !devices.is_empty() && self.unsaved.is_none() {
            self.store_ok = true;
        }
        if let Err(e) = written {
            self.store_ok = false;
            tracing::error!(
                error = format!("{e:#}"),
                "cannot write band telemetry to the state store; trying again in a second"
            );
            self.engine
                .retake_telemetry(devices.iter().map(|d| d.device_id));
        }
        let dropped = rx.dropped();
        self.telemetry_dropped = dropped;
        // Said once per new batch of drops, not on every flush.
        if dropped > self.dropped_reported {
            tracing::warn!(
                dropped = dropped - self.dropped_reported,
                total = dropped,
                "telemetry adverts dropped because the loop fell behind (alarms are never dropped)"
            );
            self.dropped_reported = dropped;
        }
    }

    /// Hands outbox rows after the cursor to the link, in order, while it takes them.
    fn pump(&mut self) {
        if !self.connected {
            return;
        }
        loop {
            let rows = match self.store.pending(self.cursor, PUMP_BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot read the outbox");
                    return;
                }
            };
            if rows.is_empty() {
                self.pump_stalled = false;
                return;
            }
            for (id, msg) in rows {
                if !self.link.publish(id as u64, &msg) {
                    self.pump_stalled = true;
                    return;
                }
                self.cursor = Some(id);
            }
        }
    }

    fn publish_volatile(&mut self, msg: &OutboxMessage) {
        if !self.connected {
            return;
        }
        self.volatile_id += 1;
        self.link.publish(self.volatile_id, msg);
    }

    fn publish_status(&mut self) {
        let wall = Timestamp::now();
        let status = GatewayStatus {
            gateway_id: self.cfg.gateway_id.clone(),
            started_at: self.started_at,
            adapter: self.adapter.clone(),
            adapter_ok: self.adapter_ok,
            devices_enrolled: self.cfg.keys.len(),
            devices_heard_15m: self
                .engine
                .devices_heard_since(wall - SignedDuration::from_mins(15)),
            open_alerts: self.engine.open_alerts(),
            outbox_len: self.store.outbox_len().unwrap_or(0) as usize,
            frames_accepted: self.engine.intake().accepted(),
            telemetry_dropped: self.telemetry_dropped,
        };
        let msg = mqtt::status(&self.topics, &status);
        self.publish_volatile(&msg);
    }

    /// Graceful end: commit what is pending, give the broker a moment to take the outbox,
    /// say offline, disconnect. Whatever is not acked stays in the outbox for the next start.
    async fn shutdown(&mut self, events: &mut tokio::sync::mpsc::Receiver<LinkEvent>) {
        self.flush();
        let (now, wall) = clock();
        let mut changes = self.engine.take_changes(now, wall);
        let mut messages = Vec::new();
        if let Some((earlier, unsent)) = self.unsaved.take() {
            changes = earlier.then(changes);
            messages = unsent;
        }
        if let Err(e) = self.store.commit(&changes, &messages) {
            tracing::error!(error = format!("{e:#}"), "cannot save state at shutdown");
        }
        // LOOP(19): the quiet alerts' records not written yet.
        let background = self.engine.take_background(now, wall, usize::MAX);
        if let Err(e) = self.store.commit(&background, &[]) {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot save silent bands' alerts at shutdown"
            );
        }
        let telemetry = self.engine.take_telemetry(usize::MAX);
        if let Err(e) = self.store.commit_telemetry(&telemetry) {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot save band telemetry at shutdown"
            );
        }
        let until = Instant::now() + SHUTDOWN_DRAIN;
        while self.connected && self.store.outbox_len().unwrap_or(0) > 0 {
            match tokio::time::timeout_at(until, events.recv()).await {
                Ok(Some(ev)) => self.link_event(ev),
                _ => break,
            }
        }
        let left = self.store.outbox_len().unwrap_or(0);
        if self.connected {
            let offline = mqtt::last_will(&self.topics, &self.cfg.gateway_id);
            self.volatile_id += 1;
            self.link.publish(self.volatile_id, &offline);
            // Let the offline status go out before the DISCONNECT.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(ev) = events.recv().await {
                    if matches!(ev, LinkEvent::PubAcked(id) if id == self.volatile_id) {
                        break;
                    }
                }
            })
            .await;
        }
        self.link.disconnect();
        tracing::info!(outbox_left = left, "bandgate stopped");
    }
}

/// Test-only fault injection: with `BANDGATE_FAULT_ABORT_AFTER_COMMIT=N` in the environment
/// the process aborts right after its Nth durable commit of alert changes and outbox rows,
/// before any of it is published: the "power cut between commit and publish" that the
/// black-box tests (`tests/it/daemon.rs`) restart from. Never set it in production.
fn fault_after_commit() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static ABORT_AFTER: OnceLock<Option<u64>> = OnceLock::new();
    static COMMITS: AtomicU64 = AtomicU64::new(0);
    let limit = ABORT_AFTER.get_or_init(|| {
        std::env::var("BANDGATE_FAULT_ABORT_AFTER_COMMIT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(n) = *limit {
        if COMMITS.fetch_add(1, Ordering::SeqCst) + 1 == n {
            eprintln!("BANDGATE_FAULT_ABORT_AFTER_COMMIT={n}: aborting after commit {n}, before publishing");
            std::process::abort();
        }
    }
}

fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// Half the systemd watchdog interval, when systemd asked for one.
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}
