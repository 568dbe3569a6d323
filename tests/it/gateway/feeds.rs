//! BatchGetItems, the feed call: items across users and spaces, per-item
//! results with the details a unary call would carry, a response budget.

use sealgate::api::pb;
use tonic::Code;

use super::*;

backend_tests!(
    batch_across_users_and_spaces_reports_each_item,
    batch_past_the_response_budget_fails_per_item,
);

fn item_ref(user: &str, space: &str, id: &str) -> pb::ObjectRef {
    obj(user, space, id)
}

async fn batch(
    c: &mut ContentServiceClient<Channel>,
    refs: Vec<pb::ObjectRef>,
) -> Result<Vec<pb::ItemResult>, Status> {
    c.batch_get_items(pb::BatchGetItemsRequest { refs })
        .await
        .map(|r| r.into_inner().items)
}

/// A per-item error as the `tonic::Status` it encodes, details included.
fn item_error(r: &pb::ItemResult) -> Status {
    match &r.result {
        Some(pb::item_result::Result::Error(e)) => {
            use prost::Message;
            Status::with_details(
                Code::from(e.code),
                e.message.clone(),
                e.encode_to_vec().into(),
            )
        }
        other => panic!("{}: expected an error, got {other:?}", r.item_id),
    }
}

fn item_content(r: &pb::ItemResult) -> &[u8] {
    match &r.result {
        Some(pb::item_result::Result::Item(i)) => &i.content,
        other => panic!("{}: expected an item, got {other:?}", r.item_id),
    }
}

async fn batch_across_users_and_spaces_reports_each_item() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for (user, space, id, body) in [
        ("ann", "moments", "m1", &b"ann's moment"[..]),
        ("bob", "channels", "c1", b"bob's comment"),
        ("cat", "moments", "m2", b"cat's moment"),
        ("ann", "channels", "c2", b"ann's comment"),
    ] {
        put_item(&mut c, user, space, id, body).await.expect("put");
    }
    try_erase(&gw, "cat").await.expect("EraseUser");
    let results = batch(
        &mut c,
        vec![
            item_ref("ann", "moments", "m1"),
            item_ref("bob", "channels", "c1"),
            item_ref("cat", "moments", "m2"),
            item_ref("ann", "moments", "never-was"),
            item_ref("ann", "channels", "c2"),
            item_ref("bob", "channels", "../x"),
            item_ref("bob", "nowhere", "c1"),
        ],
    )
    .await
    .expect("BatchGetItems");
    let ids: Vec<&str> = results.iter().map(|r| r.item_id.as_str()).collect();
    assert_eq!(
        ids,
        ["m1", "c1", "m2", "never-was", "c2", "../x", "c1"],
        "one result per ref, in request order"
    );
    assert_eq!(item_content(&results[0]), b"ann's moment");
    assert_eq!(item_content(&results[1]), b"bob's comment");
    assert_eq!(item_content(&results[4]), b"ann's comment");
    for (i, code, reason) in [
        (2, Code::FailedPrecondition, "USER_ERASED"),
        (3, Code::NotFound, "OBJECT_NOT_FOUND"),
        (5, Code::InvalidArgument, "INVALID_OBJECT_ID"),
        (6, Code::InvalidArgument, "UNKNOWN_SPACE"),
    ] {
        expect_reason::<()>(Err(item_error(&results[i])), code, reason, ids[i]);
    }

    let too_many = (0..101)
        .map(|i| item_ref("ann", "moments", &format!("i{i}")))
        .collect();
    expect_reason(
        batch(&mut c, too_many).await,
        Code::InvalidArgument,
        "BATCH_TOO_LARGE",
        "101 refs",
    );
}

async fn batch_past_the_response_budget_fails_per_item() {
    let gw = TestGateway::start_with(|c| c.limits.max_response_bytes = 200 * 1024).await;
    let mut c = gw.content().await;
    let ids: Vec<String> = (0..5).map(|i| format!("big{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        put_item(&mut c, "feed", "moments", id, &data(60 * 1024, i as u64))
            .await
            .expect("put");
    }
    let refs: Vec<_> = ids
        .iter()
        .map(|id| item_ref("feed", "moments", id))
        .collect();
    let results = batch(&mut c, refs).await.expect("BatchGetItems");
    let single = gw.content().await;
    let results_single = {
        let mut single = single;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        get_items(&mut single, "feed", "moments", &refs)
            .await
            .expect("GetItems")
    };
    for results in [results, results_single] {
        assert_eq!(results.len(), 5);
        // 200 KiB less room for errors: two 60 KiB items fit, the third
        // would not.
        for (i, r) in results.iter().enumerate().take(2) {
            assert_eq!(item_content(r), &data(60 * 1024, i as u64)[..]);
        }
        for r in &results[2..] {
            expect_reason::<()>(
                Err(item_error(r)),
                Code::ResourceExhausted,
                "RESPONSE_BUDGET",
                &r.item_id,
            );
        }
    }
}
