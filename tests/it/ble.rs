//! The BLE source through its real D-Bus signal path, against python-dbusmock's
//! `bluez5` mock on a private bus. The built binary (`bandgate scan`) runs as a child with
//! `DBUS_SYSTEM_BUS_ADDRESS` set for it alone, so tests run in parallel threads. Recovery is
//! proved from the mock's call log (`StartDiscovery` called again), not only from frames.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bandgate::engine::{frame, BandEvent, DeviceKey, Frame};
use serde_json::{json, Value};

use crate::harness::vectors::*;

const INSTALL: &str = "the BLE tests need dbus-daemon and python3 with the dbus and dbusmock \
     modules: `sudo apt-get install dbus python3-dbus python3-dbusmock` (or run ./.ci/run); if \
     your python3 is not Debian's, set BANDGATE_TEST_PYTHON=/usr/bin/python3";

pub fn python() -> String {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("BANDGATE_TEST_PYTHON") {
        candidates.push(p);
    }
    candidates.push("python3".into());
    candidates.push("/usr/bin/python3".into());
    for p in candidates {
        let ok = Command::new(&p)
            .args(["-c", "import dbus, dbusmock"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p;
        }
    }
    panic!("no python3 with dbus and dbusmock: {INSTALL}");
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private bus with a mock bluetoothd on it and a controller to drive the mock.
pub struct MockBluez {
    pub dir: tempfile::TempDir,
    python: String,
    bus: Child,
    pub address: String,
    mock: Option<Child>,
    /// Call logs, one per mock process (a restarted mock starts a new one).
    logs: Vec<PathBuf>,
    ctl: Child,
    ctl_in: ChildStdin,
    ctl_out: BufReader<ChildStdout>,
    /// The adapter has org.bluez.AdvertisementMonitorManager1 (passive scanning).
    monitor_manager: bool,
}

impl Drop for MockBluez {
    fn drop(&mut self) {
        if let Some(m) = self.mock.as_mut() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = self.ctl.kill();
        let _ = self.ctl.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

impl MockBluez {
    /// Bus, mock and controller up, with adapter `hci0`.
    pub fn start() -> MockBluez {
        MockBluez::start_with(true)
    }

    /// The same with an adapter that has no advertisement monitor manager (BlueZ before 5.56,
    /// or bluetoothd without experimental features).
    pub fn start_without_monitor_manager() -> MockBluez {
        MockBluez::start_with(false)
    }

    fn start_with(monitor_manager: bool) -> MockBluez {
        let python = python();
        let dir = tempfile::tempdir().unwrap();
        let (bus, address) = start_bus(dir.path());
        let (ctl, ctl_in, ctl_out) = start_ctl(&python, &address);
        let mut m = MockBluez {
            dir,
            python,
            bus,
            address,
            mock: None,
            logs: Vec::new(),
            ctl,
            ctl_in,
            ctl_out,
            monitor_manager,
        };
        m.start_mock();
        m
    }

    /// Starts a (new) mock bluetoothd and gives it adapter `hci0`.
    pub fn start_mock(&mut self) {
        let log = self
            .dir
            .path()
            .join(format!("mock-{}.log", self.logs.len()));
        let mock = Command::new(&self.python)
            .args(["-m", "dbusmock", "--template", "bluez5", "-l"])
            .arg(&log)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.mock = Some(mock);
        self.logs.push(log);
        // The mock owns org.bluez once AddAdapter answers.
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let reply = self.cmd(&json!({"cmd": "adapter", "name": "hci0",
                                         "monitor_manager": self.monitor_manager}));
            if reply.starts_with("ok") {
                break;
            }
            assert!(Instant::now() < end, "mock bluez did not come up: {reply}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the D-Bus daemon (and with it the mock and its controller), then starts a new
    /// one on the same socket, a new mock bluetoothd and controller on it.
    pub fn restart_bus(&mut self) {
        if let Some(mut m) = self.mock.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = self.ctl.kill();
        let _ = self.ctl.wait();
        self.bus.kill().unwrap();
        self.bus.wait().unwrap();
        let _ = std::fs::remove_file(self.dir.path().join("bus"));
        let (bus, address) = start_bus(self.dir.path());
        assert_eq!(
            address, self.address,
            "the new bus must listen where the old one did"
        );
        let (ctl, ctl_in, ctl_out) = start_ctl(&self.python, &address);
        self.bus = bus;
        self.ctl = ctl;
        self.ctl_in = ctl_in;
        self.ctl_out = ctl_out;
        self.start_mock();
    }

    /// Kills the mock bluetoothd outright, as a crash would.
    pub fn kill_mock(&mut self) {
        let mut m = self.mock.take().expect("mock running");
        m.kill().unwrap();
        m.wait().unwrap();
    }

    pub fn cmd(&mut self, c: &Value) -> String {
        writeln!(self.ctl_in, "{c}").unwrap();
        self.ctl_in.flush().unwrap();
        let mut reply = String::new();
        self.ctl_out.read_line(&mut reply).unwrap();
        reply.trim().to_string()
    }

    /// Sends many commands at once (a burst), then reads all replies; returns the failures.
    pub fn cmds(&mut self, cs: &[Value]) -> Vec<String> {
        let mut text = String::new();
        for c in cs {
            text.push_str(&c.to_string());
            text.push('\n');
        }
        // Replies are short; the pipe holds them while we write.
        let mut writer = self.ctl_in.try_clone_stdin();
        let t = std::thread::spawn(move || {
            writer.write_all(text.as_bytes()).unwrap();
            writer.flush().unwrap();
            writer
        });
        let mut bad = Vec::new();
        for _ in cs {
            let mut reply = String::new();
            self.ctl_out.read_line(&mut reply).unwrap();
            if !reply.starts_with("ok") {
                bad.push(reply.trim().to_string());
            }
        }
        drop(t.join().unwrap());
        bad
    }

    pub fn advert(&mut self, addr: &str, rssi: i16, company_id: u16, data: &[u8]) {
        let reply = self.cmd(&advert_cmd(addr, rssi, company_id, data));
        assert!(reply.starts_with("ok"), "advert: {reply}");
    }

    /// A BTHome advertisement: `data` as service data under UUID 0xFCD2 (from the
    /// device-information byte on), as BlueZ signals it.
    pub fn service(&mut self, addr: &str, rssi: i16, data: &[u8]) {
        let reply = self.cmd(&json!({"cmd": "service", "adapter": "hci0", "addr": addr,
            "rssi": rssi, "uuid": bandgate::engine::bthome::UUID, "data": hex::encode(data)}));
        assert!(reply.starts_with("ok"), "service: {reply}");
    }

    /// What the adapter's monitor manager holds (`monitors` in bluez_ctl.py).
    pub fn monitors(&mut self) -> Value {
        let reply = self.cmd(&json!({"cmd": "monitors", "adapter": "hci0"}));
        let text = reply
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("monitors: {reply}"));
        serde_json::from_str(text).unwrap()
    }

    /// BlueZ releases every registered monitor; returns how many.
    pub fn release_monitors(&mut self) -> u64 {
        let reply = self.cmd(&json!({"cmd": "release", "adapter": "hci0"}));
        reply
            .strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("release: {reply}"))
    }

    /// Sends an advert and returns whether the mock emitted it (false: a passive scan's
    /// monitor did not match it).
    pub fn advert_passes(&mut self, addr: &str, rssi: i16, company_id: u16, data: &[u8]) -> bool {
        let reply = self.cmd(&advert_cmd(addr, rssi, company_id, data));
        assert!(reply.starts_with("ok"), "advert: {reply}");
        reply != "ok filtered"
    }

    pub fn power(&mut self, on: bool) {
        let reply = self.cmd(&json!({"cmd": "power", "adapter": "hci0", "on": on}));
        assert!(reply.starts_with("ok"), "power: {reply}");
    }

    /// How many times the current mock's adapter was told `method`.
    pub fn calls(&self, method: &str) -> usize {
        let log = self.logs.last().unwrap();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(method))
            .count()
    }

    /// Starts `bandgate scan` on this bus with the test vectors' keys.
    pub fn scan(&self, args: &[&str]) -> Scan {
        self.scan_with_keys(args, "")
    }

    /// The same with `more_keys` (e.g. a `[bthome."MAC"]` section) added to the key file.
    pub fn scan_with_keys(&self, args: &[&str], more_keys: &str) -> Scan {
        let v = vectors();
        let text = format!("{}{more_keys}", vector_keys_toml(&v));
        let keys = write_private(self.dir.path(), "keys.toml", &text);
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let record = self.dir.path().join(format!("capture-{n}.jsonl"));
        let stdout = self.dir.path().join(format!("scan-{n}.out"));
        let stderr = self.dir.path().join(format!("scan-{n}.err"));
        let child = Command::new(crate::harness::bin())
            .arg("scan")
            .arg("--keys")
            .arg(&keys)
            .arg("--record")
            .arg(&record)
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env("RUST_LOG", "warn,bandgate=info")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Scan {
            child,
            record,
            stdout,
            stderr,
        }
    }
}

/// A private D-Bus daemon listening on `dir/bus`; its address without the server's guid, so
/// that clients can reach a restarted daemon at the same address.
pub fn start_bus(dir: &Path) -> (Child, String) {
    let sock = dir.join("bus");
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .arg(format!("--address=unix:path={}", sock.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dbus-daemon ({e}): {INSTALL}"));
    let mut address = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let address = address.trim();
    assert!(!address.is_empty(), "dbus-daemon printed no address");
    let address = address.split(",guid=").next().unwrap().to_string();
    (bus, address)
}

fn start_ctl(python: &str, address: &str) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut ctl = Command::new(python)
        .arg(data_dir().join("bluez_ctl.py"))
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ctl_in = ctl.stdin.take().unwrap();
    let ctl_out = BufReader::new(ctl.stdout.take().unwrap());
    (ctl, ctl_in, ctl_out)
}

/// `ChildStdin` cannot be cloned; a duplicate of its descriptor can.
trait CloneStdin {
    fn try_clone_stdin(&self) -> std::fs::File;
}

impl CloneStdin for ChildStdin {
    fn try_clone_stdin(&self) -> std::fs::File {
        use std::os::fd::AsFd;
        std::fs::File::from(self.as_fd().try_clone_to_owned().unwrap())
    }
}

pub fn advert_cmd(addr: &str, rssi: i16, company_id: u16, data: &[u8]) -> Value {
    json!({"cmd": "advert", "adapter": "hci0", "addr": addr, "rssi": rssi,
           "company_id": company_id, "data": hex::encode(data)})
}

pub struct Scan {
    pub child: Child,
    pub record: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Drop for Scan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scan {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end by itself; its exit code.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "scan still running after {limit:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C, as an installer stops it.
    pub fn interrupt(&mut self) -> i32 {
        Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .unwrap();
        self.wait(Duration::from_secs(10))
    }

    pub fn captured(&self) -> Vec<Value> {
        read_capture(&self.record)
    }

    /// Stops the scan (Ctrl-C), which must end it cleanly; its log.
    pub fn end(&mut self) -> String {
        assert_eq!(self.interrupt(), 0, "{}", self.log());
        self.log()
    }

    /// At least `min` in the final table's counter `name`.
    pub fn assert_counter(&self, name: &str, min: u64) {
        let table = self.table();
        assert!(counter(&table, name) >= min, "{name} < {min}:\n{table}");
    }

    /// Waits (10 s at most) until the scan has captured `data`.
    pub fn wait_captured(&self, what: &str, data: &[u8]) {
        wait_for(Duration::from_secs(10), what, || {
            has(&self.captured(), data)
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn table(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

fn read_capture(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn key(id: u32) -> DeviceKey {
    let v = vectors();
    DeviceKey::from_hex(v["keys"][id.to_string()].as_str().unwrap()).unwrap()
}

fn sealed(device_id: u32, seq: u32, event: BandEvent) -> Vec<u8> {
    frame::seal(
        &Frame {
            device_id,
            seq,
            battery_pct: 77,
            worn: true,
            event,
        },
        0xFFFF,
        &key(device_id),
    )
}

fn heartbeat(device_id: u32, seq: u32) -> Vec<u8> {
    sealed(
        device_id,
        seq,
        BandEvent::Heartbeat {
            heart_rate: Some(70),
            spo2: Some(97),
            steps: seq,
        },
    )
}

fn has(captured: &[Value], data: &[u8]) -> bool {
    let h = hex::encode(data);
    captured.iter().any(|c| c["data"] == h.as_str())
}

/// A counter from the table's last line (`scan restarts 2, ...`).
fn counter(table: &str, name: &str) -> u64 {
    let at = table
        .rfind(name)
        .unwrap_or_else(|| panic!("no {name:?} in:\n{table}"));
    table[at + name.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Waits until the scan has told the adapter to discover `n` times in all.
fn wait_discovering(m: &MockBluez, scan: &Scan, n: usize) {
    let end = Instant::now() + Duration::from_secs(15);
    while m.calls("StartDiscovery") < n {
        assert!(
            Instant::now() < end,
            "StartDiscovery was called {} times, expected {n}; scan log:\n{}",
            m.calls("StartDiscovery"),
            scan.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn frames_arrive_including_a_bands_first_advertisement() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "3"]);
    wait_discovering(&m, &scan, 1);
    let sos = sealed(17, 42, BandEvent::Sos);
    let cancel = sealed(17, 43, BandEvent::Cancel { of_seq: 42 });
    // The band's very first advertisement is its SOS: it comes only with DeviceDiscovered.
    m.advert("C8:FD:19:00:00:11", -61, 0xFFFF, &sos);
    m.advert("C8:FD:19:00:00:11", -65, 0xFFFF, &cancel);
    // Not ours: another company id, and our company id with someone else's format.
    m.advert("AA:BB:CC:00:00:01", -80, 0x004C, &[1, 2, 3]);
    m.advert("AA:BB:CC:00:00:02", -85, 0xFFFF, &[0x42, 0x42]);
    assert_eq!(scan.wait(Duration::from_secs(10)), 0, "{}", scan.log());
    let captured = scan.captured();
    assert!(
        has(&captured, &sos),
        "first advert (SOS) lost: {captured:?}"
    );
    assert!(has(&captured, &cancel), "{captured:?}");
    let first = captured
        .iter()
        .find(|c| c["data"] == hex::encode(&sos))
        .unwrap();
    assert_eq!(first["addr"], "C8:FD:19:00:00:11");
    assert_eq!(first["rssi"], -61);
    assert_eq!(first["company_id"], 65535);
    assert!(first["t_ms"].as_u64().is_some());
    let second = captured
        .iter()
        .find(|c| c["data"] == hex::encode(&cancel))
        .unwrap();
    assert_eq!(second["rssi"], -65);
    assert!(
        captured.iter().all(|c| c["addr"] != "AA:BB:CC:00:00:01"),
        "other company ids are not ours"
    );
    let table = scan.table();
    let band = table
        .lines()
        .find(|l| l.trim_start().starts_with("17 "))
        .unwrap_or_else(|| panic!("band 17 not in the table:\n{table}"));
    assert!(
        band.contains("cancel") && band.trim_end().ends_with("ok"),
        "{table}"
    );
    assert!(
        table.contains("AA:BB:CC:00:00:02"),
        "unknown advertiser listed:\n{table}"
    );
}

#[test]
fn scanning_resumes_by_itself_after_bluez_is_killed_and_restarted() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "30"]);
    wait_discovering(&m, &scan, 1);
    let before = heartbeat(1, 10);
    m.advert("C8:FD:19:00:00:01", -60, 0xFFFF, &before);
    // Heard before the crash (reading a new device's data needs bluetoothd alive).
    scan.wait_captured("the advert before the crash", &before);
    m.kill_mock();
    wait_for(
        Duration::from_secs(10),
        "a probe to see bluetoothd gone",
        || scan.log().contains("adapter lost"),
    );
    m.start_mock();
    // The new bluetoothd must be told to discover again, without help.
    wait_discovering(&m, &scan, 1);
    let after = sealed(17, 50, BandEvent::Sos);
    m.advert("C8:FD:19:00:00:11", -62, 0xFFFF, &after);
    scan.wait_captured("the SOS after the restart", &after);
    let log = scan.end();
    assert!(log.contains("adapter lost"), "{log}");
    assert!(log.contains("recreating the BlueZ connection"), "{log}");
    scan.assert_counter("BlueZ reconnects", 1);
}

#[test]
fn scanning_resumes_after_the_adapter_is_powered_off_and_on() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "30"]);
    wait_discovering(&m, &scan, 1);
    m.power(false);
    wait_for(
        Duration::from_secs(5),
        "the power-off to be noticed",
        || scan.log().contains("not powered") || scan.log().contains("adapter lost"),
    );
    m.power(true);
    wait_discovering(&m, &scan, 2);
    let sos = sealed(17, 60, BandEvent::Sos);
    m.advert("C8:FD:19:00:00:11", -62, 0xFFFF, &sos);
    scan.wait_captured("the SOS after power-on", &sos);
    let log = scan.end();
    assert!(log.contains("restarting the scan"), "{log}");
    scan.assert_counter("scan restarts", 1);
}

#[test]
fn silence_restarts_the_scan_then_bluez_then_exits_non_zero() {
    let m = MockBluez::start();
    let started = Instant::now();
    let mut scan = m.scan(&["--silence-restart", "2s", "--seconds", "60"]);
    let code = scan.wait(Duration::from_secs(30));
    let elapsed = started.elapsed();
    let log = scan.log();
    assert_eq!(code, 1, "a third silence must exit non-zero:\n{log}");
    // Three silences of 2 s; no step before its silence.
    assert!(elapsed >= Duration::from_secs(6), "{elapsed:?}\n{log}");
    // Initial scan, restart after the first silence, new manager after the second.
    assert!(m.calls("StartDiscovery") >= 3, "{log}");
    let restart = log.find("reason=\"silence\"").expect(&log);
    let recreate = log.find("second silence").expect(&log);
    let give_up = log.find("giving up").expect(&log);
    assert!(restart < recreate && recreate < give_up, "{log}");
}

#[test]
fn the_silence_ladder_reaches_its_end_when_bluez_remembers_a_device() {
    // A new BlueZ connection reports every device BlueZ remembers as discovered: that must
    // not count as hearing, or the second step resets the ladder and it never ends.
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--silence-restart", "2s", "--seconds", "60"]);
    wait_discovering(&m, &scan, 1);
    let band = heartbeat(1, 7);
    m.advert("C8:FD:19:00:00:01", -60, 0xFFFF, &band);
    let code = scan.wait(Duration::from_secs(40));
    let log = scan.log();
    assert_eq!(code, 1, "a third silence must exit non-zero:\n{log}");
    assert!(has(&scan.captured(), &band), "{log}");
    assert_eq!(log.matches("second silence").count(), 1, "{log}");
    assert!(log.contains("giving up"), "{log}");
}

#[test]
fn a_burst_of_2000_adverts_keeps_its_one_sos() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&[]);
    wait_discovering(&m, &scan, 1);
    // 20 bands sending heartbeats back to back (band 1's key), one SOS (band 17) in the middle.
    let sos = sealed(17, 99, BandEvent::Sos);
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        if i == 1000 {
            burst.push(advert_cmd("C8:FD:19:00:00:11", -55, 0xFFFF, &sos));
            continue;
        }
        let addr = format!("C8:FD:19:00:01:{:02X}", i % 20);
        burst.push(advert_cmd(&addr, -70, 0xFFFF, &heartbeat(1, 1000 + i)));
    }
    let started = Instant::now();
    let bad = m.cmds(&burst);
    let sent_in = started.elapsed();
    assert!(bad.is_empty(), "{bad:?}");
    wait_for(Duration::from_secs(20), "the burst's SOS", || {
        has(&scan.captured(), &sos)
    });
    // Let the rest drain (the capture is flushed every second).
    let mut last = 0;
    wait_for(Duration::from_secs(20), "the capture to settle", || {
        std::thread::sleep(Duration::from_millis(1200));
        let n = scan.captured().len();
        let settled = n == last;
        last = n;
        settled
    });
    assert_eq!(scan.interrupt(), 0, "{}", scan.log());
    let captured = scan.captured();
    eprintln!(
        "burst: {} of 2000 adverts arrived (sent in {sent_in:?}); SOS arrived",
        captured.len()
    );
    assert!(has(&captured, &sos));
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn memory_stays_flat_with_5000_random_address_advertisers_that_are_not_ours() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&[]);
    wait_discovering(&m, &scan, 1);
    let band = heartbeat(1, 5);
    m.advert("C8:FD:19:00:00:01", -60, 0xFFFF, &band);
    scan.wait_captured("our band", &band);
    // Warm up: allocator pools, D-Bus buffers, the first strangers.
    let stranger = |i: u32| {
        let addr = format!(
            "5A:{:02X}:{:02X}:{:02X}:00:00",
            i >> 16 & 0xff,
            i >> 8 & 0xff,
            i & 0xff
        );
        advert_cmd(&addr, -90, 0x0006, &[0x01, 0x09, 0x20, 0x02])
    };
    let warm: Vec<Value> = (0..500).map(stranger).collect();
    assert!(m.cmds(&warm).is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let before = vm_rss_kib(scan.pid());
    let rest: Vec<Value> = (500..5500).map(stranger).collect();
    assert!(m.cmds(&rest).is_empty());
    // Our band is still heard after the crowd (and the crowd has been processed).
    let band2 = heartbeat(1, 6);
    m.advert("C8:FD:19:00:00:01", -60, 0xFFFF, &band2);
    wait_for(Duration::from_secs(60), "our band after the crowd", || {
        has(&scan.captured(), &band2)
    });
    let after = vm_rss_kib(scan.pid());
    assert_eq!(scan.interrupt(), 0, "{}", scan.log());
    eprintln!("RSS of bandgate scan: {before} KiB before, {after} KiB after 5,000 more foreign advertisers");
    assert!(
        after < before + 4096,
        "memory grew from {before} KiB to {after} KiB with 5,000 foreign advertisers"
    );
    let table = scan.table();
    // Informational here (btleplug used to skip discoveries it failed to read back; the
    // signal path reads nothing back, so all 5,500 should be counted).
    eprintln!("strangers counted: {} of 5500", counter(&table, "not ours"));
}

#[test]
fn an_sos_from_a_device_bluez_has_forgotten_is_taken_from_the_signal() {
    // BlueZ may drop a device object (cache full, RemoveDevice, a temporary address rotated)
    // while its signal is on the way. A source that reads the device back loses that advert;
    // the data is in the signal, so it must arrive, with the signal's RSSI.
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "30"]);
    wait_discovering(&m, &scan, 1);
    let sos = sealed(17, 77, BandEvent::Sos);
    let reply = m.cmd(
        &json!({"cmd": "signal", "adapter": "hci0", "addr": "C8:FD:19:00:00:11",
                              "rssi": -57, "company_id": 0xFFFF, "data": hex::encode(&sos)}),
    );
    assert!(reply.starts_with("ok"), "{reply}");
    scan.wait_captured("the forgotten device's SOS", &sos);
    assert_eq!(scan.interrupt(), 0, "{}", scan.log());
    let captured = scan.captured();
    let c = captured
        .iter()
        .find(|c| c["data"] == hex::encode(&sos))
        .unwrap();
    assert_eq!(c["addr"], "C8:FD:19:00:00:11");
    assert_eq!(c["rssi"], -57);
}

#[test]
fn unreadable_manufacturer_data_is_counted_and_the_next_sos_still_arrives() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "30"]);
    wait_discovering(&m, &scan, 1);
    for _ in 0..3 {
        let reply = m.cmd(&json!({"cmd": "malformed", "adapter": "hci0",
                                  "addr": "C8:FD:19:00:00:11", "company_id": 0xFFFF}));
        assert!(reply.starts_with("ok"), "{reply}");
    }
    let sos = sealed(17, 78, BandEvent::Sos);
    m.advert("C8:FD:19:00:00:11", -60, 0xFFFF, &sos);
    scan.wait_captured("the SOS after bad signals", &sos);
    assert_eq!(scan.interrupt(), 0, "{}", scan.log());
    let table = scan.table();
    assert_eq!(counter(&table, "unreadable"), 3, "{table}");
    assert_eq!(
        scan.captured().len(),
        1,
        "only the SOS: {:?}",
        scan.captured()
    );
    assert!(!scan.log().contains("panicked"), "{}", scan.log());
}

