//! TLS (`mqtts://` + `mqtt.ca_file`) and the broker config shipped to installers
//! (`config/mosquitto.conf` + `config/mosquitto.acl`: passwords, one user per phone, the ACL
//! that ties `ack/{staff}` to the phone's user name), against a real Mosquitto: the MQTT link
//! in-process, and the built binary paging phones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bandgate::adapters::mqtt::{self, connect, LinkEvent, MqttSettings, Publish, Topics};
use bandgate::engine::frame::BandEvent;
use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, TlsConfiguration, Transport};
use serde_json::json;
use tokio::sync::mpsc;

use crate::harness::*;

// ---- certificates ----

/// Mosquitto with only a TLS listener (server certificate, no client certificates).
fn tls_broker() -> Broker {
    Broker::start_config(|dir, port| {
        make_pki(dir);
        let d = dir.display();
        format!(
            "listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\n\
             keyfile {d}/server.key\nrequire_certificate false\nallow_anonymous true\n\
             persistence false\n"
        )
    })
}

fn ca_of(broker: &Broker) -> PathBuf {
    broker.dir().join("ca.pem")
}

fn mqtts_url(broker: &Broker) -> String {
    format!("mqtts://127.0.0.1:{}", broker.port())
}

/// rustls trusting only `ca` (as the gateway's link does), for test phones.
fn phone_tls(ca: &Path) -> Transport {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config)))
}

// ---- the link, in-process ----

const LINK_WAIT: Duration = Duration::from_secs(20);

fn link_settings(url: String, ca_file: PathBuf) -> MqttSettings {
    MqttSettings {
        broker: bandgate::config::parse_broker_url(&url).unwrap(),
        client_id: "gw-tls".into(),
        username: None,
        password: None,
        ca_file: Some(ca_file),
        keep_alive: Duration::from_secs(5),
        last_will: mqtt::last_will(&Topics::for_site("tls"), "gw-tls"),
    }
}

