//! Delivery: getting committed messages to the broker, as a sans-IO state machine.
//!
//! The loop hands it what the engine asked for (`send`), the link's reports (`connected`,
//! `disconnected`, `pub_acked`) and time (`handle_timeout`); it answers with [`Io`] requests
//! that the loop carries out one at a time and reports back (`committed`, `read`,
//! `published`). It never touches the store, the link or a clock itself, so every path —
//! broker flapping, a store that fails and recovers, a full link queue — is tested by feeding
//! it values (`tests` below, and the loop tests in `daemon::tests`).
//!
//! The rules it keeps:
//! - commit, then publish: a durable message is handed to the link only after its commit;
//! - the outbox is the truth: rows are deleted on PUBACK only and re-sent from the start after
//!   every (re)connect, in id order; a link that refuses a row (queue full) is pumped again on
//!   the next PUBACK;
//! - alarms before state: when a commit fails, its state changes and messages are *held* in
//!   memory, in order, published like durable ones (and again after a reconnect), and committed
//!   when the store works again (retried with back-off). Held messages are bounded: past
//!   [`MAX_HELD`] a message superseded by a newer one for the same alert and person is
//!   dropped first; an alert's first page never is;
//! - volatile messages (status, device state) are never stored, but not thrown away either
//!   when the link is full or gone: they are *parked*, the latest per topic (they are retained
//!   documents: only the newest matters), and handed on a few at a time as the link drains,
//!   after the outbox's rows, so that 5,000 bands falling silent at once cannot crowd out a
//!   page. Parked messages are bounded ([`MAX_PARKED`], oldest dropped first).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::adapters::store::OutboxMessage;
use crate::engine::Changes;

/// Outbox rows read from the store per request.
pub const READ_BATCH: usize = 64;
/// Held messages kept before superseded ones are dropped.
pub const MAX_HELD: usize = 10_000;
/// Link ids from here up are held messages (not yet outbox rows).
pub const HELD_ID_BASE: u64 = 1 << 61;
/// Link ids from here up are volatile (status, device state): never stored, never re-sent.
pub const VOLATILE_ID_BASE: u64 = 1 << 62;
/// Volatile messages parked (distinct topics) before the oldest are dropped.
pub const MAX_PARKED: usize = 20_000;
/// Volatile messages handed to the link and not yet written, at most: the rest of the link's
/// queue stays free for pages.
pub const VOLATILE_IN_LINK: usize = 64;
/// First and longest wait before committing held state again.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How a message may be thinned out while the store cannot take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// An alert's first page to a person: never dropped.
    FirstPage,
    /// Superseded by any newer message with the same key (alert document, reminder).
    Latest(String),
}

/// A message for the broker with what delivery needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub publish: OutboxMessage,
    pub class: Class,
}

/// What the loop must do next, then report back.
#[derive(Debug, Clone, PartialEq)]
pub enum Io {
    /// One durable transaction; report with `committed`.
    Commit {
        changes: Changes,
        messages: Vec<OutboxMessage>,
    },
    /// Outbox rows with an id above `after`; report with `read`.
    Read { after: Option<i64>, limit: usize },
    /// Hand to the link under `id`; report whether it took it with `published`.
    Publish { id: u64, message: OutboxMessage },
    /// Delete acknowledged rows; nothing to report (a failure means a re-send later).
    MarkSent(Vec<i64>),
}

#[derive(Debug)]
struct Held {
    id: u64,
    message: Message,
    /// Handed to the link since the last connect.
    handed: bool,
}

/// What is being waited for; one request at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Nothing,
    Commit,
    Read,
    Publish(u64),
}

/// The delivery state machine. See the module doc.
#[derive(Debug)]
pub struct Delivery {
    connected: bool,
    /// Highest outbox id handed to the link since the last connect.
    cursor: Option<i64>,
    /// The store may hold rows after `cursor` that are not handed yet: read them.
    backlog: bool,
    /// A read failed; do not read again before this time (or a connect).
    read_blocked: Option<Instant>,
    /// The link refused a message (its queue is full): hand it nothing before a PUBACK.
    stalled: bool,
    /// Requests ready to go, in order.
    queue: VecDeque<Io>,
    /// Messages of commits that failed, oldest first, and their state changes.
    held: VecDeque<Held>,
    held_changes: Option<Changes>,
    /// Fresh messages of the commit being made (published from memory when it succeeds).
    fresh: Vec<Message>,
    /// The state changes of the commit being made, kept until it is reported.
    committing: Option<Changes>,
    waiting: Waiting,
    next_held_id: u64,
    next_volatile_id: u64,
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
    retry_every: Duration,
    /// Counters for logs and status.
    dropped_held: u64,
    /// Volatile messages waiting for room in the link, latest per topic, in parking order.
    parked: BTreeMap<u64, OutboxMessage>,
    parked_topics: HashMap<String, u64>,
    next_parking: u64,
    /// Volatile publishes queued or handed to the link and not yet written.
    volatile_in_link: usize,
    /// The volatile message being handed (so that a refusal can park it).
    handing: Option<OutboxMessage>,
    dropped_parked: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery::new()
    }
}

