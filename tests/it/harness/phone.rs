//! A duty phone: an MQTT client logged in as a staff member (or anonymous) that records every
//! message; the pages it received with their reason, alert id and time; actions it publishes;
//! and what is retained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::WAIT;

/// One message a phone received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// When the phone received it.
    pub at: jiff::Timestamp,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    /// For a notification: (staff, reason, alert document).
    pub fn notification(&self, prefix: &str) -> Option<(String, String, Value)> {
        let staff = self.topic.strip_prefix(&format!("{prefix}/notify/"))?;
        let v = self.json();
        Some((
            staff.to_owned(),
            v["reason"].as_str().unwrap().to_owned(),
            v["alert"].clone(),
        ))
    }

    /// For an alert document (non-empty payload on `{p}/alerts/..`).
    pub fn alert_doc(&self, prefix: &str) -> Option<Value> {
        self.topic.strip_prefix(&format!("{prefix}/alerts/"))?;
        (!self.payload.is_empty()).then(|| self.json())
    }
}

/// The duty phones: one MQTT client with a persistent session (clean_session = false, a fixed
/// client id), QoS 1, subscribed to `{p}/alerts/#` and `{p}/notify/#` (and whatever else is
/// asked for). Reconnects by itself; resubscribes only when the broker lost its session.
pub struct Phone {
    client: Client,
    msgs: Arc<Mutex<Vec<Msg>>>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// How many messages `recv` has handed out.
    read: usize,
}

/// The largest packet a test phone reads or writes (over what the gateway and broker take,
/// so that tests can send them too much).
const MAX_PACKET: usize = 8 << 20;

impl Phone {
    pub fn connect(port: u16, client_id: &str, prefix: &str) -> Phone {
        Phone::connect_to(
            port,
            client_id,
            &[format!("{prefix}/alerts/#"), format!("{prefix}/notify/#")],
        )
    }

    pub fn connect_to(port: u16, client_id: &str, filters: &[String]) -> Phone {
        Phone::connect_with(Phone::options(port, client_id), filters)
    }

    /// Logged in as `user` (client id `phone-{user}`), as a staff member's phone is.
    pub fn login(port: u16, user: &str, password: &str, filters: &[String]) -> Phone {
        Phone::connect_with(
            Phone::options_as(port, &format!("phone-{user}"), user, password),
            filters,
        )
    }

