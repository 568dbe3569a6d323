//! The key store seam: wrapped KEKs, user-key versions, tombstones, durable
//! jobs and the audit trail. Implementations: SQLite ([`super::sqlite`]).
//!
//! The store only ever sees wrapped keys and pseudonyms. Erasure deletes the
//! user's key rows and writes the tombstone in one transaction; inserting a
//! user key for a tombstoned pseudonym fails in the same transaction that
//! would insert it, so no key can be created after an erasure.

use async_trait::async_trait;

use crate::crypto::Pseudonym;

/// Bytes each key store sets aside for erasures on a full disk (SQLite: a
/// file beside `keys.db`; PostgreSQL: a table of filler), given up when an
/// erasure finds the disk full.
pub const RESERVE_BYTES: usize = 8 << 20;

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
    /// listener reconnected): drop every cached key.
    All,
}

/// A feed of [`Invalidation`]s, in commit order; it ends when the store
/// closes.
pub type Invalidations = tokio::sync::mpsc::Receiver<Invalidation>;

/// What an audit record says: who did what to whom, and how it ended.
/// Never key material or a raw user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// Who: a principal's identity, `local`, `anonymous`, or `gateway`
    /// for the gateway's own work.
    pub principal: String,
    /// What: `erase_user`, `place_hold`, `denied`, `create_kek`, ...
    pub action: String,
    /// Whom, if a user.
    pub pseudonym: Option<Pseudonym>,
    /// `ok`, `denied`, ...
    pub outcome: String,
    /// Details (case references, versions, reasons).
    pub detail: String,
}

/// An audit record as stored: its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number, from 1, without gaps.
    pub id: u64,
    /// The record.
    pub entry: AuditEntry,
    /// The hash of the record before it (zeros for the first).
    pub prev_hash: [u8; 32],
    /// This record's hash: [`audit_hash`] of the fields above.
    pub hash: [u8; 32],
}

/// The chain hash of a record: SHA-256 over a domain label, the previous
/// record's hash and every field, each length-prefixed.
pub fn audit_hash(id: u64, e: &AuditEntry, prev_hash: &[u8; 32]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"sealgate/v1/audit\0");
    ctx.update(prev_hash);
    ctx.update(&id.to_be_bytes());
    ctx.update(&e.at_ms.to_be_bytes());
    let pseudonym = e.pseudonym.map(|p| p.to_string()).unwrap_or_default();
    for field in [
        e.principal.as_str(),
        e.action.as_str(),
        pseudonym.as_str(),
        e.outcome.as_str(),
        e.detail.as_str(),
    ] {
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field.as_bytes());
    }
    ctx.finish().as_ref().try_into().expect("32 bytes")
}

/// A legal hold: one case holding one user's erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    /// The held user.
    pub pseudonym: Pseudonym,
    /// The case reference.
    pub case_ref: String,
    /// When it was placed, Unix milliseconds.
    pub placed_at_ms: i64,
    /// The principal that placed it.
    pub placed_by: String,
}

/// Result of placing a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceHold {
    /// The hold was written.
    Placed,
    /// The case already holds the user: the existing hold, unchanged.
    Exists(HoldRecord),
    /// The user is erased; nothing was written.
    Erased,
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
    /// Only opens existing objects, and is destroyed once a rewrap has moved
    /// every object of the user off it: a write sealed under it fails.
    Retiring,
}

impl UserKeyState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::DecryptOnly => "decrypt_only",
            Self::Retiring => "retiring",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(Self::Active),
            "decrypt_only" => Ok(Self::DecryptOnly),
            "retiring" => Ok(Self::Retiring),
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
    /// Every state.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Running, Self::Done, Self::Failed];

    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
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
/// The settings key under which a decommissioned store holds the time it
/// was decommissioned (Unix milliseconds).
pub const DECOMMISSIONED_META: &str = "decommissioned_at_ms";

/// Job kind: KEK rotation of some or all shards.
pub const JOB_KIND_ROTATE_KEK: &str = "rotate_kek";
/// A user's rewrap: every key slot of the user's objects moved to one
/// user-key version (parameters `user_key_version=N`), then the older
/// versions destroyed.
pub const JOB_KIND_REWRAP_USER: &str = "rewrap_user";

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
    /// A newer KEK version of the shard exists (a rotation began); nothing
    /// was written: wrap the key under the newest version and try again.
    StaleKek,
}

/// A user-key version re-wrapped under a newer KEK version of its shard.
#[derive(Clone, PartialEq, Eq)]
pub struct UserKeyRewrap {
    /// Whose key.
    pub pseudonym: Pseudonym,
    /// User-key version.
    pub version: u32,
    /// Shard.
    pub shard: u32,
    /// The KEK version it was wrapped under (the row is updated only if it
    /// still is, so an erased user's row never comes back).
    pub from_kek: u32,
    /// The KEK version it is wrapped under now.
    pub to_kek: u32,
    /// The user key wrapped under `to_kek`.
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for UserKeyRewrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKeyRewrap")
            .field("pseudonym", &self.pseudonym)
            .field("version", &self.version)
            .field("shard", &self.shard)
            .field("from_kek", &self.from_kek)
            .field("to_kek", &self.to_kek)
            .finish_non_exhaustive()
    }
}

/// A KEK version without its key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KekInfo {
    /// Shard.
    pub shard: u32,
    /// Version.
    pub version: u32,
    /// The master version it is wrapped under.
    pub master_version: u32,
    /// When it was made, Unix milliseconds.
    pub created_at_ms: i64,
}

/// What destroying a shard's old KEK versions did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestroyKeks {
    /// These `(shard, version)` pairs are gone (possibly none).
    Destroyed(Vec<(u32, u32)>),
    /// Nothing was destroyed: this many user keys are still wrapped under
    /// an old version (written while the rotation ran); re-wrap them first.
    StillInUse(u64),
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
    /// Refused with [`StoreError::LegalHold`] (nothing written) while a
    /// legal hold names the user: checked in the same transaction.
    async fn erase_user(
        &self,
        pseudonym: &Pseudonym,
        now_ms: i64,
        gc_job_id: &str,
        principal: &str,
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
    /// Every KEK version, without key material, by shard then version.
    async fn kek_infos(&self) -> Result<Vec<KekInfo>, StoreError>;
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
    /// In one transaction: deletes every user key and every KEK, marks
    /// the store decommissioned at `at_ms` (see [`DECOMMISSIONED_META`])
    /// and records it for `principal`; scrubbed as an erasure. Returns the
    /// user-key and KEK versions destroyed.
    async fn decommission(&self, at_ms: i64, principal: &str) -> Result<(u64, u64), StoreError>;
    /// A value of the store's own settings table.
    async fn meta_value(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Sets a value unless one is set; returns the value that holds.
    async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Every value of the settings table whose key starts with `prefix`,
    /// by key.
    async fn meta_values(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Deletes a value of the settings table (scrubbed as an erasure: the
    /// value may be a wrapped key); false if there was none.
    async fn delete_meta(&self, key: &str) -> Result<bool, StoreError>;
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
    /// Subscribes to the invalidations that any process sharing this store
    /// commits from now on (its own included). `None` when the backend
    /// cannot tell other processes (SQLite serves one host): caches then
    /// rely on their time to live alone.
    async fn invalidations(&self) -> Result<Option<Invalidations>, StoreError> {
        Ok(None)
    }
}
