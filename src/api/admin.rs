//! KeyAdminService: the gRPC face of [`KeyAdmin`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb;
use crate::keyadmin::KeyAdmin;
use crate::keys::store::UserKeyState;

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
}
