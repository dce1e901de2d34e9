//! The durable state in `state_dir`: open alerts, bands' records, gateway counters and the
//! MQTT outbox, in one SQLite database. The only module that knows SQL.
//!
//! Write order (DESIGN.md, "Durability"): `commit` an engine transition together with the
//! messages it produced, in one transaction, *then* publish them; `mark_sent` on PUBACK. After
//! a crash, `pending` is re-sent (at-least-once; readers de-duplicate by alert id and state).
//!
//! Durability levels, chosen per transaction (WAL mode lets one connection mix them, and a
//! later `FULL` commit's fsync also makes every earlier WAL frame durable, so nothing is ever
//! reordered; WAL checksums mean a lost transaction is lost together with everything after it,
//! never half of it):
//! - `commit`: `synchronous=FULL`. An alert transition and its outbox rows survive `kill -9`
//!   and a power cut once `commit` returns.
//! - `mark_sent` and `commit_telemetry`: `synchronous=NORMAL`. They survive `kill -9` (the WAL
//!   is in the kernel's page cache) but the last few may be lost in a power cut. A lost
//!   `mark_sent` only means a message is sent again, which readers tolerate anyway; a lost
//!   heartbeat only moves `last_seen`/battery back a little. This spares the SD card an fsync
//!   per PUBACK and per heartbeat.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use jiff::Timestamp;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::{de::DeserializeOwned, Serialize};

use crate::engine::snapshot::{AlertRecord, Changes, DeviceRecord, MetaRecord, Snapshot};

mod recover;

use recover::in_use_marker;
pub use recover::{summary as loss_summary, Loss, Recovered, IN_USE_FILE};

/// The database file inside `state_dir`.
pub const DB_FILE: &str = "bandgate.sqlite3";

/// How long a statement waits for a lock held by another connection (an operator's `sqlite3`
/// shell, a backup) before failing. Long enough for a backup step, short enough that the
/// systemd watchdog notices a store that is really stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `MIGRATIONS[n]` takes a database from schema version `n` to `n + 1`; the schema version
/// is `PRAGMA user_version` (0 for a new file). Append only: never edit a released entry.
///
/// Alerts, devices and meta are stored as one JSON document per row, keyed by id, rather than
/// as columns: the records belong to the engine and grow fields as it does (serde defaults
/// read old rows), the store never queries inside them, and a column-per-field schema would
/// need a migration for every engine change. JSON rather than a binary encoding so that an
/// operator can read them with `sqlite3` and `json_extract` during an incident.
///
/// `outbox.id` is `AUTOINCREMENT` so an id is never reused, even after the newest row was
/// deleted by `mark_sent`: the MQTT adapter keys in-flight publishes and `pending(after)`
/// cursors by id, and a reused id could mark a new message as sent.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE alerts (
        id TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE devices (
        device_id INTEGER PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
    );
    CREATE TABLE meta (
        id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
        record TEXT NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
        retain INTEGER NOT NULL CHECK (retain IN (0, 1)),
        created_at INTEGER NOT NULL -- Unix milliseconds, for operators reading a stuck outbox
    );",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// One MQTT publish waiting in the outbox until the broker acknowledges it: the outbox keeps
/// exactly what the MQTT adapter rendered.
pub use super::mqtt::Publish as OutboxMessage;

/// The open state database. One per process: the daemon loop owns it.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The WAL file beside it.
    wal: PathBuf,
    /// The connection's current `synchronous` level, so switching costs nothing when unchanged.
    durability: Durability,
    /// Copies the WAL into the database off the daemon loop's thread (none in memory).
    _checkpointer: Option<Checkpointer>,
    /// `false` for the in-memory stand-in `recover` falls back to: nothing survives a restart.
    durable: bool,
    /// The in-use marker (see `recover`) is known to be written.
    marked: bool,
}

/// How often the background thread checkpoints the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);

/// How often the checkpoint thread looks at the WAL's size.
const WAL_WATCH: Duration = Duration::from_millis(100);

/// `journal_size_limit`: once a checkpoint has copied the WAL into the database, the next
/// write starts the WAL over and cuts its file down to this.
pub const WAL_LIMIT: u64 = 4 * 1024 * 1024;

/// A WAL file larger than this is checkpointed at once, not at the next `CHECKPOINT_EVERY`.
const WAL_SOFT: u64 = 8 * 1024 * 1024;

/// A WAL file still larger than `WAL_SOFT` after a passive checkpoint (writes outran it) is
/// checkpointed with `TRUNCATE` by the checkpoint thread, which waits for the writer between
/// two of its transactions and cuts the file to zero. Should the writes outrun even that, the
/// writer itself truncates the WAL after any commit that leaves it above `WAL_HARD`: a storm
/// then slows the writer down instead of growing the file. The WAL so stays under `WAL_HARD`
/// plus one transaction (a few MB), well under 64 MB, whatever storm the gateway is in.
pub const WAL_HARD: u64 = 32 * 1024 * 1024;

