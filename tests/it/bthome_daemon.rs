//! Black-box tests of BTHome devices as alarm sources (`shared/spec/bthome.md`): the built
//! daemon scans the mock BlueZ of `ble.rs`, which signals `ServiceData` under UUID 0xFCD2 as
//! bluetoothd does, and pages through a real Mosquitto. A Shelly-style encrypted press pages
//! an SOS; its replay is refused (also after a restart); the device unencrypted is refused as a
//! downgrade; a double press cancels its open alert.

use bandgate::engine::bthome::{self, ButtonEvent, Mac};
use bandgate::engine::DeviceKey;
use serde_json::Value;

use crate::ble::MockBluez;
use crate::ble_daemon::{bluez_site, phone, start, wait, wait_discovering};
use crate::harness::*;

const BUTTON: &str = "54:48:E6:8F:80:A5";
const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";

fn mac() -> Mac {
    bthome::parse_mac(BUTTON).unwrap()
}

fn key() -> DeviceKey {
    DeviceKey::from_hex(KEY).unwrap()
}

/// A Shelly BLU Button1's frame: trigger-based, encrypted, packet id, battery, one button.
fn shelly(counter: u32, event: ButtonEvent) -> Vec<u8> {
    bthome::seal(
        &mac(),
        &key(),
        counter,
        true,
        counter as u8,
        Some(90),
        &[event],
    )
}

/// A BlueZ site (`ble_daemon.rs`) with the button enrolled as device 9001 and bound to a
/// resident whose team is li.
fn button_site(broker: &Broker, site_id: &str) -> Site {
    let site = bluez_site(broker, site_id, "60s");
    let keys = site.path().join("keys.toml");
    let mut text = std::fs::read_to_string(&keys).unwrap();
    text.push_str(&format!(
        "\n[bthome.\"{BUTTON}\"]\ndevice_id = 9001\nkey = \"{KEY}\"\n"
    ));
    std::fs::write(&keys, text).unwrap();
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config.push_str(
        "\n[[residents]]\nid = \"r9001\"\nname = \"赵德明\"\naddress = \"广惠园社区 7号楼 101\"\n\
         phone = \"13800000020\"\nnotes = \"\"\ndevice_id = 9001\nteam = [\"li\"]\n",
    );
    std::fs::write(&site.config, config).unwrap();
    site
}

/// Waits until the daemon's status counts at least `n` frames refused as `reason`.
fn wait_refused(gw: &Gateway, site: &Site, reason: &str, n: u64) -> Value {
    let mut last = Value::Null;
    wait(gw, &format!("{n} frame(s) refused as {reason}"), || {
        last = site.status();
        last["frames_rejected"][reason].as_u64().unwrap_or(0) >= n
    });
    last
}

