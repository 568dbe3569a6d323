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

fn receipt(t: &Tombstone, horizon: Option<i64>) -> pb::EraseReceipt {
    pb::EraseReceipt {
        backup_horizon_unix_ms: horizon.unwrap_or(0),
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
        let caller = super::auth::Caller::of(&request)?;
        let tombstone = self
            .erasure
            .erase(caller.name(), &request.into_inner().user_id)
            .await?;
        Ok(Response::new(receipt(
            &tombstone,
            self.erasure.backup_horizon_ms(&tombstone),
        )))
    }

    async fn get_erasure(
        &self,
        request: Request<pb::GetErasureRequest>,
    ) -> Result<Response<pb::ErasureStatus>, Status> {
        let status = self.erasure.status(&request.into_inner().user_id).await?;
        Ok(Response::new(pb::ErasureStatus {
            receipt: Some(receipt(
                &status.tombstone,
                self.erasure.backup_horizon_ms(&status.tombstone),
            )),
            gc: status.gc.map(job_progress),
        }))
    }
}
