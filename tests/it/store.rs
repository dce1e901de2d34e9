//! The SQLite store: round trips, atomicity, outbox order, reopening, `kill -9` mid-commit,
//! schema versions, and a model check of random commit/mark_sent sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bandgate::adapters::store::{OutboxMessage, Store, DB_FILE, SCHEMA_VERSION, WAL_LIMIT};
use bandgate::engine::snapshot::{
    AlertRecord, Changes, DeviceRecord, MetaRecord, SilentBandsRecord, Snapshot,
};
use jiff::Timestamp;
use proptest::prelude::*;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).unwrap()
}

fn alert(id: &str, tier: u8) -> AlertRecord {
    AlertRecord {
        tier,
        notified: vec!["anna".into()],
        paged: vec!["anna".into(), "ben".into()],
        ..AlertRecord::sos(id, 17, 42, at(0))
    }
}

/// Every field set, so a field the store forgets shows up as a difference.
fn full_alert(id: &str) -> AlertRecord {
    AlertRecord {
        state: "resolved".into(),
        verify_until: Some(at(5)),
        cancel_requested: true,
        delivered_to: vec!["anna".into()],
        declined: vec!["ben".into()],
        acked_by: Some("anna".into()),
        acked_at: Some(at(30)),
        on_scene_at: Some(at(300)),
        resolved_by: Some("anna".into()),
        resolved_at: Some(at(600)),
        resolution: Some("fall, no injury".into()),
        seqs: vec![42, 43, u32::MAX],
        presses: 9000,
        last_press_at: Some(at(400)),
        press_due: Some(at(401)),
        device_fault_suspected: true,
        held: true,
        grouped_in: Some("gateway-gw-silent-1".into()),
        silent_bands: Some(SilentBandsRecord {
            count: 2000,
            still_silent: 1990,
            named: vec![1, 2, 3],
        }),
        ..alert(id, 2)
    }
}

fn device(device_id: u32, window_seen: u64) -> DeviceRecord {
    DeviceRecord {
        device_id,
        window_top: Some(1000),
        window_seen,
        last_seen: Some(at(2)),
        battery_pct: Some(55),
        worn: Some(true),
        silent_count: 1,
        battery_count: 2,
        low_battery_day: Some("2024-03-01".into()),
        enrolment: None,
    }
}

fn message(topic: &str, payload: &str) -> OutboxMessage {
    OutboxMessage {
        topic: topic.to_string(),
        payload: payload.as_bytes().to_vec(),
        qos: 1,
        retain: false,
    }
}

fn all_pending(store: &Store) -> Vec<(i64, OutboxMessage)> {
    store.pending(None, usize::MAX).unwrap()
}

#[test]
fn a_full_snapshot_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), Snapshot::default());

    let changes = Changes {
        // Out of order: `load` gives the engine's order (by id).
        alerts: vec![full_alert("b-2"), alert("a-1", 0)],
        removed_alerts: vec![],
        devices: vec![
            device(40_000, u64::MAX),
            DeviceRecord {
                window_top: None,
                last_seen: None,
                battery_pct: None,
                worn: None,
                low_battery_day: None,
                enrolment: None,
                ..device(3, 0)
            },
        ],
        meta: Some(MetaRecord {
            test_count: 7,
            ..MetaRecord::default()
        }),
    };
    store.commit(&changes, &[]).unwrap();

    let snapshot = store.load().unwrap();
    assert_eq!(
        snapshot,
        Snapshot {
            alerts: vec![changes.alerts[1].clone(), changes.alerts[0].clone()],
            devices: vec![changes.devices[1].clone(), changes.devices[0].clone()],
            meta: MetaRecord {
                test_count: 7,
                ..MetaRecord::default()
            },
        }
    );
}

#[test]
fn commits_update_and_delete_alerts_and_keep_meta() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let first = Changes {
        alerts: vec![alert("a", 0), alert("b", 0)],
        meta: Some(MetaRecord {
            test_count: 1,
            ..MetaRecord::default()
        }),
        ..Changes::default()
    };
    store.commit(&first, &[]).unwrap();
    let second = Changes {
        alerts: vec![alert("a", 1)],
        removed_alerts: vec!["b".into(), "never-existed".into()],
        devices: vec![device(5, 1)],
        meta: None,
    };
    store.commit(&second, &[]).unwrap();
    assert_eq!(
        store.load().unwrap(),
        Snapshot {
            alerts: vec![alert("a", 1)],
            devices: vec![device(5, 1)],
            meta: MetaRecord {
                test_count: 1,
                ..MetaRecord::default()
            },
        }
    );
}

