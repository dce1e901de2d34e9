//! `bandgate demo`, the built binary run to its end: the alert it follows goes through every
//! state, the phones' view shows each step, and it exits 0 by itself.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo takes about 25 s; this leaves room for a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(120);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// TMPDIR of the run: the demo's directory is under it.
    tmp: tempfile::TempDir,
}

fn demo(args: &[&str]) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stdout");
    let err = tmp.path().join("stderr");
    let mut child = Command::new(crate::harness::bin())
        .arg("demo")
        .args(args)
        .env("TMPDIR", tmp.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
        tmp,
    };
    assert!(
        status.is_some(),
        "bandgate demo {args:?} did not end within {TIMEOUT:?}; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run
}

fn assert_whole_life(run: &Run) {
    let ctx = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(0), "exit status; {ctx}");
    let out = &run.stdout;
    assert!(
        out.contains("mosquitto_sub -h 127.0.0.1 -p ") && out.contains(" -t 'bandgate/#' -v"),
        "the line to watch the traffic; {ctx}"
    );
    // The alert topic's states, in order, as the phones saw them.
    let mut at = 0;
    for state in [
        " open: ",
        " acknowledged: ",
        " on_scene: ",
        " resolved: ",
        " cleared: ",
    ] {
        let found = out[at..]
            .find(state)
            .unwrap_or_else(|| panic!("state {state:?} after byte {at}; {ctx}"));
        at += found;
    }
    assert!(
        out.contains("states seen: open → acknowledged → on_scene → resolved → cleared"),
        "{ctx}"
    );
    assert!(out.contains("tiers paged: 1, 2"), "{ctx}");
    // Pages for each reason the escalation went through reached a phone.
    for reason in [
        "[new, tier 1]",
        "[escalated, tier 2]",
        "[acknowledged, tier 2",
        "[resolved, tier 2",
    ] {
        assert!(out.contains(reason), "a page {reason}; {ctx}");
    }
    assert!(out.contains("resolution: real_emergency"), "{ctx}");
    assert!(out.contains(" band "), "heartbeats heard; {ctx}");

    // The daemon's log went to the file the demo named, not to the terminal.
    let log = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("logs"))
        .map(|p| std::path::PathBuf::from(p.trim()))
        .unwrap_or_else(|| panic!("the log path; {ctx}"));
    assert!(log.starts_with(run.tmp.path()), "{log:?} under TMPDIR");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("alert resolved"), "log {log:?}:\n{text}");
    assert!(!run.stderr.contains("alert resolved"), "{ctx}");
}

/// The README's demo: the embedded broker with `--features demo`, else mosquitto.
#[test]
fn demo_takes_one_sos_from_press_to_cleared() {
    assert_whole_life(&demo(&[]));
}

/// Without the feature the demo runs on mosquitto; with it, mosquitto still works.
#[test]
fn demo_runs_on_mosquitto() {
    assert_whole_life(&demo(&["--broker", "mosquitto", "--locale", "en"]));
}

/// A build without the embedded broker says how to get one.
#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_feature_names_the_fix() {
    let run = demo(&["--broker", "embedded"]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cargo run --release --features demo -- demo"),
        "{}",
        run.stderr
    );
}
