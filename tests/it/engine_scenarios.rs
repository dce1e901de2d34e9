//! Escalation scenarios as transcripts: time, input, what the engine sent.
//!
//! The community (see `harness::sim::setup`): zhang on duty 08:00-20:00 daily, nobody at night;
//! band 17 (王秀英) has team li + wang; band 18 has team wang; chen supervises. Ack timeouts
//! 60 s + 60 s, reminders every 20 s, last tier repeats every 60 s, claim 15 min, cancel
//! verification 5 min, retention 10 min.

use expect_test::expect;

use bandgate::engine::*;

use crate::harness::sim::*;

#[test]
fn sos_pages_tier_1_escalates_then_ack_on_scene_resolve_and_clear() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(65.0);
    s.act("li", &id, Action::Ack).unwrap();
    s.advance(60.0);
    s.act("li", &id, Action::OnScene).unwrap();
    s.act("li", &id, Action::Resolve(Resolution::RealEmergency))
        .unwrap();
    s.advance(600.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+20.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+20.0s   page zhang reminder 17-101
        t+40.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+40.0s   page zhang reminder 17-101
        t+60.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+60.0s   page zhang escalated 17-101
        t+60.0s   page li escalated 17-101
        t+60.0s   page wang escalated 17-101
        t+65.0s li: ack 17-101 -> ok
        t+65.0s   doc 17-101 sos acknowledged tier 2 notified ["zhang", "li", "wang"] acked_by li
        t+65.0s   page zhang acknowledged 17-101
        t+65.0s   page li acknowledged 17-101
        t+65.0s   page wang acknowledged 17-101
        t+125.0s li: on_scene 17-101 -> ok
        t+125.0s   doc 17-101 sos on_scene tier 2 notified ["zhang", "li", "wang"] acked_by li
        t+125.0s li: resolve(real_emergency) 17-101 -> ok
        t+125.0s   doc 17-101 sos resolved tier 2 notified ["zhang", "li", "wang"] acked_by li resolution real_emergency
        t+125.0s   page zhang resolved 17-101
        t+125.0s   page li resolved 17-101
        t+125.0s   page wang resolved 17-101
        t+725.0s   clear 17-101
    "#]]
    .assert_eq(&s.take_log());
    assert!(
        s.engine.alert(&id).is_none(),
        "retention over: alert forgotten"
    );
}