#[test]
fn a_shelly_press_pages_sos_its_replays_and_plain_frames_are_refused_and_a_double_press_cancels() {
    let broker = Broker::start();
    let m = &mut MockBluez::start();
    let site = button_site(&broker, "bt1");
    let p = site.prefix();
    let phone = phone(&site, "phones-bt1");
    let mut gw = start(&site, m, "gateway.log");
    gw.wait_ready(&site);
    wait_discovering(&gw, m, 1);

    // The button's first advert (BlueZ's new-device signal) is a press: an SOS page.
    m.service(BUTTON, -57, &shelly(100, ButtonEvent::Press));
    let new = phone.wait_page(&p, "zhang", "new", "9001-100");
    assert_eq!(new["kind"], "sos", "{new}");
    assert_eq!(new["device_id"], 9001);
    assert_eq!(new["resident"]["id"], "r9001");
    assert_eq!(new["battery_pct"], 90);
    assert_eq!(new["rssi"], -57);

    // Its device state: battery from the frame, the button's own RSSI.
    let state = phone.wait_doc(&format!("{p}/devices/9001/state"), |d| {
        d["battery_pct"] == 90
    });
    assert_eq!(state["resident_id"], "r9001", "{state}");
    assert_eq!(state["rssi"], -57, "{state}");

    // The same frame again (a device repeats it; or a recording replayed): refused, counted.
    m.service(BUTTON, -57, &shelly(100, ButtonEvent::Press));
    wait_refused(&gw, &site, "duplicate", 1);

    // The button with encryption off: refused as a downgrade, whatever it says.
    m.service(
        BUTTON,
        -57,
        &bthome::plain(true, 7, Some(90), &[ButtonEvent::Press]),
    );
    let status = wait_refused(&gw, &site, "downgrade", 1);
    assert_eq!(status["frames_rejected"]["auth"], 0, "{status}");

    // A double press: its open alert is cancelled (verify: the people paged are told).
    m.service(BUTTON, -57, &shelly(101, ButtonEvent::DoublePress));
    let cancel = phone.wait_page(&p, "zhang", "cancel_requested", "9001-100");
    assert_eq!(cancel["cancel_requested"], true, "{cancel}");

    // kill -9, then start again on the same state: the old press is still a replay.
    gw.kill9();
    let mut gw = start(&site, m, "gateway-2.log");
    gw.wait_ready(&site);
    m.service(BUTTON, -57, &shelly(100, ButtonEvent::Press));
    m.service(BUTTON, -57, &shelly(101, ButtonEvent::DoublePress));
    let status = wait_refused(&gw, &site, "stale", 1);
    wait_refused(&gw, &site, "duplicate", 1);
    assert_eq!(status["frames_rejected"]["auth"], 0, "{status}");
    assert!(
        gw.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("enrolled again")),
        "the stale counter's warning names the fix:\n{}",
        gw.log()
    );
    // A fresh press after the restart is news again: it re-pages the open alert.
    m.service(BUTTON, -57, &shelly(102, ButtonEvent::Press));
    phone.wait_until("the open alert re-paged by the new press", |msgs| {
        pages(msgs, &p, "9001-100")
            .iter()
            .any(|(staff, reason, doc)| {
                staff == "zhang" && reason == "reminder" && doc["cancel_requested"] == false
            })
    });
    // Nothing the replays did raised a second alert (they were handled before the press that
    // was just paged: the loop takes one device's frames in order).
    let other: Vec<String> = phone
        .messages()
        .iter()
        .filter(|m| m.topic.starts_with(&format!("{p}/alerts/9001-")))
        .map(|m| m.topic.clone())
        .filter(|t| !t.ends_with("/9001-100"))
        .collect();
    assert!(other.is_empty(), "{other:?}");
    assert!(!gw.log().contains("panicked"));
}

#[test]
fn a_bthome_line_of_a_replay_capture_pages_like_the_radio() {
    let broker = Broker::start();
    let site = Site::new("bt2", broker.port(), &SiteConfig::default(), &[]);
    let keys = site.path().join("keys.toml");
    let mut text = std::fs::read_to_string(&keys).unwrap();
    text.push_str(&format!(
        "\n[bthome.\"{BUTTON}\"]\ndevice_id = 9001\nkey = \"{KEY}\"\n"
    ));
    std::fs::write(&keys, text).unwrap();
    let mut config = std::fs::read_to_string(&site.config).unwrap();
    config.push_str(
        "\n[[residents]]\nid = \"r9001\"\nname = \"赵德明\"\naddress = \"广惠园社区 7号楼 101\"\n\
         phone = \"13800000020\"\nnotes = \"\"\ndevice_id = 9001\nteam = [\"li\"]\n",
    );
    std::fs::write(&site.config, config).unwrap();
    // A capture as `bandgate scan --record` writes a BTHome advert, replayed twice.
    let line = serde_json::json!({"t_ms": 0, "addr": BUTTON, "rssi": -60,
        "service_uuid": bthome::UUID, "service_data": hex::encode(shelly(7, ButtonEvent::Press))});
    std::fs::write(
        site.path().join("capture.jsonl"),
        format!("{line}\n{line}\n"),
    )
    .unwrap();
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-bt2", &p);
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    gw.wait_ready(&site);
    let new = phone.wait_page(&p, "zhang", "new", "9001-7");
    assert_eq!(new["kind"], "sos", "{new}");
    assert_eq!(new["resident"]["id"], "r9001");
    let mut last = Value::Null;
    wait(&gw, "the repeat refused as a duplicate", || {
        last = site.status();
        last["frames_rejected"]["duplicate"] == 1
    });
}
