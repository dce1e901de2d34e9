//! Starting whatever the disk holds (`Store::recover`): the gateway must page residents'
//! alarms even when its state is damaged, so nothing found in `state_dir` stops it. What
//! could not be brought back is returned as `Loss`es, for the log, the status and the
//! supervisors' `gateway_fault` page.
//!
//! - A database that cannot be opened or read (not a database, damaged pages, written by a
//!   newer bandgate, a directory in its place) is moved aside as
//!   `bandgate.sqlite3.broken-<time>` (kept for inspection) after every record that can still
//!   be read was copied out; the gateway continues on a new database holding those records.
//! - A record that cannot be read (cut short, a value out of range, a wrong type, a kind or
//!   state this version does not know) is skipped, copied to
//!   `bandgate.sqlite3.skipped-<time>.jsonl` and removed from the database; every other
//!   record is restored.
//! - A `state_dir` that cannot be written (read-only, not a directory, no permission) starts
//!   the gateway on an in-memory store (`Store::is_durable` is false), seeded with whatever
//!   could be read there.
//! - A state that held records and comes back empty (a zero-byte, deleted or recreated
//!   database file) is noticed through `bandgate.sqlite3.in-use`, a marker kept next to the
//!   database, not in it, so that emptying the database cannot erase it.
//!
//! A full disk is not a reason to move anything aside or to leave the database: it is
//! opened as it is, and commits fail (and are retried) until there is room again.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use serde::de::DeserializeOwned;

use super::{OutboxMessage, Store, DB_FILE};
use crate::engine::snapshot::{AlertRecord, Changes, DeviceRecord, MetaRecord, Snapshot};

/// Next to the database: "this state held records". See the module doc.
pub const IN_USE_FILE: &str = "bandgate.sqlite3.in-use";

/// How many lost records a summary names before saying "and N more".
const NAMED_IN_SUMMARY: usize = 5;

/// Something `Store::recover` could not bring back, or a reason the state is not safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// The database could not be opened or read. `moved_to`: where it was moved aside
    /// (`None`: it could not be, see `error`); `salvaged`: alerts still read from it.
    Database {
        path: PathBuf,
        error: String,
        moved_to: Option<PathBuf>,
        salvaged_alerts: usize,
    },
    /// One record that could not be read, skipped; `kept_in` is the file holding a copy.
    Record {
        table: &'static str,
        key: String,
        error: String,
        kept_in: Option<PathBuf>,
    },
    /// `state_dir` cannot be written: the gateway runs on an in-memory store.
    NotDurable { state_dir: PathBuf, error: String },
    /// The state held records before and is empty now (`how`: zero bytes, missing, ...).
    Emptied { path: PathBuf, how: String },
}

impl Loss {
    /// What an operator should look at, in a few words.
    pub fn short(&self) -> String {
        match self {
            Loss::Database { moved_to, .. } => match moved_to {
                Some(_) => "state database unreadable, moved aside".into(),
                None => "state database unreadable".into(),
            },
            Loss::Record { table, key, .. } => format!("unreadable {table} record {key}"),
            Loss::NotDurable { .. } => "state directory not writable: no durability".into(),
            Loss::Emptied { .. } => "state database came back empty".into(),
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Database {
                path,
                error,
                moved_to,
                salvaged_alerts,
            } => {
                write!(
                    f,
                    "the state database {} cannot be read ({error}); ",
                    path.display()
                )?;
                match moved_to {
                    Some(to) => write!(f, "moved aside to {}", to.display())?,
                    None => write!(f, "it could not be moved aside")?,
                }
                write!(
                    f,
                    "; {salvaged_alerts} alert(s) could still be read and were restored, \
                     any other open alert is lost"
                )
            }
            Loss::Record {
                table,
                key,
                error,
                kept_in,
            } => {
                write!(
                    f,
                    "the {table} record {key} cannot be read ({error}); skipped"
                )?;
                match kept_in {
                    Some(file) => write!(f, ", a copy is in {}", file.display()),
                    None => write!(f, ", left where it is"),
                }
            }
            Loss::NotDurable { state_dir, error } => write!(
                f,
                "the state directory {} cannot be written ({error}); running on an in-memory \
                 store: alerts are paged but an alert still open at a restart or power cut \
                 is lost",
                state_dir.display()
            ),
            Loss::Emptied { path, how } => write!(
                f,
                "the state database {} held records before and is {how} now: every alert \
                 that was open is lost (was the file truncated, deleted or replaced?)",
                path.display()
            ),
        }
    }
}

