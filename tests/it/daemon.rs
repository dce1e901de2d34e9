//! Black-box tests of the built `bandgate` binary: a config file in a temp dir, a replay
//! capture, a real Mosquitto, and a test client acting as the duty phones (persistent session,
//! QoS 1) that checks the documents and notifications of `spec/mqtt-contract.md`.

use std::time::Duration;

use bandgate::engine::frame::BandEvent;
use serde_json::{json, Value};

use crate::harness::*;

const SOS_TEXT: &str = "【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键";

/// The fields every document of band 17's SOS carries, whatever its state.
fn assert_sos_doc(doc: &Value, site: &Site) {
    assert_eq!(doc["kind"], "sos", "{doc}");
    assert_eq!(doc["device_id"], 17);
    assert_eq!(doc["gateway_id"], format!("gw-{}", site.site_id));
    assert_eq!(
        doc["resident"],
        json!({"id": "r017", "name": "王秀英", "address": "广惠园社区 3号楼 2单元 401",
               "phone": "13800000000", "notes": "高血压, 独居"})
    );
    assert_eq!(doc["battery_pct"], 80);
    assert_eq!(doc["rssi"], -61);
    ms(&doc["raised_at"]);
    ms(&doc["updated_at"]);
    assert!(doc["text"].as_str().unwrap().starts_with(SOS_TEXT), "{doc}");
}

/// A client that only reads what is retained now: status first arrives after any retained
/// alert (Mosquitto answers subscriptions in order), so absence is known without sleeping.
fn retained_alerts(site: &Site, client_id: &str) -> Vec<Msg> {
    let p = site.prefix();
    let fresh = Phone::connect_to(
        site.broker_port,
        client_id,
        &[format!("{p}/alerts/#"), format!("{p}/gateways/#")],
    );
    let msgs = fresh.wait_until("the retained gateway status", |m| {
        m.iter().any(|m| m.topic.contains("/gateways/"))
    });
    msgs.into_iter()
        .filter(|m| m.topic.contains("/alerts/"))
        .collect()
}

