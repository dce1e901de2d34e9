//! BLE intake benchmark for `bench/run.sh --only ble`: the release `bandgate run` with
//! `ble.source = "bluez"` against the test suite's mock BlueZ (python-dbusmock's `bluez5` on a
//! private `dbus-daemon`), paging through the real Mosquitto to a subscriber.
//!
//! The mock emits pre-sealed frames from inside its own process (`EmitBurst`, added by
//! `tests/data/bluez_ctl.py`): every `PropertiesChanged` is built first, then sent back to back.
//! Each trial is a burst of heartbeats from 100 bands with one SOS (a band of its own) in the
//! middle; the SOS latency is from just after the mock handed the SOS to the bus (wall clock in
//! the mock) to the alert document at the subscriber (wall clock here). A python mock is not
//! bluetoothd: it shows what the gateway's side of D-Bus costs and whether an SOS overtakes,
//! not what a radio delivers.
//!
//! Flags: `--bin label=path` (repeatable: compare binaries on the same feed), `--port` (the
//! broker), `--work`, `--out`, `--trials` (default 20), `--burst` (default 10,000),
//! `--rates 0,20000,5000` (the default: one set of trials per feed rate; 0 is as fast as the mock can),
//! `--flood` (the throughput burst, default 50,000), `--python`, `--state-tmpfs` (the state
//! directory on /dev/shm, to tell the durable commit's share from the radio path's).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bandgate::engine::frame;
use bandgate::engine::{BandEvent, DeviceKey, Frame};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const COMPANY: u16 = 0xFFFF;
/// Bands sending the heartbeats; each trial's SOS comes from a band of its own after them.
const HB_BANDS: u32 = 100;

struct Args {
    bins: Vec<(String, PathBuf)>,
    port: u16,
    work: PathBuf,
    out: PathBuf,
    trials: u32,
    burst: u32,
    flood: u32,
    python: String,
    /// Feed rates of the trial sets (adverts/s; 0: as fast as the mock can).
    rates: Vec<f64>,
    /// State directory on /dev/shm instead of the work directory's disk.
    state_tmpfs: bool,
}

fn args() -> Args {
    let mut a = Args {
        bins: Vec::new(),
        port: 1883,
        work: "target/bench-ble".into(),
        out: "bench/results-ble.json".into(),
        trials: 20,
        burst: 10_000,
        flood: 50_000,
        python: std::env::var("BANDGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into()),
        state_tmpfs: false,
        rates: vec![0.0, 20_000.0, 5_000.0],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bin" => {
                let v = v();
                let (label, path) = v.split_once('=').unwrap_or(("bandgate", v.as_str()));
                a.bins.push((label.to_string(), PathBuf::from(path)));
            }
            "--port" => a.port = v().parse().unwrap(),
            "--work" => a.work = v().into(),
            "--out" => a.out = v().into(),
            "--trials" => a.trials = v().parse().unwrap(),
            "--burst" => a.burst = v().parse().unwrap(),
            "--flood" => a.flood = v().parse().unwrap(),
            "--python" => a.python = v(),
            "--state-tmpfs" => a.state_tmpfs = true,
            "--rates" => a.rates = v().split(',').map(|r| r.parse().unwrap()).collect(),
            other => panic!("unknown flag {other}"),
        }
    }
    if a.bins.is_empty() {
        a.bins
            .push(("bandgate".into(), "target/release/bandgate".into()));
    }
    a
}

fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------- processes

/// utime + stime of a process, in clock ticks (100 Hz).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The mock's controller (`tests/data/bluez_ctl.py`): one JSON command a line.
struct Ctl {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Ctl {
    fn cmd(&mut self, c: &Value) -> String {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        reply.trim().to_string()
    }
}

/// Property reads of devices the mock logged (`Get`/`GetAll` on `.../dev_*`): what a source
/// that reads each advert back costs bluetoothd.
fn device_reads(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace().skip(1);
            matches!(w.next(), Some("Get" | "GetAll"))
                && w.next().is_some_and(|p| p.contains("/dev_"))
        })
        .count() as u64
}

fn addr(id: u32) -> String {
    format!("C8:FD:19:00:{:02X}:{:02X}", id >> 8 & 0xff, id & 0xff)
}