/// One line for a log, a status or a page: the losses, the first few named.
pub fn summary(losses: &[Loss]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let records = losses
        .iter()
        .filter(|l| matches!(l, Loss::Record { .. }))
        .count();
    let mut named = 0;
    for l in losses {
        if matches!(l, Loss::Record { .. }) {
            if named == NAMED_IN_SUMMARY {
                parts.push(format!("and {} more unreadable record(s)", records - named));
                named += 1;
                continue;
            } else if named > NAMED_IN_SUMMARY {
                continue;
            }
            named += 1;
        }
        parts.push(l.to_string());
    }
    parts.join("; ")
}

/// What `Store::recover` gives the daemon: a store to run on, the state to restore, and
/// everything that could not be brought back.
#[derive(Debug)]
pub struct Recovered {
    pub store: Store,
    pub snapshot: Snapshot,
    pub losses: Vec<Loss>,
}

/// A record that could not be read, with what is known of it.
#[derive(Debug, Clone)]
struct BadRecord {
    table: &'static str,
    key: Value,
    /// The stored text (or a description of a value that is not text).
    raw: String,
    error: String,
}

/// Everything read from one database, row by row.
#[derive(Debug, Default)]
struct Scan {
    snapshot: Snapshot,
    outbox: Vec<OutboxMessage>,
    bad: Vec<BadRecord>,
    /// Rows of any kind, readable or not (is the state empty?).
    rows: usize,
}

/// The database opened and was scanned: unreadable records are set aside (in a file beside
/// it) and reported, the rest is the state to run on.
fn readable(mut store: Store, scan: Scan, path: &Path, emptied: Option<Loss>) -> Recovered {
    let mut kept_in = None;
    if !scan.bad.is_empty() {
        kept_in = set_aside(&mut store, path, &scan.bad)
            .map_err(|e| {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot set unreadable records aside; they stay in the database \
                     and are skipped again at the next start"
                )
            })
            .ok();
    }
    let mut losses = record_losses(&scan.bad, kept_in.as_deref());
    losses.extend(emptied);
    if scan.rows > 0 {
        store.mark_in_use();
    }
    Recovered {
        store,
        snapshot: scan.snapshot,
        losses,
    }
}

/// The database is damaged: what can be read is salvaged, the file is moved aside and a
/// fresh one started (in memory if even that fails).
fn damaged(state_dir: &Path, path: &Path, error: String) -> anyhow::Result<Recovered> {
    let scan = salvage(path);
    let moved_to = move_aside(path)
        .map_err(|e| {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot move the state database aside"
            )
        })
        .ok();
    let fresh = moved_to.is_some();
    let mut losses = vec![Loss::Database {
        path: path.to_path_buf(),
        error,
        moved_to,
        salvaged_alerts: scan.snapshot.alerts.len(),
    }];
    let not_durable = |error| Loss::NotDurable {
        state_dir: state_dir.to_path_buf(),
        error,
    };
    let store = if !fresh {
        losses.push(not_durable(
            "the damaged database is still in the way".into(),
        ));
        None
    } else {
        Store::open(state_dir)
            .map_err(|e| losses.push(not_durable(format!("{e:#}"))))
            .ok()
    };
    let store = match store {
        Some(s) => s,
        None => Store::in_memory(path)?,
    };
    let side = store.is_durable().then_some(path);
    Ok(seed(store, scan, side, losses))
}