async fn next_event(rx: &mut mpsc::Receiver<LinkEvent>, want: LinkEvent) {
    tokio::time::timeout(LINK_WAIT, async {
        loop {
            let ev = rx.recv().await.expect("link task ended");
            if ev == want {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {want:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_connects_over_tls_and_the_broker_acks_a_publish() {
    let broker = tls_broker();
    let topics = Topics::for_site("tls");
    let (link, mut rx) = connect(
        link_settings(mqtts_url(&broker), ca_of(&broker)),
        vec![topics.ack_filter()],
    )
    .unwrap();
    next_event(&mut rx, LinkEvent::Connected).await;
    let msg = Publish {
        topic: format!("{}/alerts/17-1", topics.prefix()),
        payload: b"{}".to_vec(),
        qos: 1,
        retain: false,
    };
    assert!(link.publish(7, &msg));
    next_event(&mut rx, LinkEvent::PubAcked(7)).await;
    link.disconnect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_refuses_a_broker_its_ca_did_not_sign_and_keeps_trying() {
    let broker = tls_broker();
    let other = tempfile::tempdir().unwrap();
    let foreign_ca = make_ca(other.path(), "other-ca");
    let (_link, mut rx) = connect(
        link_settings(mqtts_url(&broker), foreign_ca),
        vec!["tls/ack/+".into()],
    )
    .unwrap();
    // The link tries again and again (back-off 0.5 s, 1 s, 2 s, ...): the broker refuses each
    // handshake, and no attempt ever connects.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while broker.log().matches("alert unknown ca").count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the link did not retry (or failed otherwise); broker log:\n{}",
            broker.log()
        );
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Err(_) => {}
            Ok(ev) => panic!("expected no event from an untrusted broker, got {ev:?}"),
        }
    }
}

// ---- the built binary ----

/// Waits until the daemon is at `tier` for `alert_id`, asked through the control socket.
fn wait_tier(site: &Site, gw: &Gateway, alert_id: &str, tier: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        if site.socket().exists() {
            let alerts = site.alerts();
            if alerts
                .iter()
                .any(|a| a["alert_id"] == alert_id && a["tier"].as_u64() >= Some(tier))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{alert_id} did not reach tier {tier}; gateway log:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn quiet_site() -> SiteConfig {
    SiteConfig {
        ack_timeouts: vec!["2s", "60s"],
        renotify_every: "60s",
        repeat_every: "60s",
        claim_timeout: "60s",
        ..SiteConfig::default()
    }
}

#[test]
fn the_daemon_pages_a_tls_phone_over_mqtts() {
    let broker = tls_broker();
    let site = Site::new(
        "tls1",
        broker.port(),
        &quiet_site(),
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    site.set_mqtt(
        &mqtts_url(&broker),
        &format!("ca_file = {}\n", toml_path(&ca_of(&broker))),
    );
    let p = site.prefix();
    let mut opts = Phone::options(broker.port(), "phones-tls1");
    opts.set_transport(phone_tls(&ca_of(&broker)));
    let phone = Phone::connect_with(opts, &[format!("{p}/alerts/#"), format!("{p}/notify/#")]);
    let gw = Gateway::start(&site, "gateway.log", &[]);
    let new = phone.wait_page(&p, "zhang", "new", "17-101");
    assert_eq!(new["kind"], "sos");
    assert_eq!(new["state"], "open");
    // And the phone's ack comes back over TLS.
    phone.act(&p, "zhang", json!({"alert_id": "17-101", "action": "ack"}));
    let acked = phone.wait_page(&p, "zhang", "acknowledged", "17-101");
    assert_eq!(acked["acked_by"], "zhang");
    gw.wait_log("broker connected");
}

/// Without `ca_file` the gateway trusts the system's CAs; `SSL_CERT_FILE` (set for the child
/// only) stands in for an installed CA here.
#[test]
fn mqtts_without_ca_file_trusts_the_system_store() {
    let broker = tls_broker();
    let site = Site::new(
        "tls3",
        broker.port(),
        &quiet_site(),
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    site.set_mqtt(&mqtts_url(&broker), "");
    let p = site.prefix();
    let mut opts = Phone::options(broker.port(), "phones-tls3");
    opts.set_transport(phone_tls(&ca_of(&broker)));
    let phone = Phone::connect_with(opts, &[format!("{p}/notify/#")]);
    let ca = ca_of(&broker).display().to_string();
    let _gw = Gateway::start(&site, "gateway.log", &[("SSL_CERT_FILE", &ca)]);
    phone.wait_page(&p, "zhang", "new", "17-101");
}

#[test]
fn an_untrusted_broker_certificate_is_logged_retried_and_escalation_goes_on() {
    let broker = tls_broker();
    let other = tempfile::tempdir().unwrap();
    let foreign_ca = make_ca(other.path(), "other-ca");
    let site = Site::new(
        "tls2",
        broker.port(),
        &quiet_site(),
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    site.set_mqtt(
        &mqtts_url(&broker),
        &format!("ca_file = {}\n", toml_path(&foreign_ca)),
    );
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    gw.wait_log_times("MQTT connection failed", 3);
    let warn = gw.log_line("MQTT connection failed");
    assert!(warn.contains("WARN"), "{warn}");
    assert!(
        warn.contains("invalid peer certificate: UnknownIssuer") && warn.contains("mqtt.ca_file"),
        "the warning does not name the TLS problem: {warn}"
    );
    let log = gw.log();
    assert!(!log.contains("broker connected"), "{log}");
    // No broker, but the alert still climbs the tiers (pages wait in the outbox).
    wait_tier(&site, &gw, "17-101", 2);
    assert!(gw.is_running(), "{}", gw.log());
}

/// Why the broker refused a client with these options (`None`: it accepted it).
fn refusal(opts: MqttOptions) -> Option<ConnectionError> {
    let (_client, mut conn) = rumqttc::Client::new(opts, 4);
    match conn.iter().next().expect("an event") {
        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => None,
        Ok(other) => panic!("unexpected first event {other:?}"),
        Err(e) => Some(e),
    }
}

#[test]
fn the_shipped_broker_config_ties_each_phone_to_its_own_pages_and_acks() {
    let gw_user = acl_gateway_user();
    let broker = Broker::shipped(&[
        (&gw_user, "gw-secret"),
        ("zhang", "zhang-pw"),
        ("li", "li-pw"),
    ]);
    let port = broker.port();

    // Anonymous clients and wrong passwords are refused.
    let refused = |r: &Option<ConnectionError>| {
        matches!(
            r,
            Some(ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
            ))
        )
    };
    let anonymous = refusal(Phone::options(port, "anon"));
    assert!(refused(&anonymous), "anonymous: {anonymous:?}");
    let wrong = refusal(Phone::options_as(port, "zhang-bad", "zhang", "li-pw"));
    assert!(refused(&wrong), "wrong password: {wrong:?}");
    assert!(refusal(Phone::options_as(port, "zhang-ok", "zhang", "zhang-pw")).is_none());

    let site = Site::new(
        "acl1",
        port,
        &quiet_site(),
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    site.login(&gw_user, "gw-secret\n");
    let p = site.prefix();
    // zhang also tries to read li's pages; the ACL must not let them through.
    let zhang = Phone::login(
        port,
        "zhang",
        "zhang-pw",
        &[
            format!("{p}/alerts/#"),
            format!("{p}/notify/zhang"),
            format!("{p}/notify/li"),
        ],
    );
    let li = Phone::login(port, "li", "li-pw", &[format!("{p}/notify/li")]);
    let gw = Gateway::start(&site, "gateway.log", &[]);

    // The gateway's user writes pages and the retained alert document; zhang reads both.
    let new = zhang.wait_page(&p, "zhang", "new", "17-101");
    assert_eq!(new["state"], "open");
    zhang.wait_until("the alert document", |m| !docs(m, &p, "17-101").is_empty());
    // Tier 2 pages li (li's own topic) and zhang again.
    li.wait_page(&p, "li", "escalated", "17-101");
    zhang.wait_page(&p, "zhang", "escalated", "17-101");

    // zhang acks as li (dropped by the ACL), then as zhang (delivered). Both go the same way
    // in order, so had the first got through, li would hold the claim (the first ack wins).
    zhang.act(&p, "li", json!({"alert_id": "17-101", "action": "ack"}));
    zhang.act(&p, "zhang", json!({"alert_id": "17-101", "action": "ack"}));
    let acked = li.wait_page(&p, "li", "acknowledged", "17-101");
    assert_eq!(acked["acked_by"], "zhang", "{acked}");
    let zmsgs = zhang.wait_page(&p, "zhang", "acknowledged", "17-101");
    assert_eq!(zmsgs["acked_by"], "zhang");
    let zmsgs = zhang.messages();
    for d in docs(&zmsgs, &p, "17-101") {
        assert_ne!(d["acked_by"], "li", "a forged ack got through: {d}");
    }
    assert!(
        !zmsgs.iter().any(|m| m.topic == format!("{p}/notify/li")),
        "zhang read li's pages"
    );
    // The gateway's status went out under its user, nothing of the gateway's was denied.
    let log = broker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Denied PUBLISH from phone-zhang")
                && l.contains(&format!("{p}/ack/li"))),
        "the broker did not deny zhang's ack as li; its log:\n{log}"
    );
    assert!(
        !log.contains("Denied PUBLISH from gw-acl1"),
        "the broker denied the gateway; its log:\n{log}"
    );
    assert!(
        log.contains(&format!("{p}/gateways/gw-acl1/status")),
        "no gateway status; broker log:\n{log}"
    );
    assert!(!gw.log().contains("phone message ignored"), "{}", gw.log());
}

#[test]
fn a_wrong_gateway_password_is_logged_plainly_and_retried() {
    let gw_user = acl_gateway_user();
    let broker = Broker::shipped(&[(&gw_user, "gw-secret")]);
    let port = broker.port();
    let site = Site::new(
        "acl2",
        port,
        &quiet_site(),
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    site.login(&gw_user, "not-the-secret\n");
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    gw.wait_log_times("MQTT connection failed", 3);
    let warn = gw.log_line("MQTT connection failed");
    assert!(warn.contains("WARN"), "{warn}");
    assert!(
        warn.contains("user name or password"),
        "the warning does not say the credentials were refused: {warn}"
    );
    wait_tier(&site, &gw, "17-101", 2);
    assert!(gw.is_running(), "{}", gw.log());
}