impl Delivery {
    pub fn new() -> Delivery {
        Delivery {
            connected: false,
            cursor: None,
            backlog: false,
            read_blocked: None,
            stalled: false,
            queue: VecDeque::new(),
            held: VecDeque::new(),
            held_changes: None,
            fresh: Vec::new(),
            committing: None,
            waiting: Waiting::Nothing,
            next_held_id: HELD_ID_BASE,
            next_volatile_id: VOLATILE_ID_BASE,
            failing_since: None,
            retry_at: None,
            retry_every: RETRY_MIN,
            dropped_held: 0,
            parked: BTreeMap::new(),
            parked_topics: HashMap::new(),
            next_parking: 0,
            volatile_in_link: 0,
            handing: None,
            dropped_parked: 0,
        }
    }

    // ---- inputs ----

    /// The engine's state changes and messages for one turn of the loop: one commit, then
    /// publishing. `volatile` messages (status, device state) are published at once if the
    /// broker is there, and never stored.
    pub fn send(&mut self, changes: Changes, durable: Vec<Message>, volatile: Vec<OutboxMessage>) {
        for message in volatile {
            self.volatile(message);
        }
        if durable.is_empty() && changes.is_empty() {
            return;
        }
        if self.is_holding() {
            // Nothing may overtake what is held: it all waits for the store together.
            self.hold_changes(changes);
            for m in durable {
                self.hold(m);
            }
            return;
        }
        let messages = durable.iter().map(|m| m.publish.clone()).collect();
        self.committing = Some(changes.clone());
        self.queue.push_back(Io::Commit { changes, messages });
        self.fresh.extend(durable);
    }

    /// A message that is never stored (gateway status, device state, the last will's twin).
    /// Returns its link id when it goes to the link now, or `None` when it was parked (the
    /// broker is not there, or the link has no room for it yet).
    pub fn volatile(&mut self, message: OutboxMessage) -> Option<u64> {
        if !self.connected || self.stalled || !self.parked.is_empty() {
            self.park(message);
            self.release_parked();
            return None;
        }
        if self.volatile_in_link >= VOLATILE_IN_LINK {
            self.park(message);
            return None;
        }
        Some(self.queue_volatile(message))
    }

    /// The last word before a clean disconnect (the offline status): handed at once, ahead
    /// of anything parked; `None` when the broker is not there.
    pub fn volatile_now(&mut self, message: OutboxMessage) -> Option<u64> {
        self.connected.then(|| self.queue_volatile(message))
    }

    fn queue_volatile(&mut self, message: OutboxMessage) -> u64 {
        self.next_volatile_id += 1;
        let id = self.next_volatile_id;
        self.volatile_in_link += 1;
        self.queue.push_back(Io::Publish { id, message });
        id
    }

    /// Keeps the latest volatile message per topic until the link has room.
    fn park(&mut self, message: OutboxMessage) {
        if let Some(old) = self.parked_topics.remove(&message.topic) {
            self.parked.remove(&old);
        }
        if self.parked.len() >= MAX_PARKED {
            if let Some((_, oldest)) = self.parked.pop_first() {
                self.parked_topics.remove(&oldest.topic);
                self.dropped_parked += 1;
            }
        }
        self.next_parking += 1;
        self.parked_topics
            .insert(message.topic.clone(), self.next_parking);
        self.parked.insert(self.next_parking, message);
    }

    /// Hands parked volatile messages on while the link has room for them and no outbox row
    /// waits to be read (pages first).
    fn release_parked(&mut self) {
        if !self.connected || self.stalled || self.backlog {
            return;
        }
        while self.volatile_in_link < VOLATILE_IN_LINK {
            let Some((_, message)) = self.parked.pop_first() else {
                return;
            };
            self.parked_topics.remove(&message.topic);
            self.queue_volatile(message);
        }
    }

    /// Queued volatile publishes go back to the parking (the link is full or gone).
    fn park_queued_volatiles(&mut self) {
        let queued: Vec<OutboxMessage> = self
            .queue
            .iter()
            .filter_map(|io| match io {
                Io::Publish { id, message } if *id >= VOLATILE_ID_BASE => Some(message.clone()),
                _ => None,
            })
            .collect();
        self.queue
            .retain(|io| !matches!(io, Io::Publish { id, .. } if *id >= VOLATILE_ID_BASE));
        self.volatile_in_link = self.volatile_in_link.saturating_sub(queued.len());
        for m in queued {
            self.park(m);
        }
    }

