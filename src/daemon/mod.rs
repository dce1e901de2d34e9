//! The event loop: one task owns the engine. `next_event` is the one place that orders the
//! inputs; `handle_event` is synchronous; `Delivery` (sans-IO) decides what goes to the store
//! and the broker, and `drive` carries its requests out.
//!
//! Order of work for every input: engine call → render outputs → one durable commit (alert
//! transitions and their outbox rows together) → publish. The outbox is the truth: rows are
//! deleted on PUBACK only, re-sent from the start after every reconnect and after a restart,
//! so an alert raised is delivered at least once across broker outages and power cuts.

mod delivery;
mod fallback;
pub mod health;
mod silent;
mod wiring;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::adapters::ble::BleStatus;
use crate::adapters::control;
use crate::adapters::lanes::{mac_of, Advert, AdvertRx, Format};
use crate::adapters::modem::ModemLink;
use crate::adapters::mqtt::guard::{RateLimit, RefusalLog, DEFAULT_RATE};
use crate::adapters::mqtt::{self, GatewayStatus, LinkEvent, MqttLink, Topics};
use crate::adapters::store::{OutboxMessage, Store};
use crate::daemon::health::StoreHealth;
use crate::engine::{
    Changes, ContactReport, DeviceRecord, Engine, Heard, NotifyReason, Now, Output,
};

pub use delivery::{Class, Delivery, Io, Message};
pub use wiring::{run, RunOptions};

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
/// Broker events handled in a row before deadlines, operator requests and ticks get a look:
/// a flood of phone messages must not starve escalation or `bandgate status`.
const BROKER_TURNS: u32 = 32;

