//! The one mapping from the domain error to `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

/// Error domain in `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "sealgate.v1";
/// `ErrorInfo.reason` of requests about an erased user.
pub const REASON_USER_ERASED: &str = "USER_ERASED";

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound => Status::not_found("object not found"),
            Error::ErasureNotFound => Status::not_found("no erasure recorded for this user"),
            Error::AlreadyExists => Status::already_exists("object already exists"),
            Error::UserErased => Status::with_error_details(
                Code::FailedPrecondition,
                "user has been erased",
                ErrorDetails::with_error_info(REASON_USER_ERASED, ERROR_DOMAIN, []),
            ),
            Error::DataLoss => Status::data_loss("stored object failed its integrity check"),
            Error::TooLarge(m) => Status::resource_exhausted(m),
            Error::OutOfRange(m) => Status::out_of_range(m),
            Error::Unavailable(m) => {
                Status::unavailable(format!("backend unavailable, retry later: {m}"))
            }
            Error::StorageFull(m) => Status::resource_exhausted(format!("storage full: {m}")),
            Error::StorageLost(m) => {
                tracing::error!(error = %m, "storage lost");
                Status::unavailable(format!("storage lost, an operator must restore it: {m}"))
            }
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
