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
pub mod erasure;
pub mod error;
pub mod holds;

/// Generated protobuf types and gRPC stubs of `proto/sealgate/v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sealgate.v1");

    /// Encoded descriptor set, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/sealgate_descriptor.bin"));
}
