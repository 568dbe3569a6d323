//! Key administration: what ops may learn and do about keys and the durable
//! jobs that rotate them, never key material.
//!
//! - Status: a user's key versions (by user id or pseudonym) and the
//!   hierarchy's (master versions, shards, KEK ages, the erasure horizon).
//! - Jobs: listed, and watched until they change.
//! - A user's key rotated (a new active version, the old one decrypt-only,
//!   in one transaction) and a user's rewrap started (one unfinished per
//!   user; `NO_USER_KEY` for a user who never wrote).
//! - Master and KEK rotation started (one unfinished of each kind at a
//!   time; the request is on the audit trail before anything starts), and
//!   master retirement (refused for the newest version and while a KEK is
//!   wrapped under it).
//! - [`KeyAdmin::schedule_pass`], the key schedule (`keys.kek_max_age_days`),
//!   which the server runs every `keys.schedule_check_seconds`: at half the
//!   maximum age the master is rotated, and every shard's KEK once any
//!   shard's is due (all together, aligning their ages); master versions
//!   without KEKs are retired.
//! - Decommission: once the caller repeats the configured region, the
//!   hierarchy's decommission (every key access fails from then on, user
//!   keys and KEKs deleted in one transaction, then the master keys).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::format_time;
use crate::crypto::{Pseudonym, Suite};
use crate::error::{Error, Reason};
use crate::jobs::rotation::{
    parse_reseal_params, parse_rewrap_params, parse_rotate_master_params, reseal_params,
    rewrap_params, rotate_kek_params, rotate_master_params, KekShards,
};
use crate::jobs::JobRunner;
use crate::keys::keyring::MasterKeyError;
use crate::keys::master::checks;
use crate::keys::store::{
    AuditEntry, JobRecord, JobState, KeyStore, NewJob, UserKeyState, JOB_KIND_RESEAL,
    JOB_KIND_REWRAP_USER, JOB_KIND_ROTATE_KEK, JOB_KIND_ROTATE_MASTER,
};
use crate::keys::{unix_ms, KeyError, KeyHierarchy, UserKeyStatus};

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
    /// The configured spaces, which a reseal may name.
    spaces: Vec<String>,
}

impl KeyAdmin {
    /// Builds the service.
    pub fn new(keys: Arc<KeyHierarchy>, store: Arc<dyn KeyStore>, jobs: JobRunner) -> Self {
        Self {
            keys,
            store,
            jobs,
            spaces: Vec::new(),
        }
    }

    /// The configured spaces, for [`KeyAdmin::reseal`].
    #[must_use]
    pub fn with_spaces(mut self, spaces: Vec<String>) -> Self {
        self.spaces = spaces;
        self
    }

