//! Storms through the engine's public API (issue 19): a stuck button pressing thousands of
//! times, and thousands of bands falling silent at once.

use std::time::{Duration, Instant};

use bandgate::engine::*;
use jiff::Timestamp;
use proptest::prelude::*;

use crate::harness::sim::*;

fn pages_about<'a>(
    s: &'a Sim,
    alert: &'a str,
) -> impl Iterator<Item = (Duration, &'a str, NotifyReason, &'a Alert)> + 'a {
    s.outputs.iter().filter_map(move |(t, o)| match o {
        Output::Notify {
            staff_id,
            reason,
            alert: a,
        } if a.id == alert => Some((*t, staff_id.as_str(), *reason, a.as_ref())),
        _ => None,
    })
}

fn first_seq(s: &Sim, device: u32) -> u32 {
    s.seqs.get(&device).copied().unwrap_or(100) + 1
}

#[test]
fn a_stuck_button_pages_once_per_renotify_every_and_band_18_is_paged_at_once() {
    let mut s = Sim::at(local(10, 0));
    let first = first_seq(&s, 17);
    let id = s.sos(17);
    let mut id18 = String::new();
    let mut pressed18 = Duration::ZERO;
    // 10,000 presses with fresh seqs, one every 10 ms (100 s); band 18 presses once after the
    // 5,000th.
    for i in 1..10_000 {
        s.advance(0.01);
        assert_eq!(s.sos(17), id, "every press of band 17 is the same alert");
        if i == 5_000 {
            pressed18 = s.elapsed();
            id18 = s.sos(18);
        }
    }
    let a = s.engine.alert(&id).unwrap().clone();
    assert_eq!(a.presses.count, 10_000);
    assert!(a.seqs.len() <= SEQS_KEPT, "{} seqs kept", a.seqs.len());
    assert_eq!(a.seqs.first(), Some(&first), "the press that raised it");
    assert_eq!(a.seqs.last(), Some(&(first + 9_999)), "the latest press");
    assert_eq!(a.presses.last_at, Some(s.wall()));
    assert!(a.presses.fault_suspected);

    // Band 18: its own alert, paged `new` to the person on duty in the same instant.
    assert_ne!(id18, id);
    let first18 = pages_about(&s, &id18).next().unwrap();
    assert_eq!(
        (first18.0, first18.1, first18.2),
        (pressed18, "zhang", NotifyReason::New)
    );

    // Band 17's first page went out with its first press, and was never hidden.
    let pages: Vec<_> = pages_about(&s, &id).collect();
    assert_eq!(
        (pages[0].0, pages[0].1, pages[0].2),
        (Duration::ZERO, "zhang", NotifyReason::New)
    );
    // Reminders to the person on duty at most once per renotify_every (20 s): over 100 s, with
    // the tiers' pages, a handful, not thousands.
    let zhang: Vec<_> = pages.iter().filter(|p| p.1 == "zhang").collect();
    assert!(
        zhang.len() <= 100 / 20 + 3 + 1,
        "{} pages to zhang",
        zhang.len()
    );
    let reminders: Vec<Duration> = zhang
        .iter()
        .filter(|p| p.2 == NotifyReason::Reminder)
        .map(|p| p.0)
        .collect();
    assert!(!reminders.is_empty(), "presses are not silenced");
    for w in reminders.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_secs(20), "{reminders:?}");
    }
    // The supervisor hears of the probable device fault once, within the first second (the
    // 51st press in ten seconds), with the flag in the document.
    let chen: Vec<_> = pages.iter().filter(|p| p.1 == "chen").collect();
    let fault = chen
        .iter()
        .find(|p| p.3.presses.fault_suspected)
        .expect("the supervisor is told");
    assert!(fault.0 <= Duration::from_secs(1), "told at {:?}", fault.0);
    assert!(a.notified.contains(&"chen".to_string()));
    // Its stored record stays small however many presses there were.
    let snap = s.engine.snapshot(s.clock());
    let record = snap.alerts.iter().find(|r| r.id == id).unwrap();
    let bytes = serde_json::to_vec(record).unwrap().len();
    assert!(bytes < 2048, "record of {bytes} bytes");
    assert_eq!(record.presses, 10_000);
    assert!(record.device_fault_suspected);
}

