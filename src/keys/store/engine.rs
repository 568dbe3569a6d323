//! The seam between the key store's rules and a SQL database: what an
//! engine does its own way, and nothing else.
//!
//! [`super::SqlStore`] holds every rule of the key store (which rows an
//! erasure deletes, who locks what before which check, what a commit that
//! destroyed key material must be followed by, the audit chain and its
//! wording). An [`Engine`] answers "how does this database do it":
//!
//! - how a write transaction begins and serialises (SQLite: `BEGIN
//!   IMMEDIATE` takes the one write lock; PostgreSQL: advisory locks taken
//!   by the `lock_*` calls, which SQLite answers with nothing);
//! - how a commit tells other processes ([`Engine::notify`]);
//! - what follows a commit that destroyed key material ([`Engine::scrub`]);
//! - the erasure reserve for a full disk;
//! - how failures are classified into [`StoreError`]s;
//! - the few statements whose text differs (bulk re-wraps and KEK inserts:
//!   `unnest` arrays against chunked `VALUES`).
//!
//! Shared statements are written once, with `$n` placeholders (sqlx's
//! SQLite driver binds `$n` by number, as PostgreSQL does) and `CAST(..)`
//! where PostgreSQL must know a parameter's type.
//!
//! **Invariant:** an engine never imports the key hierarchy (`crate::keys`
//! outside `store`) and holds no rule of the store's semantics.

use async_trait::async_trait;

use super::{Invalidation, Invalidations, KekRecord, KekRewrap, StoreError, UserKeyRewrap};
use crate::crypto::Pseudonym;

/// A statement parameter. A NULL carries its type: PostgreSQL must know it.
#[derive(Debug, Clone)]
pub enum Param {
    /// An integer (every integer column is 64 bits).
    Int(i64),
    /// An integer or NULL.
    OptInt(Option<i64>),
    /// Text.
    Text(String),
    /// Text or NULL.
    OptText(Option<String>),
    /// Bytes (wrapped keys, request ids).
    Bytes(Vec<u8>),
}

impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<u32> for Param {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<u64> for Param {
    /// Saturates: counters past `i64::MAX` are stored as `i64::MAX`.
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<Option<i64>> for Param {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Param {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl From<Option<String>> for Param {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v)
    }
}

impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Self {
        Self::OptText(v.map(str::to_owned))
    }
}

impl From<&[u8]> for Param {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

impl From<&Vec<u8>> for Param {
    fn from(v: &Vec<u8>) -> Self {
        Self::Bytes(v.clone())
    }
}

impl From<&Pseudonym> for Param {
    /// A pseudonym is stored as its lowercase hex.
    fn from(p: &Pseudonym) -> Self {
        Self::Text(p.to_string())
    }
}

impl From<Option<&Pseudonym>> for Param {
    fn from(p: Option<&Pseudonym>) -> Self {
        Self::OptText(p.map(Pseudonym::to_string))
    }
}

/// The parameters of a statement, in `$n` order.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        vec![$($crate::keys::store::engine::Param::from($p)),*]
    };
}
pub(crate) use params;

/// Binds `params` to `query` in order: the one place a [`Param`] becomes
/// a database value, for every engine.
pub(crate) fn bind<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    params: Vec<Param>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for param in params {
        query = match param {
            Param::Int(v) => query.bind(v),
            Param::OptInt(v) => query.bind(v),
            Param::Text(v) => query.bind(v),
            Param::OptText(v) => query.bind(v),
            Param::Bytes(v) => query.bind(v),
        };
    }
    query
}

/// A result row, read by column name. A value of the wrong type or a NULL
/// where none is allowed is a corrupt store ([`StoreError::Backend`]),
/// never a panic.
pub trait SqlRow: Send + Sync {
    /// An integer column.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if missing, NULL or not an integer.
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    /// An integer column that may be NULL.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if missing or not an integer.
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// A text column.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if missing, NULL or not text.
    fn text(&self, column: &str) -> Result<String, StoreError>;
    /// A text column that may be NULL.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if missing or not text.
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// A bytes column.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if missing, NULL or not bytes.
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
}

