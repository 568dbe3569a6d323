//! SQLite key store (embedded default), through sqlx.
//!
//! - WAL journal with `synchronous = FULL`: a committed erasure survives a
//!   power cut.
//! - `secure_delete = ON` on every connection, and after every erasure a
//!   `wal_checkpoint(TRUNCATE)` before the call returns: a destroyed key
//!   leaves no copy in a free page of `keys.db` nor in `keys.db-wal`. A
//!   database whose free pages predate this (freelist not empty at open) is
//!   vacuumed once at open.
//! - Every write runs in a `BEGIN IMMEDIATE` transaction on a connection of
//!   its own ([`WriteTx`]); a connection that saw any error inside a
//!   transaction (a failed COMMIT on a full disk, a read-only remount) is
//!   closed, never returned to the pool, so no later commit can run on a
//!   connection whose transaction state is out of step.
//! - A reserve file (`keys.db.reserve`, [`RESERVE_BYTES`]) is given up when
//!   an erasure finds the disk full, so that erasure works on a full disk:
//!   uploads filling the disk can never block it.
//! - The file is created with mode 0600 (SQLite gives `-wal` and `-shm` the
//!   same mode). Its identity (device, inode) is remembered at open; a file
//!   deleted or replaced under the running process is noticed before every
//!   read and write and by [`KeyStore::check_health`].

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::store::{
    audit_hash, AuditEntry, AuditRecord, DestroyKeks, HoldRecord, InsertOutcome, JobCheckpoint,
    JobRecord, JobState, KekInfo, KekRecord, KekRewrap, KeyStore, LeasedProgress, NewJob,
    PlaceHold, RequestRecord, StoreError, Tombstone, UserKeyRecord, UserKeyRewrap, UserKeyState,
    JOB_KIND_ERASURE_GC,
};
use crate::crypto::Pseudonym;
use crate::keys::store::DECOMMISSIONED_META;
use crate::keys::unix_ms;

/// User keys re-wrapped by one UPDATE (six parameters each, well below
/// SQLite's 32,766).
const REWRAP_CHUNK: usize = 1024;

pub use super::store::RESERVE_BYTES;

/// The schema as it was before schema migrations: migration 1, and what a
/// test writes to make a store of that time.
#[cfg(test)]
const SCHEMA: &str = include_str!("../../migrations/sqlite/0001_initial.sql");

/// The schema migrations of this build. Migration 1 is the schema of the
/// stores made before migrations (every statement `IF NOT EXISTS`), so such
/// a store is adopted unchanged; the columns added to its tables since are
/// added by [`migrate_jobs`] and `chain_audit`, as before.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Every column of an audit record, named (the table gained columns after
/// it was first made).
const AUDIT_COLUMNS: &str =
    "id, at_ms, principal, action, pseudonym, outcome, detail, prev_hash, hash";

/// The audit table's hash-chain columns, added to stores made before them;
/// their records are chained at the first open.
const AUDIT_CHAIN_COLUMNS: &[&str] = &[
    "ALTER TABLE audit ADD COLUMN principal TEXT NOT NULL DEFAULT 'gateway'",
    "ALTER TABLE audit ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ok'",
    "ALTER TABLE audit ADD COLUMN prev_hash TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''",
];

/// The SQLite key store.
#[derive(Debug, Clone)]
pub struct SqliteKeyStore {
    pool: SqlitePool,
    path: PathBuf,
    reserve: PathBuf,
    /// Device and inode of the file opened.
    identity: (u64, u64),
}

/// Classifies a SQLite failure by its primary result code.
fn backend(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map_or(0, |c| c & 0xff);
            match code {
                // SQLITE_FULL
                13 => StoreError::Full(db.message().to_string()),
                // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR,
                // SQLITE_CANTOPEN, SQLITE_PROTOCOL
                5 | 6 | 8 | 10 | 14 | 15 => StoreError::Unavailable(db.message().to_string()),
                _ => StoreError::Backend(e.to_string()),
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// SQLite's message for SQLITE_BUSY.
const SQLITE_BUSY_MESSAGE: &str = "database is locked";

fn now_ms() -> i64 {
    crate::keys::unix_ms()
}

fn pseudonym_of(s: &str) -> Result<Pseudonym, StoreError> {
    Pseudonym::from_hex(s).map_err(|_| StoreError::Backend("corrupt pseudonym in key store".into()))
}

fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Backend("integer out of range in key store".into()))
}

/// The columns of a [`JobRecord`].
const JOB_SELECT: &str = "SELECT id, kind, pseudonym, params, state, done, total, cursor, \
     last_error, owner, lease_until_ms, created_at_ms, updated_at_ms FROM jobs";

/// Columns the jobs table gained with leases, resumable cursors and
/// progress totals; added to a table from before them. Queries name the
/// columns they read (never `*`), so a statement prepared on either side
/// of the change reads the same columns.
const JOB_COLUMNS: &[(&str, &str)] = &[
    ("params", "TEXT NOT NULL DEFAULT ''"),
    ("total", "INTEGER NOT NULL DEFAULT 0"),
    ("cursor", "TEXT NOT NULL DEFAULT ''"),
    ("owner", "TEXT"),
    ("lease_until_ms", "INTEGER NOT NULL DEFAULT 0"),
];

async fn migrate_jobs(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(backend)?;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    let result = async {
        let have: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('jobs')")
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        for (name, decl) in JOB_COLUMNS {
            if !have.iter().any(|h| h == name) {
                sqlx::query(&format!("ALTER TABLE jobs ADD COLUMN {name} {decl}"))
                    .execute(&mut *conn)
                    .await
                    .map_err(backend)?;
            }
        }
        sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(backend)
    }
    .await;
    if result.is_err() {
        conn.close_on_drop();
    }
    result.map(|_| ())
}

/// Applies this build's schema migrations; refuses a store migrated by a
/// newer build. Processes opening a new store together race to apply
/// migration 1 (SQLite has no lock for sqlx's migrator): the loser's
/// transaction fails, busy or on the migrations table's key, and it looks
/// again.
async fn migrate(pool: &SqlitePool, path: &Path) -> Result<(), StoreError> {
    use sqlx::migrate::MigrateError;
    let place = path.display();
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let raced = match &error {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
                e.as_database_error()
                    .is_some_and(|db| db.is_unique_violation())
                    || matches!(backend_ref(e), Some(StoreError::Unavailable(_)))
            }
            _ => false,
        };
        if raced && attempts < 40 {
            tokio::time::sleep(Duration::from_millis(u64::from(attempts.min(10)) * 25)).await;
            continue;
        }
        return Err(match error {
            MigrateError::VersionMissing(v) => StoreError::Backend(format!(
                "the key store {place} has schema migration {v}, which this build does not \
                 know (it knows up to {latest}): it was migrated by a newer sealgate; run that \
                 version or a newer one"
            )),
            MigrateError::VersionMismatch(v) => StoreError::Backend(format!(
                "the key store {place} has a schema migration {v} that differs from this \
                 build's: restore keys.db from this deployment's backup"
            )),
            MigrateError::Dirty(v) => StoreError::Backend(format!(
                "the key store {place} has schema migration {v} partly applied; restore \
                 keys.db from this deployment's backup"
            )),
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => backend(e),
            other => StoreError::Backend(format!("cannot migrate the key store {place}: {other}")),
        });
    }
}

