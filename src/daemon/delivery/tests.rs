//! Delivery driven by values: an in-memory outbox that can fail, a link with a bounded queue.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

#[derive(Default)]
struct Outbox {
    rows: BTreeMap<i64, OutboxMessage>,
    next: i64,
    failing: bool,
    commits: usize,
}

impl Outbox {
    fn commit(&mut self, messages: Vec<OutboxMessage>) -> Result<Vec<i64>, String> {
        if self.failing {
            return Err("disk full".into());
        }
        self.commits += 1;
        Ok(messages
            .into_iter()
            .map(|m| {
                self.next += 1;
                self.rows.insert(self.next, m);
                self.next
            })
            .collect())
    }

    fn pending(&self, after: Option<i64>, limit: usize) -> Vec<(i64, OutboxMessage)> {
        self.rows
            .range(after.map_or(i64::MIN, |a| a + 1)..)
            .take(limit)
            .map(|(id, m)| (*id, m.clone()))
            .collect()
    }
}

/// The broker side: takes up to `room` messages at a time; `ack_all` plays its PUBACKs.
struct Link {
    room: usize,
    up: bool,
    inflight: Vec<u64>,
    /// Every topic the broker got, in order (a re-send shows twice).
    got: Vec<String>,
}

impl Link {
    fn new(room: usize) -> Link {
        Link {
            room,
            up: true,
            inflight: Vec::new(),
            got: Vec::new(),
        }
    }
}

struct Rig {
    d: Delivery,
    store: Outbox,
    link: Link,
    now: Instant,
}

impl Rig {
    fn new(room: usize) -> Rig {
        Rig {
            d: Delivery::new(),
            store: Outbox::default(),
            link: Link::new(room),
            now: Instant::now(),
        }
    }

    /// Carries out every request, as the loop does.
    fn drive(&mut self) {
        let mut steps = 0;
        while let Some(io) = self.d.poll_io() {
            steps += 1;
            assert!(steps < 100_000, "delivery keeps asking for work");
            match io {
                Io::Commit { messages, .. } => {
                    let r = self.store.commit(messages);
                    self.d.committed(self.now, r);
                }
                Io::Read { after, limit } => {
                    let rows = if self.store.failing {
                        Err("cannot read".into())
                    } else {
                        Ok(self.store.pending(after, limit))
                    };
                    self.d.read(self.now, rows);
                }
                Io::Publish { id, message } => {
                    let ok = self.link.up && self.link.inflight.len() < self.link.room;
                    if ok {
                        self.link.inflight.push(id);
                        self.link.got.push(message.topic);
                    }
                    self.d.published(ok);
                }
                Io::MarkSent(ids) => {
                    for id in ids {
                        self.store.rows.remove(&id);
                    }
                }
            }
        }
    }

    fn connect(&mut self) {
        self.link.up = true;
        self.link.inflight.clear();
        self.d.connected();
        self.drive();
    }

    fn disconnect(&mut self) {
        self.link.up = false;
        self.link.inflight.clear();
        self.d.disconnected();
        self.drive();
    }

    fn ack_all(&mut self) {
        while !self.link.inflight.is_empty() {
            for id in std::mem::take(&mut self.link.inflight) {
                self.d.pub_acked(id);
            }
            self.drive();
        }
    }

    fn send(&mut self, topics: &[&str]) {
        let msgs = topics.iter().map(|t| page(t, Class::FirstPage)).collect();
        self.d.send(Changes::default(), msgs, Vec::new());
        self.drive();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.d.poll_timeout().is_some_and(|t| t <= self.now) {
            self.d.handle_timeout(self.now);
        }
        self.drive();
    }
}

fn page(topic: &str, class: Class) -> Message {
    Message {
        publish: OutboxMessage {
            topic: topic.into(),
            payload: topic.as_bytes().to_vec(),
            qos: 1,
            retain: false,
        },
        class,
    }
}

