//! The operator's commands against the built binary: `bandgate run` on a replay capture and a
//! real Mosquitto, then `status`, `alerts`, `ack --as`, `resolve --as`, `test-alarm` through
//! its control socket while a phone watches the broker; every way of not reaching the daemon;
//! and `enrol` on a commented key file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bandgate::adapters::control::{Request, Response};
use bandgate::adapters::replay::CaptureLine;
use bandgate::cmd::operate as control;
use bandgate::engine::{frame, BandEvent, DeviceKey, Frame};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;

use crate::broker::Broker;
use crate::support::write_private;

const WAIT: Duration = Duration::from_secs(15);
/// Not one byte repeated: the key file refuses such placeholder keys.
const KEY_17: [u8; 16] = *b"\x17ops-test-key-17";
const PREFIX: &str = "bandgate/ops";

fn bandgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bandgate"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A sealed frame from band 17 as a capture line.
fn capture_line(t_ms: u64, seq: u32, event: BandEvent, key: [u8; 16]) -> String {
    let f = Frame {
        device_id: 17,
        seq,
        battery_pct: 80,
        worn: true,
        event,
    };
    let line = CaptureLine {
        t_ms,
        addr: "C8:FD:19:00:00:11".into(),
        rssi: Some(-60),
        company_id: 0xFFFF,
        data: hex::encode(frame::seal(&f, 0xFFFF, &DeviceKey(key))),
    };
    serde_json::to_string(&line).unwrap()
}

/// A gateway's files in a temp dir: config, keys (0600), a capture with one SOS from band 17
/// and one frame sealed with the wrong key.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
}

