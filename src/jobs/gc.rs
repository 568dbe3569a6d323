//! Erasure garbage collection: deletes every object of an erased user.
//!
//! Unreadability does not wait for this job: the user's keys are already
//! destroyed when it starts. The job lists the user's prefix in every space
//! and deletes in batches, checkpointing its count after each batch, so a
//! process that resumes it simply lists again and carries on. Storage errors
//! are transient (retried with backoff by the runner); the last one is
//! visible through GetErasure. The job's lease ([`super`]) means one process
//! runs it at a time however often it is scheduled (every EraseUser call
//! schedules it, the idempotent repeats included), so its count of deleted
//! objects is exact.

use std::sync::Arc;

use async_trait::async_trait;

use super::{JobError, JobHandler, LeasedJob};
use crate::blob::{BlobError, BlobKey, BlobStore};
use crate::keys::store::{ErasureEventKind, ErasureLog};

const BATCH: usize = 100;

/// Runs erasure GC jobs ([`crate::keys::store::JOB_KIND_ERASURE_GC`]).
pub struct ErasureGc {
    blob: Arc<dyn BlobStore>,
    spaces: Vec<String>,
    /// Where the job's end is told to the erasure feed.
    feed: Arc<dyn ErasureLog>,
}

impl ErasureGc {
    /// Deletes from `blob` in every one of `spaces`; appends a `collected`
    /// event to `feed` at the end.
    pub fn new(blob: Arc<dyn BlobStore>, spaces: Vec<String>, feed: Arc<dyn ErasureLog>) -> Self {
        Self { blob, spaces, feed }
    }
}

fn transient(e: BlobError) -> JobError {
    JobError::Transient(format!("object store: {e}"))
}

#[async_trait]
impl JobHandler for ErasureGc {
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
        let Some(p) = job.record().pseudonym else {
            return Err(JobError::Permanent(
                "garbage-collection job without a user".into(),
            ));
        };
        let owner = p.to_string();
        let mut done = job.record().done;
        for space in &self.spaces {
            loop {
                let batch = self
                    .blob
                    .list(space, &owner, None, BATCH)
                    .await
                    .map_err(transient)?;
                if batch.is_empty() {
                    break;
                }
                let keys: Vec<BlobKey> = batch
                    .into_iter()
                    .map(|entry| BlobKey {
                        space: space.clone(),
                        owner: owner.clone(),
                        name: entry.name,
                    })
                    .collect();
                done += self.blob.delete_many(&keys).await.map_err(transient)?;
                job.checkpoint(done, 0, "").await?;
            }
        }
        job.checkpoint(done, done, "").await?;
        // Told once the ciphertext is gone; a process that dies between
        // the two tells it again when it resumes the job.
        self.feed
            .append_erasure_event(ErasureEventKind::Collected, &p, crate::keys::unix_ms())
            .await?;
        Ok(())
    }
}
