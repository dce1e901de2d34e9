//! The one harness of the integration tests: a real Mosquitto (`broker`), a gateway's site on
//! disk (`site`), the built daemon (`gateway`), duty phones (`phone`), real Chromium on the duty console (`browser`), the engine in simulated
//! time (`sim`) and the spec's test vectors (`vectors`).

pub mod broker;
pub mod browser;
pub mod gateway;
pub mod phone;
pub mod pki;
pub mod sim;
pub mod site;
pub mod vectors;

use std::time::Duration;

use serde_json::Value;

pub use broker::{acl_gateway_user, Broker};
pub use gateway::{bandgate, bin, text, Gateway};
pub use phone::*;
pub use pki::{make_ca, make_pki};
pub use site::*;

/// How long anything a black-box test waits for may take: long enough for a debug build on a
/// busy 2-core machine; conditions are polled.
pub const WAIT: Duration = Duration::from_secs(30);

/// A time in a document (RFC 3339 UTC with milliseconds) as milliseconds since the epoch.
#[track_caller]
pub fn ms(t: &Value) -> i64 {
    let s = t.as_str().unwrap_or_else(|| panic!("not a time: {t}"));
    assert!(
        s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.',
        "not RFC 3339 UTC with milliseconds: {s}"
    );
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// Mounts a tmpfs of `size` at `path` (created if needed), for the tests whose disk must be
/// full or read-only. Without root this is impossible: the test is skipped (`false`, said on
/// stderr). As root (CI) a failed mount fails the test, so that it cannot pass unseen.
pub fn mount_tmpfs(path: &std::path::Path, size: &str) -> bool {
    std::fs::create_dir_all(path).unwrap();
    let out = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(path)
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        // SAFETY: geteuid reads the process's user id and cannot fail.
        _ if unsafe { libc::geteuid() } != 0 => {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            false
        }
        other => panic!(
            "mounting a tmpfs at {} failed as root: {other:?}",
            path.display()
        ),
    }
}