/// The durable store as the loop uses it (`Store`; tests wrap it to make it fail).
pub trait StateStore {
    fn commit(&mut self, changes: &Changes, outbox: &[OutboxMessage]) -> anyhow::Result<Vec<i64>>;
    fn commit_telemetry(&mut self, devices: &[DeviceRecord]) -> anyhow::Result<()>;
    fn pending(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(i64, OutboxMessage)>>;
    fn mark_sent(&mut self, ids: &[i64]) -> anyhow::Result<()>;
    fn outbox_len(&self) -> anyhow::Result<u64>;
}

impl StateStore for Store {
    fn commit(&mut self, changes: &Changes, outbox: &[OutboxMessage]) -> anyhow::Result<Vec<i64>> {
        Store::commit(self, changes, outbox)
    }
    fn commit_telemetry(&mut self, devices: &[DeviceRecord]) -> anyhow::Result<()> {
        Store::commit_telemetry(self, devices)
    }
    fn pending(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(i64, OutboxMessage)>> {
        Store::pending(self, after, limit)
    }
    fn mark_sent(&mut self, ids: &[i64]) -> anyhow::Result<()> {
        Store::mark_sent(self, ids)
    }
    fn outbox_len(&self) -> anyhow::Result<u64> {
        Store::outbox_len(self)
    }
}

/// The broker link as the loop uses it (`MqttLink`; tests record instead).
pub trait Publisher {
    /// Hands `msg` over without waiting; `false` when it cannot take it now.
    fn publish(&self, id: u64, msg: &OutboxMessage) -> bool;
    /// Says goodbye (no last will) and stops.
    fn disconnect(&self);
}

impl Publisher for MqttLink {
    fn publish(&self, id: u64, msg: &OutboxMessage) -> bool {
        MqttLink::publish(self, id, msg)
    }
    fn disconnect(&self) {
        MqttLink::disconnect(self)
    }
}

/// Everything that can wake the loop. Adapters send these; `next_event` picks one.
#[derive(Debug)]
pub enum Event {
    Shutdown,
    /// An authentic SOS, fall, no-motion or cancel frame (the alarm lane).
    Alarm(Advert),
    Link(LinkEvent),
    /// The modem's report about a fallback step (SMS sent or delivered, a call's outcome).
    Contact(ContactReport),
    /// The engine's or delivery's next deadline is due.
    Deadline,
    Control(control::Pending),
    /// The advertisement source task ended.
    SourceDone(Result<anyhow::Result<()>, tokio::task::JoinError>),
    Radio(BleStatus),
    StatusTick,
    TelemetryTick,
    WatchdogTick,
    /// A heartbeat (the telemetry lane); more are taken in the same turn.
    Telemetry(Advert),
}

/// The loop's inputs, each an adapter's channel.
pub struct Inputs {
    pub adverts: AdvertRx,
    pub link: mpsc::Receiver<LinkEvent>,
    pub control: mpsc::Receiver<control::Pending>,
    pub source: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub radio: watch::Receiver<BleStatus>,
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// What the loop knows about its site and itself, beyond the engine.
#[derive(Debug, Clone)]
pub struct Site {
    pub gateway_id: String,
    /// The broker's URL, for logs.
    pub broker: String,
    pub topics: Topics,
    pub publish_vitals: bool,
    pub devices_enrolled: usize,
    pub status_interval: Duration,
    pub started_at: Timestamp,
    /// The radio adapter's name and whether it scans (from the BLE source's reports).
    pub adapter: String,
    pub adapter_ok: bool,
    /// The radio's scan in force (`BleStatus::scan`); empty for replay and simulation.
    pub scan: &'static str,
}

/// The ticks the loop keeps for itself.
struct Ticks {
    status: tokio::time::Interval,
    telemetry: tokio::time::Interval,
    watchdog: Option<tokio::time::Interval>,
}

/// The loop's state: the engine, delivery, and the adapters' handles.
pub struct Daemon<S, P> {
    engine: Engine,
    store: S,
    link: P,
    delivery: Delivery,
    site: Site,
    /// Telemetry writes failing (alert commits are `delivery`'s).
    telemetry_failing: bool,
    /// Phone messages the MQTT adapter could not read, by reason.
    ignored: BTreeMap<&'static str, u64>,
    /// Telemetry adverts dropped by the lanes, and how many of them were logged.
    dropped: (u64, u64),
    /// Messages delivery gave up past its bounds (held pages superseded, parked volatile
    /// messages), as last logged.
    delivery_drops: (u64, u64),
    broker_streak: u32,
    source_done: bool,
    /// What was lost at start and whether the store fails: `degraded` and gateway_fault pages.
    health: StoreHealth,
    /// Per-person rate limit on phone messages (the contract's 20/s).
    phone_rate: RateLimit,
    /// Refusals logged as one line per reason per interval.
    refusals: RefusalLog,
    /// The modem task (`[fallback]`); `None` without the section.
    modem: Option<ModemLink>,
    /// The webhook task (`[fallback] webhook_url`); it reports through the modem's stream.
    webhook: Option<tokio::sync::mpsc::Sender<crate::adapters::webhook::WebhookJob>>,
    /// Silent bands' device states not rendered yet (a batch per turn).
    silent: silent::SilentBacklog,
    /// `on_duty` as the status document last said it: when it changes (a console comes or
    /// goes, a shift turns over) the document is published again at the next telemetry tick,
    /// not only at `status_interval`.
    published_on_duty: Vec<crate::engine::OnDuty>,
}

fn clock() -> (std::time::Instant, Timestamp) {
    (Instant::now().into_std(), Timestamp::now())
}

impl<S: StateStore, P: Publisher> Daemon<S, P> {
    pub fn new(engine: Engine, store: S, link: P, site: Site) -> Daemon<S, P> {
        Daemon {
            engine,
            store,
            link,
            delivery: Delivery::new(),
            site,
            telemetry_failing: false,
            ignored: BTreeMap::new(),
            dropped: (0, 0),
            delivery_drops: (0, 0),
            broker_streak: 0,
            source_done: false,
            health: StoreHealth::default(),
            phone_rate: RateLimit::new(DEFAULT_RATE),
            refusals: RefusalLog::default(),
            modem: None,
            webhook: None,
            silent: silent::SilentBacklog::default(),
            published_on_duty: Vec::new(),
        }
    }