#[test]
fn a_commit_that_fails_half_way_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .commit(
            &Changes {
                alerts: vec![alert("old", 0)],
                ..Changes::default()
            },
            &[message("t/old", "x")],
        )
        .unwrap();

    // The alert rows and the first message are written before the bad message is refused.
    let changes = Changes {
        alerts: vec![alert("new", 0), alert("old", 1)],
        removed_alerts: vec![],
        devices: vec![device(1, 1)],
        meta: Some(MetaRecord {
            test_count: 9,
            ..MetaRecord::default()
        }),
    };
    let bad = OutboxMessage {
        qos: 7,
        ..message("t/new", "2")
    };
    let err = store
        .commit(&changes, &[message("t/new", "1"), bad])
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("committing 2 alert(s)"), "{text}");
    assert!(text.contains(DB_FILE), "{text}");

    assert_eq!(
        store.load().unwrap(),
        Snapshot {
            alerts: vec![alert("old", 0)],
            ..Snapshot::default()
        }
    );
    assert_eq!(store.outbox_len().unwrap(), 1);

    // The store is usable after the failure, and a good commit shows all of its parts.
    let ids = store
        .commit(&changes, &[message("t/new", "1"), message("t/new", "2")])
        .unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(snapshot.alerts, vec![alert("new", 0), alert("old", 1)]);
    assert_eq!(snapshot.meta.test_count, 9);
    let pending = all_pending(&store);
    assert_eq!(pending.len(), 3);
    assert_eq!(pending[1..].iter().map(|p| p.0).collect::<Vec<_>>(), ids);
}

#[test]
fn pending_comes_in_commit_order_and_mark_sent_removes() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for batch in 0..3 {
        let msgs: Vec<_> = (0..3)
            .map(|k| OutboxMessage {
                qos: k as u8,
                retain: k == 2,
                ..message(&format!("t/{batch}"), &format!("{batch}.{k}"))
            })
            .collect();
        let new = store.commit(&Changes::default(), &msgs).unwrap();
        assert_eq!(new.len(), 3);
        ids.extend(new);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(store.outbox_len().unwrap(), 9);

    let pending = all_pending(&store);
    assert_eq!(pending.iter().map(|p| p.0).collect::<Vec<_>>(), ids);
    assert_eq!(pending[5].1.payload, b"1.2");
    assert_eq!(pending[5].1.qos, 2);
    assert!(pending[5].1.retain);
    assert_eq!(store.pending(None, 2).unwrap(), pending[..2].to_vec());
    assert_eq!(
        store.pending(Some(ids[1]), 3).unwrap(),
        pending[2..5].to_vec()
    );
    assert_eq!(store.pending(Some(ids[8]), 3).unwrap(), vec![]);

    store.mark_sent(&[ids[0], ids[4], ids[8]]).unwrap();
    // Unknown and repeated ids (a late second PUBACK) are ignored.
    store.mark_sent(&[ids[0], 999_999]).unwrap();
    let left: Vec<i64> = all_pending(&store).iter().map(|p| p.0).collect();
    assert_eq!(left, vec![ids[1], ids[2], ids[3], ids[5], ids[6], ids[7]]);
    assert_eq!(store.outbox_len().unwrap(), 6);

    // The newest row was deleted; its id is never handed out again.
    let next = store
        .commit(&Changes::default(), &[message("t/next", "")])
        .unwrap();
    assert!(next[0] > ids[8], "{next:?} reuses an id <= {}", ids[8]);
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, pending) = {
        let mut store = Store::open(dir.path()).unwrap();
        let changes = Changes {
            alerts: vec![full_alert("x"), alert("y", 1)],
            removed_alerts: vec![],
            devices: vec![device(1, 3)],
            meta: Some(MetaRecord {
                test_count: 2,
                ..MetaRecord::default()
            }),
        };
        let ids = store
            .commit(&changes, &[message("a", "1"), message("b", "2")])
            .unwrap();
        store.mark_sent(&ids[..1]).unwrap();
        store
            .commit_telemetry(&[device(2, 9), device(1, 4)])
            .unwrap();
        (store.load().unwrap(), all_pending(&store))
    };
    assert_eq!(snapshot.devices, vec![device(1, 4), device(2, 9)]);
    assert_eq!(pending.len(), 1);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.load().unwrap(), snapshot);
    assert_eq!(all_pending(&store), pending);
    assert_eq!(store.outbox_len().unwrap(), 1);
}

