//! ErasureService: the gRPC face of [`Erasure`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{job_progress, pb};
use crate::erasure::Erasure;
use crate::error::Error;
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
        ..Default::default()
    }
}

/// `r` with the signed receipt file and the fields it names.
fn signed(mut r: pb::EraseReceipt, file: Vec<u8>) -> Result<pb::EraseReceipt, Status> {
    let (decoded, _, _) = crate::receipt::parse_file(&file)
        .map_err(|e| Status::from(Error::Internal(format!("stored erasure receipt: {e}"))))?;
    r.signing_key_id = decoded.key_id;
    r.deployment_id = decoded.deployment_id;
    r.region = decoded.region;
    r.signed_receipt = file.into();
    Ok(r)
}

#[tonic::async_trait]
impl pb::erasure_service_server::ErasureService for ErasureApi {
    async fn erase_user(
        &self,
        request: Request<pb::EraseUserRequest>,
    ) -> Result<Response<pb::EraseReceipt>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let (tombstone, file) = self
            .erasure
            .erase_signed(caller.name(), &request.into_inner().user_id)
            .await?;
        Ok(Response::new(signed(
            receipt(&tombstone, self.erasure.backup_horizon_ms(&tombstone)),
            file,
        )?))
    }

    async fn get_erasure(
        &self,
        request: Request<pb::GetErasureRequest>,
    ) -> Result<Response<pb::ErasureStatus>, Status> {
        let status = self.erasure.status(&request.into_inner().user_id).await?;
        // Signed here if the process that erased died before signing.
        let file = self.erasure.receipt(&status.tombstone).await?;
        Ok(Response::new(pb::ErasureStatus {
            receipt: Some(signed(
                receipt(
                    &status.tombstone,
                    self.erasure.backup_horizon_ms(&status.tombstone),
                ),
                file,
            )?),
            gc: status.gc.map(job_progress),
        }))
    }

    async fn receipt_public_keys(
        &self,
        request: Request<pb::ReceiptPublicKeysRequest>,
    ) -> Result<Response<pb::ReceiptPublicKeysResponse>, Status> {
        let want = request.into_inner().key_id;
        let keys = self
            .erasure
            .receipt_public_keys()
            .await?
            .into_iter()
            .filter(|k| want.is_empty() || k.key_id == want)
            .map(|k| pb::ReceiptPublicKey {
                key_id: k.key_id,
                public_key: k.key.to_vec().into(),
            })
            .collect();
        Ok(Response::new(pb::ReceiptPublicKeysResponse { keys }))
    }
}