    /// The fallback ladder's modem (`[fallback]`).
    pub fn with_modem(mut self, modem: Option<ModemLink>) -> Self {
        self.modem = modem;
        self
    }

    /// The fallback ladder's webhook (`[fallback] webhook_url`).
    pub fn with_webhook(
        mut self,
        webhook: Option<tokio::sync::mpsc::Sender<crate::adapters::webhook::WebhookJob>>,
    ) -> Self {
        self.webhook = webhook;
        self
    }

    /// What the store's recovery at start found (losses are paged at once).
    pub fn with_health(mut self, health: StoreHealth) -> Self {
        self.health = health;
        self
    }

    /// Runs until shutdown (`Ok`) or a source fails for good (`Err`).
    pub async fn run(mut self, mut inputs: Inputs) -> anyhow::Result<()> {
        let (now, wall) = clock();
        if self.engine.poll_timeout().is_some_and(|d| d <= now) {
            tracing::warn!("deadlines passed while the gateway was down: firing them now");
            self.engine.handle_timeout(Now { mono: now, wall });
        }
        // The supervisors are paged about what was lost at start (committed and sent with
        // this flush, so within seconds of the broker connecting).
        self.check_store_health();
        self.flush();
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        let mut ticks = Ticks {
            status: tokio::time::interval(self.site.status_interval),
            telemetry: tokio::time::interval(TELEMETRY_FLUSH),
            watchdog: watchdog_interval().map(tokio::time::interval),
        };
        let result = loop {
            let event = self.next_event(&mut inputs, &mut ticks).await;
            if let ControlFlow::Break(result) = self.handle_event(event, &mut inputs.adverts) {
                break result;
            }
        };
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        inputs.source.abort();
        self.shutdown(&mut inputs.link).await;
        result
    }

    fn deadline(&self) -> Option<Instant> {
        if !self.silent.is_empty() {
            return Some(Instant::now());
        }
        let engine = self.engine.poll_timeout();
        let delivery = self.delivery.poll_timeout();
        engine
            .into_iter()
            .chain(delivery)
            .min()
            .map(Instant::from_std)
    }

    /// The one priority order: shutdown, alarms, broker, deadline, modem reports, operator,
    /// source, radio, ticks, telemetry. After `BROKER_TURNS` broker events in a row, whatever else is due
    /// goes first once, so a flood of phone messages cannot starve escalation or the operator.
    async fn next_event(&mut self, inputs: &mut Inputs, ticks: &mut Ticks) -> Event {
        let deadline = self.deadline();
        if self.broker_streak >= BROKER_TURNS {
            self.broker_streak = 0;
            tokio::select! {
                biased;
                _ = sleep_until(deadline) => return Event::Deadline,
                Some(r) = modem_report(&mut self.modem) => return Event::Contact(r),
                Some(p) = inputs.control.recv() => return Event::Control(p),
                _ = ticks.status.tick() => return Event::StatusTick,
                _ = ticks.telemetry.tick() => return Event::TelemetryTick,
                _ = tick(&mut ticks.watchdog) => return Event::WatchdogTick,
                _ = std::future::ready(()) => {}
            }
        }
        let event = tokio::select! {
            biased;
            _ = &mut inputs.shutdown => Event::Shutdown,
            Some(a) = inputs.adverts.alarms.recv() => Event::Alarm(a),
            Some(ev) = inputs.link.recv() => Event::Link(ev),
            _ = sleep_until(deadline) => Event::Deadline,
            Some(r) = modem_report(&mut self.modem) => Event::Contact(r),
            Some(p) = inputs.control.recv() => Event::Control(p),
            done = &mut inputs.source, if !self.source_done => Event::SourceDone(done),
            Ok(()) = inputs.radio.changed() => Event::Radio(inputs.radio.borrow_and_update().clone()),
            _ = ticks.status.tick() => Event::StatusTick,
            _ = ticks.telemetry.tick() => Event::TelemetryTick,
            _ = tick(&mut ticks.watchdog) => Event::WatchdogTick,
            // Last: a lane that never empties (overload) must not starve the ticks above,
            // which only fire when due (the watchdog ping, status, telemetry writes).
            Some(a) = inputs.adverts.telemetry.recv() => Event::Telemetry(a),
        };
        if matches!(event, Event::Link(_)) {
            self.broker_streak += 1;
        } else {
            self.broker_streak = 0;
        }
        event
    }

