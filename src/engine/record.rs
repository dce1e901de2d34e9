//! The alert as stored (`snapshot::AlertRecord`) and back: deadlines as wall-clock times, the
//! state's own data spread over the record's flat fields, and what a record that describes an
//! impossible combination is restored as.

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};

use super::alert::{
    Alert, Claim, Closure, Grouping, Kind, Next, Presses, Resolution, SilentBands, State,
};
use super::snapshot::{AlertRecord, SilentBandsRecord};
use super::time::{later, wall_plus, Now};

fn to_wall(t: Instant, now: Now) -> Timestamp {
    let d = if t >= now.mono {
        SignedDuration::try_from(t - now.mono).unwrap_or(SignedDuration::MAX)
    } else {
        -SignedDuration::try_from(now.mono - t).unwrap_or(SignedDuration::MAX)
    };
    wall_plus(now.wall, d)
}

/// A stored wall-clock deadline as an `Instant`: one in the past is due now; one too far
/// ahead to be an `Instant` is held to the engine's longest wait (and then to what its state
/// allows, by `time::Limits::clamp` in `Engine::restore`).
fn to_instant(t: Timestamp, now: Now) -> Instant {
    let d = t.duration_since(now.wall);
    if d.is_negative() {
        now.mono
    } else {
        later(now.mono, Duration::try_from(d).unwrap_or(Duration::MAX))
    }
}

pub(super) fn alert_record(a: &Alert, now: Now) -> AlertRecord {
    let w = |t: Instant| to_wall(t, now);
    let due = match &a.state {
        State::Open { remind_at: t, .. }
        | State::Acknowledged { lapse_at: t, .. }
        | State::OnScene { remind_at: t, .. }
        | State::Resolved { clear_at: t, .. } => w(*t),
    };
    let (ladders, contacts) = super::fallback::records(a, w);
    AlertRecord {
        ladders,
        contacts,
        id: a.id.clone(),
        kind: a.kind.as_str().to_string(),
        state: a.state.name().to_string(),
        due,
        escalate_at: a.state.escalate_at().map(w),
        verify_until: a.state.verify_until().map(w),
        cancel_requested: a.cancel_requested,
        tier: a.tier,
        device_id: a.device_id,
        raised_at: a.raised_at,
        updated_at: a.updated_at,
        notified: a.notified.clone(),
        paged: a.paged.clone(),
        delivered_to: a.delivered_to.clone(),
        declined: a.declined.clone(),
        acked_by: a.acked_by().map(str::to_string),
        acked_at: a.acked_at(),
        on_scene_at: a.on_scene_at(),
        resolved_by: a.resolved_by().map(str::to_string),
        resolved_at: a.resolved_at(),
        resolution: a.resolution().map(|r| r.as_str().to_string()),
        battery_pct: a.battery_pct,
        rssi: a.rssi,
        seqs: a.seqs.clone(),
        detail: a.detail.clone(),
        presses: a.presses.count,
        last_press_at: a.presses.last_at,
        press_due: a.presses.due.map(w),
        device_fault_suspected: a.presses.fault_suspected,
        held: a.grouping == Grouping::Held,
        grouped_in: match &a.grouping {
            Grouping::In(g) => Some(g.clone()),
            _ => None,
        },
        silent_bands: match &a.grouping {
            Grouping::Notice(b) => Some(SilentBandsRecord {
                count: b.count,
                still_silent: b.still_silent,
                named: b.named.clone(),
            }),
            _ => None,
        },
    }
}

/// Rebuilds an alert; `None` (and a logged error) for a record this version cannot read.
/// A record describing an impossible combination is restored as the nearest possible state,
/// with a warning naming each repair, and counted in `repaired` (never a lost alert).
pub(super) fn alert_from_record(r: &AlertRecord, now: Now, repaired: &mut u64) -> Option<Alert> {
    let i = |t: Timestamp| to_instant(t, now);
    let Some(kind) = Kind::parse(&r.kind) else {
        tracing::error!(
            alert_id = r.id,
            kind = r.kind,
            "stored alert of unknown kind skipped"
        );
        return None;
    };
    let mut repairs = Vec::new();
    let state = state_of(r, now, &mut repairs)?;
    if !repairs.is_empty() {
        *repaired += 1;
        tracing::warn!(
            alert_id = r.id,
            state = r.state,
            repairs = ?repairs,
            "stored alert describes an impossible combination; restored as the nearest possible state"
        );
    }
    let (ladders, contacts) = super::fallback::from_records(&r.id, &r.ladders, &r.contacts, i);
    Some(Alert {
        ladders,
        contacts,
        id: r.id.clone(),
        kind,
        state,
        cancel_requested: r.cancel_requested,
        tier: r.tier,
        device_id: r.device_id,
        raised_at: r.raised_at,
        updated_at: r.updated_at,
        notified: r.notified.clone(),
        paged: r.paged.clone(),
        delivered_to: r.delivered_to.clone(),
        declined: r.declined.clone(),
        battery_pct: r.battery_pct,
        rssi: r.rssi,
        seqs: r.seqs.clone(),
        detail: r.detail.clone(),
        presses: presses_of(r, i),
        grouping: grouping_of(r),
    })
}

