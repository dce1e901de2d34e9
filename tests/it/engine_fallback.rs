//! The fallback ladder (SMS, ring calls) in the engine, as transcripts and properties: when it
//! starts (the deadline, at once for a person known to be gone or without the app), when it
//! stops (delivered, any action, claim, resolve), the one-call-a-minute rule per number, the
//! modem's reports, and restarts (no step repeated, none forgotten).
//!
//! The community is `harness::sim::setup` with distinct phone numbers and `[fallback]` at its
//! defaults: after 45 s, steps sms, call, call with gaps 60 s and 120 s.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use bandgate::engine::*;
use expect_test::expect;
use proptest::prelude::*;

use crate::harness::sim::*;

fn policy() -> Fallback {
    Fallback {
        after: Duration::from_secs(45),
        steps: vec![Channel::Sms, Channel::Call, Channel::Call],
        step_every: vec![Duration::from_secs(60), Duration::from_secs(120)],
        ring_for: Duration::from_secs(40),
        call_gap: CALL_GAP,
        channels: BTreeMap::new(),
    }
}

fn fallback_setup(edit: impl FnOnce(&mut Fallback)) -> Setup {
    let mut setup = setup();
    for (i, s) in setup.staff.values_mut().enumerate() {
        s.phone = format!("1390000000{i}");
    }
    let mut f = policy();
    edit(&mut f);
    setup.fallback = Some(f);
    setup
}

fn sim(edit: impl FnOnce(&mut Fallback)) -> Sim {
    Sim::new(fallback_setup(edit), local(10, 0))
}