// ---------------------------------------------------------------- the site

struct Site {
    dir: PathBuf,
    prefix: String,
    keys: Vec<DeviceKey>,
}

fn make_site(dir: &Path, state: &Path, bands: u32, label: &str) -> Site {
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(state);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::create_dir_all(state).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut keys = Vec::new();
    let mut keys_toml = String::from("[devices]\n");
    for id in 1..=bands {
        let k: [u8; 16] = rng.gen();
        keys_toml.push_str(&format!("{id} = \"{}\"\n", hex::encode(k)));
        keys.push(DeviceKey(k));
    }
    let keys_path = dir.join("keys.toml");
    std::fs::write(&keys_path, keys_toml).unwrap();
    std::fs::set_permissions(&keys_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let site_id = format!("blebench-{label}-{}", std::process::id());
    let mut t = format!(
        r#"site_id = "{site_id}"
gateway_id = "gw-{site_id}"
locale = "en"
timezone = "UTC"
state_dir = "{state}"
keys_file = "keys.toml"

[ble]
source = "bluez"
adapter = "hci0"
company_id = 0xFFFF
silence_restart = "600s"

[mqtt]
url = "mqtt://127.0.0.1:PORT"
status_interval = "1s"
device_state_interval = "60s"

[escalation]
ack_timeouts = ["36000s", "36000s"]
renotify_every = "36000s"
repeat_every = "36000s"
supervisors = ["sup"]

[supervision]
silent_after = "30m"

[[staff]]
id = "duty"
name = "Duty"
phone = "100"

[[staff]]
id = "team"
name = "Team"
phone = "101"

[[staff]]
id = "sup"
name = "Supervisor"
phone = "102"

[[rota]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
staff = ["duty"]
"#,
        state = state.display(),
    );
    for id in 1..=bands {
        t.push_str(&format!(
            "\n[[residents]]\nid = \"r{id}\"\nname = \"Resident {id}\"\naddress = \"Flat {id}\"\nphone = \"139{id:08}\"\ndevice_id = {id}\nteam = [\"team\"]\n"
        ));
    }
    std::fs::write(dir.join("bandgate.toml"), t).unwrap();
    Site {
        dir: dir.to_path_buf(),
        prefix: format!("bandgate/{site_id}"),
        keys,
    }
}

fn seal(site: &Site, device_id: u32, seq: u32, event: BandEvent) -> String {
    hex::encode(frame::seal(
        &Frame {
            device_id,
            seq,
            battery_pct: 80,
            worn: true,
            event,
        },
        COMPANY,
        &site.keys[device_id as usize - 1],
    ))
}

fn heartbeat(seq: u32) -> BandEvent {
    BandEvent::Heartbeat {
        heart_rate: Some(70),
        spo2: Some(97),
        steps: seq,
    }
}

// ---------------------------------------------------------------- the phone

struct Arrival {
    wall: f64,
    topic: String,
    doc: Value,
}

struct Phone {
    rx: mpsc::Receiver<Arrival>,
    status: Option<Value>,
    status_at: f64,
    /// Wall-clock time of each alert document's first arrival, and its `raised_at` (when the
    /// gateway's BLE source built the advert, ms resolution).
    alerts: HashMap<String, (f64, f64)>,
}

fn phone(port: u16, prefix: &str) -> Phone {
    // The prefix names the run: two phones with one client id would take turns kicking
    // each other off the broker.
    let id = format!("phone-{}", prefix.replace('/', "-"));
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut conn) = rumqttc::Client::new(o, 1024);
    for t in ["alerts/+", "gateways/+/status"] {
        client
            .subscribe(format!("{prefix}/{t}"), rumqttc::QoS::AtLeastOnce)
            .unwrap();
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _client = client;
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let wall = wall();
                    let doc = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    let a = Arrival {
                        wall,
                        topic: p.topic.clone(),
                        doc,
                    };
                    if tx.send(a).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("ble bench phone: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
    Phone {
        rx,
        status: None,
        status_at: 0.0,
        alerts: HashMap::new(),
    }
}

impl Phone {
    fn drain(&mut self, wait: Duration) {
        if let Ok(a) = self.rx.recv_timeout(wait) {
            self.take(a);
        }
        while let Ok(a) = self.rx.try_recv() {
            self.take(a);
        }
    }
    fn take(&mut self, a: Arrival) {
        if a.topic.contains("/gateways/") {
            if a.doc["online"] == json!(true) {
                self.status = Some(a.doc);
                self.status_at = a.wall;
            }
        } else if let Some(id) = a.doc["alert_id"].as_str() {
            let raised = a.doc["raised_at"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map_or(f64::NAN, |t| t.as_millisecond() as f64 / 1000.0);
            self.alerts
                .entry(id.to_string())
                .or_insert((a.wall, raised));
        }
    }
    fn counter(&self, key: &str) -> u64 {
        self.status
            .as_ref()
            .and_then(|s| s[key].as_u64())
            .unwrap_or(0)
    }
    fn wait(&mut self, limit: Duration, mut ok: impl FnMut(&Phone) -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if ok(self) {
                return true;
            }
            self.drain(Duration::from_millis(20));
        }
        ok(self)
    }
    /// Waits until `frames_accepted` reaches `want` or stops moving for `stall`; returns the
    /// count and the wall-clock time of the first status that showed it.
    fn settle(&mut self, want: u64, stall: Duration) -> (u64, f64) {
        let mut last = (self.counter("frames_accepted"), self.status_at);
        let mut since = Instant::now();
        loop {
            self.drain(Duration::from_millis(50));
            let now = self.counter("frames_accepted");
            if now != last.0 {
                last = (now, self.status_at);
                since = Instant::now();
            }
            if now >= want || since.elapsed() > stall {
                return last;
            }
        }
    }
}

// ---------------------------------------------------------------- one binary

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn run_one(a: &Args, label: &str, bin: &Path) -> Value {
    eprintln!("ble bench: {label} ({})", bin.display());
    let dir = a.work.join(label);
    let bands = HB_BANDS + a.trials * a.rates.len() as u32;
    let state = if a.state_tmpfs {
        PathBuf::from(format!(
            "/dev/shm/bandgate-ble-bench-{}-{label}",
            std::process::id()
        ))
    } else {
        dir.join("state")
    };
    let site = make_site(&dir, &state, bands, label);
    let mut kids = Kids(Vec::new());

    // The private bus and the mock bluetoothd, as tests/it/ble.rs starts them.
    let sock = dir.join("bus");
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!("--address=unix:path={}", sock.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon");
    let mut address = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let address = address.trim().to_string();
    let bus_pid = bus.id();
    kids.0.push(bus);
    let mock_log = dir.join("mock.log");
    let mock = Command::new(&a.python)
        .args(["-m", "dbusmock", "--template", "bluez5", "-l"])
        .arg(&mock_log)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m dbusmock");
    let mock_pid = mock.id();
    kids.0.push(mock);
    let mut ctl_child = Command::new(&a.python)
        .arg("tests/data/bluez_ctl.py")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bluez_ctl.py");
    let mut ctl = Ctl {
        stdin: ctl_child.stdin.take().unwrap(),
        stdout: BufReader::new(ctl_child.stdout.take().unwrap()),
    };
    kids.0.push(ctl_child);
    let up = Instant::now();
    loop {
        let r = ctl.cmd(&json!({"cmd": "adapter", "name": "hci0"}));
        if r.starts_with("ok") {
            break;
        }
        assert!(up.elapsed() < Duration::from_secs(15), "mock: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The gateway, started as systemd would.
    let mut phone = phone(a.port, &site.prefix);
    let sock_path = site.dir.join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let log = File::create(site.dir.join("daemon.log")).unwrap();
    let gw = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(site.dir.join("bandgate.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .env(
            "BANDGATE__MQTT__URL",
            format!("mqtt://127.0.0.1:{}", a.port),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("bandgate");
    let gw_pid = gw.id();
    kids.0.push(gw);
    let mut buf = [0u8; 4096];
    loop {
        let n = notify.recv(&mut buf).expect("no READY=1 from bandgate");
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break;
        }
    }
    assert!(
        phone.wait(Duration::from_secs(30), |p| p
            .status
            .as_ref()
            .is_some_and(|s| s["adapter_ok"] == json!(true))),
        "the gateway never said it was scanning"
    );

    // Every band once (the device objects exist before the bursts, as for a band BlueZ has
    // heard before).
    let mut seq: Vec<u32> = vec![1; bands as usize + 1];
    for id in 1..=bands {
        let r = ctl.cmd(
            &json!({"cmd": "advert", "adapter": "hci0", "addr": addr(id),
            "rssi": -60, "company_id": COMPANY, "data": seal(&site, id, 1, heartbeat(1))}),
        );
        assert!(r.starts_with("ok"), "{r}");
        seq[id as usize] = 2;
    }
    let mut sent = u64::from(bands);
    let (got, _) = phone.settle(sent, Duration::from_secs(30));
    assert_eq!(got, sent, "the first advert of every band");

    // Trials: a burst of heartbeats with one SOS in the middle.
    let ticks = |pid| cpu_ticks(pid);
    let before = (ticks(gw_pid), ticks(bus_pid), ticks(mock_pid));
    let reads_before = device_reads(&mock_log);
    let mut sets = Vec::new();
    let mut next_sos_band = HB_BANDS + 1;
    for &rate in &a.rates {
        let mut lat_ms = Vec::new();
        let mut to_source_ms = Vec::new();
        let mut from_source_ms = Vec::new();
        let mut feed_rates = Vec::new();
        let mut lost_trials = 0u64;
        let mut missing_sos = 0;
        for t in 0..a.trials {
            let sos_band = next_sos_band;
            next_sos_band += 1;
            let mid = a.burst / 2;
            let mut frames = Vec::with_capacity(a.burst as usize + 1);
            for i in 0..=a.burst {
                if i == mid {
                    let s = seq[sos_band as usize];
                    seq[sos_band as usize] += 1;
                    frames.push(json!([
                        addr(sos_band),
                        -55,
                        seal(&site, sos_band, s, BandEvent::Sos)
                    ]));
                    continue;
                }
                let band = i % HB_BANDS + 1;
                let s = seq[band as usize];
                seq[band as usize] += 1;
                frames.push(json!([addr(band), -70, seal(&site, band, s, heartbeat(s))]));
            }
            let alert_id = format!("{sos_band}-{}", seq[sos_band as usize] - 1);
            let r = ctl.cmd(
                &json!({"cmd": "burst", "adapter": "hci0", "company_id": COMPANY,
            "frames": frames, "mark": mid, "rate": rate}),
            );
            let f: Vec<f64> = r
                .strip_prefix("ok ")
                .unwrap_or_else(|| panic!("burst: {r}"))
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            let (t0, t_mark, t_end) = (f[0], f[1], f[2]);
            feed_rates.push(f64::from(a.burst + 1) / (t_end - t0));
            sent += u64::from(a.burst) + 1;
            let ok = phone.wait(Duration::from_secs(60), |p| {
                p.alerts.contains_key(&alert_id)
            });
            if ok {
                let (at, raised) = phone.alerts[&alert_id];
                lat_ms.push((at - t_mark) * 1000.0);
                to_source_ms.push((raised - t_mark) * 1000.0);
                from_source_ms.push((at - raised) * 1000.0);
            } else {
                missing_sos += 1;
            }
            let (got, _) = phone.settle(sent, Duration::from_secs(5));
            if got < sent {
                lost_trials += 1;
                // Start the next trial from what the gateway has.
                sent = got;
            }
            eprintln!(
                "  trial {t}: fed {:.0}/s, SOS {:.2} ms, accepted {got}",
                feed_rates.last().unwrap(),
                lat_ms.last().copied().unwrap_or(f64::NAN)
            );
        }
        lat_ms.sort_by(|a, b| a.total_cmp(b));
        to_source_ms.sort_by(|a, b| a.total_cmp(b));
        from_source_ms.sort_by(|a, b| a.total_cmp(b));
        feed_rates.sort_by(|a, b| a.total_cmp(b));
        sets.push(json!({
            "rate_asked": rate,
            "sos_n": lat_ms.len(),
            "sos_missing": missing_sos,
            "sos_p50_ms": round3(pct(&lat_ms, 50.0)),
            "sos_p99_ms": round3(pct(&lat_ms, 99.0)),
            "sos_max_ms": round3(lat_ms.last().copied().unwrap_or(f64::NAN)),
            "sos_emit_to_source_p50_ms": round3(pct(&to_source_ms, 50.0)),
            "sos_emit_to_source_p99_ms": round3(pct(&to_source_ms, 99.0)),
            "sos_source_to_doc_p50_ms": round3(pct(&from_source_ms, 50.0)),
            "sos_source_to_doc_p99_ms": round3(pct(&from_source_ms, 99.0)),
            "burst_feed_fps_median": pct(&feed_rates, 50.0).round(),
            "trials_with_frames_not_accepted": lost_trials,
        }));
    }
    let after = (ticks(gw_pid), ticks(bus_pid), ticks(mock_pid));
    let reads = device_reads(&mock_log) - reads_before;
    let adverts = f64::from(a.trials * a.rates.len() as u32 * (a.burst + 1));
    let per_advert_ms = |b: u64, e: u64| round3((e - b) as f64 * 10.0 / adverts);

    // Throughput: one long burst at full speed; how fast the gateway took it in.
    let mut frames = Vec::with_capacity(a.flood as usize);
    for i in 0..a.flood {
        let band = i % HB_BANDS + 1;
        let s = seq[band as usize];
        seq[band as usize] += 1;
        frames.push(json!([addr(band), -70, seal(&site, band, s, heartbeat(s))]));
    }
    let start_count = phone.counter("frames_accepted");
    let r = ctl.cmd(
        &json!({"cmd": "burst", "adapter": "hci0", "company_id": COMPANY,
        "frames": frames, "mark": -1, "rate": 0}),
    );
    let f: Vec<f64> = r
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("burst: {r}"))
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (t0, t_end) = (f[0], f[2]);
    let (got, got_at) = phone.settle(start_count + u64::from(a.flood), Duration::from_secs(10));
    let taken = got - start_count;
    // Statuses come once a second: the intake time is rounded up to the status that showed
    // the last frame, so the rate is a lower bound.
    let intake_s = (got_at - t0).max(t_end - t0);

    let hwm = proc_status_kib(gw_pid, "VmHWM:");
    let rss = proc_status_kib(gw_pid, "VmRSS:");
    let dropped = phone.counter("telemetry_dropped");
    drop(kids);
    if a.state_tmpfs {
        let _ = std::fs::remove_dir_all(&state);
    }
    json!({
        "label": label,
        "bin": bin.display().to_string(),
        "trials": a.trials,
        "burst": a.burst,
        "state_dir": if a.state_tmpfs { "tmpfs" } else { "disk" },
        "sets": sets,
        "device_reads_per_advert": round3(reads as f64 / adverts),
        "gateway_cpu_ms_per_advert": per_advert_ms(before.0, after.0),
        "bus_cpu_ms_per_advert": per_advert_ms(before.1, after.1),
        "mock_cpu_ms_per_advert": per_advert_ms(before.2, after.2),
        "flood": a.flood,
        "flood_feed_fps": (f64::from(a.flood) / (t_end - t0)).round(),
        "flood_taken": taken,
        "flood_intake_fps_at_least": (taken as f64 / intake_s).round(),
        "telemetry_dropped": dropped,
        "vm_hwm_kib": hwm,
        "vm_rss_kib": rss,
    })
}

fn table(rows: &[Value]) -> String {
    let mut s = String::new();
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r["label"].as_str().unwrap_or("?").to_string())
        .collect();
    s.push_str(&format!(
        "| BLE intake (mock BlueZ) | {} |\n",
        labels.join(" | ")
    ));
    s.push_str(&format!("|---|{}\n", "---|".repeat(rows.len())));
    let line = |name: &str, f: &dyn Fn(&Value) -> String| {
        let cells: Vec<String> = rows.iter().map(f).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    let v = |k: &'static str| move |r: &Value| r[k].to_string();
    let n_sets = rows
        .iter()
        .map(|r| r["sets"].as_array().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);
    for k in 0..n_sets {
        let set = |r: &Value| r["sets"][k].clone();
        let asked = rows
            .first()
            .map(|r| set(r)["rate_asked"].as_f64().unwrap_or(0.0))
            .unwrap_or(0.0);
        let feed = if asked > 0.0 {
            format!("paced at {asked:.0}/s")
        } else {
            "as fast as the mock can".to_string()
        };
        s.push_str(&line(&format!("**bursts fed {feed}**"), &|r| {
            format!("{} adverts/s (median)", set(r)["burst_feed_fps_median"])
        }));
        s.push_str(&line(
            "SOS in the burst: alert document p50 / p99 / max after its emit",
            &|r| {
                let x = set(r);
                format!(
                    "{} / {} / {} ms (n = {}, missing {})",
                    x["sos_p50_ms"], x["sos_p99_ms"], x["sos_max_ms"], x["sos_n"], x["sos_missing"]
                )
            },
        ));
        s.push_str(&line(
            "  of which emit → BLE source (raised_at, ms clock) p50 / p99",
            &|r| {
                let x = set(r);
                format!(
                    "{} / {} ms",
                    x["sos_emit_to_source_p50_ms"], x["sos_emit_to_source_p99_ms"]
                )
            },
        ));
        s.push_str(&line(
            "  of which BLE source → alert document at the subscriber p50 / p99",
            &|r| {
                let x = set(r);
                format!(
                    "{} / {} ms (state on {})",
                    x["sos_source_to_doc_p50_ms"], x["sos_source_to_doc_p99_ms"], r["state_dir"]
                )
            },
        ));
        s.push_str(&line("  trials where not every frame was accepted", &|r| {
            set(r)["trials_with_frames_not_accepted"].to_string()
        }));
    }
    s.push_str(&line("burst size (heartbeats + 1 SOS)", &|r| {
        format!("{} + 1", r["burst"])
    }));
    s.push_str(&line("flood: fed / taken in (≥)", &|r| {
        format!(
            "{} / {} adverts/s ({} of {} accepted)",
            r["flood_feed_fps"], r["flood_intake_fps_at_least"], r["flood_taken"], r["flood"]
        )
    }));
    s.push_str(&line(
        "device property reads (D-Bus calls to BlueZ) per advert",
        &|r| r["device_reads_per_advert"].to_string(),
    ));
    s.push_str(&line("gateway CPU per advert", &|r| {
        format!("{} ms", r["gateway_cpu_ms_per_advert"])
    }));
    s.push_str(&line("dbus-daemon CPU per advert", &|r| {
        format!("{} ms", r["bus_cpu_ms_per_advert"])
    }));
    s.push_str(&line("mock (python) CPU per advert", &|r| {
        format!("{} ms", r["mock_cpu_ms_per_advert"])
    }));
    s.push_str(&line(
        "telemetry dropped (lane full)",
        &v("telemetry_dropped"),
    ));
    s.push_str(&line("gateway RSS / peak (VmRSS / VmHWM)", &|r| {
        format!(
            "{:.1} / {:.1} MiB",
            r["vm_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
            r["vm_hwm_kib"].as_f64().unwrap_or(0.0) / 1024.0
        )
    }));
    s
}

fn main() {
    let mut a = args();
    std::fs::create_dir_all(&a.work).unwrap();
    a.work = std::fs::canonicalize(&a.work).unwrap();
    let mut rows = Vec::new();
    for (label, bin) in a.bins.clone() {
        rows.push(run_one(&a, &label, &bin));
        // Written after each binary, so a later failure does not lose an earlier run.
        let partial = json!({"runs": rows, "table": table(&rows)});
        std::fs::write(&a.out, serde_json::to_string_pretty(&partial).unwrap()).unwrap();
        eprintln!("{}", table(&rows));
    }
    let t = table(&rows);
    let out = json!({
        "feeding": "python-dbusmock bluez5 on a private dbus-daemon; EmitBurst sends pre-built \
                    PropertiesChanged signals from inside the mock; release binary; real Mosquitto",
        "runs": rows,
        "table": t,
    });
    std::fs::write(&a.out, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("{t}");
}