    /// Starts a reseal of `space`'s objects (empty: every space's) into
    /// `suite` (job kind [`JOB_KIND_RESEAL`], run by `content::Reseal`),
    /// recorded as `principal`'s request; returns the job with its suite
    /// and space. While a reseal is unfinished, returns that one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown suite or space; key-store
    /// failures (nothing started).
    pub async fn reseal(
        &self,
        principal: &str,
        suite: &str,
        space: &str,
    ) -> Result<(JobRecord, Suite, Option<String>), Error> {
        let Some(suite) = Suite::from_name(suite) else {
            let names: Vec<_> = Suite::ALL.iter().map(|s| s.name()).collect();
            return Err(Error::invalid(
                Reason::InvalidRequest,
                "suite",
                format!(
                    "{} is not a suite; the suites are {}",
                    crate::error::quote(suite),
                    names.join(", ")
                ),
            ));
        };
        let space = (!space.is_empty()).then(|| space.to_string());
        if let Some(space) = &space {
            if !self.spaces.contains(space) {
                return Err(Error::invalid(
                    Reason::InvalidRequest,
                    "space",
                    format!(
                        "{} is not a configured space; the spaces are {}",
                        crate::error::quote(space),
                        self.spaces.join(", ")
                    ),
                ));
            }
        }
        let params = reseal_params(suite, space.as_deref());
        let job = self
            .start_exclusive_job(principal, JOB_KIND_RESEAL, params.clone(), &params)
            .await?;
        let (suite, space) = parse_reseal_params(&job.params)
            .ok_or_else(|| Error::Internal(format!("reseal job {} has bad parameters", job.id)))?;
        tracing::info!(target: "sealgate::audit", job = %job.id, params = %job.params, "reseal started");
        Ok((job, suite, space))
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

    /// As [`Self::user_status`], for a user named by pseudonym (64 hex
    /// digits), as audit records and receipts name them.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed pseudonym; key-store
    /// failures.
    pub async fn pseudonym_status(&self, pseudonym: &str) -> Result<UserKeyStatus, Error> {
        let p = crate::crypto::Pseudonym::from_hex(pseudonym).map_err(|_| {
            Error::invalid(
                Reason::InvalidRequest,
                "pseudonym",
                format!(
                    "pseudonym {} is not 64 hex digits",
                    crate::error::quote(pseudonym)
                ),
            )
        })?;
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
    /// The request is on the audit trail, as `principal`'s, before
    /// anything starts; the job's end is recorded when it ends.
    ///
    /// # Errors
    /// Key-store failures (nothing started).
    pub async fn rotate_master(&self, principal: &str) -> Result<(JobRecord, u32), Error> {
        self.refresh_master().await?;
        let target = self.keys.master().versions().last().copied().unwrap_or(0) + 1;
        let job = self
            .start_exclusive_job(
                principal,
                JOB_KIND_ROTATE_MASTER,
                rotate_master_params(target),
                &format!("KEKs to master key version {target}"),
            )
            .await?;
        let target = parse_rotate_master_params(&job.params).ok_or_else(|| {
            Error::Internal(format!("master rotation job {} has bad parameters", job.id))
        })?;
        tracing::info!(target: "sealgate::audit", job = %job.id, master_version = target, "master rotation started");
        Ok((job, target))
    }

    /// Records `principal`'s request for a job of `kind` (action `kind`,
    /// detail `requested: what`) on the audit trail, then creates the job
    /// unless one of its kind is unfinished (that one is returned) and
    /// schedules it. Nothing starts if the record cannot be written.
    async fn start_exclusive_job(
        &self,
        principal: &str,
        kind: &str,
        params: String,
        what: &str,
    ) -> Result<JobRecord, Error> {
        self.start_job(principal, kind, None, params, what, true)
            .await
    }

    /// Records `principal`'s request for a job of `kind` for `pseudonym`
    /// (if any) on the audit trail, then creates the job (unless
    /// `exclusive` and one of its kind is unfinished: that one is
    /// returned) and schedules it.
    async fn start_job(
        &self,
        principal: &str,
        kind: &str,
        pseudonym: Option<Pseudonym>,
        params: String,
        what: &str,
        exclusive: bool,
    ) -> Result<JobRecord, Error> {
        self.store
            .audit(&AuditEntry {
                at_ms: unix_ms(),
                principal: principal.into(),
                action: kind.into(),
                pseudonym,
                outcome: "ok".into(),
                detail: format!("requested: {what}"),
            })
            .await?;
        let job = self
            .store
            .create_job(
                &NewJob {
                    id: crate::names::random_id(),
                    kind: kind.into(),
                    pseudonym,
                    params,
                },
                exclusive,
            )
            .await?;
        self.jobs.schedule(&job.id);
        Ok(job)
    }

    /// Removes master `version` from the keyring; returns the versions left.
    ///
    /// # Errors
    /// [`Error::MasterVersionNotFound`]; [`Error::FailedPrecondition`] (`MASTER_IN_USE`) for the
    /// newest version or one a KEK is wrapped under; keyring or key-store
    /// failures.
    pub async fn retire_master(&self, principal: &str, version: u32) -> Result<Vec<u32>, Error> {
        self.refresh_master().await?;
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
        checks::forget_version(&*self.store, version).await?;
        self.store
            .audit(&AuditEntry {
                at_ms: unix_ms(),
                principal: principal.into(),
                action: "retire_master".into(),
                pseudonym: None,
                outcome: "ok".into(),
                detail: format!("master key version {version} removed from the keyring"),
            })
            .await?;
        tracing::info!(target: "sealgate::audit", master_version = version, "master key version retired");
        Ok(master.versions())
    }

    /// Starts a KEK rotation of `shards`, recorded as `principal`'s
    /// request. While a KEK rotation is unfinished, returns that one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no shards or a shard past
    /// `keystore.shards`; key-store failures (nothing started).
    pub async fn rotate_kek(&self, principal: &str, shards: KekShards) -> Result<JobRecord, Error> {
        if let KekShards::Some(list) = &shards {
            if list.is_empty() {
                return Err(Error::invalid(
                    Reason::InvalidRequest,
                    "shards",
                    "name the shards to rotate, or all",
                ));
            }
            if let Some(s) = list.iter().find(|s| **s >= self.keys.shards()) {
                return Err(Error::invalid(
                    Reason::InvalidRequest,
                    "shards",
                    format!(
                        "shard {s} does not exist: shards are 0 to {}",
                        self.keys.shards() - 1
                    ),
                ));
            }
        }
        let params = rotate_kek_params(&shards);
        let job = self
            .start_exclusive_job(principal, JOB_KIND_ROTATE_KEK, params.clone(), &params)
            .await?;
        tracing::info!(target: "sealgate::audit", job = %job.id, params = %job.params, "KEK rotation started");
        Ok(job)
    }

    /// Rotates a user's key (see [`KeyHierarchy::rotate_user_key`]) for
    /// `principal`; returns the pseudonym and the new active version.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad user id; `USER_ERASED`;
    /// key-store failures.
    pub async fn rotate_user(
        &self,
        principal: &str,
        user_id: &str,
    ) -> Result<(crate::crypto::Pseudonym, u32), Error> {
        let p = self
            .keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))?;
        let version = self.keys.rotate_user_key(&p, principal).await?;
        tracing::info!(target: "sealgate::audit", principal, pseudonym = %p, version, "user key rotated");
        Ok((p, version))
    }

