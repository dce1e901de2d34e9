//! Rendering and parsing against the contract's examples, byte for byte.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use expect_test::expect;
use jiff::Timestamp;

use super::*;
use crate::engine::{
    Claim, Closure, Escalation, Kind, Locale, NotifyReason, Now, Resident, Rota, Staff, State,
    Supervision, WearerCancel,
};

fn setup(locale: Locale) -> Setup {
    let staff = [("zhang", "张伟"), ("li", "李娜"), ("chen", "陈静")]
        .into_iter()
        .map(|(id, name)| {
            (
                id.to_owned(),
                Staff {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    phone: "13800000001".to_owned(),
                },
            )
        })
        .collect();
    let mut residents = BTreeMap::new();
    residents.insert(
        17,
        Resident {
            id: "r017".into(),
            name: "王秀英".into(),
            address: "广惠园社区 3号楼 2单元 401".into(),
            phone: "13800000000".into(),
            notes: "高血压, 独居".into(),
            device_id: 17,
            team: vec!["li".into()],
        },
    );
    Setup {
        gateway_id: "gw-guanghuiyuan-1".into(),
        locale,
        staff,
        residents,
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
            silent_after: Duration::from_secs(30 * 60),
            low_battery_pct: 20,
        },
        resolved_retention: Duration::from_secs(600),
        device_state_interval: Duration::from_secs(60),
        fallback: None,
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// zhang's claim.
fn claim() -> Claim {
    Claim {
        by: "zhang".into(),
        at: ts("2026-11-23T03:46:00Z"),
    }
}

/// The contract's example alert.
fn sos() -> Alert {
    let now = Now {
        mono: Instant::now(),
        wall: ts("2026-11-23T03:44:14.120Z"),
    };
    Alert {
        updated_at: ts("2026-11-23T03:45:14.121Z"),
        delivered_to: vec!["zhang".into()],
        ..Alert::new("17-42", Kind::Sos, now)
            .of_band(17, Some(80), Some(-67))
            .first_press(42, now)
            .paged_to(1, &["zhang", "li"])
    }
}

fn topics() -> Topics {
    Topics::for_site("guanghuiyuan")
}

fn render_one(output: &Output) -> Publish {
    render(output, &setup(Locale::ZhCn), &topics(), false)
}

#[test]
fn times_have_exactly_three_digits_of_milliseconds() {
    assert_eq!(
        format_time(ts("2026-11-23T03:44:14.120Z")),
        "2026-11-23T03:44:14.120Z"
    );
    assert_eq!(
        format_time(ts("2026-11-23T03:44:14Z")),
        "2026-11-23T03:44:14.000Z"
    );
    assert_eq!(
        format_time(ts("2026-11-23T03:44:14.999999999Z")),
        "2026-11-23T03:44:14.999Z"
    );
    assert_eq!(
        format_time(ts("2026-11-23T11:44:14.5+08:00")),
        "2026-11-23T03:44:14.500Z"
    );
}

#[test]
fn topics_follow_the_contract() {
    let t = Topics::new("bandgate/guanghuiyuan/");
    assert_eq!(t.alert("17-42"), "bandgate/guanghuiyuan/alerts/17-42");
    assert_eq!(t.notify("zhang"), "bandgate/guanghuiyuan/notify/zhang");
    assert_eq!(
        t.status("gw-1"),
        "bandgate/guanghuiyuan/gateways/gw-1/status"
    );
    assert_eq!(t.device_state(17), "bandgate/guanghuiyuan/devices/17/state");
    assert_eq!(t.ack_filter(), "bandgate/guanghuiyuan/ack/+");
    assert_eq!(
        t.ack_staff("bandgate/guanghuiyuan/ack/zhang"),
        Some("zhang")
    );
    assert_eq!(t.ack_staff("bandgate/guanghuiyuan/ack/"), None);
    assert_eq!(t.ack_staff("bandgate/guanghuiyuan/ack/a/b"), None);
    assert_eq!(t.ack_staff("bandgate/guanghuiyuanx/ack/zhang"), None);
    assert_eq!(t.ack_staff("bandgate/other/ack/zhang"), None);
}

#[test]
fn alert_document_is_the_contracts_example() {
    let p = render_one(&Output::AlertChanged(Box::new(sos())));
    assert_eq!(p.topic, "bandgate/guanghuiyuan/alerts/17-42");
    assert_eq!((p.qos, p.retain), (1, true));
    expect![[r#"{"alert_id":"17-42","kind":"sos","state":"open","cancel_requested":false,"tier":1,"resident":{"id":"r017","name":"王秀英","address":"广惠园社区 3号楼 2单元 401","phone":"13800000000","notes":"高血压, 独居"},"device_id":17,"gateway_id":"gw-guanghuiyuan-1","raised_at":"2026-11-23T03:44:14.120Z","updated_at":"2026-11-23T03:45:14.121Z","notified":["zhang","li"],"delivered_to":["zhang"],"acked_by":null,"acked_at":null,"on_scene_at":null,"resolved_by":null,"resolved_at":null,"resolution":null,"battery_pct":80,"rssi":-67,"contacts":[],"text":"【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键","names":{"li":"李娜","zhang":"张伟"}}"#]]
    .assert_eq(p.payload_str());

    // Same values as the contract's pretty-printed example, plus the console's extension: the
    // names of the people it names by id.
    let mut ours: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    let names = ours.as_object_mut().unwrap().remove("names").unwrap();
    assert_eq!(names, serde_json::json!({"zhang": "张伟", "li": "李娜"}));
    let contract: serde_json::Value = serde_json::from_str(
        r#"{
      "alert_id": "17-42", "kind": "sos", "state": "open", "cancel_requested": false, "tier": 1,
      "resident": {"id": "r017", "name": "王秀英", "address": "广惠园社区 3号楼 2单元 401", "phone": "13800000000", "notes": "高血压, 独居"},
      "device_id": 17, "gateway_id": "gw-guanghuiyuan-1",
      "raised_at": "2026-11-23T03:44:14.120Z", "updated_at": "2026-11-23T03:45:14.121Z",
      "notified": ["zhang", "li"], "delivered_to": ["zhang"],
      "acked_by": null, "acked_at": null, "on_scene_at": null,
      "resolved_by": null, "resolved_at": null, "resolution": null,
      "battery_pct": 80, "rssi": -67,
      "contacts": [],
      "text": "【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键"
    }"#,
    )
    .unwrap();
    assert_eq!(ours, contract);
}

#[test]
fn resolved_alert_fills_every_field() {
    let mut a = sos();
    a.state = State::Resolved {
        clear_at: Instant::now(),
        closure: Closure {
            by: "zhang".into(),
            at: ts("2026-11-23T04:00:00.5Z"),
            resolution: Resolution::FalseAlarm,
        },
        claim: Some(claim()),
        on_scene_at: Some(ts("2026-11-23T03:50:00.007Z")),
    };
    let p = render_one(&Output::AlertChanged(Box::new(a)));
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(v["state"], "resolved");
    assert_eq!(v["acked_by"], "zhang");
    assert_eq!(v["acked_at"], "2026-11-23T03:46:00.000Z");
    assert_eq!(v["on_scene_at"], "2026-11-23T03:50:00.007Z");
    assert_eq!(v["resolved_by"], "zhang");
    assert_eq!(v["resolved_at"], "2026-11-23T04:00:00.500Z");
    assert_eq!(v["resolution"], "false_alarm");
    assert_eq!(
        v["text"],
        "【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键，已处理（误报）"
    );
}

#[test]
fn test_alert_has_no_resident_and_no_device() {
    let mut a = sos();
    a.id = "test-3".into();
    a.kind = Kind::Test;
    a.device_id = None;
    a.battery_pct = None;
    a.rssi = None;
    let p = render_one(&Output::AlertChanged(Box::new(a)));
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    assert!(v["resident"].is_null());
    assert!(v["device_id"].is_null());
    assert!(v["battery_pct"].is_null());
    assert_eq!(v["text"], "【测试】这是一条测试报警，请点确认");
    assert_eq!(p.topic, "bandgate/guanghuiyuan/alerts/test-3");
}

#[test]
fn a_degraded_gateway_says_so_in_its_status() {
    let healthy = GatewayStatus {
        gateway_id: "gw-1".into(),
        started_at: ts("2026-11-23T03:00:00Z"),
        adapter: "hci0".into(),
        adapter_ok: true,
        scan: "",
        devices_enrolled: 1,
        devices_heard_15m: 1,
        open_alerts: 0,
        outbox_len: 0,
        frames_accepted: 0,
        telemetry_dropped: 0,
        degraded: false,
        modem: None,
        on_duty: Vec::new(),
    };
    let state = |s: &GatewayStatus| {
        let v: serde_json::Value = serde_json::from_slice(&status(&topics(), s).payload).unwrap();
        v["state"].clone()
    };
    assert_eq!(state(&healthy), "ok");
    let degraded = GatewayStatus {
        degraded: true,
        ..healthy
    };
    assert_eq!(state(&degraded), "degraded");
}

#[test]
fn gateway_fault_has_no_resident_and_says_what_to_check() {
    let mut a = sos();
    a.id = "gateway-gw-guanghuiyuan-1-fault-2".into();
    a.kind = Kind::GatewayFault;
    a.device_id = None;
    a.battery_pct = None;
    a.rssi = None;
    a.detail = Some("the state database was moved aside".into());
    let p = render_one(&Output::AlertChanged(Box::new(a.clone())));
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(v["kind"], "gateway_fault");
    assert_eq!(v["alert_id"], "gateway-gw-guanghuiyuan-1-fault-2");
    assert!(v["resident"].is_null(), "{v}");
    assert!(v["device_id"].is_null());
    expect![[r#"【网关故障】网关 gw-guanghuiyuan-1 的报警记录已丢失或无法保存，未处理的报警可能已丢失：请电话确认各位老人是否安好，并检查网关的存储（state_dir 所在磁盘）和日志（journalctl -u bandgate）。详情：the state database was moved aside"#]]
    .assert_eq(v["text"].as_str().unwrap());
    let en = render(
        &Output::AlertChanged(Box::new(a)),
        &setup(Locale::En),
        &topics(),
        false,
    );
    let v: serde_json::Value = serde_json::from_slice(&en.payload).unwrap();
    expect![[r#"[Gateway fault] gateway gw-guanghuiyuan-1 lost its alert records or cannot keep them, so open alerts may have been lost: check on the residents by phone, and check the gateway's storage (the disk of state_dir) and its log (journalctl -u bandgate). Detail: the state database was moved aside"#]]
    .assert_eq(v["text"].as_str().unwrap());
}

#[test]
fn notification_wraps_the_document_with_a_reason() {
    let out = Output::Notify {
        staff_id: "li".into(),
        reason: NotifyReason::Escalated,
        alert: Box::new(sos()),
    };
    let p = render_one(&out);
    assert_eq!(p.topic, "bandgate/guanghuiyuan/notify/li");
    assert_eq!((p.qos, p.retain), (1, false));
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(v["reason"], "escalated");
    let doc: serde_json::Value =
        serde_json::from_slice(&alert_document(&sos(), &setup(Locale::ZhCn))).unwrap();
    assert_eq!(v["alert"], doc);
    assert!(p
        .payload_str()
        .starts_with(r#"{"reason":"escalated","alert":{"alert_id":"17-42""#));
    for (r, s) in [
        (NotifyReason::New, "new"),
        (NotifyReason::Reminder, "reminder"),
        (NotifyReason::Acknowledged, "acknowledged"),
        (NotifyReason::ClaimLapsed, "claim_lapsed"),
        (NotifyReason::CancelRequested, "cancel_requested"),
        (NotifyReason::Resolved, "resolved"),
    ] {
        let p = render_one(&Output::Notify {
            staff_id: "zhang".into(),
            reason: r,
            alert: Box::new(sos()),
        });
        let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(v["reason"], s);
    }
}

#[test]
fn cleared_alert_is_an_empty_retained_payload() {
    let p = render_one(&Output::AlertCleared {
        alert_id: "17-42".into(),
    });
    assert_eq!(
        p,
        Publish {
            topic: "bandgate/guanghuiyuan/alerts/17-42".into(),
            payload: vec![],
            qos: 1,
            retain: true,
        }
    );
}

fn device(id: u32) -> DeviceState {
    DeviceState {
        device_id: id,
        last_seen: ts("2026-11-23T03:44:14.12Z"),
        rssi: Some(-67),
        battery_pct: 80,
        worn: true,
        heart_rate: Some(72),
        spo2: None,
        steps: Some(1234),
    }
}

#[test]
fn device_state_hides_vitals_unless_allowed() {
    let s = setup(Locale::ZhCn);
    let p = render(&Output::DeviceState(device(17)), &s, &topics(), false);
    assert_eq!(p.topic, "bandgate/guanghuiyuan/devices/17/state");
    assert_eq!((p.qos, p.retain), (0, true));
    expect![[r#"{"device_id":17,"resident_id":"r017","last_seen":"2026-11-23T03:44:14.120Z","gateway_id":"gw-guanghuiyuan-1","rssi":-67,"battery_pct":80,"worn":true}"#]]
    .assert_eq(p.payload_str());

    let p = render(&Output::DeviceState(device(17)), &s, &topics(), true);
    expect![[r#"{"device_id":17,"resident_id":"r017","last_seen":"2026-11-23T03:44:14.120Z","gateway_id":"gw-guanghuiyuan-1","rssi":-67,"battery_pct":80,"worn":true,"heart_rate":72,"spo2":null,"steps":1234}"#]]
    .assert_eq(p.payload_str());

    // A silent band: what was last known, `silent`; never heard: nulls.
    let silent = |last_seen: Option<&str>| {
        let d = SilentDevice {
            device_id: 17,
            last_seen: last_seen.map(ts),
            battery_pct: last_seen.map(|_| 55),
            worn: last_seen.map(|_| true),
        };
        render(&Output::DeviceSilent(d), &s, &topics(), true)
    };
    let p = silent(Some("2026-11-23T03:44:14.12Z"));
    assert_eq!(p.topic, "bandgate/guanghuiyuan/devices/17/state");
    assert_eq!((p.qos, p.retain), (0, true));
    expect![[r#"{"device_id":17,"resident_id":"r017","last_seen":"2026-11-23T03:44:14.120Z","gateway_id":"gw-guanghuiyuan-1","rssi":null,"battery_pct":55,"worn":true,"silent":true}"#]].assert_eq(p.payload_str());
    expect![[r#"{"device_id":17,"resident_id":"r017","last_seen":null,"gateway_id":"gw-guanghuiyuan-1","rssi":null,"battery_pct":null,"worn":null,"silent":true}"#]].assert_eq(silent(None).payload_str());

    // A band nobody wears yet.
    let p = render(&Output::DeviceState(device(99)), &s, &topics(), false);
    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
    assert!(v["resident_id"].is_null());
}

#[test]
fn status_and_last_will() {
    let t = topics();
    let p = status(
        &t,
        &GatewayStatus {
            gateway_id: "gw-guanghuiyuan-1".into(),
            started_at: ts("2026-11-23T03:00:00Z"),
            adapter: "hci0".into(),
            adapter_ok: true,
            scan: "passive",
            devices_enrolled: 30,
            devices_heard_15m: 28,
            open_alerts: 0,
            outbox_len: 0,
            frames_accepted: 1200,
            telemetry_dropped: 3,
            degraded: false,
            modem: Some(crate::adapters::modem::ModemHealth {
                present: true,
                sim_ready: Some(true),
                registered: Some(true),
                signal_pct: Some(71),
            }),
            on_duty: vec![crate::engine::OnDuty {
                staff_id: "zhang".into(),
                name: "张伟".into(),
                console: Some(true),
            }],
        },
    );
    assert_eq!(
        p.topic,
        "bandgate/guanghuiyuan/gateways/gw-guanghuiyuan-1/status"
    );
    assert_eq!((p.qos, p.retain), (1, true));
    assert_eq!(
        p.payload_str(),
        format!(
            r#"{{"online":true,"gateway_id":"gw-guanghuiyuan-1","version":"{}","started_at":"2026-11-23T03:00:00.000Z","adapter":"hci0","adapter_ok":true,"scan":"passive","devices_enrolled":30,"devices_heard_15m":28,"open_alerts":0,"outbox_len":0,"frames_accepted":1200,"telemetry_dropped":3,"modem":{{"present":true,"sim_ready":true,"registered":true,"signal_pct":71}},"on_duty":[{{"staff_id":"zhang","name":"张伟","console":true}}],"state":"ok"}}"#,
            env!("CARGO_PKG_VERSION")
        )
    );
    let w = last_will(&t, "gw-guanghuiyuan-1");
    assert_eq!(w.topic, p.topic);
    assert_eq!((w.qos, w.retain), (1, true));
    expect![[r#"{"online":false,"gateway_id":"gw-guanghuiyuan-1"}"#]].assert_eq(w.payload_str());
}

fn texts(locale: Locale) -> Vec<String> {
    let s = setup(locale);
    let mut out = Vec::new();
    let mut a = sos();
    out.push(text::summary(&a, &s));
    a.kind = Kind::Fall;
    out.push(text::summary(&a, &s));
    a.kind = Kind::NoMotion;
    out.push(text::summary(&a, &s));
    a.kind = Kind::DeviceSilent;
    out.push(text::summary(&a, &s));
    a.kind = Kind::LowBattery;
    a.battery_pct = Some(15);
    out.push(text::summary(&a, &s));
    a.kind = Kind::Sos;
    a.cancel_requested = true;
    out.push(text::summary(&a, &s));
    a.cancel_requested = false;
    a.state = State::Acknowledged {
        lapse_at: Instant::now(),
        claim: claim(),
    };
    out.push(text::summary(&a, &s));
    a.state = State::OnScene {
        remind_at: Instant::now(),
        claim: claim(),
        since: ts("2026-11-23T03:50:00.007Z"),
    };
    out.push(text::summary(&a, &s));
    a.state = State::Resolved {
        clear_at: Instant::now(),
        closure: Closure {
            by: "zhang".into(),
            at: ts("2026-11-23T04:00:00.5Z"),
            resolution: Resolution::RealEmergency,
        },
        claim: Some(claim()),
        on_scene_at: None,
    };
    out.push(text::summary(&a, &s));
    let mut t = sos();
    t.kind = Kind::Test;
    t.device_id = None;
    out.push(text::summary(&t, &s));
    let mut u = sos();
    u.device_id = Some(99);
    out.push(text::summary(&u, &s));
    let mut f = sos();
    f.presses.count = 812;
    f.presses.fault_suspected = true;
    out.push(text::summary(&f, &s));
    out.push(text::summary(&notice(), &s));
    out
}

/// The gateway notice of many silent bands, naming band 17 (a resident) and 99 (none).
fn notice() -> Alert {
    let mut n = sos();
    n.id = "gateway-gw-guanghuiyuan-1-silent-1".into();
    n.kind = Kind::DeviceSilent;
    n.device_id = None;
    n.seqs = vec![];
    n.presses = crate::engine::Presses::default();
    n.grouping = crate::engine::Grouping::Notice(crate::engine::SilentBands {
        count: 2000,
        still_silent: 1990,
        named: vec![17, 99],
    });
    n
}

#[test]
fn storm_keys_appear_only_when_they_say_something() {
    let doc = |a: &Alert| -> serde_json::Value {
        serde_json::from_slice(&alert_document(a, &setup(Locale::ZhCn))).unwrap()
    };
    let one = doc(&sos());
    for key in [
        "presses",
        "last_press_at",
        "device_fault_suspected",
        "silent_bands",
    ] {
        assert!(one.get(key).is_none(), "{key} in {one}");
    }
    let mut a = sos();
    a.presses.count = 812;
    a.presses.last_at = Some(ts("2026-11-23T03:45:10.5Z"));
    a.presses.fault_suspected = true;
    let stuck = doc(&a);
    assert_eq!(stuck["presses"], 812);
    assert_eq!(stuck["last_press_at"], "2026-11-23T03:45:10.500Z");
    assert_eq!(stuck["device_fault_suspected"], true);
    let n = doc(&notice());
    assert_eq!(
        n["silent_bands"],
        serde_json::json!({"count": 2000, "still_silent": 1990, "named": [17, 99]})
    );
    assert_eq!(n["resident"], serde_json::Value::Null);
    assert_eq!(n["device_id"], serde_json::Value::Null);
    assert!(n.get("presses").is_none());
}

#[test]
fn text_in_chinese() {
    expect![[r#"
        【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键
        【跌倒报警】王秀英（广惠园社区 3号楼 2单元 401）检测到跌倒
        【长时间未动】王秀英（广惠园社区 3号楼 2单元 401）长时间未活动
        【手环失联】王秀英（广惠园社区 3号楼 2单元 401）的手环已 30 分钟未收到信号
        【电量低】王秀英（广惠园社区 3号楼 2单元 401）手环电量 15%
        【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键，老人已取消，请电话确认
        【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键，张伟已确认前往
        【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键，张伟已到场
        【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键，已处理（真实紧急情况）
        【测试】这是一条测试报警，请点确认
        【紧急求救】99号手环按下求救键
        【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键（812 次按键，手环疑似故障）
        【大量手环失联】2000 个手环已 30 分钟未收到信号（王秀英、99号手环等），请检查网关的无线电或蓝牙适配器"#]]
    .assert_eq(&texts(Locale::ZhCn).join("\n"));
}

#[test]
fn text_in_english() {
    expect![[r#"
        [SOS] 王秀英 (广惠园社区 3号楼 2单元 401) pressed the SOS button
        [Fall] 王秀英 (广惠园社区 3号楼 2单元 401): fall detected
        [No motion] 王秀英 (广惠园社区 3号楼 2单元 401) has not moved for a long time
        [Band silent] no signal from the band of 王秀英 (广惠园社区 3号楼 2单元 401) for 30 min
        [Low battery] band of 王秀英 (广惠园社区 3号楼 2单元 401) at 15%
        [SOS] 王秀英 (广惠园社区 3号楼 2单元 401) pressed the SOS button, cancelled by the wearer: please verify by phone
        [SOS] 王秀英 (广惠园社区 3号楼 2单元 401) pressed the SOS button, 张伟 is on the way
        [SOS] 王秀英 (广惠园社区 3号楼 2单元 401) pressed the SOS button, 张伟 is on scene
        [SOS] 王秀英 (广惠园社区 3号楼 2单元 401) pressed the SOS button, resolved (real emergency)
        [Test] This is a test alert, please acknowledge
        [SOS] band 99 pressed the SOS button
        [SOS] 王秀英 (广惠园社区 3号楼 2单元 401) pressed the SOS button (812 presses: probable device fault)
        [Bands silent] 2000 bands silent for 30 min — radio or adapter? (王秀英, band 99, …)"#]]
    .assert_eq(&texts(Locale::En).join("\n"));
}

const ACK: &str = "bandgate/guanghuiyuan/ack/zhang";

fn parse(payload: &str) -> Result<PhoneAck, AckError> {
    parse_ack(&topics(), ACK, payload.as_bytes())
}

#[test]
fn acks_parse() {
    assert_eq!(
        parse(r#"{"alert_id": "17-42", "action": "ack"}"#).unwrap(),
        PhoneAck {
            staff_id: "zhang".into(),
            alert_id: "17-42".into(),
            action: Action::Ack,
            note: None,
        }
    );
    for (action, want) in [
        ("delivered", Action::Delivered),
        ("decline", Action::Decline),
        ("on_scene", Action::OnScene),
    ] {
        let a = parse(&format!(r#"{{"alert_id":"1-2","action":"{action}"}}"#)).unwrap();
        assert_eq!(a.action, want);
    }
    for r in Resolution::ALL {
        let a = parse(&format!(
            r#"{{"alert_id":"1-2","action":"resolve","resolution":"{}","note":"家属到了","app":"x"}}"#,
            r.as_str()
        ))
        .unwrap();
        assert_eq!(a.action, Action::Resolve(r));
        assert_eq!(a.note.as_deref(), Some("家属到了"));
    }
}

#[test]
fn bad_acks_are_refused_with_a_reason() {
    let cases: [(&str, &str); 10] = [
        ("not json", "malformed_json"),
        ("[1,2]", "malformed_json"),
        (r#"{"alert_id": 17, "action": "ack"}"#, "malformed_json"),
        (r#"{"action": "ack"}"#, "missing_alert_id"),
        (r#"{"alert_id": "", "action": "ack"}"#, "missing_alert_id"),
        (r#"{"alert_id": "17-42"}"#, "missing_action"),
        (
            r#"{"alert_id": "17-42", "action": "fly"}"#,
            "unknown_action",
        ),
        (
            r#"{"alert_id": "17-42", "action": "resolve"}"#,
            "missing_resolution",
        ),
        (
            r#"{"alert_id": "17-42", "action": "resolve", "resolution": "meh"}"#,
            "unknown_resolution",
        ),
        ("", "malformed_json"),
    ];
    for (payload, reason) in cases {
        let err = parse(payload).unwrap_err();
        assert_eq!(err.as_str(), reason, "{payload:?}: {err}");
    }
    let err = parse_ack(&topics(), "bandgate/guanghuiyuan/notify/zhang", b"{}").unwrap_err();
    assert_eq!(err.as_str(), "wrong_topic");
    let err = parse_ack(&topics(), ACK, &[0xff, 0xfe]).unwrap_err();
    assert_eq!(err.as_str(), "malformed_json");
}

#[test]
fn oversized_acks_are_refused_unread() {
    let mut big = br#"{"alert_id":"17-42","action":"ack","pad":""#.to_vec();
    big.resize(MAX_ACK_PAYLOAD + 1, b' ');
    assert_eq!(
        parse_ack(&topics(), ACK, &big),
        Err(AckError::TooLarge(MAX_ACK_PAYLOAD + 1))
    );
    // Garbage past the limit is still "too large", not "malformed": it was never read.
    assert_eq!(
        parse_ack(&topics(), ACK, &vec![0u8; 1 << 20])
            .unwrap_err()
            .as_str(),
        "too_large"
    );
    let mut ok = br#"{"alert_id":"17-42","action":"ack","pad":""#.to_vec();
    ok.resize(MAX_ACK_PAYLOAD - 2, b'x');
    ok.extend_from_slice(b"\"}");
    assert!(parse_ack(&topics(), ACK, &ok).is_ok());
}
