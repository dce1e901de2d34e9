//! The duty console (issue 16) as duty staff use it: real headless Chromium (phone-sized,
//! zh-CN) on the page the built daemon serves, speaking MQTT v5 over WebSockets to a real
//! Mosquitto started from the shipped config (WebSocket listener, passwords, ACL). SOS frames
//! come from a live replay feed (a named pipe); the gateway's own alert documents are read by
//! an MQTT client as the gateway's user, so every assertion about state is the gateway's.
//!
//! Pages are read through CDP (no user activation); only taps a person makes touch the page.

use std::fs::File;
use std::time::{Duration, Instant};

use bandgate::engine::frame::BandEvent;
use serde_json::Value;

use crate::harness::browser::Browser;
use crate::harness::{
    acl_gateway_user, bandgate, make_pki, sent, text, toml_path, write_capture, Broker, Gateway,
    Phone, Site, SiteConfig, WAIT,
};

const USERS: [&str; 4] = ["zhang", "li", "wang", "chen"];

fn password(user: &str) -> String {
    format!("{user}-pw")
}

struct Console {
    // Dropped in this order: the browser, the gateway, then the broker and the site's files.
    browser: Browser,
    gateway: Gateway,
    /// The gateway's user reading every alert document (what the gateway published).
    board: Phone,
    /// Holds the live feed open, so that the replay source never sees its end.
    _feed: File,
    site: Site,
    broker: Broker,
    web_port: u16,
    /// "https" when the console is served with a certificate.
    scheme: &'static str,
    seq: u32,
}

impl Console {
    /// A site whose rota puts `on_duty` on duty now, its console at a free port, and Chromium.
    fn start(on_duty: &[&str]) -> Console {
        Console::start_with(on_duty, |acl| acl)
    }

    fn start_with(on_duty: &[&str], edit_acl: impl FnOnce(String) -> String) -> Console {
        Console::start_opts(on_duty, edit_acl, None)
    }

