//! Opening a SQLite key store: creating the file, the schema migrations,
//! and adopting stores made by older builds (columns added since, the
//! audit chain, free pages from before `secure_delete`).
//!
//! The migrations are `migrations/sqlite/` at the repository root, embedded
//! by `sqlx::migrate!`; the first is the schema of stores made before
//! migrations (every statement `IF NOT EXISTS`), so such a `keys.db` is
//! adopted as it is, and a store migrated by a newer build is refused.
//! Processes starting together on a new data directory race to create the
//! file and turn on WAL; an open that SQLite answers SQLITE_BUSY at once is
//! tried again.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{backend, primary_code, SqliteEngine, WriteTx};
use crate::keys::store::engine::{Engine, SqlRow};
use crate::keys::store::sql::{audit_entry, audit_head_value, SET_AUDIT_HEAD};
use crate::keys::store::{audit_hash, StoreError};

/// The schema as it was before schema migrations: migration 1, and what a
/// test writes to make a store of that time.
#[cfg(test)]
pub(super) const SCHEMA: &str = include_str!("../../../../migrations/sqlite/0001_initial.sql");

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

/// Columns the jobs table gained with leases, resumable cursors and
/// progress totals; added to a table from before them.
const JOB_COLUMNS: &[(&str, &str)] = &[
    ("params", "TEXT NOT NULL DEFAULT ''"),
    ("total", "INTEGER NOT NULL DEFAULT 0"),
    ("cursor", "TEXT NOT NULL DEFAULT ''"),
    ("owner", "TEXT"),
    ("lease_until_ms", "INTEGER NOT NULL DEFAULT 0"),
];

/// SQLite's message for SQLITE_BUSY.
const SQLITE_BUSY_MESSAGE: &str = "database is locked";

/// Whether a migration failed because another process was applying it.
fn raced(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation() || matches!(primary_code(db), 5 | 6))
}

async fn migrate_jobs(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = WriteTx::begin(pool).await?;
    let have: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('jobs')")
        .fetch_all(tx.conn())
        .await
        .map_err(backend)?;
    for (name, decl) in JOB_COLUMNS {
        if !have.iter().any(|h| h == name) {
            sqlx::query(&format!("ALTER TABLE jobs ADD COLUMN {name} {decl}"))
                .execute(tx.conn())
                .await
                .map_err(backend)?;
        }
    }
    tx.commit().await
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
        let lost_race = match &error {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => raced(e),
            _ => false,
        };
        if lost_race && attempts < 40 {
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

impl SqliteEngine {
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
        // Only when it is missing: closing a descriptor of a file SQLite
        // has open in this process would drop SQLite's locks on it.
        if std::fs::symlink_metadata(path).is_err() {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| io("cannot create", e))?;
        }
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
            .max_connections(super::POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(backend)?;
        migrate(&pool, path).await?;
        migrate_jobs(&pool).await?;
        let meta = std::fs::metadata(path).map_err(|e| io("cannot stat", e))?;
        let engine = Self {
            pool,
            path: path.to_owned(),
            reserve: super::reserve_path(path),
            identity: (meta.dev(), meta.ino()),
            scrubs: Default::default(),
        };
        engine.chain_audit().await?;
        engine.scrub_free_pages().await?;
        engine.ensure_reserve().await;
        Ok(engine)
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
        let mut tx = self.begin_write().await?;
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
            let old_id = row.int("id")?;
            let id = n as u64 + 1;
            let hash = audit_hash(id, &audit_entry(row)?, &prev);
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
            sqlx::query(SET_AUDIT_HEAD)
                .bind(audit_head_value(rows.len() as u64, &prev))
                .execute(tx.conn())
                .await
                .map_err(backend)?;
        }
        tx.commit().await
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
}
