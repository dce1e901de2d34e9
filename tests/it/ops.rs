//! The operator's commands against the built binary: `bandgate run` on a replay capture and a
//! real Mosquitto, then `status`, `alerts`, `ack --as`, `resolve --as`, `test-alarm` through
//! its control socket while a phone watches the broker; every way of not reaching the daemon;
//! and `enrol` on a commented key file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bandgate::engine::{frame, BandEvent, DeviceKey, Frame};
use serde_json::Value;

use crate::harness::vectors::write_private;
use crate::harness::*;

const PREFIX: &str = "bandgate/ops";

/// The site: band 17 (of 王秀英, r017) is enrolled and presses SOS (alert 17-1); a second
/// frame, sealed with a key the gateway does not have, is refused (`auth`). Quiet timers.
fn ops_site(broker: &Broker) -> Site {
    let cfg = SiteConfig {
        ack_timeouts: vec!["10m", "10m"],
        renotify_every: "10m",
        repeat_every: "10m",
        claim_timeout: "15m",
        cancel_verify_timeout: "5m",
        resolved_retention: "10m",
        keys: vec![17],
        ..SiteConfig::default()
    };
    let capture = [
        sent(0, 17, 1, BandEvent::Sos),
        Sent {
            forged: true,
            ..sent(10, 17, 2, BandEvent::Sos)
        },
    ];
    Site::new("ops", broker.port(), &cfg, &capture)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `bandgate <args>` as a user who may not open `socket`: as root (who passes every
/// permission check) the command runs as `nobody`; otherwise the socket is chmod 000.
fn as_outsider(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(crate::harness::bin());
    cmd.args(args);
    if is_root() {
        use std::os::unix::process::CommandExt;
        // The temp dir is 0700 root: nobody cannot reach the socket in it.
        cmd.uid(65534).gid(65534);
        cmd.output().unwrap()
    } else {
        let before = std::fs::metadata(socket).unwrap().permissions();
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        let out = cmd.output().unwrap();
        std::fs::set_permissions(socket, before).unwrap();
        out
    }
}

#[test]
fn operator_commands_go_through_the_running_daemon() {
    let broker = Broker::start();
    let site = ops_site(&broker);
    let socket = site.socket();
    let s = socket.to_str().unwrap();
    // A socket left behind by a crash: the daemon replaces it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let phone = Phone::connect_to(broker.port(), "ops-phone", &[format!("{PREFIX}/#")]);
    let mut daemon = Gateway::start_args(&site, "daemon.log", &["--fast"], &[]);
    daemon.wait_ready(&site);

    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");

    // The capture's SOS pages zhang (on duty).
    phone.wait_doc(&format!("{PREFIX}/notify/zhang"), |v| {
        v["reason"] == "new" && v["alert"]["alert_id"] == "17-1"
    });

    // status: human and JSON.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let s = site.json("status", &[]);
        if s["frames_rejected"]["auth"] == 1 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["result"], "status", "{status}");
    assert_eq!(status["gateway_id"], "gw-ops");
    assert_eq!(status["broker_connected"], true);
    assert_eq!(status["adapter"], "replay");
    assert_eq!(status["adapter_ok"], true);
    assert_eq!(status["devices_enrolled"], 1);
    assert_eq!(status["devices_heard_15m"], 1);
    assert_eq!(status["open_alerts"], 1);
    assert_eq!(status["frames_accepted"], 1);
    assert_eq!(status["frames_rejected"]["auth"], 1, "{status}");
    assert_eq!(status["frames_rejected"]["duplicate"], 0);
    assert!(status["outbox_len"].is_u64());
    assert!(status["uptime_s"].is_u64());
    let out = site.cli("status", &[]);
    assert!(out.status.success());
    let human = text(&out.stdout);
    for needle in [
        "gateway gw-ops",
        "radio    replay: ok",
        "broker   connected",
        "1 enrolled, 1 heard in the last 15 min",
        "alerts   1 open",
        "frames   1 accepted, rejected: auth 1",
    ] {
        assert!(human.contains(needle), "{needle:?} not in:\n{human}");
    }

    // alerts: the SOS, who was paged, nobody acked yet.
    let alerts = site.json("alerts", &[]);
    let list = alerts["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{alerts}");
    let a = &list[0];
    assert_eq!(a["alert_id"], "17-1");
    assert_eq!(a["kind"], "sos");
    assert_eq!(a["resident_id"], "r017");
    assert_eq!(a["resident_name"], "王秀英");
    assert_eq!(a["state"], "open");
    assert_eq!(a["tier"], 1);
    assert_eq!(a["notified"], serde_json::json!(["zhang"]));
    assert_eq!(a["acked_by"], Value::Null);
    let out = site.cli("alerts", &[]);
    let human = text(&out.stdout);
    assert!(human.starts_with("ALERT"), "{human}");
    assert!(
        human.contains("17-1") && human.contains("王秀英 (r017)") && human.contains("open"),
        "{human}"
    );

    // ack --as li (zhang's phone is lost): the phones are told, as after an MQTT ack.
    let out = site.cli("ack", &["17-1", "--as", "li"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("17-1 (sos, 王秀英 (r017)): acknowledged by li"),
        "{}",
        text(&out.stdout)
    );
    let note = phone.wait_doc(&format!("{PREFIX}/notify/zhang"), |v| {
        v["reason"] == "acknowledged"
    });
    assert_eq!(note["alert"]["acked_by"], "li");
    assert_eq!(
        site.json("alerts", &[])["alerts"][0]["state"],
        "acknowledged"
    );

    // Refusals: the reason, a non-zero exit, nothing changed.
    let out = site.cli("ack", &["17-1", "--as", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refused: unknown staff \"ghost\""),
        "{}",
        text(&out.stderr)
    );
    let out = site.cli("ack", &["99-9", "--as", "zhang"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown alert \"99-9\""),
        "{}",
        text(&out.stderr)
    );
    let out = site.cli("ack", &["99-9", "--as", "zhang", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let refused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(refused["result"], "refused");
    assert_eq!(refused["reason"], "unknown_alert");
    let out = site.cli("resolve", &["17-1", "--as", "li", "--resolution", "maybe"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses an unknown resolution"
    );

    // resolve --as: the retained document shows it, the alert leaves the open list.
    let out = site.cli(
        "resolve",
        &["17-1", "--as", "li", "--resolution", "false_alarm"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("resolved by li as false_alarm"),
        "{}",
        text(&out.stdout)
    );
    let doc = phone.wait_doc(&format!("{PREFIX}/alerts/17-1"), |v| {
        v["state"] == "resolved"
    });
    assert_eq!(doc["resolution"], "false_alarm");
    assert_eq!(doc["resolved_by"], "li");
    assert_eq!(text(&site.cli("alerts", &[]).stdout), "no open alerts\n");
    let all = site.json("alerts", &["--all"]);
    assert_eq!(all["alerts"][0]["resolution"], "false_alarm");
    let out = site.cli("resolve", &["17-1", "--as", "li"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("alert 17-1 is already resolved"),
        "{}",
        text(&out.stderr)
    );

    // test-alarm: a test alert to a real phone; its ack over MQTT resolves it as test.
    let raised = site.json("test-alarm", &["--staff", "zhang"]);
    assert_eq!(raised["result"], "alert");
    let id = raised["alert_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("test-"), "{raised}");
    let page = phone.wait_doc(&format!("{PREFIX}/notify/zhang"), |v| {
        v["alert"]["alert_id"] == id.as_str()
    });
    assert_eq!(page["reason"], "new");
    assert_eq!(page["alert"]["kind"], "test");
    phone.act(
        PREFIX,
        "zhang",
        serde_json::json!({"alert_id": id, "action": "ack"}),
    );
    let doc = phone.wait_doc(&format!("{PREFIX}/alerts/{id}"), |v| {
        v["state"] == "resolved"
    });
    assert_eq!(doc["resolution"], "test");
    let out = site.cli("test-alarm", &[]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains(": test alarm paging zhang (tier 1)"),
        "{}",
        text(&out.stdout)
    );
    let out = site.cli("test-alarm", &["--staff", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown staff \"ghost\""));

    // --config finds the socket in bandgate.toml.
    let out = bandgate(&["status", "--config", site.config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Someone outside the bandgate group.
    let out = as_outsider(&socket, &["status", "--socket", s]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "add your user to the bandgate group: sudo adduser $USER bandgate, then log in again"
        ),
        "{}",
        text(&out.stderr)
    );

    // Stopping removes the socket; then the commands say it is not running.
    let stopped = daemon.term();
    assert!(stopped.success(), "{}", daemon.log());
    assert!(!socket.exists(), "socket left behind");
    let out = site.cli("status", &[]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains(&format!(
        "bandgate is not running: no socket at {s}; start it with systemctl start bandgate"
    )));
}

#[test]
fn commands_say_why_they_cannot_reach_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("bandgate.sock");
    let s = socket.to_str().unwrap();

    let out = bandgate(&["alerts", "--socket", s]);
    assert_eq!(out.status.code(), Some(69));
    assert_eq!(
        text(&out.stderr),
        format!("bandgate: bandgate is not running: no socket at {s}; start it with systemctl start bandgate\n")
    );

    // The default path comes from --config.
    let config = dir.path().join("bandgate.toml");
    std::fs::write(&config, "control_socket = \"other.sock\"\n").unwrap();
    let out = bandgate(&["status", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains(&format!(
        "no socket at {}",
        dir.path().join("other.sock").display()
    )));

    // A socket left by a crash: nothing listens.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let out = bandgate(&["status", "--socket", s]);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        text(&out.stderr).contains("bandgate is not running: nothing answers on"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(&socket).unwrap();

    // Not permitted.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = as_outsider(&socket, &["status", "--socket", s]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!(
        "permission denied on {s}: add your user to the bandgate group"
    )));

    // Accepts but never answers: the command gives up after 5 s.
    let (done, finished) = mpsc::channel::<()>();
    let hold = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let _ = finished.recv_timeout(Duration::from_secs(30));
        drop(conn);
    });
    let started = Instant::now();
    let out = bandgate(&["ack", "17-1", "--as", "zhang", "--socket", s]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bandgate did not answer within 5 s"),
        "{}",
        text(&out.stderr)
    );
    assert!(took >= Duration::from_secs(5), "{took:?}");
    done.send(()).unwrap();
    hold.join().unwrap();
}

const KEYS_WITH_COMMENTS: &str = "# bandgate key file\n# SECRET: chmod 600\n\n[devices]\n# Mrs Wang's band\n17 = \"e6f32b17973e664af8665af55463bac3\"\n18 = \"5e971ed0e9726076b6227e482ea0326f\" # spare\n";

/// The `key` line of enrol's report.
fn printed_key(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("key "))
        .unwrap_or_else(|| panic!("no key line in:\n{stdout}"))
        .trim()
        .to_string()
}

#[test]
fn enrol_adds_a_fresh_key_and_keeps_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(dir.path(), "keys.toml", KEYS_WITH_COMMENTS);
    let k = keys.to_str().unwrap();

    let out = bandgate(&[
        "enrol",
        "--device-id",
        "42",
        "--resident",
        "r042",
        "--keys",
        k,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let hex = printed_key(&stdout);
    assert_eq!(hex.len(), 32);
    for needle in [
        "device id    42",
        "company id   0xFFFF",
        "wire format  version 0xB1",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }

    let after = std::fs::read_to_string(&keys).unwrap();
    assert!(after.starts_with(KEYS_WITH_COMMENTS), "{after}");
    assert!(after.contains(&format!("42 = \"{hex}\"  # resident r042, enrolled ")));
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "a temp file was left behind");

    // The loader takes it, and the printed key is the one it holds.
    let ring = bandgate::config::keys::load(&keys).unwrap_or_else(|p| panic!("{p}"));
    assert!(ring.contains(17) && ring.contains(18) && ring.contains(42));
    let f = Frame {
        device_id: 42,
        seq: 1,
        battery_pct: 90,
        worn: true,
        event: BandEvent::Sos,
    };
    let sealed = frame::seal(&f, 0xFFFF, &DeviceKey::from_hex(&hex).unwrap());
    assert_eq!(frame::open(&sealed, 0xFFFF, &ring).unwrap(), f);

    // A second band gets a different key.
    let out = bandgate(&[
        "enrol",
        "--device-id",
        "43",
        "--resident",
        "r043",
        "--keys",
        k,
    ]);
    assert!(out.status.success());
    assert_ne!(printed_key(&text(&out.stdout)), hex);

    // Enrolling an id that has a key would lock its band out: refused, file untouched.
    let before = std::fs::read_to_string(&keys).unwrap();
    let out = bandgate(&[
        "enrol",
        "--device-id",
        "17",
        "--resident",
        "r017",
        "--keys",
        k,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("device 17 already has a key"), "{err}");
    assert!(err.contains("To replace the band"), "{err}");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), before);

    // A world-readable key file is refused as the daemon refuses it.
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bandgate(&[
        "enrol",
        "--device-id",
        "44",
        "--resident",
        "r044",
        "--keys",
        k,
    ]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("readable by every user"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), before);
}

#[test]
fn enrol_with_config_checks_the_resident() {
    let dir = tempfile::tempdir().unwrap();
    write_private(dir.path(), "keys.toml", KEYS_WITH_COMMENTS);
    let config = dir.path().join("bandgate.toml");
    std::fs::write(
        &config,
        "keys_file = \"keys.toml\"\n[ble]\ncompany_id = 0x1234\n\
         [[residents]]\nid = \"r017\"\nname = \"Wang\"\ndevice_id = 17\n\
         [[residents]]\nid = \"r050\"\nname = \"Zhao\"\ndevice_id = 50\n\
         [[residents]]\nid = \"r051\"\nname = \"Sun\"\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let enrol = |id: &str, resident: &str| {
        let out = bandgate(&[
            "enrol",
            "--device-id",
            id,
            "--resident",
            resident,
            "--config",
            c,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };

    // keys_file and company_id come from the config.
    let out = enrol("50", "r050");
    assert!(out.contains("company id   0x1234"), "{out}");
    assert!(
        out.contains("resident r050 (Zhao) already has device_id = 50: nothing to change"),
        "{out}"
    );
    let ring = bandgate::config::keys::load(&dir.path().join("keys.toml")).unwrap();
    assert!(ring.contains(50));

    let out = enrol("51", "r051");
    assert!(
        out.contains("resident r051 (Sun) has no band yet: add this line"),
        "{out}"
    );
    assert!(out.contains("  device_id = 51\n"), "{out}");

    let out = enrol("52", "r017");
    assert!(
        out.contains("resident r017 (Wang) wears band 17: change its line to"),
        "{out}"
    );

    let out = enrol("53", "r099");
    assert!(
        out.contains("there is no resident \"r099\": add an entry"),
        "{out}"
    );
    assert!(out.contains("bandgate check-config --config"), "{out}");
}

#[test]
fn enrol_bthome_adds_a_bind_key_by_mac_and_enrolling_again_keeps_it_with_a_new_enrolment() {
    let dir = tempfile::tempdir().unwrap();
    let keys = write_private(dir.path(), "keys.toml", KEYS_WITH_COMMENTS);
    let k = keys.to_str().unwrap();
    let enrol = |mac: &str, id: &str, extra: &[&str]| {
        let mut args = vec![
            "enrol",
            "--bthome",
            mac,
            "--device-id",
            id,
            "--resident",
            "r9001",
            "--keys",
            k,
        ];
        args.extend_from_slice(extra);
        bandgate(&args)
    };
    let out = enrol("54:48:e6:8f:80:a5", "9001", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let hex = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("bind key"))
        .unwrap_or_else(|| panic!("no bind key in:\n{stdout}"))
        .trim()
        .to_string();
    assert_eq!(hex.len(), 32, "{stdout}");
    assert!(hex
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let after = std::fs::read_to_string(&keys).unwrap();
    assert!(after.starts_with(KEYS_WITH_COMMENTS), "{after}");
    let ring = bandgate::config::keys::load(&keys).unwrap();
    let mac = bandgate::engine::bthome::parse_mac("54:48:E6:8F:80:A5").unwrap();
    let first = ring.bthome().get(&mac).unwrap().clone();
    assert_eq!(first.device_id, 9001);
    assert_eq!(first.key.to_hex(), hex);

    // Enrolled again (its counter went back): same key, a new enrolment.
    let out = enrol("54:48:E6:8F:80:A5", "9001", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("again"), "{}", text(&out.stdout));
    let again = bandgate::config::keys::load(&keys).unwrap();
    let second = again.bthome().get(&mac).unwrap();
    assert_eq!(second.key, first.key);
    assert_ne!(second.enrolment, first.enrolment);
    assert_eq!(again.bthome().len(), 1);

    // A key given is the one written; another id for this MAC, or a taken id, is refused.
    let given = "231d39c1d7cc1ab1aee224cd096db932";
    let out = enrol("54:48:E6:8F:80:A6", "9002", &["--key", given]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&keys).unwrap().contains(given));
    let out = enrol("54:48:E6:8F:80:A5", "9003", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("enrolled as device 9001"),
        "{}",
        text(&out.stderr)
    );
    let out = enrol("54:48:E6:8F:80:A7", "9002", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("taken"), "{}", text(&out.stderr));
    let out = enrol("54:48:E6:8F:80", "9004", &[]);
    assert_eq!(out.status.code(), Some(64));
}