#[test]
fn sos_pages_tier_1_escalates_ack_on_scene_resolve_then_retained_copy_cleared() {
    let broker = Broker::start();
    let cfg = SiteConfig {
        ack_timeouts: vec!["2s", "60s"],
        claim_timeout: "60s",
        ..SiteConfig::default()
    };
    let site = Site::new(
        "bb1",
        broker.port(),
        &cfg,
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bb1", &p);
    let gw = Gateway::start(&site, "gateway.log", &[]);

    // Tier 1: the on-duty person, reason new.
    let new = phone.wait_page(&p, "zhang", "new", "17-101");
    assert_sos_doc(&new, &site);
    assert_eq!(new["alert_id"], "17-101");
    assert_eq!(new["state"], "open");
    assert_eq!(new["cancel_requested"], false);
    assert_eq!(new["tier"], 1);
    assert_eq!(new["notified"], json!(["zhang"]));
    assert_eq!(new["delivered_to"], json!([]));
    for k in [
        "acked_by",
        "acked_at",
        "on_scene_at",
        "resolved_by",
        "resolved_at",
        "resolution",
    ] {
        assert_eq!(new[k], Value::Null, "{k}");
    }
    assert_eq!(new["text"], SOS_TEXT);
    assert_eq!(new["raised_at"], new["updated_at"]);
    // The alert document is retained: a phone that comes later still sees it.
    let retained = retained_alerts(&site, "late-phone-bb1");
    let first = retained
        .iter()
        .find(|m| m.topic == format!("{p}/alerts/17-101"));
    let first = first.expect("retained alert document");
    assert!(first.retain);
    assert_eq!(first.json()["alert_id"], "17-101");

    // No ack: tier 2 (tier-1 person + the resident's team), not before ack_timeouts[0].
    let mut tier2 = Vec::new();
    for who in ["zhang", "li", "wang"] {
        let doc = phone.wait_page(&p, who, "escalated", "17-101");
        assert_sos_doc(&doc, &site);
        assert_eq!(doc["tier"], 2);
        assert_eq!(doc["state"], "open");
        assert_eq!(doc["notified"], json!(["zhang", "li", "wang"]));
        tier2.push(doc);
    }
    assert!(
        tier2.windows(2).all(|w| w[0] == w[1]),
        "one page, one document"
    );
    let waited = ms(&tier2[0]["updated_at"]) - ms(&new["raised_at"]);
    assert!(
        waited >= 1_950,
        "tier 2 after {waited} ms, before the 2 s ack timeout"
    );
    // Tier 1 was reminded meanwhile (renotify_every 1 s), to zhang only.
    let before: Vec<_> = pages(&phone.messages(), &p, "17-101")
        .into_iter()
        .filter(|(_, r, _)| r == "reminder")
        .filter(|(_, _, d)| d["tier"] == 1)
        .collect();
    assert!(!before.is_empty(), "no tier-1 reminder");
    assert!(before.iter().all(|(s, _, _)| s == "zhang"));

    // li's phone: "I'm going".
    phone.act(&p, "li", json!({"alert_id": "17-101", "action": "ack"}));
    for who in ["zhang", "li", "wang"] {
        let doc = phone.wait_page(&p, who, "acknowledged", "17-101");
        assert_eq!(doc["state"], "acknowledged");
        assert_eq!(doc["acked_by"], "li");
        ms(&doc["acked_at"]);
        assert_eq!(doc["text"], format!("{SOS_TEXT}，李娜已确认前往"));
    }
    phone.act(
        &p,
        "li",
        json!({"alert_id": "17-101", "action": "on_scene"}),
    );
    let msgs = phone.wait_until("on_scene document", |m| {
        docs(m, &p, "17-101")
            .iter()
            .any(|d| d["state"] == "on_scene")
    });
    let on_scene = docs(&msgs, &p, "17-101")
        .into_iter()
        .find(|d| d["state"] == "on_scene")
        .unwrap();
    ms(&on_scene["on_scene_at"]);
    assert_eq!(on_scene["text"], format!("{SOS_TEXT}，李娜已到场"));

    phone.act(
        &p,
        "li",
        json!({"alert_id": "17-101", "action": "resolve", "resolution": "real_emergency", "note": "送医"}),
    );
    for who in ["zhang", "li", "wang"] {
        let doc = phone.wait_page(&p, who, "resolved", "17-101");
        assert_eq!(doc["state"], "resolved");
        assert_eq!(doc["resolution"], "real_emergency");
        assert_eq!(doc["resolved_by"], "li");
        assert_eq!(doc["acked_by"], "li");
        ms(&doc["resolved_at"]);
        assert_eq!(doc["text"], format!("{SOS_TEXT}，已处理（真实紧急情况）"));
    }

    // After resolved_retention the retained copy is cleared with an empty retained payload.
    let topic = format!("{p}/alerts/17-101");
    phone.wait_until("the empty payload clearing the alert", |m| {
        m.iter().any(|m| m.topic == topic && m.payload.is_empty())
    });
    let resolved_at = {
        let d = docs(&phone.messages(), &p, "17-101");
        ms(&d.last().unwrap()["resolved_at"])
    };
    // Not before resolved_retention (2 s): the clear is seen within a poll of its arrival.
    let cleared_after = jiff::Timestamp::now().as_millisecond() - resolved_at;
    assert!(
        cleared_after >= 1_950,
        "cleared {cleared_after} ms after the resolve, before the 2 s retention"
    );
    assert!(retained_alerts(&site, "later-phone-bb1").is_empty());
    // Nothing after the clear, and everything in order.
    let msgs = phone.messages();
    let clear = msgs
        .iter()
        .position(|m| m.topic == topic && m.payload.is_empty())
        .unwrap();
    assert!(
        msgs[clear + 1..]
            .iter()
            .all(|m| !m.topic.ends_with("/17-101")),
        "messages about 17-101 after its clear"
    );
    assert_ordered(&msgs, &p);
    drop(gw);
}

#[test]
fn wearer_cancel_holds_escalation_until_verify_timeout_then_resolved_as_verified() {
    let broker = Broker::start();
    let cfg = SiteConfig {
        ack_timeouts: vec!["2s", "60s"],
        cancel_verify_timeout: "2s",
        ..SiteConfig::default()
    };
    let capture = [
        sent(300, 17, 101, BandEvent::Sos),
        sent(1300, 17, 102, BandEvent::Cancel { of_seq: 101 }),
    ];
    let site = Site::new("bb2", broker.port(), &cfg, &capture);
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bb2", &p);
    let _gw = Gateway::start(&site, "gateway.log", &[]);

    let new = phone.wait_page(&p, "zhang", "new", "17-101");
    assert_eq!(new["cancel_requested"], false);
    let cancel = phone.wait_page(&p, "zhang", "cancel_requested", "17-101");
    assert_sos_doc(&cancel, &site);
    assert_eq!(cancel["cancel_requested"], true);
    assert_eq!(cancel["state"], "open");
    assert_eq!(cancel["tier"], 1);
    assert_eq!(
        cancel["text"],
        format!("{SOS_TEXT}，老人已取消，请电话确认")
    );
    let retained = docs(&phone.messages(), &p, "17-101");
    assert!(retained.iter().any(|d| d["cancel_requested"] == true));

    // The cancel came before tier 2 was due; tier 2 waits for cancel_verify_timeout instead.
    let escalated = phone.wait_page(&p, "li", "escalated", "17-101");
    let held = ms(&escalated["updated_at"]) - ms(&cancel["updated_at"]);
    assert!(
        held >= 1_950,
        "escalation resumed {held} ms after the cancel, before 2 s"
    );
    assert_eq!(escalated["tier"], 2);
    assert_eq!(escalated["cancel_requested"], true);
    assert_eq!(escalated["notified"], json!(["zhang", "li", "wang"]));
    let msgs = phone.messages();
    let first_escalation = pages(&msgs, &p, "17-101")
        .into_iter()
        .filter(|(_, r, _)| r == "escalated")
        .map(|(_, _, d)| ms(&d["updated_at"]))
        .min()
        .unwrap();
    assert!(first_escalation >= ms(&cancel["updated_at"]) + 1_950);

    phone.act(
        &p,
        "zhang",
        json!({"alert_id": "17-101", "action": "resolve", "resolution": "wearer_cancel_verified"}),
    );
    for who in ["zhang", "li", "wang"] {
        let doc = phone.wait_page(&p, who, "resolved", "17-101");
        assert_eq!(doc["state"], "resolved");
        assert_eq!(doc["resolution"], "wearer_cancel_verified");
        assert_eq!(doc["resolved_by"], "zhang");
        assert_eq!(
            doc["text"],
            format!("{SOS_TEXT}，已处理（老人取消，已确认）")
        );
    }
    assert_ordered(&phone.messages(), &p);
}

#[test]
fn silent_band_pages_tier_1_and_clears_as_device_fault_low_battery_once() {
    let broker = Broker::start();
    let cfg = SiteConfig {
        silent_after: "3s",
        residents: vec![17, 18],
        ..SiteConfig::default()
    };
    // Band 17 is heard every second at 15 % battery; band 18 only from 15 s on (then every
    // second, or it would go silent again: `18-silent-2`): its silence, noticed at 3 s, is
    // held 10 s to see whether other bands fall silent with it, then paged at 13 s.
    let mut capture: Vec<Sent> = (0..=19)
        .map(|i| Sent {
            battery_pct: 15,
            ..sent(i * 1000, 17, 1 + i as u32, heartbeat())
        })
        .collect();
    capture.extend((15..=19).map(|i| sent(i * 1000, 18, i as u32, heartbeat())));
    capture.sort_by_key(|s| s.t_ms);
    let site = Site::new("bb3", broker.port(), &cfg, &capture);
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bb3", &p);
    let gw = Gateway::start(&site, "gateway.log", &[]);

    let battery = phone.wait_page(&p, "zhang", "new", "17-battery-1");
    assert_eq!(battery["kind"], "low_battery");
    assert_eq!(battery["tier"], 1);
    assert_eq!(battery["battery_pct"], 15);
    assert_eq!(battery["resident"]["id"], "r017");
    assert_eq!(battery["notified"], json!(["zhang"]));
    assert_eq!(
        battery["text"],
        "【电量低】王秀英（广惠园社区 3号楼 2单元 401）手环电量 15%"
    );

    let silent = phone.wait_page(&p, "zhang", "new", "18-silent-1");
    assert_eq!(silent["kind"], "device_silent");
    assert_eq!(silent["tier"], 1);
    assert_eq!(silent["state"], "open");
    assert_eq!(silent["device_id"], 18);
    assert_eq!(silent["resident"]["name"], "刘桂兰");
    assert_eq!(silent["notified"], json!(["zhang"]));
    let text = silent["text"].as_str().unwrap();
    assert!(
        text.starts_with("【手环失联】刘桂兰（广惠园社区 5号楼 1单元 202）的手环已"),
        "{text}"
    );

    let cleared = phone.wait_page(&p, "zhang", "resolved", "18-silent-1");
    assert_eq!(cleared["resolution"], "device_fault");
    assert_eq!(cleared["resolved_by"], "gateway");
    assert_eq!(
        cleared["acked_by"],
        Value::Null,
        "the gateway claims nothing"
    );
    assert_eq!(cleared["tier"], 1);

    // Every band-17 frame after the first was low too: still one low_battery alert.
    let msgs = phone.wait_until("band 17's last frames", |_| heard(&gw.log(), 17, 20));
    let ids: std::collections::BTreeSet<String> = msgs
        .iter()
        .filter_map(|m| m.notification(&p))
        .map(|(_, _, d)| d["alert_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        ["17-battery-1", "18-silent-1"],
        "band 17 is heard, so it is not silent; one battery alert"
    );
    let news = pages(&msgs, &p, "17-battery-1")
        .into_iter()
        .filter(|(_, r, _)| r == "new")
        .count();
    assert_eq!(news, 1);
    // Silence and battery notices never go past tier 1.
    for id in ["18-silent-1", "17-battery-1"] {
        for (who, reason, doc) in pages(&msgs, &p, id) {
            assert_eq!(who, "zhang");
            assert_ne!(reason, "escalated");
            assert_eq!(doc["tier"], 1);
        }
    }
    assert_ordered(&msgs, &p);
}

/// Whether the gateway logged frame `seq` of band `device` as accepted.
fn heard(log: &str, device: u32, seq: u32) -> bool {
    log.lines().any(|l| {
        l.contains("frame accepted")
            && l.contains(&format!("device_id={device} "))
            && l.contains(&format!("seq={seq} "))
    })
}

#[test]
fn bad_config_exits_78_naming_file_and_key_per_problem() {
    let site = Site::new("bb7", 1, &SiteConfig::default(), &[]);
    let text = std::fs::read_to_string(&site.config).unwrap();
    let bad = text
        .replace("renotify_every = \"1s\"", "renotify_every = \"soon\"")
        .replace("team = [\"li\", \"wang\"]", "team = [\"li\", \"wnag\"]");
    std::fs::write(&site.config, bad).unwrap();
    let out = bandgate(&["run", "--config", site.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "one line per problem:\n{stderr}");
    let file = site.config.display().to_string();
    assert!(lines.iter().all(|l| l.contains(&file)), "{stderr}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("escalation.renotify_every")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("residents[0].team[1]") && l.contains("wnag")),
        "{stderr}"
    );
    assert!(!site.state_dir().exists(), "nothing started");

    // A world-readable key file: refused too, naming that file.
    std::fs::write(&site.config, text).unwrap();
    let keys = site.path().join("keys.toml");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bandgate(&["run", "--config", site.config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&keys.display().to_string()), "{stderr}");
}

#[test]
fn sigterm_exits_0_says_offline_and_a_restart_resumes_the_open_alert() {
    let broker = Broker::start();
    let cfg = SiteConfig {
        ack_timeouts: vec!["2s", "60s"],
        ..SiteConfig::default()
    };
    let site = Site::new(
        "bb8",
        broker.port(),
        &cfg,
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    let p = site.prefix();
    let status_topic = format!("{p}/gateways/gw-bb8/status");
    let phone = Phone::connect_to(
        broker.port(),
        "phones-bb8",
        &[
            format!("{p}/alerts/#"),
            format!("{p}/notify/#"),
            status_topic.clone(),
        ],
    );
    let mut gw = Gateway::start(&site, "gateway-1.log", &[]);
    let new = phone.wait_page(&p, "zhang", "new", "17-101");
    let online = phone.wait_until("online status", |m| {
        m.iter()
            .any(|m| m.topic == status_topic && m.json()["online"] == true)
    });
    let status = online
        .iter()
        .find(|m| m.topic == status_topic)
        .unwrap()
        .json();
    assert_eq!(status["gateway_id"], "gw-bb8");
    assert_eq!(status["adapter"], "replay");

    let st = gw.term();
    assert_eq!(st.code(), Some(0), "graceful stop; log:\n{}", gw.log());
    assert!(gw.log().contains("bandgate stopped"));
    // The retained status now says offline (what a dashboard connecting later sees).
    let later = Phone::connect_to(
        broker.port(),
        "dashboard-bb8",
        std::slice::from_ref(&status_topic),
    );
    let msgs = later.wait_until("retained status", |m| !m.is_empty());
    assert!(msgs[0].retain);
    let offline = msgs[0].json();
    assert_eq!(offline["online"], false, "{offline}");
    assert_eq!(offline["gateway_id"], "gw-bb8");
    drop(later);

    // Restart on the same state_dir: the same alert goes on to tier 2; the capture's SOS,
    // replayed from the start, is refused by the saved replay window.
    let seen = phone.messages().len();
    let gw2 = Gateway::start(&site, "gateway-2.log", &[]);
    let escalated = phone.wait_page(&p, "li", "escalated", "17-101");
    assert_eq!(escalated["raised_at"], new["raised_at"]);
    assert_eq!(escalated["tier"], 2);
    gw2.wait_log("reason=\"duplicate\"");
    let after = phone.messages();
    assert!(
        !pages(&after[seen..], &p, "17-101")
            .iter()
            .any(|(_, r, _)| r == "new"),
        "a second alert was raised after the restart"
    );
    phone.wait_until("online again", |m| {
        m[seen..]
            .iter()
            .any(|m| m.topic == status_topic && m.json()["online"] == true)
    });
    assert_ordered(&phone.messages(), &p);
}

#[test]
fn sigterm_stops_a_replay_gateway_whose_named_pipe_has_no_writer_yet() {
    // The replay source blocks opening a pipe until a writer comes; SIGTERM must still stop
    // the daemon at once (it used to hang until someone opened the pipe).
    let broker = Broker::start();
    let site = Site::new("bb8p", broker.port(), &SiteConfig::default(), &[]);
    let pipe = site.path().join("capture.jsonl");
    std::fs::remove_file(&pipe).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    let status_topic = format!("{}/gateways/gw-bb8p/status", site.prefix());
    let phone = Phone::connect_to(
        broker.port(),
        "phones-bb8p",
        std::slice::from_ref(&status_topic),
    );
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    phone.wait_until("online status", |m| {
        m.iter()
            .any(|m| m.topic == status_topic && m.json()["online"] == true)
    });
    let asked = std::time::Instant::now();
    let st = gw.term();
    assert_eq!(st.code(), Some(0), "graceful stop; log:\n{}", gw.log());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        asked.elapsed()
    );
}

/// (staff, reason) of every page about `alert_id` so far, without repeats.
fn page_set(msgs: &[Msg], p: &str, alert_id: &str) -> std::collections::BTreeSet<(String, String)> {
    pages(msgs, p, alert_id)
        .into_iter()
        .map(|(s, r, _)| (s, r))
        .collect()
}

#[test]
fn kill_9_after_raise_after_tier_2_and_after_ack_the_alert_goes_on_where_it_was() {
    let broker = Broker::start();
    let cfg = SiteConfig {
        ack_timeouts: vec!["2s", "60s"],
        claim_timeout: "60s",
        resolved_retention: "60s",
        ..SiteConfig::default()
    };
    let site = Site::new(
        "bb5",
        broker.port(),
        &cfg,
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bb5", &p);

    // 1: killed right after the raise was paged.
    let mut gw = Gateway::start(&site, "gateway-1.log", &[]);
    let new = phone.wait_page(&p, "zhang", "new", "17-101");
    gw.kill9();

    // 2: the restart refuses the replayed SOS (no second alert), and tier 2 comes on time.
    let mut gw = Gateway::start(&site, "gateway-2.log", &[]);
    gw.wait_log("reason=\"duplicate\"");
    for who in ["zhang", "li", "wang"] {
        let doc = phone.wait_page(&p, who, "escalated", "17-101");
        assert_eq!(doc["raised_at"], new["raised_at"]);
        assert_eq!(doc["tier"], 2);
        let waited = ms(&doc["updated_at"]) - ms(&new["raised_at"]);
        assert!(
            waited >= 1_950,
            "tier 2 after {waited} ms, before the 2 s ack timeout"
        );
    }
    gw.kill9();

    // 3: tier 2 survives the kill: the ack finds the alert at tier 2 with its three people.
    let mut gw = Gateway::start(&site, "gateway-3.log", &[]);
    gw.wait_log("bandgate running");
    phone.act(&p, "li", json!({"alert_id": "17-101", "action": "ack"}));
    let acked = phone.wait_page(&p, "wang", "acknowledged", "17-101");
    assert_eq!(acked["tier"], 2);
    assert_eq!(acked["acked_by"], "li");
    assert_eq!(acked["notified"], json!(["zhang", "li", "wang"]));
    gw.kill9();

    // 4: the claim survives: the supervisor resolving it does not take li's claim (zhang,
    // paged but not the claimer, may not resolve a claimed alert: "who may act").
    let gw = Gateway::start(&site, "gateway-4.log", &[]);
    gw.wait_log("bandgate running");
    phone.act(
        &p,
        "chen",
        json!({"alert_id": "17-101", "action": "resolve", "resolution": "false_alarm"}),
    );
    for who in ["zhang", "li", "wang"] {
        let doc = phone.wait_page(&p, who, "resolved", "17-101");
        assert_eq!(doc["acked_by"], "li");
        assert_eq!(doc["resolved_by"], "chen");
        assert_eq!(doc["acked_at"], acked["acked_at"]);
        assert_eq!(doc["raised_at"], new["raised_at"]);
    }
    let msgs = phone.messages();
    let got = page_set(&msgs, &p, "17-101");
    for who in ["zhang", "li", "wang"] {
        for reason in ["escalated", "acknowledged", "resolved"] {
            assert!(
                got.contains(&(who.into(), reason.into())),
                "{who} {reason} missing"
            );
        }
    }
    assert!(got.contains(&("zhang".into(), "new".into())));
    assert!(
        !got.iter().any(|(s, r)| r == "new" && s != "zhang"),
        "a second alert was raised: {got:?}"
    );
    // Re-sends carry the same alert_id and updated_at as the original (checked per document).
    assert_ordered(&msgs, &p);
    assert!(!gw.log().contains("panicked"));
}

#[test]
fn abort_between_commit_and_publish_the_restart_publishes_what_was_committed() {
    use bandgate::adapters::store::Store;

    let broker = Broker::start();
    let cfg = SiteConfig {
        ack_timeouts: vec!["60s", "60s"],
        renotify_every: "60s",
        ..SiteConfig::default()
    };
    let site = Site::new(
        "bb5a",
        broker.port(),
        &cfg,
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bb5a", &p);

    // The first durable commit is the SOS's: the process dies before publishing any of it.
    let mut gw = Gateway::start(
        &site,
        "gateway-1.log",
        &[("BANDGATE_FAULT_ABORT_AFTER_COMMIT", "1")],
    );
    let status = gw.wait_exit();
    assert!(!status.success(), "the fault hook aborts: {status:?}");
    assert!(gw.log().contains("aborting after commit 1"), "{}", gw.log());
    let committed: Vec<_> = {
        let store = Store::open(&site.state_dir()).unwrap();
        store
            .pending(None, 100)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m)
            .collect()
    };
    let topics: Vec<&str> = committed.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [format!("{p}/alerts/17-101"), format!("{p}/notify/zhang")],
        "the raise's document and page were committed"
    );
    assert!(committed[0].retain && !committed[1].retain);
    assert!(
        pages(&phone.messages(), &p, "17-101").is_empty(),
        "nothing was published before the abort"
    );

    // The restart publishes exactly what was committed, and raises nothing new.
    let gw = Gateway::start(&site, "gateway-2.log", &[]);
    let msgs = phone.wait_until("the committed page", |m| {
        find_page(m, &p, "zhang", "new", "17-101").is_some()
    });
    for c in &committed {
        assert!(
            msgs.iter()
                .any(|m| m.topic == c.topic && m.payload == c.payload),
            "{} not delivered as committed",
            c.topic
        );
    }
    gw.wait_log("reason=\"duplicate\"");
    let store = Store::open(&site.state_dir()).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while store.outbox_len().unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "outbox never drained");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let news = pages(&phone.messages(), &p, "17-101")
        .into_iter()
        .filter(|(_, r, _)| r == "new")
        .count();
    assert_eq!(news, 1);
}

#[test]
fn bad_phone_input_is_logged_and_ignored_and_a_valid_ack_still_works() {
    let broker = Broker::start();
    let cfg = SiteConfig {
        ack_timeouts: vec!["60s", "60s"],
        renotify_every: "60s",
        resolved_retention: "60s",
        residents: vec![17, 18],
        ..SiteConfig::default()
    };
    let capture = [
        sent(300, 17, 101, BandEvent::Sos),
        sent(300, 18, 7, BandEvent::Sos),
    ];
    let site = Site::new("bb6", broker.port(), &cfg, &capture);
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bb6", &p);
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    phone.wait_page(&p, "zhang", "new", "17-101");
    phone.wait_page(&p, "zhang", "new", "18-7");
    phone.act(
        &p,
        "zhang",
        json!({"alert_id": "18-7", "action": "resolve", "resolution": "test"}),
    );
    phone.wait_page(&p, "zhang", "resolved", "18-7");

    let ack = format!("{p}/ack/zhang");
    phone.publish(&ack, "{\"alert_id\": \"17-101\", \"action\": ");
    phone.act(&p, "zhang", json!({"alert_id": "99-1", "action": "ack"}));
    phone.act(&p, "ghost", json!({"alert_id": "17-101", "action": "ack"}));
    let mut big = br#"{"alert_id": "17-101", "action": "ack", "note": ""#.to_vec();
    big.resize(1024 * 1024 - 2, b'x');
    big.extend_from_slice(b"\"}");
    phone.publish(&ack, big);
    phone.act(&p, "zhang", json!({"alert_id": "18-7", "action": "ack"}));
    phone.act(
        &p,
        "zhang",
        json!({"alert_id": "17-101", "action": "dance"}),
    );

    for reason in [
        "reason=\"malformed_json\"",
        "reason=\"unknown_alert\"",
        "reason=\"unknown_staff\"",
        "reason=\"too_large\"",
        "reason=\"already_resolved\"",
        "reason=\"unknown_action\"",
    ] {
        gw.wait_log(reason);
        let line = gw.log_line(reason);
        assert!(line.contains("WARN"), "not a warning: {line}");
    }
    assert!(gw.is_running(), "the gateway died: {}", gw.log());

    // Every refusal is counted where an operator looks: `bandgate status`.
    let status = site.status();
    for reason in ["malformed_json", "too_large", "unknown_action"] {
        assert_eq!(status["messages_ignored"][reason], 1, "{status}");
    }
    for reason in ["unknown_alert", "unknown_staff", "already_resolved"] {
        assert_eq!(status["actions_refused"][reason], 1, "{status}");
    }

    // None of it changed anything; a valid ack afterwards works.
    let before = docs(&phone.messages(), &p, "17-101");
    assert!(before
        .iter()
        .all(|d| d["state"] == "open" && d["acked_by"].is_null()));
    phone.act(&p, "zhang", json!({"alert_id": "17-101", "action": "ack"}));
    let doc = phone.wait_page(&p, "zhang", "acknowledged", "17-101");
    assert_eq!(doc["acked_by"], "zhang");
    assert_eq!(doc["state"], "acknowledged");
    let resolved = docs(&phone.messages(), &p, "18-7");
    assert_eq!(resolved.last().unwrap()["resolution"], "test");
    assert!(gw.is_running());
    assert_ordered(&phone.messages(), &p);
}

/// Distinct `updated_at`s (ms) of the pages `staff` received about `alert_id`, sorted.
fn page_times(msgs: &[Msg], p: &str, staff: &str, alert_id: &str) -> Vec<i64> {
    let set: std::collections::BTreeSet<i64> = pages(msgs, p, alert_id)
        .into_iter()
        .filter(|(s, _, _)| s == staff)
        .map(|(_, _, d)| ms(&d["updated_at"]))
        .collect();
    set.into_iter().collect()
}

#[test]
fn broker_down_30_s_mid_escalation_every_change_and_page_arrives_in_order() {
    let mut broker = Broker::start_with(true);
    let cfg = SiteConfig {
        ack_timeouts: vec!["2s", "5s"],
        renotify_every: "1s",
        repeat_every: "2s",
        ..SiteConfig::default()
    };
    let site = Site::new(
        "bb4",
        broker.port(),
        &cfg,
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bb4", &p);
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    let new = phone.wait_page(&p, "li", "escalated", "17-101");
    assert_eq!(new["tier"], 2);

    // The broker goes away while the alert is at tier 2; tier 3 and its repeats fall due
    // while it is down.
    broker.stop_gracefully();
    let down_at = jiff::Timestamp::now().as_millisecond();
    std::thread::sleep(Duration::from_secs(30));
    broker.restart();
    let up_at = jiff::Timestamp::now().as_millisecond();
    gw.wait_log("broker connection lost");

    // Paging after the outage reaches the phone...
    phone.wait_until("a tier-3 repeat made after the broker returned", |m| {
        page_times(m, &p, "chen", "17-101")
            .last()
            .is_some_and(|t| *t > up_at + 2_000)
    });
    // ...and then the gateway stops; it drains its outbox first. Every page it logged must
    // have reached the phone (zhang, on duty, is in every page).
    assert_eq!(gw.term().code(), Some(0));
    let log = gw.log();
    let logged = log
        .lines()
        .filter(|l| l.contains("alert paged") && l.contains("alert_id=\"17-101\""))
        .count();
    let msgs = phone.wait_until("every page the gateway logged", |m| {
        page_times(m, &p, "zhang", "17-101").len() >= logged
    });
    let zhang = page_times(&msgs, &p, "zhang", "17-101");
    assert_eq!(zhang.len(), logged, "pages received vs logged");
    assert_ordered(&msgs, &p);

    // Every page has its retained document, under the same updated_at.
    let doc_times: std::collections::BTreeSet<i64> = docs(&msgs, &p, "17-101")
        .iter()
        .map(|d| ms(&d["updated_at"]))
        .collect();
    assert!(zhang.iter().all(|t| doc_times.contains(t)));

    // Tier 3 came during the outage, then repeats every 2 s with no hole across it.
    let escalated_to_chen = pages(&msgs, &p, "17-101")
        .into_iter()
        .find(|(s, r, _)| s == "chen" && r == "escalated")
        .expect("tier 3 was paged")
        .2;
    assert_eq!(escalated_to_chen["tier"], 3);
    let t3 = ms(&escalated_to_chen["updated_at"]);
    assert!(
        down_at < t3 && t3 < up_at,
        "tier 3 fell due during the outage"
    );
    let chen = page_times(&msgs, &p, "chen", "17-101");
    // Completeness is the count above; this only checks that paging went on through the
    // outage (timers run late on a loaded 2-core machine, hence the slack).
    assert!(chen.len() >= 10, "{} tier-3 pages in > 30 s", chen.len());
    for w in chen.windows(2) {
        assert!(
            w[1] - w[0] <= 5_000,
            "no page between {} and {}",
            w[0],
            w[1]
        );
    }
    for (who, reason, doc) in pages(&msgs, &p, "17-101") {
        if ms(&doc["updated_at"]) > t3 {
            assert_eq!(doc["tier"], 3);
            assert_eq!(reason, "reminder", "{who}");
            assert_eq!(doc["notified"], json!(["zhang", "li", "wang", "chen"]));
        }
    }
}
