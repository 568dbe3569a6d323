//! The error of the domain services (`content`, `erasure`, `keyadmin`,
//! `holds`, `audit`), with its stable machine-readable [`Reason`] (the
//! proto's header comment lists each with its code).
//!
//! Transport-free: `api` maps it to `tonic::Status` in one exhaustive match,
//! and background jobs use it without knowing gRPC exists. The conversions
//! from the lower layers' errors live here, so each lower error has exactly
//! one meaning to callers: a key store's full disk is `StorageFull`, a lost
//! one `StorageLost`, an unreachable or read-only one `Unavailable`, an
//! integrity failure `DataLoss`.

use crate::blob::BlobError;
use crate::crypto::CryptoError;
use crate::keys::store::StoreError;
use crate::keys::KeyError;
use crate::names::NameError;

/// A stable, machine-readable reason for an error: the
/// `google.rpc.ErrorInfo.reason` callers match on (domain `sealgate.v1`).
/// The proto's header comment lists each with its code; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// NOT_FOUND: no such object.
    ObjectNotFound,
    /// NOT_FOUND: no erasure is recorded for the user.
    ErasureNotFound,
    /// NOT_FOUND: no job has that id.
    JobNotFound,
    /// NOT_FOUND: the keyring holds no such master key version.
    MasterVersionNotFound,
    /// FAILED_PRECONDITION: a master version still wraps a KEK, or is the
    /// newest (it wraps new KEKs).
    MasterInUse,
    /// FAILED_PRECONDITION: the user is erased.
    UserErased,
    /// FAILED_PRECONDITION: a held user whose erasure was asked for.
    UserRestricted,
    /// OUT_OF_RANGE: a feed cursor older than the retained history.
    CursorExpired,
    /// FAILED_PRECONDITION: the user's erasure is scheduled (cooling-off):
    /// no content call for them until it runs or is cancelled.
    ErasurePending,
    /// DATA_LOSS: a stored object failed its integrity check.
    IntegrityFailure,
    /// INVALID_ARGUMENT: a malformed object id.
    InvalidObjectId,
    /// INVALID_ARGUMENT: an empty or overlong user id.
    InvalidUserId,
    /// INVALID_ARGUMENT: a space that is not configured.
    UnknownSpace,
    /// INVALID_ARGUMENT or OUT_OF_RANGE: a byte range that is empty,
    /// inverted or starts past the end.
    InvalidRange,
    /// INVALID_ARGUMENT: a page token that is not one this listing gave.
    InvalidPageToken,
    /// INVALID_ARGUMENT: a malformed request or upload stream.
    InvalidRequest,
    /// INVALID_ARGUMENT: more ids than one batch may carry.
    BatchTooLarge,
    /// INVALID_ARGUMENT: an upload whose bytes do not match its declared size.
    SizeMismatch,
    /// INVALID_ARGUMENT: an upload stream that ended without its finish.
    UploadNotFinished,
    /// INVALID_ARGUMENT: an upload whose plaintext does not match the
    /// SHA-256 of its finish.
    ChecksumMismatch,
    /// RESOURCE_EXHAUSTED: an object past `limits.max_object_bytes`.
    ObjectTooLarge,
    /// RESOURCE_EXHAUSTED: an item past `limits.max_item_bytes`.
    ItemTooLarge,
    /// RESOURCE_EXHAUSTED: one gRPC message past 4 MiB, or metadata past 8 KiB.
    MessageTooLarge,
    /// ALREADY_EXISTS: a create-only write found the id taken.
    AlreadyExists,
    /// FAILED_PRECONDITION: `if_match` names an etag the object does not
    /// have (it changed, or it does not exist).
    EtagMismatch,
    /// INVALID_ARGUMENT: a request id used within 24 hours by another
    /// request (another space or object id) of the same user.
    RequestIdReused,
    /// UNAVAILABLE: a backend is down or refuses writes for now; retry.
    BackendUnavailable,
    /// FAILED_PRECONDITION: the object store lacks an operation the gateway
    /// needs (an S3-compatible server answering 501); retrying cannot help.
    BackendUnsupported,
    /// RESOURCE_EXHAUSTED (per item): the item would push a batch response
    /// past `limits.max_response_bytes`.
    ResponseBudget,
    /// RESOURCE_EXHAUSTED: a store's disk is full.
    StorageFull,
    /// UNAVAILABLE: the key store or the keyring was deleted, replaced or
    /// made unreadable; an operator must restore it.
    StorageLost,
    /// FAILED_PRECONDITION: the user is under legal hold; erasure waits
    /// until every case releases it.
    LegalHold,
    /// FAILED_PRECONDITION: SignRead on a gateway without an HTTP listener
    /// (`http.listen` empty): no link it made could be served.
    HttpReadsOff,
    /// FAILED_PRECONDITION: KMS refused to use the master key a KEK is
    /// wrapped under (disabled, pending deletion, deleted, no permission);
    /// retrying cannot help until an operator fixes the key.
    MasterKeyUnusable,
    /// FAILED_PRECONDITION: the service was decommissioned: every key is
    /// destroyed, nothing can be read or written again.
    Decommissioned,
    /// UNAUTHENTICATED: a call that needs a role came without a valid
    /// client certificate (none, expired, or from another CA).
    NoClientCertificate,
    /// PERMISSION_DENIED: the caller's identity does not hold the role the
    /// method needs.
    RoleRequired,
    /// PERMISSION_DENIED: a content caller named a space it may not use.
    SpaceNotAllowed,
    /// RESOURCE_EXHAUSTED: `limits.max_concurrent_uploads` uploads are in
    /// progress; retry later.
    TooManyUploads,
    /// DEADLINE_EXCEEDED: a unary call ran past
    /// `limits.unary_timeout_seconds`.
    CallDeadline,
    /// DEADLINE_EXCEEDED: a stream moved fewer than `limits.stream_min_bytes`
    /// in `limits.stream_timeout_seconds`.
    StreamStalled,
    /// FAILED_PRECONDITION: the user has no key yet (never wrote), so there
    /// is nothing to rewrap.
    NoUserKey,
    /// ABORTED: a write raced a rewrap of the user's key and was removed;
    /// writing again succeeds.
    KeyRotated,
    /// UNAVAILABLE: the server is shutting down and ended the call at the
    /// end of `server.shutdown_grace_seconds`; retry (on another replica).
    ShuttingDown,
    /// PERMISSION_DENIED: an export under a case that does not hold the
    /// user.
    CaseNotHolding,
    /// FAILED_PRECONDITION: a resumed export whose objects changed since it
    /// began; start again.
    ExportChanged,
    /// INTERNAL: a bug; details only in the server log.
    Internal,
}

