//! SQLite, the embedded default key store's engine, through sqlx.
//!
//! - WAL journal with `synchronous = FULL`: a committed erasure survives a
//!   power cut.
//! - `secure_delete = ON` on every connection, and after every commit that
//!   destroyed key material a scrub of the WAL ([`Engine::scrub`]) before
//!   the call returns: every frame checkpointed, the WAL's bytes
//!   overwritten in place with zeros under the write lock, then truncated.
//!   A destroyed key leaves no copy in a free page of `keys.db`, in
//!   `keys.db-wal`, nor in the disk blocks the WAL gives back (on a
//!   filesystem that writes in place). The scrub is `scrub.rs`. A database whose free pages predate
//!   this (freelist not empty at open) is vacuumed once at open.
//! - Every write runs in a `BEGIN IMMEDIATE` transaction on a connection of
//!   its own ([`WriteTx`]): the one write lock serialises every write, so
//!   the store's `lock_*` calls need nothing more. A connection that saw
//!   any error inside a transaction (a failed COMMIT on a full disk, a
//!   read-only remount) is closed, never returned to the pool, so no later
//!   commit can run on a connection whose transaction state is out of step.
//! - A reserve file (`keys.db.reserve`, [`RESERVE_BYTES`]) is given up when
//!   an erasure finds the disk full, so that erasure works on a full disk.
//! - The file is created with mode 0600 (SQLite gives `-wal` and `-shm` the
//!   same mode). Its identity (device, inode) is remembered at open; a file
//!   deleted or replaced under the running process is noticed before every
//!   read and write and by [`Engine::check_health`], which writes one row
//!   (so that a disk turned read-only or a file made immutable is seen
//!   while reads still work).
//! - Failures are classified by SQLite's primary result code: a full disk
//!   is `Full`; busy, locked, read-only, I/O errors and a file that cannot
//!   be opened are `Unavailable`; a file deleted or replaced is `Lost`; the
//!   rest `Backend`.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool, SqliteRow};

use super::engine::{bind, params, Engine, Param};
use super::{
    Invalidation, KekRecord, KekRewrap, SqlStore, StoreError, UserKeyRewrap, HEALTH_PROBE_META,
};
use crate::crypto::Pseudonym;

mod open;
mod scrub;

pub use scrub::ScrubStep;
use scrub::Scrubs;

pub use super::RESERVE_BYTES;

/// The SQLite key store.
pub type SqliteKeyStore = SqlStore<SqliteEngine>;

/// The SQLite key store's file in a data directory, and in a backup.
/// SQLite keeps its `-wal` and `-shm` files beside it, the store its
/// reserve (`.reserve`).
pub const FILE_NAME: &str = "keys.db";

/// The files beside the key store file `db`: SQLite's WAL and WAL index,
/// and the store's erasure reserve.
pub fn companions(db: &Path) -> [PathBuf; 3] {
    [wal_path(db), beside(db, "-shm"), reserve_path(db)]
}

/// SQLite's WAL of the key store file `db`.
fn wal_path(db: &Path) -> PathBuf {
    beside(db, "-wal")
}

/// The erasure reserve ([`RESERVE_BYTES`]) beside the key store file `db`.
fn reserve_path(db: &Path) -> PathBuf {
    beside(db, ".reserve")
}

/// `db` with `suffix` added to its file name, as SQLite names its files.
fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// User keys re-wrapped by one UPDATE (six parameters each, well below
/// SQLite's 32,766).
const REWRAP_CHUNK: usize = 1024;

/// The SQLite engine: a pool over one file.
#[derive(Debug, Clone)]
pub struct SqliteEngine {
    pool: SqlitePool,
    path: PathBuf,
    reserve: PathBuf,
    /// Device and inode of the file opened.
    identity: (u64, u64),
    /// Scrubs run one at a time, and one covers every commit before it.
    scrubs: std::sync::Arc<Scrubs>,
}

