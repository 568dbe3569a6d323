//! What a status from the gateway must carry: its code, its
//! `google.rpc.ErrorInfo` reason (one the proto lists for the code) and,
//! for INVALID_ARGUMENT, a field violation.

use sealgate::api::pb;
use tonic::{Code, Status};

/// The `ErrorInfo.reason` of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason)
}

/// The reasons each code may carry: read from the table in the proto's
/// header comment (`//   CODE   REASON   meaning`), so the proto is the one
/// list callers and tests both go by.
pub fn reasons_for(code: Code) -> Vec<&'static str> {
    const PROTO: &str = include_str!("../../../../proto/sealgate/v1/sealgate.proto");
    let name = match code {
        Code::NotFound => "NOT_FOUND",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::DataLoss => "DATA_LOSS",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::Unavailable => "UNAVAILABLE",
        Code::Internal => "INTERNAL",
        Code::Unauthenticated => "UNAUTHENTICATED",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::Aborted => "ABORTED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        _ => return Vec::new(),
    };
    PROTO
        .lines()
        .take_while(|l| l.starts_with("//"))
        .filter_map(|l| {
            let mut words = l.strip_prefix("//   ")?.split_whitespace();
            (words.next()? == name).then(|| words.next()).flatten()
        })
        .collect()
}

/// Asserts that a status from the gateway carries its `google.rpc.ErrorInfo`
/// (domain `sealgate.v1`, a reason its code may carry) and, for
/// INVALID_ARGUMENT, a `google.rpc.BadRequest` field violation; returns the
/// reason.
#[track_caller]
pub fn check_details(s: &Status, what: &str) -> String {
    use tonic_types::StatusExt;
    let info = s
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{what}: no ErrorInfo in {s:?}"));
    assert_eq!(info.domain, "sealgate.v1", "{what}");
    assert!(
        reasons_for(s.code()).contains(&info.reason.as_str()),
        "{what}: reason {} does not go with {:?}",
        info.reason,
        s.code()
    );
    if s.code() == Code::InvalidArgument {
        let bad = s
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("{what}: no BadRequest in {s:?}"));
        assert!(!bad.field_violations.is_empty(), "{what}");
    }
    info.reason
}

/// Asserts that `result` failed with `code`, with the details every
/// gateway error carries ([`check_details`]); returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    what: &str,
) -> Status {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got success {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: unexpected status {s:?}");
            check_details(&s, what);
            s
        }
    }
}

/// Asserts that `result` failed with `code` and `reason`.
#[track_caller]
pub fn expect_reason<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    expected: &str,
    what: &str,
) -> Status {
    let s = expect_code(result, code, what);
    assert_eq!(reason(&s).as_deref(), Some(expected), "{what}: {s:?}");
    s
}

/// Asserts that a GetItems call answered, and every item of it failed as
/// erased (items fail one by one, as the proto says).
#[track_caller]
pub fn expect_items_erased(result: Result<Vec<pb::ItemResult>, Status>, what: &str) {
    let items = result.unwrap_or_else(|s| panic!("{what}: the call failed whole: {s:?}"));
    assert!(!items.is_empty(), "{what}: no item results");
    for item in items {
        match &item.result {
            Some(pb::item_result::Result::Error(e)) => {
                assert_eq!(e.code, Code::FailedPrecondition as i32, "{what}: {item:?}");
                // Its ErrorInfo names the reason.
                assert!(
                    e.details.iter().any(|d| d.type_url.ends_with("ErrorInfo")
                        && d.value.windows(11).any(|w| w == b"USER_ERASED")),
                    "{what}: {item:?}"
                );
            }
            other => panic!("{what}: item {} answered {other:?}", item.item_id),
        }
    }
}

/// Asserts that `result` failed because the user is erased.
#[track_caller]
pub fn expect_erased<T: std::fmt::Debug>(result: Result<T, Status>, what: &str) {
    let s = expect_code(result, Code::FailedPrecondition, what);
    assert_eq!(
        reason(&s).as_deref(),
        Some("USER_ERASED"),
        "{what}: ErrorInfo reason of {s:?}"
    );
}