#[test]
fn a_message_is_committed_before_it_is_handed_to_the_link() {
    let mut d = Delivery::new();
    d.connected();
    // The connect's read of an empty outbox.
    assert!(matches!(d.poll_io(), Some(Io::Read { after: None, .. })));
    d.read(Instant::now(), Ok(Vec::new()));
    assert_eq!(d.poll_io(), None);
    d.send(
        Changes::default(),
        vec![page("a", Class::FirstPage)],
        Vec::new(),
    );
    let Some(Io::Commit { messages, .. }) = d.poll_io() else {
        panic!("the first request must be the commit");
    };
    assert_eq!(messages.len(), 1);
    d.committed(Instant::now(), Ok(vec![7]));
    assert!(matches!(d.poll_io(), Some(Io::Publish { id: 7, .. })));
    d.published(true);
    assert_eq!(d.poll_io(), None);
}

#[test]
fn the_outbox_is_resent_in_order_after_every_connect_until_acked() {
    let mut r = Rig::new(100);
    r.disconnect();
    r.send(&["a", "b"]);
    r.send(&["c"]);
    assert!(
        r.link.got.is_empty(),
        "nothing is sent while the broker is away"
    );
    r.connect();
    assert_eq!(r.link.got, ["a", "b", "c"]);
    // Dropped before the PUBACKs: everything again, in order.
    r.disconnect();
    r.connect();
    assert_eq!(r.link.got, ["a", "b", "c", "a", "b", "c"]);
    r.ack_all();
    assert!(r.store.rows.is_empty(), "acked rows leave the outbox");
    r.disconnect();
    r.connect();
    assert_eq!(r.link.got.len(), 6, "nothing acked is sent again");
}

#[test]
fn a_full_link_resumes_on_pubacks_without_losing_or_reordering() {
    let mut r = Rig::new(3);
    r.disconnect();
    let topics: Vec<String> = (0..200).map(|i| format!("t{i:03}")).collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    r.send(&refs);
    r.connect();
    assert_eq!(r.link.got.len(), 3, "the link takes what it has room for");
    r.ack_all();
    assert_eq!(r.link.got, topics, "every row once, in order");
    assert!(r.store.rows.is_empty());
}

#[test]
fn fresh_pages_overtake_nothing_while_a_backlog_is_read() {
    let mut r = Rig::new(2);
    r.disconnect();
    r.send(&["old1", "old2", "old3"]);
    r.connect();
    r.send(&["new"]);
    r.ack_all();
    assert_eq!(r.link.got, ["old1", "old2", "old3", "new"]);
}

#[test]
fn pages_are_published_while_the_store_fails_and_committed_when_it_recovers() {
    let mut r = Rig::new(100);
    r.connect();
    r.store.failing = true;
    r.send(&["sos1"]);
    assert_eq!(
        r.link.got,
        ["sos1"],
        "alarms before state: published without the commit"
    );
    assert!(r.d.is_holding());
    let since = r.d.failing_since().expect("failing is noticed");
    assert_eq!(since, r.now);
    // Retries back off while the disk stays full.
    r.advance(Duration::from_secs(1));
    r.advance(Duration::from_secs(2));
    assert_eq!(r.store.commits, 0);
    r.store.failing = false;
    r.send(&["sos2"]);
    assert_eq!(
        r.link.got,
        ["sos1", "sos2"],
        "a later page does not wait for the retry"
    );
    r.advance(Duration::from_secs(4));
    assert_eq!(r.store.commits, 1, "one commit carries everything held");
    assert!(!r.d.is_holding());
    assert_eq!(r.d.failing_since(), None);
    // Both are outbox rows now and re-sent until acked (at least once).
    r.ack_all();
    assert!(r.store.rows.is_empty());
}

#[test]
fn pages_held_with_the_disk_full_and_the_broker_down_all_arrive_when_it_returns() {
    let mut r = Rig::new(100);
    r.disconnect();
    r.store.failing = true;
    for i in 0..10 {
        r.send(&[&format!("sos{i}")]);
        r.advance(Duration::from_secs(1));
    }
    assert!(r.link.got.is_empty());
    assert_eq!(r.d.held_len(), 10);
    r.connect();
    let want: Vec<String> = (0..10).map(|i| format!("sos{i}")).collect();
    assert_eq!(r.link.got, want, "every new page, in order, from memory");
    r.ack_all();
    assert_eq!(r.d.held_len(), 0, "acked held messages are not kept");
    // Space freed: the held state is committed; nothing acked needs sending again.
    r.store.failing = false;
    r.advance(Duration::from_secs(60));
    assert!(!r.d.is_holding());
    assert_eq!(r.store.commits, 1);
}

