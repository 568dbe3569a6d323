//! The deletion service's workflow over the real gRPC API, on SQLite and
//! on PostgreSQL: erasures with a cooling-off window (restricted at once,
//! cancelled, carried out at the deadline across a restart or after one),
//! batches with per-user results, and the erasure feed (resumed from a
//! cursor, refused past its retention, reaching another replica; two
//! replicas racing one deadline shred once).

use std::time::{Duration, Instant};

use sealgate::api::pb;
use sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient;
use tonic::Code;

use super::*;

key_store_tests!(
    a_scheduled_erasure_restricts_at_once_and_a_cancel_gives_the_user_back,
    the_deadline_erases_once_across_a_restart_inside_the_window,
    a_deadline_passed_while_down_runs_at_the_next_start,
    a_batch_answers_each_user_and_a_retry_gets_the_same,
    the_feed_resumes_from_a_cursor_and_refuses_one_past_retention,
);

/// How long a test waits for a deadline's pass.
const PASS_DEADLINE: Duration = Duration::from_secs(30);

fn window(c: &mut Config) {
    c.erasure.due_check_seconds = 1;
}

async fn schedule(
    gw: &TestGateway,
    user: &str,
    after_seconds: u64,
) -> Result<pb::EraseReceipt, Status> {
    gw.erasure()
        .await
        .erase_user(pb::EraseUserRequest {
            user_id: user.into(),
            after_seconds,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn cancel(gw: &TestGateway, user: &str) -> Result<pb::ErasureStatus, Status> {
    gw.erasure()
        .await
        .cancel_erasure(pb::CancelErasureRequest {
            user_id: user.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn batch(
    gw: &TestGateway,
    users: &[&str],
    after_seconds: u64,
    request_id: &str,
) -> Result<Vec<pb::EraseUsersResult>, Status> {
    gw.erasure()
        .await
        .erase_users(pb::EraseUsersRequest {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            request_id: request_id.into(),
            after_seconds,
        })
        .await
        .map(|r| r.into_inner().results)
}

fn receipt_of(r: &pb::EraseUsersResult) -> &pb::EraseReceipt {
    match &r.result {
        Some(pb::erase_users_result::Result::Receipt(receipt)) => receipt,
        other => panic!("{}: expected a receipt, got {other:?}", r.user_id),
    }
}

fn error_reason_of(r: &pb::EraseUsersResult) -> String {
    match &r.result {
        Some(pb::erase_users_result::Result::Error(e)) => {
            use prost::Message;
            let status = Status::with_details(
                Code::from(e.code),
                e.message.clone(),
                e.encode_to_vec().into(),
            );
            reason(&status).unwrap_or_default()
        }
        other => panic!("{}: expected an error, got {other:?}", r.user_id),
    }
}

/// Every feed event after `from`, as far as the feed goes now.
async fn feed(gw: &TestGateway, from: u64) -> Result<Vec<pb::ErasureEvent>, Status> {
    let mut stream = gw
        .erasure()
        .await
        .watch_erasures(pb::WatchErasuresRequest { from_cursor: from })
        .await?
        .into_inner();
    let mut events = Vec::new();
    // The stream stays open for new events; what is there comes first.
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(600), stream.message())
        .await
        .unwrap_or(Ok(None))
    {
        events.push(e);
    }
    Ok(events)
}

async fn a_scheduled_erasure_restricts_at_once_and_a_cancel_gives_the_user_back() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put_item(&mut c, "ann", "moments", "note", b"ann's note")
        .await
        .unwrap();
    put_item(&mut c, "bob", "moments", "note", b"bob's note")
        .await
        .unwrap();
    let asked_at = sealgate::keys::unix_ms();
    let r = schedule(&gw, "ann", 3600)
        .await
        .expect("EraseUser after 1 h");
    assert_eq!(r.state(), pb::ErasureState::Scheduled);
    assert!(r.erased_at_unix_ms == 0 && r.signed_receipt.is_empty());
    assert!(
        (r.due_unix_ms - asked_at - 3_600_000).abs() < 60_000,
        "{r:?}"
    );
    // Scheduling again keeps the first deadline.
    let again = schedule(&gw, "ann", 60).await.unwrap();
    assert_eq!(again.due_unix_ms, r.due_unix_ms);

    // Restricted at once: no reads, no writes; the keys stay.
    let read = get(&mut c, "ann", "moments", "note", None)
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::FailedPrecondition, "{read:?}");
    assert_eq!(reason(&read).as_deref(), Some("ERASURE_PENDING"));
    let write = put_item(&mut c, "ann", "moments", "other", b"x")
        .await
        .unwrap_err();
    assert_eq!(reason(&write).as_deref(), Some("ERASURE_PENDING"));
    let keys = key_status(&gw, "ann").await;
    assert!(!keys.erased && !keys.versions.is_empty(), "{keys:?}");
    // Others are served.
    let (_, bob) = get(&mut c, "bob", "moments", "note", None).await.unwrap();
    assert_eq!(bob, b"bob's note");
    let status = erasure_status(&gw, "ann").await;
    assert_eq!(status.state(), pb::ErasureState::Scheduled);
    assert_eq!(status.due_unix_ms, r.due_unix_ms);

    // Cancelled: served again, with the same content; idempotent.
    let cancelled = cancel(&gw, "ann").await.expect("CancelErasure");
    assert_eq!(cancelled.state(), pb::ErasureState::Cancelled);
    assert!(cancelled.cancelled_at_unix_ms >= asked_at);
    let (_, back) = get(&mut c, "ann", "moments", "note", None).await.unwrap();
    assert_eq!(back, b"ann's note");
    put_item(&mut c, "ann", "moments", "after", b"y")
        .await
        .unwrap();
    assert_eq!(
        cancel(&gw, "ann").await.unwrap().state(),
        pb::ErasureState::Cancelled
    );
    assert_eq!(
        erasure_status(&gw, "ann").await.state(),
        pb::ErasureState::Cancelled
    );

    // Nothing to cancel; a window past the longest; cancel after erasure.
    let none = cancel(&gw, "bob").await.unwrap_err();
    assert_eq!(none.code(), Code::NotFound, "{none:?}");
    let too_long = schedule(&gw, "bob", 31 * 86_400).await.unwrap_err();
    assert_eq!(too_long.code(), Code::InvalidArgument, "{too_long:?}");
    assert!(
        too_long.message().contains("max_cooloff_days"),
        "{too_long:?}"
    );
    try_erase(&gw, "bob").await.unwrap();
    let late = cancel(&gw, "bob").await.unwrap_err();
    assert_eq!(reason(&late).as_deref(), Some("USER_ERASED"));
}

async fn the_deadline_erases_once_across_a_restart_inside_the_window() {
    let gw = TestGateway::start_with(window).await;
    let mut c = gw.content().await;
    put_item(&mut c, "cat", "moments", "note", b"cat's note")
        .await
        .unwrap();
    let r = schedule(&gw, "cat", 3).await.unwrap();
    assert_eq!(r.state(), pb::ErasureState::Scheduled);
    // A restart inside the window: the schedule is in the key store.
    let gw = gw.restart_with(window).await;
    assert_eq!(
        erasure_status(&gw, "cat").await.state(),
        pb::ErasureState::Scheduled
    );
    eventually("the deadline's erasure", PASS_DEADLINE, || async {
        erasure_status(&gw, "cat").await.state() == pb::ErasureState::Erased
    })
    .await;
    let status = erasure_status(&gw, "cat").await;
    let receipt = status.receipt.expect("a receipt once erased");
    assert!(receipt.erased_at_unix_ms >= r.due_unix_ms, "{receipt:?}");
    assert_eq!(receipt.destroyed_key_versions, [1]);
    assert!(!receipt.signed_receipt.is_empty(), "signed");
    let mut c = gw.content().await;
    let gone = get(&mut c, "cat", "moments", "note", None)
        .await
        .unwrap_err();
    assert_eq!(reason(&gone).as_deref(), Some("USER_ERASED"));
    // One erasure on the record, by the schedule; then its ciphertext goes.
    wait_gc_done(&gw, "cat").await;
    let p = pseudonym_of_erased(&gw, "cat").await;
    let events: Vec<_> = feed(&gw, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.pseudonym == p)
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        events,
        [
            pb::ErasureEventKind::Scheduled,
            pb::ErasureEventKind::Erased,
            pb::ErasureEventKind::Collected
        ]
    );
}

/// The pseudonym an erased user's receipt names.
async fn pseudonym_of_erased(gw: &TestGateway, user: &str) -> String {
    erasure_status(gw, user)
        .await
        .receipt
        .expect("erased")
        .pseudonym
}

async fn a_deadline_passed_while_down_runs_at_the_next_start() {
    // The pass runs at start, then not for an hour: only the start can
    // carry the erasure out.
    let rarely = |c: &mut Config| c.erasure.due_check_seconds = 3600;
    let mut gw = TestGateway::start_with(rarely).await;
    let mut c = gw.content().await;
    put_item(&mut c, "dan", "moments", "note", b"dan's note")
        .await
        .unwrap();
    let r = schedule(&gw, "dan", 1).await.unwrap();
    gw.stop().await;
    // The deadline passes while nothing runs.
    while sealgate::keys::unix_ms() <= r.due_unix_ms {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gw = gw.restart_with(rarely).await;
    eventually("the erasure at start", PASS_DEADLINE, || async {
        erasure_status(&gw, "dan").await.state() == pb::ErasureState::Erased
    })
    .await;
    let mut c = gw.content().await;
    let gone = get(&mut c, "dan", "moments", "note", None)
        .await
        .unwrap_err();
    assert_eq!(reason(&gone).as_deref(), Some("USER_ERASED"));
}

async fn a_batch_answers_each_user_and_a_retry_gets_the_same() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let users: Vec<String> = (0..10).map(|i| format!("batch-{i}")).collect();
    for u in &users {
        put_item(&mut c, u, "moments", "note", u.as_bytes())
            .await
            .unwrap();
    }
    let mut holds = LegalHoldServiceClient::new(gw.channel().await);
    holds
        .place_hold(pb::PlaceHoldRequest {
            user_id: "batch-9".into(),
            case_ref: "case-1".into(),
        })
        .await
        .unwrap();
    let asked = [
        "batch-0", "batch-1", "batch-2", "", "batch-9", "batch-0", "batch-3",
    ];
    let results = batch(&gw, &asked, 0, "b-1").await.expect("EraseUsers");
    let ids: Vec<&str> = results.iter().map(|r| r.user_id.as_str()).collect();
    assert_eq!(ids, asked, "one result per id, in order");
    for i in [0, 1, 2, 5, 6] {
        let r = receipt_of(&results[i]);
        assert_eq!(r.state(), pb::ErasureState::Erased, "{}", asked[i]);
        assert_eq!(r.destroyed_key_versions, [1], "{}", asked[i]);
        assert!(!r.signed_receipt.is_empty(), "{}: signed", asked[i]);
    }
    assert_eq!(
        receipt_of(&results[0]),
        receipt_of(&results[5]),
        "the same user twice"
    );
    assert_eq!(error_reason_of(&results[3]), "INVALID_USER_ID");
    let pending = receipt_of(&results[4]);
    assert_eq!(
        (pending.state(), pending.holding_cases),
        (pb::ErasureState::PendingHold, 1),
        "a held user's erasure is recorded"
    );
    for u in ["batch-0", "batch-3"] {
        let gone = get(&mut c, u, "moments", "note", None).await.unwrap_err();
        assert_eq!(reason(&gone).as_deref(), Some("USER_ERASED"), "{u}");
    }
    let restricted = get(&mut c, "batch-9", "moments", "note", None)
        .await
        .unwrap_err();
    assert_eq!(reason(&restricted).as_deref(), Some("USER_RESTRICTED"));
    // A retry gets the same receipts, byte for byte.
    let retry = batch(&gw, &asked, 0, "b-1").await.unwrap();
    for i in [0, 1, 2, 6] {
        assert_eq!(
            receipt_of(&retry[i]),
            receipt_of(&results[i]),
            "{}",
            asked[i]
        );
    }

    // Scheduled in a batch; a retry of the same request after a cancel
    // leaves it cancelled, another request schedules it again.
    let later = ["batch-4", "batch-5", "batch-6"];
    let scheduled = batch(&gw, &later, 3600, "b-2").await.unwrap();
    assert!(scheduled
        .iter()
        .all(|r| receipt_of(r).state() == pb::ErasureState::Scheduled));
    cancel(&gw, "batch-5").await.unwrap();
    let retry = batch(&gw, &later, 3600, "b-2").await.unwrap();
    assert_eq!(receipt_of(&retry[1]).state(), pb::ErasureState::Cancelled);
    assert_eq!(
        erasure_status(&gw, "batch-5").await.state(),
        pb::ErasureState::Cancelled
    );
    let anew = batch(&gw, &later, 3600, "b-3").await.unwrap();
    assert_eq!(receipt_of(&anew[1]).state(), pb::ErasureState::Scheduled);

    // Past the limit, nothing is done.
    let many: Vec<String> = (0..1001).map(|i| format!("many-{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let too_many = batch(&gw, &refs, 0, "").await.unwrap_err();
    assert_eq!(reason(&too_many).as_deref(), Some("BATCH_TOO_LARGE"));
}

async fn the_feed_resumes_from_a_cursor_and_refuses_one_past_retention() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for u in ["f-0", "f-1", "f-2"] {
        put_item(&mut c, u, "moments", "note", b"x").await.unwrap();
    }
    schedule(&gw, "f-0", 3600).await.unwrap();
    cancel(&gw, "f-0").await.unwrap();
    try_erase(&gw, "f-1").await.unwrap();
    let all = feed(&gw, 0).await.unwrap();
    let kinds: Vec<_> = all.iter().map(|e| e.kind()).collect();
    assert!(
        kinds.starts_with(&[
            pb::ErasureEventKind::Scheduled,
            pb::ErasureEventKind::Cancelled,
            pb::ErasureEventKind::Erased,
        ]),
        "{kinds:?}"
    );
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor), "{all:?}");
    // Pseudonyms only, never the user id.
    assert!(all
        .iter()
        .all(|e| e.pseudonym.len() == 64 && e.pseudonym.chars().all(|c| c.is_ascii_hexdigit())));
    // Resuming after the second event gives exactly what followed it.
    let resumed = feed(&gw, all[1].cursor).await.unwrap();
    assert_eq!(resumed.first().map(|e| e.cursor), Some(all[2].cursor));
    try_erase(&gw, "f-2").await.unwrap();
    let more = feed(&gw, all.last().unwrap().cursor).await.unwrap();
    assert!(
        more.iter()
            .any(|e| e.kind() == pb::ErasureEventKind::Erased),
        "{more:?}"
    );

    // Retention drops what is old (here: everything but the newest); a
    // cursor behind it is refused, naming where to resume.
    let store = open_key_store(&gw.data_dir).await;
    let dropped = store
        .prune_erasure_events(sealgate::keys::unix_ms() + 1)
        .await
        .unwrap();
    assert!(dropped > 0);
    let floor = store.erasure_feed_floor().await.unwrap();
    store.close().await;
    let expired = feed(&gw, 0).await.unwrap_err();
    assert_eq!(expired.code(), Code::OutOfRange, "{expired:?}");
    assert_eq!(reason(&expired).as_deref(), Some("CURSOR_EXPIRED"));
    assert!(
        expired
            .message()
            .contains(&format!("resume from cursor {floor}")),
        "{expired:?}"
    );
    let rest = feed(&gw, floor).await.unwrap();
    assert_eq!(rest.len(), 1, "the newest event stays: {rest:?}");
}

/// Two replicas (PostgreSQL key store, one bucket), both running the
/// deadline pass every second: each scheduled user is erased once, with
/// one receipt, and a watcher on one replica sees the other's erasures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_race_the_deadlines_and_shred_each_user_once() {
    with_pg_key_store(with_backend(BackendKind::S3, async {
        let a = TestGateway::start_with(window).await;
        let b = a.start_replica(window).await;
        let users: Vec<String> = (0..8).map(|i| format!("race-{i}")).collect();
        let mut c = a.content().await;
        for u in &users {
            put_item(&mut c, u, "moments", "note", b"x").await.unwrap();
        }
        let head = feed(&b, 0).await.unwrap().last().map_or(0, |e| e.cursor);

        // A watcher on B sees an erasure made through A.
        let mut watch = b
            .erasure()
            .await
            .watch_erasures(pb::WatchErasuresRequest { from_cursor: head })
            .await
            .unwrap()
            .into_inner();
        let erased_at = Instant::now();
        try_erase(&a, &users[0]).await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("the event reaches the other replica")
            .unwrap()
            .unwrap();
        let delay = erased_at.elapsed();
        eprintln!("erasure feed: event on the other replica after {delay:?}");
        assert_eq!(first.kind(), pb::ErasureEventKind::Erased);

        let refs: Vec<&str> = users[1..].iter().map(String::as_str).collect();
        batch(&a, &refs, 2, "race").await.unwrap();
        for u in &users[1..] {
            eventually("the deadline's erasure", PASS_DEADLINE, || async {
                erasure_status(&b, u).await.state() == pb::ErasureState::Erased
            })
            .await;
        }
        // One shred, one receipt: one `erased` event and one audit record
        // of the erasure per user, the same receipt through either replica.
        let events = feed(&a, head).await.unwrap();
        for u in &users[1..] {
            let p = pseudonym_of_erased(&a, u).await;
            let erased = events
                .iter()
                .filter(|e| e.pseudonym == p && e.kind() == pb::ErasureEventKind::Erased)
                .count();
            assert_eq!(erased, 1, "{u}: {events:?}");
            let from_a = erasure_status(&a, u).await.receipt.unwrap();
            let from_b = erasure_status(&b, u).await.receipt.unwrap();
            assert_eq!(from_a.signed_receipt, from_b.signed_receipt, "{u}");
            let mut audit =
                sealgate::api::pb::audit_service_client::AuditServiceClient::new(a.channel().await);
            let records = audit_records(&mut audit, u, None).await;
            let shreds = records
                .iter()
                .filter(|r| r.action == "erase_user" && r.outcome == "ok")
                .count();
            assert_eq!(shreds, 1, "{u}: {records:?}");
        }
    }))
    .await;
}
