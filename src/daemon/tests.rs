//! The loop with a paused clock: its inputs are channels, the store is a real SQLite store
//! that a test can make fail, and the broker is a recording publisher. No sleeps wait for a
//! timer: paused tokio time jumps to the next deadline when everything is idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::*;
use crate::adapters::lanes::advert_lanes;
use crate::engine::frame::{seal, Frame};
use crate::engine::{
    BandEvent, DeviceKey, Escalation, Intake, Keyring, Locale, Resident, Rota, Setup, Staff,
    Supervision, WearerCancel,
};

const COMPANY: u16 = 0xFFFF;

fn key(device_id: u32) -> DeviceKey {
    DeviceKey([device_id as u8; 16])
}

fn setup() -> Setup {
    let staff = [("zhang", "张伟"), ("li", "李娜"), ("chen", "陈静")]
        .into_iter()
        .map(|(id, name)| {
            let s = Staff {
                id: id.into(),
                name: name.into(),
                phone: "13800000001".into(),
            };
            (id.to_owned(), s)
        })
        .collect();
    let residents = (17..=18)
        .map(|d| {
            let r = Resident {
                id: format!("r{d:03}"),
                name: "王秀英".into(),
                address: "3号楼".into(),
                phone: "13800000000".into(),
                notes: String::new(),
                device_id: d,
                team: vec!["li".into()],
            };
            (d, r)
        })
        .collect();
    Setup {
        gateway_id: "gw-test".into(),
        locale: Locale::En,
        staff,
        residents,
        // Nobody on duty: alerts start at tier 2 (the resident's team, li).
        rota: Rota {
            tz: jiff::tz::TimeZone::UTC,
            shifts: vec![],
        },
        escalation: Escalation {
            ack_timeouts: vec![Duration::from_secs(60), Duration::from_secs(60)],
            renotify_every: Duration::from_secs(20),
            repeat_every: Duration::from_secs(60),
            claim_timeout: Duration::from_secs(900),
            wearer_cancel: WearerCancel::Verify,
            cancel_verify_timeout: Duration::from_secs(300),
            supervisors: vec!["chen".into()],
        },
        supervision: Supervision {
            silent_after: Duration::from_secs(24 * 3600),
            low_battery_pct: 20,
        },
        resolved_retention: Duration::from_secs(600),
        device_state_interval: Duration::from_secs(60),
        fallback: None,
    }
}

fn keyring() -> Keyring {
    let mut k = Keyring::new();
    for d in 17..=18 {
        k.insert(d, key(d));
    }
    k
}

fn advert(device_id: u32, seq: u32, event: BandEvent) -> Advert {
    let frame = Frame {
        device_id,
        seq,
        battery_pct: 80,
        worn: true,
        event,
    };
    Advert {
        addr: "C8:FD:19:00:00:11".into(),
        rssi: Some(-60),
        data: seal(&frame, COMPANY, &key(device_id)),
        received_at: jiff::Timestamp::now(),
        format: crate::adapters::Format::Band,
    }
}

fn heartbeat(device_id: u32, seq: u32) -> Advert {
    advert(
        device_id,
        seq,
        BandEvent::Heartbeat {
            heart_rate: None,
            spo2: None,
            steps: 0,
        },
    )
}

/// The real store, made to fail on demand (a full disk).
struct Disk {
    store: Store,
    full: Arc<AtomicBool>,
}

impl StateStore for Disk {
    fn commit(&mut self, changes: &Changes, outbox: &[OutboxMessage]) -> anyhow::Result<Vec<i64>> {
        // Like the real store, an empty commit does no IO.
        let empty = changes.is_empty() && outbox.is_empty();
        anyhow::ensure!(
            empty || !self.full.load(Ordering::SeqCst),
            "disk full (test)"
        );
        self.store.commit(changes, outbox)
    }
    fn commit_telemetry(&mut self, devices: &[DeviceRecord]) -> anyhow::Result<()> {
        // Like the real store, an empty write does no IO.
        anyhow::ensure!(
            devices.is_empty() || !self.full.load(Ordering::SeqCst),
            "disk full (test)"
        );
        self.store.commit_telemetry(devices)
    }
    fn pending(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(i64, OutboxMessage)>> {
        self.store.pending(after, limit)
    }
    fn mark_sent(&mut self, ids: &[i64]) -> anyhow::Result<()> {
        self.store.mark_sent(ids)
    }
    fn outbox_len(&self) -> anyhow::Result<u64> {
        self.store.outbox_len()
    }
}

/// What the broker got, with how many phone messages were still waiting at that moment.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    payload: String,
    waiting: usize,
}