    /// One event, start to finish: engine, commit, publish. `Break` ends the loop.
    fn handle_event(
        &mut self,
        event: Event,
        adverts: &mut AdvertRx,
    ) -> ControlFlow<anyhow::Result<()>> {
        match event {
            Event::Shutdown => return ControlFlow::Break(Ok(())),
            Event::Alarm(advert) => {
                self.frame(clock().0, advert);
                self.flush();
            }
            Event::Telemetry(first) => {
                let (now, _) = clock();
                self.frame(now, first);
                for _ in 0..TELEMETRY_BATCH {
                    match adverts.telemetry.try_recv() {
                        Ok(a) => self.frame(now, a),
                        Err(_) => break,
                    }
                }
                self.flush();
            }
            Event::Link(ev) => self.link_event(ev),
            Event::Contact(r) => self.contact_report(r),
            Event::Deadline => {
                let (now, wall) = clock();
                if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                    self.engine.handle_timeout(Now { mono: now, wall });
                }
                if self.delivery.poll_timeout().is_some_and(|t| t <= now) {
                    self.delivery.handle_timeout(now);
                }
                self.flush();
                self.silent_states();
            }
            Event::Control(pending) => self.control(pending),
            Event::SourceDone(done) => {
                self.source_done = true;
                match done {
                    Ok(Ok(())) => {
                        tracing::info!("advertisement source finished; alerts keep escalating")
                    }
                    Ok(Err(e)) => {
                        return ControlFlow::Break(Err(e.context("advertisement source failed")))
                    }
                    Err(e) => {
                        return ControlFlow::Break(Err(anyhow::anyhow!(
                            "advertisement source panicked: {e}"
                        )))
                    }
                }
            }
            Event::Radio(st) => self.radio(st),
            Event::StatusTick => {
                self.dropped.0 = adverts.dropped();
                self.publish_status();
            }
            Event::TelemetryTick => {
                if self.on_duty(Timestamp::now()) != self.published_on_duty {
                    self.publish_status();
                }
                self.flush_telemetry(adverts.dropped());
                self.log_refusals();
            }
            Event::WatchdogTick => notify_systemd(&[sd_notify::NotifyState::Watchdog]),
        }
        ControlFlow::Continue(())
    }

    fn frame(&mut self, now: std::time::Instant, advert: Advert) {
        let heard = match advert.format {
            Format::Band => self.engine.handle_frame(
                Now {
                    mono: now,
                    wall: advert.received_at,
                },
                &advert.data,
                advert.rssi,
            ),
            Format::BtHome => self.engine.handle_bthome(
                Now {
                    mono: now,
                    wall: advert.received_at,
                },
                &mac_of(&advert.addr),
                &advert.data,
                advert.rssi,
            ),
        };
        match heard {
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
                format = ?advert.format,
                reason = reason.as_str(),
                data = hex::encode(&advert.data),
                "frame rejected"
            ),
        }
    }