    /// With `pki` (a directory from `make_pki`): the console over HTTPS and the broker's
    /// WebSocket listener over TLS, both with its `server.pem`.
    fn start_opts(
        on_duty: &[&str],
        edit_acl: impl FnOnce(String) -> String,
        pki: Option<&std::path::Path>,
    ) -> Console {
        let gw = acl_gateway_user();
        let mut accounts: Vec<(String, String)> = vec![(gw.clone(), password(&gw))];
        accounts.extend(USERS.iter().map(|u| (u.to_string(), password(u))));
        let users: Vec<(&str, &str)> = accounts
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        let mut broker = Broker::shipped_edited(&users, |conf| match pki {
            None => conf,
            Some(d) => conf.replacen(
                "protocol websockets",
                &format!(
                    "protocol websockets\ncertfile {}\nkeyfile {}",
                    d.join("server.pem").display(),
                    d.join("server.key").display()
                ),
                1,
            ),
        });
        let acl = broker.dir().join("bandgate.acl");
        let text = std::fs::read_to_string(&acl).unwrap();
        let edited = edit_acl(text.clone());
        if edited != text {
            std::fs::write(&acl, edited).unwrap();
            broker.stop();
            broker.restart();
        }
        let cfg = SiteConfig {
            ack_timeouts: vec!["5m", "5m"],
            renotify_every: "1m",
            repeat_every: "2m",
            claim_timeout: "15m",
            resolved_retention: "1m",
            ..SiteConfig::default()
        };
        let site = Site::new("console", broker.port(), &cfg, &[]);
        site.login(&gw, &password(&gw));
        // The live feed: a named pipe where the capture was.
        let feed = site.path().join("capture.jsonl");
        std::fs::remove_file(&feed).unwrap();
        let ok = std::process::Command::new("mkfifo")
            .arg(&feed)
            .status()
            .unwrap();
        assert!(ok.success());
        let holder = File::options().read(true).write(true).open(&feed).unwrap();
        let web_port = bandgate::cmd::demo::mosquitto::free_port().unwrap();
        let mut text = std::fs::read_to_string(&site.config).unwrap();
        let rota = format!(
            "staff = [{}]",
            on_duty
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        text = text.replacen("staff = [\"zhang\"]", &rota, 1);
        // Top-level keys come first in TOML: the section goes after [privacy]-like sections,
        // before the arrays of tables.
        let web = match pki {
            None => format!(
                "[web]\nlisten = \"127.0.0.1:{web_port}\"\nbroker_url = \"ws://{{host}}:{}\"\n",
                broker.ws_port()
            ),
            Some(d) => format!(
                "[web]\nlisten = \"127.0.0.1:{web_port}\"\nbroker_url = \"wss://{{host}}:{}\"\n\
                 cert_file = {}\nkey_file = {}\n",
                broker.ws_port(),
                toml_path(&d.join("server.pem")),
                toml_path(&d.join("server.key"))
            ),
        };
        text = text.replacen("[[staff]]", &format!("{web}\n[[staff]]"), 1);
        std::fs::write(&site.config, text).unwrap();
        let mut gateway = Gateway::start_args(&site, "gw.log", &["--fast"], &[]);
        gateway.wait_ready(&site);
        bandgate::cmd::demo::mosquitto::wait_for_port(web_port, || Ok(()))
            .unwrap_or_else(|e| panic!("the console is not served: {e:#}\n{}", gateway.log()));
        let board = Phone::login(
            broker.port(),
            &gw,
            &password(&gw),
            &[format!("{}/alerts/#", site.prefix())],
        );
        // Chromium trusts the throwaway certificate only with this flag (a phone would have
        // the site's CA installed, or a certificate from a public CA).
        let flags: &[&str] = if pki.is_some() {
            &["--ignore-certificate-errors"]
        } else {
            &[]
        };
        Console {
            browser: Browser::start_with(flags),
            gateway,
            board,
            _feed: holder,
            site,
            broker,
            web_port,
            scheme: if pki.is_some() { "https" } else { "http" },
            seq: 100,
        }
    }

    /// The sign-in link `bandgate console-link` prints for `user` (the installer's command).
    fn link(&self, user: &str) -> String {
        let out = bandgate(&[
            "console-link",
            user,
            "--config",
            self.site.config.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--password",
            &password(user),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains('█'), "a QR code: {stdout}");
        let link = stdout
            .lines()
            .find(|l| l.starts_with("http"))
            .unwrap_or_else(|| panic!("no link in: {stdout}"))
            .to_owned();
        assert_eq!(
            link,
            format!(
                "{}://127.0.0.1:{}/#u={user}&p={user}-pw",
                self.scheme, self.web_port
            )
        );
        link
    }

    /// Band 17 (王秀英) presses SOS; returns the alert id.
    fn sos(&mut self) -> String {
        self.seq += 1;
        write_capture(
            &self.site.path().join("capture.jsonl"),
            &[sent(0, 17, self.seq, BandEvent::Sos)],
        );
        format!("17-{}", self.seq)
    }

    /// Band 17 presses cancel for its frame `of_seq`.
    fn cancel(&mut self, of_seq: u32) {
        self.seq += 1;
        write_capture(
            &self.site.path().join("capture.jsonl"),
            &[sent(0, 17, self.seq, BandEvent::Cancel { of_seq })],
        );
    }

    /// The gateway's alert document once `pick` holds for it.
    fn doc(&self, alert_id: &str, pick: impl Fn(&Value) -> bool) -> Value {
        self.board
            .wait_doc(&format!("{}/alerts/{alert_id}", self.site.prefix()), pick)
    }

    /// The newest alert document the gateway has published so far.
    fn latest(&self, alert_id: &str) -> Value {
        let topic = format!("{}/alerts/{alert_id}", self.site.prefix());
        let msgs = self.board.messages();
        let last = msgs
            .iter()
            .rev()
            .find(|m| m.topic == topic)
            .expect("a document");
        serde_json::from_slice(&last.payload).unwrap()
    }

    fn signed_in_armed(&mut self, phone: &str) {
        let link = self.link(phone);
        self.browser.open(phone, &link);
        self.browser.wait_status(phone, &["未开启提示音"], &[]);
        self.browser.tap(phone, None, "开始值班");
        self.browser.wait_status(phone, &["值班中"], &[]);
    }
}

#[test]
fn two_phones_one_sos_from_ringing_to_resolved() {
    let mut c = Console::start(&["zhang", "li"]);
    c.signed_in_armed("zhang");
    c.signed_in_armed("li");
    let t0 = Instant::now();
    let id = c.sos();
    // Both consoles show it, ringing, within 2 s of the press reaching the gateway.
    let buttons = c
        .browser
        .wait_region("zhang", "王秀英", &["无人接单", "呼叫我"], &[]);
    assert_eq!(buttons, ["我去", "我去不了"]);
    c.browser.wait_region("li", "王秀英", &["无人接单"], &[]);
    let shown = t0.elapsed();
    assert!(shown < Duration::from_secs(2) + WAIT / 10, "{shown:?}");
    c.browser.wait_status("zhang", &["值班中", "响铃中"], &[]);
    c.browser.wait_status("li", &["响铃中"], &[]);
    c.browser.screenshot("zhang", "1-open-ringing");
    let doc = c.doc(&id, |d| d["delivered_to"].as_array().unwrap().len() == 2);
    assert_eq!(doc["state"], "open", "both consoles said delivered: {doc}");

    c.browser.tap("zhang", Some("王秀英"), "我去");
    let doc = c.doc(&id, |d| d["state"] == "acknowledged");
    assert_eq!(doc["acked_by"], "zhang");
    let buttons = c
        .browser
        .wait_region("li", "王秀英", &["已有人前往（张伟）"], &[]);
    assert!(buttons.is_empty(), "li is not the claimer: {buttons:?}");
    c.browser.wait_status("li", &["值班中"], &["响铃中"]);
    c.browser.wait_status("zhang", &["值班中"], &["响铃中"]);
    let buttons = c.browser.wait_region(
        "zhang",
        "王秀英",
        &["已有人前往（张伟）", "已发送：我去"],
        &[],
    );
    assert_eq!(buttons, ["已到场", "处理完毕", "误报"]);
    c.browser.screenshot("zhang", "2-acknowledged");

    c.browser.tap("zhang", Some("王秀英"), "已到场");
    c.doc(&id, |d| d["state"] == "on_scene");
    let buttons = c
        .browser
        .wait_region("zhang", "王秀英", &["已到场"], &["已有人前往"]);
    assert_eq!(buttons, ["处理完毕", "误报"]);
    c.browser.tap("zhang", Some("王秀英"), "处理完毕");
    // A second tap confirms; until then nothing is sent.
    c.browser
        .wait_region("zhang", "王秀英", &["确定“处理完毕”吗？"], &[]);
    assert_eq!(c.latest(&id)["state"], "on_scene");
    c.browser.tap("zhang", Some("王秀英"), "确认");
    let doc = c.doc(&id, |d| d["state"] == "resolved");
    assert_eq!(doc["resolution"], "real_emergency");
    assert_eq!(doc["resolved_by"], "zhang");
    for phone in ["zhang", "li"] {
        let buttons = c.browser.wait_region(phone, "王秀英", &["已处理"], &[]);
        assert!(buttons.is_empty(), "{phone}: {buttons:?}");
    }
    c.browser.screenshot("zhang", "3-resolved");
    let logs = c.browser.logs("zhang");
    assert!(logs.iter().any(|l| l.contains("ringing on")), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("ringing off")), "{logs:?}");
}

#[test]
fn an_unarmed_console_says_so_and_never_rings() {
    let mut c = Console::start(&["zhang"]);
    // Signed in by link, never tapped: the page has had no user activation.
    let link = c.link("zhang");
    c.browser.open("zhang", &link);
    c.browser.wait_status("zhang", &["未开启提示音"], &[]);
    let id = c.sos();
    let buttons = c
        .browser
        .wait_region("zhang", "王秀英", &["无人接单", "呼叫我"], &[]);
    assert_eq!(buttons, ["我去", "我去不了"]);
    c.doc(&id, |d| d["state"] == "open");
    // Reminders come every minute; two seconds of an open alert paged to this person is long
    // enough for a console that would ring to have started.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let s = c.browser.status("zhang");
        assert_eq!(s, "未开启提示音", "an unarmed console must not ring");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = c.browser.logs("zhang");
    assert!(
        logs.iter().any(|l| l.contains(&format!("page new {id}"))),
        "{logs:?}"
    );
    assert!(!logs.iter().any(|l| l.contains("ringing on")), "{logs:?}");
    // The fragment (credentials) is gone from the address bar.
    let html = c
        .browser
        .cmd(serde_json::json!({"cmd": "html", "phone": "zhang"}));
    assert!(!html["html"].as_str().unwrap().contains("zhang-pw"));
}

#[test]
fn a_refused_action_is_shown_and_changes_nothing() {
    // A broker whose ACL does not let phones write their ack topic (an installer's mistake):
    // the broker refuses the publish (v5 reason code) and the page must say so, not "sent".
    let mut c = Console::start_with(&["zhang"], |acl| {
        acl.replace("pattern write bandgate/+/ack/%u", "")
    });
    c.signed_in_armed("zhang");
    let id = c.sos();
    c.browser.wait_region("zhang", "王秀英", &["无人接单"], &[]);
    c.browser.tap("zhang", Some("王秀英"), "我去");
    c.browser.wait_region(
        "zhang",
        "王秀英",
        &["未能发送：无权限 (0x87)", "无人接单"],
        &["已发送"],
    );
    // Still ringing: nothing was claimed.
    c.browser.wait_status("zhang", &["响铃中"], &[]);
    assert_eq!(c.latest(&id)["state"], "open");
    assert!(c.latest(&id)["acked_by"].is_null());
}

#[test]
fn the_console_comes_back_after_a_broker_restart() {
    let mut c = Console::start(&["zhang"]);
    c.signed_in_armed("zhang");
    let id = c.sos();
    c.browser.wait_region("zhang", "王秀英", &["无人接单"], &[]);
    c.broker.stop();
    c.browser.wait_status("zhang", &["未连接"], &[]);
    c.broker.restart();
    // Reconnects by itself (back-off at most 15 s) and its actions work again.
    c.browser.wait_status("zhang", &["值班中"], &["未连接"]);
    c.gateway.wait_ready(&c.site);
    c.browser.tap("zhang", Some("王秀英"), "我去");
    let doc = c.doc(&id, |d| d["state"] == "acknowledged");
    assert_eq!(doc["acked_by"], "zhang");
    c.browser
        .wait_region("zhang", "王秀英", &["已有人前往（张伟）"], &[]);
}

#[test]
fn a_console_closed_during_an_sos_shows_it_on_reopening() {
    let mut c = Console::start(&["zhang"]);
    // As the gateway's user (the ACL lets it read every presence), beside the board's client.
    let gw = acl_gateway_user();
    let watcher = Phone::connect_with(
        Phone::options_as(c.broker.port(), "presence-watcher", &gw, &password(&gw)),
        &[format!("{}/phones/#", c.site.prefix())],
    );
    c.signed_in_armed("zhang");
    let topic_prefix = format!("{}/phones/zhang/", c.site.prefix());
    watcher.wait_until("the console's presence: online and armed", |msgs| {
        msgs.iter().any(|m| {
            m.topic.starts_with(&topic_prefix)
                && serde_json::from_slice::<Value>(&m.payload)
                    .is_ok_and(|v| v["online"] == true && v["armed"] == true)
        })
    });
    c.browser.close("zhang");
    watcher.wait_until("the console's presence: gone", |msgs| {
        msgs.iter()
            .rev()
            .find(|m| m.topic.starts_with(&topic_prefix))
            .is_some_and(|m| {
                serde_json::from_slice::<Value>(&m.payload)
                    .is_ok_and(|v| v["online"] == false && v["armed"] == false)
            })
    });
    let id = c.sos();
    c.doc(&id, |d| d["state"] == "open");
    // The same phone (its storage remembers the sign-in and its client id) opens the page again.
    let url = format!("http://127.0.0.1:{}/", c.web_port);
    c.browser.open("zhang", &url);
    c.browser
        .wait_region("zhang", "王秀英", &["无人接单", "呼叫我"], &[]);
    c.browser.wait_status("zhang", &["未开启提示音"], &[]);
    // Not only the retained document: the page itself, queued in the phone's session while it
    // was closed, arrives.
    c.browser
        .cmd(serde_json::json!({"cmd": "wait_log", "phone": "zhang",
        "contains": format!("page new {id}"), "timeout_ms": 15000}));
}

#[test]
fn the_board_shows_every_open_alert_to_a_supervisor() {
    let mut c = Console::start(&["zhang"]);
    c.signed_in_armed("chen");
    let id = c.sos();
    // chen is not paged yet (tier 3) but sees the alert on the board, and as a supervisor may
    // claim it.
    let buttons = c
        .browser
        .wait_region("chen", "王秀英", &["无人接单", "第 1 级"], &["呼叫我"]);
    assert_eq!(buttons, ["我去", "我去不了"]);
    c.browser.wait_status("chen", &["值班中"], &["响铃中"]);
    c.browser.screenshot("chen", "4-board");
    // Elder-friendly (MIIT 适老化): body text >= 18 px, the alert's tap targets >= 60 x 60 px.
    let sizes = c
        .browser
        .cmd(serde_json::json!({"cmd": "sizes", "phone": "chen"}));
    assert!(sizes["body_font_px"].as_f64().unwrap() >= 18.0, "{sizes}");
    let boxes = sizes["boxes"].as_array().unwrap();
    for name in ["我去", "我去不了", "打电话"] {
        let b = boxes
            .iter()
            .find(|b| b["text"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("no {name} in {sizes}"));
        assert!(
            b["width"].as_f64().unwrap() >= 60.0 && b["height"].as_f64().unwrap() >= 60.0,
            "{name}: {b}"
        );
    }
    c.doc(&id, |d| d["state"] == "open");
}

#[test]
fn console_link_makes_a_password_and_names_mistakes() {
    let site = Site::new("linkcheck", 1883, &SiteConfig::default(), &[]);
    let config = site.config.to_str().unwrap().to_owned();
    let out = bandgate(&["console-link", "zhang", "--config", &config]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no [web] section"),
        "{}",
        text(&out.stderr)
    );
    let with_web = std::fs::read_to_string(&site.config).unwrap().replacen(
        "[[staff]]",
        "[web]\nlisten = \"192.168.7.2:8080\"\n\n[[staff]]",
        1,
    );
    std::fs::write(&site.config, with_web).unwrap();
    let out = bandgate(&["console-link", "zhnag", "--config", &config]);
    assert!(
        text(&out.stderr).contains("no [[staff]] with id \"zhnag\""),
        "{}",
        text(&out.stderr)
    );
    // No --host: the listen address; no --password: a new one, and how to give it to Mosquitto.
    let out = bandgate(&["console-link", "zhang", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let link = stdout
        .lines()
        .find(|l| l.starts_with("http://192.168.7.2:8080/#u=zhang&p="))
        .unwrap_or_else(|| panic!("{stdout}"));
    let pw = link.rsplit("p=").next().unwrap();
    assert_eq!(pw.len(), 16, "{link}");
    assert!(
        stdout.contains(&format!(
            "mosquitto_passwd -b /etc/mosquitto/bandgate.passwd zhang '{pw}'"
        )),
        "{stdout}"
    );
}

/// `bandgate demo` serves the console too (its embedded broker speaks MQTT 3.1.1 on
/// WebSockets): a person signs in with a printed link and takes the scripted alert over; the
/// scripted phones step back and the demo ends when the person resolved it.
#[test]
fn the_demo_serves_the_console_and_a_person_can_answer() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(crate::harness::bin())
        .args(["demo", "--sos-after", "8"])
        .env("TMPDIR", tmp.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |pred: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + WAIT * 2;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => {
                    seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "the demo did not print the line awaited:\n{}",
                    seen.join("\n")
                ),
            }
        }
    };
    let line = wait_line(&|l| l.contains("sign in as 陈静 (chen):"));
    let link = line.split_whitespace().last().unwrap().to_owned();
    assert!(
        link.starts_with("http://127.0.0.1:") && link.contains("#u=chen&p="),
        "{link}"
    );
    let mut browser = Browser::start();
    browser.open("chen", &link);
    browser.wait_status("chen", &["未开启提示音"], &[]);
    browser.tap("chen", None, "开始值班");
    browser.wait_status("chen", &["值班中"], &[]);
    // The supervisor claims it from the board before the scripted tier-2 phone would.
    let buttons = browser.wait_region("chen", "王秀英", &["无人接单"], &[]);
    assert_eq!(buttons, ["我去", "我去不了"]);
    browser.tap("chen", Some("王秀英"), "我去");
    browser.wait_region("chen", "王秀英", &["已有人前往（陈静）"], &[]);
    wait_line(&|l| l.contains("the scripted phones step back"));
    browser.tap("chen", Some("王秀英"), "已到场");
    browser.wait_region("chen", "王秀英", &["已到场"], &["已有人前往"]);
    browser.tap("chen", Some("王秀英"), "处理完毕");
    browser.tap("chen", Some("王秀英"), "确认");
    browser.wait_region("chen", "王秀英", &["已处理"], &[]);
    wait_line(&|l| l.contains("acked by:    陈静 (chen)"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}\n{}", seen.join("\n"));
}

/// Over HTTPS (and wss:// to the broker) the page is a secure context: its offline cache
/// registers, and when the gateway is gone (kill -9) a reload still opens the console from the
/// cache and shows the broker's retained alert.
#[test]
fn over_https_the_console_reloads_from_its_cache() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path());
    let mut c = Console::start_opts(&["zhang"], |acl| acl, Some(pki.path()));
    c.signed_in_armed("zhang");
    let id = c.sos();
    c.browser
        .wait_region("zhang", "王秀英", &["无人接单", "呼叫我"], &[]);
    let deadline = Instant::now() + WAIT;
    while !c
        .browser
        .logs("zhang")
        .iter()
        .any(|l| l.contains("offline cache registered"))
    {
        assert!(
            Instant::now() < deadline,
            "the service worker did not register"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.doc(&id, |d| d["state"] == "open");
    c.gateway.kill9();
    let url = format!("https://127.0.0.1:{}/", c.web_port);
    c.browser.open("zhang", &url);
    c.browser
        .wait_region("zhang", "王秀英", &["无人接单", "呼叫我"], &[]);
    c.browser.wait_status("zhang", &["未开启提示音"], &[]);
}

#[test]
fn english_by_the_locale() {
    let mut c = Console::start(&["zhang"]);
    let url = format!(
        "http://127.0.0.1:{}/?lang=en#u=zhang&p={}",
        c.web_port,
        password("zhang")
    );
    c.browser.open("zhang", &url);
    c.browser.wait_status("zhang", &["Sound off"], &[]);
    c.sos();
    let buttons = c
        .browser
        .wait_region("zhang", "王秀英", &["Nobody going yet", "Paged me"], &[]);
    assert_eq!(buttons, ["I'm going", "I can't go"]);
}

#[test]
fn declining_stops_my_ringing_only() {
    let mut c = Console::start(&["zhang", "li"]);
    c.signed_in_armed("zhang");
    c.signed_in_armed("li");
    let id = c.sos();
    c.browser.wait_status("li", &["响铃中"], &[]);
    c.browser.wait_status("zhang", &["响铃中"], &[]);
    c.browser.tap("li", Some("王秀英"), "我去不了");
    let doc = c.doc(&id, |d| d["declined"] == serde_json::json!(["li"]));
    assert_eq!(doc["state"], "open");
    c.browser.wait_status("li", &["值班中"], &["响铃中"]);
    // Still unclaimed: zhang's phone goes on ringing.
    c.browser.wait_region("zhang", "王秀英", &["无人接单"], &[]);
    assert!(c.browser.status("zhang").contains("响铃中"));
}

#[test]
fn after_a_wearer_cancel_the_page_asks_for_a_phone_call() {
    let mut c = Console::start(&["zhang"]);
    c.signed_in_armed("zhang");
    let id = c.sos();
    c.browser.wait_region("zhang", "王秀英", &["无人接单"], &[]);
    c.cancel(c.seq);
    c.doc(&id, |d| d["cancel_requested"] == true);
    let buttons = c
        .browser
        .wait_region("zhang", "王秀英", &["老人已取消，请先打电话确认"], &[]);
    assert_eq!(buttons, ["我去", "我去不了", "已电话确认"]);
    c.browser.tap("zhang", Some("王秀英"), "已电话确认");
    c.browser.tap("zhang", Some("王秀英"), "确认");
    let doc = c.doc(&id, |d| d["state"] == "resolved");
    assert_eq!(doc["resolution"], "wearer_cancel_verified");
    c.browser
        .wait_region("zhang", "王秀英", &["已处理"], &["老人已取消"]);
}

/// The gateway tells, per person on duty now, whether a live armed console is there: from the
/// real page's presence (`bandgate status --json`, `on_duty`).
#[test]
fn bandgate_status_shows_whether_the_person_on_duty_has_an_armed_console() {
    let mut c = Console::start(&["zhang"]);
    let zhang_console = |want: Value| {
        move |s: &Value| {
            s["on_duty"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|p| p["staff_id"] == "zhang" && p["console"] == want)
            })
        }
    };
    let wait_for = |c: &Console, want: Value| {
        c.site.wait_status(&c.gateway, zhang_console(want));
    };
    // Never seen: unknown.
    wait_for(&c, Value::Null);
    let link = c.link("zhang");
    c.browser.open("zhang", &link);
    c.browser.wait_status("zhang", &["未开启提示音"], &[]);
    // Connected but not armed: it cannot ring, so it does not count.
    wait_for(&c, Value::Bool(false));
    c.browser.tap("zhang", None, "开始值班");
    wait_for(&c, Value::Bool(true));
    c.browser.close("zhang");
    wait_for(&c, Value::Bool(false));
}