/// Classifies a SQLite failure by its primary result code.
fn backend(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => match primary_code(db.as_ref()) {
            // SQLITE_FULL
            13 => StoreError::Full(db.message().to_string()),
            // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR,
            // SQLITE_CANTOPEN, SQLITE_PROTOCOL
            5 | 6 | 8 | 10 | 14 | 15 => StoreError::Unavailable(db.message().to_string()),
            _ => StoreError::Backend(e.to_string()),
        },
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

fn primary_code(db: &dyn sqlx::error::DatabaseError) -> i32 {
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .map_or(0, |c| c & 0xff)
}

/// SQLite's primary result code for a write refused on a read-only
/// database or connection.
const SQLITE_READONLY: i32 = 8;

/// Connections of a store's pool.
pub(super) const POOL_SIZE: u32 = 4;

/// A write transaction (`BEGIN IMMEDIATE`) on a pooled connection. The
/// connection goes back to the pool only after a successful COMMIT: dropped
/// any other way (an error returned early, a failed COMMIT, a cancelled
/// call), it is closed, and the transaction with it.
pub struct WriteTx {
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
        // A connection opened while the file could not be written (made
        // immutable, a read-only remount) stays read-only after the file is
        // writable again: BEGIN IMMEDIATE refuses it at once (nothing
        // done), and it is closed. The pool's next one is tried, up to a
        // pool's worth, before the refusal counts.
        let mut readonly_refusals = 0;
        let tx = loop {
            let mut tx = Self {
                conn: pool.acquire().await.map_err(backend)?,
                committed: false,
            };
            match sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx.conn).await {
                Ok(_) => break tx,
                Err(sqlx::Error::Database(db))
                    if primary_code(&*db) == SQLITE_READONLY && readonly_refusals < POOL_SIZE =>
                {
                    readonly_refusals += 1;
                }
                Err(e) => return Err(backend(e)),
            }
        };
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

impl SqlStore<SqliteEngine> {
    /// Opens (creating if needed, mode 0600) the key store at `path`.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::new(SqliteEngine::open(path).await?))
    }
}

impl SqliteEngine {
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

    async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        self.check_file()?;
        WriteTx::begin(&self.pool).await
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    type Tx = WriteTx;
    type Row = SqliteRow;

    // The transaction holds the database's one write lock.
    const FOR_UPDATE: &'static str = "";

    async fn begin(&self) -> Result<WriteTx, StoreError> {
        self.begin_write().await
    }

    async fn commit(&self, tx: WriteTx) -> Result<(), StoreError> {
        tx.commit().await
    }

