//! The key store: wrapped KEKs, user-key versions, tombstones, durable
//! jobs, legal holds, remembered requests and the audit trail.
//!
//! - [`records`]: what the store keeps, without SQL.
//! - The role traits ([`KeyRecords`], [`ErasureLog`], [`JobStore`], [`AuditLog`],
//!   [`HoldStore`], [`RequestLog`], [`Settings`]) and [`KeyStore`], which is
//!   all of them: consumers take the narrowest role they use.
//! - [`SqlStore`] (in `sql/`): every rule of the store, written once over an
//!   [`engine::Engine`]; [`sqlite::SqliteEngine`] (the embedded default) and
//!   [`postgres::PgEngine`] (shared by replicas) hold only what their
//!   database does differently. [`SqliteKeyStore`] and [`PostgresKeyStore`]
//!   name the two stores.
//!
//! The store only ever sees wrapped keys and pseudonyms. Erasure deletes the
//! user's key rows and writes the tombstone in one transaction; inserting a
//! user key for a tombstoned pseudonym fails in the same transaction that
//! would insert it, so no key can be created after an erasure.

pub mod engine;
pub mod postgres;
pub mod records;
mod sql;
pub mod sqlite;

use async_trait::async_trait;

use crate::crypto::Pseudonym;
pub use postgres::PostgresKeyStore;
pub use records::*;
pub use sql::SqlStore;
pub use sqlite::SqliteKeyStore;

/// Every role trait, for code that calls them on a concrete store
/// (`use sealgate::keys::store::roles::*`); a `dyn KeyStore` needs none.
pub mod roles {
    pub use super::{
        AuditLog, ErasureLog, HoldStore, JobStore, KeyRecords, KeyStore, RequestLog, Settings,
    };
}

/// Bytes each key store sets aside for erasures on a full disk (SQLite: a
/// file beside `keys.db`; PostgreSQL: a table of filler), given up when an
/// erasure finds the disk full.
pub const RESERVE_BYTES: usize = 8 << 20;

/// The settings-table key that health probes overwrite (SQLite: the
/// probe is a write, the only way to see a disk that stopped taking them).
pub const HEALTH_PROBE_META: &str = "health_probe";

/// Errors of a key store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the write for a reason that
    /// may clear (a read-only or failing disk, a lock held too long);
    /// retryable.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    /// The store's disk is full; retryable once space is freed.
    #[error("key store disk full: {0}")]
    Full(String),
    /// The store is gone from under the process (its file deleted or
    /// replaced): no retry can succeed until an operator restores it.
    #[error("key store lost: {0}")]
    Lost(String),
    /// Anything else (corrupt rows, SQL errors).
    #[error("key store error: {0}")]
    Backend(String),
    /// An erasure refused: the user is under legal hold by this many cases.
    #[error("the user is under legal hold ({cases} cases)")]
    LegalHold {
        /// How many cases hold the user.
        cases: usize,
    },
    /// A decommission refused: this many users are under legal hold.
    #[error("{users} users are under legal hold")]
    HeldUsers {
        /// How many distinct users are held.
        users: usize,
    },
}

/// A committed change that every process sharing the key store must apply
/// to its caches of unwrapped keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// The user's key versions changed: erased, rotated, rewrapped, retired.
    User(Pseudonym),
    /// A KEK version of this shard was destroyed (a KEK rotation ended).
    Shard(u32),
    /// Anything may have changed, or notifications may have been lost (the
    /// listener reconnected): drop every cached key. The feed sends it
    /// once its listener listens again after [`Invalidation::Interrupted`].
    All,
    /// The feed's listener lost its connection: until the next `All`,
    /// changes go unheard. Never sent by a commit; only the feed says it.
    Interrupted,
}

