//! A person's action on an alert (a duty phone's, or the operator's `--as` them): who may act
//! (the contract's rule), then what each action does to the alert and its claim, with the
//! guard that keeps a claimer's phone looping ack/decline from paging everyone each time.

use std::time::Instant;

use super::Ctx;
use crate::engine::alert::{
    Action, Alert, Claim, Kind, Next, NotifyReason, Refusal, Resolution, State,
};
use crate::engine::time::{later, Now};
use crate::engine::Engine;

/// What a phone action does to the engine's memory of a claimer flapping (see `flapping`).
enum Flap {
    /// The claimer declined and that escalated: remember them with the open state it set.
    Start(State),
    Keep,
    Clear,
}

/// Who acts, and what the engine remembers of them on this alert.
struct Actor<'a> {
    staff: &'a str,
    /// This person is the claimer who declined (which escalated): the open state that set.
    /// Until something else happens to the alert, their acks and declines change the claim
    /// and the document but page nobody (a looping phone must not page everyone each time)
    /// and move no deadline: the alert stays on the clocks that escalation set.
    flapping: Option<State>,
    /// Already told by a late ack who holds the claim (told once per claim).
    told_late: bool,
}

impl Actor<'_> {
    /// What an action that is neither a start nor an end of flapping does to its memory.
    fn keep(&self) -> Flap {
        if self.flapping.is_some() {
            Flap::Keep
        } else {
            Flap::Clear
        }
    }

    fn is_claimer(&self, a: &Alert) -> bool {
        a.acked_by() == Some(self.staff)
    }
}

/// The next deadline of an `Open` state.
fn open_deadline(s: &State) -> Option<Instant> {
    match s {
        State::Open {
            remind_at,
            next: Next::Escalate(e),
        } => Some((*e).min(*remind_at)),
        State::Open { remind_at, .. } => Some(*remind_at),
        _ => None,
    }
}

impl Engine {
    /// A duty phone's action on an alert, checked against the contract's "who may act".
    /// Refusals change nothing (no state, no output, nothing to store); they are counted by
    /// reason and the caller logs them.
    pub fn handle_action(
        &mut self,
        now: Now,
        staff_id: &str,
        alert_id: &str,
        action: Action,
    ) -> Result<(), Refusal> {
        let done = self.act(now, staff_id, alert_id, action, true);
        self.release_notice(now, alert_id);
        done
    }

    /// An operator's action from the control socket, taken `--as` a person: the operator is
    /// trusted to act for anyone, so "who may act" is not checked (everything else is).
    pub fn handle_operator_action(
        &mut self,
        now: Now,
        staff_id: &str,
        alert_id: &str,
        action: Action,
    ) -> Result<(), Refusal> {
        let done = self.act(now, staff_id, alert_id, action, false);
        self.release_notice(now, alert_id);
        done
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
        let claimer = a.acked_by() == Some(staff_id);
        match action {
            Action::Delivered | Action::Ack | Action::Decline => paged,
            Action::OnScene => claimer,
            Action::Resolve(_) => claimer || (paged && a.acked_by().is_none()),
        }
    }

    /// Refuses (and counts) an action by unknown staff, on an unknown or resolved alert, or,
    /// when `check`, by someone who may not take it.
    fn may_act(
        &mut self,
        staff_id: &str,
        alert_id: &str,
        action: Action,
        check: bool,
    ) -> Result<(), Refusal> {
        let refusal = if !self.setup.staff.contains_key(staff_id) {
            Some(Refusal::UnknownStaff)
        } else {
            match self.alerts.get(alert_id) {
                None => Some(Refusal::UnknownAlert),
                Some(a) if a.is_resolved() => Some(Refusal::AlreadyResolved),
                Some(a) if check && !self.permitted(a, staff_id, action) => {
                    Some(Refusal::NotPermitted)
                }
                Some(_) => None,
            }
        };
        let Some(r) = refusal else { return Ok(()) };
        *self.counters.refused_actions.entry(r.as_str()).or_default() += 1;
        Err(r)
    }

    fn act(
        &mut self,
        now: Now,
        staff_id: &str,
        alert_id: &str,
        action: Action,
        check: bool,
    ) -> Result<(), Refusal> {
        self.may_act(staff_id, alert_id, action, check)?;
        let who = Actor {
            staff: staff_id,
            flapping: self
                .flapping
                .get(alert_id)
                .filter(|(p, _)| p == staff_id)
                .map(|(_, open)| open.clone()),
            told_late: self
                .late_told
                .contains(&(alert_id.to_string(), staff_id.to_string())),
        };
        let claimer_before = self.claimer(alert_id);
        let flap = self.with_alert(now, alert_id, |ctx, a| match action {
            Action::Delivered => ctx.delivered(a, &who),
            Action::Ack => ctx.ack(a, &who),
            Action::Decline => ctx.decline(a, &who),
            Action::OnScene => ctx.on_scene(a, &who),
            Action::Resolve(resolution) => {
                ctx.resolve(a, staff_id, resolution, true);
                Flap::Clear
            }
        });
        let claimer_after = self.claimer(alert_id);
        if claimer_after != claimer_before {
            self.forget_late_acks(alert_id);
        } else if action == Action::Ack && claimer_after.as_deref() != Some(staff_id) {
            self.late_told
                .insert((alert_id.to_string(), staff_id.to_string()));
        }
        match flap {
            Some(Flap::Start(open)) => {
                self.flapping
                    .insert(alert_id.to_string(), (staff_id.to_string(), open));
            }
            Some(Flap::Keep) => {}
            Some(Flap::Clear) | None => {
                self.flapping.remove(alert_id);
            }
        }
        Ok(())
    }

