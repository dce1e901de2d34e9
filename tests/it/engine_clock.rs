//! A wall clock that moved while the gateway was down: restored deadlines are never later
//! than now plus the longest wait their state allows, and `updated_at` keeps increasing.

use std::time::Duration;

use bandgate::engine::*;
use expect_test::expect;

use crate::harness::sim::*;

const HOUR: f64 = 3600.0;

/// `updated_at` (ms) of every document of `id` so far, in output order.
fn updates(s: &Sim, id: &str) -> Vec<i64> {
    s.outputs
        .iter()
        .filter_map(|(_, o)| match o {
            Output::AlertChanged(a) if a.id == id => Some(a.updated_at.as_millisecond()),
            Output::Notify { alert, .. } if alert.id == id => {
                Some(alert.updated_at.as_millisecond())
            }
            _ => None,
        })
        .collect()
}

fn assert_strictly_newer_across(s: &Sim, id: &str, before: usize) {
    let all = updates(s, id);
    let newest_before = *all[..before].iter().max().unwrap();
    assert!(all.len() > before, "no document after the restart");
    for t in &all[before..] {
        assert!(
            *t > newest_before,
            "a document after the restart ({t}) is not newer than one before it ({newest_before}): phones would drop it"
        );
    }
}

#[test]
fn an_open_emergency_is_paged_at_once_after_a_restart_with_the_clock_an_hour_behind() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(5.0);
    let before = updates(&s, &id).len();
    s.take_log();
    s.restart_with_clock(2.0, -HOUR);
    // Without the bound the reminder due 15 s later would wait an hour and 15 s, and tier 2
    // an hour and 55 s. With it both are due now: how long the gateway was really down is not
    // known, so the next tier is paged at once (more people, never fewer).
    s.advance(60.0);
    expect![[r#"
        t+7.0s -- restart after 2s down, clock moved -3600s --
        t+7.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+7.0s   page zhang escalated 17-101
        t+7.0s   page li escalated 17-101
        t+7.0s   page wang escalated 17-101
        t+27.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+27.0s   page zhang reminder 17-101
        t+27.0s   page li reminder 17-101
        t+27.0s   page wang reminder 17-101
        t+47.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+47.0s   page zhang reminder 17-101
        t+47.0s   page li reminder 17-101
        t+47.0s   page wang reminder 17-101
        t+67.0s   doc 17-101 sos open tier 3 notified ["zhang", "li", "wang", "chen"]
        t+67.0s   page zhang escalated 17-101
        t+67.0s   page li escalated 17-101
        t+67.0s   page wang escalated 17-101
        t+67.0s   page chen escalated 17-101
    "#]]
    .assert_eq(&s.take_log());
    assert_strictly_newer_across(&s, &id, before);
}

#[test]
fn a_small_step_back_within_the_wait_keeps_the_stored_deadline() {
    // The reminder is due at 20 s; at 10 s the gateway restarts with the clock 5 s behind:
    // 15 s ahead is within renotify_every (20 s), so it is kept (the reminder 5 s late).
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(10.0);
    s.restart_with_clock(0.0, -5.0);
    assert_eq!(
        s.engine.poll_timeout().unwrap() - s.now,
        Duration::from_secs(15)
    );
    s.advance(14.9);
    assert_eq!(s.last_page(&id), Some(Duration::ZERO));
    s.advance(0.2);
    assert_eq!(s.last_page(&id), Some(Duration::from_secs(25)));
}

#[test]
fn every_state_fires_at_once_when_its_stored_deadline_is_further_ahead_than_it_allows() {
    // Acknowledged (claim_timeout 15 min), clock a day behind: the claim lapses now, and the
    // next tier is paged, rather than in a day.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.restart_with_clock(1.0, -24.0 * HOUR);
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.state.name(), "open");
    assert_eq!(a.tier, 2);
    assert_eq!(s.last_page(&id), Some(s.elapsed()));

    // On scene: the claimer is reminded now.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.act("zhang", &id, Action::OnScene).unwrap();
    s.restart_with_clock(1.0, -HOUR);
    assert_eq!(s.last_page(&id), Some(s.elapsed()));
    assert!(s.engine.poll_timeout().unwrap() > s.now);

    // Cancel being verified (cancel_verify_timeout 5 min): escalation resumes now.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    let seq = s.seqs[&17];
    s.frame(17, BandEvent::Cancel { of_seq: seq });
    s.restart_with_clock(1.0, -HOUR);
    assert_eq!(s.engine.alert(&id).unwrap().tier, 2);

    // Resolved (resolved_retention 10 min): the retained copy is cleared now.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Resolve(Resolution::FalseAlarm))
        .unwrap();
    s.restart_with_clock(1.0, -HOUR);
    assert!(s.engine.alert(&id).is_none());
    assert!(matches!(
        s.outputs.last(),
        Some((_, Output::AlertCleared { alert_id })) if alert_id == &id
    ));

    // A silent band's notice (reminded every silent_after, 30 min), clock 2 h behind.
    // Past the 10 s a silence is held to see whether many fall silent together: it is paged.
    let mut s = Sim::at(local(10, 0));
    s.advance(30.0 * 60.0 + 11.0);
    let silent = "17-silent-1";
    assert!(s.last_page(silent).is_some(), "the held silence was paged");
    assert!(s.engine.alert(silent).is_some());
    s.restart_with_clock(1.0, -2.0 * HOUR);
    assert_eq!(s.last_page(silent), Some(s.elapsed()));
}