impl Site {
    fn new(broker: &Broker) -> Site {
        let dir = tempfile::tempdir().unwrap();
        write_private(
            dir.path(),
            "keys.toml",
            &format!("[devices]\n17 = \"{}\"\n", hex::encode(KEY_17)),
        );
        let capture = [
            capture_line(0, 1, BandEvent::Sos, KEY_17),
            capture_line(10, 2, BandEvent::Sos, [0x99; 16]),
        ]
        .join("\n");
        std::fs::write(dir.path().join("capture.jsonl"), capture + "\n").unwrap();
        let config = format!(
            r#"site_id = "ops"
gateway_id = "gw-ops"
locale = "en"
timezone = "UTC"
state_dir = "state"
keys_file = "keys.toml"
control_socket = "bandgate.sock"

[ble]
source = "replay"
replay_file = "capture.jsonl"

[mqtt]
url = "{url}"

[escalation]
ack_timeouts = ["10m", "10m"]
renotify_every = "10m"
repeat_every = "10m"
supervisors = ["chen"]

[[staff]]
id = "zhang"
name = "Zhang Wei"

[[staff]]
id = "li"
name = "Li Na"

[[staff]]
id = "chen"
name = "Chen Jie"

[[rota]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
staff = ["zhang"]

[[residents]]
id = "r017"
name = "Wang Xiuying"
device_id = 17
team = ["li"]
"#,
            url = broker.url()
        );
        let path = dir.path().join("bandgate.toml");
        std::fs::write(&path, config).unwrap();
        Site {
            socket: dir.path().join("bandgate.sock"),
            config: path,
            dir,
        }
    }

    fn socket(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// `bandgate <command> --socket <ours> <args>`.
    fn cli(&self, command: &str, args: &[&str]) -> Output {
        let mut all = vec![command, "--socket", self.socket()];
        all.extend_from_slice(args);
        bandgate(&all)
    }

    fn json(&self, command: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(command, &all);
        assert!(
            out.status.success(),
            "{command} {args:?}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// `bandgate run` as a child process; killed on drop unless stopped.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until its control socket answers and the broker is
    /// connected.
    fn start(site: &Site) -> Daemon {
        let log = site.dir.path().join("daemon.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_bandgate"))
            .arg("run")
            .arg("--config")
            .arg(&site.config)
            .arg("--fast")
            .env("RUST_LOG", "warn,bandgate=info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("bandgate run exited with {status}:\n{}", d.log());
            }
            if let Ok(Response::Status(s)) = control::request(&site.socket, &Request::Status) {
                if s.broker_connected {
                    return d;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer on its socket with the broker connected:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as systemd stops it; returns whether it exited 0.
    fn stop(mut self) -> bool {
        let mut child = self.child.take().unwrap();
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "bandgate did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A duty phone: a plain MQTT client on the whole site prefix.
struct Phone {
    client: Client,
    rx: mpsc::Receiver<(String, Value)>,
}

impl Phone {
    fn connect(broker: &Broker) -> Phone {
        let opts = MqttOptions::new("ops-phone", "127.0.0.1", broker.port());
        let (client, mut connection) = Client::new(opts, 64);
        let (tx, rx) = mpsc::channel();
        let (subacked_tx, subacked) = mpsc::channel();
        std::thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        // Cleared retained copies are empty: not a document.
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                            if tx.send((p.topic.clone(), v)).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        let _ = subacked_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        client
            .subscribe(format!("{PREFIX}/#"), QoS::AtLeastOnce)
            .unwrap();
        subacked.recv_timeout(WAIT).expect("no SUBACK");
        Phone { client, rx }
    }

    /// The first message on `topic` that `pick` accepts (others are skipped).
    fn wait(&self, topic: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, v)) if t == topic && pick(&v) => return v,
                Ok(_) => {}
                Err(_) => panic!("nothing on {topic} matched within {WAIT:?}"),
            }
        }
    }

    fn ack(&self, staff: &str, body: Value) {
        self.client
            .publish(
                format!("{PREFIX}/ack/{staff}"),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .unwrap();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `bandgate <args>` as a user who may not open `socket`: as root (who passes every
/// permission check) the command runs as `nobody`; otherwise the socket is chmod 000.
fn as_outsider(socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bandgate"));
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
    let site = Site::new(&broker);
    // A socket left behind by a crash: the daemon replaces it.
    drop(std::os::unix::net::UnixListener::bind(&site.socket).unwrap());
    let phone = Phone::connect(&broker);
    let daemon = Daemon::start(&site);

    let meta = std::fs::metadata(&site.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");

    // The capture's SOS pages zhang (on duty).
    phone.wait(&format!("{PREFIX}/notify/zhang"), |v| {
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
    assert_eq!(a["resident_name"], "Wang Xiuying");
    assert_eq!(a["state"], "open");
    assert_eq!(a["tier"], 1);
    assert_eq!(a["notified"], serde_json::json!(["zhang"]));
    assert_eq!(a["acked_by"], Value::Null);
    let out = site.cli("alerts", &[]);
    let human = text(&out.stdout);
    assert!(human.starts_with("ALERT"), "{human}");
    assert!(
        human.contains("17-1") && human.contains("Wang Xiuying (r017)") && human.contains("open"),
        "{human}"
    );

    // ack --as li (zhang's phone is lost): the phones are told, as after an MQTT ack.
    let out = site.cli("ack", &["17-1", "--as", "li"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("17-1 (sos, Wang Xiuying (r017)): acknowledged by li"),
        "{}",
        text(&out.stdout)
    );
    let note = phone.wait(&format!("{PREFIX}/notify/zhang"), |v| {
        v["reason"] == "acknowledged"
    });
    assert_eq!(note["alert"]["acked_by"], "li");
    assert_eq!(
        site.json("alerts", &[])["alerts"][0]["state"],
        "acknowledged"
    );

    // Refusals: the reason, a non-zero exit, nothing changed.
    let out = site.cli("ack", &["17-1", "--as", "wang"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("refused: unknown staff \"wang\""),
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
    let doc = phone.wait(&format!("{PREFIX}/alerts/17-1"), |v| {
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
    let page = phone.wait(&format!("{PREFIX}/notify/zhang"), |v| {
        v["alert"]["alert_id"] == id.as_str()
    });
    assert_eq!(page["reason"], "new");
    assert_eq!(page["alert"]["kind"], "test");
    phone.ack(
        "zhang",
        serde_json::json!({"alert_id": id, "action": "ack"}),
    );
    let doc = phone.wait(&format!("{PREFIX}/alerts/{id}"), |v| {
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
    let out = as_outsider(&site.socket, &["status", "--socket", site.socket()]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "add your user to the bandgate group: sudo adduser $USER bandgate, then log in again"
        ),
        "{}",
        text(&out.stderr)
    );

    // Stopping removes the socket; then the commands say it is not running.
    let log_path = daemon.log.clone();
    assert!(
        daemon.stop(),
        "{}",
        std::fs::read_to_string(log_path).unwrap()
    );
    assert!(!site.socket.exists(), "socket left behind");
    let out = site.cli("status", &[]);
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains(&format!(
        "bandgate is not running: no socket at {}; start it with systemctl start bandgate",
        site.socket()
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
