//! KeyAdminService: key status without key material.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::ServiceError;
use super::objects::Objects;
use super::pb;
use crate::keys::store::UserKeyState;

/// The KeyAdminService implementation.
pub struct KeyAdminApi {
    objects: Arc<Objects>,
}

impl KeyAdminApi {
    /// Builds the service.
    pub fn new(objects: Arc<Objects>) -> Self {
        Self { objects }
    }
}

#[tonic::async_trait]
impl pb::key_admin_service_server::KeyAdminService for KeyAdminApi {
    async fn key_status(
        &self,
        request: Request<pb::KeyStatusRequest>,
    ) -> Result<Response<pb::KeyStatusResponse>, Status> {
        let p = self.objects.pseudonym(&request.into_inner().user_id)?;
        let status = self
            .objects
            .keys()
            .status(&p)
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(pb::KeyStatusResponse {
            pseudonym: status.pseudonym.to_string(),
            shard: status.shard,
            erased: status.tombstone.is_some(),
            versions: status
                .versions
                .into_iter()
                .map(|v| pb::UserKeyVersion {
                    version: v.version,
                    state: match v.state {
                        UserKeyState::Active => pb::UserKeyState::Active,
                        UserKeyState::DecryptOnly => pb::UserKeyState::DecryptOnly,
                    } as i32,
                    created_at_unix_ms: v.created_at_ms,
                    kek_version: v.kek_version,
                })
                .collect(),
            master_key_version: status.master_version,
        }))
    }
}
