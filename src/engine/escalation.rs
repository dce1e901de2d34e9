//! The alert state machine: tiers, reminders, claims, wearer cancels, resolution.
//!
//! Rules (the contract is `shared/spec/mqtt-contract.md`):
//! - tier 1 is whoever the rota has on duty, tier 2 adds the resident's team, the last tier
//!   adds the supervisors; a tier that adds nobody is skipped at once and logged as a rota gap;
//! - below the last tier the unacked are reminded every `renotify_every` and the next tier is
//!   paged after the tier's ack timeout; at the last tier everyone is paged again every
//!   `repeat_every`, forever, until a person claims it;
//! - every page bumps `updated_at` (strictly increasing per alert), because phones keep only
//!   the newest message per `alert_id` + `updated_at`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use super::alert::{
    Alert, Claim, Closure, Grouping, Kind, Next, NotifyReason, Output, Presses, Refusal,
    Resolution, State, SEQS_KEPT,
};
use super::frame::Frame;
use super::setup::{Setup, WearerCancel};
use super::time::Now;
use super::time::{later, wall_plus, LOW_BATTERY_REMINDER};
use super::{Counters, Engine};

mod actions;

/// More presses than this within `FAULT_WINDOW` is far faster than a person can press (five a
/// second for ten seconds): the alert is flagged as a probable device fault.
pub const FAULT_PRESSES: u32 = 50;
pub const FAULT_WINDOW: Duration = Duration::from_secs(10);

/// Everything a rule needs besides the alert it works on.
pub(super) struct Ctx<'a> {
    setup: &'a Setup,
    now: Now,
    /// When the work being done was due: `now` for inputs, the deadline for timers, so a
    /// timer that fires late does not push every later deadline back by its lateness.
    due: Instant,
    pub(super) out: &'a mut VecDeque<Output>,
    counters: &'a mut Counters,
}

