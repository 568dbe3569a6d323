//! LegalHoldService: the gRPC face of [`LegalHolds`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::Caller;
use super::pb;
use crate::holds::LegalHolds;
use crate::keys::store::HoldRecord;

/// The LegalHoldService implementation.
pub struct LegalHoldApi {
    holds: Arc<LegalHolds>,
}

impl LegalHoldApi {
    /// Wraps the legal-hold service.
    pub fn new(holds: Arc<LegalHolds>) -> Self {
        Self { holds }
    }
}

fn hold_pb(h: HoldRecord) -> pb::LegalHold {
    pb::LegalHold {
        pseudonym: h.pseudonym.to_string(),
        case_ref: h.case_ref,
        placed_at_unix_ms: h.placed_at_ms,
        placed_by: h.placed_by,
    }
}

#[tonic::async_trait]
impl pb::legal_hold_service_server::LegalHoldService for LegalHoldApi {
    async fn place_hold(
        &self,
        request: Request<pb::PlaceHoldRequest>,
    ) -> Result<Response<pb::LegalHold>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let hold = self
            .holds
            .place(caller.name(), &req.user_id, &req.case_ref)
            .await?;
        Ok(Response::new(hold_pb(hold)))
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let released = self
            .holds
            .release(caller.name(), &req.user_id, &req.case_ref)
            .await?;
        Ok(Response::new(pb::ReleaseHoldResponse { released }))
    }

    async fn list_holds(
        &self,
        request: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        let req = request.into_inner();
        let (holds, next) = self
            .holds
            .list(&req.user_id, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListHoldsResponse {
            holds: holds.into_iter().map(hold_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}