#[test]
fn sos_at_3am_with_nobody_on_duty_starts_at_tier_2() {
    let mut s = Sim::at(local(3, 0));
    s.sos(17);
    s.advance(61.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 2 notified ["li", "wang"]
        t+0.0s   page li new 17-101
        t+0.0s   page wang new 17-101
        t+20.0s   doc 17-101 sos open tier 2 notified ["li", "wang"]
        t+20.0s   page li reminder 17-101
        t+20.0s   page wang reminder 17-101
        t+40.0s   doc 17-101 sos open tier 2 notified ["li", "wang"]
        t+40.0s   page li reminder 17-101
        t+40.0s   page wang reminder 17-101
        t+60.0s   doc 17-101 sos open tier 3 notified ["li", "wang", "chen"]
        t+60.0s   page li escalated 17-101
        t+60.0s   page wang escalated 17-101
        t+60.0s   page chen escalated 17-101
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(s.engine.counters().rota_gaps, 1);
}

#[test]
fn ack_at_59_9_s_holds_tier_1_and_at_60_1_s_is_too_late_for_tier_2() {
    let mut early = Sim::at(local(10, 0));
    let id = early.sos(17);
    early.advance(59.9);
    early.act("zhang", &id, Action::Ack).unwrap();
    early.advance(120.0);
    let early_log = early.take_log();
    assert!(!early_log.contains("escalated"), "{early_log}");

    let mut late = Sim::at(local(10, 0));
    let id = late.sos(17);
    late.advance(60.1);
    late.act("zhang", &id, Action::Ack).unwrap();
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+20.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+20.0s   page zhang reminder 17-101
        t+40.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+40.0s   page zhang reminder 17-101
        t+60.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+60.0s   page zhang escalated 17-101
        t+60.0s   page li escalated 17-101
        t+60.0s   page wang escalated 17-101
        t+60.1s zhang: ack 17-101 -> ok
        t+60.1s   doc 17-101 sos acknowledged tier 2 notified ["zhang", "li", "wang"] acked_by zhang
        t+60.1s   page zhang acknowledged 17-101
        t+60.1s   page li acknowledged 17-101
        t+60.1s   page wang acknowledged 17-101
    "#]]
    .assert_eq(&late.take_log());
}

#[test]
fn unacked_for_an_hour_paging_never_stops() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(3600.0);
    let log = s.take_log();
    // Tier 1 with reminders, tier 2 with reminders, then the last tier every 60 s for an hour.
    let pages_of = |who: &str| log.matches(&format!("page {who} ")).count();
    assert!(pages_of("chen") >= 58, "{log}");
    assert!(pages_of("zhang") >= 60, "{log}");
    assert_eq!(s.engine.alert(&id).unwrap().tier, 3);
    let last = s.last_page(&id).unwrap();
    assert!(s.elapsed() - last <= std::time::Duration::from_secs(60));
    // The first three minutes, exactly:
    let head: String = log.lines().take(40).collect::<Vec<_>>().join("\n");
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+20.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+20.0s   page zhang reminder 17-101
        t+40.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+40.0s   page zhang reminder 17-101
        t+60.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+60.0s   page zhang escalated 17-101
        t+60.0s   page li escalated 17-101
        t+60.0s   page wang escalated 17-101
        t+80.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+80.0s   page zhang reminder 17-101
        t+80.0s   page li reminder 17-101
        t+80.0s   page wang reminder 17-101
        t+100.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+100.0s   page zhang reminder 17-101
        t+100.0s   page li reminder 17-101
        t+100.0s   page wang reminder 17-101
        t+120.0s   doc 17-101 sos open tier 3 notified ["zhang", "li", "wang", "chen"]
        t+120.0s   page zhang escalated 17-101
        t+120.0s   page li escalated 17-101
        t+120.0s   page wang escalated 17-101
        t+120.0s   page chen escalated 17-101
        t+180.0s   doc 17-101 sos open tier 3 notified ["zhang", "li", "wang", "chen"]
        t+180.0s   page zhang reminder 17-101
        t+180.0s   page li reminder 17-101
        t+180.0s   page wang reminder 17-101
        t+180.0s   page chen reminder 17-101
        t+240.0s   doc 17-101 sos open tier 3 notified ["zhang", "li", "wang", "chen"]
        t+240.0s   page zhang reminder 17-101
        t+240.0s   page li reminder 17-101
        t+240.0s   page wang reminder 17-101
        t+240.0s   page chen reminder 17-101
        t+300.0s   doc 17-101 sos open tier 3 notified ["zhang", "li", "wang", "chen"]
        t+300.0s   page zhang reminder 17-101
        t+300.0s   page li reminder 17-101
        t+300.0s   page wang reminder 17-101
        t+300.0s   page chen reminder 17-101
        t+360.0s   doc 17-101 sos open tier 3 notified ["zhang", "li", "wang", "chen"]"#]]
    .assert_eq(&head);
}

