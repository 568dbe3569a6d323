//! sealgate: an encrypted user-content storage gateway.
//!
//! See `ARCHITECTURE.md` for the map of this crate and `FORMAT.md` for the
//! object format.
// `deny`, not `forbid`: one module may opt out with a local `allow`, the SM4
// GFNI/AVX-512 kernel (`crypto::sm4::x86`), whose intrinsics need `unsafe`.
// Nothing else in the library may.
#![deny(unsafe_code)]

// Layers, top to bottom (ARCHITECTURE.md; an import only points down):
// the shell, the gRPC adapters, the domain services and jobs, keys and blob,
// the pure core.
pub mod cli;
pub mod config;
pub mod deployment;
pub mod server;
pub mod telemetry;

pub mod api;

pub mod audit;
pub mod backup;
pub mod content;
pub mod erasure;
pub mod error;
pub mod export;
pub mod holds;
pub mod jobs;
pub mod keyadmin;
pub mod receipt;
pub mod signed_read;

pub mod blob;
pub mod keys;

pub mod aws;
pub mod clock;
pub mod crypto;
pub mod disk;
pub mod identity;
pub mod metrics;
pub mod names;
pub mod residency;
