//! KeyAdminService: the gRPC face of [`KeyAdmin`].

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{job_progress, pb};
use crate::jobs::rotation::KekShards;
use crate::keyadmin::KeyAdmin;
use crate::keys::store::{JobState, UserKeyState};

/// The KeyAdminService implementation.
pub struct KeyAdminApi {
    admin: Arc<KeyAdmin>,
    /// The configured region, which Decommission must be told.
    region: String,
}

impl KeyAdminApi {
    /// Wraps the key-administration service.
    pub fn new(admin: Arc<KeyAdmin>, region: String) -> Self {
        Self { admin, region }
    }
}

fn key_state(s: UserKeyState) -> pb::UserKeyState {
    match s {
        UserKeyState::Active => pb::UserKeyState::Active,
        UserKeyState::DecryptOnly => pb::UserKeyState::DecryptOnly,
        UserKeyState::Retiring => pb::UserKeyState::Retiring,
    }
}

/// A job state filter from the proto; UNSPECIFIED (and unknown numbers,
/// from a newer client) mean none.
fn state_filter(s: i32) -> Option<JobState> {
    match pb::JobState::try_from(s).ok()? {
        pb::JobState::Unspecified => None,
        pb::JobState::Pending => Some(JobState::Pending),
        pb::JobState::Running => Some(JobState::Running),
        pb::JobState::Done => Some(JobState::Done),
        pb::JobState::Failed => Some(JobState::Failed),
    }
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::JobProgress, Status>> + Send>>;

#[tonic::async_trait]
impl pb::key_admin_service_server::KeyAdminService for KeyAdminApi {
    async fn key_status(
        &self,
        request: Request<pb::KeyStatusRequest>,
    ) -> Result<Response<pb::KeyStatusResponse>, Status> {
        let r = request.into_inner();
        let status = match (r.user_id.is_empty(), r.pseudonym.is_empty()) {
            (true, true) => {
                let h = self.admin.hierarchy_status().await?;
                return Ok(Response::new(pb::KeyStatusResponse {
                    master_key_version: h.masters.last().map_or(0, |m| m.version),
                    hierarchy: Some(pb::HierarchyStatus {
                        masters: h
                            .masters
                            .iter()
                            .map(|m| pb::MasterVersionStatus {
                                version: m.version,
                                kek_versions: m.kek_versions,
                                kms_key_arn: m.kms_key_arn.clone().unwrap_or_default(),
                            })
                            .collect(),
                        shards_with_kek: h.shards_with_kek,
                        shards: h.shards,
                        kek_versions: h.kek_versions,
                        max_kek_versions_per_shard: h.max_kek_versions_per_shard,
                        oldest_kek_created_unix_ms: h.oldest_kek_created_ms.unwrap_or(0),
                        erasure_horizon_seconds: h
                            .kek_max_age
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
                        master_keys_changed_unix_ms: h.backup.keys_changed_ms.unwrap_or(0),
                        last_backup_unix_ms: h.backup.backup_ms.unwrap_or(0),
                    }),
                    ..Default::default()
                }));
            }
            (false, true) => self.admin.user_status(&r.user_id).await?,
            (true, false) => self.admin.pseudonym_status(&r.pseudonym).await?,
            (false, false) => {
                return Err(crate::error::Error::invalid(
                    crate::error::Reason::InvalidRequest,
                    "pseudonym",
                    "name a user by user_id or by pseudonym, not both",
                )
                .into())
            }
        };
        Ok(Response::new(pb::KeyStatusResponse {
            pseudonym: status.pseudonym.to_string(),
            shard: status.shard,
            erased: status.tombstone.is_some(),
            versions: status
                .versions
                .into_iter()
                .map(|v| pb::UserKeyVersion {
                    version: v.version,
                    state: key_state(v.state) as i32,
                    created_at_unix_ms: v.created_at_ms,
                    kek_version: v.kek_version,
                })
                .collect(),
            master_key_version: status.master_version,
            hierarchy: None,
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let r = request.into_inner();
        let jobs = self.admin.list_jobs(state_filter(r.state), r.limit).await?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(job_progress).collect(),
        }))
    }

    async fn rotate_master_key(
        &self,
        request: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::RotateMasterKeyResponse>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let (job, master_version) = self.admin.rotate_master(caller.name()).await?;
        Ok(Response::new(pb::RotateMasterKeyResponse {
            job_id: job.id,
            master_version,
        }))
    }

    async fn rotate_user_key(
        &self,
        request: Request<pb::RotateUserKeyRequest>,
    ) -> Result<Response<pb::RotateUserKeyResponse>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let (p, active_version) = self
            .admin
            .rotate_user(caller.name(), &request.into_inner().user_id)
            .await?;
        Ok(Response::new(pb::RotateUserKeyResponse {
            pseudonym: p.to_string(),
            active_version,
        }))
    }

    async fn rewrap_user(
        &self,
        request: Request<pb::RewrapUserRequest>,
    ) -> Result<Response<pb::RewrapUserResponse>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let (job, p, target_version) = self
            .admin
            .rewrap_user(caller.name(), &request.into_inner().user_id)
            .await?;
        Ok(Response::new(pb::RewrapUserResponse {
            job_id: job.id,
            pseudonym: p.to_string(),
            target_version,
        }))
    }

    async fn reseal(
        &self,
        request: Request<pb::ResealRequest>,
    ) -> Result<Response<pb::ResealResponse>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let r = request.into_inner();
        let (job, suite, space) = self.admin.reseal(caller.name(), &r.suite, &r.space).await?;
        Ok(Response::new(pb::ResealResponse {
            job_id: job.id,
            suite: suite.name().to_string(),
            space: space.unwrap_or_default(),
        }))
    }

    async fn decommission(
        &self,
        request: Request<pb::DecommissionRequest>,
    ) -> Result<Response<pb::DecommissionReceipt>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let done = self
            .admin
            .decommission(
                caller.name(),
                &self.region,
                &request.into_inner().confirm_region,
            )
            .await?;
        Ok(Response::new(pb::DecommissionReceipt {
            decommissioned_at_unix_ms: done.at_ms,
            user_keys_destroyed: done.user_keys,
            kek_versions_destroyed: done.kek_versions,
            master_versions_destroyed: done.master_versions,
        }))
    }

    async fn rotate_kek(
        &self,
        request: Request<pb::RotateKekRequest>,
    ) -> Result<Response<pb::RotateKekResponse>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let r = request.into_inner();
        let shards = if r.all {
            if !r.shards.is_empty() {
                return Err(crate::error::Error::invalid(
                    crate::error::Reason::InvalidRequest,
                    "shards",
                    "name shards or all, not both",
                )
                .into());
            }
            KekShards::All
        } else {
            KekShards::Some(r.shards)
        };
        let job = self.admin.rotate_kek(caller.name(), shards).await?;
        Ok(Response::new(pb::RotateKekResponse { job_id: job.id }))
    }

    async fn retire_master_key(
        &self,
        request: Request<pb::RetireMasterKeyRequest>,
    ) -> Result<Response<pb::RetireMasterKeyResponse>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let remaining_versions = self
            .admin
            .retire_master(caller.name(), request.into_inner().version)
            .await?;
        Ok(Response::new(pb::RetireMasterKeyResponse {
            remaining_versions,
        }))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().job_id;
        // The first read answers the call: an unknown id fails it.
        let first = self.admin.job_change(&id, None).await?;
        let admin = self.admin.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut seen = first;
            loop {
                let ended = matches!(seen.state, JobState::Done | JobState::Failed);
                if tx.send(Ok(job_progress(seen.clone()))).await.is_err() || ended {
                    return;
                }
                // Ends when the caller goes away: the next send fails.
                let next = tokio::select! {
                    next = admin.job_change(&id, Some(&seen)) => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(job) => seen = job,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