#[test]
fn wearer_cancel_then_nobody_verifies_escalation_resumes() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    let seq = s.seqs[&17];
    s.advance(10.0);
    s.frame(17, BandEvent::Cancel { of_seq: seq });
    s.advance(301.0);
    let log = s.take_log();
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+10.0s band 17 #102 cancel -> accepted 17-101
        t+10.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+10.0s   page zhang cancel_requested 17-101
        t+20.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+20.0s   page zhang reminder 17-101
        t+40.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+40.0s   page zhang reminder 17-101
        t+60.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+60.0s   page zhang reminder 17-101
        t+80.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+80.0s   page zhang reminder 17-101
        t+100.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+100.0s   page zhang reminder 17-101
        t+120.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+120.0s   page zhang reminder 17-101
        t+140.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+140.0s   page zhang reminder 17-101
        t+160.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+160.0s   page zhang reminder 17-101
        t+180.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+180.0s   page zhang reminder 17-101
        t+200.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+200.0s   page zhang reminder 17-101
        t+220.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+220.0s   page zhang reminder 17-101
        t+240.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+240.0s   page zhang reminder 17-101
        t+260.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+260.0s   page zhang reminder 17-101
        t+280.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+280.0s   page zhang reminder 17-101
        t+300.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+300.0s   page zhang reminder 17-101
        t+310.0s   doc 17-101 sos open cancel_requested tier 2 notified ["zhang", "li", "wang"]
        t+310.0s   page zhang escalated 17-101
        t+310.0s   page li escalated 17-101
        t+310.0s   page wang escalated 17-101
    "#]]
    .assert_eq(&log);
    let a = s.engine.alert(&id).unwrap();
    assert!(a.cancel_requested);
    assert_eq!(a.tier, 2);
}

#[test]
fn wearer_cancel_then_resolved_by_phone_call() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    let seq = s.seqs[&17];
    s.frame(17, BandEvent::Cancel { of_seq: seq });
    s.advance(30.0);
    s.act(
        "zhang",
        &id,
        Action::Resolve(Resolution::WearerCancelVerified),
    )
    .unwrap();
    s.advance(400.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+0.0s band 17 #102 cancel -> accepted 17-101
        t+0.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+0.0s   page zhang cancel_requested 17-101
        t+20.0s   doc 17-101 sos open cancel_requested tier 1 notified ["zhang"]
        t+20.0s   page zhang reminder 17-101
        t+30.0s zhang: resolve(wearer_cancel_verified) 17-101 -> ok
        t+30.0s   doc 17-101 sos resolved cancel_requested tier 1 notified ["zhang"] acked_by zhang resolution wearer_cancel_verified
        t+30.0s   page zhang resolved 17-101
    "#]].assert_eq(&s.take_log());
}

#[test]
fn wearer_cancel_with_close_resolves_at_once() {
    let mut setup = setup();
    setup.escalation.wearer_cancel = WearerCancel::Close;
    let mut s = Sim::new(setup, local(10, 0));
    let id = s.sos(17);
    let seq = s.seqs[&17];
    s.frame(17, BandEvent::Cancel { of_seq: seq });
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.resolution(), Some(Resolution::WearerCancelVerified));
    assert_eq!(a.resolved_by(), Some("wearer"));
    // A cancel that names no alert of this band changes nothing.
    s.frame(17, BandEvent::Cancel { of_seq: 5 });
    assert_eq!(s.engine.counters().unmatched_cancels, 1);
}

#[test]
fn two_acks_racing_first_wins_and_the_second_is_told() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(61.0);
    s.take_log();
    s.act("li", &id, Action::Ack).unwrap();
    s.act("zhang", &id, Action::Ack).unwrap();
    s.act("li", &id, Action::Ack).unwrap();
    expect![[r#"
        t+61.0s li: ack 17-101 -> ok
        t+61.0s   doc 17-101 sos acknowledged tier 2 notified ["zhang", "li", "wang"] acked_by li
        t+61.0s   page zhang acknowledged 17-101
        t+61.0s   page li acknowledged 17-101
        t+61.0s   page wang acknowledged 17-101
        t+61.0s zhang: ack 17-101 -> ok
        t+61.0s   page zhang acknowledged 17-101
        t+61.0s li: ack 17-101 -> ok
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(s.engine.alert(&id).unwrap().acked_by(), Some("li"));
}

#[test]
fn decline_by_the_only_person_paged_escalates_at_once() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(5.0);
    s.act("zhang", &id, Action::Decline).unwrap();
    s.act("zhang", &id, Action::Decline).unwrap();
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+5.0s zhang: decline 17-101 -> ok
        t+5.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+5.0s   page li escalated 17-101
        t+5.0s   page wang escalated 17-101
        t+5.0s zhang: decline 17-101 -> ok
    "#]]
    .assert_eq(&s.take_log());
}

