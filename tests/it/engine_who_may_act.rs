//! The contract's "who may act" and "a phone cannot drown the gateway", in the engine:
//! transcripts and a property over random actions.
//!
//! The community is `harness::sim::setup`: zhang on duty 08:00-20:00 (tier 1), band 17's team
//! li + wang (tier 2), chen supervises (tier 3); zhao is staff on no rota, team or tier.

use expect_test::expect;
use proptest::prelude::*;

use bandgate::engine::*;

use crate::harness::sim::*;

fn pages(s: &Sim) -> usize {
    s.outputs
        .iter()
        .filter(|(_, o)| matches!(o, Output::Notify { .. }))
        .count()
}

#[test]
fn someone_never_paged_cannot_close_or_claim_another_residents_sos() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    // What the SOS itself changed is stored (as the daemon does after every input).
    let _ = s.engine.take_changes(s.clock());
    let before = s.engine.snapshot(s.clock());
    let outputs = s.outputs.len();
    // zhao is staff, but nobody paged zhao about this alert; li is in the team, but the
    // alert is still at tier 1 (only zhang paged).
    for (who, action) in [
        ("zhao", Action::Resolve(Resolution::FalseAlarm)),
        ("zhao", Action::Ack),
        ("zhao", Action::Delivered),
        ("zhao", Action::Decline),
        ("zhao", Action::OnScene),
        ("li", Action::Resolve(Resolution::FalseAlarm)),
        ("li", Action::Ack),
    ] {
        assert_eq!(
            s.act(who, &id, action),
            Err(Refusal::NotPermitted),
            "{who} {action:?}"
        );
    }
    assert_eq!(s.outputs.len(), outputs, "a refusal sent something");
    assert_eq!(
        s.engine.snapshot(s.clock()),
        before,
        "a refusal changed state"
    );
    let changes = s.engine.take_changes(s.clock());
    assert!(
        changes.alerts.is_empty(),
        "a refusal left something to store: {changes:?}"
    );
    assert_eq!(s.engine.counters().refused_actions["not_permitted"], 7);

    // At tier 2 li is paged and may claim; wang (paged, not the claimer) may then neither
    // go on scene nor resolve; the supervisor may.
    s.advance(61.0);
    s.act("li", &id, Action::Ack).unwrap();
    assert_eq!(
        s.act("wang", &id, Action::OnScene),
        Err(Refusal::NotPermitted)
    );
    assert_eq!(
        s.act("wang", &id, Action::Resolve(Resolution::FalseAlarm)),
        Err(Refusal::NotPermitted)
    );
    assert_eq!(
        s.act("zhang", &id, Action::Resolve(Resolution::FalseAlarm)),
        Err(Refusal::NotPermitted),
        "paged, but the alert is claimed by li"
    );
    s.act("li", &id, Action::OnScene).unwrap();
    s.act("chen", &id, Action::Resolve(Resolution::RealEmergency))
        .unwrap();
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.resolved_by(), Some("chen"));
    assert_eq!(a.acked_by(), Some("li"));
    assert_eq!(s.engine.counters().refused_actions["not_permitted"], 10);
}

#[test]
fn a_paged_person_may_resolve_an_unclaimed_alert_and_a_supervisor_anything() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    // chen is not paged at tier 1 but supervises.
    s.act("chen", &id, Action::Delivered).unwrap();
    s.act("zhang", &id, Action::Resolve(Resolution::FalseAlarm))
        .unwrap();
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.resolved_by(), Some("zhang"));
    assert_eq!(a.delivered_to, ["chen"]);

    let id = s.sos(18);
    s.act("chen", &id, Action::Ack).unwrap();
    s.act("chen", &id, Action::OnScene).unwrap();
    assert!(!s
        .engine
        .counters()
        .refused_actions
        .contains_key("not_permitted"));
}

#[test]
fn the_operator_acts_as_anyone() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    let wall = s.wall();
    s.engine
        .handle_operator_action(Now { mono: s.now, wall }, "zhao", &id, Action::Ack)
        .unwrap();
    s.engine
        .handle_operator_action(
            Now { mono: s.now, wall },
            "li",
            &id,
            Action::Resolve(Resolution::Duplicate),
        )
        .unwrap();
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.acked_by(), Some("zhao"));
    assert_eq!(a.resolved_by(), Some("li"));
    // Everything else is still checked.
    assert_eq!(
        s.engine
            .handle_operator_action(Now { mono: s.now, wall }, "ghost", &id, Action::Ack),
        Err(Refusal::UnknownStaff)
    );
}

#[test]
fn a_claimer_looping_ack_decline_does_not_escalate_twice_in_a_row() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.take_log();
    for i in 0..200 {
        let action = if i % 2 == 0 {
            Action::Ack
        } else {
            Action::Decline
        };
        s.act("zhang", &id, action).unwrap();
        s.advance(0.01);
    }
    let log = s.take_log();
    let paged = log.lines().filter(|l| l.contains("  page ")).count();
    assert!(paged < 20, "{paged} pages from 200 ack/decline:\n{log}");
    // Once, it escalates (nobody is going): tier 2 is paged.
    let head: String = log.lines().take(9).map(|l| format!("{l}\n")).collect();
    expect![[r#"
        t+0.0s zhang: ack 17-101 -> ok
        t+0.0s   doc 17-101 sos acknowledged tier 1 notified ["zhang"] acked_by zhang
        t+0.0s   page zhang acknowledged 17-101
        t+0.0s zhang: decline 17-101 -> ok
        t+0.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+0.0s   page li claim_lapsed 17-101
        t+0.0s   page wang claim_lapsed 17-101
        t+0.0s zhang: ack 17-101 -> ok
        t+0.0s   doc 17-101 sos acknowledged tier 2 notified ["zhang", "li", "wang"] acked_by zhang
    "#]]
    .assert_eq(&head);

    // Paging goes on as the escalation planned it: the loop moved no deadline, so li and
    // wang are reminded 20 s after they were paged (the claim, held at the end of the loop,
    // lapses then) and tier 3 follows on time.
    let before = pages(&s);
    s.advance(20.0);
    assert!(pages(&s) > before, "the loop silenced the alert");
    s.advance(45.0);
    assert_eq!(s.engine.alert(&id).unwrap().tier, 3);
}

#[test]
fn a_late_acker_is_told_who_has_it_once_per_claim() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(61.0);
    s.act("li", &id, Action::Ack).unwrap();
    let before = pages(&s);
    for _ in 0..50 {
        s.act("wang", &id, Action::Ack).unwrap();
        s.act("wang", &id, Action::Decline).unwrap();
    }
    assert_eq!(pages(&s) - before, 1, "{}", s.take_log());
}

