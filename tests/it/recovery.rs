//! Black-box: the built binary and a real Mosquitto on a state_dir damaged by hand. Whatever
//! the disk holds, the gateway starts, pages a new SOS, restores every readable alert, says
//! `degraded`, and pages the supervisors with a `gateway_fault` within 15 s of start.

use std::time::{Duration, Instant};

use bandgate::adapters::store::DB_FILE;
use bandgate::engine::frame::BandEvent;
use serde_json::Value;

use crate::harness::*;
use crate::store_recover::{open_alert, sql, used_state, ReadOnlyMount, DAMAGE_RECORDS};

/// The contract's promise: the supervisors hear of a lost state within 15 s of start.
const FAULT_WITHIN: Duration = Duration::from_secs(15);

fn cfg() -> SiteConfig {
    SiteConfig {
        // Quiet timers: every page seen in a test is the one the test waits for.
        ack_timeouts: vec!["60s", "60s"],
        renotify_every: "60s",
        repeat_every: "60s",
        residents: vec![17, 18],
        ..SiteConfig::default()
    }
}

/// A site whose capture raises band 17's SOS 17-101.
fn site(id: &str, broker: &Broker) -> Site {
    Site::new(
        id,
        broker.port(),
        &cfg(),
        &[sent(300, 17, 101, BandEvent::Sos)],
    )
}

/// The page every test waits for: the supervisor chen gets `gateway_fault` 1, `new`, in time.
fn assert_fault_paged(phone: &Phone, site: &Site, started: Instant, mentions: &str) -> Value {
    let p = site.prefix();
    let id = format!("gateway-gw-{}-fault-1", site.site_id);
    let doc = phone.wait_page(&p, "chen", "new", &id);
    let took = started.elapsed();
    assert!(
        took < FAULT_WITHIN,
        "the fault was paged {took:?} after start"
    );
    assert_eq!(doc["kind"], "gateway_fault", "{doc}");
    assert_eq!(doc["resident"], Value::Null, "{doc}");
    assert_eq!(doc["device_id"], Value::Null, "{doc}");
    assert_eq!(doc["notified"], serde_json::json!(["chen"]), "{doc}");
    let text = doc["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "【网关故障】网关 gw-{} 的报警记录已丢失或无法保存，未处理的报警可能已丢失",
            site.site_id
        )),
        "{text}"
    );
    assert!(text.contains(mentions), "{text}");
    doc
}

/// `bandgate status` says degraded, with a reason containing `why`.
fn assert_degraded(site: &Site, why: &str) {
    let s = site.status();
    assert_eq!(s["state"], "degraded", "{s}");
    let reasons = s["degraded"].as_array().unwrap();
    assert!(
        reasons.iter().any(|r| r.as_str().unwrap().contains(why)),
        "{s}"
    );
    // And the retained gateway status on the broker.
    let p = site.prefix();
    let watcher = Phone::connect_to(
        site.broker_port,
        &format!("status-{}", site.site_id),
        &[format!("{p}/gateways/#")],
    );
    let msgs = watcher.wait_until("the gateway status", |m| !m.is_empty());
    assert_eq!(msgs[0].json()["state"], "degraded");
}

/// The gateway started on a state with the readable open alert 18-5: it pages the new SOS,
/// pages 18-5 again (its deadline passed while it was down), and the fault.
fn assert_runs_restores_and_pages(
    gw: &Gateway,
    phone: &Phone,
    site: &Site,
    started: Instant,
    mentions: &str,
) {
    let p = site.prefix();
    phone.wait_page(&p, "zhang", "new", "17-101");
    let restored = phone.wait_until("a page about the restored 18-5", |m| {
        pages(m, &p, "18-5").iter().any(|(s, _, _)| s == "zhang")
    });
    assert!(
        pages(&restored, &p, "18-5")
            .iter()
            .all(|(_, r, _)| r != "new"),
        "18-5 was restored, not raised again"
    );
    assert_fault_paged(phone, site, started, mentions);
    let log = gw.log();
    assert!(log.contains("ERROR"), "{log}");
}

