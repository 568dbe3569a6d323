//! The error of the domain services (`content`, `erasure`, `keyadmin`).
//!
//! Transport-free: `api` maps it to `tonic::Status` in one exhaustive match,
//! and background jobs use it without knowing gRPC exists. The conversions
//! from the lower layers' errors live here, so each lower error has exactly
//! one meaning to callers.

use crate::blob::BlobError;
use crate::crypto::CryptoError;
use crate::keys::store::StoreError;
use crate::keys::KeyError;
use crate::names::NameError;

/// Everything a domain operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such object.
    #[error("object not found")]
    NotFound,
    /// No erasure is recorded for the user.
    #[error("no erasure recorded for this user")]
    ErasureNotFound,
    /// A create-only write found the object id taken.
    #[error("object already exists")]
    AlreadyExists,
    /// The user is erased.
    #[error("user has been erased")]
    UserErased,
    /// A stored object failed its integrity check.
    #[error("stored object failed its integrity check")]
    DataLoss,
    /// A size limit was exceeded.
    #[error("{0}")]
    TooLarge(String),
    /// A byte range lies outside the object.
    #[error("{0}")]
    OutOfRange(String),
    /// A backend is down; retryable.
    #[error("backend unavailable, retry later: {0}")]
    Unavailable(String),
    /// A store's disk is full; retryable once space is freed.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// A store is gone from under the process and needs an operator; no
    /// retry against this process can succeed.
    #[error("storage lost: {0}")]
    StorageLost(String),
    /// A bug or an unexpected backend failure; details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An invalid request field: `"{field} {problem}"`.
    pub fn invalid_name(field: &str, problem: NameError) -> Self {
        Self::InvalidArgument(format!("{field} {problem}"))
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::UserErased => Self::UserErased,
            // The object's key version is gone: it can never be opened.
            KeyError::MissingUserKeyVersion(_) => Self::DataLoss,
            KeyError::Unwrap(m) | KeyError::Internal(m) => Self::Internal(m),
            KeyError::Unavailable(m) => Self::Unavailable(m),
            KeyError::StorageFull(m) => Self::StorageFull(format!("key store: {m}")),
            KeyError::StoreLost(m) => Self::StorageLost(m),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        KeyError::from(e).into()
    }
}

impl From<BlobError> for Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => Self::NotFound,
            BlobError::AlreadyExists => Self::AlreadyExists,
            BlobError::Unavailable(m) => Self::Unavailable(m),
            BlobError::Io(e) => match e.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    Self::StorageFull(format!("object store: {e}"))
                }
                std::io::ErrorKind::ReadOnlyFilesystem => {
                    Self::Unavailable(format!("object store: {e}"))
                }
                _ => Self::Internal(e.to_string()),
            },
        }
    }
}

impl From<CryptoError> for Error {
    /// For errors while opening a stored object: anything wrong with its
    /// bytes is data loss, never a detailed reason.
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::DecryptionFailed
            | CryptoError::Malformed
            | CryptoError::UnsupportedVersion(_)
            | CryptoError::UnsupportedSuite(_) => Self::DataLoss,
            CryptoError::RangeOutOfBounds => {
                Self::OutOfRange("byte range outside the object".into())
            }
            CryptoError::MessageTooLong => {
                Self::TooLarge("object exceeds the format's size limit".into())
            }
            CryptoError::MetadataTooLarge => {
                Self::InvalidArgument("content type and attributes exceed 8 KiB".into())
            }
            CryptoError::InvalidKeySize | CryptoError::Rng => Self::Internal(e.to_string()),
        }
    }
}
