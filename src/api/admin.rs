//! KeyAdminService: the gRPC face of [`KeyAdmin`].

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{job_progress, pb};
use crate::keyadmin::KeyAdmin;
use crate::keys::store::{JobState, UserKeyState};

/// The KeyAdminService implementation.
pub struct KeyAdminApi {
    admin: Arc<KeyAdmin>,
}

impl KeyAdminApi {
    /// Wraps the key-administration service.
    pub fn new(admin: Arc<KeyAdmin>) -> Self {
        Self { admin }
    }
}

fn key_state(s: UserKeyState) -> pb::UserKeyState {
    match s {
        UserKeyState::Active => pb::UserKeyState::Active,
        UserKeyState::DecryptOnly => pb::UserKeyState::DecryptOnly,
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
        let status = self
            .admin
            .user_status(&request.into_inner().user_id)
            .await?;
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
        _request: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::RotateMasterKeyResponse>, Status> {
        let (job, master_version) = self.admin.rotate_master().await?;
        Ok(Response::new(pb::RotateMasterKeyResponse {
            job_id: job.id,
            master_version,
        }))
    }

    async fn retire_master_key(
        &self,
        request: Request<pb::RetireMasterKeyRequest>,
    ) -> Result<Response<pb::RetireMasterKeyResponse>, Status> {
        let remaining_versions = self
            .admin
            .retire_master(request.into_inner().version)
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