#[test]
fn unreadable_records_are_skipped_and_every_readable_alert_restored_and_paged() {
    let broker = Broker::start();
    let site = site("rc1", &broker);
    let state = site.state_dir();
    let alerts = ["17-1", "17-2", "17-3", "17-4", "18-5"]
        .iter()
        .map(|id| open_alert(id, if id.starts_with("17") { 17 } else { 18 }))
        .collect();
    used_state(&state, alerts);
    sql(&state, DAMAGE_RECORDS);
    let phone = Phone::connect(broker.port(), "phones-rc1", &site.prefix());
    let started = Instant::now();
    let gw = Gateway::start(&site, "gateway.log", &[]);

    assert_runs_restores_and_pages(&gw, &phone, &site, started, "17-1 cannot be read");
    let p = site.prefix();
    for skipped in ["17-1", "17-2", "17-3", "17-4"] {
        assert!(
            pages(&phone.messages(), &p, skipped).is_empty(),
            "{skipped}"
        );
    }
    let log = gw.log();
    assert!(
        log.contains("the alerts record 17-3 cannot be read"),
        "{log}"
    );
    assert_degraded(&site, "unreadable alerts record 17-1");
    let alerts = bandgate(&["alerts", "--config", site.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&alerts.stdout);
    assert!(
        text.contains("gateway-gw-rc1-fault-1  gateway_fault  -"),
        "{text}"
    );
    assert!(text.contains("18-5 "), "{text}");
}

#[test]
fn a_damaged_header_is_moved_aside_and_the_gateway_pages_on_a_new_database() {
    let broker = Broker::start();
    let site = site("rc2", &broker);
    let state = site.state_dir();
    used_state(&state, vec![open_alert("18-5", 18)]);
    let db = state.join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&db, &bytes).unwrap();
    let phone = Phone::connect(broker.port(), "phones-rc2", &site.prefix());
    let started = Instant::now();
    let gw = Gateway::start(&site, "gateway.log", &[]);

    phone.wait_page(&site.prefix(), "zhang", "new", "17-101");
    assert_fault_paged(&phone, &site, started, "moved aside to");
    let broken = crate::store_recover::files_starting(&state, &format!("{DB_FILE}.broken-"));
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!(std::fs::read(&broken[0]).unwrap(), bytes);
    assert!(gw.log().contains("ERROR"));
    assert_degraded(&site, "state database unreadable, moved aside");
}

#[test]
fn half_damaged_pages_start_the_gateway_with_every_alert_still_readable() {
    let broker = Broker::start();
    let site = site("rc3", &broker);
    let state = site.state_dir();
    // 18-5 sorts first: on the pages kept whole.
    let mut alerts = vec![open_alert("18-5", 18)];
    alerts.extend((0..150).map(|i| bandgate::engine::snapshot::AlertRecord {
        notified: vec![format!("{}-{i}", "x".repeat(300))],
        state: "resolved".into(),
        ..open_alert(&format!("18-9{i:04}"), 18)
    }));
    used_state(&state, alerts);
    let db = state.join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    for b in &mut bytes[(pages / 2) * 4096..] {
        *b = 0x5A;
    }
    std::fs::write(&db, &bytes).unwrap();
    let phone = Phone::connect(broker.port(), "phones-rc3", &site.prefix());
    let started = Instant::now();
    let gw = Gateway::start(&site, "gateway.log", &[]);

    assert_runs_restores_and_pages(&gw, &phone, &site, started, "moved aside to");
    assert_degraded(&site, "state database unreadable");
}

#[test]
fn a_directory_in_place_of_the_database_does_not_stop_the_gateway() {
    let broker = Broker::start();
    let site = site("rc4", &broker);
    std::fs::create_dir_all(site.state_dir().join(DB_FILE)).unwrap();
    let phone = Phone::connect(broker.port(), "phones-rc4", &site.prefix());
    let started = Instant::now();
    let _gw = Gateway::start(&site, "gateway.log", &[]);
    phone.wait_page(&site.prefix(), "zhang", "new", "17-101");
    assert_fault_paged(
        &phone,
        &site,
        started,
        "is not a regular file (a directory)",
    );
}

#[test]
fn a_zero_byte_database_after_use_is_reported_not_a_silent_fresh_start() {
    let broker = Broker::start();
    let site = site("rc5", &broker);
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-rc5", &p);
    let mut gw = Gateway::start(&site, "gateway-1.log", &[]);
    phone.wait_page(&p, "zhang", "new", "17-101");
    gw.term();
    assert!(
        pages(&phone.messages(), &p, "gateway-gw-rc5-fault-1").is_empty(),
        "a clean first start pages no fault"
    );

    let state = site.state_dir();
    std::fs::write(state.join(DB_FILE), "").unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(state.join(format!("{DB_FILE}{side}")));
    }
    write_capture(
        &site.path().join("capture.jsonl"),
        &[sent(300, 18, 7, BandEvent::Sos)],
    );
    let started = Instant::now();
    let gw = Gateway::start(&site, "gateway-2.log", &[]);
    phone.wait_page(&p, "zhang", "new", "18-7");
    assert_fault_paged(&phone, &site, started, "zero bytes long");
    assert!(gw.log().contains("ERROR"), "{}", gw.log());
    assert_degraded(&site, "state database came back empty");
}

#[test]
fn a_read_only_state_dir_runs_pages_and_says_degraded() {
    let broker = Broker::start();
    let site = site("rc6", &broker);
    let Some(_mount) = ReadOnlyMount::at(&site.state_dir(), |d| {
        used_state(d, vec![open_alert("18-5", 18)])
    }) else {
        return;
    };
    let phone = Phone::connect(broker.port(), "phones-rc6", &site.prefix());
    let started = Instant::now();
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    assert_runs_restores_and_pages(&gw, &phone, &site, started, "Read-only file system");
    assert_degraded(&site, "state directory not writable");
    assert!(gw.is_running());
    // The gateway said why.
    assert!(
        gw.log().contains("running on an in-memory store"),
        "{}",
        gw.log()
    );
}
