//! Legal holds: a case holds a user's erasure until it releases them.

use sealgate::api::pb;
use sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use std::time::Duration;

use super::{
    erasure_status, eventually, expect_reason, get, pseudonym, put, try_erase, TestGateway,
};

async fn place(
    c: &mut LegalHoldServiceClient<Channel>,
    user: &str,
    case: &str,
) -> Result<pb::LegalHold, tonic::Status> {
    c.place_hold(pb::PlaceHoldRequest {
        user_id: user.into(),
        case_ref: case.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn release(
    c: &mut LegalHoldServiceClient<Channel>,
    user: &str,
    case: &str,
) -> Result<bool, tonic::Status> {
    c.release_hold(pb::ReleaseHoldRequest {
        user_id: user.into(),
        case_ref: case.into(),
    })
    .await
    .map(|r| r.into_inner().released)
}

async fn list(
    c: &mut LegalHoldServiceClient<Channel>,
    user: &str,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListHoldsResponse, tonic::Status> {
    c.list_holds(pb::ListHoldsRequest {
        user_id: user.into(),
        page_size,
        page_token: page_token.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_blocks_erasure_until_its_last_case_is_released() {
    let gw = TestGateway::start().await;
    let mut content = gw.content().await;
    put(&mut content, "held", "moments", "pic", b"evidence", 8)
        .await
        .unwrap();
    let mut holds = gw.holds().await;
    let first = place(&mut holds, "held", "case-2026-001").await.unwrap();
    assert_eq!(first.pseudonym, pseudonym(&gw, "held").await);
    assert_eq!(first.placed_by, "local");
    let again = place(&mut holds, "held", "case-2026-001").await.unwrap();
    assert_eq!(again, first, "placing a case again returns its hold");
    place(&mut holds, "held", "case-2026-002").await.unwrap();

    // A held user's data stays readable until an erasure is asked for.
    let (_, body) = get(&mut content, "held", "moments", "pic", None)
        .await
        .expect("a held user's data stays readable");
    assert_eq!(body, b"evidence");
    let pending = try_erase(&gw, "held").await.expect("erasure recorded");
    assert_eq!(pending.state(), pb::ErasureState::PendingHold);
    assert_eq!(pending.holding_cases, 2);
    let s = expect_reason(
        get(&mut content, "held", "moments", "pic", None).await,
        Code::FailedPrecondition,
        "USER_RESTRICTED",
        "a restricted user's read",
    );
    assert!(s.message().contains("2 cases"), "{s:?}");
    let status = erasure_status(&gw, "held").await;
    assert_eq!(status.state(), pb::ErasureState::PendingHold);

    assert!(release(&mut holds, "held", "case-2026-001").await.unwrap());
    assert!(
        !release(&mut holds, "held", "case-2026-001").await.unwrap(),
        "a case released twice"
    );
    let again = try_erase(&gw, "held").await.expect("asked again");
    assert_eq!(
        (again.state(), again.holding_cases),
        (pb::ErasureState::PendingHold, 1)
    );
    assert!(release(&mut holds, "held", "case-2026-002").await.unwrap());
    // The recorded erasure runs by itself once no case holds the user.
    eventually(
        "the pending erasure to run",
        Duration::from_secs(30),
        || async { erasure_status(&gw, "held").await.state() == pb::ErasureState::Erased },
    )
    .await;
    expect_reason(
        place(&mut holds, "held", "case-2026-003").await,
        Code::FailedPrecondition,
        "USER_ERASED",
        "a hold on an erased user",
    );
    assert!(list(&mut holds, "held", 0, "")
        .await
        .unwrap()
        .holds
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_list_by_user_and_in_pages() {
    let gw = TestGateway::start().await;
    let mut holds = gw.holds().await;
    for (user, case) in [("a", "c1"), ("a", "c2"), ("b", "c1"), ("c", "c9")] {
        place(&mut holds, user, case).await.unwrap();
    }
    let of_a = list(&mut holds, "a", 0, "").await.unwrap();
    assert_eq!(
        of_a.holds
            .iter()
            .map(|h| h.case_ref.as_str())
            .collect::<Vec<_>>(),
        ["c1", "c2"]
    );
    assert!(of_a.next_page_token.is_empty());
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&mut holds, "", 3, &token).await.unwrap();
        assert!(page.holds.len() <= 3);
        all.extend(page.holds);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), 4, "{all:?}");
    let mut sorted = all.clone();
    sorted.sort_by(|x, y| (&x.pseudonym, &x.case_ref).cmp(&(&y.pseudonym, &y.case_ref)));
    assert_eq!(all, sorted, "ordered by pseudonym then case");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hold_requests_are_refused_precisely() {
    let gw = TestGateway::start().await;
    let mut holds = gw.holds().await;
    for bad in ["", "../x", ".hidden", "a b", &"x".repeat(129)] {
        expect_reason(
            place(&mut holds, "u", bad).await,
            Code::InvalidArgument,
            "INVALID_REQUEST",
            &format!("case {bad:?}"),
        );
    }
    expect_reason(
        place(&mut holds, "", "c1").await,
        Code::InvalidArgument,
        "INVALID_USER_ID",
        "empty user",
    );
    expect_reason(
        list(&mut holds, "", 0, "garbage").await,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        "bad page token",
    );
}