#[test]
fn claim_that_never_reaches_the_scene_lapses_and_escalates() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.advance(15.0 * 60.0 + 1.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+0.0s zhang: ack 17-101 -> ok
        t+0.0s   doc 17-101 sos acknowledged tier 1 notified ["zhang"] acked_by zhang
        t+0.0s   page zhang acknowledged 17-101
        t+900.0s   doc 17-101 sos open tier 2 notified ["zhang", "li", "wang"]
        t+900.0s   page zhang claim_lapsed 17-101
        t+900.0s   page li claim_lapsed 17-101
        t+900.0s   page wang claim_lapsed 17-101
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(s.engine.alert(&id).unwrap().state.name(), "open");
}

#[test]
fn a_new_press_updates_the_open_alert_and_pages_again() {
    let mut s = Sim::at(local(10, 0));
    let id = s.frame(17, BandEvent::NoMotion { minutes: 240 });
    let Heard::Accepted {
        alert_id: Some(id), ..
    } = id
    else {
        panic!()
    };
    s.advance(5.0);
    let again = s.sos(17);
    assert_eq!(again, id, "no second alert");
    assert_eq!(s.engine.alert(&id).unwrap().kind, Kind::Sos);
    s.frame(17, BandEvent::Fall { impact_dg: 30 });
    assert_eq!(
        s.engine.alert(&id).unwrap().kind,
        Kind::Sos,
        "most serious wins"
    );
    assert_eq!(s.engine.open_alerts(), 1);
    expect![[r#"
        t+0.0s band 17 #101 no_motion -> accepted 17-101
        t+0.0s   doc 17-101 no_motion open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+5.0s band 17 #102 sos -> accepted 17-101
        t+5.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+5.0s   page zhang reminder 17-101
        t+5.0s band 17 #103 fall -> accepted 17-101
    "#]]
    .assert_eq(&s.take_log());
    // The fall came within renotify_every (20 s) of the last page: coalesced, and paged once
    // renotify_every after that page, with every press counted.
    s.advance(20.0);
    expect![[r#"
        t+25.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+25.0s   page zhang reminder 17-101
    "#]]
    .assert_eq(&s.take_log());
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.presses.count, 3);
    assert_eq!(a.seqs, [101, 102, 103]);
    assert!(!a.presses.fault_suspected);
}

#[test]
fn repeats_of_one_frame_raise_one_alert() {
    let mut s = Sim::at(local(10, 0));
    let seq = s.next_seq(17);
    for _ in 0..100 {
        s.frame_seq(17, seq, 80, true, BandEvent::Sos);
    }
    assert_eq!(s.engine.open_alerts(), 1);
    assert_eq!(s.engine.intake().rejected(Reject::Duplicate), 99);
    let pages = s
        .outputs
        .iter()
        .filter(|(_, o)| matches!(o, Output::Notify { .. }))
        .count();
    assert_eq!(pages, 1);
}

#[test]
fn phone_actions_are_idempotent_and_refusals_change_nothing() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Delivered).unwrap();
    s.act("zhang", &id, Action::Delivered).unwrap();
    assert_eq!(
        s.act("nobody", &id, Action::Ack),
        Err(Refusal::UnknownStaff)
    );
    assert_eq!(
        s.act("zhang", "17-999", Action::Ack),
        Err(Refusal::UnknownAlert)
    );
    s.act("zhang", &id, Action::Resolve(Resolution::FalseAlarm))
        .unwrap();
    assert_eq!(
        s.act("zhang", &id, Action::Resolve(Resolution::FalseAlarm)),
        Err(Refusal::AlreadyResolved)
    );
    assert_eq!(s.act("li", &id, Action::Ack), Err(Refusal::AlreadyResolved));
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"]
        t+0.0s   page zhang new 17-101
        t+0.0s zhang: delivered 17-101 -> ok
        t+0.0s   doc 17-101 sos open tier 1 notified ["zhang"] delivered_to ["zhang"]
        t+0.0s zhang: delivered 17-101 -> ok
        t+0.0s nobody: ack 17-101 -> refused: unknown staff
        t+0.0s zhang: ack 17-999 -> refused: unknown alert
        t+0.0s zhang: resolve(false_alarm) 17-101 -> ok
        t+0.0s   doc 17-101 sos resolved tier 1 notified ["zhang"] acked_by zhang resolution false_alarm delivered_to ["zhang"]
        t+0.0s   page zhang resolved 17-101
        t+0.0s zhang: resolve(false_alarm) 17-101 -> refused: alert already resolved
        t+0.0s li: ack 17-101 -> refused: alert already resolved
    "#]].assert_eq(&s.take_log());
    let c = &s.engine.counters().refused_actions;
    assert_eq!(c["unknown_staff"], 1);
    assert_eq!(c["unknown_alert"], 1);
    assert_eq!(c["already_resolved"], 2);
}

#[test]
fn resolve_without_ack_claims_and_resolves() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    // zhang is paged at tier 1 and nobody holds the claim: a paged person may resolve.
    s.act("zhang", &id, Action::Resolve(Resolution::FalseAlarm))
        .unwrap();
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.acked_by(), Some("zhang"));
    assert_eq!(a.resolved_by(), Some("zhang"));
    assert!(a.acked_at().is_some());
}

