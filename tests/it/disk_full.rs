//! Black-box: the built binary, a real Mosquitto, and `state_dir` on a small tmpfs (mounted by
//! the test, as root) that the test fills. With the disk full and the broker down, SOS pages
//! wait in memory and all arrive when the broker returns; when space is freed the store is ok
//! again without a restart and holds what was kept (proved by kill -9 and a restart).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bandgate::engine::frame::BandEvent;

use crate::harness::*;

/// A tmpfs of `size` mounted at `path` for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        mount_tmpfs(path, size).then(|| Tmpfs(path.to_path_buf()))
    }

    /// Fills what is left with one file; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < until, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn disk_full_with_the_broker_down_every_new_page_arrives_and_the_store_recovers_by_itself() {
    let mut broker = Broker::start_with(true);
    let cfg = SiteConfig {
        ack_timeouts: vec!["60s", "60s"],
        renotify_every: "60s",
        repeat_every: "60s",
        residents: vec![17, 18],
        ..SiteConfig::default()
    };
    // The SOS come 12 s in: the disk is full and the broker down by then.
    let site = Site::new(
        "df1",
        broker.port(),
        &cfg,
        &[
            sent(12_000, 17, 101, BandEvent::Sos),
            sent(12_500, 18, 102, BandEvent::Sos),
        ],
    );
    let Some(disk) = Tmpfs::mount(&site.state_dir(), "2m") else {
        return;
    };
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-df1", &p);
    let mut gw = Gateway::start(&site, "gateway.log", &[]);
    gw.wait_ready(&site);
    let filler = disk.fill();
    broker.stop_gracefully();
    gw.wait_log("broker connection lost");
    // Both SOS are raised while the disk is full and the broker away.
    wait("the SOS with a full disk", Duration::from_secs(30), || {
        gw.log().contains("17-101") && gw.log().contains("18-102")
    });
    assert!(
        gw.log().contains("state store failed"),
        "the failing store is logged: {}",
        gw.log()
    );
    broker.restart();
    // Every first page arrives from memory, with the disk still full.
    phone.wait_page(&p, "zhang", "new", "17-101");
    phone.wait_page(&p, "zhang", "new", "18-102");
    let s = site.status();
    assert_eq!(s["state"], "degraded", "{s}");
    // A store failing for a minute pages the supervisor (chen) with a gateway_fault.
    let chen = format!("{p}/notify/chen");
    wait("the gateway_fault page", Duration::from_secs(90), || {
        phone
            .messages()
            .iter()
            .any(|m| m.topic == chen && m.json()["alert"]["kind"] == "gateway_fault")
    });
    // Space freed: the store is ok again without a restart (the retry backs off up to 30 s).
    std::fs::remove_file(&filler).unwrap();
    wait("the store ok again", Duration::from_secs(45), || {
        site.status()["state"] == "ok"
    });
    assert!(gw.log().contains("state store works again"), "{}", gw.log());
    // What was held is on disk: after kill -9 both alerts come back (and page again).
    gw.kill9();
    let mut gw = Gateway::start(&site, "gateway-2.log", &[]);
    gw.wait_ready(&site);
    // Both SOS and the gateway_fault nobody has resolved yet.
    let s = site.status();
    assert_eq!(s["open_alerts"], 3, "{s}");
}