/// The record's state with what belongs to it; `None` (and a logged error) for a state this
/// version does not know. Fields that belong to another state are dropped, and a state that
/// lacks what it needs is completed or, a claim without a claimer, open again and due now.
fn state_of(r: &AlertRecord, now: Now, repairs: &mut Vec<&'static str>) -> Option<State> {
    let i = |t: Timestamp| to_instant(t, now);
    let due = i(r.due);
    let claim = claim_of(r, repairs);
    let state = r.state.as_str();
    if state != "open" && r.verify_until.is_some() {
        repairs.push("verify_until outside open: dropped");
    }
    if state != "resolved"
        && (r.resolved_by.is_some() || r.resolved_at.is_some() || r.resolution.is_some())
    {
        repairs.push("a resolution on an unresolved alert: dropped");
    }
    if !matches!(state, "on_scene" | "resolved") && r.on_scene_at.is_some() {
        repairs.push("on_scene_at outside on_scene and resolved: dropped");
    }
    Some(match (state, claim) {
        ("open", claim) => {
            if claim.is_some() {
                repairs.push("a claim on an open alert: dropped");
            }
            State::Open {
                remind_at: due,
                next: next_of(r.escalate_at.map(i), r.verify_until.map(i), repairs),
            }
        }
        ("acknowledged" | "on_scene", None) => {
            repairs.push("claimed without a claimer: open again, paged now");
            State::Open {
                remind_at: now.mono,
                next: Next::Remind,
            }
        }
        ("acknowledged", Some(claim)) => State::Acknowledged {
            lapse_at: due,
            claim,
        },
        ("on_scene", Some(claim)) => State::OnScene {
            remind_at: due,
            since: r.on_scene_at.unwrap_or_else(|| {
                repairs.push("on_scene without on_scene_at: since the claim");
                claim.at
            }),
            claim,
        },
        ("resolved", claim) => State::Resolved {
            clear_at: due,
            closure: closure_of(r, repairs),
            claim,
            on_scene_at: r.on_scene_at,
        },
        (other, _) => {
            tracing::error!(
                alert_id = r.id,
                state = other,
                "stored alert in unknown state skipped"
            );
            return None;
        }
    })
}

fn claim_of(r: &AlertRecord, repairs: &mut Vec<&'static str>) -> Option<Claim> {
    match (&r.acked_by, r.acked_at) {
        (Some(by), at) => Some(Claim {
            by: by.clone(),
            at: at.unwrap_or_else(|| {
                repairs.push("acked_by without acked_at: claimed at updated_at");
                r.updated_at
            }),
        }),
        (None, Some(_)) => {
            repairs.push("acked_at without acked_by: dropped");
            None
        }
        (None, None) => None,
    }
}

fn next_of(
    escalate_at: Option<Instant>,
    verify_until: Option<Instant>,
    repairs: &mut Vec<&'static str>,
) -> Next {
    match (escalate_at, verify_until) {
        (Some(e), Some(v)) => {
            repairs.push("escalate_at while a cancel is verified: verified until the earlier");
            Next::Verify(e.min(v))
        }
        (None, Some(v)) => Next::Verify(v),
        (Some(e), None) => Next::Escalate(e),
        (None, None) => Next::Remind,
    }
}

fn closure_of(r: &AlertRecord, repairs: &mut Vec<&'static str>) -> Closure {
    Closure {
        by: r.resolved_by.clone().unwrap_or_else(|| {
            repairs.push("resolved without resolved_by: by \"unknown\"");
            "unknown".into()
        }),
        at: r.resolved_at.unwrap_or_else(|| {
            repairs.push("resolved without resolved_at: at updated_at");
            r.updated_at
        }),
        resolution: r
            .resolution
            .as_deref()
            .and_then(Resolution::parse)
            .unwrap_or_else(|| {
                repairs.push("resolution missing or unknown: other");
                Resolution::Other
            }),
    }
}

fn presses_of(r: &AlertRecord, i: impl Fn(Timestamp) -> Instant) -> Presses {
    Presses {
        // A record older than press counting: each seq it kept was one press.
        count: if r.presses == 0 {
            u32::try_from(r.seqs.len()).unwrap_or(u32::MAX)
        } else {
            r.presses
        },
        last_at: r.last_press_at,
        paged_at: None,
        due: r.press_due.map(i),
        burst: None,
        fault_suspected: r.device_fault_suspected,
    }
}

fn grouping_of(r: &AlertRecord) -> Grouping {
    match (&r.silent_bands, &r.grouped_in, r.held) {
        (Some(b), _, _) => Grouping::Notice(SilentBands {
            count: b.count,
            still_silent: b.still_silent,
            named: b.named.clone(),
        }),
        (None, Some(g), _) => Grouping::In(g.clone()),
        (None, None, true) => Grouping::Held,
        (None, None, false) => Grouping::Alone,
    }
}
