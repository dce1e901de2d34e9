//! The broker connection: one tokio task polls rumqttc's `EventLoop` forever, reconnecting
//! with capped back-off, and reports what happened as `LinkEvent`s.
//!
//! # Delivery bookkeeping
//!
//! The caller keeps every message in its durable outbox until it sees `PubAcked(id)` for it.
//! `MqttLink::publish` hands a message to rumqttc without waiting; rumqttc takes requests
//! from its queue in order and reports each one as `Outgoing::Publish(pkid)` (or
//! `Outgoing::AwaitAck(pkid)` first, if the broker acked out of order and the packet id
//! collided). So the link keeps the caller's ids in the same order (`Tracker::queued`), gives
//! each its packet id when rumqttc reports it, and turns the broker's PUBACK for that packet
//! id into `PubAcked(id)`. QoS 0 messages get no PUBACK: they count as acked once written.
//!
//! When the connection drops, rumqttc would keep its unacked publishes and queued requests
//! and re-send them after a reconnect, reusing their packet ids. The link does not let it:
//! under the tracker's lock it drops rumqttc's pending list, drains the request queue and
//! forgets every id it was tracking, then reports `Disconnected`. Every message not yet
//! `PubAcked` is therefore the caller's to re-publish when `Connected` arrives (its outbox
//! already holds it). That may duplicate a message the broker did receive just before the
//! drop (its PUBACK lost): the contract allows it, readers de-duplicate by
//! `alert_id` + `updated_at`. Nothing is lost and a `PubAcked(id)` always means the broker
//! acknowledged that very message. Events rumqttc buffered before the error (a PUBACK, a
//! phone's message) are still delivered.
//!
//! While disconnected, `publish` returns `false` rather than queueing: the message waits in
//! the caller's outbox for `Connected`.
//!
//! The session is persistent (clean_session = false) so that phones' acks sent while the
//! gateway was away are delivered on reconnect; the subscriptions are made again (QoS 1) on
//! every CONNACK anyway, in case the broker lost the session. `Connected` is reported once
//! the broker's SUBACK is in, so anything the caller does after it finds them in place.
//!
//! # Oversized packets
//!
//! Packets up to `MAX_INCOMING_PACKET` are read and handed on (a phone's oversized ack is
//! then refused by `parse_ack` and counted). rumqttc refuses a larger one by dropping the
//! connection before reading it, and the broker would send it again and again: queued for
//! the persistent session, or retained and re-sent on every SUBSCRIBE. The shipped broker
//! config (`max_packet_size` in `config/mosquitto.conf`) keeps such packets out in the first
//! place; for a broker without that limit the link defends itself:
//!
//! - back-off grows across reconnects and is reset only by a connection that stayed up
//!   `STABLE` (a connection killed at every SUBSCRIBE never counts as a success);
//! - after the first oversized packet it connects once with a clean session (which drops the
//!   broker's queue for this gateway, poison and subscriptions included) and from then on
//!   subscribes *carefully*: one topic per SUBSCRIBE (each person's ack topic, given to
//!   `connect_with`), the next only after the previous SUBACK, closed by an UNSUBSCRIBE of
//!   the wildcard whose UNSUBACK marks the end. A broker sends a topic's retained messages
//!   right after that topic's SUBACK, so a drop between two acks names the topic;
//! - that topic is held back (quarantined): the link logs one `error` naming it and the
//!   command that deletes the message, tries that itself (an empty retained message, which
//!   the shipped ACL lets the gateway write), and subscribes it again after the clear, and
//!   later with a growing period while it still fails. Every other topic keeps working and
//!   pages keep going out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
    StateError, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::Publish;

