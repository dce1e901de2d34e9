//! Black-box harness: a site on disk (bandgate.toml, keys.toml, a replay capture, state_dir),
//! the built `bandgate` binary as a child process, and a duty phone on the broker.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bandgate::adapters::replay::{write_line, CaptureLine};
use bandgate::engine::frame::{seal, BandEvent, Frame};
use bandgate::engine::DeviceKey;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::support::write_private;

pub const COMPANY_ID: u16 = 0xFFFF;
/// Long enough for a debug build on a busy 2-core machine; conditions are polled.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn key_of(device_id: u32) -> DeviceKey {
    DeviceKey::from_hex(&format!("eea7171f8b19f17864f43aa4d1cf{device_id:04x}")).unwrap()
}

/// Timers and residents of a test site; `Default` is quiet (no timer fires within a test
/// unless a test shortens it).
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub ack_timeouts: Vec<&'static str>,
    pub renotify_every: &'static str,
    pub repeat_every: &'static str,
    pub claim_timeout: &'static str,
    pub wearer_cancel: &'static str,
    pub cancel_verify_timeout: &'static str,
    pub resolved_retention: &'static str,
    pub silent_after: &'static str,
    /// Enrolled bands: 17 (王秀英, team li + wang) and 18 (刘桂兰, team wang) when listed.
    pub residents: Vec<u32>,
    /// This many more residents with bands `EXTRA_BANDS..EXTRA_BANDS + n` (no team).
    pub extra_bands: u32,
}

/// The first device id of `SiteConfig::extra_bands`.
pub const EXTRA_BANDS: u32 = 1000;

impl Default for SiteConfig {
    fn default() -> SiteConfig {
        SiteConfig {
            ack_timeouts: vec!["2s", "2s"],
            renotify_every: "1s",
            repeat_every: "2s",
            claim_timeout: "3s",
            wearer_cancel: "verify",
            cancel_verify_timeout: "2s",
            resolved_retention: "2s",
            silent_after: "1h",
            residents: vec![17],
            extra_bands: 0,
        }
    }
}

/// One capture line to be: at `t_ms`, band `device_id` sends `event` as frame `seq`.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub t_ms: u64,
    pub device_id: u32,
    pub seq: u32,
    pub battery_pct: u8,
    pub event: BandEvent,
}

pub fn sent(t_ms: u64, device_id: u32, seq: u32, event: BandEvent) -> Sent {
    Sent {
        t_ms,
        device_id,
        seq,
        battery_pct: 80,
        event,
    }
}

pub fn heartbeat() -> BandEvent {
    BandEvent::Heartbeat {
        heart_rate: Some(72),
        spo2: Some(97),
        steps: 1200,
    }
}

/// A site in a temp dir: config, keys (0600), capture, state_dir.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub site_id: String,
    pub config: PathBuf,
    pub broker_port: u16,
}

impl Site {
    pub fn new(site_id: &str, broker_port: u16, cfg: &SiteConfig, capture: &[Sent]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let capture_path = dir.path().join("capture.jsonl");
        write_capture(&capture_path, capture);
        let mut keys = String::from("[devices]\n");
        for id in [17u32, 18]
            .into_iter()
            .chain(EXTRA_BANDS..EXTRA_BANDS + cfg.extra_bands)
        {
            keys.push_str(&format!("{id} = \"{}\"\n", key_of(id).to_hex()));
        }
        write_private(dir.path(), "keys.toml", &keys);
        let config = dir.path().join("bandgate.toml");
        std::fs::write(&config, config_text(site_id, broker_port, cfg)).unwrap();
        Site {
            dir,
            site_id: site_id.to_owned(),
            config,
            broker_port,
        }
    }

