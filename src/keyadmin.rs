//! Key administration: what ops may learn and do about keys and the durable
//! jobs that rotate them, never key material.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Reason};
use crate::jobs::rotation::{parse_rotate_master_params, rotate_master_params};
use crate::jobs::JobRunner;
use crate::keys::keyring::MasterKeyError;
use crate::keys::store::{JobRecord, JobState, KeyStore, NewJob, JOB_KIND_ROTATE_MASTER};
use crate::keys::{KeyError, KeyHierarchy, UserKeyStatus};

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

    /// Starts a master rotation: a job that adds master version newest + 1
    /// and re-wraps every KEK under it. While a master rotation is
    /// unfinished, returns that one instead. Returns the job and its target
    /// version.
    ///
    /// # Errors
    /// Key-store failures (nothing started).
    pub async fn rotate_master(&self) -> Result<(JobRecord, u32), Error> {
        let target = self.keys.master().versions().last().copied().unwrap_or(0) + 1;
        let job = self
            .store
            .create_job(
                &NewJob {
                    id: crate::names::random_id(),
                    kind: JOB_KIND_ROTATE_MASTER.into(),
                    pseudonym: None,
                    params: rotate_master_params(target),
                },
                true,
            )
            .await?;
        let target = parse_rotate_master_params(&job.params).ok_or_else(|| {
            Error::Internal(format!("master rotation job {} has bad parameters", job.id))
        })?;
        tracing::info!(target: "sealgate::audit", job = %job.id, master_version = target, "master rotation started");
        self.jobs.schedule(&job.id);
        Ok((job, target))
    }

    /// Removes master `version` from the keyring; returns the versions left.
    ///
    /// # Errors
    /// [`Error::MasterVersionNotFound`]; [`Error::FailedPrecondition`] (`MASTER_IN_USE`) for the
    /// newest version or one a KEK is wrapped under; keyring or key-store
    /// failures.
    pub async fn retire_master(&self, version: u32) -> Result<Vec<u32>, Error> {
        let master = self.keys.master();
        let versions = master.versions();
        if !versions.contains(&version) {
            return Err(Error::MasterVersionNotFound(version));
        }
        if versions.last() == Some(&version) {
            return Err(Error::master_in_use(format!(
                "master key version {version} is the newest: it wraps new KEKs"
            )));
        }
        let in_use = self
            .store
            .kek_counts_by_master()
            .await?
            .into_iter()
            .find(|(m, _)| *m == version)
            .map_or(0, |(_, n)| n);
        if in_use > 0 {
            return Err(Error::master_in_use(format!(
                "{in_use} KEK versions are wrapped under master key version {version}; \
                 rotate the master key first"
            )));
        }
        master.retire_version(version).await.map_err(|e| match e {
            MasterKeyError::UnknownVersion(v) => Error::MasterVersionNotFound(v),
            MasterKeyError::NewestVersion(_) => Error::master_in_use(e.to_string()),
            other => Error::from(KeyError::from(other)),
        })?;
        self.store
            .audit(
                "retire_master",
                None,
                &format!("master key version {version} removed from the keyring"),
            )
            .await?;
        tracing::info!(target: "sealgate::audit", master_version = version, "master key version retired");
        Ok(master.versions())
    }
}