/// Messages handed to rumqttc and not yet written; past it `publish` says no.
pub const PUBLISH_QUEUE: usize = 256;
/// Room in rumqttc's request queue for our own subscribe and disconnect requests.
const CONTROL_ROOM: usize = 16;
/// Largest packet read from the broker, chosen: the largest thing the gateway must read is a
/// phone's ack (`MAX_ACK_PAYLOAD`, 4 KiB), but a phone message up to this size is still
/// read and refused (counted as `too_large`) rather than costing the connection. It must be
/// at least the broker's `max_packet_size` (256 KiB in the shipped `config/mosquitto.conf`),
/// so that anything the broker accepts can be read; a larger packet can come only from a
/// broker without that limit (see "Oversized packets" above). Memory: one packet at a time.
pub const MAX_INCOMING_PACKET: usize = 2 * 1024 * 1024;
const MAX_OUTGOING_PACKET: usize = 256 * 1024;
const EVENT_QUEUE: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection up this long resets the back-off: shorter ones count as failures.
const STABLE: Duration = Duration::from_secs(5);
/// A quarantined topic that failed again after its clear waits this long, doubling.
const QUARANTINE_MIN: Duration = Duration::from_secs(60);
const QUARANTINE_MAX: Duration = Duration::from_secs(3600);

/// The broker to connect to, from a URL parsed once (`config::parse_broker_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The URL as written (`mqtt://host:port` or `mqtts://host:port`), for logs.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub broker: Broker,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA certificates trusted for `mqtts://`; without it, the system's.
    pub ca_file: Option<PathBuf>,
    /// At least one second.
    pub keep_alive: Duration,
    /// Published by the broker when the gateway disappears (see `mqtt::last_will`).
    pub last_will: Publish,
}

/// What the link reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker accepted us (again) and the subscriptions are made: re-publish everything
    /// not yet `PubAcked`.
    Connected,
    /// The connection dropped; nothing sent is tracked any more. Reconnecting by itself.
    Disconnected(String),
    /// The broker has the message the caller published with this id.
    PubAcked(u64),
    /// A message on a subscribed topic. `retain`: the broker sent it because it is retained
    /// (on our SUBSCRIBE), not because someone published it just now.
    Message {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
}

/// The caller's ids between `publish` and the broker's PUBACK.
#[derive(Debug, Default)]
struct Tracker {
    connected: bool,
    shutdown: bool,
    /// Handed to rumqttc, not yet given a packet id, in request order.
    queued: VecDeque<u64>,
    /// Taken by rumqttc but waiting for its packet id to be free (`Outgoing::AwaitAck`).
    collided: Option<u64>,
    /// Written, waiting for the PUBACK, by packet id.
    inflight: HashMap<u16, u64>,
}

impl Tracker {
    /// rumqttc wrote the next request with this packet id; returns the id acked by that
    /// (QoS 0 only).
    fn written(&mut self, pkid: u16) -> Option<u64> {
        let id = self.collided.take().or_else(|| self.queued.pop_front())?;
        if pkid == 0 {
            return Some(id);
        }
        if let Some(lost) = self.inflight.insert(pkid, id) {
            warn!(id = lost, pkid, "packet id reused before its PUBACK");
        }
        None
    }

    fn acked(&mut self, pkid: u16) -> Option<u64> {
        self.inflight.remove(&pkid)
    }

    fn forget(&mut self) {
        self.queued.clear();
        self.collided = None;
        self.inflight.clear();
    }
}

/// The sending side of the link. Cheap to clone.
#[derive(Clone)]
pub struct MqttLink {
    client: AsyncClient,
    tracker: Arc<Mutex<Tracker>>,
}

