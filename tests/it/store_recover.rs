//! `Store::recover` on a real SQLite file damaged by hand: whatever the disk holds, a store to
//! run on, every readable record, and each loss named.

use std::path::{Path, PathBuf};

use bandgate::adapters::store::{Loss, OutboxMessage, Store, DB_FILE, IN_USE_FILE};
use bandgate::engine::snapshot::{AlertRecord, Changes, DeviceRecord, MetaRecord};
use jiff::Timestamp;

pub fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + second).unwrap()
}

/// An open SOS of band `device_id` at tier 1.
pub fn open_alert(id: &str, device_id: u32) -> AlertRecord {
    AlertRecord::sos(id, device_id, 5, at(0)).paged_to(&["zhang"])
}

fn device(device_id: u32) -> DeviceRecord {
    DeviceRecord {
        device_id,
        window_top: Some(5),
        window_seen: 1,
        last_seen: Some(at(2)),
        battery_pct: Some(80),
        worn: Some(true),
        silent_count: 0,
        battery_count: 0,
        low_battery_day: None,
        enrolment: None,
    }
}

/// A state dir whose database holds `alerts`, bands 17 and 18 and one outbox message; the
/// store is closed (WAL checkpointed into the file) when this returns.
pub fn used_state(dir: &Path, alerts: Vec<AlertRecord>) {
    let mut store = Store::open(dir).unwrap();
    let changes = Changes {
        alerts,
        removed_alerts: vec![],
        devices: vec![device(17), device(18)],
        meta: Some(MetaRecord {
            test_count: 3,
            ..MetaRecord::default()
        }),
    };
    let msg = OutboxMessage {
        topic: "t/x".into(),
        payload: b"{}".to_vec(),
        qos: 1,
        retain: false,
    };
    store.commit(&changes, &[msg]).unwrap();
}

/// Runs SQL on the database directly, as an operator's `sqlite3` shell would.
pub fn sql(dir: &Path, statements: &str) {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.execute_batch(statements).unwrap();
}

/// Files next to the database whose name starts with `prefix`.
pub fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    out.sort();
    out
}

fn ids(alerts: &[AlertRecord]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.as_str()).collect()
}

/// The alert records with a `tier` of 300, cut short, a deadline past what a timestamp can
/// hold, and a kind this version does not know; a band record of the wrong type; a meta
/// record that is not text at all (a blob).
pub const DAMAGE_RECORDS: &str = r#"
    UPDATE alerts SET record = json_set(record, '$.tier', 300) WHERE id = '17-1';
    UPDATE alerts SET record = substr(record, 1, 80) WHERE id = '17-2';
    UPDATE alerts SET record = json_set(record, '$.due', '9999-12-31T23:59:59Z') WHERE id = '17-3';
    UPDATE alerts SET record = json_set(record, '$.kind', 'earthquake') WHERE id = '17-4';
    UPDATE devices SET record = json_set(record, '$.device_id', 'seventeen') WHERE device_id = 17;
    UPDATE meta SET record = x'00ff';
"#;

