//! PostgreSQL, the engine of the key store that several gateway processes
//! share, through sqlx. The store's rules are [`SqlStore`]'s; this file says
//! how PostgreSQL keeps them:
//!
//! - the store's locks are transaction-scoped advisory locks (a user's, a
//!   shard's shared or exclusive, the audit chain's, a job kind's), and
//!   lease checks lock the job's row (`FOR UPDATE`);
//! - a commit tells the other replicas by `pg_notify` on [`CHANNEL`], sent
//!   inside the transaction so that it is delivered only if it commits;
//!   [`Engine::invalidations`] listens on it;
//! - an erasure reserve ([`RESERVE_BYTES`](super::RESERVE_BYTES) of filler in the table
//!   `erasure_reserve`) is dropped when an erasure finds the disk full, and
//!   made again once there is room;
//! - bulk statements bind arrays (`unnest`);
//! - failures are classified by SQLSTATE: connection failures, timeouts, a
//!   read-only standby, lock conflicts and serialisation failures are
//!   `Unavailable`, a full disk (`53100`) `Full`, the rest `Backend`; a
//!   server certificate that rustls refuses is `Backend` (only the
//!   configuration can mend it), other I/O failures `Unavailable`.
//!
//! A destroyed key's row leaves the table at commit, but its bytes stay in
//! dead tuples until vacuumed, in WAL segments until recycled, and in any
//! backup or WAL archive: the horizon is bounded by the KEK schedule (a
//! wrapped user key is useless once its KEK version is destroyed). See
//! docs/erasure-and-keys.md, "Erasure".

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgRow, Postgres};
use sqlx::Connection;
use sqlx::{Row, Transaction};

mod notify;
mod open;

use notify::payload;
pub use notify::CHANNEL;

pub use open::{redact_url, PgSettings};

use super::engine::{bind, Engine, Param};
use super::{
    Invalidation, Invalidations, KekRecord, KekRewrap, SqlStore, StoreError, UserKeyRewrap,
};
use crate::crypto::Pseudonym;

/// The PostgreSQL key store.
pub type PostgresKeyStore = SqlStore<PgEngine>;

/// Advisory lock namespaces (the first key of the two-key form).
pub(super) const LOCK_USER: i32 = 0x5347_0001;
const LOCK_SHARD: i32 = 0x5347_0002;
const LOCK_AUDIT: i32 = 0x5347_0003;
const LOCK_JOB_KIND: i32 = 0x5347_0004;
/// The PostgreSQL engine: a pool over one database.
#[derive(Debug, Clone)]
pub struct PgEngine {
    pool: PgPool,
    /// Where, for messages (password redacted).
    place: String,
    /// How long one statement (or the wait for a connection) may take.
    timeout: Duration,
    /// What the pool connects with: the health probe's connection too.
    options: PgConnectOptions,
    /// The health probe's connection, outside the pool (made on demand).
    probe: Arc<tokio::sync::Mutex<Option<PgConnection>>>,
}

/// The longest a health probe waits for the database (less if
/// `keystore.acquire_timeout_ms` is less): with probes a second apart, a
/// silent database turns health NOT_SERVING within two seconds.
const PROBE_DEADLINE: Duration = Duration::from_millis(500);

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

type Tx = Transaction<'static, Postgres>;

impl PgEngine {
    /// `call`, failed `Unavailable` if it has not ended within the
    /// configured timeout: a database that stops answering (a network that
    /// drops packets, a server that hangs) fails calls in that time, not in
    /// the network's. A statement cut off this way may still commit; every
    /// write of the store is safe to retry.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the key store at {} did not answer within {} ms",
                self.place,
                self.timeout.as_millis()
            ))),
        }
    }
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

/// The columns of arrays that bulk statements bind, one array a column.
fn column<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}

#[async_trait]
impl Engine for PgEngine {
    type Tx = Tx;
    type Row = PgRow;

    const FOR_UPDATE: &'static str = " FOR UPDATE";

    async fn begin(&self) -> Result<Tx, StoreError> {
        self.bounded(async { self.pool.begin().await.map_err(backend) })
            .await
    }

