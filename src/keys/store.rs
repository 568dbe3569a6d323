//! The key store seam: wrapped KEKs, user-key versions, tombstones, durable
//! jobs and the audit trail. Implementations: SQLite ([`super::sqlite`]).
//!
//! The store only ever sees wrapped keys and pseudonyms. Erasure deletes the
//! user's key rows and writes the tombstone in one transaction; inserting a
//! user key for a tombstoned pseudonym fails in the same transaction that
//! would insert it, so no key can be created after an erasure.

use async_trait::async_trait;

use crate::crypto::Pseudonym;

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
}

/// One version of one shard's KEK, wrapped by a master key version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekRecord {
    /// Shard number.
    pub shard: u32,
    /// KEK version within the shard.
    pub version: u32,
    /// Master key version that wraps it.
    pub master_version: u32,
    /// The wrapped KEK.
    pub wrapped: Vec<u8>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

/// State of a user-key version. A destroyed version has no row at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKeyState {
    /// Wraps new objects' DEKs.
    Active,
    /// Only opens existing objects.
    DecryptOnly,
}

impl UserKeyState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::DecryptOnly => "decrypt_only",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(Self::Active),
            "decrypt_only" => Ok(Self::DecryptOnly),
            other => Err(StoreError::Backend(format!(
                "unknown user key state {other:?}"
            ))),
        }
    }
}

/// One version of a user's key, wrapped by its shard's KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKeyRecord {
    /// Owner.
    pub pseudonym: Pseudonym,
    /// Version, from 1.
    pub version: u32,
    /// KEK shard.
    pub shard: u32,
    /// KEK version that wraps it.
    pub kek_version: u32,
    /// The wrapped user key.
    pub wrapped: Vec<u8>,
    /// State.
    pub state: UserKeyState,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

/// The durable record of an erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Erased user.
    pub pseudonym: Pseudonym,
    /// When the keys were destroyed, Unix milliseconds.
    pub erased_at_ms: i64,
    /// The destroyed user-key versions.
    pub destroyed_versions: Vec<u32>,
    /// The garbage-collection job.
    pub gc_job_id: String,
}

/// State of a durable job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not started yet.
    Pending,
    /// Started; resumed after a restart.
    Running,
    /// Finished.
    Done,
    /// Gave up; `last_error` says why.
    Failed,
}

impl JobState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "pending" => Ok(Self::Pending),
            "running" => Ok(Self::Running),
            "done" => Ok(Self::Done),
            "failed" => Ok(Self::Failed),
            other => Err(StoreError::Backend(format!("unknown job state {other:?}"))),
        }
    }
}

/// Kinds of durable jobs.
pub const JOB_KIND_ERASURE_GC: &str = "erasure_gc";
/// Master rotation: every KEK re-wrapped under a new master version.
pub const JOB_KIND_ROTATE_MASTER: &str = "rotate_master";

/// A KEK version re-wrapped under another master version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekRewrap {
    /// Shard.
    pub shard: u32,
    /// KEK version.
    pub version: u32,
    /// The master version it was wrapped under (the row is updated only if
    /// it still is).
    pub from_master: u32,
    /// The master version it is wrapped under now.
    pub to_master: u32,
    /// The KEK wrapped under `to_master`.
    pub wrapped: Vec<u8>,
}

/// A job's lease and the progress to record with a batch of its work, in
/// the batch's own transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedProgress<'a> {
    /// The job.
    pub id: &'a str,
    /// The lease holder writing.
    pub owner: &'a str,
    /// The lease's new expiry.
    pub until_ms: i64,
    /// Progress after the batch.
    pub checkpoint: JobCheckpoint,
}

/// A durable job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// Kind, such as [`JOB_KIND_ERASURE_GC`].
    pub kind: String,
    /// The user the job is about, if any.
    pub pseudonym: Option<Pseudonym>,
    /// What the job is to do, in its kind's own words (a shard range, a
    /// target version); fixed at creation.
    pub params: String,
    /// State.
    pub state: JobState,
    /// Items processed so far.
    pub done: u64,
    /// Items to process, when known (0: unknown).
    pub total: u64,
    /// Where the job stands, in its kind's own words: it resumes from here.
    pub cursor: String,
    /// Last error, empty if none.
    pub last_error: String,
    /// The process holding the job's lease, if any.
    pub owner: Option<String>,
    /// When the lease ends, Unix milliseconds.
    pub lease_until_ms: i64,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Last change, Unix milliseconds.
    pub updated_at_ms: i64,
}