/// What a database does its own way (see the module docs).
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// A write transaction: serialised against every other write that
    /// could conflict with it once the `lock_*` calls that the store makes
    /// have returned. Dropped without [`Engine::commit`], it rolls back.
    type Tx: Send;
    /// A result row.
    type Row: SqlRow;

    /// What a `SELECT` appends to lock the rows it reads to the end of the
    /// transaction (`" FOR UPDATE"`), or nothing where the transaction
    /// holds the whole database.
    const FOR_UPDATE: &'static str;

    /// Begins a write transaction.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;
    /// Commits it.
    async fn commit(&self, tx: Self::Tx) -> Result<(), StoreError>;
    /// Runs a statement in `tx`; the rows it changed.
    async fn execute(
        &self,
        tx: &mut Self::Tx,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<u64, StoreError>;
    /// Runs a statement in `tx`; the rows it returned.
    async fn fetch(
        &self,
        tx: &mut Self::Tx,
        sql: &str,
        params: Vec<Param>,
    ) -> Result<Vec<Self::Row>, StoreError>;
    /// Runs a read outside any write transaction.
    async fn read(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Self::Row>, StoreError>;
    /// Runs one write statement as a transaction of its own; the rows it
    /// changed.
    async fn write(&self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError>;
    /// Runs one write statement with `RETURNING` as a transaction of its
    /// own; the rows it returned.
    async fn write_rows(&self, sql: &str, params: Vec<Param>)
        -> Result<Vec<Self::Row>, StoreError>;

    /// Takes the user's lock to the end of `tx`.
    async fn lock_user(&self, tx: &mut Self::Tx, p: &Pseudonym) -> Result<(), StoreError>;
    /// Takes the shards' locks to the end of `tx`: exclusive (KEK inserts
    /// and destruction) or shared (user-key writes, which check the
    /// shard's newest KEK version).
    async fn lock_shards(
        &self,
        tx: &mut Self::Tx,
        shards: &[u32],
        exclusive: bool,
    ) -> Result<(), StoreError>;
    /// Takes the locks of every user of `ps` to the end of `tx`, in one
    /// order whoever takes them (so two batches never wait on each other).
    async fn lock_users(&self, tx: &mut Self::Tx, ps: &[Pseudonym]) -> Result<(), StoreError> {
        let mut sorted = ps.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for p in &sorted {
            self.lock_user(tx, p).await?;
        }
        Ok(())
    }
    /// Takes the audit chain's lock to the end of `tx`.
    async fn lock_audit(&self, tx: &mut Self::Tx) -> Result<(), StoreError>;
    /// Takes a job kind's lock to the end of `tx` (exclusive job creation).
    async fn lock_job_kind(&self, tx: &mut Self::Tx, kind: &str) -> Result<(), StoreError>;
    /// Tells every process sharing the store, once `tx` commits.
    async fn notify(&self, tx: &mut Self::Tx, changes: &[Invalidation]) -> Result<(), StoreError>;
    /// Runs after a commit that destroyed key material, before the call
    /// that destroyed it returns: leaves no copy the engine can overwrite.
    async fn scrub(&self) -> Result<(), StoreError>;
    /// Writes a consistent copy of the whole store to a new file `path`
    /// while the store serves (SQLite's `VACUUM INTO`: no free page, so
    /// nothing erased before it). [`StoreError::Backend`] where the engine
    /// cannot (a PostgreSQL database is backed up with its own tools).
    async fn backup_into(&self, path: &std::path::Path) -> Result<(), StoreError>;
    /// Whether an upload may start: [`StoreError::Full`] while the
    /// erasure reserve is given up (and cannot be made again) or the
    /// store's volume has less than `crate::disk::ERASURE_ROOM` free.
    async fn admit_upload(&self) -> Result<(), StoreError>;
    /// Gives up the erasure reserve so that an erasure can use its space;
    /// whether there was one.
    async fn release_reserve(&self) -> bool;
    /// Makes the erasure reserve again if it is missing (logged, not
    /// fatal, on failure).
    async fn ensure_reserve(&self);

    /// Inserts KEK versions unless they exist; how many were new.
    async fn insert_keks(
        &self,
        tx: &mut Self::Tx,
        records: &[KekRecord],
    ) -> Result<u64, StoreError>;
    /// Applies each re-wrap whose KEK is still under its `from_master`.
    async fn rewrap_keks(&self, tx: &mut Self::Tx, rewraps: &[KekRewrap])
        -> Result<(), StoreError>;
    /// Applies each re-wrap whose user key is still under its `from_kek`.
    async fn rewrap_user_keys(
        &self,
        tx: &mut Self::Tx,
        rewraps: &[UserKeyRewrap],
    ) -> Result<(), StoreError>;
    /// Up to `limit` user-key rows of the targets' shards under a KEK
    /// version below their shard's target.
    async fn user_keys_below_keks(
        &self,
        targets: &[(u32, u32)],
        limit: u32,
    ) -> Result<Vec<Self::Row>, StoreError>;
    /// How many user-key rows the shards hold.
    async fn count_user_keys(&self, shards: &[u32]) -> Result<u64, StoreError>;
    /// How many user-key rows of the targets' shards are under a KEK
    /// version below their shard's target.
    async fn count_user_keys_below(
        &self,
        tx: &mut Self::Tx,
        targets: &[(u32, u32)],
    ) -> Result<u64, StoreError>;
    /// Deletes the targets' shards' KEK versions below each target; the
    /// `(shard, version)` pairs deleted.
    async fn delete_keks_below(
        &self,
        tx: &mut Self::Tx,
        targets: &[(u32, u32)],
    ) -> Result<Vec<(u32, u32)>, StoreError>;

    /// Fails if the store cannot take writes now.
    async fn check_health(&self) -> Result<(), StoreError>;
    /// Closes connections and flushes.
    async fn close(&self);
    /// The feed of other processes' invalidations, where the engine has
    /// one.
    async fn invalidations(&self) -> Result<Option<Invalidations>, StoreError> {
        Ok(None)
    }
}

/// Every sqlx row of a database with 64-bit integers, text and bytes reads
/// as a [`SqlRow`].
impl<R> SqlRow for R
where
    R: sqlx::Row,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.try_get(column).map_err(|e| unreadable(column, &e))
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(|e| unreadable(column, &e))
    }

    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.try_get(column).map_err(|e| unreadable(column, &e))
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(|e| unreadable(column, &e))
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        self.try_get(column).map_err(|e| unreadable(column, &e))
    }
}

fn unreadable(column: &str, e: &sqlx::Error) -> StoreError {
    StoreError::Backend(format!("corrupt key store: column {column}: {e}"))
}