#[test]
fn empty_commits_do_not_touch_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    // Another connection holds the write lock: anything that wrote would wait, then fail.
    let other = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    assert_eq!(
        store.commit(&Changes::default(), &[]).unwrap(),
        Vec::<i64>::new()
    );
    store.mark_sent(&[]).unwrap();
    store.commit_telemetry(&[]).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    other.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn open_creates_a_private_state_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("var/lib/bandgate");
    let store = Store::open(&state).unwrap();
    assert_eq!(store.path(), state.join(DB_FILE));
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    let journal: String = rusqlite::Connection::open(state.join(DB_FILE))
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn open_failures_name_what_was_being_done() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let err = format!("{:#}", Store::open(&file).unwrap_err());
    assert!(
        err.starts_with(&format!("creating state directory {}", file.display())),
        "{err}"
    );

    std::fs::write(dir.path().join(DB_FILE), vec![0x42u8; 4096]).unwrap();
    let err = format!("{:#}", Store::open(dir.path()).unwrap_err());
    let db = dir.path().join(DB_FILE);
    assert!(
        err.starts_with(&format!("opening state database {}: ", db.display())),
        "{err}"
    );
    assert!(err.contains("not a database"), "{err}");
}

#[test]
fn a_database_from_a_newer_bandgate_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE future (x); PRAGMA user_version = {};",
            SCHEMA_VERSION + 1
        ))
        .unwrap();
    }
    let err = format!("{:#}", Store::open(dir.path()).unwrap_err());
    let newer = SCHEMA_VERSION + 1;
    assert_eq!(
        err,
        format!(
            "opening state database {}: schema version {newer} is newer than this bandgate \
             understands (up to {SCHEMA_VERSION}); it was written by a newer bandgate: run \
             that version, or move the file aside to start with an empty state",
            db.display()
        )
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete", "the newer file was modified");
}

#[test]
fn an_older_schema_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file is schema version 0, as a file from before any migration would be.
    std::fs::write(dir.path().join(DB_FILE), "").unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .commit(&Changes::default(), &[message("t", "m")])
        .unwrap();
    drop(store);
    let version: u32 = rusqlite::Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    // Opening again runs no migration twice.
    assert_eq!(Store::open(dir.path()).unwrap().outbox_len().unwrap(), 1);
}

// ---- kill -9 in the middle of commits ----

const CRASH_DIR_ENV: &str = "BANDGATE_STORE_CRASH_DIR";
const CRASH_MARK: &str = "store-committed ";
const CRASH_PAYLOAD: usize = 3000;
const CRASH_MARK_BEHIND: usize = 3;

fn crash_topic(n: u32, k: u32) -> String {
    format!("t/a{n:06}/{k}")
}

fn crash_payload(n: u32, k: u32) -> Vec<u8> {
    // Several pages per transaction, so a kill is likely to land inside one.
    let mut p = format!("{n}.{k}:").into_bytes();
    p.resize(CRASH_PAYLOAD, b'a' + (n % 26) as u8);
    p
}

/// Not a test on its own: the child process of `kill_9_mid_commit_keeps_a_consistent_state`.
/// Commits alert `n` with its three messages, its band and the counter in one transaction,
/// then writes the band again as telemetry and marks alert `n - 3`'s messages sent; forever.
#[test]
#[ignore = "child process of kill_9_mid_commit_keeps_a_consistent_state"]
fn crash_writer() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let mut store = Store::open(Path::new(&dir)).unwrap();
    let mut n = store.load().unwrap().meta.test_count;
    let mut sent_later = std::collections::VecDeque::new();
    let mut out = std::io::stdout().lock();
    loop {
        n += 1;
        let changes = Changes {
            alerts: vec![AlertRecord {
                seqs: vec![n],
                ..alert(&format!("a{n:06}"), 0)
            }],
            removed_alerts: vec![],
            devices: vec![device(1, n.into())],
            meta: Some(MetaRecord {
                test_count: n,
                ..MetaRecord::default()
            }),
        };
        let msgs: Vec<_> = (0..3)
            .map(|k| OutboxMessage {
                topic: crash_topic(n, k),
                payload: crash_payload(n, k),
                qos: 1,
                retain: false,
            })
            .collect();
        let ids = store.commit(&changes, &msgs).unwrap();
        writeln!(out, "{CRASH_MARK}{n}").unwrap();
        out.flush().unwrap();
        store.commit_telemetry(&[device(2, n.into())]).unwrap();
        sent_later.push_back(ids);
        if sent_later.len() > CRASH_MARK_BEHIND {
            store.mark_sent(&sent_later.pop_front().unwrap()).unwrap();
        }
    }
}