#[test]
fn unreadable_records_are_skipped_kept_aside_and_every_other_one_restored() {
    let dir = tempfile::tempdir().unwrap();
    let alerts: Vec<AlertRecord> = ["17-1", "17-2", "17-3", "17-4", "18-5", "18-6"]
        .iter()
        .map(|id| open_alert(id, if id.starts_with("17") { 17 } else { 18 }))
        .collect();
    used_state(dir.path(), alerts.clone());
    sql(dir.path(), DAMAGE_RECORDS);

    let r = Store::recover(dir.path()).unwrap();
    assert!(r.store.is_durable());
    assert_eq!(
        r.snapshot.alerts,
        alerts[4..].to_vec(),
        "the readable alerts"
    );
    assert_eq!(r.snapshot.devices, vec![device(18)]);
    assert_eq!(r.snapshot.meta, MetaRecord::default());
    let kept = files_starting(dir.path(), &format!("{DB_FILE}.skipped-"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    let mut lost: Vec<(String, String)> = r
        .losses
        .iter()
        .map(|l| match l {
            Loss::Record {
                table,
                key,
                kept_in,
                ..
            } => {
                assert_eq!(kept_in.as_ref(), Some(&kept[0]));
                (table.to_string(), key.clone())
            }
            other => panic!("unexpected loss {other:?}"),
        })
        .collect();
    lost.sort();
    let expected: Vec<(String, String)> = [
        ("alerts", "17-1"),
        ("alerts", "17-2"),
        ("alerts", "17-3"),
        ("alerts", "17-4"),
        ("devices", "17"),
        ("meta", "1"),
    ]
    .iter()
    .map(|(t, k)| (t.to_string(), k.to_string()))
    .collect();
    assert_eq!(lost, expected);
    let why = r
        .losses
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        why.contains("the alerts record 17-1 cannot be read (invalid value: integer `300`"),
        "{why}"
    );
    assert!(why.contains("unknown alert kind \"earthquake\""), "{why}");
    assert!(
        why.contains("not JSON text but blob of 2 bytes: 00ff"),
        "{why}"
    );

    // The copies keep the stored text, one JSON line each.
    let text = std::fs::read_to_string(&kept[0]).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    let cut = lines.iter().find(|l| l["key"] == "17-2").unwrap();
    assert_eq!(cut["table"], "alerts");
    assert_eq!(cut["record"].as_str().unwrap().len(), 80);

    // Skipped once: the database no longer holds them, the next start is clean.
    let outbox = r.store.outbox_len().unwrap();
    drop(r);
    let again = Store::recover(dir.path()).unwrap();
    assert_eq!(again.losses, vec![]);
    assert_eq!(ids(&again.snapshot.alerts), ["18-5", "18-6"]);
    assert_eq!(again.store.outbox_len().unwrap(), outbox);
    assert_eq!(outbox, 1);
}

#[test]
fn a_database_with_a_damaged_header_is_moved_aside_and_a_new_one_used() {
    let dir = tempfile::tempdir().unwrap();
    used_state(dir.path(), vec![open_alert("17-1", 17)]);
    let db = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..16].copy_from_slice(b"garbage garbage!");
    std::fs::write(&db, &bytes).unwrap();

    let mut r = Store::recover(dir.path()).unwrap();
    let [Loss::Database {
        moved_to: Some(to),
        salvaged_alerts: 0,
        ..
    }] = r.losses.as_slice()
    else {
        panic!("{:?}", r.losses);
    };
    assert!(
        to.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{DB_FILE}.broken-")),
        "{to:?}"
    );
    assert_eq!(std::fs::read(to).unwrap(), bytes, "kept as it was");
    assert!(r.losses[0].to_string().contains("moved aside to"));
    assert!(r.store.is_durable());
    assert_eq!(r.snapshot.alerts, vec![]);
    // The new database works and survives a reopen.
    r.store
        .commit(
            &Changes {
                alerts: vec![open_alert("17-9", 17)],
                ..Changes::default()
            },
            &[],
        )
        .unwrap();
    drop(r);
    let again = Store::recover(dir.path()).unwrap();
    assert_eq!(again.losses, vec![]);
    assert_eq!(ids(&again.snapshot.alerts), ["17-9"]);
}

#[test]
fn a_database_with_half_its_pages_damaged_gives_back_what_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let alerts: Vec<AlertRecord> = (0..200)
        .map(|i| AlertRecord {
            notified: vec![format!("person-{i:04}-{}", "x".repeat(200))],
            ..open_alert(&format!("17-{i:04}"), 17)
        })
        .collect();
    used_state(dir.path(), alerts.clone());
    let db = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    assert!(pages > 20, "{pages} pages");
    for page in (pages / 2)..pages {
        for b in &mut bytes[page * 4096..(page + 1) * 4096] {
            *b = 0x5A;
        }
    }
    std::fs::write(&db, &bytes).unwrap();

    let r = Store::recover(dir.path()).unwrap();
    assert!(
        matches!(
            r.losses.first(),
            Some(Loss::Database {
                moved_to: Some(_),
                ..
            })
        ),
        "{:?}",
        r.losses
    );
    // What was read is exactly what was written, nothing invented.
    for a in &r.snapshot.alerts {
        assert!(alerts.contains(a), "{a:?} was not written");
    }
    assert!(r.snapshot.alerts.len() < alerts.len());
    let Loss::Database {
        salvaged_alerts, ..
    } = &r.losses[0]
    else {
        unreachable!()
    };
    assert_eq!(*salvaged_alerts, r.snapshot.alerts.len());
    // The salvaged alerts are in the new database.
    let salvaged = r.snapshot.alerts.clone();
    drop(r);
    let again = Store::recover(dir.path()).unwrap();
    assert_eq!(again.losses, vec![]);
    assert_eq!(again.snapshot.alerts, salvaged);
}

#[test]
fn a_directory_in_place_of_the_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join(DB_FILE)).unwrap();
    std::fs::write(dir.path().join(DB_FILE).join("inside"), "x").unwrap();
    let r = Store::recover(dir.path()).unwrap();
    let [Loss::Database {
        moved_to: Some(to), ..
    }] = r.losses.as_slice()
    else {
        panic!("{:?}", r.losses);
    };
    assert!(to.join("inside").is_file(), "kept with what it held");
    assert!(r.store.is_durable());
    assert!(dir.path().join(DB_FILE).is_file());
}

