//! The key layer: master key -> KEK shards -> user keys -> DEKs, in three
//! rooms whose arrows point one way: the hierarchy uses the providers and
//! the store, a provider may use the store, the store uses neither.
//!
//! - [`hierarchy`]: [`KeyHierarchy`], the only way the service gets at an
//!   unwrapped key: the caches of unwrapped KEKs and user keys, erasure and
//!   the watches that end open streams, the steps of rotation. It never
//!   writes SQL and never touches a keyring file or KMS itself; it goes
//!   through [`store::KeyStore`] and [`master::MasterKeyProvider`].
//! - [`master`]: the master-key providers, [`keyring::LocalKeyring`] and
//!   [`kms::KmsMasterKeys`], which wrap and unwrap KEKs under numbered
//!   master versions. A provider never sees a user key, a pseudonym or a
//!   user id, never caches an unwrapped KEK, and never imports the
//!   hierarchy.
//! - [`store`]: wrapped KEKs, user-key versions, tombstones, jobs, legal
//!   holds and the audit trail, on SQLite or PostgreSQL. The store only
//!   ever holds wrapped keys and pseudonyms; it imports neither the
//!   hierarchy nor the providers nor [`KeyError`].
//!
//! `tests/it/layering.rs` checks those arrows by reading the sources.
//!
//! [`KeyError`] is the layer's error, what the hierarchy returns to the
//! layers above; [`store::StoreError`] and [`master::MasterKeyError`]
//! convert into it.
//!
//! The paths from before the rooms keep working: `keys::keyring` (which
//! also held the provider trait and its error), `keys::kms`,
//! `keys::sqlite`, `keys::postgres`.

mod error;
pub mod hierarchy;
pub mod master;
pub mod store;

pub use crate::clock::unix_ms;
pub use error::KeyError;
pub use hierarchy::{
    CachePolicy, Decommissioned, ErasureWatch, KeyHierarchy, UserKeyRing, UserKeyStatus,
};
pub use master::kms;
pub use store::{postgres, sqlite};

/// The local keyring at its path from before the providers moved to
/// [`master`], with the provider trait and error that lived beside it.
pub mod keyring {
    pub use super::master::keyring::{parse, LocalKeyring};
    pub use super::master::{MasterKeyError, MasterKeyProvider};
}
