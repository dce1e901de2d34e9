//! The fallback ladder end to end: the built daemon (`bandgate run`, replay source) pages
//! through a real Mosquitto and, when nobody's phone confirms, texts and calls through a mock
//! ModemManager (`tests/data/modemmanager_mock.py`, a python-dbusmock template) on a private
//! bus (`DBUS_SYSTEM_BUS_ADDRESS` set for the daemon alone). What the modem did is read from the
//! mock's journal; what the gateway says about it from the retained alert document's
//! `contacts`, the gateway status and `bandgate status`. Every wait is a poll with a deadline.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bandgate::engine::frame::BandEvent;
use serde_json::Value;

use crate::ble::{python, start_bus};
use crate::harness::vectors::data_dir;
use crate::harness::*;

/// A private bus with the mock ModemManager on it.
struct MockMm {
    _dir: tempfile::TempDir,
    python: String,
    bus: Child,
    address: String,
    mock: Child,
}

impl Drop for MockMm {
    fn drop(&mut self) {
        let _ = self.mock.kill();
        let _ = self.mock.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

impl MockMm {
    fn start() -> MockMm {
        let python = python();
        let dir = tempfile::tempdir().unwrap();
        let (bus, address) = start_bus(dir.path());
        let mock = Command::new(&python)
            .args(["-m", "dbusmock", "--template"])
            .arg(data_dir().join("modemmanager_mock.py"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = MockMm {
            _dir: dir,
            python,
            bus,
            address,
            mock,
        };
        let end = Instant::now() + WAIT;
        while m.try_ctl("Journal", None).is_none() {
            assert!(
                Instant::now() < end,
                "the mock ModemManager did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// Calls a control method of the mock; `None` when it does not answer (yet).
    fn try_ctl(&self, method: &str, arg: Option<&str>) -> Option<String> {
        let script = format!(
            "import dbus,sys\n\
             o=dbus.SystemBus().get_object('org.freedesktop.ModemManager1','/org/freedesktop/ModemManager1')\n\
             m=getattr(o,{method:?})\n\
             a=sys.argv[1:]\n\
             r=m(*a,dbus_interface='org.freedesktop.ModemManager1.Mock')\n\
             print(r if r is not None else '')"
        );
        let mut cmd = Command::new(&self.python);
        cmd.args(["-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        if let Some(a) = arg {
            cmd.arg(a);
        }
        let out = cmd.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn ctl(&self, method: &str, arg: Option<&str>) -> String {
        self.try_ctl(method, arg)
            .unwrap_or_else(|| panic!("mock ModemManager: {method} failed"))
    }

    fn journal(&self) -> Value {
        serde_json::from_str(&self.ctl("Journal", None)).unwrap()
    }

    fn configure(&self, behaviour: &str) {
        self.ctl("Configure", Some(behaviour));
    }
}

/// A site of band 17 (王秀英, team li + wang; zhang on duty) whose SOS at 0.5 s nobody
/// confirms unless a test says so; `[fallback]` with second-scale timers, and `edit` applied
/// to the config text.
fn fallback_site(
    broker: &Broker,
    site_id: &str,
    fallback: &str,
    cfg: SiteConfig,
    edit: impl FnOnce(String) -> String,
) -> Site {
    let site = Site::new(
        site_id,
        broker.port(),
        &cfg,
        &[sent(500, 17, 42, BandEvent::Sos)],
    );
    let text = std::fs::read_to_string(&site.config).unwrap();
    let text = edit(text.replace(
        "[supervision]",
        &format!("[fallback]\n{fallback}\n\n[supervision]"),
    ));
    std::fs::write(&site.config, text).unwrap();
    site
}

/// Escalation that stays at tier 1 for a minute (only zhang is paged), reminders every 5 s.
fn slow() -> SiteConfig {
    SiteConfig {
        ack_timeouts: vec!["60s", "60s"],
        renotify_every: "5s",
        repeat_every: "5s",
        ..SiteConfig::default()
    }
}

fn start(site: &Site, m: &MockMm, log: &str, env: &[(&str, &str)]) -> Gateway {
    let mut all = vec![
        ("DBUS_SYSTEM_BUS_ADDRESS", m.address.as_str()),
        ("BANDGATE_TEST_CALL_GAP_MS", "500"),
    ];
    all.extend_from_slice(env);
    Gateway::start(site, log, &all)
}

/// Waits until the retained document of alert `17-42` has contacts that `pick` accepts.
fn wait_contacts(
    phone: &Phone,
    site: &Site,
    gw: &Gateway,
    pick: impl Fn(&[Value]) -> bool,
) -> Value {
    let topic = format!("{}/alerts/17-42", site.prefix());
    let end = Instant::now() + WAIT;
    loop {
        let found = phone
            .messages()
            .iter()
            .rev()
            .filter(|m| m.topic == topic && !m.payload.is_empty())
            .map(|m| m.json())
            .find(|d| pick(d["contacts"].as_array().unwrap()));
        if let Some(d) = found {
            return d;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for the contacts; the gateway's log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `(staff, channel, step, outcome)` of each contact.
fn summary(contacts: &[Value]) -> Vec<(String, String, u64, String)> {
    contacts
        .iter()
        .map(|c| {
            (
                c["staff_id"].as_str().unwrap().to_string(),
                c["channel"].as_str().unwrap().to_string(),
                c["step"].as_u64().unwrap(),
                c["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(contacts: &[Value], staff: &str, channel: &str, step: u64, outcome: &str) -> bool {
    summary(contacts)
        .iter()
        .any(|c| c.0 == staff && c.1 == channel && c.2 == step && c.3 == outcome)
}

const LADDER: &str = "after = \"2s\"\nsteps = [\"sms\", \"call\", \"call\"]\nstep_every = [\"2s\", \"2s\"]\nmodem = \"auto\"\nring_for = \"2s\"";

#[test]
fn an_sos_nobody_confirms_is_texted_at_the_deadline_then_called_all_in_the_document() {
    let broker = Broker::start();
    let m = MockMm::start();
    let site = fallback_site(&broker, "fb-ladder", LADDER, slow(), |t| t);
    let phone = Phone::connect(broker.port(), "fb-ladder-board", &site.prefix());
    let mut gw = start(&site, &m, "gw.log", &[]);
    gw.wait_ready(&site);
    // SMS at the deadline, its status report, then two calls that ring unanswered.
    let doc = wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "sms", 1, "delivered")
            && has(c, "zhang", "call", 2, "unanswered")
            && has(c, "zhang", "call", 3, "unanswered")
    });
    let contacts = doc["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 3, "{doc}");
    // The SMS went 2 s after the page (not before), the calls 2 s apart at least.
    let raised = ms(&doc["raised_at"]);
    let at: Vec<i64> = contacts.iter().map(|c| ms(&c["at"])).collect();
    assert!(at[0] - raised >= 2000, "{doc}");
    assert!(at[1] - at[0] >= 2000 && at[2] - at[1] >= 2000, "{doc}");
    let j = m.journal();
    assert_eq!(
        j["sent"],
        serde_json::json!([[
            "13800000001",
            "【社区呼叫】王秀英 广惠园社区3号楼2单元401 紧急求救，请打开值班页"
        ]]),
        "{j}"
    );
    assert_eq!(
        j["calls"],
        serde_json::json!([
            ["13800000001", "hung up ringing"],
            ["13800000001", "hung up ringing"]
        ]),
        "{j}"
    );
    // The modem and who is on duty, in the gateway status and `bandgate status`.
    let status = site.status();
    let s = &status;
    assert_eq!(
        s["modem"],
        serde_json::json!({"present": true, "sim_ready": true, "registered": true, "signal_pct": 71}),
        "{status}"
    );
    assert_eq!(
        s["on_duty"],
        serde_json::json!([{"staff_id": "zhang", "name": "张伟", "console": null}]),
        "{status}"
    );
    let out = site.cli("status", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\nmodem    present, SIM ready, registered, signal 71%\n"),
        "{text}"
    );
    assert!(
        text.contains("\non duty  张伟 (zhang): no console seen\n"),
        "{text}"
    );
    let out = site.cli("alerts", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("17-42: sms zhang step 1 at "), "{text}");
    gw.wait_log("fallback outcome");
}

#[test]
fn a_phone_that_confirms_in_time_is_sent_nothing() {
    let broker = Broker::start();
    let m = MockMm::start();
    let site = fallback_site(&broker, "fb-quiet", LADDER, slow(), |t| t);
    let phone = Phone::connect(broker.port(), "fb-quiet-board", &site.prefix());
    let mut gw = start(&site, &m, "gw.log", &[]);
    gw.wait_ready(&site);
    phone.wait_page(&site.prefix(), "zhang", "new", "17-42");
    phone.act(
        &site.prefix(),
        "zhang",
        serde_json::json!({"alert_id": "17-42", "action": "delivered"}),
    );
    // Two reminders after the deadline (5 s apart) prove the deadline has long passed.
    phone.wait_until("two reminders to zhang", |msgs| {
        msgs.iter()
            .filter(|m| {
                m.notification(&site.prefix())
                    .is_some_and(|(s, r, _)| s == "zhang" && r == "reminder")
            })
            .count()
            >= 2
    });
    let j = m.journal();
    assert_eq!(j["created"], serde_json::json!([]), "{j}");
    assert_eq!(j["calls"], serde_json::json!([]), "{j}");
    assert!(!gw.log().contains("fallback step"), "{}", gw.log());
}

#[test]
fn a_send_that_fails_is_recorded_failed_and_the_ladder_goes_on() {
    let broker = Broker::start();
    let m = MockMm::start();
    m.configure(r#"{"send_fails": true, "call": "answer"}"#);
    let site = fallback_site(&broker, "fb-fail", LADDER, slow(), |t| t);
    let phone = Phone::connect(broker.port(), "fb-fail-board", &site.prefix());
    let mut gw = start(&site, &m, "gw.log", &[]);
    gw.wait_ready(&site);
    let doc = wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "sms", 1, "failed") && has(c, "zhang", "call", 2, "answered")
    });
    let sms = &doc["contacts"][0];
    assert!(
        sms["detail"]
            .as_str()
            .unwrap()
            .contains("Sending SMS failed"),
        "{doc}"
    );
    // An answered call is not an acknowledgement.
    assert_eq!(doc["state"], "open", "{doc}");
    assert_eq!(m.journal()["sent"], serde_json::json!([]));
    gw.wait_log("fallback step failed");
}

#[test]
fn the_modem_vanishing_mid_alert_fails_its_steps_and_its_return_is_used() {
    let broker = Broker::start();
    let m = MockMm::start();
    m.configure(r#"{"call": "answer"}"#);
    let fallback =
        "after = \"3s\"\nsteps = [\"sms\", \"call\"]\nstep_every = [\"8s\"]\nring_for = \"2s\"";
    let site = fallback_site(&broker, "fb-vanish", fallback, slow(), |t| t);
    let phone = Phone::connect(broker.port(), "fb-vanish-board", &site.prefix());
    let mut gw = start(&site, &m, "gw.log", &[]);
    gw.wait_ready(&site);
    site.wait_status(&gw, |s| s["modem"]["present"] == true);
    m.ctl("RemoveModem", None);
    // The status says so; MQTT paging goes on.
    site.wait_status(&gw, |s| s["modem"]["present"] == false);
    let doc = wait_contacts(&phone, &site, &gw, |c| has(c, "zhang", "sms", 1, "failed"));
    assert!(
        doc["contacts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("no modem"),
        "{doc}"
    );
    phone.wait_page(&site.prefix(), "zhang", "reminder", "17-42");
    m.ctl("AddModem", None);
    site.wait_status(&gw, |s| s["modem"]["present"] == true);
    wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "call", 2, "answered")
    });
    assert_eq!(
        m.journal()["calls"],
        serde_json::json!([["13800000001", "answered"]])
    );
}

#[test]
fn calls_answered_refused_and_unanswered_are_told_apart() {
    let broker = Broker::start();
    let m = MockMm::start();
    m.configure(r#"{"call": "answer"}"#);
    let fallback = "after = \"2s\"\nsteps = [\"call\", \"call\", \"call\"]\nstep_every = [\"4s\", \"4s\"]\nring_for = \"2s\"";
    let site = fallback_site(&broker, "fb-calls", fallback, slow(), |t| t);
    let phone = Phone::connect(broker.port(), "fb-calls-board", &site.prefix());
    let mut gw = start(&site, &m, "gw.log", &[]);
    gw.wait_ready(&site);
    wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "call", 1, "answered")
    });
    m.configure(r#"{"call": "refuse"}"#);
    wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "call", 2, "refused")
    });
    m.configure(r#"{"call": "ring"}"#);
    let doc = wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "call", 3, "unanswered")
    });
    assert_eq!(
        summary(doc["contacts"].as_array().unwrap())
            .into_iter()
            .map(|c| c.3)
            .collect::<Vec<_>>(),
        ["answered", "refused", "unanswered"]
    );
}

#[test]
fn kill_9_between_creating_and_sending_an_sms_sends_exactly_one_after_restart() {
    let broker = Broker::start();
    let m = MockMm::start();
    let fallback = "after = \"2s\"\nsteps = [\"sms\"]\nstep_every = []";
    let site = fallback_site(&broker, "fb-kill", fallback, slow(), |t| t);
    let phone = Phone::connect(broker.port(), "fb-kill-board", &site.prefix());
    let mut gw = start(
        &site,
        &m,
        "gw1.log",
        &[("BANDGATE_FAULT_ABORT_BEFORE_SMS_SEND", "1")],
    );
    let status = gw.wait_exit();
    assert!(
        !status.success(),
        "the gateway should have aborted: {}",
        gw.log()
    );
    let j = m.journal();
    assert_eq!(j["created"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["sent"], serde_json::json!([]), "{j}");
    let mut gw = start(&site, &m, "gw2.log", &[]);
    gw.wait_ready(&site);
    wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "sms", 1, "delivered")
    });
    let j = m.journal();
    assert_eq!(j["created"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["sent"].as_array().unwrap().len(), 1, "{j}");
}

#[test]
fn an_sms_only_guardian_is_texted_when_tier_2_pages_them() {
    let broker = Broker::start();
    let m = MockMm::start();
    let fallback = "after = \"30s\"\nsteps = [\"sms\"]\nstep_every = []";
    let cfg = SiteConfig {
        ack_timeouts: vec!["2s", "60s"],
        renotify_every: "5s",
        repeat_every: "5s",
        ..SiteConfig::default()
    };
    let site = fallback_site(&broker, "fb-guardian", fallback, cfg, |t| {
        let wang = "name = \"王强\"\nphone = \"13800000005\"\n";
        assert!(t.contains(wang), "the site template changed:\n{t}");
        t.replace(wang, &format!("{wang}channels = [\"sms\"]\n"))
    });
    let phone = Phone::connect(broker.port(), "fb-guardian-board", &site.prefix());
    let mut gw = start(&site, &m, "gw.log", &[]);
    gw.wait_ready(&site);
    let doc = wait_contacts(&phone, &site, &gw, |c| {
        has(c, "wang", "sms", 1, "delivered")
    });
    assert_eq!(doc["tier"], 2, "{doc}");
    // Only wang, at once: zhang and li have the app and their 30 s deadline has not passed.
    assert_eq!(
        summary(doc["contacts"].as_array().unwrap()).len(),
        1,
        "{doc}"
    );
    let j = m.journal();
    assert_eq!(j["sent"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["sent"][0][0], "13800000005", "{j}");
}

#[test]
fn a_console_known_to_be_gone_is_texted_at_once_and_its_retained_presence_is_kept() {
    let broker = Broker::start();
    let m = MockMm::start();
    let fallback = "after = \"60s\"\nsteps = [\"sms\"]\nstep_every = []";
    // The SOS comes 5 s after start, once the retained presence has been read.
    let site = Site::new(
        "fb-presence",
        broker.port(),
        &slow(),
        &[sent(5000, 17, 42, BandEvent::Sos)],
    );
    let text = std::fs::read_to_string(&site.config).unwrap();
    std::fs::write(
        &site.config,
        text.replace(
            "[supervision]",
            &format!("[fallback]\n{fallback}\n\n[supervision]"),
        ),
    )
    .unwrap();
    let presence = format!("{}/phones/zhang/web-1", site.prefix());
    let console = Phone::connect_to(
        broker.port(),
        "fb-presence-console",
        std::slice::from_ref(&presence),
    );
    console.publish_retained(
        &presence,
        r#"{"online": true, "armed": true, "at": "2026-11-26T08:00:00.000Z"}"#,
    );
    console.wait_until("the retained presence", |msgs| {
        msgs.iter().any(|m| m.topic == presence)
    });
    let phone = Phone::connect(broker.port(), "fb-presence-board", &site.prefix());
    let mut gw = start(&site, &m, "gw.log", &[]);
    gw.wait_ready(&site);
    site.wait_status(&gw, |s| s["on_duty"][0]["console"] == true);
    // The console goes away (its last will would say the same); a bad record is counted.
    console.publish_retained(&presence, r#"{"online": false, "armed": false}"#);
    console.publish(&format!("{}/phones/zhang/web-2", site.prefix()), "not json");
    site.wait_status(&gw, |s| {
        s["on_duty"][0]["console"] == false && s["messages_ignored"]["presence_malformed"] == 1
    });
    // The retained status document says so within a second or two, not at the next
    // status_interval (60 s here; the wait gives up after 30).
    let gone_at = Instant::now();
    let status = format!("{}/gateways/gw-fb-presence/status", site.prefix());
    let board = Phone::connect_to(
        broker.port(),
        "fb-presence-status",
        std::slice::from_ref(&status),
    );
    board.wait_doc(&status, |s| s["on_duty"][0]["console"] == false);
    assert!(
        gone_at.elapsed() < Duration::from_secs(10),
        "{:?}",
        gone_at.elapsed()
    );
    let doc = wait_contacts(&phone, &site, &gw, |c| {
        has(c, "zhang", "sms", 1, "delivered")
    });
    // At once, not after the 60 s deadline.
    let at = ms(&doc["contacts"][0]["at"]);
    assert!(at - ms(&doc["raised_at"]) < 5000, "{doc}");
    // The gateway never clears or rewrites presence: the retained record is the console's.
    let late = Phone::connect_to(
        broker.port(),
        "fb-presence-late",
        std::slice::from_ref(&presence),
    );
    let msgs = late.wait_until("the retained presence", |msgs| {
        msgs.iter().any(|m| m.topic == presence && m.retain)
    });
    let kept = msgs.iter().find(|m| m.topic == presence).unwrap();
    assert_eq!(kept.json()["online"], false, "{:?}", kept);
}

#[test]
fn check_config_says_whether_the_modem_is_there() {
    let broker = Broker::start();
    let m = MockMm::start();
    let site = fallback_site(&broker, "fb-check", LADDER, slow(), |t| t);
    let check = || {
        let out = Command::new(crate::harness::bin())
            .args(["check-config", "--config", site.config.to_str().unwrap()])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &m.address)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = check();
    assert!(
        text.contains(
            "\nfallback: sms, call, call after 2s unconfirmed (modem: the first modem ModemManager lists)\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("\nmodem: present, SIM ready, registered, signal 71%\n"),
        "{text}"
    );
    m.ctl("RemoveModem", None);
    let text = check();
    assert!(
        text.contains("modem: NOT FOUND (ModemManager lists no modem)"),
        "{text}"
    );
}
