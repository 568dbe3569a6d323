//! Legal holds that preserve and restrict, over the real gRPC API on
//! SQLite and on PostgreSQL: no delete, overwrite or rewrap of a held
//! user, no decommission while anyone is held, and an erasure asked for
//! under a hold recorded, restricting the user, and carried out (after a
//! restart too) once the last hold is released.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient;
use tonic::Code;

use super::*;

key_store_tests!(
    decommission_is_refused_while_any_user_is_held,
    a_pending_erasure_runs_after_a_restart_once_the_hold_is_released,
);
// Refused replacements are create-only writes: against each object store.
backend_tests!(a_hold_preserves_the_users_objects_and_keys);
mod on_pg {
    pg_tests!(a_hold_preserves_the_users_objects_and_keys);
    use super::a_hold_preserves_the_users_objects_and_keys;
}

async fn hold(gw: &TestGateway, user: &str, case: &str) {
    LegalHoldServiceClient::new(gw.channel().await)
        .place_hold(pb::PlaceHoldRequest {
            user_id: user.into(),
            case_ref: case.into(),
        })
        .await
        .expect("PlaceHold");
}

async fn release(gw: &TestGateway, user: &str, case: &str) {
    LegalHoldServiceClient::new(gw.channel().await)
        .release_hold(pb::ReleaseHoldRequest {
            user_id: user.into(),
            case_ref: case.into(),
        })
        .await
        .expect("ReleaseHold");
}

#[track_caller]
fn assert_held(result: Result<impl std::fmt::Debug, Status>, what: &str) {
    let s = result.expect_err(what);
    assert_eq!(s.code(), Code::FailedPrecondition, "{what}: {s:?}");
    assert_eq!(reason(&s).as_deref(), Some("LEGAL_HOLD"), "{what}: {s:?}");
    assert!(s.message().contains("1 case"), "{what}: {s:?}");
}

async fn a_hold_preserves_the_users_objects_and_keys() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let pic = put(&mut c, "held", "moments", "pic", b"evidence", 8)
        .await
        .unwrap();
    put_item(&mut c, "held", "channels", "note", b"a comment")
        .await
        .unwrap();
    hold(&gw, "held", "case-1").await;

    assert_held(
        delete(&mut c, "held", "moments", "pic").await,
        "DeleteObject",
    );
    assert_held(
        put(&mut c, "held", "moments", "pic", b"replaced", 8).await,
        "PutObject over an existing id",
    );
    assert_held(
        put_item(&mut c, "held", "channels", "note", b"edited").await,
        "PutItem over an existing id",
    );
    let conditional = c
        .put_item(pb::PutItemRequest {
            user_id: "held".into(),
            space: "moments".into(),
            item_id: "pic".into(),
            content: b"swap".to_vec().into(),
            if_match: pic.etag.clone(),
            ..Default::default()
        })
        .await;
    assert_held(conditional, "an if_match write");
    assert_held(
        gw.admin()
            .await
            .rewrap_user(pb::RewrapUserRequest {
                user_id: "held".into(),
            })
            .await,
        "RewrapUser (it destroys older key versions)",
    );
    // Adding is not destroying: new ids are stored.
    put_item(&mut c, "held", "channels", "new", b"added")
        .await
        .expect("a held user may add");
    // Everything is as it was.
    let (info, body) = get(&mut c, "held", "moments", "pic", None).await.unwrap();
    assert_eq!((body.as_slice(), info.etag), (&b"evidence"[..], pic.etag));
    let items = get_items(&mut c, "held", "channels", &["note"])
        .await
        .unwrap();
    assert!(
        matches!(&items[0].result, Some(pb::item_result::Result::Item(i)) if i.content.as_ref() == b"a comment"),
        "{items:?}"
    );
    // Another user is not held.
    put(&mut c, "free", "moments", "pic", b"one", 3)
        .await
        .unwrap();
    put(&mut c, "free", "moments", "pic", b"two", 3)
        .await
        .unwrap();
    delete(&mut c, "free", "moments", "pic").await.unwrap();
    // Released: the calls work again.
    release(&gw, "held", "case-1").await;
    put(&mut c, "held", "moments", "pic", b"replaced", 8)
        .await
        .unwrap();
    delete(&mut c, "held", "moments", "pic").await.unwrap();
}

async fn decommission_is_refused_while_any_user_is_held() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for u in ["a", "b"] {
        put_item(&mut c, u, "moments", "note", b"x").await.unwrap();
    }
    hold(&gw, "a", "case-1").await;
    hold(&gw, "a", "case-2").await;
    hold(&gw, "b", "case-1").await;
    let decommission = || async {
        gw.admin()
            .await
            .decommission(pb::DecommissionRequest {
                confirm_region: "cn-north-1".into(),
            })
            .await
    };
    let refused = decommission().await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("LEGAL_HOLD"));
    assert!(refused.message().contains("2 users"), "{refused:?}");
    // Nothing was destroyed or stopped.
    let (_, body) = get_items(&mut c, "b", "moments", &["note"])
        .await
        .map(|items| ((), format!("{items:?}")))
        .unwrap();
    assert!(body.contains("Item"), "{body}");
    put_item(&mut c, "c", "moments", "note", b"y")
        .await
        .unwrap();
    for (u, case) in [("a", "case-1"), ("a", "case-2"), ("b", "case-1")] {
        release(&gw, u, case).await;
    }
    decommission()
        .await
        .expect("decommission once no one is held");
}

async fn a_pending_erasure_runs_after_a_restart_once_the_hold_is_released() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put_item(&mut c, "suspect", "moments", "note", b"kept for the case")
        .await
        .unwrap();
    hold(&gw, "suspect", "case-7").await;
    let asked = try_erase(&gw, "suspect").await.expect("EraseUser");
    assert_eq!(
        (asked.state(), asked.holding_cases),
        (pb::ErasureState::PendingHold, 1)
    );
    let restricted = get(&mut c, "suspect", "moments", "note", None)
        .await
        .unwrap_err();
    assert_eq!(reason(&restricted).as_deref(), Some("USER_RESTRICTED"));
    let write = put_item(&mut c, "suspect", "moments", "more", b"x")
        .await
        .unwrap_err();
    assert_eq!(reason(&write).as_deref(), Some("USER_RESTRICTED"));

    // Across a restart the request stands.
    let gw = gw.restart().await;
    assert_eq!(
        erasure_status(&gw, "suspect").await.state(),
        pb::ErasureState::PendingHold
    );
    release(&gw, "suspect", "case-7").await;
    eventually(
        "the recorded erasure to run",
        Duration::from_secs(30),
        || async { erasure_status(&gw, "suspect").await.state() == pb::ErasureState::Erased },
    )
    .await;
    let receipt = erasure_status(&gw, "suspect").await.receipt.unwrap();
    assert!(!receipt.signed_receipt.is_empty());
    let p = receipt.pseudonym.clone();
    let mut stream = gw
        .erasure()
        .await
        .watch_erasures(pb::WatchErasuresRequest { from_cursor: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let e = stream.message().await.unwrap().unwrap();
        if e.pseudonym == p {
            kinds.push(e.kind());
        }
    }
    assert_eq!(
        kinds,
        [
            pb::ErasureEventKind::PendingHold,
            pb::ErasureEventKind::Erased
        ]
    );
}