impl Ctx<'_> {
    /// The deadline `d` after what is being done was due, or after now if that is already past.
    fn after(&self, d: Duration) -> Instant {
        let planned = later(self.due, d);
        if planned > self.now.mono {
            planned
        } else {
            later(self.now.mono, d)
        }
    }

    fn last_tier(&self, a: &Alert) -> u8 {
        if a.kind.is_emergency() {
            self.setup.escalation.tiers()
        } else {
            1
        }
    }

    fn remind_every(&self, a: &Alert, tier: u8) -> Duration {
        let e = &self.setup.escalation;
        match a.kind {
            Kind::DeviceSilent => self.setup.supervision.silent_after,
            Kind::LowBattery => LOW_BATTERY_REMINDER,
            Kind::Test => e.repeat_every,
            _ if tier >= self.last_tier(a) => e.repeat_every,
            _ => e.renotify_every,
        }
    }

    fn ack_timeout(&self, a: &Alert, tier: u8) -> Option<Duration> {
        if tier >= self.last_tier(a) || a.state.verify_until().is_some() {
            return None;
        }
        self.setup
            .escalation
            .ack_timeouts
            .get(usize::from(tier.max(1)) - 1)
            .copied()
    }

    /// Everyone paged at `tier` (cumulative), without those who declined.
    fn people_at(&self, a: &Alert, tier: u8) -> Vec<String> {
        let s = self.setup;
        let mut people: Vec<String> = Vec::new();
        let add = |people: &mut Vec<String>, ids: &[String]| {
            for id in ids {
                if !people.contains(id) && !a.declined.contains(id) {
                    people.push(id.clone());
                }
            }
        };
        match a.kind {
            Kind::Test if !a.notified.is_empty() => add(&mut people, &a.notified),
            // The gateway's own fault goes to the supervisors (whoever is on duty without).
            Kind::GatewayFault if !s.escalation.supervisors.is_empty() => {
                add(&mut people, &s.escalation.supervisors)
            }
            _ => add(&mut people, &s.rota.on_duty(self.now.wall)),
        }
        if a.kind.is_emergency() {
            if tier >= 2 {
                if let Some(r) = a.device_id.and_then(|d| s.resident(d)) {
                    add(&mut people, &r.team);
                }
            }
            if tier >= self.last_tier(a) {
                add(&mut people, &s.escalation.supervisors);
            }
        } else if people.is_empty() {
            // Nobody on duty for a notice: the supervisors must hear of it.
            add(&mut people, &s.escalation.supervisors);
        }
        people
    }

    /// The first tier from `from` on that pages somebody new; gaps are logged.
    fn first_tier_with_people(&mut self, a: &Alert, from: u8) -> u8 {
        let last = self.last_tier(a);
        let mut tier = from;
        while tier < last {
            let people = self.people_at(a, tier);
            let below = if tier > 1 {
                self.people_at(a, tier - 1)
            } else {
                Vec::new()
            };
            if people.iter().any(|p| !below.contains(p)) && (tier > 1 || !people.is_empty()) {
                break;
            }
            self.counters.rota_gaps += 1;
            tracing::warn!(
                alert_id = a.id,
                tier,
                "rota gap: tier {tier} pages nobody new (nobody on duty, or no team); skipping to tier {}",
                tier + 1
            );
            tier += 1;
        }
        tier
    }

    /// Moves `updated_at` on, strictly, and republishes the document. Documents carry
    /// milliseconds, so `updated_at` is kept in whole milliseconds: two changes within one
    /// millisecond must still print as two different times.
    pub(super) fn touch(&mut self, a: &mut Alert) {
        let next = wall_plus(a.updated_at, SignedDuration::from_millis(1));
        let wall =
            Timestamp::from_millisecond(self.now.wall.as_millisecond()).unwrap_or(self.now.wall);
        a.updated_at = if wall > a.updated_at { wall } else { next };
        if a.is_quiet() {
            return;
        }
        self.out
            .push_back(Output::AlertChanged(Box::new(a.clone())));
    }

    fn notify(&mut self, a: &Alert, people: &[String], reason: NotifyReason) {
        if a.is_quiet() {
            return;
        }
        for staff_id in people {
            self.out.push_back(Output::Notify {
                staff_id: staff_id.clone(),
                reason,
                alert: Box::new(a.clone()),
            });
        }
    }

    /// Pages everyone at `tier` and (re)starts the tier's clocks.
    fn page(&mut self, a: &mut Alert, tier: u8, reason: NotifyReason) {
        if a.is_quiet() {
            // Held or grouped: its clock runs, nobody is paged (the group's notice is).
            a.state = State::Open {
                remind_at: self.after(self.remind_every(a, tier)),
                next: a.state.verify_until().map_or(Next::Remind, Next::Verify),
            };
            self.touch(a);
            return;
        }
        let mut people = self.people_at(a, tier);
        if people.is_empty() && tier >= self.last_tier(a) && !a.declined.is_empty() {
            tracing::error!(
                alert_id = a.id,
                declined = ?a.declined,
                "everyone paged declined; paging them all again (an alert is never dropped)"
            );
            a.declined.clear();
            people = self.people_at(a, tier);
        }
        if people.is_empty() {
            tracing::error!(
                alert_id = a.id,
                tier,
                "nobody to page: no staff on duty, no team, no supervisors; a person must fix the rota"
            );
        }
        a.tier = a.tier.max(tier);
        for p in &people {
            if !a.notified.contains(p) {
                a.notified.push(p.clone());
            }
        }
        a.paged = people.clone();
        // A reminder within the tier keeps the tier's clock (and a cancel's verification);
        // anything else starts it.
        let running = match reason {
            NotifyReason::Reminder => a.state.escalate_at(),
            _ => None,
        };
        let next = match (a.state.verify_until(), self.ack_timeout(a, tier)) {
            (Some(v), _) => Next::Verify(v),
            (None, Some(t)) => Next::Escalate(running.unwrap_or_else(|| self.after(t))),
            (None, None) => Next::Remind,
        };
        a.state = State::Open {
            remind_at: self.after(self.remind_every(a, tier)),
            next,
        };
        // A page tells of every press so far.
        a.presses.paged_at = Some(self.now.mono);
        a.presses.due = None;
        self.touch(a);
        tracing::info!(
            alert_id = a.id,
            kind = a.kind.as_str(),
            tier = a.tier,
            reason = reason.as_str(),
            paged = ?people,
            "alert paged"
        );
        self.notify(a, &people, reason);
    }

    /// Pages the next tier (or the last one again).
    fn escalate(&mut self, a: &mut Alert, reason: NotifyReason) {
        // Escalation is what a wearer's cancel held back: it ends the verification.
        end_verification(a);
        let last = self.last_tier(a);
        if a.tier >= last {
            let reason = if reason == NotifyReason::Escalated {
                NotifyReason::Reminder
            } else {
                reason
            };
            self.page(a, last, reason);
        } else {
            let tier = self.first_tier_with_people(a, a.tier + 1);
            self.page(a, tier, reason);
        }
    }

    /// Closes the alert. A person who resolves without acking claims it too; the gateway or
    /// the wearer (`by_person == false`) does not.
    fn resolve(&mut self, a: &mut Alert, by: &str, resolution: Resolution, by_person: bool) {
        let wall = self.now.wall;
        let claim = match a.state.claim() {
            Some(c) => Some(c.clone()),
            None => by_person.then(|| Claim {
                by: by.to_string(),
                at: wall,
            }),
        };
        a.presses.due = None;
        a.state = State::Resolved {
            clear_at: later(self.now.mono, self.setup.resolved_retention),
            closure: Closure {
                by: by.to_string(),
                at: wall,
                resolution,
            },
            claim,
            on_scene_at: a.state.on_scene_at(),
        };
        self.touch(a);
        tracing::info!(
            alert_id = a.id,
            kind = a.kind.as_str(),
            resolved_by = by,
            resolution = resolution.as_str(),
            "alert resolved"
        );
        let everyone = a.notified.clone();
        self.notify(a, &everyone, NotifyReason::Resolved);
    }

    /// Pages the band's latest presses: the current tier when nobody claimed the alert,
    /// else the people paged last (the claimer among them must know the wearer pressed again).
    fn page_presses(&mut self, a: &mut Alert) {
        a.presses.due = None;
        match a.state {
            State::Open { .. } => {
                let tier = a.tier;
                self.page(a, tier, NotifyReason::Reminder);
            }
            State::Resolved { .. } => {}
            _ => {
                a.presses.paged_at = Some(self.now.mono);
                self.touch(a);
                let paged = a.paged.clone();
                self.notify(a, &paged, NotifyReason::Reminder);
            }
        }
    }

    /// Another press of a band whose emergency `a` is open: merged into it, the kind raised
    /// to the most serious, a cancel withdrawn; paged again at once when that is news, else
    /// at most once per `renotify_every` after the last page.
    fn press_again(&mut self, a: &mut Alert, frame: &Frame, rssi: Option<i16>, kind: Kind) {
        if a.is_resolved() {
            return;
        }
        let upgraded = kind > a.kind;
        a.kind = a.kind.max(kind);
        remember_seq(&mut a.seqs, frame.seq);
        a.battery_pct = Some(frame.battery_pct);
        a.rssi = rssi.or(a.rssi);
        let withdrawn = a.cancel_requested;
        if withdrawn {
            tracing::warn!(
                alert_id = a.id,
                "band pressed again after cancelling: cancel withdrawn"
            );
        }
        a.cancel_requested = false;
        end_verification(a);
        let newly_faulty = count_press(&mut a.presses, self.now);
        // Presses page again at most once per renotify_every after the last page; a more
        // serious kind or a withdrawn cancel is news and pages at once.
        let renotify = self.setup.escalation.renotify_every;
        let quiet_until = a.presses.paged_at.map(|t| later(t, renotify));
        if upgraded || withdrawn || quiet_until.is_none_or(|q| q <= self.now.mono) {
            tracing::info!(
                alert_id = a.id,
                kind = a.kind.as_str(),
                seq = frame.seq,
                presses = a.presses.count,
                "band pressed again: same alert, paged again"
            );
            self.page_presses(a);
        } else {
            tracing::debug!(
                alert_id = a.id,
                seq = frame.seq,
                presses = a.presses.count,
                "band pressed again within renotify_every: coalesced"
            );
            if a.presses.due.is_none() {
                a.presses.due = quiet_until;
            }
        }
        if newly_faulty {
            self.suspect_device_fault(a);
        }
    }

    /// A band pressing far faster than a person can: the supervisors hear of it once, as a
    /// probable device fault. The alert goes on paging as before (a person may be in trouble
    /// and the band broken at once).
    fn suspect_device_fault(&mut self, a: &mut Alert) {
        a.presses.fault_suspected = true;
        let supervisors: Vec<String> = self
            .setup
            .escalation
            .supervisors
            .iter()
            .filter(|s| !a.declined.contains(s))
            .cloned()
            .collect();
        for s in &supervisors {
            if !a.notified.contains(s) {
                a.notified.push(s.clone());
            }
        }
        self.touch(a);
        tracing::error!(
            alert_id = a.id,
            device_id = a.device_id,
            presses = a.presses.count,
            "band presses far faster than a person can: probable device fault; supervisors told, the alert keeps paging"
        );
        self.notify(a, &supervisors, NotifyReason::Reminder);
    }

    /// One overdue deadline of `a`. Returns `false` when the alert's retention ended.
    fn fire(&mut self, a: &mut Alert) -> bool {
        self.due = a.own_deadline();
        if !a.is_resolved() && a.presses.due.is_some_and(|d| d <= self.now.mono) {
            self.page_presses(a);
            return true;
        }
        match a.state.clone() {
            State::Resolved { .. } => {
                // A quiet alert was never published: there is no retained copy to clear.
                if !a.is_quiet() {
                    tracing::info!(alert_id = a.id, "retention over; retained copy cleared");
                    self.out.push_back(Output::AlertCleared {
                        alert_id: a.id.clone(),
                    });
                }
                return false;
            }
            State::Acknowledged { claim, .. } => {
                tracing::info!(
                    alert_id = a.id,
                    claimed_by = claim.by,
                    "claim lapsed: neither on scene nor resolved within claim_timeout"
                );
                self.escalate(a, NotifyReason::ClaimLapsed);
            }
            State::OnScene { claim, since, .. } => {
                let claimer = vec![claim.by.clone()];
                a.state = State::OnScene {
                    remind_at: self.after(self.setup.escalation.claim_timeout),
                    claim,
                    since,
                };
                self.touch(a);
                tracing::info!(
                    alert_id = a.id,
                    "on scene but not resolved: reminding the claimer"
                );
                self.notify(a, &claimer, NotifyReason::Reminder);
            }
            State::Open { remind_at, next } => {
                let now = self.now.mono;
                if matches!(next, Next::Verify(v) if v <= now) {
                    tracing::warn!(
                        alert_id = a.id,
                        "wearer's cancel not verified in time: escalation resumes"
                    );
                    self.escalate(a, NotifyReason::Escalated);
                } else if matches!(next, Next::Escalate(e) if e <= now) {
                    self.escalate(a, NotifyReason::Escalated);
                } else if remind_at <= self.now.mono {
                    let tier = a.tier;
                    self.page(a, tier, NotifyReason::Reminder);
                }
            }
        }
        true
    }
}