    fn radio(&mut self, st: BleStatus) {
        if !st.adapter.is_empty() {
            self.site.adapter = st.adapter.clone();
        }
        let scan = st.scan.name();
        if !scan.is_empty() && scan != self.site.scan {
            self.site.scan = scan;
            tracing::info!(adapter = self.site.adapter, scan, "radio scan mode");
            if st.adapter_ok == self.site.adapter_ok {
                self.publish_status();
            }
        }
        if st.adapter_ok != self.site.adapter_ok {
            self.site.adapter_ok = st.adapter_ok;
            if st.adapter_ok {
                tracing::info!(adapter = self.site.adapter, "radio adapter scanning again");
            } else {
                tracing::warn!(
                    adapter = self.site.adapter,
                    "radio adapter not scanning: bands are not heard until it recovers"
                );
            }
            self.publish_status();
        }
    }

    fn store_ok(&self) -> bool {
        self.delivery.failing_since().is_none() && !self.telemetry_failing
    }

    /// An operator's request from the control socket, answered like a phone's message.
    fn control(&mut self, pending: control::Pending) {
        let (now, wall) = clock();
        let facts = control::Facts {
            gateway_id: self.site.gateway_id.clone(),
            started_at: self.site.started_at,
            adapter: self.site.adapter.clone(),
            adapter_ok: self.site.adapter_ok,
            scan: self.site.scan,
            broker_connected: self.delivery.is_connected(),
            store_ok: self.store_ok(),
            devices_enrolled: self.site.devices_enrolled,
            outbox_len: self
                .store
                .outbox_len()
                .map_err(|e| tracing::error!(error = %e, "cannot count the outbox"))
                .ok(),
            messages_ignored: self
                .ignored
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            degraded: self.degraded_reasons(now),
            modem: self.modem_health(),
            on_duty: self.on_duty(wall),
        };
        let response = control::answer(&mut self.engine, now, wall, &facts, pending.request);
        self.flush();
        let _ = pending.reply.send(response);
    }

