//! The audit trail: what it records, its pages and filters, and the hash
//! chain that names the first record edited or removed in the key store.

use sealgate::api::pb;
use sealgate::api::pb::audit_service_client::AuditServiceClient;
use tonic::transport::Channel;

use super::{audit_records, pseudonym, put, try_erase, TestGateway};

async fn verify(c: &mut AuditServiceClient<Channel>) -> pb::VerifyAuditResponse {
    c.verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Runs one SQL statement on the gateway's key store, as someone with the
/// file would.
async fn tamper(gw: &TestGateway, sql: &str) {
    let changed = crate::support::keys_db::execute(&gw.data_dir, sql).await;
    assert!(changed > 0, "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_events_holds_and_erasures_are_recorded_in_a_verifiable_chain() {
    let gw = TestGateway::start().await;
    let mut content = gw.content().await;
    put(&mut content, "alice", "moments", "a", b"x", 1)
        .await
        .unwrap();
    put(&mut content, "bob", "moments", "b", b"y", 1)
        .await
        .unwrap();
    let mut holds = gw.holds().await;
    holds
        .place_hold(pb::PlaceHoldRequest {
            user_id: "alice".into(),
            case_ref: "case-9".into(),
        })
        .await
        .unwrap();
    let pending = try_erase(&gw, "alice").await.unwrap();
    assert_eq!(pending.state(), pb::ErasureState::PendingHold);
    holds
        .release_hold(pb::ReleaseHoldRequest {
            user_id: "alice".into(),
            case_ref: "case-9".into(),
        })
        .await
        .unwrap();
    // The recorded erasure runs by itself once the hold is released; its
    // garbage collection is recorded when it finishes.
    super::wait_gc_done(&gw, "alice").await;

    let mut audit = AuditServiceClient::new(gw.channel().await);
    let all = audit_records(&mut audit, "", None).await;
    let ids: Vec<u64> = all.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "ids without gaps"
    );
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "each record names its predecessor"
        );
    }
    let alice = pseudonym(&gw, "alice").await;
    let of_alice = audit_records(&mut audit, "alice", None).await;
    let summary: Vec<(&str, &str, &str)> = of_alice
        .iter()
        .map(|r| (r.action.as_str(), r.principal.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("create_user_key", "gateway", "ok"),
            ("place_hold", "local", "ok"),
            ("erase_user", "local", "pending_hold"),
            ("release_hold", "local", "ok"),
            ("erase_user", "erasure-schedule", "ok"),
            ("erasure_gc_done", "gateway", "ok"),
        ]
    );
    assert!(of_alice.iter().all(|r| r.pseudonym == alice));
    assert!(of_alice[1].detail.contains("case-9"));
    assert!(all
        .iter()
        .any(|r| r.action == "create_kek" && r.pseudonym.is_empty()));
    for r in &all {
        assert!(
            !r.detail.contains("alice") && !r.detail.contains("bob"),
            "{r:?}"
        );
    }
    let since = of_alice[3].at_unix_ms;
    let recent = audit_records(&mut audit, "alice", Some(since)).await;
    assert!(recent.iter().all(|r| r.at_unix_ms >= since));
    assert!(recent.iter().any(|r| r.action == "release_hold"));
    assert!(!recent.iter().any(|r| r.action == "place_hold"));

    let v = verify(&mut audit).await;
    assert!(v.intact, "{v:?}");
    assert_eq!(v.records, all.len() as u64);

    // One row edited in the key store: verification names it.
    let edited = of_alice[2].id;
    tamper(
        &gw,
        &format!("UPDATE audit SET outcome = 'ok' WHERE id = {edited}"),
    )
    .await;
    let v = verify(&mut audit).await;
    assert!(!v.intact);
    assert_eq!(v.first_broken_id, edited, "{v:?}");
    assert!(v.problem.contains("changed"), "{v:?}");
    tamper(
        &gw,
        &format!("UPDATE audit SET outcome = 'pending_hold' WHERE id = {edited}"),
    )
    .await;
    assert!(verify(&mut audit).await.intact, "restored");

    // A row removed: the record after it is named.
    tamper(&gw, &format!("DELETE FROM audit WHERE id = {edited}")).await;
    let v = verify(&mut audit).await;
    assert_eq!(v.first_broken_id, edited + 1, "{v:?}");
    assert!(v.problem.contains("missing"), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_newest_records_is_seen() {
    let gw = TestGateway::start().await;
    let mut content = gw.content().await;
    for user in ["a", "b", "c"] {
        put(&mut content, user, "moments", "x", b"x", 1)
            .await
            .unwrap();
    }
    let mut audit = AuditServiceClient::new(gw.channel().await);
    let all = audit_records(&mut audit, "", None).await;
    let last = all.last().unwrap().id;
    tamper(&gw, &format!("DELETE FROM audit WHERE id >= {}", last - 1)).await;
    let v = verify(&mut audit).await;
    assert!(!v.intact);
    assert_eq!(v.first_broken_id, last - 1, "{v:?}");
    assert!(v.problem.contains("removed"), "{v:?}");
}