#[test]
fn a_shortened_setting_also_bounds_what_was_stored_under_the_old_one() {
    // Stored under claim_timeout 15 min; restarted with 2 min: the claim lapses within 2 min.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.setup.escalation.claim_timeout = Duration::from_secs(120);
    s.restart(1.0);
    assert_eq!(s.engine.alert(&id).unwrap().state.name(), "open");
}

#[test]
fn updated_at_keeps_increasing_after_a_restart_with_the_clock_behind_in_every_state() {
    for step in 0..4 {
        let mut s = Sim::at(local(10, 0));
        let id = s.sos(17);
        match step {
            0 => {}
            1 => s.act("zhang", &id, Action::Ack).unwrap(),
            2 => {
                // On scene is the claimer's to say (who may act).
                s.act("zhang", &id, Action::Ack).unwrap();
                s.act("zhang", &id, Action::OnScene).unwrap()
            }
            _ => {
                let seq = s.seqs[&17];
                s.frame(17, BandEvent::Cancel { of_seq: seq });
            }
        }
        let before = updates(&s, &id).len();
        s.restart_with_clock(1.0, -HOUR);
        // Whatever the restart fired, and then a phone's action and a new press.
        // A supervisor may always say delivered (who may act).
        s.act("chen", &id, Action::Delivered).unwrap();
        s.frame(17, BandEvent::Sos);
        s.act("zhang", &id, Action::Resolve(Resolution::RealEmergency))
            .unwrap();
        assert_strictly_newer_across(&s, &id, before);
        let all = updates(&s, &id);
        assert!(all.windows(2).all(|w| w[1] >= w[0]), "step {step}: {all:?}");
    }
}

#[test]
fn a_clock_ahead_at_restart_fires_what_is_overdue_at_once() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.restart_with_clock(1.0, HOUR);
    assert_eq!(s.engine.alert(&id).unwrap().tier, 2);
    assert_eq!(s.last_page(&id), Some(s.elapsed()));
}

#[test]
fn later_holds_any_duration_to_the_engine_range() {
    use bandgate::engine::time::{later, MAX_DELAY};
    let now = std::time::Instant::now();
    assert!(
        later(now, Duration::ZERO) > now,
        "a zero wait must still move on"
    );
    assert_eq!(later(now, Duration::MAX), now + MAX_DELAY);
    assert_eq!(
        later(now, Duration::from_secs(5)),
        now + Duration::from_secs(5)
    );
}
