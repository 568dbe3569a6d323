//! The one mapping from the domain error to `tonic::Status`: an exhaustive
//! match, no catch-all arm. Every status carries a `google.rpc.ErrorInfo`
//! (the [`Reason`](crate::error::Reason)), INVALID_ARGUMENT also a
//! `google.rpc.BadRequest` naming the field. Storage faults keep their
//! meaning: a full disk is RESOURCE_EXHAUSTED, an unreachable or read-only
//! store UNAVAILABLE ("retry later"), a lost key store UNAVAILABLE
//! ("storage lost"). Internal errors are logged with their detail and
//! reach the caller as "internal error".

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

/// Error domain in `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "sealgate.v1";

impl From<Error> for Status {
    /// Every status carries a `google.rpc.ErrorInfo` (domain
    /// [`ERROR_DOMAIN`], the error's [`crate::error::Reason`]); INVALID_ARGUMENT also a
    /// `google.rpc.BadRequest` naming the field.
    fn from(e: Error) -> Self {
        let reason = e.reason();
        let mut details = ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, []);
        let (code, message) = match e {
            Error::InvalidArgument { field, message, .. } => {
                details.add_bad_request_violation(field, message.clone());
                (Code::InvalidArgument, message)
            }
            Error::NotFound
            | Error::ErasureNotFound
            | Error::JobNotFound
            | Error::MasterVersionNotFound(_) => (Code::NotFound, e.to_string()),
            Error::AlreadyExists => (Code::AlreadyExists, e.to_string()),
            Error::UserErased => (Code::FailedPrecondition, e.to_string()),
            Error::FailedPrecondition { message, .. } => (Code::FailedPrecondition, message),
            Error::Aborted { message, .. } => (Code::Aborted, message),
            Error::DataLoss => (Code::DataLoss, e.to_string()),
            Error::TooLarge { message, .. } => (Code::ResourceExhausted, message),
            Error::DeadlineExceeded { message, .. } => (Code::DeadlineExceeded, message),
            Error::OutOfRange(m) => (Code::OutOfRange, m),
            Error::CursorExpired { .. } => (Code::OutOfRange, e.to_string()),
            Error::Unavailable(m) => (
                Code::Unavailable,
                format!("backend unavailable, retry later: {m}"),
            ),
            Error::ShuttingDown => (
                Code::Unavailable,
                "the server is shutting down; retry".to_string(),
            ),
            Error::StorageFull(m) => (Code::ResourceExhausted, format!("storage full: {m}")),
            Error::StorageLost(m) => {
                tracing::error!(error = %m, "storage lost");
                (
                    Code::Unavailable,
                    format!("storage lost, an operator must restore it: {m}"),
                )
            }
            Error::Unauthenticated(m) => (Code::Unauthenticated, m),
            Error::PermissionDenied { message, .. } => (Code::PermissionDenied, message),
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (Code::Internal, "internal error".to_string())
            }
        };
        Status::with_error_details(code, message, details)
    }
}