#[test]
fn discovery_stopped_behind_our_back_is_started_again_and_an_sos_gets_through() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "30"]);
    wait_discovering(&m, &scan, 1);
    let reply = m.cmd(&json!({"cmd": "stop_discovery", "adapter": "hci0"}));
    assert!(reply.starts_with("ok"), "{reply}");
    // Two probes a second apart must see it stopped; then the scan is started again.
    wait_discovering(&m, &scan, 2);
    let sos = sealed(17, 79, BandEvent::Sos);
    m.advert("C8:FD:19:00:00:11", -60, 0xFFFF, &sos);
    scan.wait_captured("the SOS after the restart", &sos);
    let log = scan.end();
    assert!(log.contains("adapter stopped discovering"), "{log}");
    scan.assert_counter("scan restarts", 1);
}

#[test]
fn scanning_resumes_after_the_d_bus_daemon_itself_dies_and_comes_back() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "40"]);
    wait_discovering(&m, &scan, 1);
    let before = heartbeat(1, 20);
    m.advert("C8:FD:19:00:00:01", -60, 0xFFFF, &before);
    scan.wait_captured("the advert before", &before);
    // The bus daemon dies (its socket with it) and a new one comes, with a new bluetoothd.
    m.restart_bus();
    wait_discovering(&m, &scan, 1);
    let sos = sealed(17, 80, BandEvent::Sos);
    m.advert("C8:FD:19:00:00:11", -62, 0xFFFF, &sos);
    wait_for(Duration::from_secs(15), "the SOS on the new bus", || {
        has(&scan.captured(), &sos)
    });
    let log = scan.end();
    assert!(log.contains("recreating the BlueZ connection"), "{log}");
    scan.assert_counter("BlueZ reconnects", 1);
}