/// The state cannot be written (or the file cannot be opened without damage being the
/// reason): the gateway runs in memory on what can be read, and says so.
fn without_the_file(state_dir: &Path, path: &Path, error: String) -> anyhow::Result<Recovered> {
    let scan = salvage_read_only(path);
    let losses = vec![Loss::NotDurable {
        state_dir: state_dir.to_path_buf(),
        error,
    }];
    let store = Store::in_memory(path)?;
    Ok(seed(store, scan, None, losses))
}

impl Store {
    /// Opens the state in `state_dir` whatever it holds (see the module doc): never refuses
    /// to start because of what is on disk. Fails only if not even an in-memory store can
    /// be made (out of memory).
    pub fn recover(state_dir: &Path) -> anyhow::Result<Recovered> {
        let path = state_dir.join(DB_FILE);
        if let Err(e) = writable(state_dir) {
            return without_the_file(state_dir, &path, format!("{e:#}"));
        }
        let was_in_use = in_use_marker(&path).exists();
        let missing = !path.exists();
        let zero_bytes = std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0);
        match open_and_scan(state_dir, &path) {
            Ok((store, scan)) => {
                let emptied = (scan.rows == 0 && was_in_use).then(|| Loss::Emptied {
                    path: path.clone(),
                    how: if missing {
                        "missing"
                    } else if zero_bytes {
                        "zero bytes long"
                    } else {
                        "empty"
                    }
                    .into(),
                });
                Ok(readable(store, scan, &path, emptied))
            }
            Err(e) if is_damage(&e) => damaged(state_dir, &path, format!("{e:#}")),
            // Not damage (locked by another process, an IO error, no room to open the WAL):
            // the file is left as it is and the gateway runs without it.
            Err(e) => without_the_file(state_dir, &path, format!("{e:#}")),
        }
    }

    /// Writes the in-use marker once the database holds something (see the module doc).
    /// A marker that cannot be written is logged: the state works, only an emptied file
    /// would go unnoticed.
    pub(super) fn mark_in_use(&mut self) {
        if self.marked || !self.durable {
            return;
        }
        match write_marker(&self.path) {
            Ok(()) => self.marked = true,
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "cannot write the in-use marker next to the state database; an emptied \
                 database would not be noticed at the next start"
            ),
        }
    }
}

/// The marker file for the database at `db`.
pub(super) fn in_use_marker(db: &Path) -> PathBuf {
    db.with_file_name(IN_USE_FILE)
}

fn write_marker(db: &Path) -> anyhow::Result<()> {
    let marker = in_use_marker(db);
    let tmp = marker.with_extension("in-use.tmp");
    let text =
        format!(
        "bandgate keeps its state in {DB_FILE} next to this file, which has held records since \
         {}.\nIf that database is ever found empty while this file exists, bandgate reports \
         the loss (gateway_fault). Do not delete this file.\n",
        Timestamp::now().round(jiff::Unit::Second).unwrap_or(Timestamp::now())
    );
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &marker)
        .with_context(|| format!("renaming {} to {}", tmp.display(), marker.display()))?;
    sync_dir(db);
    Ok(())
}

fn sync_dir(db: &Path) {
    if let Some(dir) = db.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Can files be created and written in `state_dir` (creating it if needed)? A full disk
/// counts as writable: the database is still opened, and commits wait for room.
fn writable(state_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let probe = state_dir.join(format!(".bandgate-probe-{}", std::process::id()));
    let result = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"probe")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(()) => Ok(()),
        // ENOSPC, EDQUOT: full, not unusable.
        Err(e) if matches!(e.raw_os_error(), Some(28 | 122)) => {
            tracing::warn!(
                state_dir = %state_dir.display(),
                error = %e,
                "the state directory's disk is full; opening the database anyway"
            );
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("writing in {}", state_dir.display())),
    }
}

/// The database, opened and checked, and every row read from it.
fn open_and_scan(state_dir: &Path, path: &Path) -> anyhow::Result<(Store, Scan)> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.is_file() {
            return Err(Damage(format!(
                "{} is not a regular file (a {})",
                path.display(),
                if meta.is_dir() {
                    "directory"
                } else {
                    "special file"
                }
            ))
            .into());
        }
    }
    let store = Store::open(state_dir)?;
    let check: String = store
        .conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .context("checking the state database")?;
    if check != "ok" {
        return Err(Damage(format!("the integrity check failed: {check}")).into());
    }
    let scan = scan(&store.conn, false)?;
    Ok((store, scan))
}

