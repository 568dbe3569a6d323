//! The key layer's error: what the hierarchy returns to the layers above.
//!
//! The store ([`StoreError`]) and the master-key providers
//! ([`MasterKeyError`]) have errors of their own and return only those;
//! each converts into this one here, once, so that a caller sees one kind
//! of failure whichever room it came from (a KMS refusal is
//! [`KeyError::MasterKeyUnusable`], a full disk [`KeyError::StorageFull`]).

use super::master::MasterKeyError;
use super::store::StoreError;
use crate::crypto::CryptoError;

/// Errors of the key layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The user has been erased; their keys no longer exist.
    #[error("user erased")]
    UserErased,
    /// The user's erasure is scheduled (due at `due_ms`): their keys stay,
    /// but no content call may use them until it runs or is cancelled.
    #[error("user's erasure is scheduled")]
    ErasurePending {
        /// When the erasure is due, Unix milliseconds.
        due_ms: i64,
    },
    /// A decommission refused: this many users are under legal hold.
    #[error("{users} users are under legal hold")]
    HeldUsers {
        /// How many distinct users are held.
        users: usize,
    },
    /// Legal holds cover the user and their erasure was asked for: their
    /// keys stay, but no content call may use them.
    #[error("user restricted")]
    Restricted {
        /// How many cases hold the user.
        cases: usize,
    },
    /// An object names a user-key version that does not exist (and the user
    /// is not erased): the object cannot be opened.
    #[error("user key version {0} does not exist")]
    MissingUserKeyVersion(u32),
    /// A wrapped key failed to unwrap: corrupt key store or wrong master key.
    #[error("key unwrap failed: {0}")]
    Unwrap(String),
    /// The key store is unreachable; retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The key store's disk is full; retryable once space is freed.
    #[error("{0}")]
    StorageFull(String),
    /// The key store or the keyring is gone (file deleted, replaced or
    /// unreadable); needs an operator.
    #[error("{0}")]
    StoreLost(String),
    /// Any other key store or provider failure.
    #[error("{0}")]
    Internal(String),
    /// A KEK version a user-key row names is not in the store (destroyed
    /// by a KEK rotation after the row was read, or a corrupt store).
    #[error("KEK shard {shard} version {version} missing")]
    KekMissing {
        /// Shard.
        shard: u32,
        /// Version.
        version: u32,
    },
    /// An object was sealed under a user-key version that a rewrap retired
    /// (or already destroyed) meanwhile: it must be written again.
    #[error("user key version {0} was retired by a rewrap while the write ran")]
    KeyRetired(u32),
    /// The master key provider refused to use a master key (KMS: disabled,
    /// no permission), or does not hold the version a KEK is under (a stale
    /// keyring): retrying cannot help until an operator fixes the key.
    #[error("{0}")]
    MasterKeyUnusable(String),
    /// The service was decommissioned: every key is destroyed.
    #[error("decommissioned: every key is destroyed")]
    Decommissioned,
    /// An erasure refused: the user is under legal hold.
    #[error("the user is under legal hold ({cases} cases)")]
    LegalHold {
        /// How many cases hold the user.
        cases: usize,
    },
}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Full(m) => Self::StorageFull(m),
            StoreError::Lost(m) => Self::StoreLost(m),
            StoreError::Backend(m) => Self::Internal(m),
            StoreError::LegalHold { cases } => Self::LegalHold { cases },
            StoreError::HeldUsers { users } => Self::HeldUsers { users },
        }
    }
}

impl From<MasterKeyError> for KeyError {
    fn from(e: MasterKeyError) -> Self {
        match e {
            MasterKeyError::KmsUnavailable(_) => Self::Unavailable(e.to_string()),
            MasterKeyError::KmsRefused { .. } => Self::MasterKeyUnusable(e.to_string()),
            // A KEK under a master version this process does not hold: its
            // keyring is another replica's from before a rotation, or was
            // restored from an older backup. No retry brings it.
            MasterKeyError::UnknownVersion(v) => Self::MasterKeyUnusable(format!(
                "master key version {v} is not in this process's keyring (another replica \
                 added it, or the keyring was restored from before it): give this process \
                 the deployment's current keyring"
            )),
            MasterKeyError::Store(e) => e.into(),
            // The keyring deleted or made unreadable under the process: an
            // operator must restore it (not "retry later").
            MasterKeyError::Missing(_) | MasterKeyError::Keyring { .. } => {
                Self::StoreLost(e.to_string())
            }
            e => Self::Unwrap(e.to_string()),
        }
    }
}

impl From<CryptoError> for KeyError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}
