//! The fallback ladder's webhook channel end to end: the built daemon posts a ladder step to a
//! district platform (here a small HTTP server in the test), signed with HMAC-SHA256, retried
//! with back-off, and records the outcome in the alert document's `contacts`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bandgate::engine::frame::BandEvent;
use serde_json::Value;

use crate::harness::vectors::write_private;
use crate::harness::*;

/// One request the platform received: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A platform that answers each request with the next status of `script` (then 200).
struct Platform {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Platform {
    fn start(script: Vec<u16>) -> Platform {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert!(line.starts_with("POST "), "{line}");
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    let (k, v) = l.split_once(':').unwrap();
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                log.lock().unwrap().push(Received { headers, body });
                let status = script.next().unwrap_or(200);
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Platform { port, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

const SECRET: &str = "a shared key, not for production";

fn webhook_site(broker: &Broker, site_id: &str, platform: &Platform) -> Site {
    let site = Site::new(
        site_id,
        broker.port(),
        &SiteConfig {
            ack_timeouts: vec!["60s", "60s"],
            renotify_every: "5s",
            repeat_every: "5s",
            ..SiteConfig::default()
        },
        &[sent(500, 17, 42, BandEvent::Sos)],
    );
    let secret = write_private(site.path(), "webhook-secret", &format!("{SECRET}\n"));
    let fallback = format!(
        "after = \"2s\"\nsteps = [\"webhook\"]\nstep_every = []\nmodem = \"none\"\nwebhook_url = \"http://127.0.0.1:{}/bandgate/fallback\"\nwebhook_secret_file = {}",
        platform.port,
        toml_path(&secret)
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
    site
}

fn wait_webhook_outcome(phone: &Phone, site: &Site, gw: &Gateway, outcome: &str) -> Value {
    let topic = format!("{}/alerts/17-42", site.prefix());
    let end = Instant::now() + WAIT;
    loop {
        let found = phone
            .messages()
            .iter()
            .rev()
            .filter(|m| m.topic == topic && !m.payload.is_empty())
            .map(|m| m.json())
            .find(|d| d["contacts"][0]["outcome"] == outcome);
        if let Some(d) = found {
            return d;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for the webhook step to be {outcome}; the gateway's log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unconfirmed_sos_is_posted_signed_and_retried_to_the_platform() {
    let broker = Broker::start();
    let platform = Platform::start(vec![500]);
    let site = webhook_site(&broker, "wh-post", &platform);
    let phone = Phone::connect(broker.port(), "wh-post-board", &site.prefix());
    let mut gw = Gateway::start(&site, "gw.log", &[]);
    gw.wait_ready(&site);
    let doc = wait_webhook_outcome(&phone, &site, &gw, "sent");
    let c = &doc["contacts"][0];
    assert_eq!(
        (
            c["staff_id"].as_str(),
            c["channel"].as_str(),
            c["step"].as_u64()
        ),
        (Some("zhang"), Some("webhook"), Some(1)),
        "{doc}"
    );
    assert_eq!(c["detail"], "the platform answered 200", "{doc}");
    // The first attempt got a 500 and was retried.
    let got = platform.received();
    assert_eq!(got.len(), 2, "{got:?}");
    for r in &got {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let want = format!("sha256={}", hex::encode(ring::hmac::sign(&key, &r.body)));
        assert_eq!(r.header("x-bandgate-signature"), Some(want.as_str()));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["gateway_id"], "gw-wh-post");
        assert_eq!(body["alert_id"], "17-42");
        assert_eq!(body["kind"], "sos");
        assert_eq!(body["staff_id"], "zhang");
        assert_eq!(body["name"], "张伟");
        assert_eq!(body["phone"], "13800000001");
        assert_eq!(body["step"], 1);
        assert_eq!(body["resume"], false);
        assert_eq!(
            body["text"],
            "【社区呼叫】王秀英 广惠园社区3号楼2单元401 紧急求救，请打开值班页"
        );
        assert!(body["sent_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}

#[test]
fn a_platform_that_keeps_failing_is_recorded_failed_after_the_retries() {
    let broker = Broker::start();
    let platform = Platform::start(vec![503, 503, 503]);
    let site = webhook_site(&broker, "wh-fail", &platform);
    let phone = Phone::connect(broker.port(), "wh-fail-board", &site.prefix());
    let mut gw = Gateway::start(&site, "gw.log", &[]);
    gw.wait_ready(&site);
    let doc = wait_webhook_outcome(&phone, &site, &gw, "failed");
    assert_eq!(
        doc["contacts"][0]["detail"], "webhook: the platform answered 503 (after 3 attempts)",
        "{doc}"
    );
    assert_eq!(platform.received().len(), 3);
    gw.wait_log("fallback step failed");
}