#[test]
fn a_person_pressing_every_second_for_two_minutes_is_not_a_device_fault() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    for _ in 0..120 {
        s.advance(1.0);
        s.sos(17);
    }
    let a = s.engine.alert(&id).unwrap();
    assert_eq!(a.presses.count, 121);
    assert!(!a.presses.fault_suspected);
    assert!(!pages_about(&s, &id).any(|p| p.3.presses.fault_suspected));
}

#[test]
fn a_cancel_naming_a_press_the_alert_no_longer_lists_still_reaches_it() {
    let mut s = Sim::at(local(10, 0));
    let first = first_seq(&s, 17);
    let id = s.sos(17);
    for _ in 0..200 {
        s.advance(0.5);
        s.sos(17);
    }
    let forgotten = first + 50;
    assert!(!s.engine.alert(&id).unwrap().seqs.contains(&forgotten));
    s.frame(17, BandEvent::Cancel { of_seq: forgotten });
    assert!(s.engine.alert(&id).unwrap().cancel_requested);
    assert_eq!(s.engine.counters().unmatched_cancels, 0);
}

#[test]
fn a_press_coalesced_while_claimed_reaches_the_claimer_once_renotify_every_is_over() {
    let mut s = Sim::at(local(10, 0));
    let id = s.sos(17);
    s.act("zhang", &id, Action::Ack).unwrap();
    s.take_log();
    s.advance(1.0);
    s.sos(17);
    s.advance(1.0);
    s.sos(17);
    assert!(
        !s.take_log().contains("page"),
        "within renotify_every of the last page: coalesced"
    );
    s.advance(20.0);
    let log = s.take_log();
    assert!(log.contains("page zhang reminder"), "{log}");
    assert_eq!(log.matches("page").count(), 1, "{log}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the rhythm of presses: one alert, its first page at the first press, the
    /// presses all counted, a bounded record, and reminders to the person on duty never closer
    /// than renotify_every.
    #[test]
    fn presses_at_any_rhythm_page_at_most_once_per_renotify_every(
        gaps in proptest::collection::vec(0u64..3_000, 1..400),
    ) {
        let mut s = Sim::at(local(10, 0));
        let id = s.sos(17);
        for gap in &gaps {
            s.advance(*gap as f64 / 1000.0);
            prop_assert_eq!(s.sos(17), id.clone());
        }
        s.advance(30.0);
        let a = s.engine.alert(&id).unwrap();
        prop_assert_eq!(a.presses.count as usize, gaps.len() + 1);
        prop_assert!(a.seqs.len() <= SEQS_KEPT);
        let pages: Vec<_> = pages_about(&s, &id).collect();
        prop_assert_eq!((pages[0].0, pages[0].2), (Duration::ZERO, NotifyReason::New));
        let reminders: Vec<Duration> = pages
            .iter()
            .filter(|p| p.1 == "zhang" && p.2 == NotifyReason::Reminder)
            .map(|p| p.0)
            .collect();
        for w in reminders.windows(2) {
            prop_assert!(w[1] - w[0] >= Duration::from_secs(20), "{:?}", reminders);
        }
        // Nothing pressed is left unpaged: the last page tells of every press.
        let last = pages.iter().rfind(|p| p.1 == "zhang").unwrap();
        prop_assert_eq!(last.3.presses.count as usize, gaps.len() + 1);
    }
}

/// A community of `n` more residents (bands 1000..1000+n) besides 17 and 18.
fn big_setup(n: u32) -> (Setup, Keyring) {
    let mut setup = setup();
    let mut keys: Vec<(u32, DeviceKey)> = vec![(17, DeviceKey(KEY17)), (18, DeviceKey(KEY18))];
    for d in 1000..1000 + n {
        setup.residents.insert(
            d,
            Resident {
                id: format!("r{d}"),
                name: format!("住户{d}"),
                address: "广惠园社区".into(),
                phone: "13800000000".into(),
                notes: String::new(),
                device_id: d,
                team: vec![],
            },
        );
        keys.push((d, key(d)));
    }
    (setup, keys.into_iter().collect())
}

fn key(d: u32) -> DeviceKey {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&d.to_le_bytes());
    DeviceKey(k)
}