#[test]
fn held_messages_are_bounded_but_first_pages_are_never_dropped() {
    let mut r = Rig::new(100);
    r.disconnect();
    r.store.failing = true;
    r.send(&["first"]);
    for i in 0..(MAX_HELD + 500) {
        let m = page(
            &format!("reminder{}", i % 10),
            Class::Latest(format!("k{}", i % 10)),
        );
        r.d.send(Changes::default(), vec![m], Vec::new());
        r.drive();
    }
    assert!(r.d.held_len() <= MAX_HELD);
    assert_eq!(r.d.dropped_held(), 501);
    r.connect();
    assert_eq!(r.link.got[0], "first");
    // The newest of each key survives.
    for k in 0..10 {
        assert!(r.link.got.contains(&format!("reminder{k}")));
    }
}

fn volatile(topic: &str, version: u8) -> OutboxMessage {
    OutboxMessage {
        topic: topic.into(),
        payload: vec![version],
        qos: 0,
        retain: true,
    }
}

#[test]
fn volatile_messages_are_never_stored_and_wait_parked_while_away_the_latest_per_topic() {
    let mut r = Rig::new(100);
    r.disconnect();
    for m in [
        volatile("status", 1),
        volatile("devices/7", 1),
        volatile("status", 2),
    ] {
        r.d.send(Changes::default(), Vec::new(), vec![m]);
    }
    r.drive();
    assert!(r.store.rows.is_empty());
    assert!(r.link.got.is_empty());
    assert_eq!(r.d.parked(), (2, 0));
    r.connect();
    // Only the newest status; nothing stored.
    assert_eq!(r.link.got, ["devices/7", "status"]);
    assert_eq!(r.d.parked(), (0, 0));
    assert_eq!(r.store.commits, 0);
    assert!(r.d.volatile(volatile("status", 3)).is_some());
    r.drive();
    assert_eq!(r.link.got.len(), 3);
}

/// 5,000 bands fall silent at once: 5,000 device states for a link that takes 16 at a time.
/// None is lost, and a page sent in the middle goes before the parked ones.
#[test]
fn a_full_link_parks_volatile_messages_and_pages_go_first() {
    let mut r = Rig::new(16);
    r.connect();
    let states: Vec<OutboxMessage> = (0..5_000)
        .map(|i| volatile(&format!("devices/{i}"), 1))
        .collect();
    r.d.send(Changes::default(), Vec::new(), states);
    r.drive();
    assert!(r.link.got.len() <= VOLATILE_IN_LINK);
    r.send(&["sos-page"]);
    r.ack_all();
    let got = &r.link.got;
    assert_eq!(
        got.iter().filter(|t| t.starts_with("devices/")).count(),
        5_000,
        "none lost"
    );
    let unique: std::collections::HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "none twice");
    let page_at = got.iter().position(|t| t == "sos-page").unwrap();
    assert!(
        page_at <= VOLATILE_IN_LINK + 1,
        "the page waited behind {page_at} device states"
    );
    assert_eq!(r.d.parked(), (0, 0));
}

#[test]
fn parked_messages_are_bounded_oldest_dropped_first() {
    let mut r = Rig::new(16);
    r.disconnect();
    for i in 0..MAX_PARKED + 10 {
        r.d.send(
            Changes::default(),
            Vec::new(),
            vec![volatile(&format!("d/{i}"), 1)],
        );
    }
    r.drive();
    assert_eq!(r.d.parked(), (MAX_PARKED, 10));
    r.connect();
    r.ack_all();
    assert_eq!(r.link.got.first().map(String::as_str), Some("d/10"));
    assert_eq!(r.link.got.len(), MAX_PARKED);
}
