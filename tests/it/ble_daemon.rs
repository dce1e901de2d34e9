//! Black-box tests of `bandgate run` with `ble.source = "bluez"`: the built daemon scans the
//! mock BlueZ of `ble.rs` (private bus, dbusmock's bluez5, `DBUS_SYSTEM_BUS_ADDRESS` set for
//! the daemon alone) and pages through a real Mosquitto to a phone (`gateway.rs`). This is the
//! whole path of issue 5: advertisement → D-Bus signal → lanes → engine → outbox → broker → phone,
//! and what the operator sees (retained gateway status, warn/error lines) while the radio
//! stack fails and recovers. Every wait is a poll with a deadline.

use std::time::{Duration, Instant};

use bandgate::engine::frame::{seal, BandEvent, Frame};
use serde_json::Value;

use crate::ble::MockBluez;
use crate::harness::Broker;
use crate::harness::*;

const BAND_17: &str = "C8:FD:19:00:00:11";

/// A site whose daemon scans BlueZ (the mock) instead of replaying a capture.
pub(crate) fn bluez_site(broker: &Broker, site_id: &str, silence_restart: &str) -> Site {
    bluez_site_on(broker.port(), site_id, silence_restart, COMPANY_ID)
}

pub(crate) fn bluez_site_on(
    port: u16,
    site_id: &str,
    silence_restart: &str,
    company_id: u16,
) -> Site {
    let site = Site::new(site_id, port, &SiteConfig::default(), &[]);
    let text = std::fs::read_to_string(&site.config).unwrap();
    let replay = "source = \"replay\"\nreplay_file = \"capture.jsonl\"\n";
    assert!(text.contains(replay), "the site template changed:\n{text}");
    let text = text
        .replace(
            replay,
            &format!(
                "source = \"bluez\"\nadapter = \"hci0\"\nsilence_restart = \"{silence_restart}\"\n"
            ),
        )
        .replace(
            "company_id = 0xFFFF\n",
            &format!("company_id = 0x{company_id:04X}\n"),
        );
    std::fs::write(&site.config, text).unwrap();
    site
}

pub(crate) fn start(site: &Site, m: &MockBluez, log: &str) -> Gateway {
    Gateway::start(
        site,
        log,
        &[("DBUS_SYSTEM_BUS_ADDRESS", m.address.as_str())],
    )
}

fn frame(device_id: u32, seq: u32, battery_pct: u8, event: BandEvent) -> Vec<u8> {
    seal(
        &Frame {
            device_id,
            seq,
            battery_pct,
            worn: true,
            event,
        },
        COMPANY_ID,
        &key_of(device_id),
    )
}

/// Polls `cond` until it holds; on timeout, fails with the daemon's log.
pub(crate) fn wait(gw: &Gateway, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}; the gateway's log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the current mock bluetoothd has been told to discover `n` times.
pub(crate) fn wait_discovering(gw: &Gateway, m: &MockBluez, n: usize) {
    wait(
        gw,
        &format!("StartDiscovery #{n} in the mock's call log"),
        || m.calls("StartDiscovery") >= n,
    );
}

fn status_topic(site: &Site) -> String {
    format!("{}/gateways/gw-{}/status", site.prefix(), site.site_id)
}

/// A phone that also reads the gateway status and band state.
pub(crate) fn phone(site: &Site, client_id: &str) -> Phone {
    let p = site.prefix();
    Phone::connect_to(
        site.broker_port,
        client_id,
        &[
            format!("{p}/alerts/#"),
            format!("{p}/notify/#"),
            format!("{p}/devices/#"),
            status_topic(site),
        ],
    )
}

/// The gateway status documents received, in order.
fn statuses(msgs: &[Msg], site: &Site) -> Vec<Value> {
    let topic = status_topic(site);
    msgs.iter()
        .filter(|m| m.topic == topic)
        .map(Msg::json)
        .collect()
}

/// Waits for an online status with `adapter_ok` = `ok` after the first `seen` statuses;
/// returns how many statuses there are up to and including it.
fn wait_status(phone: &Phone, site: &Site, seen: usize, ok: bool) -> usize {
    let found = |msgs: &[Msg]| {
        statuses(msgs, site)
            .iter()
            .enumerate()
            .skip(seen)
            .find(|(_, s)| s["online"] == true && s["adapter_ok"] == ok)
            .map(|(i, _)| i + 1)
    };
    let msgs = phone.wait_until(&format!("a status with adapter_ok {ok}"), |m| {
        found(m).is_some()
    });
    found(&msgs).unwrap()
}

