//! sealgate: an encrypted user-content storage gateway.
//!
//! See `ARCHITECTURE.md` for the map of this crate and `FORMAT.md` for the
//! object format.
#![forbid(unsafe_code)]

pub mod api;
pub mod blob;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod jobs;
pub mod keys;
pub mod server;
pub mod telemetry;
