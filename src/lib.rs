//! sealgate: an encrypted user-content storage gateway.
//!
//! See `ARCHITECTURE.md` for the map of this crate and `FORMAT.md` for the
//! object format.
#![forbid(unsafe_code)]

pub mod crypto;