/// The database is damaged (as opposed to locked or on a full disk): move it aside.
#[derive(Debug)]
struct Damage(String);

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damage {}

fn is_damage(e: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode;
    e.chain().any(|cause| {
        if cause.is::<Damage>() {
            return true;
        }
        if let Some(sql) = cause.downcast_ref::<rusqlite::Error>() {
            return matches!(
                sql.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            );
        }
        // `prepare`'s refusal of a database written by a newer bandgate.
        cause
            .to_string()
            .contains("is newer than this bandgate understands")
    })
}

/// Every row of the state tables. `tolerant`: a table that fails part-way keeps the rows
/// read so far (and those read from its other end) instead of failing the scan.
fn scan(conn: &Connection, tolerant: bool) -> anyhow::Result<Scan> {
    let mut out = Scan::default();
    let alerts = rows(conn, "alerts", "id", tolerant)?;
    let devices = rows(conn, "devices", "device_id", tolerant)?;
    let meta = rows(conn, "meta", "id", tolerant)?;
    out.rows = alerts.len() + devices.len() + meta.len();
    for (key, record) in alerts {
        match decode::<AlertRecord>(&record).and_then(|a| a.readable().map(|()| a)) {
            Ok(a) => out.snapshot.alerts.push(a),
            Err(error) => out.bad.push(bad("alerts", key, &record, error)),
        }
    }
    for (key, record) in devices {
        match decode::<DeviceRecord>(&record) {
            Ok(d) => out.snapshot.devices.push(d),
            Err(error) => out.bad.push(bad("devices", key, &record, error)),
        }
    }
    for (key, record) in meta {
        match decode::<MetaRecord>(&record) {
            Ok(m) => out.snapshot.meta = m,
            Err(error) => out.bad.push(bad("meta", key, &record, error)),
        }
    }
    out.snapshot.alerts.sort_by(|a, b| a.id.cmp(&b.id));
    out.snapshot.devices.sort_by_key(|d| d.device_id);
    out.snapshot.alerts.dedup_by(|a, b| a.id == b.id);
    out.snapshot.devices.dedup_by_key(|d| d.device_id);
    let outbox = outbox_rows(conn, tolerant)?;
    out.rows += outbox.len();
    for (key, row) in outbox {
        match row {
            Ok(m) => out.outbox.push(m),
            Err((raw, error)) => out.bad.push(BadRecord {
                table: "outbox",
                key,
                raw,
                error,
            }),
        }
    }
    Ok(out)
}

fn bad(table: &'static str, key: Value, record: &Value, error: String) -> BadRecord {
    BadRecord {
        table,
        key,
        raw: match record {
            Value::Text(t) => t.clone(),
            other => describe(other),
        },
        error,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => format!("integer {i}"),
        Value::Real(r) => format!("real {r}"),
        Value::Text(t) => format!("text {t:?}"),
        Value::Blob(b) => format!("blob of {} bytes: {}", b.len(), hex::encode(b)),
    }
}

fn key_text(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Integer(i) => i.to_string(),
        other => describe(other),
    }
}

fn decode<T: DeserializeOwned>(record: &Value) -> Result<T, String> {
    match record {
        Value::Text(t) => serde_json::from_str(t).map_err(|e| e.to_string()),
        other => Err(format!("not JSON text but {}", describe(other))),
    }
}

