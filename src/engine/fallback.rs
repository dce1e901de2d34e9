//! The fallback ladder: reaching a person whose phone did not confirm a page, by SMS and ring
//! calls (`[fallback]`), and the duty consoles' presence that can start it at once.
//!
//! Rules (contract: `[fallback]` in config.md, `contacts` in mqtt-contract.md):
//! - every person paged about an emergency (or a test alert) gets one ladder per alert, started
//!   when they are first paged: its first step is due `after` later; at once when the person
//!   is known to be gone (every presence record they published says offline or unarmed) or
//!   has no app (`channels` without "mqtt"). Re-pages do not restart it;
//! - a ladder stops for good when its person delivers, acts (ack, decline, ...) or the alert is
//!   resolved; a claim holds every other person's ladder, taken up again where it stopped
//!   (after the person's deadline) if the claim lapses; a step the person has no channel for
//!   is skipped;
//! - never two calls to one number within `call_gap` (a minute) across all alerts: a call due
//!   sooner waits, it is not dropped;
//! - a step is recorded in the alert as `requested` before the daemon performs it (the record
//!   is committed first), so a restart never repeats a step that was asked for: after a
//!   restart an SMS still `requested` is looked for in the modem and sent only if it is not
//!   there; a webhook request is posted again marked `resume`; a call still `requested` is
//!   recorded as failed and not placed again;
//! - fallback never replaces escalation: tiers go on as before.

use std::collections::BTreeMap;
use std::time::Instant;

use jiff::Timestamp;

use super::alert::{
    Alert, Claim, Contact, ContactReport, ContactRequest, Kind, Ladder, Outcome, Output, State,
};
use super::setup::{Channel, Fallback, Setup};
use super::snapshot::{ContactRecord, LadderRecord};
use super::time::later;
use super::time::Now;
use super::Engine;

/// Devices of one person the presence map keeps; more are counted and ignored (a phone app
/// inventing a new client id at every start must not grow the map without end).
pub const MAX_CONSOLES: usize = 16;

/// What the duty consoles published about themselves (`{p}/phones/{staff_id}/{client_id}`).
/// Not durable: the records are retained on the broker and come back on every subscribe.
#[derive(Debug, Default, Clone)]
pub struct Presence {
    /// Per person, per client id: online and armed.
    by_staff: BTreeMap<String, BTreeMap<String, bool>>,
}

impl Presence {
    /// `Some(true)`: a live, armed console; `Some(false)`: known to be gone (every record says
    /// offline or unarmed); `None`: never published presence.
    pub fn console(&self, staff_id: &str) -> Option<bool> {
        let clients = self.by_staff.get(staff_id)?;
        Some(clients.values().any(|live| *live))
    }

    pub fn gone(&self, staff_id: &str) -> bool {
        self.console(staff_id) == Some(false)
    }
}

/// One person on duty now, for the gateway status (`on_duty`) and `bandgate status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OnDuty {
    pub staff_id: String,
    pub name: String,
    /// `true`: a live, armed duty console; `false`: every console they had is gone;
    /// `null`: they never published presence (no console, or an MQTT app).
    pub console: Option<bool>,
}

/// Why a presence record was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PresenceRefusal {
    #[error("unknown staff")]
    UnknownStaff,
    #[error("too many devices for one person")]
    TooManyConsoles,
}

/// Whether the ladder applies to this alert: emergencies, and test alerts (so an installer can
/// try the modem path end to end); never notices about bands or the gateway.
fn eligible(a: &Alert) -> bool {
    (a.kind.is_emergency() || a.kind == Kind::Test) && !a.is_quiet()
}

/// Starts the ladders of people newly paged and stops those that must stop. Called after
/// every change of an alert. Returns whether a ladder changed.
pub(super) fn sync(
    policy: Option<&Fallback>,
    presence: &Presence,
    a: &mut Alert,
    now: Instant,
) -> bool {
    let Some(f) = policy else { return false };
    if !eligible(a) {
        return false;
    }
    if !matches!(a.state, State::Open { .. }) {
        return stop_all(a);
    }
    let mut changed = take_up_held(f, presence, a, now);
    changed |= stop_answered(a);
    changed |= start_new(f, presence, a, now);
    changed
}