    fn link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Connected => {
                tracing::info!(
                    broker = self.site.broker,
                    "broker connected; re-sending the outbox"
                );
                self.delivery.connected();
                self.publish_status();
            }
            LinkEvent::Disconnected(why) => {
                if self.delivery.is_connected() {
                    tracing::warn!(
                        broker = self.site.broker,
                        error = why,
                        "broker connection lost; escalation goes on, pages wait in the outbox"
                    );
                }
                self.delivery.disconnected();
            }
            LinkEvent::PubAcked(id) => self.delivery.pub_acked(id),
            LinkEvent::Message {
                topic,
                payload,
                retain,
            } => self.phone_message(topic, payload, retain),
        }
        self.drive();
    }

    /// A phone's message, checked cheapest first. Retained, over-rate, unreadable and refused
    /// messages are counted and logged through `refusals`; only an applied action runs
    /// `flush`, so a refusal costs no disk work.
    fn phone_message(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        let (now, wall) = clock();
        if let Some((staff, client)) = self.site.topics.presence(&topic) {
            let (staff, client) = (staff.to_owned(), client.to_owned());
            self.presence(&staff, &client, &payload);
            return;
        }
        if payload.is_empty() {
            // A deletion of a retained message (ours, echoed back, or an installer's `-r -n`).
            tracing::debug!(topic, "empty phone message (a retained message deleted)");
            return;
        }
        if retain {
            self.ignore_message(now, "retained", || {
                format!("{topic} ({} bytes)", payload.len())
            });
            // Never acted on, and deleted, so that no reconnect replays it.
            let clear = mqtt::Publish {
                topic,
                payload: Vec::new(),
                qos: 1,
                retain: true,
            };
            self.delivery.volatile(clear);
            return;
        }
        if let Some(staff) = self.site.topics.ack_staff(&topic) {
            if !self.phone_rate.admit(now, staff) {
                let staff = staff.to_owned();
                self.ignore_message(now, "rate_limited", || staff);
                return;
            }
        }
        let ack = match mqtt::parse_ack(&self.site.topics, &topic, &payload) {
            Ok(ack) => ack,
            Err(e) => {
                let reason = e.as_str();
                *self.ignored.entry(reason).or_default() += 1;
                if self.refusals.note(now, reason, || topic.clone()) {
                    tracing::warn!(topic, bytes = payload.len(), reason, error = %e, "phone message ignored (more of this reason are summed up, one line per interval)");
                }
                return;
            }
        };
        match self.engine.handle_action(
            Now { mono: now, wall },
            &ack.staff_id,
            &ack.alert_id,
            ack.action,
        ) {
            Ok(()) => {
                tracing::info!(
                    staff_id = ack.staff_id,
                    alert_id = ack.alert_id,
                    action = ack.action.name(),
                    note = ack.note,
                    "phone action"
                );
                self.flush();
            }
            Err(r) => {
                let example = || format!("{} {} {}", ack.staff_id, ack.action.name(), ack.alert_id);
                if self.refusals.note(now, r.as_str(), example) {
                    tracing::warn!(
                        staff_id = ack.staff_id,
                        alert_id = ack.alert_id,
                        action = ack.action.name(),
                        reason = r.as_str(),
                        "phone action ignored (more of this reason are summed up, one line per interval)"
                    );
                }
            }
        }
    }

    /// A phone message dropped before it was read: counted, logged aggregated.
    fn ignore_message(
        &mut self,
        now: std::time::Instant,
        reason: &'static str,
        example: impl FnOnce() -> String,
    ) {
        *self.ignored.entry(reason).or_default() += 1;
        let mut example = Some(example);
        let log_now = self.refusals.note(now, reason, || {
            example.take().map(|f| f()).unwrap_or_default()
        });
        if let Some(example) = example.filter(|_| log_now) {
            tracing::warn!(
                reason,
                example = example(),
                "phone message ignored (more of this reason are summed up, one line per interval)"
            );
        }
    }

    /// The refusal log's summaries that are due, one line each.
    fn log_refusals(&mut self) {
        let (now, _) = clock();
        for summary in self.refusals.tick(now) {
            summary.log();
        }
    }

    /// Renders what the engine asked for and hands it to delivery, then carries delivery's
    /// requests out.
    fn flush(&mut self) {
        let mut durable = Vec::new();
        let mut volatile = Vec::new();
        let mut contacts = Vec::new();
        while let Some(output) = self.engine.poll_output() {
            match output {
                Output::Contact(r) => {
                    contacts.push(r);
                    continue;
                }
                Output::DeviceSilent(d) => {
                    self.silent.push(d);
                    continue;
                }
                Output::DeviceState(ref d) => self.silent.heard(d.device_id),
                _ => {}
            }
            let publish = mqtt::render(
                &output,
                self.engine.setup(),
                &self.site.topics,
                self.site.publish_vitals,
            );
            match class_of(&output) {
                Some(class) => durable.push(Message { publish, class }),
                None => volatile.push(publish),
            }
        }
        let changes = if durable.is_empty() {
            Changes::default()
        } else {
            let (now, wall) = clock();
            self.engine.take_changes(Now { mono: now, wall })
        };
        self.delivery.send(changes, durable, volatile);
        self.drive();
        // After the commit that recorded them as requested: a restart never repeats them.
        self.dispatch_contacts(contacts);
    }

    /// A batch of silent bands' device states (volatile: parked when the link has no room).
    fn silent_states(&mut self) {
        let batch = self.silent.take(silent::SILENT_STATES_PER_TURN);
        if batch.is_empty() {
            return;
        }
        let volatile = batch
            .into_iter()
            .map(|d| {
                mqtt::render(
                    &Output::DeviceSilent(d),
                    self.engine.setup(),
                    &self.site.topics,
                    self.site.publish_vitals,
                )
            })
            .collect();
        self.delivery.send(Changes::default(), Vec::new(), volatile);
        self.drive();
    }

    /// Carries out delivery's requests against the store and the link, reporting each back.
    fn drive(&mut self) {
        let (now, _) = clock();
        let was_failing = self.delivery.failing_since().is_some();
        while let Some(io) = self.delivery.poll_io() {
            match io {
                Io::Commit { changes, messages } => {
                    let result = self.store.commit(&changes, &messages);
                    match &result {
                        Ok(_) if !(changes.is_empty() && messages.is_empty()) => {
                            fault_after_commit()
                        }
                        Ok(_) => {}
                        Err(e) if !was_failing => tracing::error!(
                            error = format!("{e:#}"),
                            "state store failed; pages go out from memory (not restart-safe until it recovers)"
                        ),
                        Err(e) => tracing::debug!(error = format!("{e:#}"), "state store still failing"),
                    }
                    self.delivery
                        .committed(now, result.map_err(|e| format!("{e:#}")));
                }
                Io::Read { after, limit } => {
                    let rows = self.store.pending(after, limit);
                    if let Err(e) = &rows {
                        tracing::error!(error = format!("{e:#}"), "cannot read the outbox");
                    }
                    self.delivery.read(now, rows.map_err(|e| format!("{e:#}")));
                }
                Io::Publish { id, message } => {
                    let taken = self.link.publish(id, &message);
                    self.delivery.published(taken);
                }
                Io::MarkSent(ids) => {
                    if let Err(e) = self.store.mark_sent(&ids) {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "cannot mark an outbox row sent; it will be sent again"
                        );
                    }
                }
            }
        }
        if was_failing && self.delivery.failing_since().is_none() {
            tracing::info!("state store works again; what was held is saved");
        }
    }

    /// Why the gateway is degraded (empty: ok).
    fn degraded_reasons(&self, now: std::time::Instant) -> Vec<String> {
        let engine = &self.engine;
        self.health
            .reasons(now, |id| engine.alert(id).is_some_and(|a| !a.is_resolved()))
    }

    /// A loss at start, or a store failing for a minute, pages the supervisors
    /// (`health::StoreHealth`); a change between ok and degraded is published at once.
    fn check_store_health(&mut self) {
        let (now, wall) = clock();
        let was_ok = self.degraded_reasons(now).is_empty();
        self.health.observe(now, self.store_ok());
        let engine = &self.engine;
        let due = self
            .health
            .due_fault(now, |id| engine.alert(id).is_some_and(|a| !a.is_resolved()));
        if let Some(fault) = due {
            let id = self
                .engine
                .raise_gateway_fault(Now { mono: now, wall }, &fault.detail);
            self.health.raised(&fault, &id);
            self.flush();
        }
        if was_ok != self.degraded_reasons(now).is_empty() {
            self.publish_status();
        }
    }

    fn flush_telemetry(&mut self, dropped: u64) {
        self.check_store_health();
        // Records of quiet alerts (silent bands one gateway notice stands for) are written here
        // in batches, never with an alarm's commit; retaken when they fail.
        let (now, wall) = clock();
        let background = self
            .engine
            .take_background(Now { mono: now, wall }, crate::engine::BACKGROUND_BATCH);
        if let Err(e) = self.store.commit(&background, &[]) {
            self.telemetry_failing = true;
            tracing::error!(
                error = format!("{e:#}"),
                "cannot write silent bands' alerts to the state store; trying again in a second"
            );
            self.engine.retake_background(&background);
        }
        let devices = self.engine.take_telemetry(TELEMETRY_ROWS);
        match self.store.commit_telemetry(&devices) {
            Ok(()) => {
                if !devices.is_empty() {
                    self.telemetry_failing = false;
                }
            }
            Err(e) => {
                self.telemetry_failing = true;
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot write band telemetry to the state store; trying again in a second"
                );
                self.engine
                    .retake_telemetry(devices.iter().map(|d| d.device_id));
            }
        }
        let (total, reported) = self.dropped;
        let total = total.max(dropped);
        // Said once per new batch of drops, not on every flush.
        if total > reported {
            tracing::warn!(
                dropped = total - reported,
                total,
                "telemetry adverts dropped because the loop fell behind (alarms are never dropped)"
            );
        }
        self.dropped = (total, total);
        // Said once per new batch of drops: what delivery let go past its bounds.
        let drops = (self.delivery.dropped_held(), self.delivery.parked().1);
        if drops != self.delivery_drops {
            tracing::warn!(
                held_superseded = drops.0,
                parked_dropped = drops.1,
                "delivery let messages go past its bounds: superseded pages held while the store failed, or the oldest status and device states waiting for the broker (first pages are never dropped)"
            );
            self.delivery_drops = drops;
        }
    }

    fn publish_status(&mut self) {
        let wall = Timestamp::now();
        self.published_on_duty = self.on_duty(wall);
        let status = GatewayStatus {
            gateway_id: self.site.gateway_id.clone(),
            started_at: self.site.started_at,
            adapter: self.site.adapter.clone(),
            adapter_ok: self.site.adapter_ok,
            scan: self.site.scan,
            devices_enrolled: self.site.devices_enrolled,
            devices_heard_15m: self
                .engine
                .devices_heard_since(wall - SignedDuration::from_mins(15)),
            open_alerts: self.engine.open_alerts(),
            outbox_len: self.store.outbox_len().unwrap_or(0) as usize,
            frames_accepted: self.engine.intake().accepted(),
            telemetry_dropped: self.dropped.0,
            degraded: !self.degraded_reasons(clock().0).is_empty(),
            modem: self.modem_health(),
            on_duty: self.published_on_duty.clone(),
        };
        let msg = mqtt::status(&self.site.topics, &status);
        self.delivery.volatile(msg);
        self.drive();
    }

    /// Graceful end: commit what is pending, give the broker a moment to take the outbox,
    /// say offline, disconnect. Whatever is not acked stays in the outbox for the next start.
    async fn shutdown(&mut self, events: &mut mpsc::Receiver<LinkEvent>) {
        self.flush();
        while !self.silent.is_empty() {
            self.silent_states();
        }
        let (now, wall) = clock();
        let (held, messages) = self.delivery.take_held();
        let changes = held.then(self.engine.take_changes(Now { mono: now, wall }));
        if let Err(e) = self.store.commit(&changes, &messages) {
            tracing::error!(error = format!("{e:#}"), "cannot save state at shutdown");
        }
        // The quiet alerts' records not written yet.
        let background = self
            .engine
            .take_background(Now { mono: now, wall }, usize::MAX);
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
        while self.delivery.is_connected() && self.store.outbox_len().unwrap_or(0) > 0 {
            match tokio::time::timeout_at(until, events.recv()).await {
                Ok(Some(LinkEvent::Message { .. })) => {}
                Ok(Some(ev)) => self.link_event(ev),
                _ => break,
            }
        }
        let left = self.store.outbox_len().unwrap_or(0);
        let offline = mqtt::last_will(&self.site.topics, &self.site.gateway_id);
        if let Some(id) = self.delivery.volatile_now(offline) {
            self.drive();
            // Let the offline status go out before the DISCONNECT.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(ev) = events.recv().await {
                    if matches!(ev, LinkEvent::PubAcked(acked) if acked == id) {
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

/// How delivery may thin a message out while the store fails; `None`: never stored.
fn class_of(output: &Output) -> Option<Class> {
    match output {
        Output::Notify {
            reason: NotifyReason::New,
            ..
        } => Some(Class::FirstPage),
        Output::Notify {
            staff_id, alert, ..
        } => Some(Class::Latest(format!("notify/{staff_id}/{}", alert.id))),
        Output::AlertChanged(alert) => Some(Class::Latest(format!("alert/{}", alert.id))),
        Output::AlertCleared { alert_id } => Some(Class::Latest(format!("alert/{alert_id}"))),
        Output::DeviceState(_) | Output::DeviceSilent(_) | Output::Contact(_) => None,
    }
}

async fn modem_report(modem: &mut Option<ModemLink>) -> Option<ContactReport> {
    match modem {
        Some(m) => m.reports.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
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

#[cfg(test)]
mod tests;
