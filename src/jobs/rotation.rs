//! Key rotation jobs.
//!
//! Master rotation ([`RotateMaster`], kind
//! [`JOB_KIND_ROTATE_MASTER`](crate::keys::store::JOB_KIND_ROTATE_MASTER),
//! parameters `master_version=N`): makes master version N exist (adding it
//! to the keyring is idempotent, so a crash between that and the first
//! batch is harmless), then re-wraps every KEK version under an older
//! master in batches, each batch committed with the job's progress in one
//! transaction. O(shards × KEK versions): seconds. Old master versions stay
//! in the keyring until retired.

use std::sync::Arc;

use async_trait::async_trait;

use super::{JobError, JobHandler, LeasedJob};
use crate::keys::keyring::MasterKeyError;
use crate::keys::{KeyError, KeyHierarchy};

/// KEK versions re-wrapped per transaction.
const KEK_BATCH: u32 = 32;

/// The parameters of a master rotation to `version`.
pub fn rotate_master_params(version: u32) -> String {
    format!("master_version={version}")
}

/// The target version in master rotation parameters.
pub fn parse_rotate_master_params(params: &str) -> Option<u32> {
    params.strip_prefix("master_version=")?.parse().ok()
}

/// Whether trying again can help after a key-layer error.
pub(crate) fn key_error(e: KeyError) -> JobError {
    match e {
        KeyError::Unavailable(m) | KeyError::StorageFull(m) | KeyError::StoreLost(m) => {
            JobError::Transient(m)
        }
        KeyError::UserErased
        | KeyError::MissingUserKeyVersion(_)
        | KeyError::Unwrap(_)
        | KeyError::Internal(_) => JobError::Permanent(e.to_string()),
    }
}

fn master_error(e: MasterKeyError) -> JobError {
    match e {
        // A keyring file that cannot be read or written now (a full or
        // read-only disk) may be repaired.
        MasterKeyError::Keyring { .. } => JobError::Transient(e.to_string()),
        _ => JobError::Permanent(e.to_string()),
    }
}

/// Runs master rotations.
pub struct RotateMaster {
    keys: Arc<KeyHierarchy>,
}

impl RotateMaster {
    /// Rotates the masters of `keys`.
    pub fn new(keys: Arc<KeyHierarchy>) -> Self {
        Self { keys }
    }
}

#[async_trait]
impl JobHandler for RotateMaster {
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
        let target = parse_rotate_master_params(&job.record().params).ok_or_else(|| {
            JobError::Permanent(format!(
                "bad master rotation parameters {:?}",
                job.record().params
            ))
        })?;
        self.keys
            .master()
            .add_version(target)
            .await
            .map_err(master_error)?;
        let store = self.keys.store().clone();
        let remaining: u64 = store
            .kek_counts_by_master()
            .await?
            .iter()
            .filter(|(m, _)| *m < target)
            .map(|(_, n)| n)
            .sum();
        let mut done = job.record().done;
        let total = done + remaining;
        job.checkpoint(done, total, "").await?;
        loop {
            let batch = self
                .keys
                .rewrap_keks_to_master(target, KEK_BATCH)
                .await
                .map_err(key_error)?;
            if batch.is_empty() {
                return Ok(());
            }
            let next = done + batch.len() as u64;
            let held = store
                .rewrap_keks(&batch, &job.progress(next, total.max(next), ""))
                .await?;
            job.note_progress(held, next, total.max(next), "")?;
            done = next;
        }
    }
}