struct Community {
    engine: Engine,
    t0: Instant,
    now: Instant,
    wall0: Timestamp,
    outputs: Vec<(Duration, Output)>,
    seq: u32,
}

impl Community {
    fn new(n: u32) -> Community {
        let (setup, keys) = big_setup(n);
        let t0 = Instant::now();
        Community {
            engine: Engine::new(setup, Intake::new(COMPANY, keys), t0),
            t0,
            now: t0,
            wall0: local(10, 0),
            outputs: Vec::new(),
            seq: 100,
        }
    }

    fn wall(&self) -> Timestamp {
        self.wall0 + (self.now - self.t0)
    }

    fn clock(&self) -> Now {
        Now {
            mono: self.now,
            wall: self.wall(),
        }
    }

    fn advance(&mut self, secs: u64) {
        let target = self.now + Duration::from_secs(secs);
        while let Some(due) = self.engine.poll_timeout().filter(|d| *d <= target) {
            self.now = due.max(self.now);
            let silences = self.engine.silences_due(self.now);
            self.engine.handle_timeout(self.clock());
            assert!(
                self.engine.poll_timeout().is_none_or(|n| n > self.now)
                    || self.engine.silences_due(self.now) < silences
            );
            self.drain();
        }
        self.now = target;
    }

    fn frame(&mut self, d: u32, event: BandEvent) -> Heard {
        self.seq += 1;
        let k = match d {
            17 => DeviceKey(KEY17),
            18 => DeviceKey(KEY18),
            d => key(d),
        };
        let f = Frame {
            device_id: d,
            seq: self.seq,
            battery_pct: 80,
            worn: true,
            event,
        };
        let data = frame::seal(&f, COMPANY, &k);
        let heard = self.engine.handle_frame(self.clock(), &data, Some(-60));
        self.drain();
        heard
    }

    fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            self.outputs.push((self.now - self.t0, o));
        }
    }

    fn pages(&self) -> Vec<(String, NotifyReason, &Alert)> {
        self.outputs
            .iter()
            .filter_map(|(_, o)| match o {
                Output::Notify {
                    staff_id,
                    reason,
                    alert,
                } => Some((staff_id.clone(), *reason, alert.as_ref())),
                _ => None,
            })
            .collect()
    }
}

const HEARTBEAT: BandEvent = BandEvent::Heartbeat {
    heart_rate: None,
    spo2: None,
    steps: 0,
};