    /// Volatile messages waiting for the link, and how many were dropped past the bound.
    pub fn parked(&self) -> (usize, u64) {
        (self.parked.len(), self.dropped_parked)
    }

    pub fn connected(&mut self) {
        self.connected = true;
        self.cursor = None;
        self.backlog = true;
        self.read_blocked = None;
        self.stalled = false;
        for h in &mut self.held {
            h.handed = false;
        }
        // Publishes queued before the drop were for the old connection; the read re-sends
        // durable rows, volatile ones wait parked.
        self.park_queued_volatiles();
        self.queue.retain(|io| !matches!(io, Io::Publish { .. }));
        // The link forgot what it held.
        self.volatile_in_link = 0;
    }

    pub fn disconnected(&mut self) {
        self.connected = false;
        self.park_queued_volatiles();
        self.queue.retain(|io| !matches!(io, Io::Publish { .. }));
        self.volatile_in_link = 0;
    }

    /// The broker has the message with this link id.
    pub fn pub_acked(&mut self, id: u64) {
        // A stalled pump resumes as the link's queue drains (`poll_io` reads or hands on).
        self.stalled = false;
        if id >= VOLATILE_ID_BASE {
            self.volatile_in_link = self.volatile_in_link.saturating_sub(1);
            self.release_parked();
            return;
        }
        self.release_parked();
        if id >= HELD_ID_BASE {
            self.held.retain(|h| h.id != id);
            return;
        }
        self.queue.push_back(Io::MarkSent(vec![id as i64]));
    }