    /// Starts a rewrap of a user's objects to their active user-key
    /// version (job kind [`JOB_KIND_REWRAP_USER`], run by
    /// `content::RewrapUser`), recorded as `principal`'s request; returns
    /// the job, the pseudonym and the target version. While a rewrap of the
    /// user is unfinished, returns that one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad user id; `USER_ERASED`;
    /// `NO_USER_KEY` for a user who never wrote; key-store failures
    /// (nothing started).
    pub async fn rewrap_user(
        &self,
        principal: &str,
        user_id: &str,
    ) -> Result<(JobRecord, Pseudonym, u32), Error> {
        let p = self
            .keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))?;
        // A rewrap ends by destroying the older key versions: not of a held
        // user (the store refuses that step too).
        self.keys.ensure_not_held(&p).await?;
        let unfinished = self
            .store
            .unfinished_jobs()
            .await?
            .into_iter()
            .find(|j| j.kind == JOB_KIND_REWRAP_USER && j.pseudonym == Some(p));
        let job = match unfinished {
            Some(job) => job,
            None => {
                let status = self.keys.status(&p).await?;
                if status.tombstone.is_some() {
                    return Err(Error::UserErased);
                }
                let active = status
                    .versions
                    .iter()
                    .find(|v| v.state == UserKeyState::Active);
                let Some(target) = active.map(|v| v.version) else {
                    return Err(Error::FailedPrecondition {
                        reason: Reason::NoUserKey,
                        message: "the user has no key yet: nothing to rewrap".into(),
                    });
                };
                self.start_job(
                    principal,
                    JOB_KIND_REWRAP_USER,
                    Some(p),
                    rewrap_params(target),
                    &format!("key slots to user key version {target}"),
                    false,
                )
                .await?
            }
        };
        let target = parse_rewrap_params(&job.params)
            .ok_or_else(|| Error::Internal(format!("rewrap job {} has bad parameters", job.id)))?;
        tracing::info!(target: "sealgate::audit", principal, pseudonym = %p, job = %job.id, version = target, "rewrap started");
        Ok((job, p, target))
    }

    /// Decommissions the service for `principal` (see
    /// [`KeyHierarchy::decommission`]) once `confirm_region` repeats the
    /// configured region `region`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (nothing done) for another region; store
    /// or keyring failures (repeat the call to finish).
    pub async fn decommission(
        &self,
        principal: &str,
        region: &str,
        confirm_region: &str,
    ) -> Result<crate::keys::Decommissioned, Error> {
        if confirm_region != region {
            return Err(Error::invalid(
                Reason::InvalidRequest,
                "confirm_region",
                format!(
                    "confirm_region {} is not this gateway's region: nothing was destroyed",
                    crate::error::quote(confirm_region)
                ),
            ));
        }
        let done = self.keys.decommission(principal).await?;
        tracing::warn!(target: "sealgate::audit", principal, user_keys = done.user_keys, kek_versions = done.kek_versions, master_versions = ?done.master_versions, "decommissioned: every key destroyed");
        Ok(done)
    }

    /// Reads the master versions again, so that what this process says
    /// of them agrees with the last change any replica made.
    async fn refresh_master(&self) -> Result<(), Error> {
        self.keys
            .master()
            .refresh()
            .await
            .map_err(|e| Error::from(KeyError::from(e)))
    }

    /// The key hierarchy as a whole, without key material.
    ///
    /// # Errors
    /// Key-store failures.
    pub async fn hierarchy_status(&self) -> Result<HierarchyStatus, Error> {
        self.refresh_master().await?;
        let counts = self.store.kek_counts_by_master().await?;
        let master = self.keys.master();
        let masters = master
            .versions()
            .into_iter()
            .map(|version| MasterVersionStatus {
                version,
                kek_versions: counts
                    .iter()
                    .find(|(m, _)| *m == version)
                    .map_or(0, |(_, n)| *n),
                kms_key_arn: master.version_key(version),
            })
            .collect();
        let infos = self.store.kek_infos().await?;
        let mut per_shard = std::collections::BTreeMap::<u32, u32>::new();
        for i in &infos {
            *per_shard.entry(i.shard).or_default() += 1;
        }
        Ok(HierarchyStatus {
            masters,
            shards: self.keys.shards(),
            shards_with_kek: u32::try_from(per_shard.len()).unwrap_or(u32::MAX),
            kek_versions: infos.len() as u64,
            max_kek_versions_per_shard: per_shard.values().copied().max().unwrap_or(0),
            oldest_kek_created_ms: infos.iter().map(|i| i.created_at_ms).min(),
            kek_max_age: self.keys.kek_max_age(),
            backup: checks::backup_state(&*self.store).await?,
        })
    }

    /// One pass of the key schedule (`keys.kek_max_age_days`; nothing when
    /// it is off). At half the maximum age the master key is rotated and
    /// each shard's KEK too; master versions no KEK is wrapped under any
    /// more are retired. So no KEK version and no master version lives
    /// longer than the maximum age, as long as the rotations themselves
    /// finish within half of it.
    ///
    /// # Errors
    /// Key-store or keyring failures (the next pass tries again).
    pub async fn schedule_pass(&self) -> Result<(), Error> {
        let Some(max_age) = self.keys.kek_max_age() else {
            return Ok(());
        };
        let due_ms = i64::try_from((max_age / 2).as_millis()).unwrap_or(i64::MAX);
        let now = unix_ms();
        self.refresh_master().await?;
        let master = self.keys.master().clone();
        // The master: its versions' ages are kept in the store, from when
        // each was first recorded (`checks`).
        if let Some(&newest) = master.versions().last() {
            checks::record_version(&*self.store, &*master, newest)
                .await
                .map_err(|e| Error::from(KeyError::from(e)))?;
            let seen = checks::read(&*self.store)
                .await?
                .versions
                .get(&newest)
                .map_or(now, |v| v.recorded_ms);
            if now.saturating_sub(seen) >= due_ms {
                let state = checks::backup_state(&*self.store).await?;
                tracing::warn!(
                    master_keys_changed = state.keys_changed_ms.map(format_time),
                    last_backup = state.backup_ms.map(format_time),
                    "{}",
                    rotation_warning(state)
                );
                self.rotate_master("schedule").await?;
            }
        }
        let unfinished = self.store.unfinished_jobs().await?;
        let running = |kind: &str| unfinished.iter().any(|j| j.kind == kind);
        let rotating_master = running(JOB_KIND_ROTATE_MASTER);
        if !rotating_master {
            let counts = self.store.kek_counts_by_master().await?;
            let versions = master.versions();
            for v in versions.iter().take(versions.len().saturating_sub(1)) {
                if counts.iter().all(|(m, n)| *m != *v || *n == 0) {
                    self.retire_master("schedule", *v).await?;
                }
            }
        }
        // KEKs: every shard, once any shard's oldest live version is due.
        // Shards get their first version when their first user does, so
        // their ages differ; rotating them together aligns them, and a
        // rotation of every shard reads the key table once in its own
        // order, where one of a few shards walks each shard's index from
        // its start for every batch.
        let due = self
            .store
            .kek_infos()
            .await?
            .iter()
            .any(|i| now.saturating_sub(i.created_at_ms) >= due_ms);
        if due && !running(JOB_KIND_ROTATE_KEK) {
            self.rotate_kek("schedule", KekShards::All).await?;
        }
        Ok(())
    }
}

