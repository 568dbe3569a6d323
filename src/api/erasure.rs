//! ErasureService: the gRPC face of [`Erasure`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{job_progress, pb};
use crate::erasure::Erasure;
use crate::keys::store::Tombstone;

/// The ErasureService implementation.
pub struct ErasureApi {
    erasure: Arc<Erasure>,
}

impl ErasureApi {
    /// Wraps the erasure service.
    pub fn new(erasure: Arc<Erasure>) -> Self {
        Self { erasure }
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
        let tombstone = self.erasure.erase(&request.into_inner().user_id).await?;
        Ok(Response::new(receipt(&tombstone)))
    }

    async fn get_erasure(
        &self,
        request: Request<pb::GetErasureRequest>,
    ) -> Result<Response<pb::ErasureStatus>, Status> {
        let status = self.erasure.status(&request.into_inner().user_id).await?;
        Ok(Response::new(pb::ErasureStatus {
            receipt: Some(receipt(&status.tombstone)),
            gc: status.gc.map(job_progress),
        }))
    }
}