impl Reason {
    /// The reason as callers see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ObjectNotFound => "OBJECT_NOT_FOUND",
            Self::ErasureNotFound => "ERASURE_NOT_FOUND",
            Self::JobNotFound => "JOB_NOT_FOUND",
            Self::MasterVersionNotFound => "MASTER_VERSION_NOT_FOUND",
            Self::MasterInUse => "MASTER_IN_USE",
            Self::MasterKeyUnusable => "MASTER_KEY_UNUSABLE",
            Self::UserErased => "USER_ERASED",
            Self::ErasurePending => "ERASURE_PENDING",
            Self::CursorExpired => "CURSOR_EXPIRED",
            Self::UserRestricted => "USER_RESTRICTED",
            Self::IntegrityFailure => "INTEGRITY_FAILURE",
            Self::InvalidObjectId => "INVALID_OBJECT_ID",
            Self::InvalidUserId => "INVALID_USER_ID",
            Self::UnknownSpace => "UNKNOWN_SPACE",
            Self::InvalidRange => "INVALID_RANGE",
            Self::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::BatchTooLarge => "BATCH_TOO_LARGE",
            Self::SizeMismatch => "SIZE_MISMATCH",
            Self::UploadNotFinished => "UPLOAD_NOT_FINISHED",
            Self::ChecksumMismatch => "CHECKSUM_MISMATCH",
            Self::ObjectTooLarge => "OBJECT_TOO_LARGE",
            Self::ItemTooLarge => "ITEM_TOO_LARGE",
            Self::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::EtagMismatch => "ETAG_MISMATCH",
            Self::RequestIdReused => "REQUEST_ID_REUSED",
            Self::BackendUnavailable => "BACKEND_UNAVAILABLE",
            Self::BackendUnsupported => "BACKEND_UNSUPPORTED",
            Self::ResponseBudget => "RESPONSE_BUDGET",
            Self::StorageFull => "STORAGE_FULL",
            Self::StorageLost => "STORAGE_LOST",
            Self::LegalHold => "LEGAL_HOLD",
            Self::HttpReadsOff => "HTTP_READS_OFF",
            Self::Decommissioned => "DECOMMISSIONED",
            Self::NoClientCertificate => "NO_CLIENT_CERTIFICATE",
            Self::RoleRequired => "ROLE_REQUIRED",
            Self::SpaceNotAllowed => "SPACE_NOT_ALLOWED",
            Self::TooManyUploads => "TOO_MANY_UPLOADS",
            Self::CallDeadline => "CALL_DEADLINE",
            Self::StreamStalled => "STREAM_STALLED",
            Self::KeyRotated => "KEY_ROTATED",
            Self::NoUserKey => "NO_USER_KEY",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::CaseNotHolding => "CASE_NOT_HOLDING",
            Self::ExportChanged => "EXPORT_CHANGED",
            Self::Internal => "INTERNAL",
        }
    }
}

