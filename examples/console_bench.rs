//! End-to-end benchmark of the duty console for `bench/run.sh --only console`: SOS frame handed
//! to the release daemon (replay source, a FIFO) → alert visible on an armed console in real
//! headless Chromium (the page logs `shown <alert_id>` once the region is in the DOM; the
//! browser driver `tests/console/driver.mjs` time-stamps each console message as it arrives).
//! Each alert is resolved by a phone before the next press, so every press is a first page.
//!
//! Not a test and not shipped. Flags: `--bin PATH` (default target/release/bandgate),
//! `--sos N` (default 100), `--json PATH` (the figures, for the README).

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use bandgate::cmd::demo::mosquitto::{free_port, wait_for_port, Mosquitto};
use bandgate::engine::frame;
use bandgate::engine::{BandEvent, DeviceKey, Frame};
use serde_json::{json, Value};

const COMPANY: u16 = 0xFFFF;
const BANDS: u32 = 4;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// The browser driver, spoken to one JSON line at a time.
struct Driver {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn start() -> Driver {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "bench: run `npm ci --prefix tests/console` first (and apt install chromium)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bench: node");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        Driver {
            _child: child,
            stdin,
            stdout,
        }
    }

    fn cmd(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], true, "bench: browser {cmd} -> {v}");
        v
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let mut bin = PathBuf::from("target/release/bandgate");
    let mut n = 100u32;
    let mut json_out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin" => bin = args.next().unwrap().into(),
            "--sos" => n = args.next().unwrap().parse().unwrap(),
            "--json" => json_out = Some(args.next().unwrap().into()),
            other => panic!("bench: unknown flag {other}"),
        }
    }
    let work = Path::new("target/bench-console");
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    let work = work.canonicalize().unwrap();
    let ws_port = free_port().unwrap();
    let broker = Mosquitto::start(&work, |port| {
        format!(
            "listener {port} 127.0.0.1\nlistener {ws_port}\nprotocol websockets\nbind_interface lo\n\
             allow_anonymous true\npersistence false\nlog_type error\nset_tcp_nodelay true\n"
        )
    })
    .expect("bench: mosquitto");
    wait_for_port(ws_port, || Ok(())).unwrap();
    let web_port = free_port().unwrap();

    let keys: Vec<DeviceKey> = (1..=BANDS).map(|_| DeviceKey(rand::random())).collect();
    let mut keys_toml = String::from("[devices]\n");
    let mut residents = String::new();
    for (i, k) in keys.iter().enumerate() {
        let id = i + 1;
        keys_toml.push_str(&format!("{id} = \"{}\"\n", hex::encode(k.0)));
        residents.push_str(&format!(
            "\n[[residents]]\nid = \"r{id}\"\nname = \"Resident {id}\"\naddress = \"Block {id}\"\nphone = \"1390000000{id}\"\ndevice_id = {id}\nteam = []\n"
        ));
    }
    std::fs::write(work.join("keys.toml"), keys_toml).unwrap();
    std::fs::set_permissions(
        work.join("keys.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let fifo = work.join("feed.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        work.join("bandgate.toml"),
        format!(
            r#"site_id = "bench"
gateway_id = "gw-bench"
locale = "en"
timezone = "UTC"
state_dir = "state"
keys_file = "keys.toml"
control_socket = "control.sock"

[ble]
source = "replay"
replay_file = "feed.fifo"

[mqtt]
url = "mqtt://127.0.0.1:{port}"

[alerts]
resolved_retention = "1s"

[escalation]
ack_timeouts = ["10m", "10m"]
renotify_every = "10m"
repeat_every = "10m"
supervisors = ["sup"]

[web]
listen = "127.0.0.1:{web_port}"
broker_url = "ws://{{host}}:{ws_port}"

[[staff]]
id = "duty"
name = "Duty"
phone = "100"

[[staff]]
id = "sup"
name = "Supervisor"
phone = "102"

[[rota]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
staff = ["duty"]
{residents}"#,
            port = broker.port()
        ),
    )
    .unwrap();
    let log = File::create(work.join("daemon.log")).unwrap();
    let mut daemon = Command::new(&bin)
        .args(["run", "--fast", "--config"])
        .arg(work.join("bandgate.toml"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("bench: bandgate");
    wait_for_port(web_port, || Ok(())).expect("bench: the console is not served");
    let mut feed = File::options().write(true).open(&fifo).unwrap();

    let mut browser = Driver::start();
    let url = format!("http://127.0.0.1:{web_port}/#u=duty&p=x");
    browser.cmd(json!({"cmd": "open", "phone": "duty", "url": url}));
    browser.cmd(json!({"cmd": "wait_status", "phone": "duty", "includes": ["Sound off"], "timeout_ms": 30000}));
    browser.cmd(json!({"cmd": "click", "phone": "duty", "button": "Start duty"}));
    browser.cmd(json!({"cmd": "wait_status", "phone": "duty", "includes": ["On duty"], "timeout_ms": 30000}));

    // The supervisor's phone resolves each alert once it is shown (anonymous broker, no ACL);
    // not the duty phone, whose `delivered` answers already count against its 20/s.
    let resolver = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    assert!(
        resolver,
        "bench: needs mosquitto_pub (apt install mosquitto-clients)"
    );
    let mut took = Vec::new();
    let mut seq = 1000;
    for i in 0..n {
        let device_id = i % BANDS + 1;
        seq += 1;
        let f = Frame {
            device_id,
            seq,
            battery_pct: 80,
            worn: true,
            event: BandEvent::Sos,
        };
        let data = frame::seal(&f, COMPANY, &keys[device_id as usize - 1]);
        let line = format!(
            "{{\"t_ms\":0,\"addr\":\"C8:FD:19:00:00:{device_id:02X}\",\"rssi\":-60,\"company_id\":65535,\"data\":\"{}\"}}\n",
            hex::encode(data)
        );
        let id = format!("{device_id}-{seq}");
        let t0 = now_ms();
        feed.write_all(line.as_bytes()).unwrap();
        let seen = browser.cmd(json!({"cmd": "wait_log", "phone": "duty",
            "contains": format!("shown {id}"), "timeout_ms": 30000}));
        took.push(seen["at_ms"].as_f64().unwrap() - t0);
        let out = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port().to_string(),
                "-q",
                "1",
            ])
            .args(["-t", "bandgate/bench/ack/sup", "-m"])
            .arg(
                json!({"alert_id": id, "action": "resolve", "resolution": "false_alarm"})
                    .to_string(),
            )
            .output()
            .unwrap();
        assert!(out.status.success());
        browser.cmd(
            json!({"cmd": "wait_region", "phone": "duty", "name": format!("Resident {device_id}"),
            "texts": ["Resolved"], "timeout_ms": 30000}),
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let mut sorted = took.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let result = json!({
        "sos": n,
        "p50_ms": (pct(&sorted, 0.5) * 10.0).round() / 10.0,
        "p99_ms": (pct(&sorted, 0.99) * 10.0).round() / 10.0,
        "max_ms": (sorted.last().copied().unwrap_or(0.0) * 10.0).round() / 10.0,
        "cpu": cpu,
    });
    println!();
    println!(
        "SOS -> alert visible on an armed console (release daemon, Mosquitto, headless Chromium)"
    );
    println!("| SOS | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        n, result["p50_ms"], result["p99_ms"], result["max_ms"]
    );
    println!(
        "machine: {cpu}, {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if let Some(p) = json_out {
        std::fs::write(p, serde_json::to_vec_pretty(&result).unwrap()).unwrap();
    }
    drop(broker);
}