/// The lines about the ladder (steps asked for, actions, reports, presence, restarts; not the
/// pages and documents), then each alert's `contacts` as its document shows them.
fn ladder_lines(s: &mut Sim) -> String {
    let mut out: String = s
        .take_log()
        .lines()
        .filter(|l| !l.contains("  doc ") && !l.contains("  page "))
        .map(|l| format!("{l}\n"))
        .collect();
    for a in s.engine.alerts() {
        let _ = writeln!(out, "contacts of {}:", a.id);
        for c in &a.contacts {
            let at = c.at.duration_since(s.wall0).as_secs_f64();
            let _ = writeln!(
                out,
                "  t+{at:.1}s {} {} step {} {}{}",
                c.staff_id,
                c.channel.as_str(),
                c.step,
                c.outcome.as_str(),
                c.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

fn presence(s: &mut Sim, staff: &str, client: &str, online: bool, armed: bool) {
    let wall = s.wall();
    let r = s
        .engine
        .handle_presence(Now { mono: s.now, wall }, staff, client, online, armed);
    let _ = writeln!(
        s.log,
        "t+{:.1}s presence {staff}/{client} online {online} armed {armed} -> {r:?}",
        s.elapsed().as_secs_f64()
    );
    s.drain();
}

fn report(s: &mut Sim, alert: &str, staff: &str, step: u8, outcome: Outcome) {
    let wall = s.wall();
    let ok = s.engine.handle_contact_report(
        Now { mono: s.now, wall },
        ContactReport {
            alert_id: alert.into(),
            staff_id: staff.into(),
            step,
            outcome,
            detail: None,
        },
    );
    let _ = writeln!(
        s.log,
        "t+{:.1}s report {alert} {staff} step {step} {} -> {ok}",
        s.elapsed().as_secs_f64(),
        outcome.as_str()
    );
    s.drain();
}

/// Every contact request so far: (time, request).
fn requests(s: &Sim) -> Vec<(Duration, ContactRequest)> {
    s.outputs
        .iter()
        .filter_map(|(t, o)| match o {
            Output::Contact(r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn nobody_confirms_sms_at_the_deadline_then_calls_at_the_steps_for_every_tier() {
    let mut s = sim(|_| {});
    let id = s.sos(17);
    s.advance(46.0);
    report(&mut s, &id, "zhang", 1, Outcome::Sent);
    s.advance(4.0);
    report(&mut s, &id, "zhang", 1, Outcome::Delivered);
    // A late "sent" after "delivered" changes nothing.
    report(&mut s, &id, "zhang", 1, Outcome::Sent);
    s.advance(250.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+45.0s   sms zhang 13900000003 step 1 17-101
        t+46.0s report 17-101 zhang step 1 sent -> true
        t+50.0s report 17-101 zhang step 1 delivered -> true
        t+50.0s report 17-101 zhang step 1 sent -> true
        t+105.0s   call zhang 13900000003 step 2 17-101
        t+105.0s   sms li 13900000001 step 1 17-101
        t+105.0s   sms wang 13900000002 step 1 17-101
        t+165.0s   call li 13900000001 step 2 17-101
        t+165.0s   call wang 13900000002 step 2 17-101
        t+165.0s   sms chen 13900000000 step 1 17-101
        t+225.0s   call zhang 13900000003 step 3 17-101
        t+225.0s   call chen 13900000000 step 2 17-101
        t+285.0s   call li 13900000001 step 3 17-101
        t+285.0s   call wang 13900000002 step 3 17-101
        contacts of 17-101:
          t+45.0s zhang sms step 1 delivered
          t+105.0s zhang call step 2 requested
          t+105.0s li sms step 1 requested
          t+105.0s wang sms step 1 requested
          t+165.0s li call step 2 requested
          t+165.0s wang call step 2 requested
          t+165.0s chen sms step 1 requested
          t+225.0s zhang call step 3 requested
          t+225.0s chen call step 2 requested
          t+285.0s li call step 3 requested
          t+285.0s wang call step 3 requested
    "#]]
    .assert_eq(&ladder_lines(&mut s));
}

#[test]
fn a_phone_that_confirms_in_time_gets_nothing_and_a_claim_stops_every_ladder() {
    let mut s = sim(|_| {});
    let id = s.sos(17);
    s.advance(10.0);
    s.act("zhang", &id, Action::Delivered).unwrap();
    s.advance(60.0);
    // li and wang were paged at 60 s; li declines (an action), wang's ladder runs until the
    // claim at 120 s, the SMS at 105 s being its only step.
    s.act("li", &id, Action::Decline).unwrap();
    s.advance(50.0);
    s.act("wang", &id, Action::Ack).unwrap();
    s.advance(600.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+10.0s zhang: delivered 17-101 -> ok
        t+70.0s li: decline 17-101 -> ok
        t+105.0s   sms wang 13900000002 step 1 17-101
        t+120.0s wang: ack 17-101 -> ok
        contacts of 17-101:
          t+105.0s wang sms step 1 requested
    "#]]
    .assert_eq(&ladder_lines(&mut s));
    let sent: Vec<(String, u8)> = requests(&s)
        .into_iter()
        .map(|(_, r)| (r.staff_id, r.step))
        .collect();
    assert_eq!(sent, vec![("wang".to_string(), 1)]);
}

#[test]
fn a_person_known_to_be_gone_starts_at_once_a_live_console_waits_for_the_deadline() {
    let mut s = sim(|_| {});
    // zhang's two devices: one gone, one live and armed: reachable, the deadline applies.
    presence(&mut s, "zhang", "phone", false, false);
    presence(&mut s, "zhang", "tablet", true, true);
    assert_eq!(s.engine.console("zhang"), Some(true));
    assert_eq!(s.engine.console("li"), None);
    let id = s.sos(17);
    s.advance(30.0);
    // The tablet is put away (not armed): every record says gone, the ladder starts now.
    presence(&mut s, "zhang", "tablet", true, false);
    s.advance(1.0);
    // li is gone before the escalation pages li at 60 s: li's ladder starts with the page.
    presence(&mut s, "li", "phone", false, false);
    s.advance(30.0);
    // A stranger's presence is refused; the gateway never crashes on it.
    presence(&mut s, "nobody", "x", true, true);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.advance(300.0);
    expect![[r#"
        t+0.0s presence zhang/phone online false armed false -> Ok(())
        t+0.0s presence zhang/tablet online true armed true -> Ok(())
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+30.0s presence zhang/tablet online true armed false -> Ok(())
        t+30.0s   sms zhang 13900000003 step 1 17-101
        t+31.0s presence li/phone online false armed false -> Ok(())
        t+60.0s   sms li 13900000001 step 1 17-101
        t+61.0s presence nobody/x online true armed true -> Err(UnknownStaff)
        t+61.0s zhang: ack 17-101 -> ok
        contacts of 17-101:
          t+30.0s zhang sms step 1 requested
          t+60.0s li sms step 1 requested
    "#]]
    .assert_eq(&ladder_lines(&mut s));
}

#[test]
fn an_sms_only_guardian_is_texted_the_moment_tier_2_pages_them() {
    let mut s = sim(|f| {
        f.channels.insert(
            "wang".into(),
            Channels {
                mqtt: false,
                sms: true,
                call: false,
            },
        );
    });
    let id = s.sos(17);
    s.advance(61.0);
    s.act("wang", &id, Action::Ack).unwrap();
    s.advance(300.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+45.0s   sms zhang 13900000003 step 1 17-101
        t+60.0s   sms wang 13900000002 step 1 17-101
        t+61.0s wang: ack 17-101 -> ok
        contacts of 17-101:
          t+45.0s zhang sms step 1 requested
          t+60.0s wang sms step 1 requested
    "#]]
    .assert_eq(&ladder_lines(&mut s));
}

#[test]
fn one_call_a_minute_per_number_across_alerts_a_call_due_sooner_waits() {
    // Two bands, two alerts, the same person on duty: both ladders call zhang's number.
    let mut s = sim(|_| {});
    let a = s.sos(17);
    s.advance(5.0);
    let b = s.sos(18);
    s.advance(400.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+5.0s band 18 #101 sos -> accepted 18-101
        t+45.0s   sms zhang 13900000003 step 1 17-101
        t+50.0s   sms zhang 13900000003 step 1 18-101
        t+105.0s   call zhang 13900000003 step 2 17-101
        t+105.0s   sms li 13900000001 step 1 17-101
        t+105.0s   sms wang 13900000002 step 1 17-101
        t+110.0s   sms wang 13900000002 step 1 18-101
        t+165.0s   call li 13900000001 step 2 17-101
        t+165.0s   call wang 13900000002 step 2 17-101
        t+165.0s   sms chen 13900000000 step 1 17-101
        t+165.0s   call zhang 13900000003 step 2 18-101
        t+170.0s   sms chen 13900000000 step 1 18-101
        t+225.0s   call zhang 13900000003 step 3 17-101
        t+225.0s   call chen 13900000000 step 2 17-101
        t+225.0s   call wang 13900000002 step 2 18-101
        t+285.0s   call li 13900000001 step 3 17-101
        t+285.0s   call wang 13900000002 step 3 17-101
        t+285.0s   call zhang 13900000003 step 3 18-101
        t+285.0s   call chen 13900000000 step 2 18-101
        t+345.0s   call chen 13900000000 step 3 17-101
        t+345.0s   call wang 13900000002 step 3 18-101
        t+405.0s   call chen 13900000000 step 3 18-101
        contacts of 17-101:
          t+45.0s zhang sms step 1 requested
          t+105.0s zhang call step 2 requested
          t+105.0s li sms step 1 requested
          t+105.0s wang sms step 1 requested
          t+165.0s li call step 2 requested
          t+165.0s wang call step 2 requested
          t+165.0s chen sms step 1 requested
          t+225.0s zhang call step 3 requested
          t+225.0s chen call step 2 requested
          t+285.0s li call step 3 requested
          t+285.0s wang call step 3 requested
          t+345.0s chen call step 3 requested
        contacts of 18-101:
          t+50.0s zhang sms step 1 requested
          t+110.0s wang sms step 1 requested
          t+165.0s zhang call step 2 requested
          t+170.0s chen sms step 1 requested
          t+225.0s wang call step 2 requested
          t+285.0s zhang call step 3 requested
          t+285.0s chen call step 2 requested
          t+345.0s wang call step 3 requested
          t+405.0s chen call step 3 requested
    "#]]
    .assert_eq(&ladder_lines(&mut s));
    let _ = (a, b);
    assert_no_call_within_a_minute(&s);
}

#[test]
fn a_restart_repeats_no_step_and_forgets_none() {
    let mut s = sim(|_| {});
    let id = s.sos(17);
    // zhang's SMS is requested at 45 s; the gateway dies before the modem answered.
    s.advance(45.5);
    s.restart(3.0);
    s.advance(1.0);
    report(&mut s, &id, "zhang", 1, Outcome::Sent);
    // zhang's call at 105 s is requested; the gateway dies again before the modem answered.
    s.advance(57.0);
    s.restart(2.0);
    s.advance(200.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+45.0s   sms zhang 13900000003 step 1 17-101
        t+48.5s -- restart after 3s down --
        t+48.5s   sms zhang 13900000003 step 1 17-101 (resume)
        t+49.5s report 17-101 zhang step 1 sent -> true
        t+105.0s   call zhang 13900000003 step 2 17-101
        t+105.0s   sms li 13900000001 step 1 17-101
        t+105.0s   sms wang 13900000002 step 1 17-101
        t+108.5s -- restart after 2s down --
        t+108.5s   sms li 13900000001 step 1 17-101 (resume)
        t+108.5s   sms wang 13900000002 step 1 17-101 (resume)
        t+165.0s   call li 13900000001 step 2 17-101
        t+165.0s   call wang 13900000002 step 2 17-101
        t+165.0s   sms chen 13900000000 step 1 17-101
        t+225.0s   call zhang 13900000003 step 3 17-101
        t+225.0s   call chen 13900000000 step 2 17-101
        t+285.0s   call li 13900000001 step 3 17-101
        t+285.0s   call wang 13900000002 step 3 17-101
        contacts of 17-101:
          t+45.0s zhang sms step 1 sent
          t+105.0s zhang call step 2 failed (interrupted by a restart; a call is never placed twice)
          t+105.0s li sms step 1 requested
          t+105.0s wang sms step 1 requested
          t+165.0s li call step 2 requested
          t+165.0s wang call step 2 requested
          t+165.0s chen sms step 1 requested
          t+225.0s zhang call step 3 requested
          t+225.0s chen call step 2 requested
          t+285.0s li call step 3 requested
          t+285.0s wang call step 3 requested
    "#]]
    .assert_eq(&ladder_lines(&mut s));
    // Once per (person, step), resumes aside.
    let mut seen = HashMap::new();
    for (_, r) in requests(&s).into_iter().filter(|(_, r)| !r.resume) {
        *seen.entry((r.staff_id, r.step)).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

fn assert_no_call_within_a_minute(s: &Sim) {
    let mut last: HashMap<String, Duration> = HashMap::new();
    for (t, r) in requests(s) {
        if r.channel != Channel::Call || r.resume {
            continue;
        }
        if let Some(prev) = last.get(&r.phone) {
            assert!(
                t - *prev >= CALL_GAP,
                "{} called at {prev:?} and again at {t:?}",
                r.phone
            );
        }
        last.insert(r.phone.clone(), t);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Sos {
        device: u32,
    },
    Phone {
        staff: usize,
        alert: usize,
        action: u8,
    },
    Presence {
        staff: usize,
        client: u8,
        live: bool,
    },
    Report {
        alert: usize,
        staff: usize,
        step: u8,
        outcome: usize,
    },
    Advance {
        ms: u64,
    },
    Restart {
        down_ms: u64,
    },
}

const STAFF: [&str; 5] = ["zhang", "li", "wang", "chen", "zhao"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop_oneof![Just(17u32), Just(18u32)].prop_map(|device| Op::Sos { device }),
        3 => (0usize..5, 0usize..4, 0u8..5)
            .prop_map(|(staff, alert, action)| Op::Phone { staff, alert, action }),
        2 => (0usize..5, 0u8..2, any::<bool>())
            .prop_map(|(staff, client, live)| Op::Presence { staff, client, live }),
        2 => (0usize..4, 0usize..5, 1u8..4, 0usize..8)
            .prop_map(|(alert, staff, step, outcome)| Op::Report { alert, staff, step, outcome }),
        5 => (0u64..90_000).prop_map(|ms| Op::Advance { ms }),
        1 => (0u64..120_000).prop_map(|down_ms| Op::Restart { down_ms }),
    ]
}

fn run(ops: Vec<Op>, renotify_secs: u64) -> Result<(), TestCaseError> {
    let mut setup = fallback_setup(|f| {
        f.channels.insert(
            "wang".into(),
            Channels {
                mqtt: false,
                sms: true,
                call: true,
            },
        );
    });
    // Re-pages as often as every 20 s (the default) or faster: never a second call within a
    // minute, never a ladder restarted by a re-page.
    setup.escalation.renotify_every = Duration::from_secs(renotify_secs);
    setup.escalation.repeat_every = Duration::from_secs(renotify_secs);
    let mut s = Sim::new(setup, local(10, 0));
    let mut ids: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Sos { device } => {
                let id = s.sos(device);
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Op::Phone {
                staff,
                alert,
                action,
            } => {
                if let Some(id) = ids.get(alert).cloned() {
                    let action = match action {
                        0 => Action::Delivered,
                        1 => Action::Ack,
                        2 => Action::Decline,
                        3 => Action::OnScene,
                        _ => Action::Resolve(Resolution::RealEmergency),
                    };
                    let _ = s.act(STAFF[staff], &id, action);
                }
            }
            Op::Presence {
                staff,
                client,
                live,
            } => presence(&mut s, STAFF[staff], &format!("c{client}"), live, live),
            Op::Report {
                alert,
                staff,
                step,
                outcome,
            } => {
                if let Some(id) = ids.get(alert).cloned() {
                    report(&mut s, &id, STAFF[staff], step, Outcome::ALL[outcome]);
                }
            }
            Op::Advance { ms } => s.advance(ms as f64 / 1000.0),
            Op::Restart { down_ms } => s.restart(down_ms as f64 / 1000.0),
        }
    }
    s.advance(600.0);
    // Every request was made while the alert was open and the person had neither confirmed
    // nor acted; each (alert, person, step) once, resumes aside; never two calls to one
    // number within a minute.
    let mut seen = HashMap::new();
    for (t, r) in requests(&s) {
        let a = &r.alert;
        if !r.resume {
            prop_assert!(
                matches!(a.state, State::Open { .. }),
                "{t:?}: step asked for on a {} alert",
                a.state.name()
            );
            prop_assert!(!a.delivered_to.contains(&r.staff_id), "{t:?}: {r:?}");
            prop_assert!(!a.declined.contains(&r.staff_id), "{t:?}: {r:?}");
            let n = seen
                .entry((a.id.clone(), r.staff_id.clone(), r.step))
                .or_insert(0);
            *n += 1;
            prop_assert_eq!(*n, 1, "{:?} asked for twice", (&a.id, &r.staff_id, r.step));
        }
        let contact = a
            .contacts
            .iter()
            .find(|c| c.staff_id == r.staff_id && c.step == r.step);
        prop_assert!(
            contact.is_some_and(|c| c.outcome == Outcome::Requested),
            "{t:?}: the step was not recorded as requested before it was asked for: {r:?}"
        );
    }
    let mut last: HashMap<String, Duration> = HashMap::new();
    for (t, r) in requests(&s) {
        if r.channel != Channel::Call || r.resume {
            continue;
        }
        if let Some(prev) = last.get(&r.phone) {
            prop_assert!(
                t - *prev >= CALL_GAP,
                "{} called at {prev:?} and {t:?}",
                r.phone
            );
        }
        last.insert(r.phone.clone(), t);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_ladder_keeps_its_promises(
        ops in proptest::collection::vec(op(), 1..60),
        renotify in prop_oneof![Just(20u64), Just(5u64)],
    ) {
        run(ops, renotify)?;
    }
}

#[test]
fn the_sms_fits_one_message_who_where_what_and_where_to_look() {
    use bandgate::adapters::modem::text::{sms_text, SMS_UNITS};
    let mut s = sim(|_| {});
    let id = s.sos(17);
    let alert = s.engine.alert(&id).unwrap().clone();
    let text = sms_text(&alert, &s.setup);
    assert_eq!(
        text,
        "【社区呼叫】王秀英 广惠园社区3号楼2单元401 紧急求救，请打开值班页"
    );
    // A long address keeps its end (building, unit, flat) and the text stays one SMS.
    let mut setup = s.setup.clone();
    setup.residents.get_mut(&17).unwrap().address =
        "北京市朝阳区某某街道某某社区居民委员会广惠园社区老年公寓东区 3号楼 2单元 401".into();
    let text = sms_text(&alert, &setup);
    assert!(text.encode_utf16().count() <= SMS_UNITS, "{text}");
    assert!(text.contains("3号楼2单元401 紧急求救"), "{text}");
    assert!(text.starts_with("【社区呼叫】王秀英 "), "{text}");
    setup.locale = Locale::En;
    let text = sms_text(&alert, &setup);
    assert!(text.encode_utf16().count() <= SMS_UNITS, "{text}");
    assert!(text.ends_with("SOS. Open the duty page"), "{text}");
    // A test alert names nobody.
    let t = s.engine.raise_test(s.clock(), Some("zhang")).unwrap();
    let test = s.engine.alert(&t).unwrap().clone();
    assert_eq!(
        sms_text(&test, &s.setup),
        "【社区呼叫】测试呼叫，请打开值班页"
    );
}

#[test]
fn a_clock_that_went_back_while_down_does_not_hold_a_ladder_back() {
    let mut s = sim(|_| {});
    s.sos(17);
    s.advance(10.0);
    // An hour behind after the restart: the stored step (due at 45 s) looks an hour away.
    s.restart_with_clock(1.0, -3600.0);
    s.advance(0.5);
    let first = requests(&s);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].0 <= std::time::Duration::from_secs(12),
        "{first:?}"
    );
}

#[test]
fn a_claim_holds_the_ladders_and_a_lapsed_claim_takes_them_up_again() {
    let mut s = sim(|_| {});
    let id = s.sos(17);
    // zhang is texted at 45 s; tier 2 (li, wang) is paged at 60 s; li claims at 61 s and
    // never arrives: zhang's call (due at 105 s) and wang's SMS wait while li holds the claim.
    s.advance(61.0);
    s.act("li", &id, Action::Ack).unwrap();
    s.advance(15.0 * 60.0);
    // The claim lapsed at 961 s: zhang's ladder goes on with its call, wang's starts with the
    // SMS, each after the deadline (45 s); li acted and gets none.
    s.advance(200.0);
    expect![[r#"
        t+0.0s band 17 #101 sos -> accepted 17-101
        t+45.0s   sms zhang 13900000003 step 1 17-101
        t+61.0s li: ack 17-101 -> ok
        t+1006.0s   call zhang 13900000003 step 2 17-101
        t+1006.0s   sms wang 13900000002 step 1 17-101
        t+1006.0s   sms chen 13900000000 step 1 17-101
        t+1066.0s   call wang 13900000002 step 2 17-101
        t+1066.0s   call chen 13900000000 step 2 17-101
        t+1126.0s   call zhang 13900000003 step 3 17-101
        contacts of 17-101:
          t+45.0s zhang sms step 1 requested
          t+1006.0s zhang call step 2 requested
          t+1006.0s wang sms step 1 requested
          t+1006.0s chen sms step 1 requested
          t+1066.0s wang call step 2 requested
          t+1066.0s chen call step 2 requested
          t+1126.0s zhang call step 3 requested
    "#]]
    .assert_eq(&ladder_lines(&mut s));
}
