//! Damaged objects are reported precisely and never hide healthy ones.

use std::path::PathBuf;

use sealgate::api::pb;
use tonic::Code;

use crate::support::gateway::TestGateway;

/// The file of `id` in the `moments` space (the only user's directory).
fn stored_file(gw: &TestGateway, id: &str) -> PathBuf {
    let space = gw.data_dir.join("objects/moments");
    let owner = std::fs::read_dir(&space)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    owner.join(id)
}

fn flip(path: &PathBuf, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_damaged_object_is_listed_as_damaged_not_fatal() {
    let gw = TestGateway::start().await;
    let mut client = gw.content().await;
    for id in ["a", "b", "c"] {
        crate::support::gateway::put(
            &mut client,
            "lister",
            "moments",
            id,
            &crate::support::gateway::data(1000, 1),
            1000,
        )
        .await
        .unwrap();
    }
    flip(&stored_file(&gw, "b"), 0); // bad magic

    let page = client
        .list_objects(pb::ListObjectsRequest {
            user_id: "lister".into(),
            space: "moments".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<_> = page
        .objects
        .iter()
        .map(|o| (o.object_id.as_str(), o.size, o.damaged))
        .collect();
    assert_eq!(
        listed,
        [("a", 1000, false), ("b", 0, true), ("c", 1000, false)]
    );
    let err = crate::support::gateway::get(&mut client, "lister", "moments", "b", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_object_checks_the_body_commitment() {
    let gw = TestGateway::start().await;
    let mut client = gw.content().await;
    crate::support::gateway::put(
        &mut client,
        "header",
        "moments",
        "p",
        &crate::support::gateway::data(40_000, 2),
        4096,
    )
    .await
    .unwrap();
    let path = stored_file(&gw, "p");
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    // The body's 56-byte salt and commitment start where the body's chunks'
    // ciphertext (40,000 bytes + 3 tags) minus 56 ends, counted from the
    // end, before the 104-byte digest (no declared size: format version 2).
    let body_header = len - 104 - (40_000 + 3 * 16) - 56;
    flip(&path, body_header + 30); // inside the body's commitment
    let head = client
        .head_object(pb::HeadObjectRequest {
            object: Some(crate::support::gateway::obj("header", "moments", "p")),
        })
        .await
        .unwrap_err();
    assert_eq!(head.code(), Code::DataLoss, "{head:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_batch_for_an_erased_user_is_refused() {
    let gw = TestGateway::start().await;
    let mut erasure = gw.erasure().await;
    erasure
        .erase_user(pb::EraseUserRequest {
            user_id: "gone".into(),
            after_seconds: 0,
        })
        .await
        .unwrap();
    let mut client = gw.content().await;
    let err = client
        .get_items(pb::GetItemsRequest {
            user_id: "gone".into(),
            space: "moments".into(),
            item_ids: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        crate::support::gateway::reason(&err).as_deref(),
        Some("USER_ERASED")
    );
}
