//! The MQTT adapter against a real Mosquitto: what phones see, what they send, and a broker
//! that goes away and comes back.

use std::future::Future;
use std::time::Duration;

use bandgate::adapters::mqtt::{
    self, connect, parse_ack, render, LinkEvent, MqttLink, MqttSettings, Publish, Topics,
};
use bandgate::engine::{Action, Alert, Kind, NotifyReason, Now, Output, Setup};
use tokio::sync::mpsc;

use crate::harness::{sim, Broker, Phone};

const WAIT: Duration = Duration::from_secs(20);

fn topics() -> Topics {
    Topics::for_site("it")
}

/// The engine tests' community, as gateway gw-it.
fn setup() -> Setup {
    Setup {
        gateway_id: "gw-it".into(),
        ..sim::setup()
    }
}

fn alert() -> Alert {
    let now = Now {
        mono: std::time::Instant::now(),
        wall: "2026-11-23T03:44:14.120Z".parse().unwrap(),
    };
    Alert {
        updated_at: "2026-11-23T03:45:14.121Z".parse().unwrap(),
        ..Alert::new("17-42", Kind::Sos, now)
            .of_band(17, Some(80), Some(-67))
            .first_press(42, now)
            .paged_to(1, &["zhang"])
    }
}

fn settings(broker: &Broker, client_id: &str) -> MqttSettings {
    MqttSettings {
        broker: bandgate::config::parse_broker_url(&broker.url()).unwrap(),
        client_id: client_id.into(),
        username: None,
        password: None,
        ca_file: None,
        keep_alive: Duration::from_secs(5),
        last_will: mqtt::last_will(&topics(), "gw-it"),
    }
}