/// Claimed or resolved: every running ladder stops.
fn stop_all(a: &mut Alert) -> bool {
    let mut changed = false;
    let resolved = a.is_resolved();
    for l in a.ladders.iter_mut() {
        if l.due.is_some() {
            l.due = None;
            // Claimed: held, and taken up again if the claim lapses (not for the claimer
            // or anyone who answered: they acted). Resolved: over for good.
            l.held =
                !resolved && !answered(&a.delivered_to, &a.declined, a.state.claim(), &l.staff_id);
            changed = true;
            tracing::info!(
                alert_id = a.id,
                staff_id = l.staff_id,
                state = a.state.name(),
                "fallback ladder stopped: the alert is claimed or resolved"
            );
        } else if resolved && l.held {
            l.held = false;
            changed = true;
        }
    }
    changed
}

/// Open again (a claim lapsed, or its claimer declined): held ladders go on where they
/// stopped, the person's deadline first (at once without the app or a live console).
fn take_up_held(f: &Fallback, presence: &Presence, a: &mut Alert, now: Instant) -> bool {
    let mut changed = false;
    for l in a.ladders.iter_mut().filter(|l| l.held) {
        l.held = false;
        changed = true;
        if answered(&a.delivered_to, &a.declined, a.state.claim(), &l.staff_id)
            || l.next >= f.steps.len()
        {
            continue;
        }
        let c = f.channels_of(&l.staff_id);
        l.due = Some(if !c.mqtt || presence.gone(&l.staff_id) {
            now
        } else {
            later(now, f.after)
        });
        tracing::info!(
            alert_id = a.id,
            staff_id = l.staff_id,
            "fallback ladder taken up again: the alert is open again"
        );
    }
    changed
}

/// The ladders of people who delivered or acted stop.
fn stop_answered(a: &mut Alert) -> bool {
    let mut changed = false;
    for l in a.ladders.iter_mut() {
        if l.due.is_some() && answered(&a.delivered_to, &a.declined, a.state.claim(), &l.staff_id) {
            l.due = None;
            changed = true;
            tracing::info!(
                alert_id = a.id,
                staff_id = l.staff_id,
                "fallback ladder stopped: the person's phone confirmed or they acted"
            );
        }
    }
    changed
}

/// A ladder for each person paged who has none yet.
fn start_new(f: &Fallback, presence: &Presence, a: &mut Alert, now: Instant) -> bool {
    let new: Vec<String> = a
        .notified
        .iter()
        .filter(|p| !a.ladders.iter().any(|l| &l.staff_id == *p))
        .cloned()
        .collect();
    let changed = !new.is_empty();
    for p in new {
        let channels = f.channels_of(&p);
        let reachable = f.steps.iter().any(|s| channels.has(*s));
        let due = if answered(&a.delivered_to, &a.declined, a.state.claim(), &p) || !reachable {
            None
        } else if !channels.mqtt || presence.gone(&p) {
            Some(now)
        } else {
            Some(later(now, f.after))
        };
        if due == Some(now) {
            tracing::info!(
                alert_id = a.id,
                staff_id = p,
                app = channels.mqtt,
                "fallback ladder starts at once: no app, or the person's console is known to be gone"
            );
        }
        a.ladders.push(Ladder {
            staff_id: p,
            next: 0,
            due,
            held: false,
        });
    }
    changed
}

/// The person's phone confirmed the page, or they acted on the alert.
fn answered(delivered: &[String], declined: &[String], claim: Option<&Claim>, p: &str) -> bool {
    delivered.iter().any(|d| d == p)
        || declined.iter().any(|d| d == p)
        || claim.is_some_and(|c| c.by == p)
}

/// The number a person is called and texted on (empty: none).
fn phone_of<'a>(setup: &'a Setup, staff_id: &str) -> &'a str {
    setup
        .staff
        .get(staff_id)
        .map(|s| s.phone.trim())
        .unwrap_or("")
}

