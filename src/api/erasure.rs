//! ErasureService: crypto-shredding of users.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::ServiceError;
use super::objects::Objects;
use super::pb;
use crate::jobs::gc::GcRunner;
use crate::keys::store::{JobState, Tombstone};

/// The ErasureService implementation.
pub struct ErasureApi {
    objects: Arc<Objects>,
    gc: GcRunner,
}

impl ErasureApi {
    /// Builds the service.
    pub fn new(objects: Arc<Objects>, gc: GcRunner) -> Self {
        Self { objects, gc }
    }
}

fn receipt(t: &Tombstone) -> pb::EraseReceipt {
    pb::EraseReceipt {
        pseudonym: t.pseudonym.to_string(),
        erased_at_unix_ms: t.erased_at_ms,
        destroyed_key_versions: t.destroyed_versions.clone(),
        gc_job_id: t.gc_job_id.clone(),
    }
}

#[tonic::async_trait]
impl pb::erasure_service_server::ErasureService for ErasureApi {
    async fn erase_user(
        &self,
        request: Request<pb::EraseUserRequest>,
    ) -> Result<Response<pb::EraseReceipt>, Status> {
        let p = self.objects.pseudonym(&request.into_inner().user_id)?;
        let tombstone = self
            .objects
            .keys()
            .erase(&p)
            .await
            .map_err(ServiceError::from)?;
        tracing::info!(
            target: "sealgate::audit",
            pseudonym = %p,
            versions = ?tombstone.destroyed_versions,
            job = %tombstone.gc_job_id,
            "user erased"
        );
        self.gc.schedule(&tombstone.gc_job_id);
        Ok(Response::new(receipt(&tombstone)))
    }

    async fn get_erasure(
        &self,
        request: Request<pb::GetErasureRequest>,
    ) -> Result<Response<pb::ErasureStatus>, Status> {
        let p = self.objects.pseudonym(&request.into_inner().user_id)?;
        let store = self.objects.keys().store();
        let tombstone = store
            .tombstone(&p)
            .await
            .map_err(|e| ServiceError::from(crate::keys::KeyError::from(e)))?
            .ok_or_else(|| Status::not_found("no erasure recorded for this user"))?;
        let job = store
            .job(&tombstone.gc_job_id)
            .await
            .map_err(|e| ServiceError::from(crate::keys::KeyError::from(e)))?;
        let gc = job.map(|j| pb::JobProgress {
            job_id: j.id,
            state: match j.state {
                JobState::Pending => pb::JobState::Pending,
                JobState::Running => pb::JobState::Running,
                JobState::Done => pb::JobState::Done,
                JobState::Failed => pb::JobState::Failed,
            } as i32,
            done: j.done,
            last_error: j.last_error,
        });
        Ok(Response::new(pb::ErasureStatus {
            receipt: Some(receipt(&tombstone)),
            gc,
        }))
    }
}