    /// The phone's options, for `connect_with` after adding credentials or TLS.
    pub fn options(port: u16, client_id: &str) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        opts
    }

    /// `options` with a user name and password.
    pub fn options_as(port: u16, client_id: &str, user: &str, password: &str) -> MqttOptions {
        let mut o = Phone::options(port, client_id);
        o.set_credentials(user, password);
        o
    }

    /// Connects and returns once every filter is subscribed (or, with none, once connected).
    pub fn connect_with(opts: MqttOptions, filters: &[String]) -> Phone {
        let (client, mut connection) = Client::new(opts, 64);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let filters = filters.to_vec();
        let mut subacks = 0;
        {
            let (client, msgs, connected, stop) = (
                client.clone(),
                msgs.clone(),
                connected.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for event in connection.iter() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if filters.is_empty() || ack.session_present {
                                connected.store(true, Ordering::SeqCst);
                            } else {
                                subacks = 0;
                                for f in &filters {
                                    let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            subacks += 1;
                            if subacks >= filters.len() {
                                connected.store(true, Ordering::SeqCst)
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => msgs.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            at: jiff::Timestamp::now(),
                        }),
                        Ok(_) => {}
                        Err(_) => {
                            connected.store(false, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            });
        }
        let phone = Phone {
            client,
            msgs,
            connected,
            stop,
            read: 0,
        };
        let deadline = Instant::now() + WAIT;
        while !phone.connected.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "phone could not subscribe");
            std::thread::sleep(Duration::from_millis(20));
        }
        phone
    }

    /// The next message not yet handed out by `recv`, in arrival order; fails after `WAIT`.
    pub fn recv(&mut self) -> Msg {
        let read = self.read;
        let msgs = self.wait_until("another message", |m| m.len() > read);
        self.read += 1;
        msgs[read].clone()
    }

    /// The first JSON document on `topic` that `pick` accepts.
    pub fn wait_doc(&self, topic: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let found = |msgs: &[Msg]| {
            msgs.iter()
                .filter(|m| m.topic == topic)
                .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
                .find(|v| pick(v))
        };
        let msgs = self.wait_until(&format!("a document on {topic}"), |m| found(m).is_some());
        found(&msgs).unwrap()
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the messages received so far; returns them.
    pub fn wait_until(&self, what: &str, pred: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
        let deadline = Instant::now() + WAIT;
        loop {
            let msgs = self.messages();
            if pred(&msgs) {
                return msgs;
            }
            if Instant::now() > deadline {
                let dump: Vec<String> = msgs
                    .iter()
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "phone: timed out waiting for {what}; received:\n{}",
                    dump.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for a notification to `staff` with `reason` about `alert_id`; returns its document.
    pub fn wait_page(&self, prefix: &str, staff: &str, reason: &str, alert_id: &str) -> Value {
        let msgs = self.wait_until(&format!("{reason} to {staff} about {alert_id}"), |m| {
            find_page(m, prefix, staff, reason, alert_id).is_some()
        });
        find_page(&msgs, prefix, staff, reason, alert_id).unwrap()
    }

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }

    /// A retained message (as a duty console's presence record is).
    pub fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .unwrap();
    }

    /// A phone action on `{p}/ack/{staff}`.
    pub fn act(&self, prefix: &str, staff: &str, body: Value) {
        self.publish(&format!("{prefix}/ack/{staff}"), body.to_string());
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

pub fn find_page(
    msgs: &[Msg],
    prefix: &str,
    staff: &str,
    reason: &str,
    alert_id: &str,
) -> Option<Value> {
    msgs.iter().find_map(|m| {
        let (s, r, doc) = m.notification(prefix)?;
        (s == staff && r == reason && doc["alert_id"] == alert_id).then_some(doc)
    })
}

/// Every (staff, reason, document) received about `alert_id`, in arrival order.
pub fn pages(msgs: &[Msg], prefix: &str, alert_id: &str) -> Vec<(String, String, Value)> {
    msgs.iter()
        .filter_map(|m| m.notification(prefix))
        .filter(|(_, _, d)| d["alert_id"] == alert_id)
        .collect()
}

/// Every non-empty alert document of `alert_id`, in arrival order.
pub fn docs(msgs: &[Msg], prefix: &str, alert_id: &str) -> Vec<Value> {
    msgs.iter()
        .filter(|m| m.topic == format!("{prefix}/alerts/{alert_id}"))
        .filter_map(|m| m.alert_doc(prefix))
        .collect()
}

/// Asserts that, per alert_id, `updated_at` never goes back in arrival order, on the alert
/// topic and in notifications alike; equal times must carry identical documents.
pub fn assert_ordered(msgs: &[Msg], prefix: &str) {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut by_time: BTreeMap<(String, String), Value> = BTreeMap::new();
    for m in msgs {
        let doc = match (m.alert_doc(prefix), m.notification(prefix)) {
            (Some(d), _) => d,
            (None, Some((_, _, d))) => d,
            _ => continue,
        };
        let id = doc["alert_id"].as_str().unwrap().to_owned();
        let at = doc["updated_at"].as_str().unwrap().to_owned();
        if let Some((prev, _)) = last.get(&id) {
            assert!(
                *prev <= at,
                "alert {id}: updated_at went back from {prev} to {at} on {}",
                m.topic
            );
        }
        match by_time.get(&(id.clone(), at.clone())) {
            Some(same) => assert_eq!(
                same, &doc,
                "alert {id}: two different documents with updated_at {at}"
            ),
            None => {
                by_time.insert((id.clone(), at.clone()), doc.clone());
            }
        }
        last.insert(id, (at, doc));
    }
}