/// Takes ladder `l`'s step if it is due: the contact to record (`requested`, or `failed`
/// without a number), the ladder moved on. `None`: not due, no step left, or a call that must
/// wait for `call_gap` (the ladder is then due when the number is free).
fn take_step(
    f: &Fallback,
    l: &mut Ladder,
    phone: &str,
    calls: &mut BTreeMap<String, Instant>,
    now: Now,
    alert_id: &str,
) -> Option<Contact> {
    if l.due.is_none_or(|d| d > now.mono) {
        return None;
    }
    let channels = f.channels_of(&l.staff_id);
    // Steps this person has no channel for are skipped (no attempt, no record).
    while l.next < f.steps.len() && !channels.has(f.steps[l.next]) {
        l.next += 1;
    }
    let Some(&channel) = f.steps.get(l.next) else {
        l.due = None;
        return None;
    };
    if channel == Channel::Call && !phone.is_empty() {
        if let Some(free) = calls.get(phone).map(|last| later(*last, f.call_gap)) {
            if free > now.mono {
                tracing::info!(
                    alert_id,
                    staff_id = l.staff_id,
                    wait_ms = (free - now.mono).as_millis() as u64,
                    "fallback call waits: this number was called less than a minute ago"
                );
                l.due = Some(free);
                return None;
            }
        }
    }
    let step = u8::try_from(l.next + 1).unwrap_or(u8::MAX);
    let (outcome, detail) = if phone.is_empty() {
        (Outcome::Failed, Some("no phone number".to_string()))
    } else {
        (Outcome::Requested, None)
    };
    tracing::info!(
        alert_id,
        staff_id = l.staff_id,
        channel = channel.as_str(),
        step,
        outcome = outcome.as_str(),
        "fallback step"
    );
    if outcome == Outcome::Requested && channel == Channel::Call {
        calls.insert(phone.to_string(), now.mono);
    }
    l.next += 1;
    l.due = (l.next < f.steps.len()).then(|| later(now.mono, f.gap_after(l.next - 1)));
    Some(Contact {
        staff_id: l.staff_id.clone(),
        channel,
        step,
        at: now.wall,
        outcome,
        detail,
    })
}

impl Engine {
    /// Takes every ladder step of alert `id` that is due: records it as `requested` and asks
    /// for it (`Output::Contact`), or waits when the number was called less than `call_gap`
    /// ago. Every due ladder moves past `now` or stops, so the caller's loop ends.
    pub(super) fn fire_ladders(&mut self, now: Now, id: &str) {
        let Some(f) = self.setup.fallback.clone() else {
            // No policy (a record from a configuration that had one): nothing can be sent.
            self.with_alert(now, id, |_, a| {
                for l in &mut a.ladders {
                    l.due = None;
                }
            });
            return;
        };
        let phones = self.ladder_phones(id);
        let mut calls = std::mem::take(&mut self.calls);
        self.with_alert(now, id, |ctx, a| {
            let mut taken = Vec::new();
            for l in a.ladders.iter_mut() {
                let phone = phones.get(&l.staff_id).map_or("", String::as_str);
                if let Some(c) = take_step(&f, l, phone, &mut calls, now, &a.id) {
                    taken.push((c, phone.to_string()));
                }
            }
            if taken.is_empty() {
                return;
            }
            a.contacts.extend(taken.iter().map(|(c, _)| c.clone()));
            ctx.touch(a);
            for (c, phone) in taken {
                if c.outcome == Outcome::Requested {
                    ctx.out.push_back(Output::Contact(ContactRequest {
                        alert: Box::new(a.clone()),
                        staff_id: c.staff_id,
                        phone,
                        channel: c.channel,
                        step: c.step,
                        resume: false,
                    }));
                }
            }
        });
        self.calls = calls;
    }

    /// The number of each person with a ladder on alert `id`.
    fn ladder_phones(&self, id: &str) -> BTreeMap<String, String> {
        let Some(a) = self.alerts.get(id) else {
            return BTreeMap::new();
        };
        a.ladders
            .iter()
            .map(|l| {
                let phone = phone_of(&self.setup, &l.staff_id).to_string();
                (l.staff_id.clone(), phone)
            })
            .collect()
    }

    /// The modem's report about a step: the contact's outcome is updated (a final outcome is
    /// never replaced) and the document republished. `false`: no such step (counted).
    pub fn handle_contact_report(&mut self, now: Now, r: ContactReport) -> bool {
        let known = self.alerts.get(&r.alert_id).is_some_and(|a| {
            a.contacts
                .iter()
                .any(|c| c.staff_id == r.staff_id && c.step == r.step)
        });
        if !known {
            self.counters.unmatched_contact_reports += 1;
            tracing::warn!(
                alert_id = r.alert_id,
                staff_id = r.staff_id,
                step = r.step,
                outcome = r.outcome.as_str(),
                "modem report about no recorded step (the alert's retention ended?); ignored"
            );
            return false;
        }
        self.with_alert(now, &r.alert_id, |ctx, a| {
            let Some(c) = a
                .contacts
                .iter_mut()
                .find(|c| c.staff_id == r.staff_id && c.step == r.step)
            else {
                return;
            };
            if c.outcome.is_final() || c.outcome == r.outcome {
                tracing::debug!(
                    alert_id = a.id,
                    staff_id = r.staff_id,
                    step = r.step,
                    was = c.outcome.as_str(),
                    report = r.outcome.as_str(),
                    "modem report after a final outcome; kept the first"
                );
                return;
            }
            c.outcome = r.outcome;
            if r.detail.is_some() {
                c.detail = r.detail.clone();
            }
            tracing::info!(
                alert_id = a.id,
                staff_id = r.staff_id,
                channel = c.channel.as_str(),
                step = r.step,
                outcome = r.outcome.as_str(),
                detail = r.detail.as_deref().unwrap_or(""),
                "fallback outcome"
            );
            ctx.touch(a);
        });
        true
    }