/// Everything a domain operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed: which field, why.
    #[error("{message}")]
    InvalidArgument {
        /// The stable reason.
        reason: Reason,
        /// The request field at fault (`object_id`, `space`, ...).
        field: &'static str,
        /// What is wrong, quoting at most a short prefix of the input.
        message: String,
    },
    /// No such object.
    #[error("object not found")]
    NotFound,
    /// No erasure is recorded for the user.
    #[error("no erasure recorded for this user")]
    ErasureNotFound,
    /// No job has that id.
    #[error("no job with this id")]
    JobNotFound,
    /// The keyring holds no such master key version.
    #[error("master key version {0} is not in the keyring")]
    MasterVersionNotFound(u32),
    /// A create-only write found the object id taken.
    #[error("object already exists")]
    AlreadyExists,
    /// The user is erased.
    #[error("user has been erased")]
    UserErased,
    /// A precondition of the request does not hold.
    #[error("{message}")]
    FailedPrecondition {
        /// Which precondition.
        reason: Reason,
        /// What does not hold.
        message: String,
    },
    /// A stored object failed its integrity check.
    #[error("stored object failed its integrity check")]
    DataLoss,
    /// A feed cursor older than the retained history (OUT_OF_RANGE).
    #[error("cursor {from} is older than the erasure feed's retained history (erasure.feed_retention_days): events up to {floor} were dropped; resume from cursor {floor}")]
    CursorExpired {
        /// The cursor asked for.
        from: u64,
        /// The newest cursor dropped: the oldest to resume from.
        floor: u64,
    },
    /// A size or capacity limit was exceeded (RESOURCE_EXHAUSTED).
    #[error("{message}")]
    TooLarge {
        /// Which limit.
        reason: Reason,
        /// What was too large, and the limit.
        message: String,
    },
    /// A time limit of the server ran out (DEADLINE_EXCEEDED).
    #[error("{message}")]
    DeadlineExceeded {
        /// `CALL_DEADLINE` or `STREAM_STALLED`.
        reason: Reason,
        /// Which limit, and its value.
        message: String,
    },
    /// A concurrent change undid the call; calling again succeeds
    /// (ABORTED).
    #[error("{message}")]
    Aborted {
        /// `KEY_ROTATED`.
        reason: Reason,
        /// What happened.
        message: String,
    },
    /// A byte range lies outside the object.
    #[error("{0}")]
    OutOfRange(String),
    /// A backend is down; retryable.
    #[error("backend unavailable, retry later: {0}")]
    Unavailable(String),
    /// The server is shutting down: the call ran past the shutdown's grace
    /// period and was ended; retryable against another replica.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A store's disk is full; retryable once space is freed.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// A store is gone from under the process and needs an operator; no
    /// retry against this process can succeed.
    #[error("storage lost: {0}")]
    StorageLost(String),
    /// The call needs a role and came without a valid client certificate:
    /// why.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("{message}")]
    PermissionDenied {
        /// `ROLE_REQUIRED` or `SPACE_NOT_ALLOWED`.
        reason: Reason,
        /// Who was refused what (principal identities and role or space
        /// names, never user ids).
        message: String,
    },
    /// A bug or an unexpected backend failure; details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Longest piece of caller input an error message quotes.
const QUOTE_LEN: usize = 64;

/// `input` for an error message: Debug-quoted, cut to [`QUOTE_LEN`] bytes
/// (on a character boundary) so no error echoes a caller's megabytes back.
pub fn quote(input: &str) -> String {
    if input.len() <= QUOTE_LEN {
        return format!("{input:?}");
    }
    let mut end = QUOTE_LEN;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &input[..end], input.len())
}

