//! The records the key store keeps: what each row means, without SQL.

use super::StoreError;
use crate::crypto::Pseudonym;

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
/// A reseal: objects re-encrypted into another cipher suite (parameters
/// `suite=NAME` and optionally ` space=NAME`).
pub const JOB_KIND_RESEAL: &str = "reseal";

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

/// The state of an erasure asked for with a cooling-off window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleState {
    /// Waiting for its deadline; the user is restricted meanwhile.
    Scheduled,
    /// Called off within the window; the user is served again.
    Cancelled,
}

impl ScheduleState {
    /// The state as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "scheduled" => Ok(Self::Scheduled),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(StoreError::Backend(format!(
                "unknown scheduled-erasure state {other:?}"
            ))),
        }
    }
}

/// An erasure asked for with a cooling-off window (until it is carried
/// out: the erasure deletes the record in its own transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledErasure {
    /// The user.
    pub pseudonym: Pseudonym,
    /// Scheduled or cancelled.
    pub state: ScheduleState,
    /// When the user is to be erased, Unix milliseconds.
    pub due_ms: i64,
    /// When it was asked for.
    pub requested_at_ms: i64,
    /// Who asked.
    pub requested_by: String,
    /// The request (call or batch) that asked; empty if none was given.
    pub request_id: String,
    /// When the state last changed (the cancellation's time, once
    /// cancelled).
    pub updated_at_ms: i64,
}

/// What an erasure-feed event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErasureEventKind {
    /// An erasure was scheduled (its deadline in the event).
    Scheduled,
    /// A scheduled erasure was cancelled.
    Cancelled,
    /// The user's keys were destroyed.
    Erased,
    /// The user's ciphertext was deleted (the garbage collection ended).
    Collected,
    /// An erasure was asked for while legal holds cover the user.
    PendingHold,
}

impl ErasureEventKind {
    /// The kind as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Cancelled => "cancelled",
            Self::Erased => "erased",
            Self::Collected => "collected",
            Self::PendingHold => "pending_hold",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "scheduled" => Ok(Self::Scheduled),
            "cancelled" => Ok(Self::Cancelled),
            "erased" => Ok(Self::Erased),
            "collected" => Ok(Self::Collected),
            "pending_hold" => Ok(Self::PendingHold),
            other => Err(StoreError::Backend(format!(
                "unknown erasure event kind {other:?}"
            ))),
        }
    }
}

/// One event of the erasure feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureEvent {
    /// Its place in the feed: strictly increasing in commit order.
    pub cursor: u64,
    /// When it happened, Unix milliseconds.
    pub at_ms: i64,
    /// What happened.
    pub kind: ErasureEventKind,
    /// To whom.
    pub pseudonym: Pseudonym,
    /// A scheduled erasure's deadline; 0 for other kinds.
    pub due_ms: i64,
}

/// How one user's erasure in a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseOutcome {
    /// Erased now, or earlier (the first tombstone, unchanged).
    Erased(Tombstone),
    /// Legal holds by this many cases name the user: not erased. An
    /// erasure asked for at once is recorded instead (scheduled, due now:
    /// it runs when the last hold is released) unless one was already.
    Held {
        /// How many cases hold the user.
        cases: usize,
    },
    /// Erasing only what was due: the user's erasure was cancelled, or is
    /// no longer scheduled, or not yet due; nothing was written for them.
    NotDue,
}

/// How scheduling an erasure ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleOutcome {
    /// Scheduled now, or already (the earlier schedule stands, its deadline
    /// unchanged), or cancelled by the time a retry of the same request
    /// came (the record as it stands).
    Scheduled(ScheduledErasure),
    /// The user is erased already.
    Erased(Tombstone),
}

/// How cancelling a scheduled erasure ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled now, or already.
    Cancelled(ScheduledErasure),
    /// No erasure was scheduled for the user.
    NotScheduled,
    /// Too late: the user is erased.
    Erased(Tombstone),
}

/// The settings key under which the store records the newest erasure-feed
/// cursor dropped by retention (0 or absent: none dropped).
pub const ERASURE_FEED_FLOOR_META: &str = "erasure_feed_floor";

/// The most cases a hold count reports (a user held by more reads as held
/// by this many).
pub const MAX_CASES_COUNTED: u32 = 1000;
