//! The gRPC surface: ContentService, ErasureService, KeyAdminService, and
//! the one mapping from service errors to `tonic::Status`.
//!
//! Nothing imports this module but the server and the CLI; it depends on
//! `keys`, `blob` and `crypto`, never the other way round.

pub mod admin;
pub mod content;
pub mod erasure;
pub mod error;
pub mod objects;
pub mod validate;

/// Generated protobuf types and gRPC stubs of `proto/sealgate/v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("sealgate.v1");

    /// Encoded descriptor set, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/sealgate_descriptor.bin"));
}