/// One master version, as KeyStatus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterVersionStatus {
    /// The version.
    pub version: u32,
    /// KEK versions wrapped under it.
    pub kek_versions: u64,
    /// With `aws-kms`: the KMS key the version uses.
    pub kms_key_arn: Option<String>,
}

/// What KeyStatus reports about the hierarchy as a whole.
#[derive(Debug, Clone)]
pub struct HierarchyStatus {
    /// Master versions, oldest first.
    pub masters: Vec<MasterVersionStatus>,
    /// Configured shards.
    pub shards: u32,
    /// Shards that have a KEK.
    pub shards_with_kek: u32,
    /// Live KEK versions.
    pub kek_versions: u64,
    /// Most KEK versions of one shard.
    pub max_kek_versions_per_shard: u32,
    /// Creation time of the oldest live KEK version.
    pub oldest_kek_created_ms: Option<i64>,
    /// The schedule's maximum age: the erasure horizon.
    pub kek_max_age: Option<Duration>,
    /// When the master keys last changed and the last backup was taken.
    pub backup: checks::BackupState,
}

/// The WARN line of a scheduled master rotation: the keyring changes, and
/// whether the last backup holds the master keys in use until now.
pub fn rotation_warning(state: checks::BackupState) -> String {
    let since = match (state.behind(), state.backup_ms) {
        (false, Some(ms)) => format!(
            "the last backup ({}) holds the master keys in use until now",
            format_time(ms)
        ),
        (true, Some(ms)) => format!(
            "the last backup ({}) is older than the master keys in use: it cannot restore \
             what is wrapped under them",
            format_time(ms)
        ),
        (_, None) => "no backup has been taken".into(),
    };
    format!(
        "scheduled master rotation: the keyring gains a new master version now; {since}; \
         take a backup (sealgate backup) once the rotation is done"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduled_rotation_warns_whether_a_backup_holds_the_keys_in_use() {
        let warn = |backup| {
            rotation_warning(checks::BackupState {
                keys_changed_ms: Some(1_000),
                backup_ms: backup,
            })
        };
        assert_eq!(
            warn(None),
            "scheduled master rotation: the keyring gains a new master version now; no backup \
             has been taken; take a backup (sealgate backup) once the rotation is done"
        );
        assert!(warn(Some(500)).contains(
            "the last backup (1970-01-01T00:00:00.500Z) is older than the master keys in use"
        ));
        assert!(warn(Some(2_000)).contains(
            "the last backup (1970-01-01T00:00:02.000Z) holds the master keys in use until now"
        ));
    }
}