    pub fn prefix(&self) -> String {
        format!("bandgate/{}", self.site_id)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn write_capture(path: &Path, capture: &[Sent]) {
    let mut out = File::create(path).unwrap();
    for s in capture {
        let frame = Frame {
            device_id: s.device_id,
            seq: s.seq,
            battery_pct: s.battery_pct,
            worn: true,
            event: s.event,
        };
        let data = seal(&frame, COMPANY_ID, &key_of(s.device_id));
        let line = CaptureLine {
            t_ms: s.t_ms,
            addr: format!("C8:FD:19:00:00:{:02X}", s.device_id),
            rssi: Some(-61),
            company_id: COMPANY_ID,
            data: hex::encode(data),
        };
        write_line(&mut out, &line).unwrap();
    }
}

fn config_text(site_id: &str, port: u16, c: &SiteConfig) -> String {
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut residents = String::new();
    for d in EXTRA_BANDS..EXTRA_BANDS + c.extra_bands {
        residents.push_str(&format!(
            "\n[[residents]]\nid = \"r{d}\"\nname = \"住户{d}\"\naddress = \"广惠园社区\"\nphone = \"13800000000\"\nnotes = \"\"\ndevice_id = {d}\nteam = []\n"
        ));
    }
    if c.residents.contains(&17) {
        residents.push_str(
            r#"
[[residents]]
id = "r017"
name = "王秀英"
address = "广惠园社区 3号楼 2单元 401"
phone = "13800000000"
notes = "高血压, 独居"
device_id = 17
team = ["li", "wang"]
"#,
        );
    }
    if c.residents.contains(&18) {
        residents.push_str(
            r#"
[[residents]]
id = "r018"
name = "刘桂兰"
address = "广惠园社区 5号楼 1单元 202"
phone = "13800000010"
notes = ""
device_id = 18
team = ["wang"]
"#,
        );
    }
    format!(
        r#"site_id = "{site_id}"
gateway_id = "gw-{site_id}"
locale = "zh-CN"
timezone = "UTC"
state_dir = "state"
keys_file = "keys.toml"
# Each site its own operator socket, so parallel daemons never meet at /run/bandgate.
control_socket = "control.sock"

[ble]
source = "replay"
replay_file = "capture.jsonl"
company_id = 0xFFFF

[mqtt]
url = "mqtt://127.0.0.1:{port}"
status_interval = "60s"
device_state_interval = "60s"

[alerts]
resolved_retention = "{retention}"

[escalation]
ack_timeouts = [{acks}]
renotify_every = "{renotify}"
repeat_every = "{repeat}"
claim_timeout = "{claim}"
wearer_cancel = "{cancel}"
cancel_verify_timeout = "{verify}"
supervisors = ["chen"]

[supervision]
silent_after = "{silent}"
low_battery_pct = 20

[[staff]]
id = "zhang"
name = "张伟"
phone = "13800000001"

[[staff]]
id = "li"
name = "李娜"
phone = "13800000004"

[[staff]]
id = "wang"
name = "王强"
phone = "13800000005"

[[staff]]
id = "chen"
name = "陈静"
phone = "13800000006"

[[rota]]
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"
staff = ["zhang"]
{residents}"#,
        acks = list(&c.ack_timeouts),
        retention = c.resolved_retention,
        renotify = c.renotify_every,
        repeat = c.repeat_every,
        claim = c.claim_timeout,
        cancel = c.wearer_cancel,
        verify = c.cancel_verify_timeout,
        silent = c.silent_after,
    )
}

/// The built daemon as a child process (`bandgate run --config ...`); SIGKILLed on drop.
pub struct Gateway {
    child: Option<Child>,
    log: PathBuf,
}

impl Gateway {
    /// Starts `bandgate run`; its stderr goes to `log_name` in the site dir.
    pub fn start(site: &Site, log_name: &str, env: &[(&str, &str)]) -> Gateway {
        let log = site.path().join(log_name);
        let err = File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bandgate"));
        cmd.arg("run")
            .arg("--config")
            .arg(&site.config)
            .env("RUST_LOG", "warn,bandgate=debug")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting the built bandgate binary");
        Gateway {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the daemon's log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the gateway did not log {needle:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// `kill -9`: no goodbye, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn term(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("gateway running").id();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        self.wait_exit()
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("gateway running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the gateway did not exit; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One message a phone received.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// When the phone received it.
    pub at: jiff::Timestamp,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    /// For a notification: (staff, reason, alert document).
    pub fn notification(&self, prefix: &str) -> Option<(String, String, Value)> {
        let staff = self.topic.strip_prefix(&format!("{prefix}/notify/"))?;
        let v = self.json();
        Some((
            staff.to_owned(),
            v["reason"].as_str().unwrap().to_owned(),
            v["alert"].clone(),
        ))
    }

    /// For an alert document (non-empty payload on `{p}/alerts/..`).
    pub fn alert_doc(&self, prefix: &str) -> Option<Value> {
        self.topic.strip_prefix(&format!("{prefix}/alerts/"))?;
        (!self.payload.is_empty()).then(|| self.json())
    }
}

/// The duty phones: one MQTT client with a persistent session (clean_session = false, a fixed
/// client id), QoS 1, subscribed to `{p}/alerts/#` and `{p}/notify/#` (and whatever else is
/// asked for). Reconnects by itself; resubscribes only when the broker lost its session.
pub struct Phone {
    client: Client,
    msgs: Arc<Mutex<Vec<Msg>>>,
    connected: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Phone {
    pub fn connect(port: u16, client_id: &str, prefix: &str) -> Phone {
        Phone::connect_to(
            port,
            client_id,
            &[format!("{prefix}/alerts/#"), format!("{prefix}/notify/#")],
        )
    }

    pub fn connect_to(port: u16, client_id: &str, filters: &[String]) -> Phone {
        Phone::connect_with(Phone::options(port, client_id), filters)
    }

    /// The phone's options, for `connect_with` after adding credentials or TLS.
    pub fn options(port: u16, client_id: &str) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        opts
    }

    pub fn connect_with(opts: MqttOptions, filters: &[String]) -> Phone {
        let (client, mut connection) = Client::new(opts, 64);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let filters = filters.to_vec();
        {
            let (client, msgs, connected, stop) = (
                client.clone(),
                msgs.clone(),
                connected.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for event in connection.iter() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            if !ack.session_present {
                                for f in &filters {
                                    let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            connected.store(true, Ordering::SeqCst)
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => msgs.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            at: jiff::Timestamp::now(),
                        }),
                        Ok(_) => {}
                        Err(_) => {
                            connected.store(false, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            });
        }
        let phone = Phone {
            client,
            msgs,
            connected,
            stop,
        };
        let deadline = Instant::now() + WAIT;
        while !phone.connected.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "phone could not subscribe");
            std::thread::sleep(Duration::from_millis(20));
        }
        phone
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the messages received so far; returns them.
    pub fn wait_until(&self, what: &str, pred: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
        let deadline = Instant::now() + WAIT;
        loop {
            let msgs = self.messages();
            if pred(&msgs) {
                return msgs;
            }
            if Instant::now() > deadline {
                let dump: Vec<String> = msgs
                    .iter()
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "phone: timed out waiting for {what}; received:\n{}",
                    dump.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for a notification to `staff` with `reason` about `alert_id`; returns its document.
    pub fn wait_page(&self, prefix: &str, staff: &str, reason: &str, alert_id: &str) -> Value {
        let msgs = self.wait_until(&format!("{reason} to {staff} about {alert_id}"), |m| {
            find_page(m, prefix, staff, reason, alert_id).is_some()
        });
        find_page(&msgs, prefix, staff, reason, alert_id).unwrap()
    }

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }

    /// A phone action on `{p}/ack/{staff}`.
    pub fn act(&self, prefix: &str, staff: &str, body: Value) {
        self.publish(&format!("{prefix}/ack/{staff}"), body.to_string());
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

pub fn find_page(
    msgs: &[Msg],
    prefix: &str,
    staff: &str,
    reason: &str,
    alert_id: &str,
) -> Option<Value> {
    msgs.iter().find_map(|m| {
        let (s, r, doc) = m.notification(prefix)?;
        (s == staff && r == reason && doc["alert_id"] == alert_id).then_some(doc)
    })
}

/// Every (staff, reason, document) received about `alert_id`, in arrival order.
pub fn pages(msgs: &[Msg], prefix: &str, alert_id: &str) -> Vec<(String, String, Value)> {
    msgs.iter()
        .filter_map(|m| m.notification(prefix))
        .filter(|(_, _, d)| d["alert_id"] == alert_id)
        .collect()
}

/// Every non-empty alert document of `alert_id`, in arrival order.
pub fn docs(msgs: &[Msg], prefix: &str, alert_id: &str) -> Vec<Value> {
    msgs.iter()
        .filter(|m| m.topic == format!("{prefix}/alerts/{alert_id}"))
        .filter_map(|m| m.alert_doc(prefix))
        .collect()
}

/// Asserts that, per alert_id, `updated_at` never goes back in arrival order, on the alert
/// topic and in notifications alike; equal times must carry identical documents.
pub fn assert_ordered(msgs: &[Msg], prefix: &str) {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<String, (String, Value)> = BTreeMap::new();
    let mut by_time: BTreeMap<(String, String), Value> = BTreeMap::new();
    for m in msgs {
        let doc = match (m.alert_doc(prefix), m.notification(prefix)) {
            (Some(d), _) => d,
            (None, Some((_, _, d))) => d,
            _ => continue,
        };
        let id = doc["alert_id"].as_str().unwrap().to_owned();
        let at = doc["updated_at"].as_str().unwrap().to_owned();
        if let Some((prev, _)) = last.get(&id) {
            assert!(
                *prev <= at,
                "alert {id}: updated_at went back from {prev} to {at} on {}",
                m.topic
            );
        }
        match by_time.get(&(id.clone(), at.clone())) {
            Some(same) => assert_eq!(
                same, &doc,
                "alert {id}: two different documents with updated_at {at}"
            ),
            None => {
                by_time.insert((id.clone(), at.clone()), doc.clone());
            }
        }
        last.insert(id, (at, doc));
    }
}