/// Runs `crash_writer` in a child process and SIGKILLs it `delay` after it reported
/// `at_least` more commits; returns the last commit it reported.
fn run_and_kill(dir: &Path, at_least: u32, delay: Duration) -> u32 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::crash_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Kept open until the kill: a closed pipe would end the writer between commits (EPIPE).
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut first = None;
    let mut last = 0;
    let mut reached = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest's own "test ... " text may share the first line.
        if let Some(pos) = line.find(CRASH_MARK) {
            last = line[pos + CRASH_MARK.len()..].trim().parse().unwrap();
            let first = *first.get_or_insert(last);
            if last - first + 1 >= at_least {
                reached = true;
                break;
            }
        }
    }
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    drop(lines);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the writer ended before the kill: {status}"
    );
    assert!(
        reached,
        "the writer stopped after commit {last} ({status}); see its stderr above"
    );
    last
}

fn check_consistent(dir: &Path, reported: u32) -> u32 {
    let store = Store::open(dir).unwrap();
    let snapshot = store.load().unwrap();
    let top = snapshot.meta.test_count;
    assert!(
        top >= reported,
        "commit {reported} was reported but top is {top}"
    );
    let ids: Vec<String> = snapshot.alerts.iter().map(|a| a.id.clone()).collect();
    let expected: Vec<String> = (1..=top).map(|n| format!("a{n:06}")).collect();
    assert_eq!(ids, expected, "alerts do not match the counter {top}");
    for a in &snapshot.alerts {
        assert_eq!(a.seqs.len(), 1);
    }
    let band1 = snapshot.devices.iter().find(|d| d.device_id == 1).unwrap();
    assert_eq!(band1.window_seen, u64::from(top));
    if let Some(band2) = snapshot.devices.iter().find(|d| d.device_id == 2) {
        // Written right after commit `top`, or not yet.
        assert!(
            band2.window_seen + 1 >= u64::from(top) && band2.window_seen <= u64::from(top),
            "telemetry {} against commit {top}",
            band2.window_seen
        );
    }

    let mut by_alert: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    let pending = all_pending(&store);
    assert!(pending.windows(2).all(|w| w[0].0 < w[1].0));
    for (_, m) in &pending {
        let (n, k) = m.topic["t/a".len()..].split_once('/').unwrap();
        let (n, k): (u32, u32) = (n.parse().unwrap(), k.parse().unwrap());
        assert!(
            n <= top,
            "a message of commit {n} without its alert (top {top})"
        );
        assert_eq!(m.payload, crash_payload(n, k), "message {}", m.topic);
        assert!(
            by_alert.entry(n).or_default().insert(k),
            "{} twice",
            m.topic
        );
    }
    for (n, ks) in &by_alert {
        assert_eq!(
            ks.len(),
            3,
            "commit {n} has messages {ks:?}: half a transaction"
        );
    }
    // The newest commits' messages cannot have been marked sent yet.
    for n in top.saturating_sub(CRASH_MARK_BEHIND as u32 - 1).max(1)..=top {
        assert!(
            by_alert.contains_key(&n),
            "commit {n}'s messages are missing"
        );
    }
    assert_eq!(store.outbox_len().unwrap(), pending.len() as u64);
    top
}

#[test]
fn kill_9_mid_commit_keeps_a_consistent_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut top = 0;
    // Each round starts from what the previous kill left, so recovery is also written over.
    // The delays spread the kills over a commit's phases (one commit is a few milliseconds):
    // writing a split commit as two transactions is caught by most runs of this test.
    for round in 0..10u64 {
        let delay = Duration::from_micros(round * 1700 % 6000);
        let reported = run_and_kill(dir.path(), 5, delay);
        assert!(reported > top, "the writer did not continue from {top}");
        top = check_consistent(dir.path(), reported);
    }
}

// ---- random sequences against a model ----