#[test]
fn scan_records_bthome_service_data_and_lists_the_device() {
    use bandgate::engine::bthome::{self, ButtonEvent};
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--seconds", "3"]);
    wait_discovering(&m, &scan, 1);
    let mac = bthome::parse_mac("54:48:E6:8F:80:A5").unwrap();
    let press = bthome::seal(
        &mac,
        &DeviceKey([0x23; 16]),
        9,
        true,
        1,
        Some(88),
        &[ButtonEvent::Press],
    );
    let plain = bthome::plain(true, 2, Some(88), &[ButtonEvent::Press]);
    m.service("54:48:E6:8F:80:A5", -52, &press);
    m.service("54:48:E6:8F:80:A6", -53, &plain);
    assert_eq!(scan.wait(Duration::from_secs(10)), 0, "{}", scan.log());
    let captured = scan.captured();
    let line = captured
        .iter()
        .find(|c| c["service_data"] == hex::encode(&press))
        .unwrap_or_else(|| panic!("BTHome advert not recorded: {captured:?}"));
    assert_eq!(line["addr"], "54:48:E6:8F:80:A5");
    assert_eq!(line["rssi"], -52);
    assert_eq!(line["service_uuid"], bthome::UUID);
    assert!(line.get("company_id").is_none(), "{line}");
    let table = scan.table();
    let row = |addr: &str| {
        table
            .lines()
            .find(|l| l.contains(addr))
            .unwrap_or_else(|| panic!("{addr} not in the table:\n{table}"))
            .trim_end()
            .to_string()
    };
    assert!(table.contains("BTHome devices"), "{table}");
    // The test keys enrol no BTHome device.
    assert!(row("54:48:E6:8F:80:A5").ends_with("no key"), "{table}");
    assert!(row("54:48:E6:8F:80:A6").ends_with("unencrypted"), "{table}");
    assert!(row("54:48:E6:8F:80:A6").contains("press"), "{table}");
}