    async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        self.bounded(async { tx.commit().await.map_err(backend) })
            .await
    }

    async fn execute(&self, tx: &mut Tx, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        self.bounded(async {
            let done = bind(sqlx::query(sql), params)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn fetch(
        &self,
        tx: &mut Tx,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<Vec<PgRow>, StoreError> {
        self.bounded(async {
            bind(sqlx::query(sql), params)
                .fetch_all(&mut **tx)
                .await
                .map_err(backend)
        })
        .await
    }

    async fn read(&self, sql: &str, params: Vec<Param>) -> Result<Vec<PgRow>, StoreError> {
        self.bounded(async {
            bind(sqlx::query(sql), params)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)
        })
        .await
    }

    // One statement is a transaction of its own (autocommit): one round
    // trip.
    async fn write(&self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        self.bounded(async {
            let done = bind(sqlx::query(sql), params)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
            Ok(done.rows_affected())
        })
        .await
    }

    async fn write_rows(&self, sql: &str, params: Vec<Param>) -> Result<Vec<PgRow>, StoreError> {
        self.bounded(async { self.read(sql, params).await }).await
    }

    async fn lock_user(&self, tx: &mut Tx, p: &Pseudonym) -> Result<(), StoreError> {
        self.bounded(async { lock_named(tx, LOCK_USER, &p.to_string()).await })
            .await
    }

    /// One statement, in ascending order of the locks' keys.
    async fn lock_users(&self, tx: &mut Tx, ps: &[Pseudonym]) -> Result<(), StoreError> {
        self.bounded(async {
            let names: Vec<String> = ps.iter().map(Pseudonym::to_string).collect();
            sqlx::query(
                "SELECT pg_advisory_xact_lock($1, h) FROM
                   (SELECT DISTINCT hashtext(p) AS h FROM unnest($2::text[]) AS p ORDER BY h) AS s",
            )
            .bind(LOCK_USER)
            .bind(names)
            .execute(&mut **tx)
            .await
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    /// In ascending order, so that two writers never wait on each other.
    async fn lock_shards(
        &self,
        tx: &mut Tx,
        shards: &[u32],
        exclusive: bool,
    ) -> Result<(), StoreError> {
        self.bounded(async {
            let mut shards: Vec<i32> = shards.iter().map(|s| *s as i32).collect();
            shards.sort_unstable();
            shards.dedup();
            for shard in shards {
                if exclusive {
                    lock(tx, LOCK_SHARD, shard).await?;
                } else {
                    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
                        .bind(LOCK_SHARD)
                        .bind(shard)
                        .execute(&mut **tx)
                        .await
                        .map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn lock_audit(&self, tx: &mut Tx) -> Result<(), StoreError> {
        self.bounded(async { lock(tx, LOCK_AUDIT, 0).await }).await
    }

    async fn lock_job_kind(&self, tx: &mut Tx, kind: &str) -> Result<(), StoreError> {
        self.bounded(async { lock_named(tx, LOCK_JOB_KIND, kind).await })
            .await
    }

    async fn notify(&self, tx: &mut Tx, changes: &[Invalidation]) -> Result<(), StoreError> {
        self.bounded(async {
            let payloads: Vec<String> = changes.iter().map(|i| payload(*i)).collect();
            sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(payloads)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    // Nothing PostgreSQL lets a client overwrite: see the module docs.
    async fn scrub(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn admit_upload(&self) -> Result<(), StoreError> {
        // The database's disk is PostgreSQL's: its reserve table is given
        // up and made again inside it (`fill_reserve`), and its free space
        // is not this host's to measure.
        Ok(())
    }

    async fn backup_into(&self, _path: &std::path::Path) -> Result<(), StoreError> {
        Err(StoreError::Backend(format!(
            "the key store at {} is a PostgreSQL database: back it up with pg_dump or \
             pg_basebackup",
            self.place
        )))
    }

    async fn release_reserve(&self) -> bool {
        self.drop_reserve().await
    }

    async fn ensure_reserve(&self) {
        self.fill_reserve().await;
    }

    /// One statement; the caller holds the shards' locks.
    async fn insert_keks(&self, tx: &mut Tx, records: &[KekRecord]) -> Result<u64, StoreError> {
        self.bounded(async {
        Ok(sqlx::query(
            "INSERT INTO keks (shard, version, master_version, wrapped, created_at_ms)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[])
             ON CONFLICT DO NOTHING",
        )
        .bind(column(records, |r| i64::from(r.shard)))
        .bind(column(records, |r| i64::from(r.version)))
        .bind(column(records, |r| i64::from(r.master_version)))
        .bind(column(records, |r| r.wrapped.as_slice()))
        .bind(column(records, |r| r.created_at_ms))
        .execute(&mut **tx)
        .await
        .map_err(backend)?
        .rows_affected())
        })
        .await
    }

    async fn rewrap_keks(&self, tx: &mut Tx, rewraps: &[KekRewrap]) -> Result<(), StoreError> {
        self.bounded(async {
        sqlx::query(
            "UPDATE keks k SET master_version = r.to_master, wrapped = r.wrapped
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])
                  AS r(shard, version, from_master, to_master, wrapped)
             WHERE k.shard = r.shard AND k.version = r.version AND k.master_version = r.from_master",
        )
        .bind(column(rewraps, |r| i64::from(r.shard)))
        .bind(column(rewraps, |r| i64::from(r.version)))
        .bind(column(rewraps, |r| i64::from(r.from_master)))
        .bind(column(rewraps, |r| i64::from(r.to_master)))
        .bind(column(rewraps, |r| r.wrapped.as_slice()))
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
        Ok(())
        })
        .await
    }

    async fn rewrap_user_keys(
        &self,
        tx: &mut Tx,
        rewraps: &[UserKeyRewrap],
    ) -> Result<(), StoreError> {
        self.bounded(async {
        let pseudonyms = column(rewraps, |r| r.pseudonym.to_string());
        let first = pseudonyms.iter().min().cloned().unwrap_or_default();
        let last = pseudonyms.iter().max().cloned().unwrap_or_default();
        // One statement for the batch. The bounds on the pseudonym keep the
        // planner from hashing the whole table to join a batch: it reads
        // the batch's range of the primary key, the neighbouring rows a
        // rotation's in-order batch is made of.
        sqlx::query(
            "UPDATE user_keys u SET kek_version = r.to_kek, wrapped = r.wrapped
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[])
                  AS r(pseudonym, version, shard, from_kek, to_kek, wrapped)
             WHERE u.pseudonym = r.pseudonym AND u.version = r.version AND u.shard = r.shard
               AND u.kek_version = r.from_kek
               AND u.pseudonym BETWEEN $7 AND $8",
        )
        .bind(pseudonyms)
        .bind(column(rewraps, |r| i64::from(r.version)))
        .bind(column(rewraps, |r| i64::from(r.shard)))
        .bind(column(rewraps, |r| i64::from(r.from_kek)))
        .bind(column(rewraps, |r| i64::from(r.to_kek)))
        .bind(column(rewraps, |r| r.wrapped.as_slice()))
        .bind(first)
        .bind(last)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
        Ok(())
        })
        .await
    }

    async fn user_keys_below_keks(
        &self,
        targets: &[(u32, u32)],
        limit: u32,
    ) -> Result<Vec<PgRow>, StoreError> {
        self.bounded(async {
            // Through the shard index, each shard's rows filtered by KEK version
            // (rows already moved are read again by every batch: fine for a few
            // shards; a rotation of every shard reads in table order instead).
            sqlx::query(
                "SELECT u.* FROM unnest($1::bigint[], $2::bigint[]) AS t(shard, target)
             CROSS JOIN LATERAL (
                 SELECT * FROM user_keys u WHERE u.shard = t.shard AND u.kek_version < t.target
             ) u
             LIMIT $3",
            )
            .bind(column(targets, |(s, _)| i64::from(*s)))
            .bind(column(targets, |(_, v)| i64::from(*v)))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)
        })
        .await
    }

    async fn count_user_keys(&self, shards: &[u32]) -> Result<u64, StoreError> {
        self.bounded(async {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_keys WHERE shard = ANY($1)")
                .bind(column(shards, |s| i64::from(*s)))
                .fetch_one(&self.pool)
                .await
                .map_err(backend)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn count_user_keys_below(
        &self,
        tx: &mut Tx,
        targets: &[(u32, u32)],
    ) -> Result<u64, StoreError> {
        self.bounded(async {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM unnest($1::bigint[], $2::bigint[]) AS t(shard, target)
             JOIN user_keys u ON u.shard = t.shard AND u.kek_version < t.target",
            )
            .bind(column(targets, |(s, _)| i64::from(*s)))
            .bind(column(targets, |(_, v)| i64::from(*v)))
            .fetch_one(&mut **tx)
            .await
            .map_err(backend)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn delete_keks_below(
        &self,
        tx: &mut Tx,
        targets: &[(u32, u32)],
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        self.bounded(async {
            let rows = sqlx::query(
                "DELETE FROM keks k USING unnest($1::bigint[], $2::bigint[]) AS t(shard, target)
             WHERE k.shard = t.shard AND k.version < t.target
             RETURNING k.shard, k.version",
            )
            .bind(column(targets, |(s, _)| i64::from(*s)))
            .bind(column(targets, |(_, v)| i64::from(*v)))
            .fetch_all(&mut **tx)
            .await
            .map_err(backend)?;
            let version = |row: &PgRow, i: usize| {
                u32::try_from(row.get::<i64, _>(i))
                    .map_err(|_| StoreError::Backend("corrupt KEK version in key store".into()))
            };
            rows.iter()
                .map(|row| Ok((version(row, 0)?, version(row, 1)?)))
                .collect()
        })
        .await
    }

    /// On a connection of its own, so that a pool busy with the gateway's
    /// calls does not count as an outage; given [`PROBE_DEADLINE`] at most
    /// (a silent network is seen in that time). The connection is dropped
    /// after any failure and made again by the next probe.
    async fn check_health(&self) -> Result<(), StoreError> {
        let deadline = self.timeout.min(PROBE_DEADLINE);
        let mut probe = self.probe.lock().await;
        let checked = tokio::time::timeout(deadline, async {
            if probe.is_none() {
                *probe = Some(
                    PgConnection::connect_with(&self.options)
                        .await
                        .map_err(backend)?,
                );
            }
            let conn = probe.as_mut().expect("connected above");
            let read_only: bool = sqlx::query_scalar(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
            )
            .fetch_one(conn)
            .await
            .map_err(backend)?;
            Ok(read_only)
        })
        .await;
        let read_only = match checked {
            Ok(Ok(read_only)) => read_only,
            Ok(Err(e)) => {
                *probe = None;
                return Err(e);
            }
            Err(_) => {
                *probe = None;
                return Err(StoreError::Unavailable(format!(
                    "the key store at {} did not answer within {} ms",
                    self.place,
                    deadline.as_millis()
                )));
            }
        };
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
        notify::subscribe(&self.pool).await.map(Some)
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
            acquire_timeout: std::time::Duration::from_secs(2),
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
}