/// What a dashboard connecting now is told: the retained status.
fn retained_status(site: &Site, client_id: &str) -> Msg {
    let later = Phone::connect_to(
        site.broker_port,
        client_id,
        std::slice::from_ref(&status_topic(site)),
    );
    let msgs = later.wait_until("the retained status", |m| !m.is_empty());
    msgs[0].clone()
}

/// The lines of `log` at `level` (`WARN`, `ERROR`) that contain `needle`.
fn logged(log: &str, level: &str, needle: &str) -> bool {
    log.lines().any(|l| l.contains(level) && l.contains(needle))
}

#[test]
fn a_bands_first_advert_is_an_sos_and_the_phone_is_paged_then_heartbeats_update_its_state() {
    let broker = Broker::start();
    let m = &mut MockBluez::start();
    let site = bluez_site(&broker, "bz1", "60s");
    let p = site.prefix();
    let phone = phone(&site, "phones-bz1");
    let gw = start(&site, m, "gateway.log");
    wait_discovering(&gw, m, 1);
    let up = wait_status(&phone, &site, 0, true);
    assert_eq!(
        statuses(&phone.messages(), &site)[up - 1]["adapter"],
        "hci0"
    );

    // Band 17 was never heard: its SOS comes only with BlueZ's new-device signal.
    m.advert(
        BAND_17,
        -58,
        COMPANY_ID,
        &frame(17, 101, 80, BandEvent::Sos),
    );
    let new = phone.wait_page(&p, "zhang", "new", "17-101");
    assert_eq!(new["kind"], "sos", "{new}");
    assert_eq!(new["device_id"], 17);
    assert_eq!(new["resident"]["id"], "r017");
    assert_eq!(new["resident"]["name"], "王秀英");
    assert_eq!(
        new["rssi"], -58,
        "the first advert's RSSI, read with its data"
    );
    assert_eq!(new["battery_pct"], 80);
    assert_eq!(new["state"], "open");
    assert_eq!(new["gateway_id"], "gw-bz1");

    // The alert document is retained: a phone that connects later reads it.
    let late = Phone::connect_to(broker.port(), "late-bz1", &[format!("{p}/alerts/#")]);
    let msgs = late.wait_until("the retained alert document", |m| {
        m.iter().any(|m| m.topic == format!("{p}/alerts/17-101"))
    });
    let doc = msgs
        .iter()
        .find(|m| m.topic == format!("{p}/alerts/17-101"))
        .unwrap();
    assert!(doc.retain);
    let doc = doc.json();
    assert_eq!(doc["alert_id"], "17-101");
    assert_eq!(doc["device_id"], 17);
    assert_eq!(doc["resident"]["name"], "王秀英");
    assert_eq!(doc["rssi"], -58);
    drop(late);

    // Heartbeats after it (signalled as changed properties of a known device) update the
    // band's state: battery down by more than the publishing step, each with its own RSSI.
    let state_topic = format!("{p}/devices/17/state");
    let state_with = |battery: u8| {
        let topic = state_topic.clone();
        move |msgs: &[Msg]| {
            msgs.iter()
                .any(|m| m.topic == topic && m.json()["battery_pct"] == battery)
        }
    };
    m.advert(BAND_17, -70, COMPANY_ID, &frame(17, 102, 60, heartbeat()));
    phone.wait_until("band 17's state at 60%", state_with(60));
    m.advert(BAND_17, -75, COMPANY_ID, &frame(17, 103, 40, heartbeat()));
    let msgs = phone.wait_until("band 17's state at 40%", state_with(40));
    let states: Vec<Value> = msgs
        .iter()
        .filter(|m| m.topic == format!("{p}/devices/17/state"))
        .map(Msg::json)
        .collect();
    let at60 = states.iter().find(|s| s["battery_pct"] == 60).unwrap();
    let at40 = states.iter().find(|s| s["battery_pct"] == 40).unwrap();
    assert_eq!(at60["rssi"], -70, "{at60}");
    assert_eq!(at40["rssi"], -75, "{at40}");
    assert_eq!(at40["resident_id"], "r017");
    assert_eq!(at40["gateway_id"], "gw-bz1");
    let log = gw.log();
    assert!(
        log.lines()
            .any(|l| l.contains("frame accepted") && l.contains("seq=103")),
        "{log}"
    );
    // One alert only: heartbeats raise nothing.
    assert_eq!(
        pages(&phone.messages(), &p, "17-101")
            .iter()
            .filter(|(_, r, _)| r == "new")
            .count(),
        1
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn adapter_powered_off_shows_in_the_status_and_the_log_and_power_on_brings_sos_back() {
    let broker = Broker::start();
    let m = &mut MockBluez::start();
    let site = bluez_site(&broker, "bz2", "60s");
    let p = site.prefix();
    let phone = phone(&site, "phones-bz2");
    let gw = start(&site, m, "gateway.log");
    wait_discovering(&gw, m, 1);
    let seen = wait_status(&phone, &site, 0, true);

    m.power(false);
    let seen = wait_status(&phone, &site, seen, false);
    let retained = retained_status(&site, "dashboard-bz2-off");
    assert!(retained.retain);
    let st = retained.json();
    assert_eq!(st["online"], true, "{st}");
    assert_eq!(st["adapter_ok"], false, "{st}");
    assert_eq!(st["adapter"], "hci0", "{st}");
    wait(&gw, "the warn line", || {
        logged(&gw.log(), "WARN", "radio adapter not scanning")
    });
    let log = gw.log();
    assert!(
        logged(&log, "WARN", "BLE: adapter not powered")
            || logged(&log, "WARN", "BLE: adapter lost"),
        "{log}"
    );

    m.power(true);
    wait_discovering(&gw, m, 2);
    wait_status(&phone, &site, seen, true);
    assert_eq!(
        retained_status(&site, "dashboard-bz2-on").json()["adapter_ok"],
        true
    );
    assert!(logged(&gw.log(), "WARN", "BLE: restarting the scan"));

    m.advert(
        BAND_17,
        -61,
        COMPANY_ID,
        &frame(17, 201, 80, BandEvent::Sos),
    );
    let new = phone.wait_page(&p, "zhang", "new", "17-201");
    assert_eq!(new["resident"]["name"], "王秀英");
    assert_eq!(new["rssi"], -61);
}

#[test]
fn bluez_killed_and_restarted_mid_run_scanning_resumes_and_an_sos_gets_through() {
    let broker = Broker::start();
    let m = &mut MockBluez::start();
    let site = bluez_site(&broker, "bz3", "60s");
    let p = site.prefix();
    let phone = phone(&site, "phones-bz3");
    let gw = start(&site, m, "gateway.log");
    wait_discovering(&gw, m, 1);
    let seen = wait_status(&phone, &site, 0, true);
    m.advert(BAND_17, -60, COMPANY_ID, &frame(17, 300, 80, heartbeat()));
    wait(&gw, "the heartbeat before the crash", || {
        gw.log().contains("seq=300")
    });

    m.kill_mock();
    // No sleep: the daemon says when it noticed.
    wait(&gw, "bluetoothd's crash to be noticed", || {
        logged(&gw.log(), "WARN", "radio adapter not scanning")
    });
    let seen = wait_status(&phone, &site, seen, false);
    assert!(
        logged(&gw.log(), "WARN", "BLE: adapter lost"),
        "{}",
        gw.log()
    );

    m.start_mock();
    // The new bluetoothd is told to discover, with nobody's help.
    wait_discovering(&gw, m, 1);
    wait_status(&phone, &site, seen, true);
    assert!(
        logged(&gw.log(), "WARN", "BLE: recreating the BlueZ connection"),
        "{}",
        gw.log()
    );

    // The new bluetoothd knows no devices: band 17 is new to it again.
    m.advert(
        BAND_17,
        -62,
        COMPANY_ID,
        &frame(17, 301, 80, BandEvent::Sos),
    );
    let new = phone.wait_page(&p, "zhang", "new", "17-301");
    assert_eq!(new["device_id"], 17);
    assert_eq!(new["rssi"], -62);
    let retained = retained_status(&site, "dashboard-bz3");
    assert_eq!(retained.json()["adapter_ok"], true);
}

#[test]
fn silence_restarts_the_scan_then_bluez_then_the_daemon_exits_1_telling_the_operator() {
    let broker = Broker::start();
    let m = &mut MockBluez::start();
    let site = bluez_site(&broker, "bz4", "3s");
    let phone = phone(&site, "phones-bz4");
    let mut gw = start(&site, m, "gateway.log");
    // Nobody advertises: three silences of 3 s, then the daemon gives up.
    let exit = gw.wait_exit();
    let log = gw.log();
    assert_eq!(exit.code(), Some(1), "a third silence exits 1:\n{log}");

    // Each step at warn, in order, then the errors.
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not logged:\n{log}"))
    };
    let restart = at("reason=\"silence\"");
    let recreate = at("reason=\"second silence\"");
    let give_up = at("giving up so the service manager restarts us");
    let stopped = at("bandgate stopped on an error");
    assert!(
        restart < recreate && recreate < give_up && give_up < stopped,
        "{log}"
    );
    assert!(logged(&log, "WARN", "BLE: restarting the scan"), "{log}");
    assert!(
        logged(&log, "WARN", "BLE: recreating the BlueZ connection"),
        "{log}"
    );
    assert!(logged(&log, "ERROR", "third silence"), "{log}");
    assert!(
        logged(&log, "ERROR", "bandgate stopped on an error"),
        "{log}"
    );
    // The daemon's own view: the radio cannot be trusted from the first silence on, not
    // only while the BlueZ connection is rebuilt (a whole silence, 3 s, separates the two).
    let not_scanning = log
        .lines()
        .position(|l| l.contains("WARN") && l.contains("radio adapter not scanning"))
        .unwrap_or_else(|| panic!("no warn from the daemon:\n{log}"));
    let second = log
        .lines()
        .position(|l| l.contains("second silence"))
        .unwrap();
    assert!(not_scanning < second, "{log}");
    // Initial scan, restart after the first silence, new connection after the second.
    assert!(m.calls("StartDiscovery") >= 3, "{log}");

    // The status said so while it lasted (scanning, then not ok while still online), and
    // says offline now.
    let seen = statuses(&phone.messages(), &site);
    let ok = seen
        .iter()
        .position(|s| s["online"] == true && s["adapter_ok"] == true)
        .unwrap_or_else(|| panic!("never scanning: {seen:?}"));
    assert!(
        seen[ok..]
            .iter()
            .any(|s| s["online"] == true && s["adapter_ok"] == false),
        "the silence never showed in the status: {seen:?}"
    );
    let last = retained_status(&site, "dashboard-bz4");
    assert_eq!(last.json()["online"], false, "{}", last.json());
}

#[test]
fn bluetoothd_not_running_at_start_shows_not_ok_until_it_comes() {
    let broker = Broker::start();
    let m = &mut MockBluez::start();
    m.kill_mock();
    let site = bluez_site(&broker, "bz5", "60s");
    let p = site.prefix();
    let phone = phone(&site, "phones-bz5");
    let gw = start(&site, m, "gateway.log");
    wait(&gw, "the warn line", || {
        logged(&gw.log(), "WARN", "BLE: cannot scan yet")
    });
    // Connected and online, but no radio: the status must not claim one.
    let msgs = phone.wait_until("an online status", |m| {
        statuses(m, &site).iter().any(|s| s["online"] == true)
    });
    let first = statuses(&msgs, &site)
        .into_iter()
        .find(|s| s["online"] == true)
        .unwrap();
    assert_eq!(first["adapter_ok"], false, "{first}");
    assert_eq!(
        retained_status(&site, "dashboard-bz5-before").json()["adapter_ok"],
        false
    );

    m.start_mock();
    wait_discovering(&gw, m, 1);
    wait_status(&phone, &site, 0, true);
    m.advert(
        BAND_17,
        -59,
        COMPANY_ID,
        &frame(17, 501, 80, BandEvent::Sos),
    );
    phone.wait_page(&p, "zhang", "new", "17-501");
}

#[test]
fn scan_with_the_config_uses_its_keys_company_id_and_silence_and_names_the_resident() {
    let m = &mut MockBluez::start();
    // No broker: scan needs none; the port is only text in the config.
    let site = bluez_site_on(1, "bz6", "2s", 0x0A0B);
    let out = site.path().join("scan.out");
    let err = site.path().join("scan.err");
    let mut child = std::process::Command::new(crate::harness::bin())
        .args(["scan", "--seconds", "60", "--config"])
        .arg(&site.config)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &m.address)
        .env("RUST_LOG", "warn,bandgate=info")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&err).unwrap_or_default();
    let end = Instant::now() + WAIT;
    while m.calls("StartDiscovery") < 1 {
        assert!(Instant::now() < end, "scan never discovered:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Under the config's company id, with the config's key for band 17.
    m.advert(
        BAND_17,
        -57,
        0x0A0B,
        &seal(
            &Frame {
                device_id: 17,
                seq: 601,
                battery_pct: 66,
                worn: true,
                event: BandEvent::Sos,
            },
            0x0A0B,
            &key_of(17),
        ),
    );
    // Then nothing: the config's 2 s silence_restart ends the scan (exit 1) within seconds,
    // not after the default 3 x 60 s; the final table is printed all the same.
    let end = Instant::now() + WAIT;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("scan did not give up with silence_restart = 2s:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, Some(1), "{}", log());
    let table = std::fs::read_to_string(&out).unwrap();
    assert!(table.contains("adapter hci0"), "{table}");
    assert!(table.contains("company id 0x0A0B"), "{table}");
    let band = table
        .lines()
        .find(|l| l.trim_start().starts_with("17 "))
        .unwrap_or_else(|| panic!("band 17 not in the table:\n{table}"));
    assert!(band.contains("王秀英"), "the resident's name: {table}");
    assert!(band.contains("sos") && band.contains("66%"), "{table}");
    assert!(
        band.trim_end().ends_with("ok"),
        "opened with the config's key: {table}"
    );
}