    /// Who holds the claim of `alert_id`.
    fn claimer(&self, alert_id: &str) -> Option<String> {
        self.alerts
            .get(alert_id)
            .and_then(|a| a.acked_by().map(str::to_string))
    }
}

impl Ctx<'_> {
    /// The person's phone received the page.
    fn delivered(&mut self, a: &mut Alert, who: &Actor) -> Flap {
        if !a.delivered_to.iter().any(|p| p == who.staff) {
            a.delivered_to.push(who.staff.to_string());
            self.touch(a);
        }
        who.keep()
    }

    /// "I'm going": the first ack claims an open alert (and closes a test alert); a later one
    /// by someone else tells them, once per claim, who has it.
    fn ack(&mut self, a: &mut Alert, who: &Actor) -> Flap {
        if !matches!(a.state, State::Open { .. }) {
            if who.is_claimer(a) {
                return who.keep();
            }
            if !who.told_late {
                tracing::info!(
                    alert_id = a.id,
                    staff = who.staff,
                    acked_by = a.acked_by().unwrap_or(""),
                    "late ack: already claimed; telling the late acker who has it"
                );
                self.notify(a, &[who.staff.to_string()], NotifyReason::Acknowledged);
            }
            return Flap::Clear;
        }
        if a.kind == Kind::Test {
            self.resolve(a, who.staff, Resolution::Test, true);
            return Flap::Clear;
        }
        a.declined.retain(|p| p != who.staff);
        let lapse_at = later(self.now.mono, self.setup.escalation.claim_timeout);
        a.state = State::Acknowledged {
            lapse_at: match &who.flapping {
                // The claim lapses when the alert would next have paged.
                Some(open) => lapse_at.min(open_deadline(open).unwrap_or(lapse_at)),
                None => lapse_at,
            },
            claim: Claim {
                by: who.staff.to_string(),
                at: self.now.wall,
            },
        };
        self.touch(a);
        if who.flapping.is_some() {
            tracing::debug!(
                alert_id = a.id,
                acked_by = who.staff,
                "alert acknowledged again by the claimer who just declined it; nobody paged, no deadline moved"
            );
        } else {
            tracing::info!(alert_id = a.id, acked_by = who.staff, "alert acknowledged");
            let everyone = a.notified.clone();
            self.notify(a, &everyone, NotifyReason::Acknowledged);
        }
        who.keep()
    }

    /// "I can't go": the person is taken off the alert; the claimer's decline releases the
    /// claim and escalates (once in a row); when nobody paged is left, the next tier now.
    fn decline(&mut self, a: &mut Alert, who: &Actor) -> Flap {
        if a.declined.iter().any(|p| p == who.staff) {
            return who.keep();
        }
        let mine = who.is_claimer(a);
        a.declined.push(who.staff.to_string());
        a.paged.retain(|p| p != who.staff);
        tracing::info!(alert_id = a.id, staff = who.staff, "declined");
        match (&who.flapping, mine) {
            (Some(open), true) => {
                // debug: a looping phone would otherwise fill the log.
                tracing::debug!(
                    alert_id = a.id,
                    staff = who.staff,
                    "claimer declined again: claim released; not escalated twice in a row, paging goes on as planned"
                );
                a.paged = self.people_at(a, a.tier);
                a.state = open.clone();
                self.touch(a);
                who.keep()
            }
            (None, true) => {
                tracing::info!(alert_id = a.id, "claimer declined: claim released");
                self.escalate(a, NotifyReason::ClaimLapsed);
                Flap::Start(a.state.clone())
            }
            _ if matches!(a.state, State::Open { .. }) && a.paged.is_empty() => {
                tracing::info!(alert_id = a.id, "everyone paged declined: escalating now");
                self.escalate(a, NotifyReason::Escalated);
                Flap::Clear
            }
            _ => {
                self.touch(a);
                Flap::Clear
            }
        }
    }

    /// Somebody reached the resident; whoever is on scene without a claim claims it.
    fn on_scene(&mut self, a: &mut Alert, who: &Actor) -> Flap {
        if matches!(a.state, State::OnScene { .. }) {
            return Flap::Clear;
        }
        let claim = a.state.claim().cloned().unwrap_or_else(|| Claim {
            by: who.staff.to_string(),
            at: self.now.wall,
        });
        a.state = State::OnScene {
            remind_at: later(self.now.mono, self.setup.escalation.claim_timeout),
            claim,
            since: self.now.wall,
        };
        self.touch(a);
        tracing::info!(alert_id = a.id, staff = who.staff, "on scene");
        Flap::Clear
    }
}