/// Waits for the first event `pick` accepts, skipping others; fails after `WAIT`.
async fn next<T>(
    rx: &mut mpsc::Receiver<LinkEvent>,
    mut pick: impl FnMut(LinkEvent) -> Option<T>,
) -> T {
    within(async {
        loop {
            let ev = rx.recv().await.expect("link task ended");
            if let Some(t) = pick(ev) {
                return t;
            }
        }
    })
    .await
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

async fn start_link(broker: &Broker, id: &str) -> (MqttLink, mpsc::Receiver<LinkEvent>) {
    let (link, mut rx) = connect(settings(broker, id), vec![topics().ack_filter()]).unwrap();
    next(&mut rx, |e| (e == LinkEvent::Connected).then_some(())).await;
    (link, rx)
}

/// Publishes and waits for the broker's acknowledgement.
async fn publish_acked(link: &MqttLink, rx: &mut mpsc::Receiver<LinkEvent>, id: u64, p: &Publish) {
    assert!(link.publish(id, p), "publish {id} refused");
    next(rx, |e| (e == LinkEvent::PubAcked(id)).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_see_the_exact_documents_and_retained_copies_are_cleared() {
    let broker = Broker::start();
    let (link, mut rx) = start_link(&broker, "gw-it-render").await;
    let s = setup();
    let t = topics();
    let mut phone = Phone::connect_to(broker.port(), "phone-zhang", &[t.notify("zhang")]);

    let changed = render(&Output::AlertChanged(Box::new(alert())), &s, &t, false);
    let notify = render(
        &Output::Notify {
            staff_id: "zhang".into(),
            reason: NotifyReason::New,
            alert: Box::new(alert()),
        },
        &s,
        &t,
        false,
    );
    let device = render(
        &Output::DeviceState(bandgate::engine::DeviceState {
            device_id: 17,
            last_seen: "2026-11-23T03:44:14Z".parse().unwrap(),
            rssi: Some(-60),
            battery_pct: 77,
            worn: true,
            heart_rate: Some(70),
            spo2: Some(98),
            steps: None,
        }),
        &s,
        &t,
        false,
    );
    publish_acked(&link, &mut rx, 1, &changed).await;
    publish_acked(&link, &mut rx, 2, &notify).await;
    // QoS 0 has no PUBACK: it counts as acked once written.
    publish_acked(&link, &mut rx, 3, &device).await;

    let got = phone.recv();
    assert_eq!(got.topic, "bandgate/it/notify/zhang");
    assert!(!got.retain);
    assert_eq!(&got.payload[..], &notify.payload[..]);
    let doc: serde_json::Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(doc["reason"], "new");
    assert_eq!(
        doc["alert"]["text"],
        "【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键"
    );

    // A dashboard arriving later gets the retained copies, byte for byte.
    let mut late = Phone::connect_to(broker.port(), "dashboard-1", &[t.alert("+")]);
    let got = late.recv();
    assert_eq!(got.topic, "bandgate/it/alerts/17-42");
    assert!(got.retain);
    assert_eq!(&got.payload[..], &changed.payload[..]);
    let mut late = Phone::connect_to(broker.port(), "dashboard-2", &[t.device_state(17)]);
    let got = late.recv();
    assert!(got.retain);
    assert_eq!(
        std::str::from_utf8(&got.payload).unwrap(),
        r#"{"device_id":17,"resident_id":"r017","last_seen":"2026-11-23T03:44:14.000Z","gateway_id":"gw-it","rssi":-60,"battery_pct":77,"worn":true}"#
    );

    // Clearing: the empty retained payload removes the copy. A sentinel retained message,
    // subscribed after the alerts, proves nothing retained came before it.
    let cleared = render(
        &Output::AlertCleared {
            alert_id: "17-42".into(),
        },
        &s,
        &t,
        false,
    );
    publish_acked(&link, &mut rx, 4, &cleared).await;
    let sentinel = Publish {
        topic: "bandgate/it/sentinel".into(),
        payload: b"x".to_vec(),
        qos: 1,
        retain: true,
    };
    publish_acked(&link, &mut rx, 5, &sentinel).await;
    let mut late = Phone::connect_to(
        broker.port(),
        "dashboard-3",
        &[t.alert("+"), "bandgate/it/sentinel".into()],
    );
    let got = late.recv();
    assert_eq!(
        got.topic, "bandgate/it/sentinel",
        "the alert is still retained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_acks_arrive_and_parse() {
    let broker = Broker::start();
    let (_link, mut rx) = start_link(&broker, "gw-it-acks").await;
    let phone = Phone::connect_to(broker.port(), "zhang", &[]);
    phone.publish(
        &topics().ack("zhang"),
        r#"{"alert_id":"17-42","action":"resolve","resolution":"false_alarm","note":"误按"}"#,
    );
    let (topic, payload) = next(&mut rx, |e| match e {
        LinkEvent::Message { topic, payload, .. } => Some((topic, payload)),
        _ => None,
    })
    .await;
    assert_eq!(topic, "bandgate/it/ack/zhang");
    let ack = parse_ack(&topics(), &topic, &payload).unwrap();
    assert_eq!(ack.staff_id, "zhang");
    assert_eq!(ack.alert_id, "17-42");
    assert_eq!(
        ack.action,
        Action::Resolve(bandgate::engine::Resolution::FalseAlarm)
    );
    assert_eq!(ack.note.as_deref(), Some("误按"));
}

async fn next_message(rx: &mut mpsc::Receiver<LinkEvent>) -> (String, Vec<u8>) {
    next(rx, |e| match e {
        LinkEvent::Message { topic, payload, .. } => Some((topic, payload)),
        LinkEvent::Disconnected(why) => panic!("link dropped: {why}"),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_comes_back_by_itself_after_the_broker_restarts() {
    let mut broker = Broker::start();
    let (link, mut rx) = start_link(&broker, "gw-it-restart").await;
    let changed = render(
        &Output::AlertChanged(Box::new(alert())),
        &setup(),
        &topics(),
        false,
    );
    publish_acked(&link, &mut rx, 1, &changed).await;

    broker.stop();
    next(&mut rx, |e| {
        matches!(e, LinkEvent::Disconnected(_)).then_some(())
    })
    .await;
    assert!(!link.is_connected());
    assert!(
        !link.publish(2, &changed),
        "publish must say no while disconnected"
    );
    // Let a few reconnect attempts fail.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restart();

    next(&mut rx, |e| (e == LinkEvent::Connected).then_some(())).await;
    // The caller re-publishes what was not acked; it gets acked on the new connection.
    publish_acked(&link, &mut rx, 2, &changed).await;
    // The broker lost its sessions (no persistence here): the subscription was made again.
    let phone = Phone::connect_to(broker.port(), "zhang", &[]);
    phone.publish(
        &topics().ack("zhang"),
        r#"{"alert_id":"17-42","action":"ack"}"#,
    );
    let (topic, payload) = next_message(&mut rx).await;
    assert_eq!(
        parse_ack(&topics(), &topic, &payload).unwrap().action,
        Action::Ack
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_ack_does_not_kill_the_link() {
    let broker = Broker::start();
    let (link, mut rx) = start_link(&broker, "gw-it-big").await;
    let phone = Phone::connect_to(broker.port(), "zhang", &[]);

    phone.publish(&topics().ack("zhang"), vec![b'{'; 1 << 20]);
    let (topic, payload) = next_message(&mut rx).await;
    assert_eq!(
        parse_ack(&topics(), &topic, &payload).unwrap_err().as_str(),
        "too_large"
    );
    phone.publish(
        &topics().ack("zhang"),
        r#"{"alert_id":"17-42","action":"ack"}"#,
    );
    let (topic, payload) = next_message(&mut rx).await;
    assert_eq!(
        parse_ack(&topics(), &topic, &payload).unwrap().alert_id,
        "17-42"
    );
    assert!(link.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_over_the_limit_is_dropped_and_the_link_recovers() {
    let broker = Broker::start();
    let (link, mut rx) = start_link(&broker, "gw-it-huge").await;
    let phone = Phone::connect_to(broker.port(), "zhang", &[]);

    // Too big to read: the broker would re-deliver it on every reconnect of the persistent
    // session; the link drops the session once and carries on.
    phone.publish(
        &topics().ack("zhang"),
        vec![b' '; mqtt::MAX_INCOMING_PACKET + 1024],
    );
    next(&mut rx, |e| {
        matches!(e, LinkEvent::Disconnected(_)).then_some(())
    })
    .await;
    next(&mut rx, |e| (e == LinkEvent::Connected).then_some(())).await;
    // In its careful mode the link says Connected at CONNACK (pages go out at once) and makes
    // its subscriptions one by one after: an ack published before they are in place has no
    // subscriber. The phone repeats it (acks are idempotent) until the link reads one.
    let (topic, payload) = within(async {
        loop {
            phone.publish(
                &topics().ack("zhang"),
                r#"{"alert_id":"17-42","action":"ack"}"#,
            );
            let got = tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    match rx.recv().await.expect("link task ended") {
                        LinkEvent::Message { topic, payload, .. } => return (topic, payload),
                        _ => continue,
                    }
                }
            })
            .await;
            if let Ok(m) = got {
                return m;
            }
        }
    })
    .await;
    assert_eq!(
        parse_ack(&topics(), &topic, &payload).unwrap().alert_id,
        "17-42"
    );
    // And it stays up: no second round of the poison message.
    let changed = render(
        &Output::AlertChanged(Box::new(alert())),
        &setup(),
        &topics(),
        false,
    );
    publish_acked(&link, &mut rx, 7, &changed).await;
    assert!(link.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_disconnect_ends_the_link_without_the_last_will() {
    let broker = Broker::start();
    let t = topics();
    let mut watcher = Phone::connect_to(
        broker.port(),
        "watcher",
        &[t.status("gw-it"), "bandgate/it/sentinel".into()],
    );
    let (link, mut rx) = start_link(&broker, "gw-it-bye").await;
    link.disconnect();
    next(&mut rx, |e| {
        matches!(e, LinkEvent::Disconnected(_)).then_some(())
    })
    .await;
    // The task ends: the event stream closes.
    within(async { while rx.recv().await.is_some() {} }).await;
    assert!(!link.publish(1, &mqtt::last_will(&t, "gw-it")));
    // Had the broker published the will, it would come before this sentinel.
    watcher.publish("bandgate/it/sentinel", "x");
    assert_eq!(watcher.recv().topic, "bandgate/it/sentinel");
}
