//! Key administration: what ops may learn and do about keys and the durable
//! jobs that rotate them, never key material.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Reason};
use crate::jobs::JobRunner;
use crate::keys::store::{JobRecord, JobState, KeyStore};
use crate::keys::{KeyHierarchy, UserKeyStatus};

/// Jobs listed when the caller names no limit.
pub const DEFAULT_JOB_LIST: u32 = 100;
/// Most jobs one listing returns.
pub const MAX_JOB_LIST: u32 = 1000;
/// How often a watched job is read again.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// The key-administration service.
pub struct KeyAdmin {
    keys: Arc<KeyHierarchy>,
    store: Arc<dyn KeyStore>,
    jobs: JobRunner,
}

impl KeyAdmin {
    /// Builds the service.
    pub fn new(keys: Arc<KeyHierarchy>, store: Arc<dyn KeyStore>, jobs: JobRunner) -> Self {
        Self { keys, store, jobs }
    }

    /// A user's key versions and erasure state, without key material.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad user id; key-store failures.
    pub async fn user_status(&self, user_id: &str) -> Result<UserKeyStatus, Error> {
        let p = self
            .keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))?;
        Ok(self.keys.status(&p).await?)
    }

    /// The newest jobs, newest first: `limit` of them (0: the default,
    /// capped at [`MAX_JOB_LIST`]), optionally in one state only.
    ///
    /// # Errors
    /// Key-store failures.
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, Error> {
        let limit = match limit {
            0 => DEFAULT_JOB_LIST,
            n => n.min(MAX_JOB_LIST),
        };
        Ok(self.store.list_jobs(state, limit).await?)
    }

    /// A job by id.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an id no job can have;
    /// [`Error::JobNotFound`]; key-store failures.
    pub async fn job(&self, id: &str) -> Result<JobRecord, Error> {
        if crate::names::check_name(id).is_err() {
            return Err(Error::invalid(
                Reason::InvalidRequest,
                "job_id",
                format!("job_id {} is not a job id", crate::error::quote(id)),
            ));
        }
        self.store.job(id).await?.ok_or(Error::JobNotFound)
    }

    /// The job once it differs from `seen` (at once if `seen` is `None`):
    /// its state, progress or last error.
    ///
    /// # Errors
    /// As [`Self::job`].
    pub async fn job_change(&self, id: &str, seen: Option<&JobRecord>) -> Result<JobRecord, Error> {
        loop {
            let job = self.job(id).await?;
            let changed = seen.is_none_or(|s| {
                (s.state, s.done, s.total, &s.last_error)
                    != (job.state, job.done, job.total, &job.last_error)
            });
            if changed {
                return Ok(job);
            }
            tokio::time::sleep(WATCH_POLL).await;
        }
    }

    /// The job runner (for scheduling jobs this service records).
    pub fn jobs(&self) -> &JobRunner {
        &self.jobs
    }
}