/// How [`backend`] would classify `e`, for database errors.
fn backend_ref(e: &sqlx::Error) -> Option<StoreError> {
    let db = e.as_database_error()?;
    let code = db
        .code()
        .and_then(|c| c.parse::<i32>().ok())
        .map_or(0, |c| c & 0xff);
    matches!(code, 5 | 6).then(|| StoreError::Unavailable(db.message().to_string()))
}

/// A write transaction (`BEGIN IMMEDIATE`) on a pooled connection. The
/// connection goes back to the pool only after a successful COMMIT: dropped
/// any other way (an error returned early, a failed COMMIT, a cancelled
/// call), it is closed, and the transaction with it.
struct WriteTx {
    conn: PoolConnection<Sqlite>,
    committed: bool,
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

impl WriteTx {
    async fn begin(pool: &SqlitePool) -> Result<Self, StoreError> {
        let mut tx = Self {
            conn: pool.acquire().await.map_err(backend)?,
            committed: false,
        };
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *tx.conn)
            .await
            .map_err(backend)?;
        Ok(tx)
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT")
            .execute(&mut *self.conn)
            .await
            .map_err(backend)?;
        // Committed: the connection is in a known state and may be reused.
        self.committed = true;
        Ok(())
    }
}

impl SqliteKeyStore {
    /// Opens (creating if needed, mode 0600) the database at `path` and
    /// applies the schema.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        // Processes starting together on a new data dir race to create the
        // file, turn on WAL and apply the schema. SQLite reports some of
        // those races as SQLITE_BUSY at once, without waiting out the busy
        // timeout (a journal-mode change, the WAL index being built): every
        // step of opening is idempotent, so open again.
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match Self::open_once(path).await {
                Err(StoreError::Unavailable(m)) if m == SQLITE_BUSY_MESSAGE && attempts < 40 => {
                    tokio::time::sleep(Duration::from_millis(u64::from(attempts.min(10)) * 25))
                        .await;
                }
                other => return other,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<Self, StoreError> {
        let io = |what: &str, e: std::io::Error| {
            StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
        };
        // Create the file ourselves so that it is private from its first
        // byte; SQLite then gives its -wal and -shm files the same mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("cannot create", e))?;
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(backend)?;
        migrate(&pool, path).await?;
        migrate_jobs(&pool).await?;
        let meta = std::fs::metadata(path).map_err(|e| io("cannot stat", e))?;
        let store = Self {
            pool,
            path: path.to_owned(),
            reserve: path.with_extension("db.reserve"),
            identity: (meta.dev(), meta.ino()),
        };
        store.chain_audit().await?;
        store.scrub_free_pages().await?;
        store.ensure_reserve().await;
        Ok(store)
    }

    /// Adds the hash-chain columns to an older store's audit table and
    /// chains the records written before them.
    async fn chain_audit(&self) -> Result<(), StoreError> {
        let has_chain = |columns: &[String]| columns.iter().any(|c| c == "hash");
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('audit')")
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        if has_chain(&columns) {
            return Ok(());
        }
        // Processes opening one store at once: the first to take the write
        // lock adds the columns, the others find them there.
        let mut tx = self.begin().await?;
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('audit')")
                .fetch_all(tx.conn())
                .await
                .map_err(backend)?;
        if has_chain(&columns) {
            return tx.commit().await;
        }
        for alter in AUDIT_CHAIN_COLUMNS {
            sqlx::query(alter)
                .execute(tx.conn())
                .await
                .map_err(backend)?;
        }
        let rows = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id"))
            .fetch_all(tx.conn())
            .await
            .map_err(backend)?;
        // Renumbered from 1 without gaps: ids are part of the chain. Moved
        // out of the way first so that no two rows share an id meanwhile.
        sqlx::query("UPDATE audit SET id = -id")
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        let mut prev = [0u8; 32];
        for (n, row) in rows.iter().enumerate() {
            let old_id: i64 = row.get("id");
            let id = n as u64 + 1;
            let entry = Self::audit_entry(row)?;
            let hash = audit_hash(id, &entry, &prev);
            sqlx::query("UPDATE audit SET id = ?, prev_hash = ?, hash = ? WHERE id = ?")
                .bind(id as i64)
                .bind(hex::encode(prev))
                .bind(hex::encode(hash))
                .bind(-old_id)
                .execute(tx.conn())
                .await
                .map_err(backend)?;
            prev = hash;
        }
        if !rows.is_empty() {
            Self::set_audit_head(tx.conn(), rows.len() as u64, &prev).await?;
        }
        tx.commit().await
    }

    fn audit_entry(row: &sqlx::sqlite::SqliteRow) -> Result<AuditEntry, StoreError> {
        let pseudonym: Option<String> = row.get("pseudonym");
        Ok(AuditEntry {
            at_ms: row.get("at_ms"),
            principal: row.get("principal"),
            action: row.get("action"),
            pseudonym: pseudonym.as_deref().map(pseudonym_of).transpose()?,
            outcome: row.get("outcome"),
            detail: row.get("detail"),
        })
    }

    /// A stored record. An unreadable hash reads as zeros: verification
    /// then names the record; it is not an error of the store.
    fn audit_record(row: &sqlx::sqlite::SqliteRow) -> Result<AuditRecord, StoreError> {
        let hash_of = |column: &str| -> [u8; 32] {
            let text: String = row.get(column);
            hex::decode(text)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .unwrap_or([0u8; 32])
        };
        let id: i64 = row.get("id");
        Ok(AuditRecord {
            id: u64::try_from(id).map_err(|_| StoreError::Backend("negative audit id".into()))?,
            entry: Self::audit_entry(row)?,
            prev_hash: hash_of("prev_hash"),
            hash: hash_of("hash"),
        })
    }

    async fn set_audit_head(
        conn: &mut SqliteConnection,
        id: u64,
        hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('audit_head', ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(format!("{id} {}", hex::encode(hash)))
        .execute(conn)
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// Appends `entry` to the chain inside the caller's write transaction:
    /// if the record cannot be written, nothing the transaction did is.
    async fn append_audit(
        conn: &mut SqliteConnection,
        entry: &AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        let last = sqlx::query("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        let (id, prev_hash) = match last {
            None => (1, [0u8; 32]),
            Some(row) => {
                let id: i64 = row.get("id");
                // A row without a hash (written around the chain) is
                // corruption, reported, never a panic.
                let hash: Option<String> = row.try_get("hash").map_err(backend)?;
                let hash = hash
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| StoreError::Backend("corrupt audit hash".into()))?;
                let id = u64::try_from(id)
                    .map_err(|_| StoreError::Backend("negative audit id".into()))?;
                (id + 1, hash)
            }
        };
        let hash = audit_hash(id, entry, &prev_hash);
        sqlx::query(
            "INSERT INTO audit (id, at_ms, principal, action, pseudonym, outcome, detail, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id as i64)
        .bind(entry.at_ms)
        .bind(&entry.principal)
        .bind(&entry.action)
        .bind(entry.pseudonym.map(|p| p.to_string()))
        .bind(&entry.outcome)
        .bind(&entry.detail)
        .bind(hex::encode(prev_hash))
        .bind(hex::encode(hash))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        Self::set_audit_head(conn, id, &hash).await?;
        Ok(AuditRecord {
            id,
            entry: entry.clone(),
            prev_hash,
            hash,
        })
    }

    /// Vacuums a database with free pages, which may hold key bytes deleted
    /// before `secure_delete` was on, then truncates the WAL.
    async fn scrub_free_pages(&self) -> Result<(), StoreError> {
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        if free > 0 {
            tracing::info!(
                pages = free,
                "key store has free pages; vacuuming them away"
            );
            sqlx::query("VACUUM")
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Moves every WAL frame into the database and truncates the WAL to
    /// zero bytes, so no older page version survives in it.
    async fn checkpoint(&self) -> Result<(), StoreError> {
        for _ in 0..50 {
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            let busy: i64 = row.get(0);
            if busy == 0 {
                return Ok(());
            }
            // Readers held old frames past the busy timeout: try again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(StoreError::Unavailable(
            "the key store's WAL could not be truncated: readers hold it".into(),
        ))
    }

    /// Creates the reserve file if it is missing; on failure (a full disk)
    /// the next erasure on a full disk has no reserve to give up. The 8 MiB
    /// write and fsync run off the async workers.
    async fn ensure_reserve(&self) {
        if self.reserve.exists() {
            return;
        }
        let reserve = self.reserve.clone();
        let tmp = reserve.with_extension("reserve.tmp");
        let result = tokio::task::spawn_blocking(move || {
            let written = (|| {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                std::io::Write::write_all(&mut f, &vec![0u8; RESERVE_BYTES])?;
                f.sync_all()?;
                std::fs::rename(&tmp, &reserve)
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            written
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %self.reserve.display(), "cannot create the erasure reserve");
        }
    }

    /// Gives up the reserve file so that an erasure can use its space.
    fn release_reserve(&self) -> bool {
        match std::fs::remove_file(&self.reserve) {
            Ok(()) => {
                tracing::warn!("key store disk full: erasure reserve released");
                true
            }
            Err(_) => false,
        }
    }

    /// Fails unless the file at `path` is still the one opened.
    fn check_file(&self) -> Result<(), StoreError> {
        let lost = |what: &str| {
            StoreError::Lost(format!(
                "{} was {what} while the gateway ran; restore it and restart",
                self.path.display()
            ))
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => Ok(()),
            Ok(_) => Err(lost("replaced")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(lost("deleted")),
            Err(e) => Err(StoreError::Unavailable(format!(
                "cannot stat {}: {e}",
                self.path.display()
            ))),
        }
    }

    /// The pool, once the file is checked to be the one opened: a new
    /// connection opened by path must never reach a replacement file.
    fn pool(&self) -> Result<&SqlitePool, StoreError> {
        self.check_file()?;
        Ok(&self.pool)
    }

    async fn begin(&self) -> Result<WriteTx, StoreError> {
        self.check_file()?;
        WriteTx::begin(&self.pool).await
    }

    async fn erase_once(
        &self,
        p: &Pseudonym,
        now: i64,
        gc_job_id: &str,
        principal: &str,
    ) -> Result<Tombstone, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(t) = Self::tombstone_in(tx.conn(), p).await? {
            tx.commit().await?;
            return Ok(t);
        }
        // The write lock is held from BEGIN IMMEDIATE: no hold can be
        // placed between this check and the erasure.
        let cases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM legal_holds WHERE pseudonym = ?")
            .bind(p.to_string())
            .fetch_one(tx.conn())
            .await
            .map_err(backend)?;
        if cases > 0 {
            tx.commit().await?;
            return Err(StoreError::LegalHold {
                cases: usize::try_from(cases).unwrap_or(usize::MAX),
            });
        }
        let versions: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM user_keys WHERE pseudonym = ? ORDER BY version",
        )
        .bind(p.to_string())
        .fetch_all(tx.conn())
        .await
        .map_err(backend)?;
        let destroyed_versions = versions
            .into_iter()
            .map(u32_of)
            .collect::<Result<Vec<_>, _>>()?;
        let list = destroyed_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        for table in ["user_keys", "requests"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE pseudonym = ?"))
                .bind(p.to_string())
                .execute(tx.conn())
                .await
                .map_err(backend)?;
        }
        sqlx::query(
            "INSERT INTO tombstones (pseudonym, erased_at_ms, destroyed_versions, gc_job_id) VALUES (?, ?, ?, ?)",
        )
        .bind(p.to_string())
        .bind(now)
        .bind(&list)
        .bind(gc_job_id)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, pseudonym, state, done, last_error, created_at_ms, updated_at_ms)
             VALUES (?, ?, ?, 'pending', 0, '', ?, ?)",
        )
        .bind(gc_job_id)
        .bind(JOB_KIND_ERASURE_GC)
        .bind(p.to_string())
        .bind(now)
        .bind(now)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        Self::append_audit(
            tx.conn(),
            &AuditEntry {
                at_ms: now,
                principal: principal.to_string(),
                action: "erase_user".into(),
                pseudonym: Some(*p),
                outcome: "ok".into(),
                detail: format!("destroyed user key versions [{list}]; gc job {gc_job_id}"),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Tombstone {
            pseudonym: *p,
            erased_at_ms: now,
            destroyed_versions,
            gc_job_id: gc_job_id.to_string(),
        })
    }

    fn hold_row(row: &sqlx::sqlite::SqliteRow) -> Result<HoldRecord, StoreError> {
        Ok(HoldRecord {
            pseudonym: pseudonym_of(row.get("pseudonym"))?,
            case_ref: row.get("case_ref"),
            placed_at_ms: row.get("placed_at_ms"),
            placed_by: row.get("placed_by"),
        })
    }

    async fn tombstone_in(
        conn: &mut SqliteConnection,
        p: &Pseudonym,
    ) -> Result<Option<Tombstone>, StoreError> {
        let row = sqlx::query("SELECT * FROM tombstones WHERE pseudonym = ?")
            .bind(p.to_string())
            .fetch_optional(conn)
            .await
            .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let destroyed: String = row.get("destroyed_versions");
        let destroyed_versions = destroyed
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u32>()
                    .map_err(|_| StoreError::Backend("corrupt tombstone".into()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Tombstone {
            pseudonym: *p,
            erased_at_ms: row.get("erased_at_ms"),
            destroyed_versions,
            gc_job_id: row.get("gc_job_id"),
        }))
    }

    /// Why a user-key row may not be written, checked inside the writer's
    /// transaction (under the write lock): the user is erased, or a KEK
    /// rotation began after the caller chose its KEK version (which would
    /// otherwise miss this row and destroy the only KEK that opens it).
    async fn refuse_user_key(
        tx: &mut WriteTx,
        r: &UserKeyRecord,
    ) -> Result<Option<InsertOutcome>, StoreError> {
        let erased = sqlx::query("SELECT 1 FROM tombstones WHERE pseudonym = ?")
            .bind(r.pseudonym.to_string())
            .fetch_optional(tx.conn())
            .await
            .map_err(backend)?
            .is_some();
        if erased {
            return Ok(Some(InsertOutcome::Erased));
        }
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM keks WHERE shard = ?")
                .bind(i64::from(r.shard))
                .fetch_one(tx.conn())
                .await
                .map_err(backend)?;
        Ok(newest
            .is_some_and(|v| v > i64::from(r.kek_version))
            .then_some(InsertOutcome::StaleKek))
    }

    fn user_key_row(
        p: Pseudonym,
        row: &sqlx::sqlite::SqliteRow,
    ) -> Result<UserKeyRecord, StoreError> {
        Ok(UserKeyRecord {
            pseudonym: p,
            version: u32_of(row.get("version"))?,
            shard: u32_of(row.get("shard"))?,
            kek_version: u32_of(row.get("kek_version"))?,
            wrapped: row.get("wrapped"),
            state: UserKeyState::parse(row.get::<&str, _>("state"))?,
            created_at_ms: row.get("created_at_ms"),
        })
    }

    fn kek_row(row: &sqlx::sqlite::SqliteRow) -> Result<KekRecord, StoreError> {
        Ok(KekRecord {
            shard: u32_of(row.get("shard"))?,
            version: u32_of(row.get("version"))?,
            master_version: u32_of(row.get("master_version"))?,
            wrapped: row.get("wrapped"),
            created_at_ms: row.get("created_at_ms"),
        })
    }

    fn request_row(
        p: &Pseudonym,
        row: &sqlx::sqlite::SqliteRow,
    ) -> Result<RequestRecord, StoreError> {
        let request: Vec<u8> = row.get("request");
        Ok(RequestRecord {
            pseudonym: *p,
            request: request
                .try_into()
                .map_err(|_| StoreError::Backend("malformed request row".into()))?,
            space: row.get("space"),
            requested_id: row.get("requested_id"),
            object_id: row.get("object_id"),
            size: u64::try_from(row.get::<i64, _>("size"))
                .map_err(|_| StoreError::Backend("malformed request row".into()))?,
            etag: row.get("etag"),
            created_ms: row.get("created_ms"),
            at_ms: row.get("at_ms"),
        })
    }

    fn job_row(row: &sqlx::sqlite::SqliteRow) -> Result<JobRecord, StoreError> {
        let pseudonym: Option<String> = row.get("pseudonym");
        Ok(JobRecord {
            id: row.get("id"),
            kind: row.get("kind"),
            pseudonym: pseudonym.as_deref().map(pseudonym_of).transpose()?,
            params: row.get("params"),
            state: JobState::parse(row.get::<&str, _>("state"))?,
            done: u64::try_from(row.get::<i64, _>("done")).unwrap_or(0),
            total: u64::try_from(row.get::<i64, _>("total")).unwrap_or(0),
            cursor: row.get("cursor"),
            last_error: row.get("last_error"),
            owner: row.get("owner"),
            lease_until_ms: row.get("lease_until_ms"),
            created_at_ms: row.get("created_at_ms"),
            updated_at_ms: row.get("updated_at_ms"),
        })
    }

    async fn job_in(
        conn: &mut SqliteConnection,
        id: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(&format!("{JOB_SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::job_row).transpose()
    }

    /// Records a leased job's progress inside `tx` (whose caller checked
    /// the lease).
    async fn write_progress(tx: &mut WriteTx, p: &LeasedProgress<'_>) -> Result<(), StoreError> {
        let c = &p.checkpoint;
        sqlx::query(
            "UPDATE jobs SET done = ?, total = ?, cursor = ?, last_error = ?, lease_until_ms = ?,
                             updated_at_ms = ?
             WHERE id = ? AND owner = ?",
        )
        .bind(i64::try_from(c.done).unwrap_or(i64::MAX))
        .bind(i64::try_from(c.total).unwrap_or(i64::MAX))
        .bind(&c.cursor)
        .bind(&c.last_error)
        .bind(p.until_ms)
        .bind(now_ms())
        .bind(p.id)
        .bind(p.owner)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// Inserts a KEK version inside `tx` unless it exists; whether it did
    /// not.
    async fn insert_kek_in(tx: &mut WriteTx, r: &KekRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO keks (shard, version, master_version, wrapped, created_at_ms) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(i64::from(r.shard))
        .bind(i64::from(r.version))
        .bind(i64::from(r.master_version))
        .bind(&r.wrapped)
        .bind(r.created_at_ms)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `owner` holds the lease of unfinished job `id`, inside `tx`.
    async fn holds_lease(tx: &mut WriteTx, id: &str, owner: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 FROM jobs WHERE id = ? AND owner = ? AND state IN ('pending', 'running')",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(tx.conn())
        .await
        .map_err(backend)?
        .is_some())
    }
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn request(
        &self,
        p: &Pseudonym,
        request: &[u8; 32],
        since_ms: i64,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM requests WHERE pseudonym = ? AND request = ? AND at_ms >= ?",
        )
        .bind(p.to_string())
        .bind(&request[..])
        .bind(since_ms)
        .fetch_optional(self.pool()?)
        .await
        .map_err(backend)?;
        row.as_ref().map(|r| Self::request_row(p, r)).transpose()
    }

    async fn remember_request(
        &self,
        r: &RequestRecord,
        since_ms: i64,
    ) -> Result<RequestRecord, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM requests WHERE at_ms < ?")
            .bind(since_ms)
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO requests (pseudonym, request, space, requested_id, object_id, size, etag, created_ms, at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(r.pseudonym.to_string())
        .bind(&r.request[..])
        .bind(&r.space)
        .bind(&r.requested_id)
        .bind(&r.object_id)
        .bind(i64::try_from(r.size).map_err(|_| StoreError::Backend("size out of range".into()))?)
        .bind(&r.etag)
        .bind(r.created_ms)
        .bind(r.at_ms)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        let row = sqlx::query("SELECT * FROM requests WHERE pseudonym = ? AND request = ?")
            .bind(r.pseudonym.to_string())
            .bind(&r.request[..])
            .fetch_one(tx.conn())
            .await
            .map_err(backend)?;
        let held = Self::request_row(&r.pseudonym, &row)?;
        tx.commit().await?;
        Ok(held)
    }

    async fn latest_kek(&self, shard: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keks WHERE shard = ? ORDER BY version DESC LIMIT 1")
            .bind(i64::from(shard))
            .fetch_optional(self.pool()?)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::kek_row).transpose()
    }

    async fn kek(&self, shard: u32, version: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keks WHERE shard = ? AND version = ?")
            .bind(i64::from(shard))
            .bind(i64::from(version))
            .fetch_optional(self.pool()?)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::kek_row).transpose()
    }

    async fn insert_kek(&self, r: &KekRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let inserted = Self::insert_kek_in(&mut tx, r).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn user_keys(&self, p: &Pseudonym) -> Result<Vec<UserKeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM user_keys WHERE pseudonym = ? ORDER BY version")
            .bind(p.to_string())
            .fetch_all(self.pool()?)
            .await
            .map_err(backend)?;
        rows.iter().map(|row| Self::user_key_row(*p, row)).collect()
    }

    async fn insert_user_key(&self, r: &UserKeyRecord) -> Result<InsertOutcome, StoreError> {
        // The write lock is held from BEGIN IMMEDIATE: the tombstone check
        // and the insert are one atomic step against any erasure.
        let mut tx = self.begin().await?;
        if let Some(refused) = Self::refuse_user_key(&mut tx, r).await? {
            tx.commit().await?;
            return Ok(refused);
        }
        let inserted = sqlx::query(
            "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state, created_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(r.pseudonym.to_string())
        .bind(i64::from(r.version))
        .bind(i64::from(r.shard))
        .bind(i64::from(r.kek_version))
        .bind(&r.wrapped)
        .bind(r.state.as_str())
        .bind(r.created_at_ms)
        .execute(tx.conn())
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if inserted {
            Self::append_audit(
                tx.conn(),
                &AuditEntry {
                    at_ms: r.created_at_ms,
                    principal: "gateway".into(),
                    action: "create_user_key".into(),
                    pseudonym: Some(r.pseudonym),
                    outcome: "ok".into(),
                    detail: format!(
                        "version {} under shard {} KEK version {}",
                        r.version, r.shard, r.kek_version
                    ),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(if inserted {
            InsertOutcome::Inserted
        } else {
            InsertOutcome::AlreadyExists
        })
    }

    async fn tombstone(&self, p: &Pseudonym) -> Result<Option<Tombstone>, StoreError> {
        let mut conn = self.pool()?.acquire().await.map_err(backend)?;
        Self::tombstone_in(&mut conn, p).await
    }

    async fn erase_user(
        &self,
        p: &Pseudonym,
        now: i64,
        gc_job_id: &str,
        principal: &str,
    ) -> Result<Tombstone, StoreError> {
        let tombstone = match self.erase_once(p, now, gc_job_id, principal).await {
            // Uploads may have filled the disk: erasure must still work.
            Err(StoreError::Full(m)) => {
                if !self.release_reserve() {
                    return Err(StoreError::Full(m));
                }
                self.erase_once(p, now, gc_job_id, principal).await?
            }
            other => other?,
        };
        // Also for a repeated erasure: a checkpoint that failed before is
        // retried by the caller's retry.
        self.checkpoint().await?;
        self.ensure_reserve().await;
        Ok(tombstone)
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(&format!("{JOB_SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.pool()?)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::job_row).transpose()
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{JOB_SELECT} WHERE state IN ('pending', 'running') ORDER BY created_at_ms"
        ))
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::job_row).collect()
    }

    async fn list_jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let rows = match state {
            Some(state) => {
                sqlx::query(&format!(
                    "{JOB_SELECT} WHERE state = ? ORDER BY created_at_ms DESC, id LIMIT ?"
                ))
                .bind(state.as_str())
                .bind(i64::from(limit))
                .fetch_all(self.pool()?)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "{JOB_SELECT} ORDER BY created_at_ms DESC, id LIMIT ?"
                ))
                .bind(i64::from(limit))
                .fetch_all(self.pool()?)
                .await
            }
        }
        .map_err(backend)?;
        rows.iter().map(Self::job_row).collect()
    }

    async fn job_counts(&self) -> Result<Vec<(String, JobState, u64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state")
            .fetch_all(self.pool()?)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get("kind"),
                    JobState::parse(r.get::<&str, _>("state"))?,
                    u64::try_from(r.get::<i64, _>("n")).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn create_job(&self, job: &NewJob, exclusive: bool) -> Result<JobRecord, StoreError> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        if exclusive {
            let row = sqlx::query(&format!(
                "{JOB_SELECT} WHERE kind = ? AND state IN ('pending', 'running')
                 ORDER BY created_at_ms LIMIT 1"
            ))
            .bind(&job.kind)
            .fetch_optional(tx.conn())
            .await
            .map_err(backend)?;
            if let Some(row) = row {
                let existing = Self::job_row(&row)?;
                tx.commit().await?;
                return Ok(existing);
            }
        }
        sqlx::query(
            "INSERT INTO jobs (id, kind, pseudonym, params, state, created_at_ms, updated_at_ms)
             VALUES (?, ?, ?, ?, 'pending', ?, ?)",
        )
        .bind(&job.id)
        .bind(&job.kind)
        .bind(job.pseudonym.as_ref().map(Pseudonym::to_string))
        .bind(&job.params)
        .bind(now)
        .bind(now)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        Self::append_audit(
            tx.conn(),
            &AuditEntry {
                at_ms: now,
                principal: "gateway".into(),
                action: "job_created".into(),
                pseudonym: job.pseudonym,
                outcome: "ok".into(),
                detail: format!("{} job {} ({})", job.kind, job.id, job.params),
            },
        )
        .await?;
        let created = Self::job_in(tx.conn(), &job.id)
            .await?
            .ok_or_else(|| StoreError::Backend("job vanished in its own transaction".into()))?;
        tx.commit().await?;
        Ok(created)
    }

    async fn keks_below_master(
        &self,
        master_version: u32,
        limit: u32,
    ) -> Result<Vec<KekRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM keks WHERE master_version < ? ORDER BY shard, version LIMIT ?",
        )
        .bind(i64::from(master_version))
        .bind(i64::from(limit))
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::kek_row).collect()
    }

    async fn kek_counts_by_master(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT master_version, COUNT(*) AS n FROM keks GROUP BY master_version ORDER BY master_version",
        )
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok((
                    u32_of(r.get("master_version"))?,
                    u64::try_from(r.get::<i64, _>("n")).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn rewrap_keks(
        &self,
        rewraps: &[KekRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !Self::holds_lease(&mut tx, progress.id, progress.owner).await? {
            tx.commit().await?;
            return Ok(false);
        }
        for r in rewraps {
            sqlx::query(
                "UPDATE keks SET master_version = ?, wrapped = ?
                 WHERE shard = ? AND version = ? AND master_version = ?",
            )
            .bind(i64::from(r.to_master))
            .bind(&r.wrapped)
            .bind(i64::from(r.shard))
            .bind(i64::from(r.version))
            .bind(i64::from(r.from_master))
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        }
        Self::write_progress(&mut tx, progress).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn kek_infos(&self) -> Result<Vec<KekInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT shard, version, master_version, created_at_ms FROM keks ORDER BY shard, version",
        )
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(KekInfo {
                    shard: u32_of(row.get("shard"))?,
                    version: u32_of(row.get("version"))?,
                    master_version: u32_of(row.get("master_version"))?,
                    created_at_ms: row.get("created_at_ms"),
                })
            })
            .collect()
    }

    async fn insert_keks(
        &self,
        records: &[KekRecord],
        principal: &str,
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !Self::holds_lease(&mut tx, progress.id, progress.owner).await? {
            tx.commit().await?;
            return Ok(false);
        }
        for r in records {
            Self::insert_kek_in(&mut tx, r).await?;
        }
        if !records.is_empty() {
            let made: Vec<String> = records
                .iter()
                .map(|r| format!("{}:{}", r.shard, r.version))
                .collect();
            Self::append_audit(
                tx.conn(),
                &AuditEntry {
                    at_ms: unix_ms(),
                    principal: principal.into(),
                    action: "create_kek".into(),
                    pseudonym: None,
                    outcome: "ok".into(),
                    detail: format!("shard:version {}", made.join(" ")),
                },
            )
            .await?;
        }
        Self::write_progress(&mut tx, progress).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn user_keys_below_keks(
        &self,
        targets: &[(u32, u32)],
        limit: u32,
    ) -> Result<Vec<UserKeyRecord>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        // Through the shard index, each shard's rows filtered by KEK version
        // (rows already moved are read again by every batch: fine for a few
        // shards; a rotation of every shard reads in table order instead).
        let values = vec!["(?, ?)"; targets.len()].join(", ");
        let sql = format!(
            "WITH targets(shard, target) AS (VALUES {values})
             SELECT u.* FROM targets t CROSS JOIN user_keys u
             WHERE u.shard = t.shard AND u.kek_version < t.target LIMIT ?"
        );
        let mut query = sqlx::query(&sql);
        for (shard, target) in targets {
            query = query.bind(i64::from(*shard)).bind(i64::from(*target));
        }
        let rows = query
            .bind(i64::from(limit))
            .fetch_all(self.pool()?)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| Self::user_key_row(pseudonym_of(row.get("pseudonym"))?, row))
            .collect()
    }