    /// A duty console's presence record. A person who becomes known to be gone has every
    /// ladder still waiting for its deadline started at once.
    pub fn handle_presence(
        &mut self,
        now: Now,
        staff_id: &str,
        client_id: &str,
        online: bool,
        armed: bool,
    ) -> Result<(), PresenceRefusal> {
        if !self.setup.staff.contains_key(staff_id) {
            return Err(PresenceRefusal::UnknownStaff);
        }
        let clients = self
            .presence
            .by_staff
            .entry(staff_id.to_string())
            .or_default();
        if !clients.contains_key(client_id) && clients.len() >= MAX_CONSOLES {
            return Err(PresenceRefusal::TooManyConsoles);
        }
        let was_gone = self.presence.gone(staff_id);
        self.presence
            .by_staff
            .entry(staff_id.to_string())
            .or_default()
            .insert(client_id.to_string(), online && armed);
        if was_gone || !self.presence.gone(staff_id) {
            return Ok(());
        }
        tracing::info!(
            staff_id,
            client_id,
            "duty console gone (offline or not armed on every device): waiting fallback ladders start now"
        );
        let waiting: Vec<String> = self
            .alerts
            .values()
            .filter(|a| {
                a.ladders
                    .iter()
                    .any(|l| l.staff_id == staff_id && l.next == 0 && l.due.is_some())
            })
            .map(|a| a.id.clone())
            .collect();
        for id in waiting {
            self.with_alert(now, &id, |_, a| {
                for l in a.ladders.iter_mut() {
                    if l.staff_id == staff_id && l.next == 0 {
                        l.due = l.due.map(|d| d.min(now.mono));
                    }
                }
            });
        }
        Ok(())
    }

    /// Whether `staff_id` has a live, armed duty console (`None`: never published presence).
    pub fn console(&self, staff_id: &str) -> Option<bool> {
        self.presence.console(staff_id)
    }

    /// A console's presence record was deleted (an empty retained message): forgotten, as if
    /// that device never published (a person with no record left is unknown again).
    pub fn forget_presence(&mut self, staff_id: &str, client_id: &str) {
        if let Some(clients) = self.presence.by_staff.get_mut(staff_id) {
            clients.remove(client_id);
            if clients.is_empty() {
                self.presence.by_staff.remove(staff_id);
            }
        }
    }

    /// Who is on duty at `wall` (the rota's tier 1) and whether each has a live console.
    pub fn on_duty(&self, wall: Timestamp) -> Vec<OnDuty> {
        self.setup
            .rota
            .on_duty(wall)
            .into_iter()
            .map(|id| OnDuty {
                name: self.setup.staff_name(&id).to_string(),
                console: self.presence.console(&id),
                staff_id: id,
            })
            .collect()
    }

    /// After a restore: the call log is rebuilt from the alerts' contacts (so a restart does
    /// not call a number twice within a minute), and every step still `requested` (its fate
    /// unknown) is settled: an SMS is asked for again with `resume` (the adapter sends it only
    /// if the modem does not hold it), a call is recorded as failed and not placed again.
    pub(super) fn settle_after_restore(&mut self, now: Now) {
        self.calls = self.call_log(now);
        let mut unsettled: Vec<String> = self
            .alerts
            .values()
            .filter(|a| {
                !a.is_resolved() && a.contacts.iter().any(|c| c.outcome == Outcome::Requested)
            })
            .map(|a| a.id.clone())
            .collect();
        unsettled.dedup();
        for id in unsettled {
            let phones: BTreeMap<String, String> = self
                .setup
                .staff
                .iter()
                .map(|(k, s)| (k.clone(), s.phone.trim().to_string()))
                .collect();
            self.with_alert(now, &id, |ctx, a| {
                let requests = settle_requested(a);
                ctx.touch(a);
                for (staff_id, channel, step) in requests {
                    tracing::info!(
                        alert_id = a.id,
                        staff_id,
                        step,
                        "a fallback SMS was interrupted by a restart: the modem is asked whether it holds it, and sends it only if not"
                    );
                    ctx.out.push_back(Output::Contact(ContactRequest {
                        alert: Box::new(a.clone()),
                        phone: phones.get(&staff_id).cloned().unwrap_or_default(),
                        staff_id,
                        channel,
                        step,
                        resume: true,
                    }));
                }
            });
        }
    }

