//! AuditService: the gRPC face of [`AuditTrail`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb;
use crate::audit::AuditTrail;

/// The AuditService implementation.
pub struct AuditApi {
    audit: Arc<AuditTrail>,
}

impl AuditApi {
    /// Wraps the audit trail.
    pub fn new(audit: Arc<AuditTrail>) -> Self {
        Self { audit }
    }
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditApi {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let req = request.into_inner();
        let (records, next) = self
            .audit
            .list(
                &req.user_id,
                req.since_unix_ms,
                req.page_size,
                &req.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListAuditResponse {
            records: records
                .into_iter()
                .map(|r| pb::AuditRecord {
                    id: r.id,
                    at_unix_ms: r.entry.at_ms,
                    principal: r.entry.principal,
                    action: r.entry.action,
                    pseudonym: r.entry.pseudonym.map(|p| p.to_string()).unwrap_or_default(),
                    outcome: r.entry.outcome,
                    detail: r.entry.detail,
                    prev_hash: r.prev_hash.to_vec().into(),
                    hash: r.hash.to_vec().into(),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn verify_audit(
        &self,
        _request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let verdict = self.audit.verify().await?;
        let (first_broken_id, problem) = verdict.broken.clone().unwrap_or_default();
        Ok(Response::new(pb::VerifyAuditResponse {
            records: verdict.records,
            intact: verdict.broken.is_none(),
            first_broken_id,
            problem,
        }))
    }
}