#[derive(Debug, Clone)]
enum Op {
    Act {
        staff: usize,
        action: u8,
        alert: usize,
    },
    Advance {
        ms: u64,
    },
    Sos {
        device: u32,
    },
}

const STAFF: [&str; 5] = ["zhang", "li", "wang", "chen", "zhao"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..5, 0u8..5, 0usize..2)
            .prop_map(|(staff, action, alert)| Op::Act { staff, action, alert }),
        2 => (0u64..90_000).prop_map(|ms| Op::Advance { ms }),
        1 => prop_oneof![Just(17u32), Just(18u32)].prop_map(|device| Op::Sos { device }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the order: an action is applied exactly when the contract permits it (judged
    /// from the alert as it was), and a refused one changes and sends nothing.
    #[test]
    fn only_the_people_the_contract_names_may_act(
        start_hour in 0i8..24,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut s = Sim::at(local(start_hour, 0));
        let mut ids: Vec<String> = Vec::new();
        for op in ops {
            match op {
                Op::Sos { device } => {
                    if let Heard::Accepted { alert_id: Some(id), .. } = s.frame(device, BandEvent::Sos) {
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
                Op::Advance { ms } => s.advance(ms as f64 / 1000.0),
                Op::Act { staff, action, alert } => {
                    let Some(id) = ids.get(alert).cloned() else { continue };
                    let who = STAFF[staff];
                    let action = match action {
                        0 => Action::Delivered,
                        1 => Action::Ack,
                        2 => Action::Decline,
                        3 => Action::OnScene,
                        _ => Action::Resolve(Resolution::FalseAlarm),
                    };
                    let Some(a) = s.engine.alert(&id).cloned() else { continue };
                    let supervisor = who == "chen";
                    let paged = a.notified.iter().any(|p| p == who);
                    let claimer = a.acked_by() == Some(who);
                    let permitted = supervisor || match action {
                        Action::Delivered | Action::Ack | Action::Decline => paged,
                        Action::OnScene => claimer,
                        Action::Resolve(_) => claimer || (paged && a.acked_by().is_none()),
                    };
                    let before = s.engine.snapshot(s.clock());
                    let outputs = s.outputs.len();
                    let r = s.act(who, &id, action);
                    if a.is_resolved() {
                        prop_assert_eq!(r, Err(Refusal::AlreadyResolved));
                    } else if permitted {
                        prop_assert_eq!(r, Ok(()), "{} {:?} on {:?}", who, action, a);
                    } else {
                        prop_assert_eq!(r, Err(Refusal::NotPermitted), "{} {:?} on {:?}", who, action, a);
                    }
                    if r.is_err() {
                        prop_assert_eq!(s.outputs.len(), outputs);
                        prop_assert_eq!(s.engine.snapshot(s.clock()), before);
                    }
                }
            }
        }
    }

    /// However one phone alternates ack and decline, at whatever pace under the tier's
    /// reminder period, it causes fewer than 20 pages.
    #[test]
    fn one_phone_looping_ack_decline_pages_little(
        gaps_ms in proptest::collection::vec(0u64..50, 200),
        who in 0usize..4,
    ) {
        let mut s = Sim::at(local(10, 0));
        let id = s.sos(17);
        s.advance(61.0); // tier 2: zhang, li, wang paged
        let before = pages(&s);
        let who = STAFF[who];
        for (i, gap) in gaps_ms.into_iter().enumerate() {
            let action = if i % 2 == 0 { Action::Ack } else { Action::Decline };
            let _ = s.act(who, &id, action);
            s.advance(gap as f64 / 1000.0);
        }
        // 200 messages in at most 10 s, under the 20 s reminder period: only the actions
        // page, never more than a handful.
        let n = pages(&s) - before;
        prop_assert!(n < 20, "{} pages from {}:\n{}", n, who, s.take_log());
    }
}

/// The claim belongs to the acknowledged and on-scene states: a claimer on scene who declines
/// leaves an open alert with no claimer and no `on_scene_at` (before issue 12 the reopened
/// document still showed the `on_scene_at` of the claim that had been released).
#[test]
fn a_claimer_on_scene_who_declines_leaves_no_claim_behind() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(5.0);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.act("zhang", &id, Action::OnScene).unwrap();
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.on_scene_at(), Some(s.wall()));
    assert_eq!(a.acked_by(), Some("zhang"));
    s.act("zhang", &id, Action::Decline).unwrap();
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.state.name(), "open");
    assert_eq!(
        (a.acked_by(), a.acked_at(), a.on_scene_at()),
        (None, None, None)
    );
    let doc = s
        .outputs
        .iter()
        .rev()
        .find_map(|(_, o)| match o {
            Output::AlertChanged(a) => Some(a.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((doc.state.name(), doc.on_scene_at()), ("open", None));
}