/// A feed of [`Invalidation`]s, in commit order; it ends when the store
/// closes.
pub type Invalidations = tokio::sync::mpsc::Receiver<Invalidation>;
/// The key material: KEKs and user keys, erasure, rotation, decommission.
#[async_trait]
pub trait KeyRecords: Send + Sync {
    /// The highest version of a shard's KEK.
    async fn latest_kek(&self, shard: u32) -> Result<Option<KekRecord>, StoreError>;
    /// One version of a shard's KEK.
    async fn kek(&self, shard: u32, version: u32) -> Result<Option<KekRecord>, StoreError>;
    /// Inserts a KEK version; false if that version exists.
    async fn insert_kek(&self, record: &KekRecord) -> Result<bool, StoreError>;
    /// Every KEK version, without key material, by shard then version.
    async fn kek_infos(&self) -> Result<Vec<KekInfo>, StoreError>;
    /// How many KEK versions each master version wraps, ascending.
    async fn kek_counts_by_master(&self) -> Result<Vec<(u32, u64)>, StoreError>;
    /// KEK versions wrapped under a master version below `master_version`,
    /// at most `limit`.
    async fn keks_below_master(
        &self,
        master_version: u32,
        limit: u32,
    ) -> Result<Vec<KekRecord>, StoreError>;
    /// In one transaction, if `progress.owner` holds the job's lease:
    /// applies each re-wrap whose row is still wrapped under its
    /// `from_master`, and records the job's progress. False (nothing
    /// written) if the lease is lost.
    async fn rewrap_keks(
        &self,
        rewraps: &[KekRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError>;
    /// In one transaction, if `progress.owner` holds the job's lease:
    /// inserts the new KEK versions `records` (one audit record by
    /// `principal`) and records the job's progress. False (nothing
    /// written) if the lease is lost.
    async fn insert_keks(
        &self,
        records: &[KekRecord],
        principal: &str,
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError>;
    /// In one transaction: destroys, for each `(shard, KEK version)` of
    /// `targets`, the shard's KEK versions below it, with an audit record
    /// by `principal`, unless a user key is still wrapped under one of them
    /// (then nothing is destroyed). A destruction leaves no readable copy
    /// in the live store when this returns (as an erasure). Returns the
    /// `(shard, version)` pairs destroyed.
    async fn destroy_keks_below(
        &self,
        targets: &[(u32, u32)],
        principal: &str,
    ) -> Result<DestroyKeks, StoreError>;
    /// Whether the store holds any key (a KEK, so also any user key).
    async fn holds_keys(&self) -> Result<bool, StoreError>;
    /// Every live version of a user's key, ascending.
    async fn user_keys(&self, pseudonym: &Pseudonym) -> Result<Vec<UserKeyRecord>, StoreError>;
    /// Inserts a user-key version unless it exists or the user is erased.
    async fn insert_user_key(&self, record: &UserKeyRecord) -> Result<InsertOutcome, StoreError>;
    /// In one transaction, unless the user is erased (`Erased`), `r` is
    /// not under its shard's newest KEK version (`StaleKek`) or not the
    /// user's highest version plus one (`AlreadyExists`): the active
    /// version of the user becomes decrypt-only (retiring ones stay
    /// retiring) and `r` is inserted as the active one, with an audit record
    /// by `principal`.
    async fn rotate_user_key(
        &self,
        r: &UserKeyRecord,
        principal: &str,
    ) -> Result<InsertOutcome, StoreError>;
    /// Marks every version of the user below `version` that is not active
    /// as retiring (a rewrap to `version` began); returns the versions now
    /// retiring.
    async fn retire_user_keys_below(
        &self,
        p: &Pseudonym,
        version: u32,
    ) -> Result<Vec<u32>, StoreError>;
    /// In one transaction: deletes the user's retiring versions (a rewrap
    /// moved every object off them) and records it for `principal`;
    /// scrubbed as an erasure. Returns the versions destroyed.
    async fn destroy_retiring_user_keys(
        &self,
        p: &Pseudonym,
        principal: &str,
    ) -> Result<Vec<u32>, StoreError>;
    /// Up to `limit` user-key versions, of the shards of `targets`
    /// (`(shard, KEK version)` pairs), wrapped under a KEK version below
    /// their shard's target.
    async fn user_keys_below_keks(
        &self,
        targets: &[(u32, u32)],
        limit: u32,
    ) -> Result<Vec<UserKeyRecord>, StoreError>;
    /// Up to `limit` user-key versions after `after` (pseudonym, version)
    /// in that order: a scan of the whole table in its own order, for a
    /// rotation that moves every shard.
    async fn user_keys_in_order(
        &self,
        after: Option<(Pseudonym, u32)>,
        limit: u32,
    ) -> Result<Vec<UserKeyRecord>, StoreError>;
    /// How many user-key versions the shards hold.
    async fn count_user_keys(&self, shards: &[u32]) -> Result<u64, StoreError>;
    /// In one transaction, if `progress.owner` holds the job's lease:
    /// applies each re-wrap whose row is still wrapped under its
    /// `from_kek` (an erased user's row stays gone), and records the job's
    /// progress. False (nothing written) if the lease is lost.
    async fn rewrap_user_keys(
        &self,
        rewraps: &[UserKeyRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError>;
    /// The user's tombstone, if erased.
    async fn tombstone(&self, pseudonym: &Pseudonym) -> Result<Option<Tombstone>, StoreError>;
    /// In one transaction: deletes every user-key version, writes the
    /// tombstone, creates the garbage-collection job and an audit record.
    /// Idempotent: an erased user's existing tombstone is returned unchanged.
    /// Refused with [`StoreError::LegalHold`] (nothing written) while a
    /// legal hold names the user: checked in the same transaction.
    async fn erase_user(
        &self,
        pseudonym: &Pseudonym,
        now_ms: i64,
        gc_job_id: &str,
        principal: &str,
    ) -> Result<Tombstone, StoreError>;
    /// The signed receipts stored with the tombstones of those of `ps`
    /// that have one.
    async fn erasure_receipts(
        &self,
        ps: &[Pseudonym],
    ) -> Result<Vec<(Pseudonym, Vec<u8>)>, StoreError>;
    /// In one transaction, stores each user's signed erasure receipt
    /// unless one is stored (replicas racing end with one); returns the
    /// receipts that hold. [`StoreError::Backend`] if a user has no
    /// tombstone.
    async fn set_erasure_receipts(
        &self,
        receipts: &[(Pseudonym, Vec<u8>)],
    ) -> Result<Vec<(Pseudonym, Vec<u8>)>, StoreError>;
    /// How many distinct users legal holds cover.
    async fn held_users(&self) -> Result<usize, StoreError>;
    /// In one transaction, refused with [`StoreError::HeldUsers`] while
    /// any legal hold exists (checked under the audit lock, which placing
    /// a hold takes too): deletes every user key and every KEK, marks
    /// the store decommissioned at `at_ms` (see [`DECOMMISSIONED_META`])
    /// and records it for `principal`; scrubbed as an erasure. Returns the
    /// user-key and KEK versions destroyed.
    async fn decommission(&self, at_ms: i64, principal: &str) -> Result<(u64, u64), StoreError>;
}

/// Erasures at once and in batches, erasures with a cooling-off window,
/// and the erasure feed.
#[async_trait]
pub trait ErasureLog: Send + Sync {
    /// In one transaction, for each of `users` (distinct users, each with
    /// the id of its garbage-collection job): unless the user is erased
    /// already (its first tombstone returned unchanged) or held
    /// ([`EraseOutcome::Held`], nothing written for them), deletes every
    /// user-key version, the remembered requests and any scheduled
    /// erasure, writes the tombstone, the job, an audit record by
    /// `principal` and an `erased` feed event. Scrubbed as an erasure
    /// before it returns. Outcomes in the order of `users`.
    async fn erase_users(
        &self,
        users: &[(Pseudonym, String)],
        now_ms: i64,
        principal: &str,
    ) -> Result<Vec<EraseOutcome>, StoreError>;
    /// As [`ErasureLog::erase_users`], but only for users whose erasure is
    /// scheduled and due at `now_ms`, checked under their locks (a
    /// cancellation that committed first wins): the others are
    /// [`EraseOutcome::NotDue`].
    async fn erase_due(
        &self,
        users: &[(Pseudonym, String)],
        now_ms: i64,
        principal: &str,
    ) -> Result<Vec<EraseOutcome>, StoreError>;
    /// In one transaction, schedules the erasure of each of `ps` (distinct)
    /// at `due_ms`, with an audit record by `principal` and a `scheduled`
    /// feed event each, unless the user is erased already, or scheduled
    /// already (the first deadline stands), or this same `request_id`
    /// (non-empty) scheduled it before and it was cancelled since (it
    /// stays cancelled). Outcomes in the order of `ps`.
    async fn schedule_erasures(
        &self,
        ps: &[Pseudonym],
        due_ms: i64,
        now_ms: i64,
        principal: &str,
        request_id: &str,
    ) -> Result<Vec<ScheduleOutcome>, StoreError>;
    /// Cancels the user's scheduled erasure (with an audit record by
    /// `principal` and a `cancelled` feed event), unless it was cancelled
    /// already, never scheduled, or carried out.
    async fn cancel_erasure(
        &self,
        p: &Pseudonym,
        now_ms: i64,
        principal: &str,
    ) -> Result<CancelOutcome, StoreError>;
    /// The user's scheduled or cancelled erasure, if any (none once erased).
    async fn scheduled_erasure(
        &self,
        p: &Pseudonym,
    ) -> Result<Option<ScheduledErasure>, StoreError>;
    /// Up to `limit` users whose scheduled erasure is due at `now_ms` and
    /// who are not held, the earliest first.
    async fn due_erasures(&self, now_ms: i64, limit: u32) -> Result<Vec<Pseudonym>, StoreError>;
    /// Appends one feed event of the user (a `collected` one).
    async fn append_erasure_event(
        &self,
        kind: ErasureEventKind,
        p: &Pseudonym,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Up to `limit` feed events after cursor `after`, in order.
    async fn erasure_events(&self, after: u64, limit: u32)
        -> Result<Vec<ErasureEvent>, StoreError>;
    /// The newest cursor dropped by retention (0: none): a watcher behind
    /// it has missed events.
    async fn erasure_feed_floor(&self) -> Result<u64, StoreError>;
    /// Drops feed events older than `before_ms`, except the newest event;
    /// returns how many.
    async fn prune_erasure_events(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// Durable jobs and their leases.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// A job by id.
    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// Jobs that are pending or running, oldest first.
    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// The newest `limit` jobs, newest first, optionally of one state only.
    async fn list_jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, StoreError>;
    /// How many jobs there are of each kind in each state (kinds and
    /// states without a job left out).
    async fn job_counts(&self) -> Result<Vec<(String, JobState, u64)>, StoreError>;
    /// Records a new pending job (with an audit record) and returns it; if
    /// `exclusive` and an unfinished job of the same kind exists, records
    /// nothing and returns that one.
    async fn create_job(&self, job: &NewJob, exclusive: bool) -> Result<JobRecord, StoreError>;
    /// Takes the lease of an unfinished job for `owner` until `until_ms`, if
    /// nobody holds it (no owner, or a lease ended before `now_ms`) or
    /// `owner` holds it already; the job becomes RUNNING. `None` if the job
    /// is finished, unknown or leased by another process.
    async fn claim_job(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError>;
    /// Extends `owner`'s lease; false if `owner` no longer holds it.
    async fn renew_job_lease(
        &self,
        id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Records progress of a job leased by `owner` and extends the lease;
    /// false (and nothing written) if `owner` no longer holds it.
    async fn checkpoint_job(
        &self,
        id: &str,
        owner: &str,
        checkpoint: &JobCheckpoint,
        until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Ends a job leased by `owner` (DONE or FAILED with `last_error`) and
    /// releases its lease; false if `owner` no longer holds it.
    async fn finish_job(
        &self,
        id: &str,
        owner: &str,
        state: JobState,
        last_error: &str,
    ) -> Result<bool, StoreError>;
    /// Sets a job's state and progress whoever holds it, releasing any
    /// lease (an operator's reset; tests).
    async fn update_job(
        &self,
        id: &str,
        state: JobState,
        done: u64,
        last_error: &str,
    ) -> Result<(), StoreError>;
}

/// The audit trail: one hash chain.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends a record to the audit trail's hash chain.
    async fn audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError>;
    /// Audit records after `after_id` in order, at most `limit`, of one user
    /// and from a time if given.
    async fn audit_records(
        &self,
        after_id: u64,
        pseudonym: Option<&Pseudonym>,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The id and hash of the last record appended, as the store recorded
    /// it apart from the records (so that removing the newest records is
    /// seen too); `None` before the first.
    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;
}

/// Legal holds.
#[async_trait]
pub trait HoldStore: Send + Sync {
    /// Places a legal hold (and its audit record) in one transaction,
    /// unless the user is erased or the case already holds them.
    async fn place_hold(&self, hold: &HoldRecord) -> Result<PlaceHold, StoreError>;
    /// Releases one case's hold (and records it by `principal`); false if
    /// there was none.
    async fn release_hold(
        &self,
        pseudonym: &Pseudonym,
        case_ref: &str,
        principal: &str,
    ) -> Result<bool, StoreError>;
    /// Holds ordered by pseudonym then case, after `after` (exclusive), at
    /// most `limit`; of one user if `pseudonym` is given.
    async fn holds(
        &self,
        pseudonym: Option<&Pseudonym>,
        after: Option<(&Pseudonym, &str)>,
        limit: u32,
    ) -> Result<Vec<HoldRecord>, StoreError>;
}

/// Writes remembered by request id, for safe retries.
#[async_trait]
pub trait RequestLog: Send + Sync {
    /// The write remembered under `request` for the user, if it was made at
    /// or after `since_ms`.
    async fn request(
        &self,
        pseudonym: &Pseudonym,
        request: &[u8; 32],
        since_ms: i64,
    ) -> Result<Option<RequestRecord>, StoreError>;
    /// Remembers a write unless one is remembered under the same user and
    /// request since `since_ms` (records older than that are dropped);
    /// returns the record that holds: `record`, or the earlier one.
    async fn remember_request(
        &self,
        record: &RequestRecord,
        since_ms: i64,
    ) -> Result<RequestRecord, StoreError>;
}

/// The store's own settings table and the deployment id.
#[async_trait]
pub trait Settings: Send + Sync {
    /// A value of the store's own settings table.
    async fn meta_value(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a value, over any value set.
    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Sets a value unless one is set; returns the value that holds.
    async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Every value of the settings table whose key starts with `prefix`,
    /// by key.
    async fn meta_values(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Deletes a value of the settings table (scrubbed as an erasure: the
    /// value may be a wrapped key); false if there was none.
    async fn delete_meta(&self, key: &str) -> Result<bool, StoreError>;
    /// The id of the deployment this store belongs to, if recorded.
    async fn store_id(&self) -> Result<Option<String>, StoreError>;
    /// Records the deployment id, unless one is recorded already; returns
    /// the recorded id (`id`, or the one found).
    async fn init_store_id(&self, id: &str) -> Result<String, StoreError>;
}

/// The key store: every role, and the store's life.
///
/// A consumer takes the narrowest role it uses (`Arc<dyn RequestLog>`,
/// `&dyn JobStore`); an `Arc<dyn KeyStore>` converts into any of them.
#[async_trait]
pub trait KeyStore:
    KeyRecords + ErasureLog + JobStore + AuditLog + HoldStore + RequestLog + Settings + 'static
{
    /// Fails if the store cannot take writes now (its file deleted or
    /// replaced, its disk read-only or failing, the backend unreachable or
    /// read-only). Cheap (SQLite: one row written; PostgreSQL: one
    /// statement on a connection of its own), for health checks.
    async fn check_health(&self) -> Result<(), StoreError>;
    /// Closes connections and flushes, on shutdown.
    async fn close(&self) {}
    /// Writes a consistent copy of the whole store to the new file `path`
    /// while it serves; an error where the backend is backed up with its
    /// own tools (PostgreSQL).
    async fn backup_into(&self, path: &std::path::Path) -> Result<(), StoreError>;
    /// Whether an upload or item write may start: refused
    /// [`StoreError::Full`] while the erasure reserve is given up and
    /// cannot be made again, or the store's volume keeps less than
    /// `crate::disk::ERASURE_ROOM` free; erasures come first.
    async fn admit_upload(&self) -> Result<(), StoreError>;
    /// Subscribes to the invalidations that any process sharing this store
    /// commits from now on (its own included). `None` when the backend
    /// cannot tell other processes (SQLite serves one host): caches then
    /// rely on their time to live alone.
    async fn invalidations(&self) -> Result<Option<Invalidations>, StoreError> {
        Ok(None)
    }
}
