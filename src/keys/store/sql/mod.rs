//! Every rule of the key store, written once over an [`Engine`].
//!
//! One file per role: `keys.rs` (KEKs, user keys, erasure, rotation,
//! decommission), `jobs.rs`, `audit.rs` (the audit chain and remembered
//! requests), `holds.rs` and `settings.rs`. This file holds what they
//! share: the write transaction, how rows become records, the audit chain's
//! append, the lease check and the checks before a user key is written.
//!
//! The serialisation rules, stated once (an engine decides how a lock is
//! taken; SQLite's one write lock satisfies them all):
//! - a user's lock before anything reads or changes whether the user is
//!   erased or held (erasure, user-key inserts and rotations, holds,
//!   retirement): the tombstone check and the insert of a user key are one
//!   atomic step against an erasure, and a hold placed as an erasure runs
//!   is seen by it;
//! - a shard's lock, shared by user-key writes (which check the shard's
//!   newest KEK version) and exclusive for KEK inserts and destruction, so
//!   no user key is written under a KEK version a rotation is leaving;
//! - the audit lock around every append: one chain whoever appends;
//! - a job kind's lock for exclusive job creation, and the job's row
//!   (`FOR UPDATE`) for every write conditional on its lease.
//!
//! Every transaction that destroys or changes a user's key versions, or
//! destroys KEK versions, notifies ([`Engine::notify`]) inside the
//! transaction, and is followed by [`Engine::scrub`] before its call
//! returns when it destroyed key material.

mod audit;
mod erasures;
mod holds;
mod jobs;
mod keys;
mod settings;

use async_trait::async_trait;

use super::engine::{params, Engine, Param, SqlRow};
use super::{
    audit_hash, AuditEntry, AuditRecord, HoldRecord, InsertOutcome, Invalidations, JobRecord,
    JobState, KekRecord, KeyStore, LeasedProgress, RequestRecord, StoreError, Tombstone,
    UserKeyRecord, UserKeyState,
};
use crate::clock::unix_ms;
use crate::crypto::Pseudonym;

/// The columns of a [`JobRecord`], named (never `*`: a statement prepared
/// on either side of a schema change reads the same columns).
pub(crate) const JOB_COLUMNS: &str = "id, kind, pseudonym, params, state, done, total, cursor, \
     last_error, owner, lease_until_ms, created_at_ms, updated_at_ms";

/// Every column of an audit record, named.
pub(crate) const AUDIT_COLUMNS: &str =
    "id, at_ms, principal, action, pseudonym, outcome, detail, prev_hash, hash";

/// The key store over engine `E`.
#[derive(Debug, Clone)]
pub struct SqlStore<E> {
    engine: E,
}

impl<E: Engine> SqlStore<E> {
    /// The store over an opened engine.
    pub fn new(engine: E) -> Self {
        Self { engine }
    }

    /// Begins a write transaction.
    async fn begin(&self) -> Result<Write<'_, E>, StoreError> {
        Ok(Write {
            engine: &self.engine,
            tx: self.engine.begin().await?,
        })
    }

    /// Begins a write transaction of a leased job's step, if
    /// `progress.owner` still holds the job's lease (`None`: nothing may be
    /// written).
    async fn begin_leased(
        &self,
        progress: &LeasedProgress<'_>,
    ) -> Result<Option<Write<'_, E>>, StoreError> {
        let mut tx = self.begin().await?;
        if tx.holds_lease(progress.id, progress.owner).await? {
            Ok(Some(tx))
        } else {
            tx.commit().await?;
            Ok(None)
        }
    }

    /// Rows of a read.
    async fn rows(&self, sql: &str, params: Vec<Param>) -> Result<Vec<E::Row>, StoreError> {
        self.engine.read(sql, params).await
    }

    /// The first row of a read, if any.
    async fn row(&self, sql: &str, params: Vec<Param>) -> Result<Option<E::Row>, StoreError> {
        Ok(self.rows(sql, params).await?.into_iter().next())
    }

    /// One write statement as its own transaction; the rows it changed.
    async fn write(&self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        self.engine.write(sql, params).await
    }
}

/// A write transaction of the store: rolled back if dropped uncommitted.
struct Write<'e, E: Engine> {
    engine: &'e E,
    tx: E::Tx,
}