#[test]
fn a_database_from_a_newer_bandgate_is_moved_aside_not_a_reason_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    sql(
        dir.path(),
        "CREATE TABLE future (x); PRAGMA user_version = 999;",
    );
    let r = Store::recover(dir.path()).unwrap();
    assert!(
        matches!(
            r.losses.as_slice(),
            [Loss::Database {
                moved_to: Some(_),
                ..
            }]
        ),
        "{:?}",
        r.losses
    );
    assert!(r.losses[0].to_string().contains("newer than this bandgate"));
    assert!(r.store.is_durable());
}

#[test]
fn a_used_state_that_comes_back_empty_is_noticed_through_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_FILE);
    // A first start with nothing is not a loss, and leaves no marker until records exist.
    let r = Store::recover(dir.path()).unwrap();
    assert_eq!(r.losses, vec![]);
    assert!(!dir.path().join(IN_USE_FILE).exists());
    drop(r);
    used_state(dir.path(), vec![open_alert("17-1", 17)]);
    assert!(dir.path().join(IN_USE_FILE).exists(), "marked by a commit");
    assert_eq!(Store::recover(dir.path()).unwrap().losses, vec![]);

    // Zero bytes.
    std::fs::write(&db, "").unwrap();
    let r = Store::recover(dir.path()).unwrap();
    assert!(
        matches!(r.losses.as_slice(), [Loss::Emptied { how, .. }] if how == "zero bytes long"),
        "{:?}",
        r.losses
    );
    assert!(r.losses[0]
        .to_string()
        .contains("every alert that was open is lost"));
    assert_eq!(r.snapshot.alerts, vec![]);
    drop(r);

    // Emptied with SQL, tables kept.
    used_state(dir.path(), vec![open_alert("17-1", 17)]);
    sql(
        dir.path(),
        "DELETE FROM alerts; DELETE FROM devices; DELETE FROM meta; DELETE FROM outbox;",
    );
    let r = Store::recover(dir.path()).unwrap();
    assert!(
        matches!(r.losses.as_slice(), [Loss::Emptied { how, .. }] if how == "empty"),
        "{:?}",
        r.losses
    );
    drop(r);

    // Deleted.
    std::fs::remove_file(&db).unwrap();
    let r = Store::recover(dir.path()).unwrap();
    assert!(
        matches!(r.losses.as_slice(), [Loss::Emptied { how, .. }] if how == "missing"),
        "{:?}",
        r.losses
    );
}

#[test]
fn a_state_dir_that_cannot_be_created_runs_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let mut r = Store::recover(&file).unwrap();
    assert!(!r.store.is_durable());
    assert!(
        matches!(r.losses.as_slice(), [Loss::NotDurable { .. }]),
        "{:?}",
        r.losses
    );
    // It works as a store within the process.
    let msg = OutboxMessage {
        topic: "t".into(),
        payload: b"p".to_vec(),
        qos: 1,
        retain: true,
    };
    let new = r
        .store
        .commit(
            &Changes {
                alerts: vec![open_alert("17-1", 17)],
                ..Changes::default()
            },
            std::slice::from_ref(&msg),
        )
        .unwrap();
    assert_eq!(r.store.pending(None, 10).unwrap(), vec![(new[0], msg)]);
    assert_eq!(ids(&r.store.load().unwrap().alerts), ["17-1"]);
}

/// A read-only tmpfs holding a used state (root only: skipped, and said so, otherwise).
pub struct ReadOnlyMount {
    pub path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl ReadOnlyMount {
    /// Mounts a tmpfs at a temp dir, lets `fill` write into it, then remounts it read-only.
    pub fn new(fill: impl FnOnce(&Path)) -> Option<ReadOnlyMount> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut m = ReadOnlyMount::at(&path, fill)?;
        m._dir = Some(dir);
        Some(m)
    }

    /// The same at `path` (created if needed).
    pub fn at(path: &Path, fill: impl FnOnce(&Path)) -> Option<ReadOnlyMount> {
        if !crate::harness::mount_tmpfs(path, "8m") {
            return None;
        }
        let m = ReadOnlyMount {
            path: path.to_path_buf(),
            _dir: None,
        };
        fill(path);
        let ok = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
        Some(m)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_read_only_state_dir_runs_in_memory_with_what_it_holds() {
    let Some(m) = ReadOnlyMount::new(|d| used_state(d, vec![open_alert("18-5", 18)])) else {
        return;
    };
    let r = Store::recover(&m.path).unwrap();
    assert!(!r.store.is_durable());
    let [Loss::NotDurable { error, .. }] = r.losses.as_slice() else {
        panic!("{:?}", r.losses);
    };
    assert!(error.contains("Read-only file system"), "{error}");
    assert_eq!(ids(&r.snapshot.alerts), ["18-5"]);
    assert_eq!(r.store.outbox_len().unwrap(), 1, "the outbox is kept too");
}
