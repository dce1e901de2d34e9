//! The duty phones of the demo: one MQTT client that reads what every phone receives, prints
//! it as a person would read it, and answers for the simulated staff as the contract says a
//! phone app does (`{p}/ack/{staff_id}`): nobody on tier 1 answers, a person first paged at
//! tier 2 acks, goes on scene and resolves.
//!
//! It reads the wire documents as any phone app would (JSON by key), not the engine's types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::adapters::mqtt::Topics;
use crate::config::Config;

/// How long the simulated staff take for each step.
const ACK_AFTER: Duration = Duration::from_secs(2);
const ON_SCENE_AFTER: Duration = Duration::from_secs(3);
const RESOLVE_AFTER: Duration = Duration::from_secs(3);

pub struct Phones {
    client: AsyncClient,
    events: EventLoop,
    topics: Topics,
    staff_names: BTreeMap<String, String>,
    /// Resident names by band.
    residents: BTreeMap<u64, String>,
    started: Instant,
    /// The alert the demo follows: the first one paged.
    alert_id: Option<String>,
    /// Who was paged while the alert was at tier 1 (they never answer).
    tier1: BTreeSet<String>,
    /// The tier-2 person who answers.
    responder: Option<String>,
    /// Phone actions due: (when, staff, action).
    due: Vec<(Instant, String, &'static str)>,
    /// What the alert topic showed, in order, without repeats.
    states: Vec<String>,
    last_tier: u8,
    tiers: BTreeSet<u8>,
    pages: BTreeMap<String, u32>,
    acked_by: Option<String>,
    resolution: Option<String>,
    bands_seen: BTreeSet<u64>,
    /// Someone claimed the alert who is not a scripted phone (a person on the duty console):
    /// the scripted phones step back and the demo waits for that person.
    person: Arc<AtomicBool>,
}

/// What the phones saw, for the summary.
pub struct Summary {
    alert_id: String,
    states: Vec<String>,
    tiers: BTreeSet<u8>,
    pages: Vec<(String, u32)>,
    acked_by: Option<String>,
    resolution: Option<String>,
    took: Duration,
}

pub const EVERY_STATE: [&str; 5] = ["open", "acknowledged", "on_scene", "resolved", "cleared"];

impl Summary {
    /// Every state seen, in the contract's order.
    pub fn complete(&self) -> bool {
        self.states == EVERY_STATE
    }