    /// When each number was last called, from the alerts' contacts (as `Instant`s of this run).
    fn call_log(&self, now: Now) -> BTreeMap<String, Instant> {
        let mut calls: BTreeMap<String, Instant> = BTreeMap::new();
        for c in self.alerts.values().flat_map(|a| &a.contacts) {
            if c.channel != Channel::Call {
                continue;
            }
            let phone = phone_of(&self.setup, &c.staff_id);
            if phone.is_empty() {
                continue;
            }
            let ago = now.wall.duration_since(c.at);
            let at = if ago.is_negative() {
                now.mono
            } else {
                std::time::Duration::try_from(ago)
                    .ok()
                    .and_then(|d| now.mono.checked_sub(d))
                    .unwrap_or(now.mono)
            };
            let e = calls.entry(phone.to_string()).or_insert(at);
            *e = (*e).max(at);
        }
        calls
    }
}

/// The steps of `a` still `requested` after a restart: a call is recorded as failed (never
/// placed twice); an SMS or a webhook request is returned, to be asked for again with `resume`.
fn settle_requested(a: &mut Alert) -> Vec<(String, Channel, u8)> {
    let mut requests = Vec::new();
    for c in a.contacts.iter_mut() {
        if c.outcome != Outcome::Requested {
            continue;
        }
        match c.channel {
            // The modem holds an SMS it was asked for (looked for before sending
            // again); the platform is told the request is a resume.
            Channel::Sms | Channel::Webhook => {
                requests.push((c.staff_id.clone(), c.channel, c.step))
            }
            Channel::Call => {
                c.outcome = Outcome::Failed;
                c.detail = Some("interrupted by a restart; a call is never placed twice".into());
                tracing::warn!(
                    alert_id = a.id,
                    staff_id = c.staff_id,
                    step = c.step,
                    "a fallback call was interrupted by a restart: recorded as failed, not placed again"
                );
            }
        }
    }
    requests
}

/// `ladders` and `contacts` as stored.
pub(super) fn records(
    a: &Alert,
    w: impl Fn(Instant) -> Timestamp,
) -> (Vec<LadderRecord>, Vec<ContactRecord>) {
    (
        a.ladders
            .iter()
            .map(|l| LadderRecord {
                staff_id: l.staff_id.clone(),
                next: l.next,
                due: l.due.map(&w),
                held: l.held,
            })
            .collect(),
        a.contacts
            .iter()
            .map(|c| ContactRecord {
                staff_id: c.staff_id.clone(),
                channel: c.channel.as_str().to_string(),
                step: c.step,
                at: c.at,
                outcome: c.outcome.as_str().to_string(),
                detail: c.detail.clone(),
            })
            .collect(),
    )
}

/// Stored ladders and contacts back; entries this version cannot read are dropped with an
/// error in the log (a contact of an unknown channel or outcome).
pub(super) fn from_records(
    id: &str,
    ladders: &[LadderRecord],
    contacts: &[ContactRecord],
    i: impl Fn(Timestamp) -> Instant,
) -> (Vec<Ladder>, Vec<Contact>) {
    let ladders = ladders
        .iter()
        .map(|l| Ladder {
            staff_id: l.staff_id.clone(),
            next: l.next,
            due: l.due.map(&i),
            held: l.held,
        })
        .collect();
    let contacts = contacts
        .iter()
        .filter_map(|c| {
            let (Some(channel), Some(outcome)) =
                (Channel::parse(&c.channel), Outcome::parse(&c.outcome))
            else {
                tracing::error!(
                    alert_id = id,
                    channel = c.channel,
                    outcome = c.outcome,
                    "stored contact this version cannot read; dropped"
                );
                return None;
            };
            Some(Contact {
                staff_id: c.staff_id.clone(),
                channel,
                step: c.step,
                at: c.at,
                outcome,
                detail: c.detail.clone(),
            })
        })
        .collect();
    (ladders, contacts)
}