#[test]
fn two_thousand_silent_bands_make_one_notice_and_an_sos_meanwhile_pages_at_once() {
    let mut c = Community::new(2_000);
    // 17 and 18 heartbeat every 10 minutes; the 2,000 others are never heard.
    for _ in 0..3 {
        c.frame(17, HEARTBEAT);
        c.frame(18, HEARTBEAT);
        c.advance(600);
    }
    c.advance(60);
    let pages = c.pages();
    assert!(
        pages.len() < 20,
        "{} pages for 2,000 silent bands",
        pages.len()
    );
    let notice = pages
        .iter()
        .find(|p| p.2.id.starts_with("gateway-gw-test-silent-"))
        .expect("one gateway notice")
        .2
        .clone();
    assert_eq!(notice.kind, Kind::DeviceSilent);
    assert_eq!(notice.device_id, None);
    let Grouping::Notice(b) = &notice.grouping else {
        panic!("{:?}", notice.grouping)
    };
    assert_eq!((b.count, b.still_silent, b.named.len()), (2_000, 2_000, 5));
    assert!(pages
        .iter()
        .all(|p| p.2.id == notice.id && p.0 == "zhang" && p.1 == NotifyReason::New));
    // Noticed at 30 min, paged within a minute of it.
    let at = c
        .outputs
        .iter()
        .find(|(_, o)| matches!(o, Output::Notify { .. }))
        .unwrap()
        .0;
    assert!(at <= Duration::from_secs(1800 + 60), "{at:?}");
    // Every band still has its own open device_silent alert.
    let silent: Vec<&Alert> = c
        .engine
        .alerts()
        .filter(|a| a.kind == Kind::DeviceSilent && a.device_id.is_some() && !a.is_resolved())
        .collect();
    assert_eq!(silent.len(), 2_000);
    assert!(silent
        .iter()
        .all(|a| a.grouping == Grouping::In(notice.id.clone())));

    // An SOS meanwhile: paged at once, on its own.
    c.outputs.clear();
    let Heard::Accepted {
        alert_id: Some(sos),
        ..
    } = c.frame(17, BandEvent::Sos)
    else {
        panic!()
    };
    assert!(c
        .pages()
        .iter()
        .any(|p| p.2.id == sos && p.1 == NotifyReason::New));

    // Reminders of the silence: the notice's, not 2,000.
    c.outputs.clear();
    c.advance(1800);
    let silence_pages = c
        .pages()
        .iter()
        .filter(|p| p.2.kind == Kind::DeviceSilent)
        .count();
    assert!(silence_pages <= 2, "{silence_pages}");

    // Every band back: each alert clears, quietly; the notice resolves with the last of them,
    // one page, and one commit holds every cleared record.
    c.outputs.clear();
    let _ = c.engine.take_changes(c.clock());
    for d in [17, 18].into_iter().chain(1000..3000) {
        c.frame(d, HEARTBEAT);
    }
    assert_eq!(
        c.engine
            .alerts()
            .filter(|a| a.kind == Kind::DeviceSilent && !a.is_resolved())
            .count(),
        0
    );
    let published = c
        .outputs
        .iter()
        .filter(|(_, o)| !matches!(o, Output::DeviceState(_)))
        .count();
    assert!(published < 20, "{published} messages for the clears");
    assert!(c
        .pages()
        .iter()
        .any(|p| p.2.id == notice.id && p.1 == NotifyReason::Resolved));
    // The alarms' commit stays small: the 2,000 cleared records go in background batches.
    let changes = c.engine.take_changes(c.clock());
    assert!(changes.alerts.len() < 20, "{}", changes.alerts.len());
    let mut written = 0;
    for _ in 0..100 {
        let batch = c.engine.take_background(c.clock(), BACKGROUND_BATCH);
        if batch.is_empty() {
            break;
        }
        assert!(batch.alerts.len() <= BACKGROUND_BATCH);
        assert!(batch
            .alerts
            .iter()
            .all(|r| r.state == "resolved" && r.grouped_in.is_some()));
        written += batch.alerts.len();
    }
    assert_eq!(
        written, 2_002,
        "every grouped silence written once: the 2,000, 17 and 18"
    );
    // Their retention ends without 2,000 clears of documents never published.
    c.outputs.clear();
    c.advance(3600);
    let cleared = c
        .outputs
        .iter()
        .filter(|(_, o)| matches!(o, Output::AlertCleared { .. }))
        .count();
    assert!(cleared <= 3, "{cleared} clears");
}

/// A dead adapter: 2,000 bands fall silent in the same instant. One `handle_timeout` notices
/// at most `SILENCES_PER_TIMEOUT` of them and leaves the rest due, so an SOS taken between two
/// calls (as the loop takes its alarm lane between turns) is paged before the rest are opened.
#[test]
fn silences_noticed_at_once_are_taken_a_batch_per_timeout_and_an_sos_goes_between() {
    let mut c = Community::new(2_000);
    c.frame(17, HEARTBEAT);
    c.frame(18, HEARTBEAT);
    c.advance(29 * 60);
    c.frame(17, HEARTBEAT);
    c.frame(18, HEARTBEAT);
    let due = c.engine.poll_timeout().unwrap();
    c.now = due;
    assert_eq!(c.engine.silences_due(c.now), 2_000);
    c.engine.handle_timeout(c.clock());
    c.drain();
    assert_eq!(c.engine.silences_due(c.now), 2_000 - SILENCES_PER_TIMEOUT);
    assert!(
        c.engine.poll_timeout().unwrap() <= c.now,
        "the rest stay due"
    );
    let silent = |c: &Community| {
        c.engine
            .alerts()
            .filter(|a| a.kind == Kind::DeviceSilent && a.device_id.is_some())
            .count()
    };
    assert_eq!(silent(&c), SILENCES_PER_TIMEOUT);
    // The SOS between two calls is paged at once.
    c.frame(17, BandEvent::Sos);
    let sos_page = c
        .pages()
        .iter()
        .any(|p| p.2.kind == Kind::Sos && p.1 == NotifyReason::New);
    assert!(sos_page);
    // The next calls, at the same instant, take the rest; grouped as if noticed together.
    c.advance(60);
    assert_eq!(c.engine.silences_due(c.now), 0);
    assert_eq!(silent(&c), 2_000);
    let notices: Vec<_> = c
        .pages()
        .into_iter()
        .filter(|p| p.2.id.starts_with("gateway-gw-test-silent-"))
        .map(|p| p.2.id.clone())
        .collect();
    assert!(
        !notices.is_empty() && notices.iter().all(|n| *n == notices[0]),
        "{notices:?}"
    );
}