fn lock(t: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    // The tracker holds no invariant a panic could break halfway: keep going.
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl MqttLink {
    /// Hands `msg` to the broker connection without ever waiting. `false`: not connected, or
    /// too much is queued already; keep it in the outbox and send it again later (at the
    /// latest on `Connected`). `true`: `PubAcked(id)` follows unless `Disconnected` does.
    pub fn publish(&self, id: u64, msg: &Publish) -> bool {
        let mut t = lock(&self.tracker);
        if !t.connected || t.shutdown || t.queued.len() >= PUBLISH_QUEUE {
            return false;
        }
        match self.client.try_publish(
            msg.topic.as_str(),
            qos(msg.qos),
            msg.retain,
            msg.payload.clone(),
        ) {
            Ok(()) => {
                t.queued.push_back(id);
                true
            }
            Err(e) => {
                debug!(id, topic = %msg.topic, error = %e, "publish not queued");
                false
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        lock(&self.tracker).connected
    }

    /// Says goodbye to the broker (so it does not publish the last will) and ends the task.
    /// Publish the offline status first.
    pub fn disconnect(&self) {
        let mut t = lock(&self.tracker);
        t.shutdown = true;
        if let Err(e) = self.client.try_disconnect() {
            debug!(error = %e, "disconnect not queued");
        }
    }
}

/// Trusts the CA certificates in `ca_file`, or without it the system's (`/etc/ssl/certs`, or
/// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), as `mqtt.ca_file` is documented.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca_file) => {
            for cert in CertificateDer::pem_file_iter(ca_file)
                .with_context(|| format!("reading CA file {}", ca_file.display()))?
            {
                let cert =
                    cert.with_context(|| format!("parsing CA file {}", ca_file.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("CA certificate in {}", ca_file.display()))?;
            }
            if roots.is_empty() {
                bail!("no certificate found in CA file {}", ca_file.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                warn!(error = %e, "reading the system's CA certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            debug!(added, ignored, "the system's CA certificates");
            if roots.is_empty() {
                bail!("mqtts:// without mqtt.ca_file trusts the system's CA certificates, and none were found: install ca-certificates, or set mqtt.ca_file");
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn mqtt_options(s: &MqttSettings) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(s.client_id.clone(), s.broker.host.clone(), s.broker.port);
    if !s.keep_alive.is_zero() && s.keep_alive < Duration::from_secs(1) {
        bail!("MQTT keep alive must be at least 1 s");
    }
    o.set_keep_alive(s.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
        .set_pending_throttle(Duration::ZERO)
        .set_last_will(LastWill::new(
            s.last_will.topic.clone(),
            s.last_will.payload.clone(),
            qos(s.last_will.qos),
            s.last_will.retain,
        ));
    match (&s.username, &s.password) {
        (Some(u), p) => {
            o.set_credentials(u.clone(), p.clone().unwrap_or_default());
        }
        (None, Some(_)) => bail!("an MQTT password needs a username"),
        (None, None) => {}
    }
    if s.broker.tls {
        let config = tls_config(s.ca_file.as_deref())?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    }
    Ok(o)
}

/// Starts the link: connects in the background (call inside a tokio runtime) and keeps
/// reconnecting forever. `subscribe` filters are subscribed at QoS 1 on every connect.
pub fn connect(
    settings: MqttSettings,
    subscribe: Vec<String>,
) -> anyhow::Result<(MqttLink, mpsc::Receiver<LinkEvent>)> {
    connect_with(settings, subscribe, Vec::new())
}

/// `connect`, with the topics the filters stand for (every person's ack topic), subscribed
/// one by one instead of the filters once the broker has sent a packet too large to read
/// (see "Oversized packets"). Empty: the filters themselves, one by one.
pub fn connect_with(
    settings: MqttSettings,
    subscribe: Vec<String>,
    one_by_one: Vec<String>,
) -> anyhow::Result<(MqttLink, mpsc::Receiver<LinkEvent>)> {
    let options = mqtt_options(&settings)
        .with_context(|| format!("MQTT settings for {}", settings.broker))?;
    let runtime = tokio::runtime::Handle::try_current()
        .context("the MQTT link must be started inside a tokio runtime")?;
    let (client, mut eventloop) = AsyncClient::new(options, PUBLISH_QUEUE + CONTROL_ROOM);
    // A page is one small packet: with Nagle it waits for the ACK of the previous one (up to
    // the peer's delayed-ACK time, ~40 ms on Linux). bench/run.sh saw that cluster at low load.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let link = MqttLink {
        client: client.clone(),
        tracker: tracker.clone(),
    };
    let careful = if one_by_one.is_empty() {
        subscribe.clone()
    } else {
        one_by_one
    };
    let subs = Subscriptions::new(subscribe, careful);
    runtime.spawn(run(eventloop, client, tracker, subs, tx, settings.broker));
    Ok((link, rx))
}

/// Turns one rumqttc event into link events.
fn handle(event: Event, t: &mut Tracker, out: &mut Vec<LinkEvent>) {
    match event {
        Event::Incoming(Incoming::PubAck(a)) => {
            out.extend(t.acked(a.pkid).map(LinkEvent::PubAcked))
        }
        Event::Incoming(Incoming::PubComp(c)) => {
            out.extend(t.acked(c.pkid).map(LinkEvent::PubAcked))
        }
        Event::Incoming(Incoming::Publish(p)) => out.push(LinkEvent::Message {
            topic: p.topic,
            payload: p.payload.to_vec(),
            retain: p.retain,
        }),
        Event::Incoming(Incoming::SubAck(s)) => check_suback(&s),
        Event::Outgoing(Outgoing::Publish(pkid)) => {
            out.extend(t.written(pkid).map(LinkEvent::PubAcked))
        }
        Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
            debug!(pkid, "packet id collision: waiting for the broker's ack");
            t.collided = t.queued.pop_front();
        }
        _ => {}
    }
}

fn check_suback(s: &rumqttc::SubAck) {
    for code in &s.return_codes {
        if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
            warn!(
                pkid = s.pkid,
                "the broker refused a subscription (check its ACL)"
            );
        }
    }
}

/// Connected and subscribed: the caller may publish.
fn ready(tracker: &Mutex<Tracker>, connected: &mut bool) -> LinkEvent {
    lock(tracker).connected = true;
    *connected = true;
    LinkEvent::Connected
}

/// What an installer should check, for the failures that are a setting, not an outage.
fn hint(e: &ConnectionError) -> Option<&'static str> {
    use rumqttc::ConnectReturnCode::*;
    match e {
        // Mosquitto answers a wrong password with "not authorised" (5) on MQTT 3.1.1.
        ConnectionError::ConnectionRefused(BadUserNamePassword | NotAuthorized) => Some(
            "the broker refused the user name or password: check mqtt.username and the password in mqtt.password_file against the broker's password file",
        ),
        ConnectionError::ConnectionRefused(BadClientId) => {
            Some("the broker refused the client id (the gateway_id)")
        }
        ConnectionError::Tls(_) => Some(
            "TLS failed: mqtt.ca_file must hold the CA that signed the broker's certificate, and that certificate must name the host in mqtt.url",
        ),
        _ => None,
    }
}

fn is_oversize(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

/// A topic held back after an unreadable packet was sent on it.
#[derive(Debug, Clone)]
struct Quarantined {
    /// When to clear it and subscribe it again.
    retry_at: Instant,
    /// The wait after the next failure.
    period: Duration,
}

/// What to subscribe on each connection, and what an unreadable packet taught the link.
#[derive(Debug)]
struct Subscriptions {
    /// The filters, in one SUBSCRIBE (until the first unreadable packet).
    filters: Vec<String>,
    /// The topics subscribed one by one once `careful`.
    topics: Vec<String>,
    careful: bool,
    quarantine: BTreeMap<String, Quarantined>,
    /// This connection's careful subscriptions still to send.
    queue: VecDeque<String>,
    /// The topic whose SUBACK was read last on this connection and whose retained messages
    /// may still be arriving (until the next SUBACK or the closing UNSUBACK).
    last_subacked: Option<String>,
    /// Quarantined topics subscribed again on this connection (after their clear).
    retrying: Vec<String>,
    /// The SUBSCRIBE (or the closing UNSUBSCRIBE) awaiting its ack.
    awaiting: bool,
    /// The topic of that SUBSCRIBE.
    subscribing: Option<String>,
}

impl Subscriptions {
    fn new(filters: Vec<String>, topics: Vec<String>) -> Subscriptions {
        Subscriptions {
            filters,
            topics,
            careful: false,
            quarantine: BTreeMap::new(),
            queue: VecDeque::new(),
            last_subacked: None,
            retrying: Vec::new(),
            awaiting: false,
            subscribing: None,
        }
    }

    /// A new connection: forget this connection's progress.
    fn reset(&mut self) {
        self.queue.clear();
        self.last_subacked = None;
        self.retrying.clear();
        self.awaiting = false;
        self.subscribing = None;
    }

    /// Careful mode, at CONNACK: clear the quarantined topics that are due (an empty retained
    /// message; the broker handles it before the SUBSCRIBE that follows) and queue every
    /// topic but those still waiting.
    fn plan(&mut self, client: &AsyncClient, now: Instant) {
        self.reset();
        for topic in &self.topics {
            match self.quarantine.get(topic) {
                Some(q) if q.retry_at > now => continue,
                Some(_) => {
                    if let Err(e) =
                        client.try_publish(topic.as_str(), QoS::AtLeastOnce, true, Vec::new())
                    {
                        debug!(topic, error = %e, "clear not queued");
                    }
                    self.retrying.push(topic.clone());
                }
                None => {}
            }
            self.queue.push_back(topic.clone());
        }
        // Quarantined ones last: if one fails again, the others were tried first.
        let retrying = self.retrying.clone();
        self.queue.retain(|t| !retrying.contains(t));
        self.queue.extend(retrying);
    }

    /// Sends the next careful SUBSCRIBE, or the closing UNSUBSCRIBE; `true` once that is done
    /// too (nothing more to send).
    fn next(&mut self, client: &AsyncClient) -> bool {
        let sent = match self.queue.pop_front() {
            Some(topic) => {
                self.subscribing = Some(topic.clone());
                client.try_subscribe(topic, QoS::AtLeastOnce)
            }
            // Also drops a wildcard left in the persistent session from before.
            None => match self.filters.first() {
                Some(f) if !self.topics.iter().eq(self.filters.iter()) => {
                    client.try_unsubscribe(f.clone())
                }
                _ => return true,
            },
        };
        if let Err(e) = sent {
            warn!(error = %e, "could not queue a subscription");
        }
        self.awaiting = true;
        false
    }

    /// An unreadable packet arrived: which topic it was on, if this connection's order of
    /// acks tells. Quarantines that topic; `true` if it is the first time (log the error).
    fn blame(&mut self, now: Instant) -> Option<(String, bool)> {
        let topic = self.last_subacked.take()?;
        let first = match self.quarantine.get_mut(&topic) {
            Some(q) => {
                // Failed again after its clear: wait, longer each time.
                q.retry_at = now + q.period;
                q.period = (q.period * 2).min(QUARANTINE_MAX);
                false
            }
            None => {
                // Cleared and retried on the next connection at once.
                self.quarantine.insert(
                    topic.clone(),
                    Quarantined {
                        retry_at: now,
                        period: QUARANTINE_MIN,
                    },
                );
                true
            }
        };
        Some((topic, first))
    }

    /// The careful subscriptions are all made and their retained messages read: the topics
    /// retried on this connection are readable again.
    fn done(&mut self) {
        self.last_subacked = None;
        for topic in self.retrying.drain(..) {
            if self.quarantine.remove(&topic).is_some() {
                info!(
                    topic,
                    "the unreadable message is gone: phone actions on this topic are read again"
                );
            }
        }
    }
}

/// What an installer must do about an unreadable retained message, as one line.
fn fix_for(topic: &str, broker: &Broker) -> String {
    let (host, port) = (&broker.host, broker.port);
    format!(
        "delete the retained message (the gateway tries this itself): mosquitto_pub -h {host} -p {port} -u <gateway user> -P <password> -r -n -t '{topic}'; and set max_packet_size in the broker's config as config/mosquitto.conf does"
    )
}

/// What the connection task keeps between rumqttc events.
struct Session {
    client: AsyncClient,
    tracker: Arc<Mutex<Tracker>>,
    subs: Subscriptions,
    broker: Broker,
    backoff: Duration,
    connected: bool,
    /// Set after an oversized packet: this connection is the clean one that drops the
    /// broker's queue for us; leave it at once and resume the persistent session.
    dropping_session: bool,
    /// Set once the clean session is made and left: that drop is the plan, not a failure.
    leaving_clean: bool,
    awaiting_suback: bool,
    connack_at: Option<Instant>,
    unknown_reported: bool,
    /// Events for the caller, sent after each step.
    out: Vec<LinkEvent>,
}

/// What the task does after an event.
enum Next {
    Go,
    /// Wait this long before reconnecting.
    Wait(Duration),
    Stop,
}

async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    tracker: Arc<Mutex<Tracker>>,
    subs: Subscriptions,
    tx: mpsc::Sender<LinkEvent>,
    broker: Broker,
) {
    let mut session = Session {
        client,
        tracker,
        subs,
        broker,
        backoff: BACKOFF_MIN,
        connected: false,
        dropping_session: false,
        leaving_clean: false,
        awaiting_suback: false,
        connack_at: None,
        unknown_reported: false,
        out: Vec::new(),
    };
    loop {
        if tx.is_closed() {
            debug!("MQTT link: nobody listens any more, stopping");
            return;
        }
        let next = match eventloop.poll().await {
            Ok(event) => session.on_event(&mut eventloop, event),
            Err(e) => session.on_error(&mut eventloop, &e),
        };
        for ev in session.out.drain(..) {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        match next {
            Next::Go => {}
            Next::Wait(backoff) => tokio::time::sleep(backoff).await,
            Next::Stop => return,
        }
    }
}

impl Session {
    fn on_event(&mut self, eventloop: &mut EventLoop, event: Event) -> Next {
        let ready = |s: &mut Session| {
            let ev = ready(&s.tracker, &mut s.connected);
            s.out.push(ev);
        };
        match event {
            Event::Incoming(Incoming::ConnAck(ack)) if self.dropping_session => {
                info!(
                    session_present = ack.session_present,
                    "clean session made; resuming the persistent one"
                );
                self.dropping_session = false;
                self.leaving_clean = true;
                eventloop.mqtt_options.set_clean_session(false);
                if let Err(e) = self.client.try_disconnect() {
                    warn!(error = %e, "could not leave the clean session");
                }
            }
            Event::Incoming(Incoming::ConnAck(ack)) => {
                self.connack_at = Some(Instant::now());
                info!(url = %self.broker.url, session_present = ack.session_present, careful = self.subs.careful, "MQTT connected");
                self.subscribe(eventloop);
            }
            // `Connected` waits for the subscriptions, so that whatever the caller does next
            // (a test's phone, a re-published alert someone answers) finds them in place.
            Event::Incoming(Incoming::SubAck(s)) if self.awaiting_suback => {
                self.awaiting_suback = false;
                check_suback(&s);
                ready(self);
            }
            Event::Incoming(Incoming::SubAck(s)) if self.subs.awaiting => {
                check_suback(&s);
                self.subs.awaiting = false;
                // The topic just subscribed: its retained messages come next.
                self.subs.last_subacked = self.subs.subscribing.take();
                if self.subs.next(&self.client) {
                    self.subs.done();
                }
            }
            Event::Incoming(Incoming::UnsubAck(_)) if self.subs.awaiting => {
                self.subs.awaiting = false;
                self.subs.done();
            }
            Event::Outgoing(Outgoing::Disconnect) if lock(&self.tracker).shutdown => {
                {
                    let mut t = lock(&self.tracker);
                    t.connected = false;
                    t.forget();
                }
                info!("MQTT disconnected on request");
                self.out
                    .push(LinkEvent::Disconnected("disconnect requested".into()));
                return Next::Stop;
            }
            event => handle(event, &mut lock(&self.tracker), &mut self.out),
        }
        Next::Go
    }

    /// After CONNACK: the subscriptions, all at once or (careful) one topic at a time.
    fn subscribe(&mut self, eventloop: &mut EventLoop) {
        if self.subs.careful {
            // Pages go out at once: the topic-by-topic pass only concerns what phones send,
            // and a pass that never completes (a bad packet on no topic it can name) must not
            // keep the outbox from the broker.
            self.subs.plan(&self.client, Instant::now());
            self.subs.next(&self.client);
            let ev = ready(&self.tracker, &mut self.connected);
            self.out.push(ev);
        } else if self.subs.filters.is_empty() {
            let ev = ready(&self.tracker, &mut self.connected);
            self.out.push(ev);
        } else {
            let filters = self
                .subs
                .filters
                .iter()
                .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
            if let Err(e) = self.client.try_subscribe_many(filters) {
                // Cannot happen (the request queue keeps room for it); retry afresh.
                warn!(error = %e, "could not queue the subscriptions; reconnecting");
                eventloop.clean();
                eventloop.network = None;
            } else {
                self.awaiting_suback = true;
            }
        }
    }

    /// The connection failed or dropped: hand on what was read, forget what was in flight,
    /// name an unreadable topic, and say how long to wait.
    fn on_error(&mut self, eventloop: &mut EventLoop, e: &ConnectionError) -> Next {
        let oversize = is_oversize(e);
        self.awaiting_suback = false;
        self.drain_and_forget(eventloop);
        let now = Instant::now();
        if self.connack_at.take().is_some_and(|t| now - t >= STABLE) {
            self.backoff = BACKOFF_MIN;
        }
        if oversize {
            self.report_oversize(now, e);
            self.subs.careful = true;
            eventloop.mqtt_options.set_clean_session(true);
            self.dropping_session = true;
        }
        self.subs.reset();
        if self.connected {
            self.out.push(LinkEvent::Disconnected(e.to_string()));
            self.connected = false;
        }
        if std::mem::take(&mut self.leaving_clean) && !oversize {
            debug!("left the clean session; reconnecting with the persistent one");
            return Next::Go;
        }
        let (url, backoff) = (&self.broker.url, self.backoff);
        match hint(e) {
            Some(hint) => {
                warn!(%url, error = %e, hint, retry_in = ?backoff, "MQTT connection failed")
            }
            None if oversize => {
                debug!(%url, error = %e, retry_in = ?backoff, "MQTT connection dropped (oversized packet)")
            }
            None => warn!(%url, error = %e, retry_in = ?backoff, "MQTT connection failed"),
        }
        self.backoff = (backoff * 2).min(BACKOFF_MAX);
        Next::Wait(backoff)
    }

    /// Delivers what rumqttc read before the error, then drops everything it would re-send by
    /// itself: the caller re-publishes on `Connected`.
    fn drain_and_forget(&mut self, eventloop: &mut EventLoop) {
        let mut t = lock(&self.tracker);
        for event in eventloop.state.events.drain(..).collect::<Vec<_>>() {
            // rumqttc reads packets in batches: the SUBACK just before the unreadable packet
            // may be among them, not yet handed out by `poll`.
            if matches!(event, Event::Incoming(Incoming::SubAck(_))) && self.subs.awaiting {
                self.subs.awaiting = false;
                self.subs.last_subacked = self.subs.subscribing.take();
            }
            if matches!(event, Event::Incoming(Incoming::UnsubAck(_))) && self.subs.awaiting {
                self.subs.awaiting = false;
                self.subs.last_subacked = None;
            }
            handle(event, &mut t, &mut self.out);
        }
        eventloop.clean();
        eventloop.pending.clear();
        eventloop.state.events.clear();
        t.forget();
        t.connected = false;
    }

    /// One `error` naming the topic and the fix; quieter when it is known already.
    fn report_oversize(&mut self, now: Instant, e: &ConnectionError) {
        match self.subs.blame(now) {
            Some((topic, true)) => error!(
                topic,
                limit = MAX_INCOMING_PACKET,
                fix = fix_for(&topic, &self.broker),
                "a retained message on this topic is larger than the gateway reads, so the broker connection dropped; phone actions on it are not read until it is deleted, paging and every other topic go on"
            ),
            Some((topic, false)) => warn!(
                topic,
                "the unreadable message is still there; subscribing it again later"
            ),
            // Before the careful pass, the pass itself will name the topic.
            None if !self.subs.careful => warn!(
                limit = MAX_INCOMING_PACKET,
                "the broker sent a packet larger than the gateway reads and the connection dropped; dropping this gateway's queued messages with a clean session and subscribing topic by topic to find it"
            ),
            None if !self.unknown_reported => {
                self.unknown_reported = true;
                error!(
                    limit = MAX_INCOMING_PACKET,
                    fix = "set max_packet_size in the broker's config as config/mosquitto.conf does",
                    "the broker keeps sending a packet larger than the gateway reads, on no topic the gateway can tell, and the connection drops; reconnecting with back-off"
                );
            }
            None => debug!(error = %e, "oversized packet from the broker again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_an_error() {
        let s = MqttSettings {
            broker: crate::config::parse_broker_url("mqtts://broker.local").unwrap(),
            client_id: "gw".into(),
            username: Some("gw".into()),
            password: Some("pw".into()),
            ca_file: None,
            keep_alive: Duration::from_secs(30),
            last_will: Publish {
                topic: "t".into(),
                payload: vec![],
                qos: 1,
                retain: true,
            },
        };
        let missing = MqttSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..s.clone()
        };
        assert!(mqtt_options(&missing).is_err());
        let plain = MqttSettings {
            broker: crate::config::parse_broker_url("mqtt://127.0.0.1:1883").unwrap(),
            ..s
        };
        let o = mqtt_options(&plain).unwrap();
        assert!(!o.clean_session());
        assert_eq!(o.max_packet_size(), MAX_INCOMING_PACKET);
    }

    #[test]
    fn an_unreadable_topic_is_named_by_the_last_suback_and_retried_with_growing_waits() {
        let t0 = Instant::now();
        let mut subs = Subscriptions::new(
            vec!["p/ack/+".into()],
            vec!["p/ack/li".into(), "p/ack/zhang".into()],
        );
        // Dropped before any SUBACK on this connection: no topic can be named.
        assert_eq!(subs.blame(t0), None);
        // Dropped after zhang's SUBACK: zhang, the first time (log the error), retried at once.
        subs.last_subacked = Some("p/ack/zhang".into());
        assert_eq!(subs.blame(t0), Some(("p/ack/zhang".into(), true)));
        assert_eq!(subs.quarantine["p/ack/zhang"].retry_at, t0);
        // It fails again after its clear: a minute, then two, ... at most an hour; no error.
        let mut waits = Vec::new();
        for _ in 0..8 {
            subs.last_subacked = Some("p/ack/zhang".into());
            assert_eq!(subs.blame(t0), Some(("p/ack/zhang".into(), false)));
            waits.push(subs.quarantine["p/ack/zhang"].retry_at - t0);
        }
        let mins: Vec<u64> = waits.iter().map(|d| d.as_secs() / 60).collect();
        assert_eq!(mins, [1, 2, 4, 8, 16, 32, 60, 60]);
        // A connection that subscribed it again and read past it: readable again.
        subs.retrying.push("p/ack/zhang".into());
        subs.done();
        assert!(subs.quarantine.is_empty());
    }

    #[test]
    fn ids_follow_packet_ids_in_request_order() {
        let mut t = Tracker::default();
        t.queued.extend([10, 11, 12, 13]);
        assert_eq!(t.written(1), None);
        assert_eq!(t.written(0), Some(11)); // QoS 0: acked when written
        assert_eq!(t.written(2), None);
        assert_eq!(t.acked(2), Some(12));
        assert_eq!(t.acked(2), None); // a duplicate PUBACK acks nothing
        assert_eq!(t.acked(1), Some(10));
        // A collision: rumqttc takes the request, then writes it once pkid 5 is free.
        t.inflight.insert(5, 99);
        t.collided = t.queued.pop_front();
        assert_eq!(t.acked(5), Some(99));
        assert_eq!(t.written(5), None);
        assert_eq!(t.acked(5), Some(13));
        t.queued.push_back(20);
        t.written(3);
        t.forget();
        assert_eq!(t.acked(3), None);
    }
}