    async fn execute(
        &self,
        tx: &mut WriteTx,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<u64, StoreError> {
        let done = bind(sqlx::query(sql), params)
            .execute(tx.conn())
            .await
            .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn fetch(
        &self,
        tx: &mut WriteTx,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        bind(sqlx::query(sql), params)
            .fetch_all(tx.conn())
            .await
            .map_err(backend)
    }

    async fn read(&self, sql: &str, params: Vec<Param>) -> Result<Vec<SqliteRow>, StoreError> {
        bind(sqlx::query(sql), params)
            .fetch_all(self.pool()?)
            .await
            .map_err(backend)
    }

    async fn write(&self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = self.execute(&mut tx, sql, params).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn write_rows(
        &self,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let mut tx = self.begin_write().await?;
        let rows = self.fetch(&mut tx, sql, params).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn lock_user(&self, _: &mut WriteTx, _: &Pseudonym) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_shards(&self, _: &mut WriteTx, _: &[u32], _: bool) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_audit(&self, _: &mut WriteTx) -> Result<(), StoreError> {
        Ok(())
    }

    async fn lock_job_kind(&self, _: &mut WriteTx, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    // One host: no other process to tell.
    async fn notify(&self, _: &mut WriteTx, _: &[Invalidation]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn scrub(&self) -> Result<(), StoreError> {
        self.scrub_shared().await
    }

    async fn admit_upload(&self) -> Result<(), StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let full = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::StorageFull => StoreError::Full(format!(
                "uploads wait while the key store's volume is this full: {e}"
            )),
            _ => StoreError::Unavailable(format!("cannot measure {}: {e}", dir.display())),
        };
        if !self.reserve.exists() {
            // Made again only where it leaves the erasures' room free.
            if crate::disk::leave_room(dir, RESERVE_BYTES as u64).is_ok() {
                self.ensure_reserve().await;
            }
            if !self.reserve.exists() {
                return Err(StoreError::Full(
                    "an erasure gave up the key store's reserve on a full disk: uploads wait \
                     until space is freed and the reserve is made again"
                        .into(),
                ));
            }
        }
        crate::disk::leave_room(dir, 0).map_err(full)
    }

    async fn backup_into(&self, path: &Path) -> Result<(), StoreError> {
        let path = path
            .to_str()
            .ok_or_else(|| StoreError::Backend(format!("{} is not UTF-8", path.display())))?;
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(self.pool()?)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn release_reserve(&self) -> bool {
        match std::fs::remove_file(&self.reserve) {
            Ok(()) => {
                tracing::warn!("key store disk full: erasure reserve released");
                true
            }
            Err(_) => false,
        }
    }

    /// Creates the reserve file if it is missing; the 8 MiB write and fsync
    /// run off the async workers.
    async fn ensure_reserve(&self) {
        // An erasure and an upload's admission may both make it again at
        // once: one at a time, so neither publishes the other's half.
        let _making = self.scrubs.reserve.lock().await;
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

    async fn insert_keks(
        &self,
        tx: &mut WriteTx,
        records: &[KekRecord],
    ) -> Result<u64, StoreError> {
        let mut inserted = 0;
        for r in records {
            inserted += sqlx::query(
                "INSERT INTO keks (shard, version, master_version, wrapped, created_at_ms)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(i64::from(r.shard))
            .bind(i64::from(r.version))
            .bind(i64::from(r.master_version))
            .bind(&r.wrapped)
            .bind(r.created_at_ms)
            .execute(tx.conn())
            .await
            .map_err(backend)?
            .rows_affected();
        }
        Ok(inserted)
    }

    async fn rewrap_keks(&self, tx: &mut WriteTx, rewraps: &[KekRewrap]) -> Result<(), StoreError> {
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
        Ok(())
    }

    async fn rewrap_user_keys(
        &self,
        tx: &mut WriteTx,
        rewraps: &[UserKeyRewrap],
    ) -> Result<(), StoreError> {
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
        Ok(())
    }

    async fn user_keys_below_keks(
        &self,
        targets: &[(u32, u32)],
        limit: u32,
    ) -> Result<Vec<SqliteRow>, StoreError> {
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
        query
            .bind(i64::from(limit))
            .fetch_all(self.pool()?)
            .await
            .map_err(backend)
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

    async fn count_user_keys_below(
        &self,
        tx: &mut WriteTx,
        targets: &[(u32, u32)],
    ) -> Result<u64, StoreError> {
        let mut in_use = 0u64;
        for (shard, target) in targets {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM user_keys WHERE shard = ? AND kek_version < ?",
            )
            .bind(i64::from(*shard))
            .bind(i64::from(*target))
            .fetch_one(tx.conn())
            .await
            .map_err(backend)?;
            in_use += u64::try_from(n).unwrap_or(0);
        }
        Ok(in_use)
    }

    async fn delete_keks_below(
        &self,
        tx: &mut WriteTx,
        targets: &[(u32, u32)],
    ) -> Result<Vec<(u32, u32)>, StoreError> {
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
                let v = u32::try_from(v)
                    .map_err(|_| StoreError::Backend("corrupt KEK version in key store".into()))?;
                destroyed.push((*shard, v));
            }
        }
        Ok(destroyed)
    }

    /// A write: a disk turned read-only, a file made immutable, an I/O
    /// error fail it as they fail the gateway's own writes (a read goes on
    /// working from the page cache). One row of `meta`, overwritten.
    async fn check_health(&self) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![HEALTH_PROBE_META, crate::clock::unix_ms().to_string()],
        )
        .await?;
        Ok(())
    }

    async fn close(&self) {
        // SQLite removes the WAL as its last connection closes, giving its
        // blocks back. Every finished scrub left no destroyed key in it;
        // one that did not finish (it failed) is tried once more first
        // (best effort: a store that cannot be written now closes all the
        // same). A store that destroyed nothing since is closed as it is.
        if self.scrub_pending().await && self.check_file().is_ok() {
            if let Err(e) = self.checkpoint().await {
                tracing::warn!(error = %e, "key store: the WAL could not be scrubbed at close");
            }
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
