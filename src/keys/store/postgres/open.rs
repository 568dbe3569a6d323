//! Opening a PostgreSQL key store: its settings, the connection pool, the
//! schema migrations under a lock of their own, and the erasure reserve.
//!
//! TLS is what the URL says (`sslmode`, `sslrootcert`, read by sqlx). The
//! migrations are `migrations/postgres/` at the repository root, embedded
//! by `sqlx::migrate!`; an empty database is initialised, and one holding
//! other tables where the store's belong, or migrations newer than this
//! build, is refused. The reserve is given up by dropping its table (a
//! DROP deletes catalog rows and needs no new space) and filled again
//! once there is room.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};

use super::{backend, lock, PgEngine};
use crate::keys::store::{SqlStore, StoreError, RESERVE_BYTES};

/// The schema migrations of this build.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Advisory locks of opening and of the reserve (see the engine's).
pub(super) const LOCK_OPEN: i32 = 0x5347_0005;
const LOCK_RESERVE: i32 = 0x5347_0006;
/// Bytes of one row of the erasure reserve: two rows fill a page, none is
/// compressed or moved out of line (`STORAGE PLAIN`).
const RESERVE_ROW: usize = 4000;

/// The tables of this store's schema.
const TABLES: &[&str] = &[
    "keks",
    "user_keys",
    "tombstones",
    "jobs",
    "requests",
    "meta",
    "legal_holds",
    "audit",
    "erasure_reserve",
];

/// Settings of a PostgreSQL key store.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?...`
    pub url: String,
    /// Pool size (a listener takes one more connection of it).
    pub max_connections: u32,
    /// How long a call waits for a connection, and for each statement's
    /// answer, before it fails `Unavailable` (`keystore.acquire_timeout_ms`).
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// `url` with any password replaced by `***` (in the authority and in a
/// `password` query parameter), for messages and logs.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                let end = rest_start + at;
                out.replace_range(start..end, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

/// `message` with the password of `url`, if any, replaced.
fn redact_message(message: &str, url: &str) -> String {
    match PgConnectOptions::from_str(url) {
        Ok(_) => {
            // The password as written in the URL (percent-encoded or not).
            let password = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
                .and_then(|auth| auth.rsplit_once('@'))
                .and_then(|(userinfo, _)| userinfo.split_once(':'))
                .map(|(_, pw)| pw.to_string())
                .filter(|pw| !pw.is_empty());
            match password {
                Some(pw) => message.replace(&pw, "***"),
                None => message.to_string(),
            }
        }
        Err(_) => message.to_string(),
    }
}

impl SqlStore<PgEngine> {
    /// Connects to the key store at `settings.url` (see [`PgEngine::open`]).
    ///
    /// # Errors
    /// [`StoreError`]: unreachable (`Unavailable`), refused (`Backend`,
    /// saying what is wrong and what to do).
    pub async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        Ok(Self::new(PgEngine::open(settings).await?))
    }
}

