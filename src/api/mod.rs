//! The gRPC surface: ContentService, ErasureService, KeyAdminService as thin
//! adapters (proto <-> domain calls), and the one mapping from the domain
//! error to `tonic::Status`, and the authorization of every call (`auth`).
//!
//! Nothing imports this module but the server and the CLI; it depends on the
//! domain services (`content`, `erasure`, `keyadmin`), never the other way
//! round.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod codec;
pub mod content;
pub mod download;
pub mod erasure;
pub mod error;
pub mod export;
pub mod holds;
pub mod http;
pub mod limits;

/// Generated protobuf types and gRPC stubs of `proto/sealgate/v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sealgate.v1");

    /// Encoded descriptor set, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/sealgate_descriptor.bin"));
}

use crate::keys::store::{JobRecord, JobState};

/// A job as the proto reports it (ListJobs, WatchJob, GetErasure).
pub(crate) fn job_progress(j: JobRecord) -> pb::JobProgress {
    let state = match j.state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Running => pb::JobState::Running,
        JobState::Done => pb::JobState::Done,
        JobState::Failed => pb::JobState::Failed,
    };
    pb::JobProgress {
        job_id: j.id,
        state: state as i32,
        done: j.done,
        last_error: j.last_error,
        kind: j.kind,
        total: j.total,
        created_at_unix_ms: j.created_at_ms,
        updated_at_unix_ms: j.updated_at_ms,
    }
}

/// A per-item error of a batch: the `google.rpc.Status` a unary call
/// would return, with the same details.
pub(crate) fn rpc_status(e: crate::error::Error) -> tonic_types::pb::Status {
    use prost::Message;
    let status = tonic::Status::from(e);
    tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| tonic_types::pb::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: Vec::new(),
    })
}