/// The broker: takes everything while `up`, PUBACKs at once when `acking`.
#[derive(Clone)]
struct Broker {
    got: Arc<Mutex<Vec<Got>>>,
    up: Arc<AtomicBool>,
    acking: Arc<AtomicBool>,
    events: mpsc::Sender<LinkEvent>,
    /// Adverts sent into the lanes when the first message whose payload holds the text is
    /// published (to land something in the middle of a turn's aftermath).
    inject: Arc<Mutex<Option<Injection>>>,
}

struct Injection {
    when: &'static str,
    lanes: crate::adapters::lanes::AdvertTx,
    adverts: Vec<Advert>,
}

impl Publisher for Broker {
    fn publish(&self, id: u64, msg: &OutboxMessage) -> bool {
        if !self.up.load(Ordering::SeqCst) {
            return false;
        }
        self.got.lock().unwrap().push(Got {
            topic: msg.topic.clone(),
            payload: msg.payload_str().to_owned(),
            waiting: self.events.max_capacity() - self.events.capacity(),
        });
        if self.acking.load(Ordering::SeqCst) {
            let _ = self.events.try_send(LinkEvent::PubAcked(id));
        }
        let mut inject = self.inject.lock().unwrap();
        if inject
            .as_ref()
            .is_some_and(|i| msg.payload_str().contains(i.when))
        {
            let i = inject.take().unwrap();
            for a in i.adverts {
                assert!(i.lanes.send(a));
            }
        }
        true
    }
    fn disconnect(&self) {}
}

impl Broker {
    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
    /// Pages to `staff` (`reason` of each), in order.
    fn pages(&self, staff: &str) -> Vec<String> {
        self.got()
            .into_iter()
            .filter(|g| g.topic == format!("bandgate/test/notify/{staff}"))
            .map(|g| {
                let v: serde_json::Value = serde_json::from_str(&g.payload).unwrap();
                format!(
                    "{} {}",
                    v["reason"].as_str().unwrap(),
                    v["alert"]["alert_id"].as_str().unwrap()
                )
            })
            .collect()
    }
}