impl PgEngine {
    /// Connects to the database at `settings.url`: applies this build's
    /// migrations to a sealgate database or to an empty one (the first
    /// start), and refuses a database whose migrations are newer than this
    /// build or that holds other tables where this store's belong.
    ///
    /// # Errors
    /// [`StoreError`]: unreachable (`Unavailable`), refused (`Backend`,
    /// saying what is wrong and what to do).
    pub async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let place = redact_url(&settings.url);
        let options = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "keystore.url {place}: not a PostgreSQL URL: {}",
                    redact_message(&e.to_string(), &settings.url)
                ))
            })?
            .application_name("sealgate");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| match backend(e) {
                StoreError::Unavailable(m) => {
                    StoreError::Unavailable(format!("cannot reach the key store at {place}: {m}"))
                }
                StoreError::Backend(m) => {
                    StoreError::Backend(format!("cannot open the key store at {place}: {m}"))
                }
                other => other,
            })?;
        let engine = Self {
            pool,
            place,
            timeout: settings.acquire_timeout,
            options,
            probe: std::sync::Arc::default(),
        };
        engine.migrate().await?;
        engine.fill_reserve().await;
        Ok(engine)
    }

    /// Fills the erasure reserve up to [`RESERVE_BYTES`] if it is short
    /// (new, or given up by an erasure). On failure (a full disk) the next
    /// erasure on a full disk has no reserve to give up: logged, not fatal.
    pub(super) async fn fill_reserve(&self) {
        let result: Result<(), StoreError> = async {
            if usize::try_from(self.reserve_size().await?).unwrap_or(0) >= RESERVE_BYTES {
                return Ok(());
            }
            let mut tx = self.pool.begin().await.map_err(backend)?;
            // One replica fills it; the others find it full.
            lock(&mut tx, LOCK_RESERVE, 0).await?;
            // Given up by an erasure: made again.
            for sql in [
                "CREATE TABLE IF NOT EXISTS erasure_reserve (filler BYTEA NOT NULL)",
                "ALTER TABLE erasure_reserve ALTER COLUMN filler SET STORAGE PLAIN",
            ] {
                sqlx::query(sql).execute(&mut *tx).await.map_err(backend)?;
            }
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM erasure_reserve")
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
            let want = RESERVE_BYTES.div_ceil(RESERVE_ROW);
            let missing = want.saturating_sub(usize::try_from(rows).unwrap_or(0));
            if missing > 0 {
                // Random, so that nothing along the way compresses it.
                let mut filler = vec![0u8; missing * RESERVE_ROW];
                aws_lc_rs::rand::fill(&mut filler)
                    .map_err(|_| StoreError::Backend("no random bytes for the reserve".into()))?;
                let chunks: Vec<&[u8]> = filler.chunks(RESERVE_ROW).collect();
                sqlx::query(
                    "INSERT INTO erasure_reserve (filler) SELECT * FROM unnest($1::bytea[])",
                )
                .bind(chunks)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
            tx.commit().await.map_err(backend)
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, key_store = %self.place, "cannot fill the erasure reserve");
        }
    }

    /// The erasure reserve's bytes (0 while it is given up).
    async fn reserve_size(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COALESCE(pg_relation_size(to_regclass('erasure_reserve')), 0)")
            .fetch_one(&self.pool)
            .await
            .map_err(backend)
    }

    /// Gives up the erasure reserve: the table is dropped, and its file's
    /// space goes back to the file system when that commits. A DROP only
    /// deletes catalog rows, which needs no new space; a TRUNCATE would
    /// write a new catalog row, which on a full disk can fail. Whether
    /// there was a reserve to give up.
    pub(super) async fn drop_reserve(&self) -> bool {
        if !matches!(self.reserve_size().await, Ok(size) if size > 0) {
            return false;
        }
        match sqlx::query("DROP TABLE IF EXISTS erasure_reserve")
            .execute(&self.pool)
            .await
        {
            Ok(_) => {
                tracing::warn!(key_store = %self.place, "key store disk full: erasure reserve released");
                true
            }
            Err(e) => {
                tracing::warn!(error = %backend(e), key_store = %self.place, "cannot release the erasure reserve");
                false
            }
        }
    }

    /// Applies the migrations under a lock of their own, after checking
    /// that the database is this store's or empty.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_lock($1, 0)")
            .bind(LOCK_OPEN)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        let result = self.migrate_locked(&mut conn).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, 0)")
            .bind(LOCK_OPEN)
            .execute(&mut *conn)
            .await
            .map_err(backend);
        result.and(unlocked.map(|_| ()))
    }

    async fn migrate_locked(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let place = &self.place;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() ORDER BY table_name",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
        let ours = tables.iter().any(|t| t == "_sqlx_migrations");
        if !ours && !tables.is_empty() {
            let clash: Vec<&str> = tables
                .iter()
                .map(String::as_str)
                .filter(|t| TABLES.contains(t))
                .collect();
            let what = if clash.is_empty() {
                format!("other tables ({})", tables.join(", "))
            } else {
                format!("tables named like this store's ({})", clash.join(", "))
            };
            return Err(StoreError::Backend(format!(
                "the key store database {place} holds {what} but no sealgate schema: it is not a \
                 sealgate key store; point keystore.url at an empty database (created with \
                 CREATE DATABASE) or at this deployment's key store"
            )));
        }
        let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        MIGRATOR.run_direct(conn).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::Backend(format!(
                "the key store database {place} has schema migration {v}, which this build \
                 does not know (it knows up to {latest}): it was migrated by a newer sealgate \
                 (or holds another program's migrations); run that version or a newer one"
            )),
            sqlx::migrate::MigrateError::VersionMismatch(v) => StoreError::Backend(format!(
                "the key store database {place} has a schema migration {v} that differs from \
                 this build's: it was not made by sealgate; point keystore.url at this \
                 deployment's key store"
            )),
            sqlx::migrate::MigrateError::Dirty(v) => StoreError::Backend(format!(
                "the key store database {place} has schema migration {v} partly applied; \
                 restore the database from a backup"
            )),
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => match backend(e) {
                StoreError::Backend(m) => StoreError::Backend(format!(
                    "cannot migrate the key store database {place}: {m}"
                )),
                other => other,
            },
            other => StoreError::Backend(format!(
                "cannot migrate the key store database {place}: {other}"
            )),
        })
    }
}
