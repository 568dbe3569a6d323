//! PostgreSQL key store, through sqlx: the store that several gateway
//! processes share. Same semantics as [`super::sqlite`], method by method;
//! where SQLite has one write lock, this store serialises what must be
//! serialised with transaction-scoped advisory locks and row locks:
//!
//! - a user's lock (erasure, key inserts and rotations, holds, rewraps):
//!   the tombstone check and the insert of a user key are one atomic step
//!   against an erasure, and a hold placed at the same moment as an
//!   erasure is seen by it;
//! - a shard's lock, shared by user-key writes (which check the shard's
//!   newest KEK version) and exclusive for KEK inserts and destruction, so
//!   no user key is written under a KEK version a rotation is leaving;
//! - the audit lock: the hash chain stays one chain whoever appends;
//! - a job kind's lock for exclusive job creation, and the job's row
//!   (`FOR UPDATE`) for every write conditional on its lease. A lease is
//!   taken by one conditional `UPDATE ... RETURNING`: of two processes
//!   racing for a job, one gets it.
//!
//! An erasure reserve ([`RESERVE_BYTES`] of filler in the table
//! `erasure_reserve`) is dropped when an erasure finds the disk full, and
//! the erasure tried again: uploads cannot use up the room an erasure
//! needs. It is made again once there is room.
//!
//! Every transaction that destroys or changes a user's key versions, or
//! destroys KEK versions, sends a notification on [`CHANNEL`] inside the
//! transaction, so that it is delivered only if it commits;
//! [`KeyStore::invalidations`] listens on it.
//!
//! A destroyed key's row leaves the table at commit, but its bytes stay in
//! dead tuples until vacuumed, in WAL segments until recycled, and in any
//! backup or WAL archive: the horizon is bounded by the KEK schedule (a
//! wrapped user key is useless once its KEK version is destroyed). See
//! README's "Erasure".

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{
    PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions, PgRow, Postgres,
};
use sqlx::{Row, Transaction};

use super::store::{
    audit_hash, AuditEntry, AuditRecord, DestroyKeks, HoldRecord, InsertOutcome, Invalidation,
    Invalidations, JobCheckpoint, JobRecord, JobState, KekInfo, KekRecord, KekRewrap, KeyStore,
    LeasedProgress, NewJob, PlaceHold, RequestRecord, StoreError, Tombstone, UserKeyRecord,
    UserKeyRewrap, UserKeyState, DECOMMISSIONED_META, JOB_KIND_ERASURE_GC, RESERVE_BYTES,
};
use crate::crypto::Pseudonym;
use crate::keys::unix_ms;

/// The notification channel of invalidations.
pub const CHANNEL: &str = "sealgate_invalidate";

/// The schema migrations of this build.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Advisory lock namespaces (the first key of the two-key form).
const LOCK_USER: i32 = 0x5347_0001;
const LOCK_SHARD: i32 = 0x5347_0002;
const LOCK_AUDIT: i32 = 0x5347_0003;
const LOCK_JOB_KIND: i32 = 0x5347_0004;
const LOCK_OPEN: i32 = 0x5347_0005;
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

/// The columns of a [`JobRecord`].
const JOB_SELECT: &str = "SELECT id, kind, pseudonym, params, state, done, total, cursor, \
     last_error, owner, lease_until_ms, created_at_ms, updated_at_ms FROM jobs";

/// Every column of an audit record.
const AUDIT_COLUMNS: &str =
    "id, at_ms, principal, action, pseudonym, outcome, detail, prev_hash, hash";

/// Settings of a PostgreSQL key store.
#[derive(Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database?...`
    pub url: String,
    /// Pool size (a listener takes one more connection of it).
    pub max_connections: u32,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
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

/// The PostgreSQL key store.
#[derive(Debug, Clone)]
pub struct PostgresKeyStore {
    pool: PgPool,
    /// Where, for messages (password redacted).
    place: String,
}

/// Classifies a PostgreSQL failure by its SQLSTATE: what may clear
/// (connection failures, timeouts, a read-only standby, lock conflicts,
/// serialisation failures) is `Unavailable`, a full disk `Full`, the rest
/// `Backend` (never retried as if it could succeed).
fn backend(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let message = format!("{} (SQLSTATE {code})", db.message());
            match code.as_str() {
                // disk_full
                "53100" => StoreError::Full(message),
                // read_only_sql_transaction (a standby, or a primary set
                // read-only), out_of_memory, too_many_connections,
                // lock_not_available, query_canceled (a statement timeout),
                // admin/crash shutdown, cannot_connect_now,
                // serialization_failure, deadlock_detected
                "25006" | "53200" | "53300" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
                | "40001" | "40P01" => StoreError::Unavailable(message),
                // connection_exception and its subclasses
                c if c.starts_with("08") => StoreError::Unavailable(message),
                _ => StoreError::Backend(message),
            }
        }
        // A certificate the configured roots do not accept, a name that
        // does not match: sqlx reports rustls' refusal as an I/O error, but
        // only the configuration (or the server's certificate) can mend it.
        sqlx::Error::Io(io) if tls_refusal(io) => StoreError::Backend(e.to_string()),
        // The connection closed before the server answered the TLS request
        // (sqlx reads the missing answer as byte 0): a server or proxy going
        // away, not one that speaks another protocol.
        sqlx::Error::Protocol(m) if m.contains("SSLRequest: 0x00 ") => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Whether an I/O error is rustls refusing the TLS session.