    /// The next time `handle_timeout` must be called: the held commit's retry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.retry_at, self.read_blocked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.read_blocked.is_some_and(|t| t <= now) {
            self.read_blocked = None;
        }
        if self.retry_at.is_some_and(|t| t <= now) && self.waiting == Waiting::Nothing {
            self.retry_at = None;
            let changes = self.held_changes.take().unwrap_or_default();
            let messages: Vec<OutboxMessage> = self
                .held
                .iter()
                .map(|h| h.message.publish.clone())
                .collect();
            self.committing = Some(changes.clone());
            self.queue.push_back(Io::Commit { changes, messages });
        }
    }

    // ---- requests and their results ----

    /// The next request; `None` when there is nothing to do. Report each one's result before
    /// asking for the next.
    pub fn poll_io(&mut self) -> Option<Io> {
        debug_assert_eq!(
            self.waiting,
            Waiting::Nothing,
            "a request is still unanswered"
        );
        let pumping = self.connected && !self.stalled;
        let readable = self.read_blocked.is_none();
        if pumping && self.backlog && readable && self.queue.is_empty() {
            self.queue_read();
        }
        // Held messages go after every durable row (they are newer), unless the store cannot
        // even be read: then they go anyway.
        if self.queue.is_empty() && pumping && (!self.backlog || !readable) {
            if let Some(h) = self.held.iter_mut().find(|h| !h.handed) {
                h.handed = true;
                self.queue.push_back(Io::Publish {
                    id: h.id,
                    message: h.message.publish.clone(),
                });
            }
        }
        let io = self.queue.pop_front()?;
        self.waiting = match &io {
            Io::Commit { .. } => Waiting::Commit,
            Io::Read { .. } => Waiting::Read,
            Io::Publish { id, message } => {
                if *id >= VOLATILE_ID_BASE {
                    self.handing = Some(message.clone());
                }
                Waiting::Publish(*id)
            }
            Io::MarkSent(_) => Waiting::Nothing,
        };
        Some(io)
    }

    /// The result of `Io::Commit`: the new outbox ids in order, or the error's text.
    pub fn committed(&mut self, now: Instant, result: Result<Vec<i64>, String>) {
        if std::mem::replace(&mut self.waiting, Waiting::Nothing) != Waiting::Commit {
            debug_assert!(false, "committed() without a commit");
            return;
        }
        let fresh = std::mem::take(&mut self.fresh);
        let changes = self.committing.take().unwrap_or_default();
        match result {
            Ok(ids) => {
                if !self.held.is_empty() {
                    // A retry: the held messages are outbox rows now (those acked meanwhile
                    // too: at least once allows the repeat), read back in order.
                    self.held.clear();
                    self.backlog = true;
                }
                self.failing_since = None;
                self.retry_at = None;
                self.retry_every = RETRY_MIN;
                if self.connected && !self.backlog {
                    for (id, m) in ids.into_iter().zip(fresh) {
                        self.queue.push_back(Io::Publish {
                            id: id as u64,
                            message: m.publish,
                        });
                    }
                } else {
                    self.backlog = true;
                }
            }
            Err(_) => {
                self.hold_changes(changes);
                for m in fresh {
                    self.hold(m);
                }
                self.failing_since.get_or_insert(now);
                self.retry_at = Some(now + self.retry_every);
                self.retry_every = (self.retry_every * 2).min(RETRY_MAX);
            }
        }
    }

    fn hold_changes(&mut self, changes: Changes) {
        self.held_changes = Some(match self.held_changes.take() {
            Some(earlier) => earlier.then(changes),
            None => changes,
        });
    }

    /// The result of `Io::Read`.
    pub fn read(&mut self, now: Instant, result: Result<Vec<(i64, OutboxMessage)>, String>) {
        debug_assert_eq!(self.waiting, Waiting::Read);
        self.waiting = Waiting::Nothing;
        match result {
            Ok(rows) => {
                if rows.len() < READ_BATCH {
                    self.backlog = false;
                    self.release_parked();
                }
                if !self.connected {
                    self.backlog = true;
                    return;
                }
                // Publishes go before anything queued since (a MarkSent, a commit), so that a
                // stall is seen before the next read.
                for (i, (id, message)) in rows.into_iter().enumerate() {
                    self.queue.insert(
                        i,
                        Io::Publish {
                            id: id as u64,
                            message,
                        },
                    );
                }
            }
            Err(_) => self.read_blocked = Some(now + RETRY_MIN),
        }
    }

    /// The result of `Io::Publish`: whether the link took it.
    pub fn published(&mut self, accepted: bool) {
        let Waiting::Publish(id) = std::mem::replace(&mut self.waiting, Waiting::Nothing) else {
            debug_assert!(false, "published() without a publish");
            return;
        };
        if id >= VOLATILE_ID_BASE {
            let message = self.handing.take();
            if !accepted {
                // The link is full or gone: this one and the volatile ones queued behind it
                // wait parked, and nothing more is handed before the link drains.
                self.volatile_in_link = self.volatile_in_link.saturating_sub(1);
                self.stalled = true;
                self.park_queued_volatiles();
                if let Some(m) = message {
                    self.park(m);
                }
                self.drop_publishes();
            }
            return;
        }
        if accepted {
            if id < HELD_ID_BASE {
                self.cursor = Some(id as i64);
            }
            return;
        }
        // The link's queue is full: the rest goes on a PUBACK (durable rows read back from
        // the store, held messages from memory).
        self.stalled = true;
        self.park_queued_volatiles();
        if id >= HELD_ID_BASE {
            if let Some(h) = self.held.iter_mut().find(|h| h.id == id) {
                h.handed = false;
            }
        } else {
            self.backlog = true;
        }
        self.drop_publishes();
    }

    // ---- what the loop shows ----

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Since when commits have been failing, if they are.
    pub fn failing_since(&self) -> Option<Instant> {
        self.failing_since
    }

    /// Messages held in memory because the store failed.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Held messages dropped because newer ones superseded them past the bound.
    pub fn dropped_held(&self) -> u64 {
        self.dropped_held
    }

    /// Whether state waits for the store (it must be committed before the process ends).
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty() || self.held_changes.is_some() || self.retry_at.is_some()
    }

    /// What is held, for a last commit at shutdown.
    pub fn take_held(&mut self) -> (Changes, Vec<OutboxMessage>) {
        let changes = self.held_changes.take().unwrap_or_default();
        let messages = self.held.drain(..).map(|h| h.message.publish).collect();
        self.retry_at = None;
        (changes, messages)
    }

    // ---- inside ----

    fn queue_read(&mut self) {
        if !self.queue.iter().any(|io| matches!(io, Io::Read { .. })) {
            self.queue.push_back(Io::Read {
                after: self.cursor,
                limit: READ_BATCH,
            });
        }
    }

    fn drop_publishes(&mut self) {
        self.queue
            .retain(|io| !matches!(io, Io::Publish { id, .. } if *id < VOLATILE_ID_BASE));
    }

    fn hold(&mut self, message: Message) {
        self.next_held_id += 1;
        self.held.push_back(Held {
            id: self.next_held_id,
            message,
            handed: false,
        });
        if self.held.len() > MAX_HELD {
            self.thin_held();
        }
    }

    /// Drops the oldest held message that a newer one with the same key supersedes; failing
    /// that, the oldest one that is not a first page. First pages are never dropped.
    fn thin_held(&mut self) {
        let superseded = self
            .held
            .iter()
            .enumerate()
            .position(|(i, h)| match &h.message.class {
                Class::Latest(key) => self
                    .held
                    .iter()
                    .skip(i + 1)
                    .any(|later| later.message.class == Class::Latest(key.clone())),
                Class::FirstPage => false,
            });
        let victim = superseded.or_else(|| {
            self.held
                .iter()
                .position(|h| h.message.class != Class::FirstPage)
        });
        if let Some(i) = victim {
            self.held.remove(i);
            self.dropped_held += 1;
        }
    }
}

#[cfg(test)]
mod tests;