impl<E: Engine> Write<'_, E> {
    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64, StoreError> {
        self.engine.execute(&mut self.tx, sql, params).await
    }

    async fn rows(&mut self, sql: &str, params: Vec<Param>) -> Result<Vec<E::Row>, StoreError> {
        self.engine.fetch(&mut self.tx, sql, params).await
    }

    async fn row(&mut self, sql: &str, params: Vec<Param>) -> Result<Option<E::Row>, StoreError> {
        Ok(self.rows(sql, params).await?.into_iter().next())
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.engine.commit(self.tx).await
    }

    async fn lock_user(&mut self, p: &Pseudonym) -> Result<(), StoreError> {
        self.engine.lock_user(&mut self.tx, p).await
    }

    async fn lock_users(&mut self, ps: &[Pseudonym]) -> Result<(), StoreError> {
        self.engine.lock_users(&mut self.tx, ps).await
    }

    async fn lock_shards(&mut self, shards: &[u32], exclusive: bool) -> Result<(), StoreError> {
        self.engine
            .lock_shards(&mut self.tx, shards, exclusive)
            .await
    }

    async fn notify(&mut self, changes: &[super::Invalidation]) -> Result<(), StoreError> {
        self.engine.notify(&mut self.tx, changes).await
    }

    /// Appends `entry` to the audit chain inside this transaction, under
    /// the audit lock: if the record cannot be written, nothing the
    /// transaction did is.
    async fn append_audit(&mut self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let mut records = self.append_audits(std::slice::from_ref(entry)).await?;
        records
            .pop()
            .ok_or_else(|| StoreError::Backend("no audit record appended".into()))
    }

    /// Appends `entries` to the audit chain in order, as
    /// [`Write::append_audit`] does one: one read of the chain's end, one
    /// insert (of at most [`AUDIT_ROWS_PER_INSERT`] rows at a time) and one
    /// head update, whatever their number.
    async fn append_audits(
        &mut self,
        entries: &[AuditEntry],
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.engine.lock_audit(&mut self.tx).await?;
        let last = self
            .row(
                "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
                params![],
            )
            .await?;
        let (mut id, mut prev_hash) = match last {
            None => (1, [0u8; 32]),
            Some(row) => {
                // A row without a readable hash (written around the chain)
                // is corruption, reported, never a panic.
                let hash = row
                    .opt_text("hash")?
                    .and_then(|h| hash_of_hex(&h))
                    .ok_or_else(|| StoreError::Backend("corrupt audit hash".into()))?;
                let id = u64::try_from(row.int("id")?)
                    .map_err(|_| StoreError::Backend("negative audit id".into()))?;
                (id + 1, hash)
            }
        };
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            let hash = audit_hash(id, entry, &prev_hash);
            records.push(AuditRecord {
                id,
                entry: entry.clone(),
                prev_hash,
                hash,
            });
            (id, prev_hash) = (id + 1, hash);
        }
        for chunk in records.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut values = Vec::with_capacity(chunk.len() * 9);
            for r in chunk {
                values.extend(params![
                    r.id,
                    r.entry.at_ms,
                    &r.entry.principal,
                    &r.entry.action,
                    r.entry.pseudonym.as_ref(),
                    &r.entry.outcome,
                    &r.entry.detail,
                    hex::encode(r.prev_hash),
                    hex::encode(r.hash),
                ]);
            }
            let sql = format!(
                "INSERT INTO audit (id, at_ms, principal, action, pseudonym, outcome, detail,
                                    prev_hash, hash)
                 VALUES {}",
                value_rows(chunk.len(), 9)
            );
            self.execute(&sql, values).await?;
        }
        if let Some(r) = records.last() {
            self.set_audit_head(r.id, &r.hash).await?;
        }
        Ok(records)
    }

    /// Records the chain's head apart from the records, so that removing
    /// the newest records is seen too.
    async fn set_audit_head(&mut self, id: u64, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.execute(SET_AUDIT_HEAD, params![audit_head_value(id, hash)])
            .await?;
        Ok(())
    }

    /// The user's tombstone, if erased.
    async fn tombstone(&mut self, p: &Pseudonym) -> Result<Option<Tombstone>, StoreError> {
        let row = self.row(TOMBSTONE_SELECT, params![p]).await?;
        row.map(|row| tombstone_row(*p, &row)).transpose()
    }

    /// Whether `owner` holds the lease of unfinished job `id`; if so (and
    /// the engine locks rows) the job's row stays locked to the end of the
    /// transaction, so no claim takes the lease before the caller's writes
    /// commit.
    async fn holds_lease(&mut self, id: &str, owner: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT id FROM jobs WHERE id = $1 AND owner = $2 AND state IN ('pending', 'running'){}",
            E::FOR_UPDATE
        );
        Ok(self.row(&sql, params![id, owner]).await?.is_some())
    }

    /// Records a leased job's progress (the caller checked the lease) and
    /// commits: the step and its progress are one.
    async fn commit_progress(mut self, p: &LeasedProgress<'_>) -> Result<(), StoreError> {
        let c = &p.checkpoint;
        self.execute(
            "UPDATE jobs SET done = $1, total = $2, cursor = $3, last_error = $4,
                             lease_until_ms = $5, updated_at_ms = $6
             WHERE id = $7 AND owner = $8",
            params![
                c.done,
                c.total,
                &c.cursor,
                &c.last_error,
                p.until_ms,
                unix_ms(),
                p.id,
                p.owner
            ],
        )
        .await?;
        self.commit().await
    }

    /// Why a user-key row may not be written, checked under the user's
    /// lock and the shard's (shared): the user is erased, or a KEK rotation
    /// began after the caller chose its KEK version (which would otherwise
    /// miss this row and destroy the only KEK that opens it).
    async fn refuse_user_key(
        &mut self,
        r: &UserKeyRecord,
    ) -> Result<Option<InsertOutcome>, StoreError> {
        self.lock_user(&r.pseudonym).await?;
        self.lock_shards(&[r.shard], false).await?;
        let erased = self
            .row(
                "SELECT pseudonym FROM tombstones WHERE pseudonym = $1",
                params![&r.pseudonym],
            )
            .await?
            .is_some();
        if erased {
            return Ok(Some(InsertOutcome::Erased));
        }
        let newest = self
            .row(
                "SELECT MAX(version) AS n FROM keks WHERE shard = $1",
                params![r.shard],
            )
            .await?
            .map(|row| row.opt_int("n"))
            .transpose()?
            .flatten();
        Ok(newest
            .is_some_and(|v| v > i64::from(r.kek_version))
            .then_some(InsertOutcome::StaleKek))
    }
}