    pub fn print(&self) {
        let tiers: Vec<String> = self.tiers.iter().map(u8::to_string).collect();
        let pages: Vec<String> = self
            .pages
            .iter()
            .map(|(who, n)| format!("{who} {n}"))
            .collect();
        println!();
        println!("summary of alert {}", self.alert_id);
        println!("  states seen: {}", self.states.join(" → "));
        println!("  tiers paged: {}", tiers.join(", "));
        println!("  pages:       {}", pages.join(", "));
        println!(
            "  acked by:    {}; resolution: {}",
            self.acked_by.as_deref().unwrap_or("nobody"),
            self.resolution.as_deref().unwrap_or("none")
        );
        println!("demo finished after {:.1} s", self.took.as_secs_f64());
    }
}

impl Phones {
    /// Connects and subscribes; returns once the broker confirmed the subscriptions.
    pub async fn connect(cfg: &Config, topics: Topics, port: u16) -> anyhow::Result<Phones> {
        let mut options = MqttOptions::new("bandgate-demo-phones", "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(10))
            .set_clean_session(true)
            .set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut events) = AsyncClient::new(options, 64);
        let prefix = topics.prefix().to_string();
        for filter in ["notify/#", "alerts/#", "devices/+/state"] {
            client
                .subscribe(format!("{prefix}/{filter}"), QoS::AtLeastOnce)
                .await
                .context("subscribing the phones")?;
        }
        let mut acked = 0;
        let until = Instant::now() + Duration::from_secs(10);
        while acked < 3 {
            match tokio::time::timeout_at(until, events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("the phones cannot reach the broker on port {port}: {e}"),
                Err(_) => bail!("the broker did not confirm the phones' subscriptions in 10 s"),
            }
        }
        let staff_names = cfg
            .setup
            .staff
            .values()
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect();
        let residents = cfg
            .setup
            .residents
            .values()
            .map(|r| (u64::from(r.device_id), r.name.clone()))
            .collect();
        Ok(Phones {
            residents,
            client,
            events,
            topics,
            staff_names,
            started: Instant::now(),
            alert_id: None,
            tier1: BTreeSet::new(),
            responder: None,
            due: Vec::new(),
            states: Vec::new(),
            last_tier: 0,
            tiers: BTreeSet::new(),
            pages: BTreeMap::new(),
            acked_by: None,
            resolution: None,
            bands_seen: BTreeSet::new(),
            person: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Set once a person (not a scripted phone) claimed the followed alert.
    pub fn person_took_over(&self) -> Arc<AtomicBool> {
        self.person.clone()
    }

    /// Shows and answers pages until the followed alert's retained copy is cleared.
    pub async fn run(mut self) -> anyhow::Result<Summary> {
        loop {
            self.due.sort_by_key(|(t, _, _)| *t);
            let next = self.due.first().map(|(t, _, _)| *t);
            tokio::select! {
                ev = self.events.poll() => match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if self.message(&p.topic, &p.payload) {
                            return Ok(self.summary());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.line("phones", &format!("connection to the broker lost: {e}; retrying"));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
                _ = sleep_until(next) => {
                    let (_, staff, action) = self.due.remove(0);
                    self.act(&staff, action)?;
                }
            }
        }
    }

    fn summary(&self) -> Summary {
        Summary {
            alert_id: self.alert_id.clone().unwrap_or_default(),
            states: self.states.clone(),
            tiers: self.tiers.clone(),
            pages: self
                .pages
                .iter()
                .map(|(id, n)| (self.who(id), *n))
                .collect(),
            acked_by: self.acked_by.as_deref().map(|id| self.who(id)),
            resolution: self.resolution.clone(),
            took: self.started.elapsed(),
        }
    }

    fn who(&self, id: &str) -> String {
        match self.staff_names.get(id) {
            Some(name) => format!("{name} ({id})"),
            None => id.to_string(),
        }
    }

    fn line(&self, what: &str, rest: &str) {
        let clock = jiff::Zoned::now().strftime("%H:%M:%S");
        let since = self.started.elapsed().as_secs_f64();
        println!("{clock} {since:>5.1}s  {what:<6} {rest}");
    }

    /// Handles one message; true once the followed alert was cleared.
    fn message(&mut self, topic: &str, payload: &[u8]) -> bool {
        let prefix = self.topics.prefix();
        let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
            return false;
        };
        let doc: Option<Value> = serde_json::from_slice(payload).ok();
        if let Some(staff) = rest.strip_prefix("notify/") {
            if let Some(doc) = doc {
                self.page(staff, &doc);
            }
        } else if let Some(alert_id) = rest.strip_prefix("alerts/") {
            match doc {
                Some(doc) => self.alert(&doc),
                None if payload.is_empty() && self.alert_id.as_deref() == Some(alert_id) => {
                    self.line(
                        "alert",
                        &format!(
                            "{alert_id} cleared: the retained copy is removed (empty payload)"
                        ),
                    );
                    self.states.push("cleared".into());
                    return true;
                }
                None => {}
            }
        } else if rest.starts_with("devices/") {
            if let Some(doc) = doc {
                self.band(&doc);
            }
        }
        false
    }

    /// The first state document of each band: the heartbeats reach the gateway.
    fn band(&mut self, doc: &Value) {
        let Some(id) = doc["device_id"].as_u64() else {
            return;
        };
        if self.bands_seen.insert(id) {
            self.line(
                "band",
                &format!(
                    "{id} ({}) heard: battery {}%, rssi {}",
                    self.residents.get(&id).map(String::as_str).unwrap_or("?"),
                    doc["battery_pct"],
                    doc["rssi"]
                ),
            );
        }
    }

    /// A page on one person's phone.
    fn page(&mut self, staff: &str, note: &Value) {
        let alert = &note["alert"];
        let reason = note["reason"].as_str().unwrap_or("?");
        let alert_id = alert["alert_id"].as_str().unwrap_or("?");
        let tier = alert["tier"].as_u64().unwrap_or(0) as u8;
        if self.alert_id.is_none() {
            self.alert_id = Some(alert_id.to_string());
        }
        if self.alert_id.as_deref() != Some(alert_id) {
            return;
        }
        *self.pages.entry(staff.to_string()).or_default() += 1;
        self.tiers.insert(tier);
        let acked = match alert["acked_by"].as_str() {
            Some(by) => format!(", acked by {}", self.who(by)),
            None => String::new(),
        };
        self.line(
            "page",
            &format!(
                "→ {}  [{reason}, tier {tier}{acked}]  {}",
                self.who(staff),
                alert["text"].as_str().unwrap_or("")
            ),
        );
        if tier == 1 && reason == "new" {
            self.tier1.insert(staff.to_string());
        }
        // The first person paged beyond tier 1 answers: the phone reports the page delivered
        // at once, and the person claims the alert a moment later.
        if tier >= 2
            && self.responder.is_none()
            && !self.tier1.contains(staff)
            && !self.person.load(Ordering::Relaxed)
        {
            self.responder = Some(staff.to_string());
            self.due
                .push((Instant::now(), staff.to_string(), "delivered"));
            self.due
                .push((Instant::now() + ACK_AFTER, staff.to_string(), "ack"));
        }
    }

    /// The alert's retained document changed.
    fn alert(&mut self, doc: &Value) {
        let alert_id = doc["alert_id"].as_str().unwrap_or("?");
        if self.alert_id.is_none() {
            self.alert_id = Some(alert_id.to_string());
        }
        if self.alert_id.as_deref() != Some(alert_id) {
            return;
        }
        let state = doc["state"].as_str().unwrap_or("?").to_string();
        let tier = doc["tier"].as_u64().unwrap_or(0) as u8;
        if self.states.last() == Some(&state) && tier == self.last_tier {
            return; // only `notified` or `delivered_to` changed
        }
        let new_state = self.states.last() != Some(&state);
        self.last_tier = tier;
        let detail = self.detail(doc, &state, tier, new_state);
        self.line("alert", &format!("{alert_id} {state}: {detail}"));
        if state == "acknowledged" && new_state && self.person.load(Ordering::Relaxed) {
            self.line(
                "phones",
                "a person claimed it on the duty console: the scripted phones step back; finish it there (已到场, 处理完毕)",
            );
        }
        if new_state {
            self.next_step(&state);
            self.states.push(state);
        }
    }

    /// What the line about the alert's new state says; notes who claimed it and how it
    /// ended.
    fn detail(&mut self, doc: &Value, state: &str, tier: u8, new_state: bool) -> String {
        match state {
            "open" => {
                let notified: Vec<String> = doc["notified"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|id| self.who(id))
                    .collect();
                if tier == 1 && new_state {
                    format!(
                        "tier 1, paging {}; nobody there will answer, so it escalates after {}",
                        notified.join(", "),
                        super::ACK_TIMEOUT
                    )
                } else {
                    format!("tier {tier}, paging {}", notified.join(", "))
                }
            }
            "acknowledged" => {
                self.acked_by = doc["acked_by"].as_str().map(str::to_string);
                if new_state && self.acked_by != self.responder {
                    // Claimed from the duty console: the scripted phones step back.
                    self.responder = None;
                    self.due.clear();
                    self.person.store(true, Ordering::Relaxed);
                }
                format!(
                    "tier {tier}, claimed by {}",
                    self.acked_by
                        .as_deref()
                        .map(|id| self.who(id))
                        .unwrap_or_default()
                )
            }
            "on_scene" => format!(
                "{} is with the resident",
                doc["acked_by"]
                    .as_str()
                    .map(|id| self.who(id))
                    .unwrap_or_default()
            ),
            "resolved" => {
                self.resolution = doc["resolution"].as_str().map(str::to_string);
                format!(
                    "by {}: {}; the retained copy stays {}",
                    doc["resolved_by"]
                        .as_str()
                        .map(|id| self.who(id))
                        .unwrap_or_default(),
                    self.resolution.as_deref().unwrap_or("?"),
                    super::RESOLVED_RETENTION
                )
            }
            _ => String::new(),
        }
    }

    /// The scripted responder's next action after the alert reached `state`.
    fn next_step(&mut self, state: &str) {
        if let Some(responder) = self.responder.clone() {
            match state {
                "acknowledged" => {
                    self.due
                        .push((Instant::now() + ON_SCENE_AFTER, responder, "on_scene"));
                }
                "on_scene" => {
                    self.due
                        .push((Instant::now() + RESOLVE_AFTER, responder, "resolve"));
                }
                _ => {}
            }
        }
    }

    /// One phone sends an action on its own ack topic.
    fn act(&mut self, staff: &str, action: &'static str) -> anyhow::Result<()> {
        let Some(alert_id) = self.alert_id.clone() else {
            return Ok(());
        };
        let payload = match action {
            "resolve" => {
                json!({"alert_id": alert_id, "action": action, "resolution": "real_emergency"})
            }
            _ => json!({"alert_id": alert_id, "action": action}),
        };
        let shown = match action {
            "delivered" => "delivered (the phone got the page)",
            "ack" => "ack (\"I'm going\")",
            "on_scene" => "on_scene (\"I'm there\")",
            "resolve" => "resolve, real_emergency",
            other => other,
        };
        self.line("reply", &format!("← {}  {shown}", self.who(staff)));
        self.client
            .try_publish(
                self.topics.ack(staff),
                QoS::AtLeastOnce,
                false,
                payload.to_string(),
            )
            .context("sending a phone's action")
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