#[derive(Debug, Clone)]
enum Op {
    Commit {
        alerts: Vec<(u8, u8)>,
        removed: Vec<u8>,
        devices: Vec<(u8, u64)>,
        meta: Option<u32>,
        outbox: Vec<(u8, Vec<u8>, u8, bool)>,
    },
    Telemetry(Vec<(u8, u64)>),
    /// Picks among the pending ids; `true` adds an id that was never handed out.
    MarkSent(Vec<prop::sample::Index>, bool),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let devices = prop::collection::vec((0u8..4, any::<u64>()), 0..3);
    prop_oneof![
        4 => (
            prop::collection::vec((0u8..5, any::<u8>()), 0..3),
            prop::collection::vec(0u8..5, 0..2),
            devices.clone(),
            prop::option::of(any::<u32>()),
            prop::collection::vec(
                (0u8..3, prop::collection::vec(any::<u8>(), 0..20), 0u8..=2, any::<bool>()),
                0..4,
            ),
        )
            .prop_map(|(alerts, removed, devices, meta, outbox)| Op::Commit {
                alerts,
                removed,
                devices,
                meta,
                outbox,
            }),
        1 => devices.prop_map(Op::Telemetry),
        3 => (prop::collection::vec(any::<prop::sample::Index>(), 0..4), any::<bool>())
            .prop_map(|(picks, bogus)| Op::MarkSent(picks, bogus)),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    alerts: BTreeMap<String, AlertRecord>,
    devices: BTreeMap<u32, DeviceRecord>,
    meta: MetaRecord,
    outbox: BTreeMap<i64, OutboxMessage>,
    top_id: i64,
}

impl Model {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            alerts: self.alerts.values().cloned().collect(),
            devices: self.devices.values().cloned().collect(),
            meta: self.meta,
        }
    }
}

fn devices_of(devices: &[(u8, u64)]) -> Vec<DeviceRecord> {
    devices
        .iter()
        .map(|&(id, seen)| device(id.into(), seen))
        .collect()
}

fn run_ops(dir: &Path, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut store = Store::open(dir).unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Commit {
                alerts,
                removed,
                devices,
                meta,
                outbox,
            } => {
                let changes = Changes {
                    alerts: alerts
                        .iter()
                        .map(|&(id, tier)| alert(&format!("a{id}"), tier))
                        .collect(),
                    removed_alerts: removed.iter().map(|id| format!("a{id}")).collect(),
                    devices: devices_of(&devices),
                    meta: meta.map(|test_count| MetaRecord {
                        test_count,
                        ..MetaRecord::default()
                    }),
                };
                let msgs: Vec<_> = outbox
                    .into_iter()
                    .map(|(topic, payload, qos, retain)| OutboxMessage {
                        topic: format!("t/{topic}"),
                        payload,
                        qos,
                        retain,
                    })
                    .collect();
                let ids = store.commit(&changes, &msgs).unwrap();
                prop_assert_eq!(ids.len(), msgs.len());
                for id in &changes.removed_alerts {
                    model.alerts.remove(id);
                }
                for a in changes.alerts {
                    model.alerts.insert(a.id.clone(), a);
                }
                for d in changes.devices {
                    model.devices.insert(d.device_id, d);
                }
                if let Some(m) = changes.meta {
                    model.meta = m;
                }
                for (id, m) in ids.into_iter().zip(msgs) {
                    prop_assert!(id > model.top_id, "id {} after {}", id, model.top_id);
                    model.top_id = id;
                    model.outbox.insert(id, m);
                }
            }
            Op::Telemetry(devices) => {
                let records = devices_of(&devices);
                store.commit_telemetry(&records).unwrap();
                for d in records {
                    model.devices.insert(d.device_id, d);
                }
            }
            Op::MarkSent(picks, bogus) => {
                let pending: Vec<i64> = model.outbox.keys().copied().collect();
                let mut ids: Vec<i64> = if pending.is_empty() {
                    vec![]
                } else {
                    picks.iter().map(|i| *i.get(&pending)).collect()
                };
                if bogus {
                    ids.push(model.top_id + 1000);
                }
                store.mark_sent(&ids).unwrap();
                for id in ids {
                    model.outbox.remove(&id);
                }
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir).unwrap();
            }
        }
        prop_assert_eq!(store.load().unwrap(), model.snapshot());
        let expected: Vec<(i64, OutboxMessage)> = model
            .outbox
            .iter()
            .map(|(&id, m)| (id, m.clone()))
            .collect();
        prop_assert_eq!(all_pending(&store), expected.clone());
        prop_assert_eq!(store.outbox_len().unwrap(), expected.len() as u64);
        if let Some(&(first, _)) = expected.first() {
            prop_assert_eq!(
                store.pending(Some(first), 2).unwrap(),
                expected.iter().skip(1).take(2).cloned().collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}

proptest! {
    // Every commit is an fsync on the real disk: few cases, short sequences.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_commits_and_acks_match_a_model(ops in prop::collection::vec(op(), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        run_ops(dir.path(), ops)?;
    }
}