impl Error {
    /// A master version that cannot be retired: what still uses it.
    pub fn master_in_use(message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason: Reason::MasterInUse,
            message: message.into(),
        }
    }

    /// Metadata past the format's limit (`MAX_METADATA_LEN`), naming the
    /// field at fault: `content_type` when it alone does not fit, else
    /// `attributes`.
    pub fn metadata_too_large(content_type: &str) -> Self {
        // The encoding's fixed part: the content type's length prefix and
        // the attribute count, two bytes each.
        if content_type.len() + 4 > crate::crypto::envelope::MAX_METADATA_LEN {
            Self::invalid(
                Reason::InvalidRequest,
                "content_type",
                format!("content type of {} bytes exceeds 8 KiB", content_type.len()),
            )
        } else {
            Self::invalid(
                Reason::InvalidRequest,
                "attributes",
                "content type and attributes exceed 8 KiB",
            )
        }
    }

    /// A malformed request field.
    pub fn invalid(reason: Reason, field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            reason,
            field,
            message: message.into(),
        }
    }

    /// An invalid name or user id in `field`: `"{field} {problem}"`.
    pub fn invalid_name(field: &'static str, problem: NameError) -> Self {
        let reason = match field {
            "object_id" => Reason::InvalidObjectId,
            "user_id" => Reason::InvalidUserId,
            _ => Reason::InvalidRequest,
        };
        Self::invalid(reason, field, format!("{field} {problem}"))
    }

    /// A size limit exceeded.
    pub fn too_large(reason: Reason, message: impl Into<String>) -> Self {
        Self::TooLarge {
            reason,
            message: message.into(),
        }
    }

    /// The stable reason of this error.
    pub fn reason(&self) -> Reason {
        match self {
            Self::InvalidArgument { reason, .. }
            | Self::TooLarge { reason, .. }
            | Self::DeadlineExceeded { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::Aborted { reason, .. }
            | Self::PermissionDenied { reason, .. } => *reason,
            Self::NotFound => Reason::ObjectNotFound,
            Self::ErasureNotFound => Reason::ErasureNotFound,
            Self::JobNotFound => Reason::JobNotFound,
            Self::MasterVersionNotFound(_) => Reason::MasterVersionNotFound,
            Self::AlreadyExists => Reason::AlreadyExists,
            Self::UserErased => Reason::UserErased,
            Self::DataLoss => Reason::IntegrityFailure,
            Self::CursorExpired { .. } => Reason::CursorExpired,
            Self::OutOfRange(_) => Reason::InvalidRange,
            Self::Unavailable(_) => Reason::BackendUnavailable,
            Self::ShuttingDown => Reason::ShuttingDown,
            Self::StorageFull(_) => Reason::StorageFull,
            Self::StorageLost(_) => Reason::StorageLost,
            Self::Unauthenticated(_) => Reason::NoClientCertificate,
            Self::Internal(_) => Reason::Internal,
        }
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::UserErased => Self::UserErased,
            KeyError::HeldUsers { users } => Self::FailedPrecondition {
                reason: Reason::LegalHold,
                message: format!(
                    "decommission destroys every key, and {users} user{} under legal hold: nothing was destroyed; release the holds first",
                    if users == 1 { " is" } else { "s are" }
                ),
            },
            KeyError::Restricted { cases } => Self::FailedPrecondition {
                reason: Reason::UserRestricted,
                message: format!(
                    "the user's erasure was asked for while legal holds cover them ({cases} case{}): nothing of theirs is served; the erasure runs when the last hold is released",
                    if cases == 1 { "" } else { "s" }
                ),
            },
            KeyError::ErasurePending { due_ms } => Self::FailedPrecondition {
                reason: Reason::ErasurePending,
                message: format!(
                    "the user's erasure is scheduled for {}: nothing of theirs is served until it runs or is cancelled",
                    crate::clock::format_time(due_ms)
                ),
            },
            // The object's key version is gone: it can never be opened.
            KeyError::MissingUserKeyVersion(_) => Self::DataLoss,
            KeyError::Unwrap(m) | KeyError::Internal(m) => Self::Internal(m),
            KeyError::KekMissing { .. } => Self::Internal(e.to_string()),
            KeyError::KeyRetired(_) => Self::Aborted {
                reason: Reason::KeyRotated,
                message: "the user's key was rewrapped while this write ran: nothing was stored; write again".into(),
            },
            KeyError::Unavailable(m) => Self::Unavailable(m),
            KeyError::StorageFull(m) => Self::StorageFull(format!("key store: {m}")),
            KeyError::StoreLost(m) => Self::StorageLost(m),
            KeyError::MasterKeyUnusable(m) => Self::FailedPrecondition {
                reason: Reason::MasterKeyUnusable,
                message: format!("the master key cannot be used: {m}; an operator must fix it"),
            },
            KeyError::Decommissioned => Self::FailedPrecondition {
                reason: Reason::Decommissioned,
                message: "the service was decommissioned: every key is destroyed".into(),
            },
            KeyError::LegalHold { cases } => Self::FailedPrecondition {
                reason: Reason::LegalHold,
                message: format!(
                    "the user is under legal hold ({cases} case{}): their data and keys are preserved, and this call would destroy or replace them",
                    if cases == 1 { "" } else { "s" }
                ),
            },
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
            BlobError::Unsupported(m) => Self::FailedPrecondition {
                reason: Reason::BackendUnsupported,
                message: m,
            },
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
            CryptoError::MessageTooLong => Self::too_large(
                Reason::ObjectTooLarge,
                "object exceeds the format's size limit",
            ),
            CryptoError::MetadataTooLarge => Self::metadata_too_large(""),
            CryptoError::InvalidKeySize | CryptoError::Rng => Self::Internal(e.to_string()),
        }
    }
}
