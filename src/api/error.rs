//! The service error and its one mapping to `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::blob::BlobError;
use crate::crypto::CryptoError;
use crate::keys::KeyError;

/// Error domain in `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "sealgate.v1";
/// `ErrorInfo.reason` of requests about an erased user.
pub const REASON_USER_ERASED: &str = "USER_ERASED";

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such object.
    #[error("object not found")]
    NotFound,
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
    /// A bug or an unexpected backend failure; details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::InvalidArgument(m) => Status::invalid_argument(m),
            ServiceError::NotFound => Status::not_found("object not found"),
            ServiceError::AlreadyExists => Status::already_exists("object already exists"),
            ServiceError::UserErased => Status::with_error_details(
                Code::FailedPrecondition,
                "user has been erased",
                ErrorDetails::with_error_info(REASON_USER_ERASED, ERROR_DOMAIN, []),
            ),
            ServiceError::DataLoss => Status::data_loss("stored object failed its integrity check"),
            ServiceError::TooLarge(m) => Status::resource_exhausted(m),
            ServiceError::OutOfRange(m) => Status::out_of_range(m),
            ServiceError::Unavailable(m) => {
                Status::unavailable(format!("backend unavailable, retry later: {m}"))
            }
            ServiceError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

impl From<KeyError> for ServiceError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::UserErased => Self::UserErased,
            // The object's key version is gone: it can never be opened.
            KeyError::MissingUserKeyVersion(_) => Self::DataLoss,
            KeyError::Unwrap(m) | KeyError::Internal(m) => Self::Internal(m),
            KeyError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<BlobError> for ServiceError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound => Self::NotFound,
            BlobError::AlreadyExists => Self::AlreadyExists,
            BlobError::Unavailable(m) => Self::Unavailable(m),
            BlobError::Io(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<CryptoError> for ServiceError {
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