    async fn user_keys_in_order(
        &self,
        after: Option<(Pseudonym, u32)>,
        limit: u32,
    ) -> Result<Vec<UserKeyRecord>, StoreError> {
        let (p, version) = after.map_or((String::new(), 0), |(p, v)| (p.to_string(), v));
        let rows = sqlx::query(
            "SELECT * FROM user_keys WHERE (pseudonym, version) > (?, ?)
             ORDER BY pseudonym, version LIMIT ?",
        )
        .bind(p)
        .bind(i64::from(version))
        .bind(i64::from(limit))
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| Self::user_key_row(pseudonym_of(row.get("pseudonym"))?, row))
            .collect()
    }

    async fn count_user_keys(&self, shards: &[u32]) -> Result<u64, StoreError> {
        let mut conn = self.pool()?.acquire().await.map_err(backend)?;
        let mut total = 0u64;
        for shard in shards {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_keys WHERE shard = ?")
                .bind(i64::from(*shard))
                .fetch_one(&mut *conn)
                .await
                .map_err(backend)?;
            total += u64::try_from(n).unwrap_or(0);
        }
        Ok(total)
    }

    async fn rewrap_user_keys(
        &self,
        rewraps: &[UserKeyRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !Self::holds_lease(&mut tx, progress.id, progress.owner).await? {
            tx.commit().await?;
            return Ok(false);
        }
        // One statement per chunk: the row updates cost SQLite about the
        // same either way, and each statement is a trip to the connection's
        // thread.
        for chunk in rewraps.chunks(REWRAP_CHUNK) {
            let rows = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE user_keys SET kek_version = v.column5, wrapped = v.column6
                 FROM (VALUES {rows}) AS v
                 WHERE user_keys.pseudonym = v.column1 AND user_keys.version = v.column2
                   AND user_keys.shard = v.column3 AND user_keys.kek_version = v.column4"
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.pseudonym.to_string())
                    .bind(i64::from(r.version))
                    .bind(i64::from(r.shard))
                    .bind(i64::from(r.from_kek))
                    .bind(i64::from(r.to_kek))
                    .bind(&r.wrapped);
            }
            query.execute(tx.conn()).await.map_err(backend)?;
        }
        Self::write_progress(&mut tx, progress).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn destroy_keks_below(
        &self,
        targets: &[(u32, u32)],
        principal: &str,
    ) -> Result<DestroyKeks, StoreError> {
        let mut tx = self.begin().await?;
        let mut in_use = 0i64;
        for (shard, target) in targets {
            in_use += sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM user_keys WHERE shard = ? AND kek_version < ?",
            )
            .bind(i64::from(*shard))
            .bind(i64::from(*target))
            .fetch_one(tx.conn())
            .await
            .map_err(backend)?;
        }
        if in_use > 0 {
            tx.commit().await?;
            return Ok(DestroyKeks::StillInUse(u64::try_from(in_use).unwrap_or(0)));
        }
        let mut destroyed = Vec::new();
        for (shard, target) in targets {
            let versions: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM keks WHERE shard = ? AND version < ? RETURNING version",
            )
            .bind(i64::from(*shard))
            .bind(i64::from(*target))
            .fetch_all(tx.conn())
            .await
            .map_err(backend)?;
            for v in versions {
                destroyed.push((*shard, u32_of(v)?));
            }
        }
        destroyed.sort_unstable();
        if !destroyed.is_empty() {
            let list: Vec<String> = destroyed.iter().map(|(s, v)| format!("{s}:{v}")).collect();
            Self::append_audit(
                tx.conn(),
                &AuditEntry {
                    at_ms: unix_ms(),
                    principal: principal.into(),
                    action: "destroy_kek".into(),
                    pseudonym: None,
                    outcome: "ok".into(),
                    detail: format!("shard:version {}", list.join(" ")),
                },
            )
            .await?;
        }
        tx.commit().await?;
        if !destroyed.is_empty() {
            self.checkpoint().await?;
        }
        Ok(DestroyKeks::Destroyed(destroyed))
    }

    async fn rotate_user_key(
        &self,
        r: &UserKeyRecord,
        principal: &str,
    ) -> Result<InsertOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let p = r.pseudonym.to_string();
        if let Some(refused) = Self::refuse_user_key(&mut tx, r).await? {
            tx.commit().await?;
            return Ok(refused);
        }
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM user_keys WHERE pseudonym = ?")
                .bind(&p)
                .fetch_one(tx.conn())
                .await
                .map_err(backend)?;
        if highest.unwrap_or(0) + 1 != i64::from(r.version) {
            tx.commit().await?;
            return Ok(InsertOutcome::AlreadyExists);
        }
        sqlx::query("UPDATE user_keys SET state = ? WHERE pseudonym = ? AND state = ?")
            .bind(UserKeyState::DecryptOnly.as_str())
            .bind(&p)
            .bind(UserKeyState::Active.as_str())
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state, created_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&p)
        .bind(i64::from(r.version))
        .bind(i64::from(r.shard))
        .bind(i64::from(r.kek_version))
        .bind(&r.wrapped)
        .bind(UserKeyState::Active.as_str())
        .bind(r.created_at_ms)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        Self::append_audit(
            tx.conn(),
            &AuditEntry {
                at_ms: r.created_at_ms,
                principal: principal.into(),
                action: "rotate_user_key".into(),
                pseudonym: Some(r.pseudonym),
                outcome: "ok".into(),
                detail: format!(
                    "version {} active under shard {} KEK version {}; older versions decrypt-only",
                    r.version, r.shard, r.kek_version
                ),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(InsertOutcome::Inserted)
    }

    async fn retire_user_keys_below(
        &self,
        p: &Pseudonym,
        version: u32,
    ) -> Result<Vec<u32>, StoreError> {
        let mut tx = self.begin().await?;
        let p = p.to_string();
        sqlx::query(
            "UPDATE user_keys SET state = ? WHERE pseudonym = ? AND version < ? AND state != ?",
        )
        .bind(UserKeyState::Retiring.as_str())
        .bind(&p)
        .bind(i64::from(version))
        .bind(UserKeyState::Active.as_str())
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        let retiring: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM user_keys WHERE pseudonym = ? AND state = ? ORDER BY version",
        )
        .bind(&p)
        .bind(UserKeyState::Retiring.as_str())
        .fetch_all(tx.conn())
        .await
        .map_err(backend)?;
        tx.commit().await?;
        retiring.into_iter().map(u32_of).collect()
    }

    async fn destroy_retiring_user_keys(
        &self,
        p: &Pseudonym,
        principal: &str,
    ) -> Result<Vec<u32>, StoreError> {
        let mut tx = self.begin().await?;
        let versions: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM user_keys WHERE pseudonym = ? AND state = ? RETURNING version",
        )
        .bind(p.to_string())
        .bind(UserKeyState::Retiring.as_str())
        .fetch_all(tx.conn())
        .await
        .map_err(backend)?;
        let mut versions = versions
            .into_iter()
            .map(u32_of)
            .collect::<Result<Vec<u32>, _>>()?;
        versions.sort_unstable();
        if !versions.is_empty() {
            Self::append_audit(
                tx.conn(),
                &AuditEntry {
                    at_ms: crate::keys::unix_ms(),
                    principal: principal.into(),
                    action: "destroy_user_key_versions".into(),
                    pseudonym: Some(*p),
                    outcome: "ok".into(),
                    detail: format!("rewrapped; versions {versions:?} destroyed"),
                },
            )
            .await?;
        }
        tx.commit().await?;
        if !versions.is_empty() {
            self.checkpoint().await?;
        }
        Ok(versions)
    }

    async fn decommission(&self, at_ms: i64, principal: &str) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin().await?;
        let users = sqlx::query("DELETE FROM user_keys")
            .execute(tx.conn())
            .await
            .map_err(backend)?
            .rows_affected();
        let keks = sqlx::query("DELETE FROM keks")
            .execute(tx.conn())
            .await
            .map_err(backend)?
            .rows_affected();
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(DECOMMISSIONED_META)
            .bind(at_ms.to_string())
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        Self::append_audit(
            tx.conn(),
            &AuditEntry {
                at_ms,
                principal: principal.into(),
                action: "decommission".into(),
                pseudonym: None,
                outcome: "ok".into(),
                detail: format!("{users} user key versions and {keks} KEK versions destroyed"),
            },
        )
        .await?;
        tx.commit().await?;
        self.checkpoint().await?;
        Ok((users, keks))
    }

    async fn meta_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(self.pool()?)
            .await
            .map_err(backend)
    }

    async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        let held: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_one(tx.conn())
            .await
            .map_err(backend)?;
        tx.commit().await?;
        Ok(held)
    }

    async fn meta_values(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // substr rather than LIKE: a prefix may hold `_` or `%`.
        sqlx::query_as(
            "SELECT key, value FROM meta WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
        )
        .bind(prefix)
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)
    }

    async fn delete_meta(&self, key: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM meta WHERE key = ?")
            .bind(key)
            .execute(tx.conn())
            .await
            .map_err(backend)?
            .rows_affected();
        tx.commit().await?;
        if deleted > 0 {
            self.checkpoint().await?;
        }
        Ok(deleted > 0)
    }

    async fn claim_job(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "UPDATE jobs SET owner = ?, lease_until_ms = ?, state = 'running', updated_at_ms = ?
             WHERE id = ? AND state IN ('pending', 'running')
               AND (owner IS NULL OR owner = ? OR lease_until_ms < ?)",
        )
        .bind(owner)
        .bind(until_ms)
        .bind(now)
        .bind(id)
        .bind(owner)
        .bind(now)
        .execute(tx.conn())
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        let job = if claimed {
            Self::job_in(tx.conn(), id).await?
        } else {
            None
        };
        tx.commit().await?;
        Ok(job)
    }

    async fn renew_job_lease(
        &self,
        id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let held = sqlx::query(
            "UPDATE jobs SET lease_until_ms = ?
             WHERE id = ? AND owner = ? AND state IN ('pending', 'running')",
        )
        .bind(until_ms)
        .bind(id)
        .bind(owner)
        .execute(tx.conn())
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(held)
    }

    async fn checkpoint_job(
        &self,
        id: &str,
        owner: &str,
        c: &JobCheckpoint,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let held = sqlx::query(
            "UPDATE jobs SET done = ?, total = ?, cursor = ?, last_error = ?, lease_until_ms = ?,
                             updated_at_ms = ?
             WHERE id = ? AND owner = ? AND state IN ('pending', 'running')",
        )
        .bind(i64::try_from(c.done).unwrap_or(i64::MAX))
        .bind(i64::try_from(c.total).unwrap_or(i64::MAX))
        .bind(&c.cursor)
        .bind(&c.last_error)
        .bind(until_ms)
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(tx.conn())
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(held)
    }

    async fn finish_job(
        &self,
        id: &str,
        owner: &str,
        state: JobState,
        last_error: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let held = Self::holds_lease(&mut tx, id, owner).await?;
        if held {
            sqlx::query(
                "UPDATE jobs SET state = ?, last_error = ?, owner = NULL, lease_until_ms = 0,
                                 updated_at_ms = ?
                 WHERE id = ?",
            )
            .bind(state.as_str())
            .bind(last_error)
            .bind(now_ms())
            .bind(id)
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn update_job(
        &self,
        id: &str,
        state: JobState,
        done: u64,
        last_error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = ?, done = ?, last_error = ?, owner = NULL, lease_until_ms = 0,
                             updated_at_ms = ?
             WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(i64::try_from(done).unwrap_or(i64::MAX))
        .bind(last_error)
        .bind(now_ms())
        .bind(id)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        tx.commit().await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let mut tx = self.begin().await?;
        let record = Self::append_audit(tx.conn(), entry).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn audit_records(
        &self,
        after_id: u64,
        p: Option<&Pseudonym>,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE id > ?1 AND (?2 IS NULL OR pseudonym = ?2)
             AND (?3 IS NULL OR at_ms >= ?3) ORDER BY id LIMIT ?4"
        ))
        .bind(i64::try_from(after_id).unwrap_or(i64::MAX))
        .bind(p.map(Pseudonym::to_string))
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::audit_record).collect()
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let value: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'audit_head'")
                .fetch_optional(self.pool()?)
                .await
                .map_err(backend)?;
        let Some(value) = value else { return Ok(None) };
        let corrupt = || StoreError::Backend("corrupt audit head".into());
        let (id, hash) = value.split_once(' ').ok_or_else(corrupt)?;
        let id = id.parse().map_err(|_| corrupt())?;
        let hash = hex::decode(hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or_else(corrupt)?;
        Ok(Some((id, hash)))
    }

    async fn place_hold(&self, h: &HoldRecord) -> Result<PlaceHold, StoreError> {
        let mut tx = self.begin().await?;
        if Self::tombstone_in(tx.conn(), &h.pseudonym).await?.is_some() {
            tx.commit().await?;
            return Ok(PlaceHold::Erased);
        }
        let existing =
            sqlx::query("SELECT * FROM legal_holds WHERE pseudonym = ? AND case_ref = ?")
                .bind(h.pseudonym.to_string())
                .bind(&h.case_ref)
                .fetch_optional(tx.conn())
                .await
                .map_err(backend)?;
        if let Some(row) = existing {
            let existing = Self::hold_row(&row)?;
            tx.commit().await?;
            return Ok(PlaceHold::Exists(existing));
        }
        sqlx::query(
            "INSERT INTO legal_holds (pseudonym, case_ref, placed_at_ms, placed_by) VALUES (?, ?, ?, ?)",
        )
        .bind(h.pseudonym.to_string())
        .bind(&h.case_ref)
        .bind(h.placed_at_ms)
        .bind(&h.placed_by)
        .execute(tx.conn())
        .await
        .map_err(backend)?;
        Self::append_audit(
            tx.conn(),
            &AuditEntry {
                at_ms: h.placed_at_ms,
                principal: h.placed_by.clone(),
                action: "place_hold".into(),
                pseudonym: Some(h.pseudonym),
                outcome: "ok".into(),
                detail: format!("case {}", h.case_ref),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(PlaceHold::Placed)
    }

    async fn release_hold(
        &self,
        p: &Pseudonym,
        case_ref: &str,
        principal: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let released = sqlx::query("DELETE FROM legal_holds WHERE pseudonym = ? AND case_ref = ?")
            .bind(p.to_string())
            .bind(case_ref)
            .execute(tx.conn())
            .await
            .map_err(backend)?
            .rows_affected()
            > 0;
        if released {
            Self::append_audit(
                tx.conn(),
                &AuditEntry {
                    at_ms: now_ms(),
                    principal: principal.to_string(),
                    action: "release_hold".into(),
                    pseudonym: Some(*p),
                    outcome: "ok".into(),
                    detail: format!("case {case_ref}"),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn holds(
        &self,
        p: Option<&Pseudonym>,
        after: Option<(&Pseudonym, &str)>,
        limit: u32,
    ) -> Result<Vec<HoldRecord>, StoreError> {
        let (after_p, after_case) = after.map_or((String::new(), String::new()), |(p, c)| {
            (p.to_string(), c.to_string())
        });
        let rows = sqlx::query(
            "SELECT * FROM legal_holds
             WHERE (?1 IS NULL OR pseudonym = ?1) AND (pseudonym, case_ref) > (?2, ?3)
             ORDER BY pseudonym, case_ref LIMIT ?4",
        )
        .bind(p.map(Pseudonym::to_string))
        .bind(after_p)
        .bind(after_case)
        .bind(i64::from(limit))
        .fetch_all(self.pool()?)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::hold_row).collect()
    }

    async fn store_id(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'store_id'")
            .fetch_optional(self.pool()?)
            .await
            .map_err(backend)
    }

    async fn init_store_id(&self, id: &str) -> Result<String, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('store_id', ?) ON CONFLICT DO NOTHING")
            .bind(id)
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        let recorded: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'store_id'")
            .fetch_one(tx.conn())
            .await
            .map_err(backend)?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn holds_keys(&self) -> Result<bool, StoreError> {
        let any: Option<i64> = sqlx::query_scalar("SELECT 1 FROM keks LIMIT 1")
            .fetch_optional(self.pool()?)
            .await
            .map_err(backend)?;
        Ok(any.is_some())
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        self.check_file()?;
        sqlx::query("SELECT 1")
            .execute(self.pool()?)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store made before the audit chain: its records are chained, in
    /// order and renumbered from 1, at the first open; new records follow.
    #[tokio::test]
    async fn older_audit_records_are_chained_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        {
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let pool = SqlitePool::connect(&url).await.unwrap();
            sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
            for (id, action) in [(3, "create_kek"), (7, "erase_user"), (8, "erasure_gc_done")] {
                sqlx::query("INSERT INTO audit (id, at_ms, action, pseudonym, detail) VALUES (?, 5, ?, NULL, 'd')")
                    .bind(id)
                    .bind(action)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteKeyStore::open(&path).await.unwrap();
        store
            .audit(&AuditEntry {
                at_ms: 9,
                principal: "local".into(),
                action: "place_hold".into(),
                pseudonym: None,
                outcome: "ok".into(),
                detail: "case c".into(),
            })
            .await
            .unwrap();
        let records = store.audit_records(0, None, None, 10).await.unwrap();
        let actions: Vec<_> = records
            .iter()
            .map(|r| (r.id, r.entry.action.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                (1, "create_kek"),
                (2, "erase_user"),
                (3, "erasure_gc_done"),
                (4, "place_hold")
            ]
        );
        let mut prev = [0u8; 32];
        for r in &records {
            assert_eq!(r.prev_hash, prev);
            assert_eq!(audit_hash(r.id, &r.entry, &prev), r.hash);
            prev = r.hash;
        }
        assert_eq!(records[0].entry.principal, "gateway");
        assert_eq!(store.audit_head().await.unwrap(), Some((4, prev)));
        store.close().await;
        // Reopening changes nothing.
        let store = SqliteKeyStore::open(&path).await.unwrap();
        assert_eq!(
            store.audit_records(0, None, None, 10).await.unwrap(),
            records
        );
    }

    /// A key store from before job leases: its jobs table gains the new
    /// columns at open, and its unfinished job can be leased and resumed.
    #[tokio::test]
    async fn a_jobs_table_from_before_leases_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(options).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE jobs (
                    id TEXT PRIMARY KEY, kind TEXT NOT NULL, pseudonym TEXT,
                    state TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT NOT NULL DEFAULT '', created_at_ms INTEGER NOT NULL,
                    updated_at_ms INTEGER NOT NULL);
                 INSERT INTO jobs (id, kind, state, done, created_at_ms, updated_at_ms)
                 VALUES ('old', 'erasure_gc', 'running', 7, 1, 1);",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let store = SqliteKeyStore::open(&path).await.unwrap();
        let job = store.job("old").await.unwrap().unwrap();
        assert_eq!((job.state, job.done, job.total), (JobState::Running, 7, 0));
        assert_eq!((job.owner, job.lease_until_ms), (None, 0));
        let claimed = store
            .claim_job("old", "me", 10, 20)
            .await
            .unwrap()
            .expect("claimable");
        assert_eq!((claimed.done, claimed.owner.as_deref()), (7, Some("me")));
        assert_eq!(store.unfinished_jobs().await.unwrap().len(), 1);
        store.close().await;
        // Opening again changes nothing more.
        let store = SqliteKeyStore::open(&path).await.unwrap();
        assert_eq!(store.job("old").await.unwrap().unwrap().done, 7);
    }

    #[tokio::test]
    async fn meta_values_by_prefix_and_deleted_without_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let store = SqliteKeyStore::open(&path).await.unwrap();
        for (k, v) in [
            ("kms_master:0000000002", "b wrapped-two"),
            ("kms_master:0000000001", "a wrapped-one"),
            ("kms_masterx", "not under the prefix"),
            ("master_seen:1", "1"),
        ] {
            store.set_meta_if_absent(k, v).await.unwrap();
        }
        let found = store.meta_values("kms_master:").await.unwrap();
        assert_eq!(
            found,
            [
                (
                    "kms_master:0000000001".to_string(),
                    "a wrapped-one".to_string()
                ),
                (
                    "kms_master:0000000002".to_string(),
                    "b wrapped-two".to_string()
                ),
            ]
        );
        // `_` and `%` in a prefix are plain characters.
        assert!(store.meta_values("kms_master_").await.unwrap().is_empty());
        assert!(store.meta_values("kms%").await.unwrap().is_empty());
        assert!(store.delete_meta("kms_master:0000000001").await.unwrap());
        assert!(!store.delete_meta("kms_master:0000000001").await.unwrap());
        assert_eq!(store.meta_values("kms_master:").await.unwrap().len(), 1);
        store.close().await;
        // No copy of the deleted value in the database or its WAL (which
        // SQLite may remove as its last connection closes: a file gone
        // holds nothing).
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = match std::fs::read(entry.unwrap().path()) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{e}"),
            };
            assert!(!bytes.windows(13).any(|w| w == b"a wrapped-one"));
        }
    }
}