fn tls_refusal(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<tokio_rustls::rustls::Error>())
}

fn pseudonym_of(s: &str) -> Result<Pseudonym, StoreError> {
    Pseudonym::from_hex(s).map_err(|_| StoreError::Backend("corrupt pseudonym in key store".into()))
}

fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Backend("integer out of range in key store".into()))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The notification payload of an invalidation.
fn payload(i: Invalidation) -> String {
    match i {
        Invalidation::User(p) => format!("user:{p}"),
        Invalidation::Shard(s) => format!("shard:{s}"),
        Invalidation::All => "all".into(),
    }
}

/// An invalidation from a payload; anything unknown (a newer build's
/// notice) drops everything.
fn parse_payload(s: &str) -> Invalidation {
    if let Some(p) = s.strip_prefix("user:") {
        if let Ok(p) = Pseudonym::from_hex(p) {
            return Invalidation::User(p);
        }
    }
    if let Some(shard) = s.strip_prefix("shard:") {
        if let Ok(shard) = shard.parse() {
            return Invalidation::Shard(shard);
        }
    }
    Invalidation::All
}

type Tx = Transaction<'static, Postgres>;

impl PostgresKeyStore {
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
                    crate::keys::postgres::redact_message(&e.to_string(), &settings.url)
                ))
            })?
            .application_name("sealgate");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
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
        let store = Self { pool, place };
        store.migrate().await?;
        store.ensure_reserve().await;
        Ok(store)
    }

    /// Fills the erasure reserve up to [`RESERVE_BYTES`] if it is short
    /// (new, or given up by an erasure). On failure (a full disk) the next
    /// erasure on a full disk has no reserve to give up: logged, not fatal.
    async fn ensure_reserve(&self) {
        let result: Result<(), StoreError> = async {
            if usize::try_from(self.reserve_size().await?).unwrap_or(0) >= RESERVE_BYTES {
                return Ok(());
            }
            let mut tx = self.begin().await?;
            // One replica fills it; the others find it full.
            Self::lock(&mut tx, LOCK_RESERVE, 0).await?;
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
            Self::commit(tx).await
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
    async fn release_reserve(&self) -> bool {
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

    /// One erasure transaction; a repeated erasure returns the tombstone
    /// already there.
    async fn erase_once(
        &self,
        p: &Pseudonym,
        now: i64,
        gc_job_id: &str,
        principal: &str,
    ) -> Result<Tombstone, StoreError> {
        let mut tx = self.begin().await?;
        let erased = Self::erase_in(&mut tx, p, now, gc_job_id, principal).await?;
        Self::commit(tx).await?;
        Ok(match erased {
            Ok(t) | Err(t) => t,
        })
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

    /// A write transaction.
    async fn begin(&self) -> Result<Tx, StoreError> {
        self.pool.begin().await.map_err(backend)
    }

    async fn commit(tx: Tx) -> Result<(), StoreError> {
        tx.commit().await.map_err(backend)
    }

    /// Takes the user's lock until the end of the transaction.
    async fn lock_user(conn: &mut PgConnection, p: &Pseudonym) -> Result<(), StoreError> {
        Self::lock_named(conn, LOCK_USER, &p.to_string()).await
    }

    /// Takes the lock of kind `kind` named `name` (exclusive; names are
    /// hashed, so two names may share a lock) until the end of the
    /// transaction.
    async fn lock_named(conn: &mut PgConnection, kind: i32, name: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(kind)
            .bind(name)
            .execute(conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Takes lock `key` of kind `kind` (exclusive) until the end of the
    /// transaction.
    async fn lock(conn: &mut PgConnection, kind: i32, key: i32) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(kind)
            .bind(key)
            .execute(conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Takes the shards' locks (exclusive, in ascending order) until the
    /// end of the transaction.
    async fn lock_shards(conn: &mut PgConnection, shards: &[u32]) -> Result<(), StoreError> {
        let mut shards: Vec<i32> = shards.iter().map(|s| *s as i32).collect();
        shards.sort_unstable();
        shards.dedup();
        for shard in shards {
            Self::lock(conn, LOCK_SHARD, shard).await?;
        }
        Ok(())
    }

    /// Sends `i` to every listener when the transaction commits.
    async fn notify(conn: &mut PgConnection, i: Invalidation) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload(i))
            .execute(conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn audit_entry(row: &PgRow) -> Result<AuditEntry, StoreError> {
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
    fn audit_record(row: &PgRow) -> Result<AuditRecord, StoreError> {
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

    /// Appends `entry` to the chain inside the caller's transaction, under
    /// the audit lock (held to the end of the transaction): one chain
    /// whatever the number of processes appending.
    async fn append_audit(
        conn: &mut PgConnection,
        entry: &AuditEntry,
    ) -> Result<AuditRecord, StoreError> {
        Self::lock(conn, LOCK_AUDIT, 0).await?;
        let last = sqlx::query("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        let (id, prev_hash) = match last {
            None => (1, [0u8; 32]),
            Some(row) => {
                let id: i64 = row.get("id");
                let hash: String = row.get("hash");
                let hash = hex::decode(hash)
                    .ok()
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(i64_of(id))
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
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('audit_head', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(format!("{id} {}", hex::encode(hash)))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        Ok(AuditRecord {
            id,
            entry: entry.clone(),
            prev_hash,
            hash,
        })
    }

    fn hold_row(row: &PgRow) -> Result<HoldRecord, StoreError> {
        Ok(HoldRecord {
            pseudonym: pseudonym_of(row.get("pseudonym"))?,
            case_ref: row.get("case_ref"),
            placed_at_ms: row.get("placed_at_ms"),
            placed_by: row.get("placed_by"),
        })
    }

    async fn tombstone_in(
        conn: &mut PgConnection,
        p: &Pseudonym,
    ) -> Result<Option<Tombstone>, StoreError> {
        let row = sqlx::query(
            "SELECT erased_at_ms, destroyed_versions, gc_job_id FROM tombstones WHERE pseudonym = $1",
        )
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
    /// transaction under the user's lock and the shard's lock (shared):
    /// the user is erased, or a KEK rotation began after the caller chose
    /// its KEK version.
    async fn refuse_user_key(
        conn: &mut PgConnection,
        r: &UserKeyRecord,
    ) -> Result<Option<InsertOutcome>, StoreError> {
        Self::lock_user(conn, &r.pseudonym).await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
            .bind(LOCK_SHARD)
            .bind(r.shard as i32)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        let erased = sqlx::query("SELECT 1 FROM tombstones WHERE pseudonym = $1")
            .bind(r.pseudonym.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?
            .is_some();
        if erased {
            return Ok(Some(InsertOutcome::Erased));
        }
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM keks WHERE shard = $1")
                .bind(i64::from(r.shard))
                .fetch_one(&mut *conn)
                .await
                .map_err(backend)?;
        Ok(newest
            .is_some_and(|v| v > i64::from(r.kek_version))
            .then_some(InsertOutcome::StaleKek))
    }

    fn user_key_row(row: &PgRow) -> Result<UserKeyRecord, StoreError> {
        Ok(UserKeyRecord {
            pseudonym: pseudonym_of(row.get("pseudonym"))?,
            version: u32_of(row.get("version"))?,
            shard: u32_of(row.get("shard"))?,
            kek_version: u32_of(row.get("kek_version"))?,
            wrapped: row.get("wrapped"),
            state: UserKeyState::parse(row.get::<&str, _>("state"))?,
            created_at_ms: row.get("created_at_ms"),
        })
    }

    fn kek_row(row: &PgRow) -> Result<KekRecord, StoreError> {
        Ok(KekRecord {
            shard: u32_of(row.get("shard"))?,
            version: u32_of(row.get("version"))?,
            master_version: u32_of(row.get("master_version"))?,
            wrapped: row.get("wrapped"),
            created_at_ms: row.get("created_at_ms"),
        })
    }

    fn request_row(p: &Pseudonym, row: &PgRow) -> Result<RequestRecord, StoreError> {
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

    fn job_row(row: &PgRow) -> Result<JobRecord, StoreError> {
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

    async fn job_in(conn: &mut PgConnection, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(&format!("{JOB_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::job_row).transpose()
    }

    /// Whether `owner` holds the lease of unfinished job `id`; if so the
    /// job's row stays locked to the end of the transaction, so no claim
    /// takes the lease before the caller's writes commit.
    async fn holds_lease(
        conn: &mut PgConnection,
        id: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 FROM jobs WHERE id = $1 AND owner = $2 AND state IN ('pending', 'running')
             FOR UPDATE",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(conn)
        .await
        .map_err(backend)?
        .is_some())
    }

    /// Records a leased job's progress (the caller checked the lease).
    async fn write_progress(
        conn: &mut PgConnection,
        p: &LeasedProgress<'_>,
    ) -> Result<(), StoreError> {
        let c = &p.checkpoint;
        sqlx::query(
            "UPDATE jobs SET done = $1, total = $2, cursor = $3, last_error = $4, lease_until_ms = $5,
                             updated_at_ms = $6
             WHERE id = $7 AND owner = $8",
        )
        .bind(i64_of(c.done))
        .bind(i64_of(c.total))
        .bind(&c.cursor)
        .bind(&c.last_error)
        .bind(p.until_ms)
        .bind(unix_ms())
        .bind(p.id)
        .bind(p.owner)
        .execute(conn)
        .await
        .map_err(backend)?;
        Ok(())
    }

    /// Inserts KEK versions (one statement) unless they exist; how many
    /// were new. The caller holds their shards' locks.
    async fn insert_keks_in(
        conn: &mut PgConnection,
        records: &[KekRecord],
    ) -> Result<u64, StoreError> {
        let shards: Vec<i64> = records.iter().map(|r| i64::from(r.shard)).collect();
        let versions: Vec<i64> = records.iter().map(|r| i64::from(r.version)).collect();
        let masters: Vec<i64> = records
            .iter()
            .map(|r| i64::from(r.master_version))
            .collect();
        let wrapped: Vec<&[u8]> = records.iter().map(|r| r.wrapped.as_slice()).collect();
        let created: Vec<i64> = records.iter().map(|r| r.created_at_ms).collect();
        Ok(sqlx::query(
            "INSERT INTO keks (shard, version, master_version, wrapped, created_at_ms)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[])
             ON CONFLICT DO NOTHING",
        )
        .bind(shards)
        .bind(versions)
        .bind(masters)
        .bind(wrapped)
        .bind(created)
        .execute(conn)
        .await
        .map_err(backend)?
        .rows_affected())
    }

    async fn erase_in(
        conn: &mut PgConnection,
        p: &Pseudonym,
        now: i64,
        gc_job_id: &str,
        principal: &str,
    ) -> Result<Result<Tombstone, Tombstone>, StoreError> {
        Self::lock_user(conn, p).await?;
        if let Some(t) = Self::tombstone_in(conn, p).await? {
            return Ok(Err(t));
        }
        // Under the user's lock: no hold can be placed between this check
        // and the erasure.
        let cases: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM legal_holds WHERE pseudonym = $1")
                .bind(p.to_string())
                .fetch_one(&mut *conn)
                .await
                .map_err(backend)?;
        if cases > 0 {
            return Err(StoreError::LegalHold {
                cases: usize::try_from(cases).unwrap_or(usize::MAX),
            });
        }
        let mut destroyed_versions = sqlx::query_scalar::<_, i64>(
            "DELETE FROM user_keys WHERE pseudonym = $1 RETURNING version",
        )
        .bind(p.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        .into_iter()
        .map(u32_of)
        .collect::<Result<Vec<_>, _>>()?;
        destroyed_versions.sort_unstable();
        let list = destroyed_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query("DELETE FROM requests WHERE pseudonym = $1")
            .bind(p.to_string())
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO tombstones (pseudonym, erased_at_ms, destroyed_versions, gc_job_id)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(p.to_string())
        .bind(now)
        .bind(&list)
        .bind(gc_job_id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, pseudonym, state, done, last_error, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, 'pending', 0, '', $4, $5)",
        )
        .bind(gc_job_id)
        .bind(JOB_KIND_ERASURE_GC)
        .bind(p.to_string())
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        Self::append_audit(
            conn,
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
        Self::notify(conn, Invalidation::User(*p)).await?;
        Ok(Ok(Tombstone {
            pseudonym: *p,
            erased_at_ms: now,
            destroyed_versions,
            gc_job_id: gc_job_id.to_string(),
        }))
    }
}

/// `message` with the password of `url`, if any, replaced.
pub(crate) fn redact_message(message: &str, url: &str) -> String {
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

#[async_trait]
impl KeyStore for PostgresKeyStore {
    async fn request(
        &self,
        p: &Pseudonym,
        request: &[u8; 32],
        since_ms: i64,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT * FROM requests WHERE pseudonym = $1 AND request = $2 AND at_ms >= $3",
        )
        .bind(p.to_string())
        .bind(&request[..])
        .bind(since_ms)
        .fetch_optional(&self.pool)
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
        sqlx::query("DELETE FROM requests WHERE at_ms < $1")
            .bind(since_ms)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO requests (pseudonym, request, space, requested_id, object_id, size, etag, created_ms, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
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
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        let row = sqlx::query("SELECT * FROM requests WHERE pseudonym = $1 AND request = $2")
            .bind(r.pseudonym.to_string())
            .bind(&r.request[..])
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let held = Self::request_row(&r.pseudonym, &row)?;
        Self::commit(tx).await?;
        Ok(held)
    }

    async fn latest_kek(&self, shard: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keks WHERE shard = $1 ORDER BY version DESC LIMIT 1")
            .bind(i64::from(shard))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::kek_row).transpose()
    }

    async fn kek(&self, shard: u32, version: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keks WHERE shard = $1 AND version = $2")
            .bind(i64::from(shard))
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(Self::kek_row).transpose()
    }

    async fn insert_kek(&self, r: &KekRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        Self::lock_shards(&mut tx, &[r.shard]).await?;
        let inserted = Self::insert_keks_in(&mut tx, std::slice::from_ref(r)).await? == 1;
        Self::commit(tx).await?;
        Ok(inserted)
    }

    async fn user_keys(&self, p: &Pseudonym) -> Result<Vec<UserKeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM user_keys WHERE pseudonym = $1 ORDER BY version")
            .bind(p.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(Self::user_key_row).collect()
    }

    async fn insert_user_key(&self, r: &UserKeyRecord) -> Result<InsertOutcome, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(refused) = Self::refuse_user_key(&mut tx, r).await? {
            Self::commit(tx).await?;
            return Ok(refused);
        }
        let inserted = sqlx::query(
            "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
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
        if inserted {
            Self::append_audit(
                &mut tx,
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
        Self::commit(tx).await?;
        Ok(if inserted {
            InsertOutcome::Inserted
        } else {
            InsertOutcome::AlreadyExists
        })
    }

    async fn tombstone(&self, p: &Pseudonym) -> Result<Option<Tombstone>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
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
                if !self.release_reserve().await {
                    return Err(StoreError::Full(m));
                }
                self.erase_once(p, now, gc_job_id, principal).await?
            }
            other => other?,
        };
        self.ensure_reserve().await;
        Ok(tombstone)
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        Self::job_in(&mut conn, id).await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{JOB_SELECT} WHERE state IN ('pending', 'running') ORDER BY created_at_ms, id"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::job_row).collect()
    }

    async fn list_jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{JOB_SELECT} WHERE ($1::text IS NULL OR state = $1)
             ORDER BY created_at_ms DESC, id LIMIT $2"
        ))
        .bind(state.map(JobState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::job_row).collect()
    }

    async fn job_counts(&self) -> Result<Vec<(String, JobState, u64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state")
            .fetch_all(&self.pool)
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
        let now = unix_ms();
        let mut tx = self.begin().await?;
        if exclusive {
            Self::lock_named(&mut tx, LOCK_JOB_KIND, &job.kind).await?;
            let row = sqlx::query(&format!(
                "{JOB_SELECT} WHERE kind = $1 AND state IN ('pending', 'running')
                 ORDER BY created_at_ms LIMIT 1"
            ))
            .bind(&job.kind)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
            if let Some(row) = row {
                let existing = Self::job_row(&row)?;
                Self::commit(tx).await?;
                return Ok(existing);
            }
        }
        sqlx::query(
            "INSERT INTO jobs (id, kind, pseudonym, params, state, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6)",
        )
        .bind(&job.id)
        .bind(&job.kind)
        .bind(job.pseudonym.as_ref().map(Pseudonym::to_string))
        .bind(&job.params)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Self::append_audit(
            &mut tx,
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
        let created = Self::job_in(&mut tx, &job.id)
            .await?
            .ok_or_else(|| StoreError::Backend("job vanished in its own transaction".into()))?;
        Self::commit(tx).await?;
        Ok(created)
    }

    async fn claim_job(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        // One conditional UPDATE: a concurrent claim waits for this row's
        // lock, then finds the lease held and updates nothing.
        let row = sqlx::query(
            "UPDATE jobs SET owner = $1, lease_until_ms = $2, state = 'running', updated_at_ms = $3
             WHERE id = $4 AND state IN ('pending', 'running')
               AND (owner IS NULL OR owner = $1 OR lease_until_ms < $3)
             RETURNING id, kind, pseudonym, params, state, done, total, cursor, last_error, owner,
                       lease_until_ms, created_at_ms, updated_at_ms",
        )
        .bind(owner)
        .bind(until_ms)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(Self::job_row).transpose()
    }

    async fn renew_job_lease(
        &self,
        id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE jobs SET lease_until_ms = $1
             WHERE id = $2 AND owner = $3 AND state IN ('pending', 'running')",
        )
        .bind(until_ms)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1)
    }

    async fn checkpoint_job(
        &self,
        id: &str,
        owner: &str,
        c: &JobCheckpoint,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE jobs SET done = $1, total = $2, cursor = $3, last_error = $4, lease_until_ms = $5,
                             updated_at_ms = $6
             WHERE id = $7 AND owner = $8 AND state IN ('pending', 'running')",
        )
        .bind(i64_of(c.done))
        .bind(i64_of(c.total))
        .bind(&c.cursor)
        .bind(&c.last_error)
        .bind(until_ms)
        .bind(unix_ms())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1)
    }

    async fn finish_job(
        &self,
        id: &str,
        owner: &str,
        state: JobState,
        last_error: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE jobs SET state = $1, last_error = $2, owner = NULL, lease_until_ms = 0,
                             updated_at_ms = $3
             WHERE id = $4 AND owner = $5 AND state IN ('pending', 'running')",
        )
        .bind(state.as_str())
        .bind(last_error)
        .bind(unix_ms())
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1)
    }

    async fn update_job(
        &self,
        id: &str,
        state: JobState,
        done: u64,
        last_error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET state = $1, done = $2, last_error = $3, owner = NULL, lease_until_ms = 0,
                             updated_at_ms = $4
             WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(i64_of(done))
        .bind(last_error)
        .bind(unix_ms())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn keks_below_master(
        &self,
        master_version: u32,
        limit: u32,
    ) -> Result<Vec<KekRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM keks WHERE master_version < $1 ORDER BY shard, version LIMIT $2",
        )
        .bind(i64::from(master_version))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::kek_row).collect()
    }

    async fn kek_counts_by_master(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT master_version, COUNT(*) AS n FROM keks GROUP BY master_version ORDER BY master_version",
        )
        .fetch_all(&self.pool)
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
            Self::commit(tx).await?;
            return Ok(false);
        }
        let shards: Vec<i64> = rewraps.iter().map(|r| i64::from(r.shard)).collect();
        let versions: Vec<i64> = rewraps.iter().map(|r| i64::from(r.version)).collect();
        let from: Vec<i64> = rewraps.iter().map(|r| i64::from(r.from_master)).collect();
        let to: Vec<i64> = rewraps.iter().map(|r| i64::from(r.to_master)).collect();
        let wrapped: Vec<&[u8]> = rewraps.iter().map(|r| r.wrapped.as_slice()).collect();
        sqlx::query(
            "UPDATE keks k SET master_version = r.to_master, wrapped = r.wrapped
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])
                  AS r(shard, version, from_master, to_master, wrapped)
             WHERE k.shard = r.shard AND k.version = r.version AND k.master_version = r.from_master",
        )
        .bind(shards)
        .bind(versions)
        .bind(from)
        .bind(to)
        .bind(wrapped)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Self::write_progress(&mut tx, progress).await?;
        Self::commit(tx).await?;
        Ok(true)
    }

    async fn kek_infos(&self) -> Result<Vec<KekInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT shard, version, master_version, created_at_ms FROM keks ORDER BY shard, version",
        )
        .fetch_all(&self.pool)
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
            Self::commit(tx).await?;
            return Ok(false);
        }
        let shards: Vec<u32> = records.iter().map(|r| r.shard).collect();
        Self::lock_shards(&mut tx, &shards).await?;
        Self::insert_keks_in(&mut tx, records).await?;
        if !records.is_empty() {
            let made: Vec<String> = records
                .iter()
                .map(|r| format!("{}:{}", r.shard, r.version))
                .collect();
            Self::append_audit(
                &mut tx,
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
        Self::commit(tx).await?;
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
        let shards: Vec<i64> = targets.iter().map(|(s, _)| i64::from(*s)).collect();
        let versions: Vec<i64> = targets.iter().map(|(_, v)| i64::from(*v)).collect();
        // Through the shard index, each shard's rows filtered by KEK version
        // (rows already moved are read again by every batch: fine for a few
        // shards; a rotation of every shard reads in table order instead).
        let rows = sqlx::query(
            "SELECT u.* FROM unnest($1::bigint[], $2::bigint[]) AS t(shard, target)
             CROSS JOIN LATERAL (
                 SELECT * FROM user_keys u WHERE u.shard = t.shard AND u.kek_version < t.target
             ) u
             LIMIT $3",
        )
        .bind(shards)
        .bind(versions)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::user_key_row).collect()
    }

    async fn user_keys_in_order(
        &self,
        after: Option<(Pseudonym, u32)>,
        limit: u32,
    ) -> Result<Vec<UserKeyRecord>, StoreError> {
        let (p, version) = after.map_or((String::new(), 0), |(p, v)| (p.to_string(), v));
        let rows = sqlx::query(
            "SELECT * FROM user_keys WHERE (pseudonym, version) > ($1, $2)
             ORDER BY pseudonym, version LIMIT $3",
        )
        .bind(p)
        .bind(i64::from(version))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::user_key_row).collect()
    }

    async fn count_user_keys(&self, shards: &[u32]) -> Result<u64, StoreError> {
        let shards: Vec<i64> = shards.iter().map(|s| i64::from(*s)).collect();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_keys WHERE shard = ANY($1)")
            .bind(shards)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn rewrap_user_keys(
        &self,
        rewraps: &[UserKeyRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if !Self::holds_lease(&mut tx, progress.id, progress.owner).await? {
            Self::commit(tx).await?;
            return Ok(false);
        }
        let pseudonyms: Vec<String> = rewraps.iter().map(|r| r.pseudonym.to_string()).collect();
        let versions: Vec<i64> = rewraps.iter().map(|r| i64::from(r.version)).collect();
        let shards: Vec<i64> = rewraps.iter().map(|r| i64::from(r.shard)).collect();
        let from: Vec<i64> = rewraps.iter().map(|r| i64::from(r.from_kek)).collect();
        let to: Vec<i64> = rewraps.iter().map(|r| i64::from(r.to_kek)).collect();
        let wrapped: Vec<&[u8]> = rewraps.iter().map(|r| r.wrapped.as_slice()).collect();
        let first = pseudonyms.iter().min().cloned().unwrap_or_default();
        let last = pseudonyms.iter().max().cloned().unwrap_or_default();
        // One statement for the batch; each row only if still under its
        // old KEK version (an erased user's row stays gone). The bounds on
        // the pseudonym keep the planner from hashing the whole table to
        // join a batch: it reads the batch's range of the primary key, the
        // neighbouring rows a rotation's in-order batch is made of.
        sqlx::query(
            "UPDATE user_keys u SET kek_version = r.to_kek, wrapped = r.wrapped
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[])
                  AS r(pseudonym, version, shard, from_kek, to_kek, wrapped)
             WHERE u.pseudonym = r.pseudonym AND u.version = r.version AND u.shard = r.shard
               AND u.kek_version = r.from_kek
               AND u.pseudonym BETWEEN $7 AND $8",
        )
        .bind(pseudonyms)
        .bind(versions)
        .bind(shards)
        .bind(from)
        .bind(to)
        .bind(wrapped)
        .bind(first)
        .bind(last)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Self::write_progress(&mut tx, progress).await?;
        Self::commit(tx).await?;
        Ok(true)
    }

    async fn destroy_keks_below(
        &self,
        targets: &[(u32, u32)],
        principal: &str,
    ) -> Result<DestroyKeks, StoreError> {
        let mut tx = self.begin().await?;
        let shard_list: Vec<u32> = targets.iter().map(|(s, _)| *s).collect();
        // Exclusive: no user key is written under these shards meanwhile.
        Self::lock_shards(&mut tx, &shard_list).await?;
        let shards: Vec<i64> = targets.iter().map(|(s, _)| i64::from(*s)).collect();
        let versions: Vec<i64> = targets.iter().map(|(_, v)| i64::from(*v)).collect();
        let in_use: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM unnest($1::bigint[], $2::bigint[]) AS t(shard, target)
             JOIN user_keys u ON u.shard = t.shard AND u.kek_version < t.target",
        )
        .bind(&shards)
        .bind(&versions)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if in_use > 0 {
            Self::commit(tx).await?;
            return Ok(DestroyKeks::StillInUse(u64::try_from(in_use).unwrap_or(0)));
        }
        let rows = sqlx::query(
            "DELETE FROM keks k USING unnest($1::bigint[], $2::bigint[]) AS t(shard, target)
             WHERE k.shard = t.shard AND k.version < t.target
             RETURNING k.shard, k.version",
        )
        .bind(&shards)
        .bind(&versions)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut destroyed = rows
            .iter()
            .map(|row| Ok((u32_of(row.get(0))?, u32_of(row.get(1))?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        destroyed.sort_unstable();
        if !destroyed.is_empty() {
            let list: Vec<String> = destroyed.iter().map(|(s, v)| format!("{s}:{v}")).collect();
            Self::append_audit(
                &mut tx,
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
            let mut shards: Vec<u32> = destroyed.iter().map(|(s, _)| *s).collect();
            shards.dedup();
            let payloads: Vec<String> = shards
                .into_iter()
                .map(|s| payload(Invalidation::Shard(s)))
                .collect();
            sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(payloads)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        Self::commit(tx).await?;
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
            Self::commit(tx).await?;
            return Ok(refused);
        }
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM user_keys WHERE pseudonym = $1")
                .bind(&p)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        if highest.unwrap_or(0) + 1 != i64::from(r.version) {
            Self::commit(tx).await?;
            return Ok(InsertOutcome::AlreadyExists);
        }
        sqlx::query("UPDATE user_keys SET state = $1 WHERE pseudonym = $2 AND state = $3")
            .bind(UserKeyState::DecryptOnly.as_str())
            .bind(&p)
            .bind(UserKeyState::Active.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        sqlx::query(
            "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p)
        .bind(i64::from(r.version))
        .bind(i64::from(r.shard))
        .bind(i64::from(r.kek_version))
        .bind(&r.wrapped)
        .bind(UserKeyState::Active.as_str())
        .bind(r.created_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Self::append_audit(
            &mut tx,
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
        Self::notify(&mut tx, Invalidation::User(r.pseudonym)).await?;
        Self::commit(tx).await?;
        Ok(InsertOutcome::Inserted)
    }

    async fn retire_user_keys_below(
        &self,
        p: &Pseudonym,
        version: u32,
    ) -> Result<Vec<u32>, StoreError> {
        let mut tx = self.begin().await?;
        Self::lock_user(&mut tx, p).await?;
        let changed = sqlx::query(
            "UPDATE user_keys SET state = $1 WHERE pseudonym = $2 AND version < $3 AND state != $1
               AND state != $4",
        )
        .bind(UserKeyState::Retiring.as_str())
        .bind(p.to_string())
        .bind(i64::from(version))
        .bind(UserKeyState::Active.as_str())
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected();
        let retiring: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM user_keys WHERE pseudonym = $1 AND state = $2 ORDER BY version",
        )
        .bind(p.to_string())
        .bind(UserKeyState::Retiring.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        if changed > 0 {
            Self::notify(&mut tx, Invalidation::User(*p)).await?;
        }
        Self::commit(tx).await?;
        retiring.into_iter().map(u32_of).collect()
    }

    async fn destroy_retiring_user_keys(
        &self,
        p: &Pseudonym,
        principal: &str,
    ) -> Result<Vec<u32>, StoreError> {
        let mut tx = self.begin().await?;
        Self::lock_user(&mut tx, p).await?;
        let versions: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM user_keys WHERE pseudonym = $1 AND state = $2 RETURNING version",
        )
        .bind(p.to_string())
        .bind(UserKeyState::Retiring.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let mut versions = versions
            .into_iter()
            .map(u32_of)
            .collect::<Result<Vec<u32>, _>>()?;
        versions.sort_unstable();
        if !versions.is_empty() {
            Self::append_audit(
                &mut tx,
                &AuditEntry {
                    at_ms: unix_ms(),
                    principal: principal.into(),
                    action: "destroy_user_key_versions".into(),
                    pseudonym: Some(*p),
                    outcome: "ok".into(),
                    detail: format!("rewrapped; versions {versions:?} destroyed"),
                },
            )
            .await?;
            Self::notify(&mut tx, Invalidation::User(*p)).await?;
        }
        Self::commit(tx).await?;
        Ok(versions)
    }

    async fn decommission(&self, at_ms: i64, principal: &str) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin().await?;
        let users = sqlx::query("DELETE FROM user_keys")
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        let keks = sqlx::query("DELETE FROM keks")
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(DECOMMISSIONED_META)
            .bind(at_ms.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        Self::append_audit(
            &mut tx,
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
        Self::notify(&mut tx, Invalidation::All).await?;
        Self::commit(tx).await?;
        Ok((users, keks))
    }

    async fn meta_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let held: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        Self::commit(tx).await?;
        Ok(held)
    }

    async fn meta_values(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // left() rather than LIKE: a prefix may hold `_` or `%`; byte order
        // whatever the database's collation.
        sqlx::query_as(
            "SELECT key, value FROM meta WHERE left(key, length($1)) = $1 ORDER BY key COLLATE \"C\"",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)
    }

    async fn delete_meta(&self, key: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("DELETE FROM meta WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(backend)?
            .rows_affected()
            > 0)
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let mut tx = self.begin().await?;
        let record = Self::append_audit(&mut tx, entry).await?;
        Self::commit(tx).await?;
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
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE id > $1
               AND ($2::text IS NULL OR pseudonym = $2)
               AND ($3::bigint IS NULL OR at_ms >= $3) ORDER BY id LIMIT $4"
        ))
        .bind(i64_of(after_id))
        .bind(p.map(Pseudonym::to_string))
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::audit_record).collect()
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let value: Option<String> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'audit_head'")
                .fetch_optional(&self.pool)
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
        Self::lock_user(&mut tx, &h.pseudonym).await?;
        if Self::tombstone_in(&mut tx, &h.pseudonym).await?.is_some() {
            Self::commit(tx).await?;
            return Ok(PlaceHold::Erased);
        }
        let existing =
            sqlx::query("SELECT * FROM legal_holds WHERE pseudonym = $1 AND case_ref = $2")
                .bind(h.pseudonym.to_string())
                .bind(&h.case_ref)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if let Some(row) = existing {
            let existing = Self::hold_row(&row)?;
            Self::commit(tx).await?;
            return Ok(PlaceHold::Exists(existing));
        }
        sqlx::query(
            "INSERT INTO legal_holds (pseudonym, case_ref, placed_at_ms, placed_by)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(h.pseudonym.to_string())
        .bind(&h.case_ref)
        .bind(h.placed_at_ms)
        .bind(&h.placed_by)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        Self::append_audit(
            &mut tx,
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
        Self::commit(tx).await?;
        Ok(PlaceHold::Placed)
    }

    async fn release_hold(
        &self,
        p: &Pseudonym,
        case_ref: &str,
        principal: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        Self::lock_user(&mut tx, p).await?;
        let released =
            sqlx::query("DELETE FROM legal_holds WHERE pseudonym = $1 AND case_ref = $2")
                .bind(p.to_string())
                .bind(case_ref)
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected()
                > 0;
        if released {
            Self::append_audit(
                &mut tx,
                &AuditEntry {
                    at_ms: unix_ms(),
                    principal: principal.to_string(),
                    action: "release_hold".into(),
                    pseudonym: Some(*p),
                    outcome: "ok".into(),
                    detail: format!("case {case_ref}"),
                },
            )
            .await?;
        }
        Self::commit(tx).await?;
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
             WHERE ($1::text IS NULL OR pseudonym = $1) AND (pseudonym, case_ref) > ($2, $3)
             ORDER BY pseudonym, case_ref LIMIT $4",
        )
        .bind(p.map(Pseudonym::to_string))
        .bind(after_p)
        .bind(after_case)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(Self::hold_row).collect()
    }

    async fn store_id(&self) -> Result<Option<String>, StoreError> {
        self.meta_value("store_id").await
    }

    async fn init_store_id(&self, id: &str) -> Result<String, StoreError> {
        self.set_meta_if_absent("store_id", id).await
    }

    async fn holds_keys(&self) -> Result<bool, StoreError> {
        let any: Option<i32> = sqlx::query_scalar("SELECT 1 FROM keks LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        Ok(any.is_some())
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        let read_only: bool = sqlx::query_scalar(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        if read_only {
            return Err(StoreError::Unavailable(format!(
                "the key store at {} is read-only (a standby, or set read-only)",
                self.place
            )));
        }
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn invalidations(&self) -> Result<Option<Invalidations>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(backend)?;
        listener.listen(CHANNEL).await.map_err(backend)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let next = tokio::select! {
                    next = listener.try_recv() => next,
                    () = tx.closed() => return,
                };
                let invalidation = match next {
                    Ok(Some(n)) => {
                        failures = 0;
                        parse_payload(n.payload())
                    }
                    // The connection was lost (and is re-established by
                    // the next call): notices may have been missed.
                    Ok(None) => Invalidation::All,
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, "key store invalidation listener failed; reconnecting");
                        // Backoff before reconnecting, capped at 5 s.
                        let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = tx.closed() => return,
                        }
                        Invalidation::All
                    }
                };
                if tx.send(invalidation).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://sg:s3cr%40t@db.internal:5432/keys?sslmode=require"),
            "postgres://sg:***@db.internal:5432/keys?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/keys?user=sg&password=hunter2"),
            "postgres://db/keys?user=sg&password=***"
        );
        assert_eq!(redact_url("postgres://sg@db/keys"), "postgres://sg@db/keys");
        let s = PgSettings {
            url: "postgres://sg:hunter2@db/keys".into(),
            max_connections: 4,
        };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_connection_closed_during_tls_negotiation_is_unavailable() {
        // As sqlx 0.8 words it, with where it was raised.
        let closed = sqlx::Error::Protocol(
            "unexpected response from SSLRequest: 0x00 (sqlx_postgres::connection::tls:95)".into(),
        );
        assert!(matches!(backend(closed), StoreError::Unavailable(_)));
        // Something else at the address (an HTTP server answers 'H').
        let other = sqlx::Error::Protocol(
            "unexpected response from SSLRequest: 0x48 (sqlx_postgres::connection::tls:95)".into(),
        );
        assert!(matches!(backend(other), StoreError::Backend(_)));
    }

    #[test]
    fn payloads_round_trip() {
        let p = Pseudonym::from_hex(&"ab".repeat(32)).unwrap();
        for i in [
            Invalidation::User(p),
            Invalidation::Shard(17),
            Invalidation::All,
        ] {
            assert_eq!(parse_payload(&payload(i)), i);
        }
        assert_eq!(parse_payload("from a newer build"), Invalidation::All);
    }
}