/// Audit records one INSERT writes at most (9 parameters each: well
/// within SQLite's and PostgreSQL's limits on parameters).
const AUDIT_ROWS_PER_INSERT: usize = 500;

/// `n` rows of `cols` placeholders each, numbered from `$1`:
/// `($1, $2), ($3, $4)` for 2 rows of 2.
pub(crate) fn value_rows(n: usize, cols: usize) -> String {
    (0..n)
        .map(|r| {
            let row: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n` placeholders numbered from `$first`, for `IN (...)`.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Records the audit chain's head (`$1`, [`audit_head_value`]).
pub(crate) const SET_AUDIT_HEAD: &str = "INSERT INTO meta (key, value) VALUES ('audit_head', $1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// How the head of the chain is recorded: the last id and its hash.
pub(crate) fn audit_head_value(id: u64, hash: &[u8; 32]) -> String {
    format!("{id} {}", hex::encode(hash))
}

/// The tombstone of pseudonym `$1`.
const TOMBSTONE_SELECT: &str = "SELECT erased_at_ms, destroyed_versions, gc_job_id \
     FROM tombstones WHERE pseudonym = $1";

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in key store"))
}

fn pseudonym_of(s: &str) -> Result<Pseudonym, StoreError> {
    Pseudonym::from_hex(s).map_err(|_| corrupt("pseudonym"))
}

fn u32_of(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt("integer"))
}

fn u64_or_zero(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn hash_of_hex(text: &str) -> Option<[u8; 32]> {
    hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

fn tombstone_row(p: Pseudonym, row: &impl SqlRow) -> Result<Tombstone, StoreError> {
    let destroyed_versions = row
        .text("destroyed_versions")?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| corrupt("tombstone")))
        .collect::<Result<_, _>>()?;
    Ok(Tombstone {
        pseudonym: p,
        erased_at_ms: row.int("erased_at_ms")?,
        destroyed_versions,
        gc_job_id: row.text("gc_job_id")?,
    })
}

fn kek_row(row: &impl SqlRow) -> Result<KekRecord, StoreError> {
    Ok(KekRecord {
        shard: u32_of(row.int("shard")?)?,
        version: u32_of(row.int("version")?)?,
        master_version: u32_of(row.int("master_version")?)?,
        wrapped: row.bytes("wrapped")?,
        created_at_ms: row.int("created_at_ms")?,
    })
}

fn user_key_row(row: &impl SqlRow) -> Result<UserKeyRecord, StoreError> {
    Ok(UserKeyRecord {
        pseudonym: pseudonym_of(&row.text("pseudonym")?)?,
        version: u32_of(row.int("version")?)?,
        shard: u32_of(row.int("shard")?)?,
        kek_version: u32_of(row.int("kek_version")?)?,
        wrapped: row.bytes("wrapped")?,
        state: UserKeyState::parse(&row.text("state")?)?,
        created_at_ms: row.int("created_at_ms")?,
    })
}

fn job_row(row: &impl SqlRow) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: row.text("id")?,
        kind: row.text("kind")?,
        pseudonym: row
            .opt_text("pseudonym")?
            .as_deref()
            .map(pseudonym_of)
            .transpose()?,
        params: row.text("params")?,
        state: JobState::parse(&row.text("state")?)?,
        done: u64_or_zero(row.int("done")?),
        total: u64_or_zero(row.int("total")?),
        cursor: row.text("cursor")?,
        last_error: row.text("last_error")?,
        owner: row.opt_text("owner")?,
        lease_until_ms: row.int("lease_until_ms")?,
        created_at_ms: row.int("created_at_ms")?,
        updated_at_ms: row.int("updated_at_ms")?,
    })
}

fn request_row(row: &impl SqlRow) -> Result<RequestRecord, StoreError> {
    let malformed = || StoreError::Backend("malformed request row".into());
    Ok(RequestRecord {
        pseudonym: pseudonym_of(&row.text("pseudonym")?)?,
        request: row.bytes("request")?.try_into().map_err(|_| malformed())?,
        space: row.text("space")?,
        requested_id: row.text("requested_id")?,
        object_id: row.text("object_id")?,
        size: u64::try_from(row.int("size")?).map_err(|_| malformed())?,
        etag: row.text("etag")?,
        created_ms: row.int("created_ms")?,
        at_ms: row.int("at_ms")?,
    })
}

fn hold_row(row: &impl SqlRow) -> Result<HoldRecord, StoreError> {
    Ok(HoldRecord {
        pseudonym: pseudonym_of(&row.text("pseudonym")?)?,
        case_ref: row.text("case_ref")?,
        placed_at_ms: row.int("placed_at_ms")?,
        placed_by: row.text("placed_by")?,
    })
}

/// An audit row's entry (the fields the chain hashes).
pub(crate) fn audit_entry(row: &impl SqlRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        at_ms: row.int("at_ms")?,
        principal: row.text("principal")?,
        action: row.text("action")?,
        pseudonym: row
            .opt_text("pseudonym")?
            .as_deref()
            .map(pseudonym_of)
            .transpose()?,
        outcome: row.text("outcome")?,
        detail: row.text("detail")?,
    })
}

/// A stored audit record. An unreadable hash reads as zeros: verification
/// then names the record; it is not an error of the store.
fn audit_record(row: &impl SqlRow) -> Result<AuditRecord, StoreError> {
    let hash = |column: &str| -> Result<[u8; 32], StoreError> {
        Ok(hash_of_hex(&row.text(column)?).unwrap_or([0u8; 32]))
    };
    Ok(AuditRecord {
        id: u64::try_from(row.int("id")?)
            .map_err(|_| StoreError::Backend("negative audit id".into()))?,
        entry: audit_entry(row)?,
        prev_hash: hash("prev_hash")?,
        hash: hash("hash")?,
    })
}

#[async_trait]
impl<E: Engine> KeyStore for SqlStore<E> {
    async fn check_health(&self) -> Result<(), StoreError> {
        self.engine.check_health().await
    }

    async fn close(&self) {
        self.engine.close().await;
    }

    async fn backup_into(&self, path: &std::path::Path) -> Result<(), StoreError> {
        self.engine.backup_into(path).await
    }

    async fn admit_upload(&self) -> Result<(), StoreError> {
        self.engine.admit_upload().await
    }

    async fn invalidations(&self) -> Result<Option<Invalidations>, StoreError> {
        self.engine.invalidations().await
    }
}
