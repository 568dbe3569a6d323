//! SQLite key store (embedded default), through sqlx.
//!
//! WAL journal with `synchronous = FULL`: a committed erasure survives a
//! power cut. Every transaction that may write starts with its write, so
//! SQLite takes the write lock first and concurrent writers queue on the
//! busy timeout instead of failing with `SQLITE_BUSY` on lock upgrade.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::store::{
    InsertOutcome, JobRecord, JobState, KekRecord, KeyStore, StoreError, Tombstone, UserKeyRecord,
    UserKeyState, JOB_KIND_ERASURE_GC,
};
use crate::crypto::Pseudonym;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS keks (
    shard INTEGER NOT NULL,
    version INTEGER NOT NULL,
    master_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (shard, version)
);
CREATE TABLE IF NOT EXISTS user_keys (
    pseudonym TEXT NOT NULL,
    version INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    kek_version INTEGER NOT NULL,
    wrapped BLOB NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (pseudonym, version)
);
CREATE TABLE IF NOT EXISTS tombstones (
    pseudonym TEXT PRIMARY KEY,
    erased_at_ms INTEGER NOT NULL,
    destroyed_versions TEXT NOT NULL,
    gc_job_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    pseudonym TEXT,
    state TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs (state) WHERE state IN ('pending', 'running');
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    pseudonym TEXT,
    detail TEXT NOT NULL
);
"#;

/// The SQLite key store.
#[derive(Debug, Clone)]
pub struct SqliteKeyStore {
    pool: SqlitePool,
}

fn backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Backend(other.to_string()),
    }
}

fn now_ms() -> i64 {
    crate::keys::unix_ms()
}

fn pseudonym_of(s: &str) -> Result<Pseudonym, StoreError> {
    Pseudonym::from_hex(s).map_err(|_| StoreError::Backend("corrupt pseudonym in key store".into()))
}

fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Backend("integer out of range in key store".into()))
}

impl SqliteKeyStore {
    /// Opens (creating if needed) the database at `path` and applies the
    /// schema.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(backend)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(backend)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(backend)?;
        Ok(Self { pool })
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

    fn job_row(row: &sqlx::sqlite::SqliteRow) -> Result<JobRecord, StoreError> {
        let pseudonym: Option<String> = row.get("pseudonym");
        Ok(JobRecord {
            id: row.get("id"),
            kind: row.get("kind"),
            pseudonym: pseudonym.as_deref().map(pseudonym_of).transpose()?,
            state: JobState::parse(row.get::<&str, _>("state"))?,
            done: u64::try_from(row.get::<i64, _>("done")).unwrap_or(0),
            last_error: row.get("last_error"),
        })
    }
}

#[async_trait]
impl KeyStore for SqliteKeyStore {
    async fn latest_kek(&self, shard: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keks WHERE shard = ? ORDER BY version DESC LIMIT 1")
            .bind(i64::from(shard))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::kek_row).transpose()
    }

    async fn kek(&self, shard: u32, version: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keks WHERE shard = ? AND version = ?")
            .bind(i64::from(shard))
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::kek_row).transpose()
    }

    async fn insert_kek(&self, r: &KekRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO keks (shard, version, master_version, wrapped, created_at_ms) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(i64::from(r.shard))
        .bind(i64::from(r.version))
        .bind(i64::from(r.master_version))
        .bind(&r.wrapped)
        .bind(r.created_at_ms)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }

    async fn user_keys(&self, p: &Pseudonym) -> Result<Vec<UserKeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM user_keys WHERE pseudonym = ? ORDER BY version")
            .bind(p.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(UserKeyRecord {
                    pseudonym: *p,
                    version: u32_of(row.get("version"))?,
                    shard: u32_of(row.get("shard"))?,
                    kek_version: u32_of(row.get("kek_version"))?,
                    wrapped: row.get("wrapped"),
                    state: UserKeyState::parse(row.get::<&str, _>("state"))?,
                    created_at_ms: row.get("created_at_ms"),
                })
            })
            .collect()
    }

    async fn insert_user_key(&self, r: &UserKeyRecord) -> Result<InsertOutcome, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
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
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        let erased = sqlx::query("SELECT 1 FROM tombstones WHERE pseudonym = ?")
            .bind(r.pseudonym.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
            .is_some();
        if erased {
            tx.rollback().await.map_err(backend)?;
            return Ok(InsertOutcome::Erased);
        }
        if !inserted {
            tx.rollback().await.map_err(backend)?;
            return Ok(InsertOutcome::AlreadyExists);
        }
        tx.commit().await.map_err(backend)?;
        Ok(InsertOutcome::Inserted)
    }

    async fn tombstone(&self, p: &Pseudonym) -> Result<Option<Tombstone>, StoreError> {
        let row = sqlx::query("SELECT * FROM tombstones WHERE pseudonym = ?")
            .bind(p.to_string())
            .fetch_optional(&self.pool)
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

    async fn erase_user(
        &self,
        p: &Pseudonym,
        now: i64,
        gc_job_id: &str,
    ) -> Result<Tombstone, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let fresh = sqlx::query(
            "INSERT INTO tombstones (pseudonym, erased_at_ms, destroyed_versions, gc_job_id) VALUES (?, ?, '', ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(p.to_string())
        .bind(now)
        .bind(gc_job_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await.map_err(backend)?;
            return self
                .tombstone(p)
                .await?
                .ok_or_else(|| StoreError::Backend("tombstone vanished".into()));
        }
        let versions: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM user_keys WHERE pseudonym = ? ORDER BY version",
        )
        .bind(p.to_string())
        .fetch_all(&mut *tx)
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
        sqlx::query("DELETE FROM user_keys WHERE pseudonym = ?")
            .bind(p.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query("UPDATE tombstones SET destroyed_versions = ? WHERE pseudonym = ?")
            .bind(&list)
            .bind(p.to_string())
            .execute(&mut *tx)
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
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO audit (at_ms, action, pseudonym, detail) VALUES (?, 'erase_user', ?, ?)",
        )
        .bind(now)
        .bind(p.to_string())
        .bind(format!(
            "destroyed user key versions [{list}]; gc job {gc_job_id}"
        ))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Tombstone {
            pseudonym: *p,
            erased_at_ms: now,
            destroyed_versions,
            gc_job_id: gc_job_id.to_string(),
        })
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::job_row).transpose()
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state IN ('pending', 'running') ORDER BY created_at_ms",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::job_row).collect()
    }

    async fn update_job(
        &self,
        id: &str,
        state: JobState,
        done: u64,
        last_error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET state = ?, done = ?, last_error = ?, updated_at_ms = ? WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(i64::try_from(done).unwrap_or(i64::MAX))
        .bind(last_error)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn audit(
        &self,
        action: &str,
        p: Option<&Pseudonym>,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit (at_ms, action, pseudonym, detail) VALUES (?, ?, ?, ?)")
            .bind(now_ms())
            .bind(action)
            .bind(p.map(Pseudonym::to_string))
            .bind(detail)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