struct Rig {
    dir: tempfile::TempDir,
    broker: Broker,
    full: Arc<AtomicBool>,
    link: mpsc::Sender<LinkEvent>,
    adverts: crate::adapters::lanes::AdvertTx,
    control: mpsc::Sender<control::Pending>,
    stop: Option<oneshot::Sender<()>>,
    daemon: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Rig {
    /// A daemon on a fresh (or the given) state directory; nothing runs until the test yields.
    fn start(dir: Option<tempfile::TempDir>, link_queue: usize) -> Rig {
        Rig::start_with(dir, link_queue, setup(), keyring())
    }

    fn start_with(
        dir: Option<tempfile::TempDir>,
        link_queue: usize,
        setup: Setup,
        keyring: Keyring,
    ) -> Rig {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let store = Store::open(dir.path()).unwrap();
        let snapshot = store.load().unwrap();
        let (now, wall) = clock();
        let devices_enrolled = keyring.len();
        let lanes_keys = Arc::new(keyring.clone());
        let engine = Engine::restore(
            setup,
            Intake::new(COMPANY, keyring),
            Now { mono: now, wall },
            snapshot,
        );
        let full = Arc::new(AtomicBool::new(false));
        let (link_tx, link_rx) = mpsc::channel(link_queue);
        let broker = Broker {
            got: Default::default(),
            up: Arc::new(AtomicBool::new(true)),
            acking: Arc::new(AtomicBool::new(true)),
            events: link_tx.clone(),
            inject: Default::default(),
        };
        let (tx, rx) = advert_lanes(COMPANY, lanes_keys);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (_radio_tx, radio) = watch::channel(BleStatus::default());
        let site = Site {
            gateway_id: "gw-test".into(),
            broker: "test".into(),
            topics: Topics::new("bandgate/test"),
            publish_vitals: false,
            devices_enrolled,
            status_interval: Duration::from_secs(60),
            started_at: wall,
            adapter: "test".into(),
            adapter_ok: true,
            scan: "",
        };
        let inputs = Inputs {
            adverts: rx,
            link: link_rx,
            control: control_rx,
            source: tokio::spawn(std::future::pending()),
            radio,
            shutdown: Box::pin(async {
                let _ = stop_rx.await;
            }),
        };
        let disk = Disk {
            store,
            full: full.clone(),
        };
        let daemon = tokio::spawn(Daemon::new(engine, disk, broker.clone(), site).run(inputs));
        Rig {
            dir,
            broker,
            full,
            link: link_tx,
            adverts: tx,
            control: control_tx,
            stop: Some(stop_tx),
            daemon,
        }
    }

    async fn link(&self, ev: LinkEvent) {
        self.link.send(ev).await.unwrap();
    }

    async fn press(&self, device_id: u32, seq: u32) {
        assert!(self.adverts.send(advert(device_id, seq, BandEvent::Sos)));
        tokio::task::yield_now().await;
    }

    async fn status(&self) -> control::StatusReport {
        let (reply, rx) = oneshot::channel();
        let request = control::Request::Status;
        self.control
            .send(control::Pending { request, reply })
            .await
            .unwrap();
        match rx.await.unwrap() {
            control::Response::Status(s) => s,
            other => panic!("status answered {other:?}"),
        }
    }

    /// Graceful stop; returns the state directory for a restart or a look inside.
    async fn stop(mut self) -> tempfile::TempDir {
        self.stop.take().unwrap().send(()).unwrap();
        self.daemon.await.unwrap().unwrap();
        self.dir
    }
}

async fn settle() {
    // Paused time: this returns once every task is idle (the clock moves by 1 ms).
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn pages_survive_a_flapping_broker_and_the_outbox_empties_once_acked() {
    let rig = Rig::start(None, 1024);
    rig.broker.acking.store(false, Ordering::SeqCst);
    rig.link(LinkEvent::Connected).await;
    rig.press(17, 1).await;
    settle().await;
    assert_eq!(rig.broker.pages("li"), ["new 17-1"]);
    // Five drops and returns with nothing acked: the page goes again after each.
    for _ in 0..5 {
        rig.link(LinkEvent::Disconnected("test".into())).await;
        rig.broker.up.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig.broker.up.store(true, Ordering::SeqCst);
        rig.link(LinkEvent::Connected).await;
        settle().await;
    }
    assert_eq!(
        rig.broker.pages("li").len(),
        6,
        "{:?}",
        rig.broker.pages("li")
    );
    rig.broker.acking.store(true, Ordering::SeqCst);
    rig.link(LinkEvent::Connected).await;
    settle().await;
    assert_eq!(
        rig.status().await.outbox_len,
        Some(0),
        "acked rows leave the outbox"
    );
    let dir = rig.stop().await;
    assert_eq!(Store::open(dir.path()).unwrap().outbox_len().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_fails_then_recovers_holds_pages_and_saves_them_later() {
    let rig = Rig::start(None, 1024);
    rig.full.store(true, Ordering::SeqCst);
    // The broker is away too: pages must wait in memory for it.
    rig.press(17, 1).await;
    settle().await;
    assert!(rig.broker.pages("li").is_empty());
    let st = rig.status().await;
    assert!(!st.store_ok, "a failing store shows in status");
    rig.link(LinkEvent::Connected).await;
    settle().await;
    assert_eq!(
        rig.broker.pages("li"),
        ["new 17-1"],
        "held page sent when the broker returns"
    );
    // Reminders keep going while the disk is full.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(rig.broker.pages("li"), ["new 17-1", "reminder 17-1"]);
    // Space freed: within the retry back-off the state is on disk, no restart needed.
    rig.full.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(31)).await;
    let st = rig.status().await;
    assert!(st.store_ok, "{st:?}");
    // Proof on disk: the open alert is in the store (read by a fresh open, as after kill -9).
    let snapshot = Store::open(rig.dir.path()).unwrap().load().unwrap();
    assert_eq!(snapshot.alerts.len(), 1);
    assert_eq!(snapshot.alerts[0].id, "17-1");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_sos_overtakes_a_full_telemetry_lane() {
    let rig = Rig::start(None, 1024);
    rig.link(LinkEvent::Connected).await;
    settle().await;
    // The lane is filled before the loop gets a turn; the SOS comes last.
    for seq in 1..=4000 {
        assert!(rig.adverts.send(heartbeat(18, seq)));
    }
    rig.press(17, 1).await;
    settle().await;
    let got = rig.broker.got();
    let first_page = got
        .iter()
        .position(|g| g.topic.contains("/notify/"))
        .expect("the SOS was paged");
    let first_device_state = got
        .iter()
        .position(|g| g.topic.contains("/devices/18/"))
        .expect("heartbeats were handled");
    assert!(
        first_page < first_device_state,
        "the SOS went after telemetry: {:?}",
        &got[..first_page.min(5)]
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_phone_messages_starves_neither_escalation_nor_the_operator() {
    let rig = Rig::start(None, 200_000);
    rig.link(LinkEvent::Connected).await;
    rig.press(17, 1).await;
    settle().await;
    // 100,000 messages wait before the reminder is due (20 s after the page).
    for i in 0..100_000u32 {
        let payload = format!(r#"{{"alert_id": "99-{i}", "action": "ack"}}"#).into_bytes();
        let topic = "bandgate/test/ack/zhang".to_owned();
        rig.link
            .try_send(LinkEvent::Message {
                topic,
                payload,
                retain: false,
            })
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(21)).await;
    let status = rig.status();
    let st = tokio::time::timeout(Duration::from_secs(1), status)
        .await
        .expect("status answered during the flood");
    assert!(st.broker_connected);
    let waiting = rig.link.max_capacity() - rig.link.capacity();
    assert!(
        waiting > 90_000,
        "status waited for {} phone messages",
        100_000 - waiting
    );
    let reminder = rig
        .broker
        .got()
        .into_iter()
        .find(|g| g.topic.ends_with("/notify/li") && g.payload.contains("\"reminder\""))
        .expect("the reminder was paged");
    assert!(
        reminder.waiting > 90_000,
        "the reminder waited for {} phone messages",
        100_000 - reminder.waiting
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_an_unacked_outbox_keeps_it_for_the_next_start() {
    let rig = Rig::start(None, 1024);
    rig.broker.acking.store(false, Ordering::SeqCst);
    rig.link(LinkEvent::Connected).await;
    rig.press(17, 1).await;
    settle().await;
    assert_eq!(rig.broker.pages("li"), ["new 17-1"]);
    let broker = rig.broker.clone();
    let dir = rig.stop().await;
    let offline = broker
        .got()
        .into_iter()
        .any(|g| g.topic.ends_with("/status") && g.payload.contains("\"online\":false"));
    assert!(offline, "the offline status goes out before the goodbye");
    let waiting = Store::open(dir.path()).unwrap().outbox_len().unwrap();
    assert!(
        waiting >= 2,
        "the page and the alert document stay queued: {waiting}"
    );
    // The next start sends them first.
    let rig = Rig::start(Some(dir), 1024);
    rig.link(LinkEvent::Connected).await;
    settle().await;
    assert_eq!(rig.broker.pages("li"), ["new 17-1"]);
    assert_eq!(rig.status().await.outbox_len, Some(0));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn thousands_of_silent_states_go_out_in_batches_and_a_band_heard_meanwhile_keeps_its_fresh_state(
) {
    const BANDS: std::ops::RangeInclusive<u32> = 1000..=2999;
    let mut setup = setup();
    setup.supervision.silent_after = Duration::from_secs(60);
    let mut keys = keyring();
    for d in BANDS {
        keys.insert(d, key(d));
        let mut r = setup.residents[&17].clone();
        r.id = format!("r{d}");
        r.device_id = d;
        setup.residents.insert(d, r);
    }
    let rig = Rig::start_with(None, 8192, setup, keys);
    rig.link(LinkEvent::Connected).await;
    // Bands 17 and 18 keep talking; the 2,000 others are never heard.
    for seq in 1..=5 {
        assert!(rig.adverts.send(heartbeat(17, seq)));
        assert!(rig.adverts.send(heartbeat(18, seq)));
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    // When the first silent state goes out, band 2999 (the last to be rendered) presses SOS:
    // the alarm lane goes before the remaining batches, so its fresh state is made while its
    // silent one still waits.
    *rig.broker.inject.lock().unwrap() = Some(Injection {
        when: "\"silent\":true",
        lanes: rig.adverts.clone(),
        adverts: vec![advert(2999, 1, BandEvent::Sos)],
    });
    assert!(rig.adverts.send(heartbeat(17, 7)));
    assert!(rig.adverts.send(heartbeat(18, 7)));
    tokio::time::sleep(Duration::from_secs(15)).await;
    settle().await;
    let got = rig.broker.got();
    let states = |id: u32| -> Vec<String> {
        got.iter()
            .filter(|g| g.topic == format!("bandgate/test/devices/{id}/state"))
            .map(|g| g.payload.clone())
            .collect()
    };
    for id in BANDS.filter(|d| *d != 2999) {
        let s = states(id);
        assert!(
            s.last().is_some_and(|p| p.contains("\"silent\":true")),
            "band {id}: {s:?}"
        );
    }
    let last = states(2999);
    assert!(
        last.last().is_some_and(|p| !p.contains("\"silent\"")),
        "band 2999 was heard after it fell silent: its fresh state stands, {last:?}"
    );
    // The SOS, landed while the silent states were going out, was paged.
    let pages = rig.broker.pages("li");
    assert!(pages.iter().any(|p| p == "new 2999-1"), "{pages:?}");
    rig.stop().await;
}