// ---- passive scanning (`[ble] scan = "passive"`, `bandgate scan --passive`) ----

/// Waits until the current mock has `n` registrations of our monitor in all, and it is in
/// force; returns the manager's state.
fn wait_registered(m: &mut MockBluez, scan: &Scan, n: u64) -> Value {
    wait_registered_by(m, &|| scan.log(), n)
}

/// The same for any process: `log` is what to show on failure.
fn wait_registered_by(m: &mut MockBluez, log: &dyn Fn() -> String, n: u64) -> Value {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let state = m.monitors();
        if state["registrations"].as_u64().unwrap() >= n
            && state["monitors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|mon| mon["active"] == true)
        {
            return state;
        }
        assert!(
            Instant::now() < end,
            "RegisterMonitor #{n} not in force: {state}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The patterns of the one monitor in force, as [start, AD type, hex].
fn patterns(state: &Value) -> Vec<Value> {
    let mons = state["monitors"].as_array().unwrap();
    assert_eq!(mons.len(), 1, "one monitor: {state}");
    assert_eq!(mons[0]["type"], "or_patterns");
    mons[0]["patterns"].as_array().unwrap().clone()
}

#[test]
fn passive_scanning_registers_our_company_id_and_never_discovers() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--passive", "--seconds", "30"]);
    let state = wait_registered(&mut m, &scan, 1);
    // Manufacturer data (AD 0xFF) from index 0: our company id, little-endian. The test keys
    // enrol no BTHome device, so no service-data pattern.
    assert_eq!(patterns(&state), vec![json!([0, 255, "ffff"])], "{state}");
    let sos = sealed(17, 91, BandEvent::Sos);
    assert!(m.advert_passes("C8:FD:19:00:00:11", -58, 0xFFFF, &sos));
    // Another company's advert does not get past BlueZ's filter.
    assert!(!m.advert_passes("AA:BB:CC:00:00:01", -80, 0x004C, &[1, 2, 3]));
    scan.wait_captured("the SOS", &sos);
    assert_eq!(scan.interrupt(), 0, "{}", scan.log());
    assert_eq!(m.calls("StartDiscovery"), 0, "{}", scan.log());
    let table = scan.table();
    assert!(table.contains("passive scan"), "{table}");
    assert_eq!(counter(&table, "not ours"), 0, "{table}");
}

#[test]
fn passive_scanning_registers_again_after_bluez_is_killed_and_restarted() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--passive", "--seconds", "40"]);
    wait_registered(&mut m, &scan, 1);
    let before = heartbeat(1, 30);
    assert!(m.advert_passes("C8:FD:19:00:00:01", -60, 0xFFFF, &before));
    scan.wait_captured("the advert before the crash", &before);
    m.kill_mock();
    wait_for(
        Duration::from_secs(10),
        "a probe to see bluetoothd gone",
        || scan.log().contains("adapter lost"),
    );
    m.start_mock();
    // The new bluetoothd knows no monitor: it must be registered again, without help.
    let state = wait_registered(&mut m, &scan, 1);
    assert_eq!(patterns(&state), vec![json!([0, 255, "ffff"])], "{state}");
    let after = sealed(17, 51, BandEvent::Sos);
    assert!(m.advert_passes("C8:FD:19:00:00:11", -62, 0xFFFF, &after));
    scan.wait_captured("the SOS after the restart", &after);
    let log = scan.end();
    assert!(log.contains("recreating the BlueZ connection"), "{log}");
    assert!(
        !log.contains("ERROR"),
        "passive scanning stays in force:\n{log}"
    );
    assert_eq!(m.calls("StartDiscovery"), 0, "{log}");
    assert!(scan.table().contains("passive scan"), "{}", scan.table());
}

#[test]
fn a_monitor_bluez_releases_is_registered_again_and_frames_flow_again() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--passive", "--seconds", "40"]);
    wait_registered(&mut m, &scan, 1);
    assert_eq!(m.release_monitors(), 1);
    // Released: BlueZ scans for nobody until bandgate registers again.
    let lost = heartbeat(1, 40);
    assert!(!m.advert_passes("C8:FD:19:00:00:01", -60, 0xFFFF, &lost));
    wait_registered(&mut m, &scan, 2);
    let sos = sealed(17, 52, BandEvent::Sos);
    assert!(m.advert_passes("C8:FD:19:00:00:11", -62, 0xFFFF, &sos));
    scan.wait_captured("the SOS after the release", &sos);
    let log = scan.end();
    assert!(log.contains("released the advertisement monitor"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(m.calls("StartDiscovery"), 0, "{log}");
    scan.assert_counter("scan restarts", 1);
}

#[test]
fn passive_scanning_registers_again_after_the_adapter_is_powered_off_and_on() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--passive", "--seconds", "30"]);
    wait_registered(&mut m, &scan, 1);
    m.power(false);
    wait_for(
        Duration::from_secs(5),
        "the power-off to be noticed",
        || scan.log().contains("not powered") || scan.log().contains("adapter lost"),
    );
    m.power(true);
    wait_registered(&mut m, &scan, 2);
    let sos = sealed(17, 53, BandEvent::Sos);
    assert!(m.advert_passes("C8:FD:19:00:00:11", -62, 0xFFFF, &sos));
    scan.wait_captured("the SOS after power-on", &sos);
    assert_eq!(scan.interrupt(), 0, "{}", scan.log());
    assert_eq!(m.calls("StartDiscovery"), 0, "{}", scan.log());
}

#[test]
fn without_a_monitor_manager_passive_falls_back_to_active_says_why_and_hears() {
    let mut m = MockBluez::start_without_monitor_manager();
    let mut scan = m.scan(&["--passive", "--seconds", "30"]);
    // Never deaf: discovery is started instead.
    wait_discovering(&m, &scan, 1);
    let sos = sealed(17, 54, BandEvent::Sos);
    m.advert("C8:FD:19:00:00:11", -62, 0xFFFF, &sos);
    scan.wait_captured("the SOS", &sos);
    let log = scan.end();
    let error = log
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"));
    assert!(
        error.contains("passive scanning is not available")
            && error.contains("AdvertisementMonitorManager1")
            && error.contains("scanning ACTIVELY")
            && error.contains("bluetoothd -E"),
        "{error}"
    );
    let table = scan.table();
    assert!(
        table.contains("active scan: passive scanning is NOT available"),
        "{table}"
    );
}

#[test]
fn the_bthome_pattern_is_registered_only_with_enrolled_bthome_devices() {
    use bandgate::engine::bthome::{self, ButtonEvent};
    const MAC: &str = "54:48:E6:8F:80:A5";
    const KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";
    let mut m = MockBluez::start();
    let mut scan = m.scan_with_keys(
        &["--passive", "--seconds", "30"],
        &format!("\n[bthome.\"{MAC}\"]\ndevice_id = 9001\nkey = \"{KEY}\"\n"),
    );
    let state = wait_registered(&mut m, &scan, 1);
    assert_eq!(
        patterns(&state),
        vec![json!([0, 255, "ffff"]), json!([0, 22, "d2fc"])],
        "{state}"
    );
    let press = bthome::seal(
        &bthome::parse_mac(MAC).unwrap(),
        &DeviceKey::from_hex(KEY).unwrap(),
        9,
        true,
        1,
        Some(88),
        &[ButtonEvent::Press],
    );
    m.service(MAC, -52, &press);
    wait_for(Duration::from_secs(10), "the BTHome press", || {
        scan.captured()
            .iter()
            .any(|c| c["service_data"] == hex::encode(&press))
    });
    assert_eq!(scan.interrupt(), 0, "{}", scan.log());
    let row = scan
        .table()
        .lines()
        .find(|l| l.contains(MAC))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", scan.table()));
    assert!(row.trim_end().ends_with("ok"), "{row}");
    // Without a BTHome device in the keys, only our company id (the first passive test
    // asserts the exact list): a second scan on a fresh mock.
    let mut m = MockBluez::start();
    let scan = m.scan(&["--passive", "--seconds", "30"]);
    let state = wait_registered(&mut m, &scan, 1);
    assert!(
        patterns(&state).iter().all(|p| p[1] != 22),
        "no BTHome pattern without BTHome devices: {state}"
    );
}

/// An SOS sealed with the harness site's key for `device_id`.
fn site_sos(device_id: u32, seq: u32) -> Vec<u8> {
    frame::seal(
        &Frame {
            device_id,
            seq,
            battery_pct: 80,
            worn: true,
            event: BandEvent::Sos,
        },
        crate::harness::COMPANY_ID,
        &crate::harness::key_of(device_id),
    )
}

/// A gateway site scanning the mock BlueZ passively (`[ble] scan = "passive"`).
fn passive_site(broker: &crate::harness::Broker, site_id: &str) -> crate::harness::Site {
    let site = crate::ble_daemon::bluez_site(broker, site_id, "60s");
    let text = std::fs::read_to_string(&site.config).unwrap();
    let ble = "silence_restart = \"60s\"\n";
    assert_eq!(text.matches(ble).count(), 1, "{text}");
    let text = text.replace(ble, &format!("{ble}scan = \"passive\"\n"));
    std::fs::write(&site.config, text).unwrap();
    site
}

/// Waits for a gateway status document whose `scan` is `mode` and whose radio is ok.
fn wait_scan_status(phone: &crate::harness::Phone, site: &crate::harness::Site, mode: &str) {
    let topic = format!("{}/gateways/gw-{}/status", site.prefix(), site.site_id);
    phone.wait_until(&format!("a status with scan {mode:?}"), |msgs| {
        msgs.iter().any(|m| {
            m.topic == topic && {
                let s = m.json();
                s["scan"] == mode && s["adapter_ok"] == true
            }
        })
    });
}

#[test]
fn a_passive_gateway_pages_an_sos_and_its_status_says_passive() {
    let broker = crate::harness::Broker::start();
    let mut m = MockBluez::start();
    let site = passive_site(&broker, "pz1");
    let p = site.prefix();
    let phone = crate::ble_daemon::phone(&site, "phones-pz1");
    let gw = crate::ble_daemon::start(&site, &m, "gateway.log");
    wait_registered_by(&mut m, &|| gw.log(), 1);
    wait_scan_status(&phone, &site, "passive");
    let sos = site_sos(17, 201);
    assert!(m.advert_passes("C8:FD:19:00:00:11", -58, 0xFFFF, &sos));
    let new = phone.wait_page(&p, "zhang", "new", "17-201");
    assert_eq!(new["kind"], "sos", "{new}");
    assert_eq!(new["rssi"], -58, "{new}");
    // The operator's view says the same.
    let status = site.status();
    assert_eq!(status["scan"], "passive", "{status}");
    let text = site.cli("status", &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("hci0: ok, passive scan"), "{text}");
    assert_eq!(m.calls("StartDiscovery"), 0, "{}", gw.log());
    // check-config's summary names it too.
    let out =
        crate::harness::bandgate(&["check-config", "--config", site.config.to_str().unwrap()]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("source: bluez, passive scan"),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_passive_gateway_without_a_monitor_manager_scans_actively_and_says_so() {
    let broker = crate::harness::Broker::start();
    let mut m = MockBluez::start_without_monitor_manager();
    let site = passive_site(&broker, "pz2");
    let p = site.prefix();
    let phone = crate::ble_daemon::phone(&site, "phones-pz2");
    let gw = crate::ble_daemon::start(&site, &m, "gateway.log");
    crate::ble_daemon::wait_discovering(&gw, &m, 1);
    wait_scan_status(&phone, &site, "active-fallback");
    let sos = site_sos(17, 202);
    m.advert("C8:FD:19:00:00:11", -58, 0xFFFF, &sos);
    phone.wait_page(&p, "zhang", "new", "17-202");
    let error = gw.log_line("passive scanning is not available");
    assert!(
        error.contains("ERROR") && error.contains("AdvertisementMonitorManager1"),
        "{error}"
    );
    let text = site.cli("status", &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("passive scanning is configured but NOT available"),
        "{text}"
    );
}

#[test]
fn the_silence_ladder_climbs_in_passive_mode_too() {
    let m = MockBluez::start();
    let started = Instant::now();
    let mut scan = m.scan(&["--passive", "--silence-restart", "2s", "--seconds", "60"]);
    let code = scan.wait(Duration::from_secs(30));
    let elapsed = started.elapsed();
    let log = scan.log();
    assert_eq!(code, 1, "a third silence must exit non-zero:\n{log}");
    assert!(elapsed >= Duration::from_secs(6), "{elapsed:?}\n{log}");
    // Registered at start, again after the first silence, again on the new connection.
    assert!(m.calls("RegisterMonitor") >= 3, "{log}");
    assert_eq!(m.calls("StartDiscovery"), 0, "{log}");
    let restart = log.find("reason=\"silence\"").expect(&log);
    let recreate = log.find("second silence").expect(&log);
    let give_up = log.find("giving up").expect(&log);
    assert!(restart < recreate && recreate < give_up, "{log}");
}

#[test]
fn a_monitor_released_again_and_again_with_nothing_heard_gives_way_to_active_scanning() {
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--passive", "--seconds", "60"]);
    wait_registered(&mut m, &scan, 1);
    // Released with nothing heard in between: re-registered after 1 s, 2 s, 4 s; the fourth
    // release is one too many.
    for n in 2..=4 {
        assert_eq!(m.release_monitors(), 1);
        wait_registered(&mut m, &scan, n);
    }
    assert_eq!(m.release_monitors(), 1);
    wait_discovering(&m, &scan, 1);
    let sos = sealed(17, 55, BandEvent::Sos);
    m.advert("C8:FD:19:00:00:11", -62, 0xFFFF, &sos);
    scan.wait_captured("the SOS", &sos);
    let log = scan.end();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("again and again")),
        "{log}"
    );
    assert_eq!(log.matches("registering it again").count(), 3, "{log}");
    assert!(
        scan.table()
            .contains("active scan: passive scanning is NOT available"),
        "{}",
        scan.table()
    );
}

#[test]
fn a_monitor_manager_that_goes_away_is_noticed_and_the_scan_turns_active() {
    // "Discovery stopped behind our back", for a passive scan: the monitor is no longer in
    // force and BlueZ said nothing (no Release). Two probes see it; registering again fails;
    // the source scans actively, with the error logged.
    let mut m = MockBluez::start();
    let mut scan = m.scan(&["--passive", "--seconds", "30"]);
    wait_registered(&mut m, &scan, 1);
    let reply = m.cmd(&json!({"cmd": "drop_manager", "adapter": "hci0"}));
    assert!(reply.starts_with("ok"), "{reply}");
    wait_discovering(&m, &scan, 1);
    let sos = sealed(17, 56, BandEvent::Sos);
    assert!(m.advert_passes("C8:FD:19:00:00:11", -62, 0xFFFF, &sos));
    scan.wait_captured("the SOS", &sos);
    let log = scan.end();
    assert!(
        log.contains("the advertisement monitor is not in force"),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("passive scanning is not available")
            && l.contains("AdvertisementMonitorManager1")),
        "{log}"
    );
    assert!(
        scan.table()
            .contains("active scan: passive scanning is NOT available"),
        "{}",
        scan.table()
    );
}
