//! Black-box: the built daemon restarted with its wall clock an hour behind (libfaketime, as
//! after a power cut on a Raspberry Pi without RTC whose fake-hwclock is an hour old) still
//! pages the open emergency within its renotify interval, with a newer `updated_at`.
//!
//! Needs Debian's `faketime` package (`.ci/run` installs it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bandgate::engine::frame::BandEvent;

use crate::harness::*;

/// libfaketime's preload library, wherever the architecture puts it.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("libfaketime is not installed: sudo apt-get install faketime (.ci/run does this)")
    })
}

#[test]
fn a_restart_with_the_clock_an_hour_behind_pages_the_open_emergency_within_its_renotify_interval() {
    let preload = libfaketime();
    let broker = Broker::start();
    let renotify = Duration::from_secs(4);
    let cfg = SiteConfig {
        ack_timeouts: vec!["60s", "60s"],
        renotify_every: "4s",
        repeat_every: "4s",
        ..SiteConfig::default()
    };
    let site = Site::new(
        "clk1",
        broker.port(),
        &cfg,
        &[sent(300, 17, 101, BandEvent::Sos)],
    );
    let p = site.prefix();
    let phone = Phone::connect(broker.port(), "phones-clk1", &p);
    let mut gw = Gateway::start(&site, "gateway-1.log", &[]);
    let new = phone.wait_page(&p, "zhang", "new", "17-101");
    // The test timers are second-scale: allowed, and the daemon says so at start.
    gw.wait_log("escalation.renotify_every: 4s is below the recommended 10s to 5m");
    gw.kill9();
    let before = phone.messages().len();
    let newest_before = docs(&phone.messages(), &p, "17-101")
        .iter()
        .map(|d| ms(&d["updated_at"]))
        .max()
        .unwrap()
        .max(ms(&new["updated_at"]));

    // The same state, the wall clock an hour behind (the monotonic clock is left alone).
    let preload = preload.display().to_string();
    let gw = Gateway::start(
        &site,
        "gateway-2.log",
        &[
            ("LD_PRELOAD", preload.as_str()),
            ("FAKETIME", "-1h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    gw.wait_log("state restored");
    let restored = Instant::now();
    let msgs = phone.wait_until("a page about 17-101 after the restart", |m| {
        m.len() > before && !pages(&m[before..], &p, "17-101").is_empty()
    });
    let waited = restored.elapsed();
    assert!(
        waited < renotify,
        "the open emergency was paged {waited:?} after the restart, not within renotify_every ({renotify:?}); log:\n{}",
        gw.log()
    );
    let after = pages(&msgs[before..], &p, "17-101");
    assert!(
        after.iter().any(|(staff, _, _)| staff == "zhang"),
        "{after:?}"
    );
    // The wall clock really is an hour behind in the daemon (its log lines start with it)...
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("state restored")).unwrap();
    let logged: jiff::Timestamp = line.split_whitespace().next().unwrap().parse().unwrap();
    let behind = jiff::Timestamp::now().duration_since(logged);
    assert!(
        behind > jiff::SignedDuration::from_mins(59),
        "the daemon's clock is not behind: {line}"
    );
    // ...yet every document after the restart is newer than every one before it, so phones
    // keep it.
    for (_, _, d) in &after {
        assert!(
            ms(&d["updated_at"]) > newest_before,
            "updated_at {} after the restart is not newer than {newest_before}: {d}",
            d["updated_at"]
        );
    }
    for d in docs(&msgs[before..], &p, "17-101") {
        assert!(ms(&d["updated_at"]) > newest_before, "{d}");
    }
    assert!(
        gw.log()
            .contains("stored deadline is further ahead than its state allows"),
        "no warning about the clock; log:\n{}",
        gw.log()
    );
    // And it keeps paging on the renotify interval, not an hour later.
    let n = phone.messages().len();
    phone.wait_until("the next reminder", |m| {
        m.len() > n && !pages(&m[n..], &p, "17-101").is_empty()
    });
}