impl Engine {
    /// Runs `f` on the alert `id` with a rule context, and records the change.
    pub(super) fn with_alert<R>(
        &mut self,
        now: Now,
        id: &str,
        f: impl FnOnce(&mut Ctx<'_>, &mut Alert) -> R,
    ) -> Option<R> {
        let a = self.alerts.get_mut(id)?;
        let mut ctx = Ctx {
            setup: &self.setup,
            now,
            due: now.mono,
            out: &mut self.outputs,
            counters: &mut self.counters,
        };
        let r = f(&mut ctx, a);
        // Ladders start for people newly paged and stop for those who answered (their record
        // is written with the alert's; the document shows only `contacts`).
        super::fallback::sync(self.setup.fallback.as_ref(), &self.presence, a, now.mono);
        let deadline = a.deadline();
        self.index.set_deadline(id, deadline);
        self.dirty_alerts.insert(id.to_string());
        Some(r)
    }

    /// Takes `alert` in and, unless it is quiet (a held silence), pages its first tier.
    pub(super) fn open_alert(&mut self, now: Now, alert: Alert) {
        let id = alert.id.clone();
        if !alert.is_quiet() {
            tracing::info!(
                alert_id = id,
                kind = alert.kind.as_str(),
                device_id = alert.device_id,
                "alert raised"
            );
        }
        self.index.insert(&alert);
        self.alerts.insert(id.clone(), alert);
        self.with_alert(now, &id, |ctx, a| {
            let tier = ctx.first_tier_with_people(a, 1);
            ctx.page(a, tier, NotifyReason::New);
        });
    }

    /// Publishes the alert's document again (it changed without a page).
    pub(super) fn republish(&mut self, now: Now, id: &str) {
        self.with_alert(now, id, |ctx, a| ctx.touch(a));
    }

    /// A held silence that turned out to be alone: paged as any alert is.
    pub(super) fn page_alone(&mut self, now: Now, id: &str) {
        // Its band's record goes with it now, no longer in the background batches.
        if let Some(d) = self.alerts.get(id).and_then(|a| a.device_id) {
            self.background_devices.remove(&d);
            self.urgent_devices.insert(d);
        }
        self.with_alert(now, id, |ctx, a| {
            a.grouping = Grouping::Alone;
            tracing::warn!(
                alert_id = a.id,
                kind = a.kind.as_str(),
                device_id = a.device_id,
                "band not heard for silent_after: alert raised"
            );
            let tier = ctx.first_tier_with_people(a, 1);
            ctx.page(a, tier, NotifyReason::New);
        });
    }

    /// An SOS, fall or no-motion frame: a new alert, or an update of the band's open one.
    pub(super) fn raise_or_update(
        &mut self,
        now: Now,
        frame: &Frame,
        rssi: Option<i16>,
        kind: Kind,
    ) -> String {
        let existing = self
            .open_alert_of(frame.device_id, Kind::is_emergency)
            .or_else(|| {
                let id = format!("{}-{}", frame.device_id, frame.seq);
                self.alerts.contains_key(&id).then_some(id)
            });
        let Some(id) = existing else {
            let id = format!("{}-{}", frame.device_id, frame.seq);
            let alert = Alert::new(id.clone(), kind, now)
                .of_band(frame.device_id, Some(frame.battery_pct), rssi)
                .first_press(frame.seq, now);
            self.open_alert(now, alert);
            return id;
        };
        self.flapping.remove(&id);
        self.with_alert(now, &id, |ctx, a| ctx.press_again(a, frame, rssi, kind));
        id
    }

    /// The wearer's Cancel of the alert raised by frame `of_seq`.
    pub(super) fn wearer_cancel(
        &mut self,
        now: Now,
        device_id: u32,
        of_seq: u32,
    ) -> Option<String> {
        // The alert keeps only its first and latest seqs; a band's seqs only grow, so any
        // seq between the first and the latest was one of its presses too.
        let id = self
            .index
            .of_device(device_id)
            .filter_map(|id| self.alerts.get(id))
            .find(|a| {
                a.kind.is_emergency()
                    && !a.is_resolved()
                    && (a.seqs.contains(&of_seq)
                        || a.seqs.first().is_some_and(|f| *f <= of_seq)
                            && a.seqs.last().is_some_and(|l| of_seq <= *l))
            })
            .map(|a| a.id.clone());
        let Some(id) = id else {
            self.counters.unmatched_cancels += 1;
            tracing::warn!(
                device_id,
                of_seq,
                "wearer cancel names no open alert of this band; ignored"
            );
            return None;
        };
        let mode = self.setup.escalation.wearer_cancel;
        let verify = self.setup.escalation.cancel_verify_timeout;
        self.with_alert(now, &id, |ctx, a| match mode {
            WearerCancel::Close => {
                ctx.resolve(a, "wearer", Resolution::WearerCancelVerified, false)
            }
            WearerCancel::Verify => {
                if a.cancel_requested {
                    return;
                }
                a.cancel_requested = true;
                if let State::Open { remind_at, .. } = a.state {
                    a.state = State::Open {
                        remind_at,
                        next: Next::Verify(later(now.mono, verify)),
                    };
                }
                ctx.touch(a);
                tracing::info!(
                    alert_id = a.id,
                    "wearer cancelled: no further tiers; the people paged must verify by phone"
                );
                let people: Vec<String> = a
                    .notified
                    .iter()
                    .filter(|p| !a.declined.contains(p))
                    .cloned()
                    .collect();
                ctx.notify(a, &people, NotifyReason::CancelRequested);
            }
        });
        Some(id)
    }

    /// The claim of `alert_id` changed hands (or the alert is gone): late ackers may be
    /// told again who has it.
    fn forget_late_acks(&mut self, alert_id: &str) {
        let from = (alert_id.to_string(), String::new());
        let told: Vec<(String, String)> = self
            .late_told
            .range(from..)
            .take_while(|(a, _)| a == alert_id)
            .cloned()
            .collect();
        for k in told {
            self.late_told.remove(&k);
        }
    }

    /// A `test` alert through the real pipeline, to `staff_id` or whoever is on duty;
    /// resolved as `test` when acknowledged. Returns its id.
    pub fn raise_test(&mut self, now: Now, staff_id: Option<&str>) -> Result<String, Refusal> {
        if let Some(s) = staff_id {
            if !self.setup.staff.contains_key(s) {
                return Err(Refusal::UnknownStaff);
            }
        }
        self.meta.test_count += 1;
        self.meta_dirty = true;
        let id = format!("test-{}", self.meta.test_count);
        let mut alert = Alert::new(id.clone(), Kind::Test, now);
        // A test for one person pages only them.
        alert.notified = staff_id.map(str::to_string).into_iter().collect();
        self.open_alert(now, alert);
        Ok(id)
    }

    /// Resolves on the gateway's behalf (a silent band heard again); nobody claims it.
    pub(super) fn resolve(&mut self, now: Now, id: &str, by: &str, resolution: Resolution) {
        self.with_alert(now, id, |ctx, a| ctx.resolve(a, by, resolution, false));
    }

    pub(super) fn fire_alert_deadlines(&mut self, now: Now) {
        for id in self.index.due(now.mono) {
            // A deadline is "something else happening": a claimer's decline may escalate again.
            self.flapping.remove(&id);
            self.forget_late_acks(&id);
            // Each step moves the deadline past `now` (durations are positive), so this ends.
            while self
                .alerts
                .get(&id)
                .is_some_and(|a| a.deadline() <= now.mono)
            {
                // A ladder's step first: it moves past `now` or stops (`fire_ladders`).
                let ladder_due = self.alerts.get(&id).and_then(Alert::ladder_due);
                if ladder_due.is_some_and(|d| d <= now.mono) {
                    self.fire_ladders(now, &id);
                    continue;
                }
                let keep = self.with_alert(now, &id, |ctx, a| ctx.fire(a));
                if keep == Some(false) {
                    self.remove_alert(&id);
                }
            }
            if !self.alerts.contains_key(&id) {
                self.index.remove(&id, None);
            }
        }
    }

    /// Forgets an alert whose retention ended.
    fn remove_alert(&mut self, id: &str) {
        let quiet = self.alerts.remove(id).is_some_and(|a| {
            self.index.remove(id, a.device_id);
            a.is_quiet()
        });
        self.dirty_alerts.remove(id);
        self.background_alerts.remove(id);
        if quiet {
            self.background_removed.push(id.to_string());
        } else {
            self.removed_alerts.push(id.to_string());
        }
    }
}

/// Ends the verification of a wearer's cancel (an open alert's `Next::Verify`): escalation is
/// planned again at the alert's next page.
fn end_verification(a: &mut Alert) {
    if let State::Open { next, .. } = &mut a.state {
        if matches!(next, Next::Verify(_)) {
            *next = Next::Remind;
        }
    }
}

/// Counts a press and its burst; `true` when the burst just became far faster than a person
/// can press (`FAULT_PRESSES` within `FAULT_WINDOW`) and the band was not suspected yet.
fn count_press(p: &mut Presses, now: Now) -> bool {
    p.count = p.count.saturating_add(1);
    p.last_at = Some(now.wall);
    let in_burst = match p.burst {
        Some((from, n)) if now.mono.saturating_duration_since(from) < FAULT_WINDOW => {
            n.saturating_add(1)
        }
        _ => {
            p.burst = Some((now.mono, 0));
            1
        }
    };
    if let Some((_, n)) = &mut p.burst {
        *n = in_burst;
    }
    !p.fault_suspected && in_burst > FAULT_PRESSES
}

/// Keeps the first seq and the latest `SEQS_KEPT - 1`.
fn remember_seq(seqs: &mut Vec<u32>, seq: u32) {
    if seqs.contains(&seq) {
        return;
    }
    if seqs.len() >= SEQS_KEPT {
        seqs.remove(1);
    }
    seqs.push(seq);
}