#[test]
fn commits_reach_the_database_file_through_the_background_checkpoint() {
    // Automatic checkpoints are off (they would sync the database inside an alert's commit);
    // the store's own thread copies the WAL into the main file instead. Proof: a copy of the
    // main file alone, without its WAL, soon holds the committed alert.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let changes = Changes {
        alerts: vec![alert("17-42", 1)],
        ..Changes::default()
    };
    store.commit(&changes, &[message("t", "p")]).unwrap();
    let copy = dir.path().join("copy.sqlite3");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        std::fs::copy(dir.path().join(DB_FILE), &copy).unwrap();
        let n: i64 = rusqlite::Connection::open(&copy)
            .and_then(|c| c.query_row("SELECT count(*) FROM alerts", [], |r| r.get(0)))
            .unwrap_or(0);
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the main database file never received the commit: no checkpoint ran"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(store);
}

#[test]
fn changes_kept_from_a_failed_commit_merge_with_the_next_one_later_wins() {
    // The daemon keeps the changes of a failed commit and writes them with the next one.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let failed = Changes {
        alerts: vec![alert("17-1", 1), alert("18-1", 1), alert("19-1", 1)],
        removed_alerts: vec!["20-1".into()],
        devices: vec![device(17, 1), device(18, 1)],
        meta: Some(MetaRecord {
            test_count: 1,
            ..MetaRecord::default()
        }),
    };
    let next = Changes {
        alerts: vec![alert("17-1", 2), alert("20-1", 1)],
        removed_alerts: vec!["18-1".into()],
        devices: vec![device(17, 3)],
        meta: None,
    };
    store.commit(&failed.then(next), &[]).unwrap();
    let snap = store.load().unwrap();
    let tiers: BTreeMap<String, u8> = snap.alerts.iter().map(|a| (a.id.clone(), a.tier)).collect();
    assert_eq!(
        tiers,
        BTreeMap::from([
            ("17-1".to_string(), 2),
            ("19-1".to_string(), 1),
            ("20-1".to_string(), 1)
        ]),
        "later record wins, a later removal is not undone, a later raise is not removed"
    );
    let windows: BTreeMap<u32, u64> = snap
        .devices
        .iter()
        .map(|d| (d.device_id, d.window_seen))
        .collect();
    assert_eq!(windows, BTreeMap::from([(17, 3), (18, 1)]));
    assert_eq!(snap.meta.test_count, 1);
}

fn wal_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(format!("{DB_FILE}-wal"))).map_or(0, |m| m.len())
}

#[test]
fn the_wal_stays_bounded_under_a_storm_of_writes_and_shrinks_when_it_ends() {
    // 160 MB through the WAL as fast as the disk takes it (2 MB commits, each acknowledged
    // at once, as a storm of pages would be): the WAL never passes 64 MB and is cut back to
    // `WAL_LIMIT` once the storm is over.
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let payload = "x".repeat(256 * 1024);
    let batch: Vec<OutboxMessage> = (0..8).map(|_| message("storm", &payload)).collect();
    let started = Instant::now();
    let mut largest = 0;
    for n in 0..80 {
        let changes = Changes {
            alerts: vec![alert(&format!("17-{n}"), 1)],
            ..Changes::default()
        };
        let ids = store.commit(&changes, &batch).unwrap();
        store.mark_sent(&ids).unwrap();
        largest = largest.max(wal_bytes(dir.path()));
    }
    let took = started.elapsed();
    assert!(
        largest < 64 * 1024 * 1024,
        "the WAL reached {largest} bytes"
    );
    // After the storm: a checkpoint, then the next write starts the WAL over and cuts it. A CI
    // run under load once saw the WAL still at 4.3 MB (the limit is 4 MiB) after 20 s: the
    // cause is not known; the bound holds either way, and the wait is a minute now.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        store
            .commit(
                &Changes {
                    alerts: vec![alert("18-1", 1)],
                    ..Changes::default()
                },
                &[],
            )
            .unwrap();
        if wal_bytes(dir.path()) <= WAL_LIMIT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the WAL stayed at {} bytes after the storm",
            wal_bytes(dir.path())
        );
    }
    eprintln!(
        "160 MB in {took:?}; largest WAL {:.1} MB",
        largest as f64 / 1e6
    );
    assert_eq!(store.load().unwrap().alerts.len(), 81);
}