/// A thread with its own connection that runs `wal_checkpoint(PASSIVE)` every
/// `CHECKPOINT_EVERY` (sooner when the WAL passes `WAL_SOFT`, then `TRUNCATE` when a passive one
/// left it above `WAL_SOFT`). SQLite's automatic checkpoint would run inside whichever commit
/// crosses 1000 WAL pages — often an alert's, on the daemon loop — and sync the whole
/// database file there; a passive checkpoint here never blocks a writer.
#[derive(Debug)]
struct Checkpointer {
    /// Held while a checkpoint runs, by the thread or by the writer.
    one_at_a_time: std::sync::Arc<std::sync::Mutex<()>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> anyhow::Result<Checkpointer> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening {} for checkpoints", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .context("setting busy_timeout")?;
        limit_wal(&conn)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let one_at_a_time = std::sync::Arc::new(std::sync::Mutex::new(()));
        let one = one_at_a_time.clone();
        let shown = path.display().to_string();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let thread = std::thread::Builder::new()
            .name("bandgate-checkpoint".into())
            .spawn(move || {
                use std::sync::atomic::Ordering;
                let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
                let checkpoint = |mode: &str| {
                    let _one = one.lock().unwrap_or_else(|p| p.into_inner());
                    let result: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        });
                    if let Err(e) = result {
                        tracing::warn!(db = shown, mode, error = %e, "WAL checkpoint failed; will retry");
                    }
                };
                let mut waited = Duration::ZERO;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(WAL_WATCH);
                    waited += WAL_WATCH;
                    if waited < CHECKPOINT_EVERY && wal_size() < WAL_SOFT {
                        continue;
                    }
                    waited = Duration::ZERO;
                    checkpoint("PASSIVE");
                    let size = wal_size();
                    if size > WAL_SOFT {
                        tracing::debug!(
                            db = shown,
                            wal_bytes = size,
                            "WAL still large after a checkpoint: truncating it"
                        );
                        checkpoint("TRUNCATE");
                    }
                }
            })
            .context("starting the checkpoint thread")?;
        Ok(Checkpointer {
            one_at_a_time,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `PRAGMA synchronous` levels used here (values from the SQLite documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    Normal = 1,
    Full = 2,
}

impl Store {
    /// Opens (creating if needed) `state_dir/bandgate.sqlite3` and brings its schema up to
    /// date. Refuses a database written by a newer schema version.
    pub fn open(state_dir: &Path) -> anyhow::Result<Store> {
        // Only directories created here get 0700; an existing one keeps the installer's mode.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .with_context(|| format!("creating state directory {}", state_dir.display()))?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .with_context(|| format!("opening state database {}", path.display()))?;
        let checkpointer = Checkpointer::start(&path)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut store = Store {
            conn,
            wal: PathBuf::from(wal),
            path,
            durability: Durability::Normal,
            _checkpointer: Some(checkpointer),
            durable: true,
            marked: false,
        };
        store
            .prepare()
            .with_context(|| format!("opening state database {}", store.path.display()))?;
        store.marked = in_use_marker(&store.path).exists();
        Ok(store)
    }

    /// A store that keeps everything in memory: the same API and guarantees within the
    /// process, nothing across a restart. What `recover` runs on when `state_dir` cannot be
    /// written; `path` is where the database should have been, for messages.
    pub fn in_memory(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open_in_memory().context("opening an in-memory state store")?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            // Never written: an in-memory database has no WAL file to bound.
            wal: PathBuf::new(),
            durability: Durability::Normal,
            _checkpointer: None,
            durable: false,
            marked: true,
        };
        store
            .prepare()
            .context("preparing the in-memory state store")?;
        Ok(store)
    }

    /// Where the database file is (or would be, for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `false` when this store keeps nothing across a restart (see `in_memory`).
    pub fn is_durable(&self) -> bool {
        self.durable
    }

    fn prepare(&mut self) -> anyhow::Result<()> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .context("setting busy_timeout")?;
        // Checked before anything writes, so a newer database is left exactly as it was.
        let version = self.user_version().context("reading the schema version")?;
        if version > SCHEMA_VERSION {
            bail!(
                "schema version {version} is newer than this bandgate understands \
                 (up to {SCHEMA_VERSION}); it was written by a newer bandgate: run that \
                 version, or move the file aside to start with an empty state"
            );
        }
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .context("switching to WAL journal mode")?;
        if self.durable && !mode.eq_ignore_ascii_case("wal") {
            bail!(
                "the file system refused WAL journal mode (got {mode:?}); \
                 put state_dir on a local disk"
            );
        }
        self.conn
            .pragma_update(None, "synchronous", Durability::Full as i32)
            .context("setting synchronous=FULL")?;
        self.durability = Durability::Full;
        // Checkpoints run on the `Checkpointer` thread, never inside a commit.
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .context("turning off automatic checkpoints")?;
        limit_wal(&self.conn)?;
        while self.user_version().context("reading the schema version")? < SCHEMA_VERSION {
            let tx = begin(&mut self.conn).context("starting a schema migration")?;
            // Read again under the write lock: another process may have migrated meanwhile.
            let from: u32 = tx
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .context("reading the schema version")?;
            let Some(sql) = MIGRATIONS.get(from as usize) else {
                break;
            };
            let to = from + 1;
            tx.execute_batch(sql)
                .with_context(|| format!("migrating to schema version {to}"))?;
            tx.pragma_update(None, "user_version", to)
                .with_context(|| format!("recording schema version {to}"))?;
            tx.commit()
                .with_context(|| format!("committing migration to schema version {to}"))?;
        }
        Ok(())
    }

    fn user_version(&self) -> rusqlite::Result<u32> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
    }

    fn set_sync(&mut self, level: Durability) -> anyhow::Result<()> {
        if self.durability != level {
            self.conn
                .pragma_update(None, "synchronous", level as i32)
                .with_context(|| format!("setting synchronous={level:?}"))?;
            self.durability = level;
        }
        Ok(())
    }

    /// The whole durable state, alerts by id and devices by device id (the engine's order).
    pub fn load(&self) -> anyhow::Result<Snapshot> {
        let ctx = || format!("loading state from {}", self.path.display());
        let alerts = self
            .records::<AlertRecord>("SELECT id, record FROM alerts ORDER BY id")
            .with_context(ctx)?;
        let devices = self
            .records::<DeviceRecord>("SELECT device_id, record FROM devices ORDER BY device_id")
            .with_context(ctx)?;
        let meta = self
            .records::<MetaRecord>("SELECT id, record FROM meta")
            .with_context(ctx)?
            .pop()
            .unwrap_or_default();
        Ok(Snapshot {
            alerts,
            devices,
            meta,
        })
    }

    fn records<T: DeserializeOwned>(&self, sql: &str) -> anyhow::Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let key: rusqlite::types::Value = row.get(0)?;
            let text: String = row.get(1)?;
            let record = serde_json::from_str(&text)
                .with_context(|| format!("reading the record with key {key:?}"))?;
            out.push(record);
        }
        Ok(out)
    }

    /// Writes `changes` and queues `outbox` in one durable transaction (`synchronous=FULL`);
    /// returns the new outbox ids, in the order of `outbox`. Removed alerts are deleted before
    /// changed ones are written, so an id removed and raised again in the same batch stays.
    /// An empty commit does no IO.
    pub fn commit(
        &mut self,
        changes: &Changes,
        outbox: &[OutboxMessage],
    ) -> anyhow::Result<Vec<i64>> {
        if changes.is_empty() && outbox.is_empty() {
            return Ok(Vec::new());
        }
        self.set_sync(Durability::Full)?;
        let ctx = || {
            format!(
                "committing {} alert(s), {} removal(s), {} device(s){} and {} outbox message(s) to {}",
                changes.alerts.len(),
                changes.removed_alerts.len(),
                changes.devices.len(),
                if changes.meta.is_some() { ", meta" } else { "" },
                outbox.len(),
                self.path.display()
            )
        };
        let tx = begin(&mut self.conn).with_context(ctx)?;
        let ids = write_changes(&tx, changes, outbox).with_context(ctx)?;
        tx.commit().with_context(ctx)?;
        self.mark_in_use();
        self.bound_wal();
        Ok(ids)
    }

    /// Writes band records only, at `synchronous=NORMAL` (see the module doc): for flushing
    /// heartbeat telemetry in batches. Records that go with an alert transition belong in
    /// `commit`. An empty call does no IO.
    pub fn commit_telemetry(&mut self, devices: &[DeviceRecord]) -> anyhow::Result<()> {
        if devices.is_empty() {
            return Ok(());
        }
        self.set_sync(Durability::Normal)?;
        let ctx = || {
            format!(
                "writing telemetry of {} device(s) to {}",
                devices.len(),
                self.path.display()
            )
        };
        let tx = begin(&mut self.conn).with_context(ctx)?;
        upsert_devices(&tx, devices).with_context(ctx)?;
        tx.commit().with_context(ctx)?;
        self.mark_in_use();
        self.bound_wal();
        Ok(())
    }

    /// Up to `limit` outbox messages with an id greater than `after` (all when `None`), in id
    /// order: the order they were committed in.
    pub fn pending(
        &self,
        after: Option<i64>,
        limit: usize,
    ) -> anyhow::Result<Vec<(i64, OutboxMessage)>> {
        let ctx = || format!("reading the outbox in {}", self.path.display());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, topic, payload, qos, retain FROM outbox
                 WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .with_context(ctx)?;
        let rows = stmt
            .query_map(params![after.unwrap_or(i64::MIN), limit], |row| {
                Ok((
                    row.get(0)?,
                    OutboxMessage {
                        topic: row.get(1)?,
                        payload: row.get(2)?,
                        qos: row.get(3)?,
                        retain: row.get(4)?,
                    },
                ))
            })
            .with_context(ctx)?;
        rows.collect::<rusqlite::Result<_>>().with_context(ctx)
    }

    /// Deletes acknowledged messages from the outbox, at `synchronous=NORMAL` (see the module
    /// doc). Unknown ids are ignored: a PUBACK may arrive for a message already marked.
    pub fn mark_sent(&mut self, ids: &[i64]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.set_sync(Durability::Normal)?;
        let ctx = || {
            format!(
                "marking {} outbox message(s) sent in {}",
                ids.len(),
                self.path.display()
            )
        };
        let tx = begin(&mut self.conn).with_context(ctx)?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                .with_context(ctx)?;
            for id in ids {
                stmt.execute([id]).with_context(ctx)?;
            }
        }
        tx.commit().with_context(ctx)?;
        self.bound_wal();
        Ok(())
    }

    /// After a commit: when writes outran the checkpoint thread and the WAL passed
    /// `WAL_HARD`, copy it into the database and cut it to zero now, on the writer (the
    /// committed data is safe already; a failure here is only logged).
    fn bound_wal(&mut self) {
        let size = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if size <= WAL_HARD {
            return;
        }
        tracing::warn!(
            db = %self.path.display(),
            wal_bytes = size,
            "writes outran the WAL checkpoints: truncating the WAL now (a storm of writes)"
        );
        // SQLite answers a checkpoint that meets another one "busy" at once: wait for the
        // thread's to end instead.
        let Some(checkpointer) = &self._checkpointer else {
            return;
        };
        let _one = checkpointer
            .one_at_a_time
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let done: rusqlite::Result<(i64, i64, i64)> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                });
        if let Err(e) = done {
            tracing::warn!(db = %self.path.display(), error = %e, "cannot truncate the WAL; trying after the next commit");
        }
    }

    /// How many messages wait for a PUBACK (the gateway status's `outbox_len`).
    pub fn outbox_len(&self) -> anyhow::Result<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))
            .with_context(|| format!("counting the outbox in {}", self.path.display()))
    }
}

