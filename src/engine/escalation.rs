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

use super::alert::{Action, Alert, Kind, NotifyReason, Output, Refusal, Resolution, State};
use super::frame::Frame;
use super::setup::{Setup, WearerCancel};
use super::snapshot::AlertRecord;
use super::time::{later, wall_plus, LOW_BATTERY_REMINDER};
use super::{Counters, Engine};

/// What a phone action does to the engine's memory of a claimer flapping (see `flapping`).
enum Flap {
    /// The claimer declined and that escalated: remember them with the open state it set.
    Start(State),
    Keep,
    Clear,
}

/// The next deadline of an `Open` state.
fn open_deadline(s: &State) -> Option<Instant> {
    match s {
        State::Open {
            remind_at,
            escalate_at,
        } => Some(escalate_at.map_or(*remind_at, |e| e.min(*remind_at))),
        _ => None,
    }
}

/// Everything a rule needs besides the alert it works on.
struct Ctx<'a> {
    setup: &'a Setup,
    now: Instant,
    /// When the work being done was due: `now` for inputs, the deadline for timers, so a
    /// timer that fires late does not push every later deadline back by its lateness.
    due: Instant,
    wall: Timestamp,
    out: &'a mut VecDeque<Output>,
    counters: &'a mut Counters,
}

impl Ctx<'_> {
    /// The deadline `d` after what is being done was due, or after now if that is already past.
    fn after(&self, d: Duration) -> Instant {
        let planned = later(self.due, d);
        if planned > self.now {
            planned
        } else {
            later(self.now, d)
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
        if tier >= self.last_tier(a) || a.verify_until.is_some() {
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
            _ => add(&mut people, &s.rota.on_duty(self.wall)),
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
    fn touch(&mut self, a: &mut Alert) {
        let next = wall_plus(a.updated_at, SignedDuration::from_millis(1));
        let wall = Timestamp::from_millisecond(self.wall.as_millisecond()).unwrap_or(self.wall);
        a.updated_at = if wall > a.updated_at { wall } else { next };
        self.out
            .push_back(Output::AlertChanged(Box::new(a.clone())));
    }

    fn notify(&mut self, a: &Alert, people: &[String], reason: NotifyReason) {
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
        // A reminder within the tier keeps the tier's clock; anything else starts it.
        let running = match a.state {
            State::Open { escalate_at, .. } if reason == NotifyReason::Reminder => escalate_at,
            _ => None,
        };
        let escalate_at = self
            .ack_timeout(a, tier)
            .map(|t| running.unwrap_or_else(|| self.after(t)));
        a.state = State::Open {
            remind_at: self.after(self.remind_every(a, tier)),
            escalate_at,
        };
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
        if by_person && a.acked_by.is_none() {
            a.acked_by = Some(by.to_string());
            a.acked_at = Some(self.wall);
        }
        a.resolved_by = Some(by.to_string());
        a.resolved_at = Some(self.wall);
        a.resolution = Some(resolution);
        a.verify_until = None;
        a.state = State::Resolved {
            clear_at: later(self.now, self.setup.resolved_retention),
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

    /// One overdue deadline of `a`. Returns `false` when the alert's retention ended.
    fn fire(&mut self, a: &mut Alert) -> bool {
        self.due = a.deadline();
        match a.state.clone() {
            State::Resolved { .. } => {
                tracing::info!(alert_id = a.id, "retention over; retained copy cleared");
                self.out.push_back(Output::AlertCleared {
                    alert_id: a.id.clone(),
                });
                return false;
            }
            State::Acknowledged { .. } => {
                tracing::info!(
                    alert_id = a.id,
                    claimed_by = a.acked_by.as_deref().unwrap_or(""),
                    "claim lapsed: neither on scene nor resolved within claim_timeout"
                );
                a.acked_by = None;
                a.acked_at = None;
                self.escalate(a, NotifyReason::ClaimLapsed);
            }
            State::OnScene { .. } => {
                let claimer: Vec<String> = a.acked_by.iter().cloned().collect();
                a.state = State::OnScene {
                    remind_at: self.after(self.setup.escalation.claim_timeout),
                };
                self.touch(a);
                tracing::info!(
                    alert_id = a.id,
                    "on scene but not resolved: reminding the claimer"
                );
                self.notify(a, &claimer, NotifyReason::Reminder);
            }
            State::Open {
                remind_at,
                escalate_at,
            } => {
                if a.verify_until.is_some_and(|v| v <= self.now) {
                    a.verify_until = None;
                    tracing::warn!(
                        alert_id = a.id,
                        "wearer's cancel not verified in time: escalation resumes"
                    );
                    self.escalate(a, NotifyReason::Escalated);
                } else if escalate_at.is_some_and(|e| e <= self.now) {
                    self.escalate(a, NotifyReason::Escalated);
                } else if remind_at <= self.now {
                    let tier = a.tier;
                    self.page(a, tier, NotifyReason::Reminder);
                }
            }
        }
        true
    }
}

impl Engine {
    fn ctx(
        &mut self,
        now: Instant,
        wall: Timestamp,
    ) -> (Ctx<'_>, &mut std::collections::BTreeMap<String, Alert>) {
        (
            Ctx {
                setup: &self.setup,
                now,
                due: now,
                wall,
                out: &mut self.outputs,
                counters: &mut self.counters,
            },
            &mut self.alerts,
        )
    }

    /// Runs `f` on the alert `id` with a rule context, and records the change.
    fn with_alert<R>(
        &mut self,
        now: Instant,
        wall: Timestamp,
        id: &str,
        f: impl FnOnce(&mut Ctx<'_>, &mut Alert) -> R,
    ) -> Option<R> {
        let (mut ctx, alerts) = self.ctx(now, wall);
        let a = alerts.get_mut(id)?;
        let r = f(&mut ctx, a);
        self.dirty_alerts.insert(id.to_string());
        Some(r)
    }

    /// Opens a new alert and pages its first tier.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn raise(
        &mut self,
        now: Instant,
        wall: Timestamp,
        id: String,
        kind: Kind,
        device_id: Option<u32>,
        seq: Option<u32>,
        battery_pct: Option<u8>,
        rssi: Option<i16>,
        only: Option<String>,
    ) {
        let alert = Alert {
            id: id.clone(),
            kind,
            state: State::Open {
                remind_at: now,
                escalate_at: None,
            },
            cancel_requested: false,
            verify_until: None,
            tier: 0,
            device_id,
            raised_at: wall,
            updated_at: wall_plus(wall, SignedDuration::from_millis(-1)),
            notified: only.into_iter().collect(),
            paged: Vec::new(),
            delivered_to: Vec::new(),
            declined: Vec::new(),
            acked_by: None,
            acked_at: None,
            on_scene_at: None,
            resolved_by: None,
            resolved_at: None,
            resolution: None,
            battery_pct,
            rssi,
            seqs: seq.into_iter().collect(),
            detail: None,
        };
        self.open(now, wall, alert);
    }

    /// Adds a new alert (built by `raise` or another raiser) and pages its first tier.
    pub(super) fn open(&mut self, now: Instant, wall: Timestamp, alert: Alert) {
        let id = alert.id.clone();
        tracing::info!(
            alert_id = id,
            kind = alert.kind.as_str(),
            device_id = alert.device_id,
            "alert raised"
        );
        self.alerts.insert(id.clone(), alert);
        self.with_alert(now, wall, &id, |ctx, a| {
            let tier = ctx.first_tier_with_people(a, 1);
            ctx.page(a, tier, NotifyReason::New);
        });
    }

    /// An SOS, fall or no-motion frame: a new alert, or an update of the band's open one.
    pub(super) fn raise_or_update(
        &mut self,
        now: Instant,
        wall: Timestamp,
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
            self.raise(
                now,
                wall,
                id.clone(),
                kind,
                Some(frame.device_id),
                Some(frame.seq),
                Some(frame.battery_pct),
                rssi,
                None,
            );
            return id;
        };
        self.flapping.remove(&id);
        self.with_alert(now, wall, &id, |ctx, a| {
            if a.is_resolved() {
                return;
            }
            a.kind = a.kind.max(kind);
            if !a.seqs.contains(&frame.seq) {
                a.seqs.push(frame.seq);
            }
            a.battery_pct = Some(frame.battery_pct);
            a.rssi = rssi.or(a.rssi);
            if a.cancel_requested {
                tracing::warn!(
                    alert_id = a.id,
                    "band pressed again after cancelling: cancel withdrawn"
                );
            }
            a.cancel_requested = false;
            a.verify_until = None;
            tracing::info!(
                alert_id = a.id,
                kind = a.kind.as_str(),
                seq = frame.seq,
                "band pressed again: same alert, current tier paged again"
            );
            match a.state {
                State::Open { .. } => {
                    let tier = a.tier;
                    ctx.page(a, tier, NotifyReason::Reminder);
                }
                _ => {
                    ctx.touch(a);
                    let paged = a.paged.clone();
                    ctx.notify(a, &paged, NotifyReason::Reminder);
                }
            }
        });
        id
    }

    /// The wearer's Cancel of the alert raised by frame `of_seq`.
    pub(super) fn wearer_cancel(
        &mut self,
        now: Instant,
        wall: Timestamp,
        device_id: u32,
        of_seq: u32,
    ) -> Option<String> {
        let id = self
            .alerts
            .values()
            .find(|a| {
                a.device_id == Some(device_id)
                    && a.kind.is_emergency()
                    && !a.is_resolved()
                    && a.seqs.contains(&of_seq)
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
        self.with_alert(now, wall, &id, |ctx, a| match mode {
            WearerCancel::Close => {
                ctx.resolve(a, "wearer", Resolution::WearerCancelVerified, false)
            }
            WearerCancel::Verify => {
                if a.cancel_requested {
                    return;
                }
                a.cancel_requested = true;
                if let State::Open { remind_at, .. } = a.state {
                    a.verify_until = Some(later(now, verify));
                    a.state = State::Open {
                        remind_at,
                        escalate_at: None,
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

    /// A duty phone's action on an alert, checked against the contract's "who may act".
    /// Refusals change nothing (no state, no output, nothing to store); they are counted by
    /// reason and the caller logs them.
    pub fn handle_action(
        &mut self,
        now: Instant,
        wall: Timestamp,
        staff_id: &str,
        alert_id: &str,
        action: Action,
    ) -> Result<(), Refusal> {
        self.act(now, wall, staff_id, alert_id, action, true)
    }

    /// An operator's action from the control socket, taken `--as` a person: the operator is
    /// trusted to act for anyone, so "who may act" is not checked (everything else is).
    pub fn handle_operator_action(
        &mut self,
        now: Instant,
        wall: Timestamp,
        staff_id: &str,
        alert_id: &str,
        action: Action,
    ) -> Result<(), Refusal> {
        self.act(now, wall, staff_id, alert_id, action, false)
    }

    /// Whether `staff_id` may take `action` on `a` (the contract's "who may act").
    fn permitted(&self, a: &Alert, staff_id: &str, action: Action) -> bool {
        if self
            .setup
            .escalation
            .supervisors
            .iter()
            .any(|s| s == staff_id)
        {
            return true;
        }
        let paged = a.notified.iter().any(|p| p == staff_id);
        let claimer = a.acked_by.as_deref() == Some(staff_id);
        match action {
            Action::Delivered | Action::Ack | Action::Decline => paged,
            Action::OnScene => claimer,
            Action::Resolve(_) => claimer || (paged && a.acked_by.is_none()),
        }
    }

    fn act(
        &mut self,
        now: Instant,
        wall: Timestamp,
        staff_id: &str,
        alert_id: &str,
        action: Action,
        check: bool,
    ) -> Result<(), Refusal> {
        let refused = |engine: &mut Engine, r: Refusal| {
            *engine
                .counters
                .refused_actions
                .entry(r.as_str())
                .or_default() += 1;
            Err(r)
        };
        if !self.setup.staff.contains_key(staff_id) {
            return refused(self, Refusal::UnknownStaff);
        }
        match self.alerts.get(alert_id) {
            None => return refused(self, Refusal::UnknownAlert),
            Some(a) if a.is_resolved() => return refused(self, Refusal::AlreadyResolved),
            Some(a) if check && !self.permitted(a, staff_id, action) => {
                return refused(self, Refusal::NotPermitted)
            }
            Some(_) => {}
        }
        let claim_timeout = self.setup.escalation.claim_timeout;
        let staff = staff_id.to_string();
        // A claimer who declined (after acking) has escalated once already; until something
        // else happens to the alert, their further acks and declines change the claim and
        // the document but page nobody (a looping phone must not page everyone each time),
        // and move no deadline: the alert stays on the clocks that escalation set.
        let flapping = self
            .flapping
            .get(alert_id)
            .filter(|(p, _)| p == staff_id)
            .map(|(_, open)| open.clone());
        let told_late = self
            .late_told
            .contains(&(alert_id.to_string(), staff.clone()));
        let claimer_before = self.alerts.get(alert_id).and_then(|a| a.acked_by.clone());
        let flap = self.with_alert(now, wall, alert_id, |ctx, a| {
            let mine = a.acked_by.as_deref() == Some(staff_id);
            let keep = if flapping.is_some() {
                Flap::Keep
            } else {
                Flap::Clear
            };
            match action {
                Action::Delivered => {
                    if !a.delivered_to.contains(&staff) {
                        a.delivered_to.push(staff.clone());
                        ctx.touch(a);
                    }
                    keep
                }
                Action::Ack => match (&a.state, &a.acked_by) {
                    (State::Open { .. }, _) => {
                        if a.kind == Kind::Test {
                            ctx.resolve(a, &staff, Resolution::Test, true);
                            return Flap::Clear;
                        }
                        a.acked_by = Some(staff.clone());
                        a.acked_at = Some(wall);
                        a.verify_until = None;
                        a.declined.retain(|p| p != &staff);
                        let lapse_at = later(now, claim_timeout);
                        a.state = State::Acknowledged {
                            lapse_at: match &flapping {
                                // The claim lapses when the alert would next have paged.
                                Some(open) => lapse_at.min(open_deadline(open).unwrap_or(lapse_at)),
                                None => lapse_at,
                            },
                        };
                        ctx.touch(a);
                        if flapping.is_some() {
                            tracing::debug!(
                                alert_id = a.id,
                                acked_by = staff,
                                "alert acknowledged again by the claimer who just declined it; nobody paged, no deadline moved"
                            );
                        } else {
                            tracing::info!(alert_id = a.id, acked_by = staff, "alert acknowledged");
                            let everyone = a.notified.clone();
                            ctx.notify(a, &everyone, NotifyReason::Acknowledged);
                        }
                        keep
                    }
                    _ if mine => keep,
                    // Told once per claim: a phone repeating its late ack pages nobody again.
                    _ if told_late => Flap::Clear,
                    _ => {
                        tracing::info!(
                            alert_id = a.id,
                            staff,
                            acked_by = a.acked_by.as_deref().unwrap_or(""),
                            "late ack: already claimed; telling the late acker who has it"
                        );
                        ctx.notify(a, std::slice::from_ref(&staff), NotifyReason::Acknowledged);
                        Flap::Clear
                    }
                },
                Action::Decline => {
                    if a.declined.contains(&staff) {
                        return keep;
                    }
                    a.declined.push(staff.clone());
                    a.paged.retain(|p| p != &staff);
                    tracing::info!(alert_id = a.id, staff, "declined");
                    match (&flapping, mine) {
                        (Some(open), true) => {
                            a.acked_by = None;
                            a.acked_at = None;
                            // debug: a looping phone would otherwise fill the log.
                            tracing::debug!(
                                alert_id = a.id,
                                staff,
                                "claimer declined again: claim released; not escalated twice in a row, paging goes on as planned"
                            );
                            a.paged = ctx.people_at(a, a.tier);
                            a.state = open.clone();
                            ctx.touch(a);
                            keep
                        }
                        (None, true) => {
                            a.acked_by = None;
                            a.acked_at = None;
                            tracing::info!(alert_id = a.id, "claimer declined: claim released");
                            ctx.escalate(a, NotifyReason::ClaimLapsed);
                            Flap::Start(a.state.clone())
                        }
                        _ if matches!(a.state, State::Open { .. }) && a.paged.is_empty() => {
                            tracing::info!(
                                alert_id = a.id,
                                "everyone paged declined: escalating now"
                            );
                            a.verify_until = None;
                            ctx.escalate(a, NotifyReason::Escalated);
                            Flap::Clear
                        }
                        _ => {
                            ctx.touch(a);
                            Flap::Clear
                        }
                    }
                }
                Action::OnScene => {
                    if matches!(a.state, State::OnScene { .. }) {
                        return Flap::Clear;
                    }
                    if a.acked_by.is_none() {
                        a.acked_by = Some(staff.clone());
                        a.acked_at = Some(wall);
                    }
                    a.on_scene_at = Some(wall);
                    a.verify_until = None;
                    a.state = State::OnScene {
                        remind_at: later(now, claim_timeout),
                    };
                    ctx.touch(a);
                    tracing::info!(alert_id = a.id, staff, "on scene");
                    Flap::Clear
                }
                Action::Resolve(resolution) => {
                    ctx.resolve(a, &staff, resolution, true);
                    Flap::Clear
                }
            }
        });
        let claimer_after = self.alerts.get(alert_id).and_then(|a| a.acked_by.clone());
        if claimer_after != claimer_before {
            self.forget_late_acks(alert_id);
        } else if action == Action::Ack && claimer_after.as_deref() != Some(staff_id) {
            self.late_told.insert((alert_id.to_string(), staff.clone()));
        }
        match flap {
            Some(Flap::Start(open)) => {
                self.flapping.insert(alert_id.to_string(), (staff, open));
            }
            Some(Flap::Keep) => {}
            Some(Flap::Clear) | None => {
                self.flapping.remove(alert_id);
            }
        }
        Ok(())
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
    pub fn raise_test(
        &mut self,
        now: Instant,
        wall: Timestamp,
        staff_id: Option<&str>,
    ) -> Result<String, Refusal> {
        if let Some(s) = staff_id {
            if !self.setup.staff.contains_key(s) {
                return Err(Refusal::UnknownStaff);
            }
        }
        self.meta.test_count += 1;
        self.meta_dirty = true;
        let id = format!("test-{}", self.meta.test_count);
        self.raise(
            now,
            wall,
            id.clone(),
            Kind::Test,
            None,
            None,
            None,
            None,
            staff_id.map(str::to_string),
        );
        Ok(id)
    }

    /// Resolves on the gateway's behalf (a silent band heard again); nobody claims it.
    pub(super) fn resolve(
        &mut self,
        now: Instant,
        wall: Timestamp,
        id: &str,
        by: &str,
        resolution: Resolution,
    ) {
        self.with_alert(now, wall, id, |ctx, a| {
            ctx.resolve(a, by, resolution, false)
        });
    }

    pub(super) fn fire_alert_deadlines(&mut self, now: Instant, wall: Timestamp) {
        let due: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.deadline() <= now)
            .map(|a| a.id.clone())
            .collect();
        for id in due {
            // A deadline is "something else happening": a claimer's decline may escalate again.
            self.flapping.remove(&id);
            self.forget_late_acks(&id);
            // Each step moves the deadline past `now` (durations are positive), so this ends.
            while self.alerts.get(&id).is_some_and(|a| a.deadline() <= now) {
                let keep = self.with_alert(now, wall, &id, |ctx, a| ctx.fire(a));
                if keep == Some(false) {
                    self.alerts.remove(&id);
                    self.dirty_alerts.remove(&id);
                    self.removed_alerts.push(id.clone());
                }
            }
        }
    }
}

fn to_wall(t: Instant, now: Instant, wall: Timestamp) -> Timestamp {
    let d = if t >= now {
        SignedDuration::try_from(t - now).unwrap_or(SignedDuration::MAX)
    } else {
        -SignedDuration::try_from(now - t).unwrap_or(SignedDuration::MAX)
    };
    wall_plus(wall, d)
}

/// A stored wall-clock deadline as an `Instant`: one in the past is due now; one too far
/// ahead to be an `Instant` is held to the engine's longest wait (and then to what its state
/// allows, by `time::Limits::clamp` in `Engine::restore`).
fn to_instant(t: Timestamp, now: Instant, wall: Timestamp) -> Instant {
    let d = t.duration_since(wall);
    if d.is_negative() {
        now
    } else {
        later(now, Duration::try_from(d).unwrap_or(Duration::MAX))
    }
}

pub(super) fn alert_record(a: &Alert, now: Instant, wall: Timestamp) -> AlertRecord {
    let w = |t: Instant| to_wall(t, now, wall);
    let (due, escalate_at) = match &a.state {
        State::Open {
            remind_at,
            escalate_at,
        } => (w(*remind_at), escalate_at.map(w)),
        State::Acknowledged { lapse_at } => (w(*lapse_at), None),
        State::OnScene { remind_at } => (w(*remind_at), None),
        State::Resolved { clear_at } => (w(*clear_at), None),
    };
    AlertRecord {
        id: a.id.clone(),
        kind: a.kind.as_str().to_string(),
        state: a.state.name().to_string(),
        due,
        escalate_at,
        verify_until: a.verify_until.map(w),
        cancel_requested: a.cancel_requested,
        tier: a.tier,
        device_id: a.device_id,
        raised_at: a.raised_at,
        updated_at: a.updated_at,
        notified: a.notified.clone(),
        paged: a.paged.clone(),
        delivered_to: a.delivered_to.clone(),
        declined: a.declined.clone(),
        acked_by: a.acked_by.clone(),
        acked_at: a.acked_at,
        on_scene_at: a.on_scene_at,
        resolved_by: a.resolved_by.clone(),
        resolved_at: a.resolved_at,
        resolution: a.resolution.map(|r| r.as_str().to_string()),
        battery_pct: a.battery_pct,
        rssi: a.rssi,
        seqs: a.seqs.clone(),
        detail: a.detail.clone(),
    }
}

/// Rebuilds an alert; `None` (and a logged error) for a record this version cannot read.
pub(super) fn alert_from_record(r: &AlertRecord, now: Instant, wall: Timestamp) -> Option<Alert> {
    let i = |t: Timestamp| to_instant(t, now, wall);
    let Some(kind) = Kind::parse(&r.kind) else {
        tracing::error!(
            alert_id = r.id,
            kind = r.kind,
            "stored alert of unknown kind skipped"
        );
        return None;
    };
    let due = i(r.due);
    let state = match r.state.as_str() {
        "open" => State::Open {
            remind_at: due,
            escalate_at: r.escalate_at.map(i),
        },
        "acknowledged" => State::Acknowledged { lapse_at: due },
        "on_scene" => State::OnScene { remind_at: due },
        "resolved" => State::Resolved { clear_at: due },
        other => {
            tracing::error!(
                alert_id = r.id,
                state = other,
                "stored alert in unknown state skipped"
            );
            return None;
        }
    };
    Some(Alert {
        id: r.id.clone(),
        kind,
        state,
        cancel_requested: r.cancel_requested,
        verify_until: r.verify_until.map(i),
        tier: r.tier,
        device_id: r.device_id,
        raised_at: r.raised_at,
        updated_at: r.updated_at,
        notified: r.notified.clone(),
        paged: r.paged.clone(),
        delivered_to: r.delivered_to.clone(),
        declined: r.declined.clone(),
        acked_by: r.acked_by.clone(),
        acked_at: r.acked_at,
        on_scene_at: r.on_scene_at,
        resolved_by: r.resolved_by.clone(),
        resolved_at: r.resolved_at,
        resolution: r.resolution.as_deref().and_then(Resolution::parse),
        battery_pct: r.battery_pct,
        rssi: r.rssi,
        seqs: r.seqs.clone(),
        detail: r.detail.clone(),
    })
}
