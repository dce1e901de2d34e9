//! A gateway's site on disk: bandgate.toml (the one builder of the tests' site config, short
//! timers), keys.toml (0600), a replay capture of sealed frames, state_dir and control socket;
//! and what an operator asks of it with the built binary (`status`, `alerts`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Output;

use bandgate::adapters::replay::{write_line, CaptureLine};
use bandgate::engine::frame::{seal, BandEvent, Frame};
use bandgate::engine::DeviceKey;
use serde_json::Value;

use super::gateway::bandgate;
use super::vectors::write_private;

pub const COMPANY_ID: u16 = 0xFFFF;

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
    /// The bands with a key in keys.toml (of 17 and 18).
    pub keys: Vec<u32>,
    /// This many more residents with bands `EXTRA_BANDS..EXTRA_BANDS + n` (no team), keyed.
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
            keys: vec![17, 18],
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
    /// Sealed with a key the gateway does not have (its check refuses it: `auth`).
    pub forged: bool,
}

pub fn sent(t_ms: u64, device_id: u32, seq: u32, event: BandEvent) -> Sent {
    Sent {
        t_ms,
        device_id,
        seq,
        battery_pct: 80,
        event,
        forged: false,
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
        for id in cfg
            .keys
            .iter()
            .copied()
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

    /// The daemon's operator socket (`control_socket` in bandgate.toml).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// Points the site's gateway at `url` with extra `[mqtt]` lines.
    pub fn set_mqtt(&self, url: &str, extra: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let old = format!("url = \"mqtt://127.0.0.1:{}\"\n", self.broker_port);
        assert!(text.contains(&old));
        let text = text.replace(&old, &format!("url = \"{url}\"\n{extra}"));
        std::fs::write(&self.config, text).unwrap();
    }

    /// Makes the gateway log in to its broker as `user`, with `password_file` holding
    /// `secret` (0600).
    pub fn login(&self, user: &str, secret: &str) {
        let file = write_private(self.path(), "mqtt-password", secret);
        self.set_mqtt(
            &format!("mqtt://127.0.0.1:{}", self.broker_port),
            &format!(
                "username = {user:?}\npassword_file = {}\n",
                toml_path(&file)
            ),
        );
    }

    /// `bandgate <command> --socket <the site's> <args>`.
    pub fn cli(&self, command: &str, args: &[&str]) -> Output {
        let socket = self.socket();
        let mut all = vec![command, "--socket", socket.to_str().unwrap()];
        all.extend_from_slice(args);
        bandgate(&all)
    }

    /// `bandgate <command> <args> --json` through the running daemon's socket; it must succeed.
    pub fn json(&self, command: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(command, &all);
        assert!(
            out.status.success(),
            "bandgate {command} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `bandgate status --json --config <bandgate.toml>` of the running gateway.
    pub fn status(&self) -> Value {
        let out = bandgate(&[
            "status",
            "--json",
            "--config",
            self.config.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "bandgate status: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["result"], "status", "{v}");
        v
    }

    /// Polls `status` until `pick` accepts it; fails after `WAIT` with `gw`'s log.
    pub fn wait_status(&self, gw: &super::Gateway, pick: impl Fn(&Value) -> bool) -> Value {
        let end = std::time::Instant::now() + super::WAIT;
        loop {
            let s = self.status();
            if pick(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for the status; last {s}; the gateway's log:\n{}",
                gw.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// `bandgate alerts --json`: the open alerts of the running gateway.
    pub fn alerts(&self) -> Vec<Value> {
        self.json("alerts", &[])["alerts"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// A path as a TOML string.
pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
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
        let key = if s.forged {
            DeviceKey([0x99; 16])
        } else {
            key_of(s.device_id)
        };
        let data = seal(&frame, COMPANY_ID, &key);
        let line = CaptureLine {
            t_ms: s.t_ms,
            addr: format!("C8:FD:19:00:00:{:02X}", s.device_id),
            rssi: Some(-61),
            company_id: Some(COMPANY_ID),
            data: Some(hex::encode(data)),
            ..CaptureLine::default()
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