/// `(key, record)` of every row of `table`, in key order. Tolerant: on an error part-way,
/// the rows read so far plus those read from the other end.
fn rows(
    conn: &Connection,
    table: &str,
    key: &str,
    tolerant: bool,
) -> anyhow::Result<Vec<(Value, Value)>> {
    let read = |order: &str| -> (Vec<(Value, Value)>, Option<rusqlite::Error>) {
        let mut out = Vec::new();
        let sql = format!("SELECT {key}, record FROM {table} ORDER BY {key} {order}");
        let mut stmt = match conn.prepare(&sql) {
            Ok(s) => s,
            Err(e) => return (out, Some(e)),
        };
        let mut rows = match stmt.query([]) {
            Ok(r) => r,
            Err(e) => return (out, Some(e)),
        };
        loop {
            match rows.next() {
                Ok(Some(row)) => match (row.get::<_, Value>(0), row.get::<_, Value>(1)) {
                    (Ok(k), Ok(r)) => out.push((k, r)),
                    (Err(e), _) | (_, Err(e)) => return (out, Some(e)),
                },
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    };
    let (mut forward, error) = read("ASC");
    let Some(error) = error else {
        return Ok(forward);
    };
    if !tolerant {
        return Err(error).with_context(|| format!("reading the {table} table"));
    }
    tracing::error!(table, error = %error, "reading the damaged table from both ends");
    let (backward, _) = read("DESC");
    for row in backward.into_iter().rev() {
        if !forward.iter().any(|(k, _)| *k == row.0) {
            forward.push(row);
        }
    }
    Ok(forward)
}

type OutboxRow = (Value, Result<OutboxMessage, (String, String)>);

fn outbox_rows(conn: &Connection, tolerant: bool) -> anyhow::Result<Vec<OutboxRow>> {
    let read = |order: &str| -> (Vec<OutboxRow>, Option<rusqlite::Error>) {
        let mut out = Vec::new();
        let sql = format!("SELECT id, topic, payload, qos, retain FROM outbox ORDER BY id {order}");
        let mut stmt = match conn.prepare(&sql) {
            Ok(s) => s,
            Err(e) => return (out, Some(e)),
        };
        let mut rows = match stmt.query([]) {
            Ok(r) => r,
            Err(e) => return (out, Some(e)),
        };
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    let key = row.get::<_, Value>(0).unwrap_or(Value::Null);
                    let msg = (|| -> rusqlite::Result<OutboxMessage> {
                        Ok(OutboxMessage {
                            topic: row.get(1)?,
                            payload: row.get(2)?,
                            qos: row.get(3)?,
                            retain: row.get(4)?,
                        })
                    })();
                    let msg = msg.map_err(|e| {
                        let raw = (1..5)
                            .map(|i| {
                                row.get::<_, Value>(i)
                                    .map(|v| describe(&v))
                                    .unwrap_or_default()
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        (raw, e.to_string())
                    });
                    out.push((key, msg));
                }
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    };
    let (mut forward, error) = read("ASC");
    let Some(error) = error else {
        return Ok(forward);
    };
    if !tolerant {
        return Err(error).context("reading the outbox table");
    }
    let (backward, _) = read("DESC");
    for row in backward.into_iter().rev() {
        if !forward.iter().any(|(k, _)| *k == row.0) {
            forward.push(row);
        }
    }
    Ok(forward)
}

/// Whatever can be read from a damaged database, without writing to it.
fn salvage(path: &Path) -> Scan {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return Scan::default();
    }
    let opened = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    );
    match opened
        .map_err(anyhow::Error::from)
        .and_then(|c| scan(&c, true))
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(db = %path.display(), error = format!("{e:#}"), "nothing could be read from the damaged state database");
            Scan::default()
        }
    }
}

/// Whatever can be read from a database in a directory that cannot be written: read-only
/// first (sees the WAL when its index exists), then as an immutable file (the WAL is not
/// read; checkpoints every 2 s keep it short).
fn salvage_read_only(path: &Path) -> Scan {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return Scan::default();
    }
    // The schema must be readable, or a tolerant scan would take "cannot open" for empty.
    let readable = |c: &Connection| {
        c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
    };
    let plain = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| readable(&c).map(|_| c))
        .map_err(anyhow::Error::from)
        .and_then(|c| scan(&c, true));
    if let Ok(s) = plain {
        return s;
    }
    let uri = format!("file:{}?immutable=1", uri_path(path));
    let immutable = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(anyhow::Error::from)
    .and_then(|c| scan(&c, true));
    match immutable {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(db = %path.display(), error = format!("{e:#}"), "the state database cannot be read");
            Scan::default()
        }
    }
}

fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.to_string_lossy().bytes() {
        match b {
            b'?' | b'#' | b'%' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// `name.broken-<time>` (with `-N` when taken) for the database, its WAL and its index.
fn move_aside(path: &Path) -> anyhow::Result<PathBuf> {
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut to = path.with_file_name(format!("{DB_FILE}.broken-{stamp}"));
    let mut n = 1;
    while to.exists() {
        n += 1;
        to = path.with_file_name(format!("{DB_FILE}.broken-{stamp}-{n}"));
    }
    std::fs::rename(path, &to)
        .with_context(|| format!("moving {} aside to {}", path.display(), to.display()))?;
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let side = PathBuf::from(format!("{}{suffix}", to.display()));
            if let Err(e) = std::fs::rename(&from, &side) {
                tracing::warn!(file = %from.display(), error = %e, "cannot move aside");
                let _ = std::fs::remove_file(&from);
            }
        }
    }
    sync_dir(path);
    Ok(to)
}

/// Writes the bad records to `bandgate.sqlite3.skipped-<time>.jsonl`, then deletes them from
/// the database. Returns the file.
fn set_aside(store: &mut Store, path: &Path, bad: &[BadRecord]) -> anyhow::Result<PathBuf> {
    let file = write_skipped(path, bad)?;
    let tx = super::begin(&mut store.conn).context("removing unreadable records")?;
    for b in bad {
        let (table, key) = match b.table {
            "alerts" => ("alerts", "id"),
            "devices" => ("devices", "device_id"),
            "meta" => ("meta", "id"),
            _ => ("outbox", "id"),
        };
        tx.execute(&format!("DELETE FROM {table} WHERE {key} = ?1"), [&b.key])
            .with_context(|| format!("removing the unreadable {table} record"))?;
    }
    tx.commit().context("removing unreadable records")?;
    Ok(file)
}

fn write_skipped(path: &Path, bad: &[BadRecord]) -> anyhow::Result<PathBuf> {
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
    let file = path.with_file_name(format!("{DB_FILE}.skipped-{stamp}.jsonl"));
    let mut text = String::new();
    for b in bad {
        let line = serde_json::json!({
            "table": b.table,
            "key": key_text(&b.key),
            "record": b.raw,
            "error": b.error,
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .with_context(|| format!("creating {}", file.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", file.display()))?;
    sync_dir(path);
    Ok(file)
}

fn record_losses(bad: &[BadRecord], kept_in: Option<&Path>) -> Vec<Loss> {
    bad.iter()
        .map(|b| Loss::Record {
            table: b.table,
            key: key_text(&b.key),
            error: b.error.clone(),
            kept_in: kept_in.map(Path::to_path_buf),
        })
        .collect()
}

/// Puts what was salvaged into `store` (one commit: records and the outbox, in order) and
/// reports its bad records (copied next to `side`'s database when given).
fn seed(mut store: Store, scan: Scan, side: Option<&Path>, mut losses: Vec<Loss>) -> Recovered {
    let kept_in = match (side, scan.bad.is_empty()) {
        (Some(db), false) => write_skipped(db, &scan.bad)
            .map_err(|e| {
                tracing::error!(
                    error = format!("{e:#}"),
                    "cannot keep the unreadable records"
                )
            })
            .ok(),
        _ => None,
    };
    losses.extend(record_losses(&scan.bad, kept_in.as_deref()));
    let changes = Changes {
        alerts: scan.snapshot.alerts.clone(),
        removed_alerts: Vec::new(),
        devices: scan.snapshot.devices.clone(),
        meta: Some(scan.snapshot.meta),
    };
    if let Err(e) = store.commit(&changes, &scan.outbox) {
        // The records are restored in the engine anyway; the store catches up with the
        // engine's next changes or reports failing.
        tracing::error!(
            error = format!("{e:#}"),
            "cannot write the salvaged records to the new state store"
        );
    }
    Recovered {
        store,
        snapshot: scan.snapshot,
        losses,
    }
}
