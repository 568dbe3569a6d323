//! The one place aws-sdk-s3 errors are translated into blob errors.
//!
//! Timeouts, dispatch failures, 5xx answers and throttling are
//! `Unavailable` (retryable); a 501 is `Unsupported` naming the operation,
//! never retried.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::blob::BlobError;

/// What an S3 call's failure means to the store.
#[derive(Debug)]
pub enum S3Failure {
    /// 404 / NoSuchKey / NoSuchUpload.
    NotFound,
    /// 412: a conditional request's precondition did not hold.
    PreconditionFailed,
    /// 416: the requested range is not in the object.
    InvalidRange,
    /// 501 / NotImplemented: the store lacks the operation (named).
    NotImplemented(String),
    /// S3 could not be reached, timed out, throttled or failed (5xx):
    /// retrying later may succeed.
    Unavailable(String),
    /// Anything else (4xx other than the above, malformed responses).
    Other(String),
}

impl S3Failure {
    /// The generic blob error for callers with no special meaning for 412.
    pub fn into_blob(self) -> BlobError {
        match self {
            Self::NotFound => BlobError::NotFound,
            Self::PreconditionFailed => {
                BlobError::Unavailable("S3 precondition failed; retry".into())
            }
            Self::InvalidRange => BlobError::Io(std::io::Error::other("S3: range not satisfiable")),
            Self::Unavailable(m) => BlobError::Unavailable(m),
            Self::NotImplemented(op) => BlobError::Unsupported(format!(
                "the object store does not implement S3 {op} (it answered 501 NotImplemented)"
            )),
            Self::Other(m) => BlobError::Io(std::io::Error::other(m)),
        }
    }
}

/// The S3 operation an error type belongs to, as S3 names it:
/// `aws_sdk_s3::operation::list_object_versions::ListObjectVersionsError`
/// gives `ListObjectVersions`.
fn operation<E>() -> String {
    let name = std::any::type_name::<E>();
    let last = name.rsplit("::").next().unwrap_or(name);
    last.strip_suffix("Error").unwrap_or(last).to_string()
}

/// Classifies an SDK error.
pub fn translate<E>(e: SdkError<E, HttpResponse>) -> S3Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::TimeoutError(_) => S3Failure::Unavailable("S3 request timed out".into()),
        SdkError::DispatchFailure(_) => S3Failure::Unavailable("cannot reach S3".into()),
        SdkError::ResponseError(_) => {
            S3Failure::Unavailable("malformed or interrupted S3 response".into())
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or("");
            match (status, code) {
                (501, _) | (_, "NotImplemented") => S3Failure::NotImplemented(operation::<E>()),
                (404, _) | (_, "NoSuchKey" | "NoSuchUpload" | "NotFound") => S3Failure::NotFound,
                (412, _) | (_, "PreconditionFailed") => S3Failure::PreconditionFailed,
                (416, _) | (_, "InvalidRange") => S3Failure::InvalidRange,
                (500..=599, _)
                | (_, "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout") => {
                    S3Failure::Unavailable(format!("S3 returned {status} {code}"))
                }
                _ => S3Failure::Other(format!("S3 returned {status} {code}: {message}")),
            }
        }
        _ => S3Failure::Other(format!("S3 request could not be built: {e:?}")),
    }
}