/// Cuts the WAL file back to `WAL_LIMIT` whenever it starts over (a per-connection setting).
fn limit_wal(conn: &Connection) -> anyhow::Result<()> {
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT as i64)
        .context("setting journal_size_limit")
}

/// `IMMEDIATE` takes the write lock up front, so a busy database fails (after `BUSY_TIMEOUT`)
/// at `BEGIN` instead of half-way through a transaction.
fn begin(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn write_changes(
    tx: &Transaction<'_>,
    changes: &Changes,
    outbox: &[OutboxMessage],
) -> anyhow::Result<Vec<i64>> {
    {
        let mut delete = tx.prepare_cached("DELETE FROM alerts WHERE id = ?1")?;
        for id in &changes.removed_alerts {
            delete.execute([id])?;
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO alerts (id, record) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
        )?;
        for alert in &changes.alerts {
            upsert.execute(params![alert.id, json(alert)?])?;
        }
    }
    upsert_devices(tx, &changes.devices)?;
    if let Some(meta) = &changes.meta {
        tx.prepare_cached(
            "INSERT INTO meta (id, record) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record",
        )?
        .execute([json(meta)?])?;
    }
    let mut ids = Vec::with_capacity(outbox.len());
    if !outbox.is_empty() {
        let created_at = Timestamp::now().as_millisecond();
        let mut insert = tx.prepare_cached(
            "INSERT INTO outbox (topic, payload, qos, retain, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )?;
        for m in outbox {
            let id = insert
                .query_row(
                    params![m.topic, m.payload, m.qos, m.retain, created_at],
                    |row| row.get(0),
                )
                .with_context(|| format!("queueing a message to {}", m.topic))?;
            ids.push(id);
        }
    }
    Ok(ids)
}

fn upsert_devices(tx: &Transaction<'_>, devices: &[DeviceRecord]) -> anyhow::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO devices (device_id, record) VALUES (?1, ?2)
         ON CONFLICT (device_id) DO UPDATE SET record = excluded.record",
    )?;
    for d in devices {
        upsert.execute(params![d.device_id, json(d)?])?;
    }
    Ok(())
}

fn json<T: Serialize>(record: &T) -> anyhow::Result<String> {
    serde_json::to_string(record).context("encoding a record as JSON")
}