#[test]
fn a_handful_of_silent_bands_are_paged_one_by_one() {
    let mut c = Community::new(3);
    for _ in 0..3 {
        c.frame(17, HEARTBEAT);
        c.frame(18, HEARTBEAT);
        c.advance(600);
    }
    c.advance(60);
    let mut ids: Vec<String> = c.pages().iter().map(|p| p.2.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["1000-silent-1", "1001-silent-1", "1002-silent-1"]);
    assert!(c.pages().iter().all(|p| p.1 == NotifyReason::New));
}

#[test]
fn silences_held_across_a_restart_are_still_grouped() {
    let mut c = Community::new(50);
    c.advance(1800);
    assert!(c.engine.poll_timeout().is_some());
    // Down for 5 s in the middle of the window.
    let snap = c.engine.snapshot(c.clock());
    let (setup, keys) = big_setup(50);
    c.now += Duration::from_secs(5);
    c.engine = Engine::restore(setup, Intake::new(COMPANY, keys), c.clock(), snap);
    c.advance(60);
    let pages = c.pages();
    assert_eq!(
        pages.len(),
        1,
        "{:?}",
        pages.iter().map(|p| &p.2.id).collect::<Vec<_>>()
    );
    let Grouping::Notice(b) = &pages[0].2.grouping else {
        panic!()
    };
    assert_eq!(b.count, 52, "bands 17, 18 and the 50");
}

#[test]
fn a_background_batch_that_could_not_be_written_is_taken_again() {
    let mut c = Community::new(300);
    c.advance(1800 + 60);
    let first = c.engine.take_background(c.clock(), BACKGROUND_BATCH);
    assert_eq!(first.alerts.len(), BACKGROUND_BATCH);
    assert_eq!(first.devices.len(), BACKGROUND_BATCH);
    // The store failed: the same records come back in a later batch, none lost.
    c.engine.retake_background(&first);
    let mut ids = std::collections::BTreeSet::new();
    loop {
        let b = c.engine.take_background(c.clock(), BACKGROUND_BATCH);
        if b.is_empty() {
            break;
        }
        ids.extend(b.alerts.into_iter().map(|r| r.id));
    }
    assert_eq!(ids.len(), 302, "every band's silence: the 300, 17 and 18");
    assert!(first.alerts.iter().all(|r| ids.contains(&r.id)));
}

#[test]
fn bands_still_silent_when_a_person_resolves_the_notice_are_paged_one_by_one() {
    // The radio was mended and the notice resolved, but two bands are really silent (dead,
    // or their wearers gone): nothing stands for them any more, so each is paged.
    let mut c = Community::new(20);
    c.advance(1800 + 60);
    let notice = c
        .pages()
        .iter()
        .find(|p| matches!(p.2.grouping, Grouping::Notice(_)))
        .map(|p| p.2.id.clone())
        .expect("one gateway notice");
    // Every band but 1000 and 1001 is heard again.
    for d in (1002..1020).chain([17, 18]) {
        c.frame(d, HEARTBEAT);
    }
    let before = c.pages().len();
    let supervisor = c.engine.setup().escalation.supervisors[0].clone();
    let (now, wall) = (c.now, c.wall());
    c.engine
        .handle_action(
            Now { mono: now, wall },
            &supervisor,
            &notice,
            Action::Resolve(Resolution::DeviceFault),
        )
        .unwrap();
    c.drain();
    let mut alone: Vec<String> = c.pages()[before..]
        .iter()
        .filter(|p| p.1 == NotifyReason::New)
        .map(|p| p.2.id.clone())
        .collect();
    alone.sort();
    alone.dedup();
    assert_eq!(alone, ["1000-silent-1", "1001-silent-1"]);
}
