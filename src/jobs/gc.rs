//! Erasure garbage collection: deletes every object of an erased user.
//!
//! Unreadability does not wait for this job: the user's keys are already
//! destroyed when it starts. The job lists the user's prefix in every space
//! and deletes in batches, recording progress after each batch, so a restart
//! simply lists again and carries on. Storage errors are retried with
//! capped exponential backoff; the last error is visible through GetErasure.
//! A job runs once at a time however often it is scheduled (every EraseUser
//! call schedules it, the idempotent repeats included), so its count of
//! deleted objects is exact.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::blob::{BlobKey, BlobStore};
use crate::keys::store::{AuditEntry, JobRecord, JobState, KeyStore, JOB_KIND_ERASURE_GC};

const BATCH: usize = 100;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Runs erasure GC jobs in the background.
#[derive(Clone)]
pub struct GcRunner {
    tx: mpsc::UnboundedSender<String>,
}

impl GcRunner {
    /// Starts the runner and resumes every unfinished job in the store.
    ///
    /// # Errors
    /// If the unfinished jobs cannot be listed.
    pub async fn start(
        store: Arc<dyn KeyStore>,
        blob: Arc<dyn BlobStore>,
        spaces: Vec<String>,
    ) -> Result<Self, crate::keys::store::StoreError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let pending = store.unfinished_jobs().await?;
        for job in &pending {
            let _ = tx.send(job.id.clone());
        }
        if !pending.is_empty() {
            tracing::info!(
                jobs = pending.len(),
                "resuming unfinished garbage-collection jobs"
            );
        }
        let running = Arc::new(Mutex::new(HashSet::<String>::new()));
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                // A job already running is not started twice: two runs
                // would each delete and count the same objects.
                if !running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone())
                {
                    continue;
                }
                let (store, blob, spaces) = (store.clone(), blob.clone(), spaces.clone());
                let running = running.clone();
                tokio::spawn(async move {
                    run_job(&*store, &*blob, &spaces, &id).await;
                    running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                });
            }
        });
        Ok(Self { tx })
    }

    /// Schedules a job (already recorded in the store).
    pub fn schedule(&self, job_id: &str) {
        let _ = self.tx.send(job_id.to_string());
    }
}

async fn run_job(store: &dyn KeyStore, blob: &dyn BlobStore, spaces: &[String], id: &str) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let job = match store.job(id).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = id, error = %e, "cannot read job; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if job.kind != JOB_KIND_ERASURE_GC || matches!(job.state, JobState::Done | JobState::Failed)
        {
            return;
        }
        match collect(store, blob, spaces, &job).await {
            Ok(done) => {
                // Recorded before the job is marked done: a record that
                // cannot be written leaves the job to run again.
                let recorded = store
                    .audit(&AuditEntry {
                        at_ms: crate::keys::unix_ms(),
                        principal: "gateway".into(),
                        action: "erasure_gc_done".into(),
                        pseudonym: job.pseudonym,
                        outcome: "ok".into(),
                        detail: format!("deleted {done} objects"),
                    })
                    .await;
                match recorded {
                    Err(e) => {
                        tracing::warn!(job = id, error = %e, "cannot record job completion in the audit trail; retrying");
                    }
                    Ok(_) => match store.update_job(id, JobState::Done, done, "").await {
                        Err(e) => {
                            tracing::warn!(job = id, error = %e, "cannot record job completion; retrying");
                        }
                        Ok(()) => {
                            tracing::info!(target: "sealgate::audit", job = id, deleted = done, "erasure garbage collection done");
                            return;
                        }
                    },
                }
            }
            Err((done, e)) => {
                tracing::warn!(job = id, error = %e, "garbage collection failed; retrying");
                let _ = store.update_job(id, JobState::Running, done, &e).await;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Deletes every object of the job's user; returns the total deleted.
async fn collect(
    store: &dyn KeyStore,
    blob: &dyn BlobStore,
    spaces: &[String],
    job: &JobRecord,
) -> Result<u64, (u64, String)> {
    let mut done = job.done;
    let Some(p) = job.pseudonym else {
        return Ok(done);
    };
    let owner = p.to_string();
    store
        .update_job(&job.id, JobState::Running, done, "")
        .await
        .map_err(|e| (done, e.to_string()))?;
    for space in spaces {
        loop {
            let batch = blob
                .list(space, &owner, None, BATCH)
                .await
                .map_err(|e| (done, e.to_string()))?;
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
            done += blob
                .delete_many(&keys)
                .await
                .map_err(|e| (done, e.to_string()))?;
            store
                .update_job(&job.id, JobState::Running, done, "")
                .await
                .map_err(|e| (done, e.to_string()))?;
        }
    }
    Ok(done)
}