#[test]
fn silent_band_raises_device_silent_after_a_full_window_and_clears_when_heard() {
    let mut s = Sim::at(local(9, 0));
    let hb = BandEvent::Heartbeat {
        heart_rate: Some(70),
        spo2: Some(98),
        steps: 10,
    };
    // Band 18 is heard every 10 minutes; band 17 never after start-up.
    for _ in 0..4 {
        s.frame(18, hb);
        s.advance(600.0);
    }
    let log = s.take_log();
    expect![[r#"
        t+1800.0s   state band 17 silent
        t+1810.0s   doc 17-silent-1 device_silent open tier 1 notified ["zhang"]
        t+1810.0s   page zhang new 17-silent-1
    "#]]
    .assert_eq(&log);
    s.frame(17, hb);
    expect![[r#"
        t+2400.0s   doc 17-silent-1 device_silent resolved tier 1 notified ["zhang"] resolution device_fault
        t+2400.0s   page zhang resolved 17-silent-1
    "#]].assert_eq(&s.take_log());
    assert_eq!(s.engine.open_alerts(), 0);
}

#[test]
fn low_battery_is_one_notice_per_band_per_day() {
    let mut s = Sim::at(local(10, 0));
    let hb = BandEvent::Heartbeat {
        heart_rate: None,
        spo2: None,
        steps: 0,
    };
    s.frame_with(17, 19, true, hb);
    s.frame_with(17, 18, true, hb);
    let ids: Vec<String> = s.engine.alerts().map(|a| a.id.clone()).collect();
    assert_eq!(ids, vec!["17-battery-1".to_string()]);
    s.act("zhang", "17-battery-1", Action::Resolve(Resolution::Other))
        .unwrap();
    s.advance(3600.0);
    s.frame_with(17, 17, true, hb);
    let open_battery = |s: &Sim| {
        s.engine
            .alerts()
            .filter(|a| a.kind == Kind::LowBattery && !a.is_resolved())
            .count()
    };
    assert_eq!(open_battery(&s), 0, "same local day: no second notice");
    s.advance(24.0 * 3600.0);
    s.frame_with(17, 16, true, hb);
    assert!(
        s.engine.alert("17-battery-2").is_some(),
        "next day: a new notice"
    );
    let notify_count = s
        .outputs
        .iter()
        .filter(|(_, o)| {
            matches!(o, Output::Notify { reason: NotifyReason::New, alert, .. } if alert.kind == Kind::LowBattery)
        })
        .count();
    assert_eq!(notify_count, 2);
}

#[test]
fn test_alert_goes_to_the_named_person_and_closes_on_ack() {
    let mut s = Sim::at(local(22, 0));
    let id = s.engine.raise_test(s.clock(), Some("wang")).unwrap();
    s.drain();
    assert_eq!(id, "test-1");
    s.act("wang", &id, Action::Ack).unwrap();
    expect![[r#"
        t+0.0s   doc test-1 test open tier 1 notified ["wang"]
        t+0.0s   page wang new test-1
        t+0.0s wang: ack test-1 -> ok
        t+0.0s   doc test-1 test resolved tier 1 notified ["wang"] acked_by wang resolution test
        t+0.0s   page wang resolved test-1
    "#]]
    .assert_eq(&s.take_log());
    assert_eq!(
        s.engine.raise_test(s.clock(), Some("ghost")),
        Err(Refusal::UnknownStaff)
    );
}

#[test]
fn emergencies_of_two_bands_are_never_grouped() {
    let mut s = Sim::at(local(10, 0));
    let a = s.sos(17);
    let b = s.sos(18);
    assert_ne!(a, b);
    assert_eq!(s.engine.open_alerts(), 2);
}

#[test]
fn restart_in_every_state_continues_where_it_was() {
    // Open at tier 1, down 30 s: tier 2 comes at 60 s as planned.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.advance(10.0);
    s.restart(30.0);
    s.advance(25.0);
    assert_eq!(s.engine.alert(&id).unwrap().tier, 2);

    // Open, down past the deadline: it fires at once on start.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.restart(300.0);
    assert_eq!(s.engine.alert(&id).unwrap().tier, 2);
    assert_eq!(s.last_page(&id), Some(s.elapsed()));

    // Acknowledged: the claim lapses on time across the restart.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.restart(600.0);
    assert_eq!(s.engine.alert(&id).unwrap().state.name(), "acknowledged");
    s.advance(301.0);
    assert_eq!(s.engine.alert(&id).unwrap().state.name(), "open");

    // Cancel being verified: resumes after the verification time, not before.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    let seq = s.seqs[&17];
    s.frame(17, BandEvent::Cancel { of_seq: seq });
    s.restart(100.0);
    assert_eq!(s.engine.alert(&id).unwrap().tier, 1);
    s.advance(201.0);
    assert_eq!(s.engine.alert(&id).unwrap().tier, 2);

    // On scene, then resolved: retention clears after restart.
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.act("zhang", &id, Action::OnScene).unwrap();
    s.restart(60.0);
    assert_eq!(s.engine.alert(&id).unwrap().state.name(), "on_scene");
    s.act("zhang", &id, Action::Resolve(Resolution::RealEmergency))
        .unwrap();
    s.restart(700.0);
    assert!(s.engine.alert(&id).is_none());
    assert!(matches!(
        s.outputs.last(),
        Some((_, Output::AlertCleared { .. }))
    ));

    // The replay window survives: the old SOS frame does not come back as a new alert.
    let mut s = Sim::at(local(10, 0));
    let seq = s.next_seq(17);
    s.frame_seq(17, seq, 80, true, BandEvent::Sos);
    s.restart(1.0);
    let again = s.frame_seq(17, seq, 80, true, BandEvent::Sos);
    assert_eq!(again, Heard::Rejected(Reject::Duplicate));
}

#[test]
fn updated_at_strictly_increases_per_alert() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    // Several changes within one millisecond: the documents (which carry milliseconds) must
    // still differ in updated_at.
    s.advance(0.0001);
    s.act("zhang", &id, Action::Delivered).unwrap();
    s.advance(0.0001);
    s.act("chen", &id, Action::Delivered).unwrap();
    s.advance(0.0003);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.advance(3600.0);
    let mut last: Option<i64> = None;
    let mut changes = 0;
    for (_, o) in &s.outputs {
        if let Output::AlertChanged(a) = o {
            if a.id != id {
                continue;
            }
            let ms = a.updated_at.as_millisecond();
            assert_eq!(
                a.updated_at,
                jiff::Timestamp::from_millisecond(ms).unwrap(),
                "whole milliseconds"
            );
            if let Some(prev) = last {
                assert!(ms > prev, "{ms} after {prev}");
            }
            last = Some(ms);
            changes += 1;
        }
    }
    assert!(changes >= 4);
}

#[test]
fn a_timer_fired_late_does_not_push_later_deadlines_back() {
    let mut s = Sim::at(local(10, 0));
    s.sos(17);
    let first = s.engine.poll_timeout().unwrap();
    assert_eq!(first - s.t0, std::time::Duration::from_secs(20));
    // The loop wakes 300 ms late (a slow disk commit held it): the next reminder is still
    // due 20 s after the first was, not 20 s after the late wake-up.
    let late = first + std::time::Duration::from_millis(300);
    s.now = late;
    let wall = s.wall();
    s.engine.handle_timeout(Now { mono: late, wall });
    s.drain();
    let next = s.engine.poll_timeout().unwrap();
    assert_eq!(next - s.t0, std::time::Duration::from_secs(40));
    // And the escalation at 60 s keeps its time too.
    s.advance(20.0 - 0.3);
    s.advance(20.0);
    assert_eq!(s.engine.alert("17-101").unwrap().tier, 2);
    assert!(s.last_page("17-101") == Some(std::time::Duration::from_secs(60)));
}

#[test]
fn an_alert_commit_carries_only_its_own_band_heartbeats_go_in_batches() {
    let mut s = Sim::at(local(10, 0));
    let hb = BandEvent::Heartbeat {
        heart_rate: None,
        spo2: None,
        steps: 0,
    };
    s.frame(18, hb);
    s.sos(17);
    let changes = s.engine.take_changes(s.clock());
    let bands: Vec<u32> = changes.devices.iter().map(|d| d.device_id).collect();
    assert_eq!(
        bands,
        vec![17],
        "the SOS band's window is committed with its alert"
    );
    assert_eq!(changes.alerts.len(), 1);
    let telemetry = s.engine.take_telemetry(10);
    assert_eq!(
        telemetry.iter().map(|d| d.device_id).collect::<Vec<_>>(),
        vec![18]
    );
    assert!(telemetry[0].window_top.is_some());
    assert!(s.engine.take_telemetry(10).is_empty());
}

#[test]
fn telemetry_batches_take_turns_so_a_busy_low_band_cannot_starve_a_high_one() {
    let mut s = Sim::at(local(10, 0));
    let hb = BandEvent::Heartbeat {
        heart_rate: None,
        spo2: None,
        steps: 0,
    };
    let ids = |v: Vec<bandgate::engine::DeviceRecord>| -> Vec<u32> {
        v.iter().map(|d| d.device_id).collect()
    };
    s.frame(17, hb);
    s.frame(18, hb);
    assert_eq!(ids(s.engine.take_telemetry(1)), vec![17]);
    // 17 is heard again before the next batch: 18 still goes first.
    s.frame(17, hb);
    assert_eq!(ids(s.engine.take_telemetry(1)), vec![18]);
    assert_eq!(ids(s.engine.take_telemetry(1)), vec![17]);
    assert!(s.engine.take_telemetry(1).is_empty());
    // A batch the store could not write is taken again.
    s.frame(18, hb);
    let batch = s.engine.take_telemetry(5);
    assert_eq!(ids(batch.clone()), vec![18]);
    s.engine.retake_telemetry(batch.iter().map(|d| d.device_id));
    assert_eq!(ids(s.engine.take_telemetry(5)), vec![18]);
}

#[test]
fn gateway_fault_pages_the_supervisors_and_repeats_until_one_resolves_it() {
    let mut s = Sim::at(local(10, 0));
    let wall = s.wall();
    let id = s.engine.raise_gateway_fault(
        Now { mono: s.now, wall },
        "the state database came back empty",
    );
    s.drain();
    assert_eq!(id, "gateway-gw-test-fault-1");
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.kind, Kind::GatewayFault);
    assert_eq!(a.device_id, None);
    assert_eq!(
        a.detail.as_deref(),
        Some("the state database came back empty")
    );
    s.advance(130.0);
    // Acknowledged: the claim lapses like any other, so the fault is paged again.
    s.act("chen", &id, Action::Ack).unwrap();
    s.advance(15.0 * 60.0 + 1.0);
    s.act("chen", &id, Action::Resolve(Resolution::Other))
        .unwrap();
    s.advance(120.0);
    expect![[r#"
        t+0.0s   doc gateway-gw-test-fault-1 gateway_fault open tier 1 notified ["chen"]
        t+0.0s   page chen new gateway-gw-test-fault-1
        t+60.0s   doc gateway-gw-test-fault-1 gateway_fault open tier 1 notified ["chen"]
        t+60.0s   page chen reminder gateway-gw-test-fault-1
        t+120.0s   doc gateway-gw-test-fault-1 gateway_fault open tier 1 notified ["chen"]
        t+120.0s   page chen reminder gateway-gw-test-fault-1
        t+130.0s chen: ack gateway-gw-test-fault-1 -> ok
        t+130.0s   doc gateway-gw-test-fault-1 gateway_fault acknowledged tier 1 notified ["chen"] acked_by chen
        t+130.0s   page chen acknowledged gateway-gw-test-fault-1
        t+1030.0s   doc gateway-gw-test-fault-1 gateway_fault open tier 1 notified ["chen"]
        t+1030.0s   page chen claim_lapsed gateway-gw-test-fault-1
        t+1031.0s chen: resolve(other) gateway-gw-test-fault-1 -> ok
        t+1031.0s   doc gateway-gw-test-fault-1 gateway_fault resolved tier 1 notified ["chen"] acked_by chen resolution other
        t+1031.0s   page chen resolved gateway-gw-test-fault-1
    "#]]
    .assert_eq(&s.take_log());
}

#[test]
fn gateway_fault_ids_and_details_survive_a_restart_and_are_never_reused() {
    let mut s = Sim::at(local(10, 0));
    let wall = s.wall();
    let first = s
        .engine
        .raise_gateway_fault(Now { mono: s.now, wall }, "one");
    s.restart(5.0);
    assert_eq!(
        s.engine.alert(&first).unwrap().detail.as_deref(),
        Some("one")
    );
    let wall = s.wall();
    let second = s
        .engine
        .raise_gateway_fault(Now { mono: s.now, wall }, "two");
    assert_eq!(
        [first.as_str(), second.as_str()],
        ["gateway-gw-test-fault-1", "gateway-gw-test-fault-2"]
    );
}

#[test]
fn gateway_fault_without_supervisors_pages_whoever_is_on_duty() {
    let mut setup = setup();
    setup.escalation.supervisors.clear();
    let mut s = Sim::new(setup, local(10, 0));
    let wall = s.wall();
    s.engine
        .raise_gateway_fault(Now { mono: s.now, wall }, "lost");
    s.drain();
    expect![[r#"
        t+0.0s   doc gateway-gw-test-fault-1 gateway_fault open tier 1 notified ["zhang"]
        t+0.0s   page zhang new gateway-gw-test-fault-1
    "#]]
    .assert_eq(&s.take_log());
}