/// A job to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Job id ([`crate::names::random_id`]).
    pub id: String,
    /// Kind.
    pub kind: String,
    /// The user the job is about, if any.
    pub pseudonym: Option<Pseudonym>,
    /// Parameters (see [`JobRecord::params`]).
    pub params: String,
}

/// A leased job's progress, written only while its lease is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCheckpoint {
    /// Items processed so far.
    pub done: u64,
    /// Items to process (0: unknown).
    pub total: u64,
    /// Where to resume.
    pub cursor: String,
    /// Last (transient) error, empty if none.
    pub last_error: String,
}

/// A completed write, remembered under its caller's request id so that a
/// retry returns the same result instead of writing again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The writing user.
    pub pseudonym: Pseudonym,
    /// SHA-256 of the caller's request id (the id itself is not kept).
    pub request: [u8; 32],
    /// The space written.
    pub space: String,
    /// The object id the request named; empty if it asked for a generated one.
    pub requested_id: String,
    /// The object id written.
    pub object_id: String,
    /// Plaintext size written.
    pub size: u64,
    /// The written object's etag.
    pub etag: String,
    /// The written object's creation time, Unix milliseconds.
    pub created_ms: i64,
    /// When the record was made, Unix milliseconds.
    pub at_ms: i64,
}

/// Result of inserting a user-key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The row was written.
    Inserted,
    /// That version already exists (another writer won the race).
    AlreadyExists,
    /// The user is erased; nothing was written.
    Erased,
}

/// The key store.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The highest version of a shard's KEK.
    async fn latest_kek(&self, shard: u32) -> Result<Option<KekRecord>, StoreError>;
    /// One version of a shard's KEK.
    async fn kek(&self, shard: u32, version: u32) -> Result<Option<KekRecord>, StoreError>;
    /// Inserts a KEK version; false if that version exists.
    async fn insert_kek(&self, record: &KekRecord) -> Result<bool, StoreError>;
    /// Every live version of a user's key, ascending.
    async fn user_keys(&self, pseudonym: &Pseudonym) -> Result<Vec<UserKeyRecord>, StoreError>;
    /// Inserts a user-key version unless it exists or the user is erased.
    async fn insert_user_key(&self, record: &UserKeyRecord) -> Result<InsertOutcome, StoreError>;
    /// The user's tombstone, if erased.
    async fn tombstone(&self, pseudonym: &Pseudonym) -> Result<Option<Tombstone>, StoreError>;
    /// In one transaction: deletes every user-key version, writes the
    /// tombstone, creates the garbage-collection job and an audit record.
    /// Idempotent: an erased user's existing tombstone is returned unchanged.
    async fn erase_user(
        &self,
        pseudonym: &Pseudonym,
        now_ms: i64,
        gc_job_id: &str,
    ) -> Result<Tombstone, StoreError>;
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
    /// KEK versions wrapped under a master version below `master_version`,
    /// at most `limit`.
    async fn keks_below_master(
        &self,
        master_version: u32,
        limit: u32,
    ) -> Result<Vec<KekRecord>, StoreError>;
    /// How many KEK versions each master version wraps, ascending.
    async fn kek_counts_by_master(&self) -> Result<Vec<(u32, u64)>, StoreError>;
    /// In one transaction, if `progress.owner` holds the job's lease:
    /// applies each re-wrap whose row is still wrapped under its
    /// `from_master`, and records the job's progress. False (nothing
    /// written) if the lease is lost.
    async fn rewrap_keks(
        &self,
        rewraps: &[KekRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError>;
    /// Appends to the audit trail. `pseudonym` is the only user reference an
    /// audit record may hold.
    async fn audit(
        &self,
        action: &str,
        pseudonym: Option<&Pseudonym>,
        detail: &str,
    ) -> Result<(), StoreError>;
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
    /// The id of the deployment this store belongs to, if recorded.
    async fn store_id(&self) -> Result<Option<String>, StoreError>;
    /// Records the deployment id, unless one is recorded already; returns
    /// the recorded id (`id`, or the one found).
    async fn init_store_id(&self, id: &str) -> Result<String, StoreError>;
    /// Whether the store holds any key (a KEK, so also any user key).
    async fn holds_keys(&self) -> Result<bool, StoreError>;
    /// Fails if the store cannot take writes now (its file deleted or
    /// replaced, the backend unreachable). Cheap: for health checks.
    async fn check_health(&self) -> Result<(), StoreError>;
    /// Closes connections and flushes, on shutdown.
    async fn close(&self) {}
}
