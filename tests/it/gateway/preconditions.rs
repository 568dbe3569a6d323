//! Safe retries and preconditions: `request_id`, `if_absent`, `if_match`
//! and etags, and page tokens bound to their listing.

use sealgate::api::pb;
use sealgate::crypto::Pseudonym;
use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::store::roles::*;
use sealgate::keys::store::RequestRecord;
use tonic::Code;

use super::*;

backend_tests!(
    retried_upload_returns_the_first_result,
    concurrent_retries_store_one_object,
    request_id_reused_elsewhere_is_refused,
    if_absent_never_replaces,
    if_match_guards_writes_and_deletes,
    etag_and_create_time_agree_everywhere,
    page_tokens_belong_to_their_listing,
);

const SPACE: &str = "moments";

/// A PutObject with write options, sent whole.
async fn put_with(
    c: &mut ContentServiceClient<Channel>,
    user: &str,
    id: &str,
    body: &[u8],
    options: (&str, bool, &str),
) -> Result<pb::ObjectInfo, Status> {
    let (request_id, if_absent, if_match) = options;
    let msgs = vec![
        pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
                user_id: user.into(),
                space: SPACE.into(),
                object_id: id.into(),
                request_id: request_id.into(),
                if_absent,
                if_match: if_match.into(),
                ..Default::default()
            })),
        },
        data_msg(body.to_vec()),
        finish_msg(Some(body)),
    ];
    c.put_object(futures_util::stream::iter(msgs))
        .await
        .map(|r| r.into_inner().info.expect("info"))
}

async fn item_with(
    c: &mut ContentServiceClient<Channel>,
    user: &str,
    id: &str,
    body: &[u8],
    options: (&str, bool, &str),
) -> Result<pb::ObjectInfo, Status> {
    let (request_id, if_absent, if_match) = options;
    c.put_item(pb::PutItemRequest {
        user_id: user.into(),
        space: SPACE.into(),
        item_id: id.into(),
        content: body.to_vec().into(),
        request_id: request_id.into(),
        if_absent,
        if_match: if_match.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().info.expect("info"))
}

async fn delete_if(
    c: &mut ContentServiceClient<Channel>,
    user: &str,
    id: &str,
    if_match: &str,
) -> Result<bool, Status> {
    c.delete_object(pb::DeleteObjectRequest {
        object: Some(obj(user, SPACE, id)),
        if_match: if_match.into(),
    })
    .await
    .map(|r| r.into_inner().deleted)
}

async fn ids(c: &mut ContentServiceClient<Channel>, user: &str) -> Vec<String> {
    list_all(c, user, SPACE)
        .await
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

async fn retried_upload_returns_the_first_result() {
    let mut gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let first = put_with(&mut c, "u", "", b"first", ("req-1", false, ""))
        .await
        .expect("first upload");
    // The retry's bytes differ (a client bug, say): the first result stands
    // and nothing new is stored.
    let retry = put_with(&mut c, "u", "", b"second", ("req-1", false, ""))
        .await
        .expect("retry");
    assert_eq!(retry, first);
    assert_eq!(
        ids(&mut c, "u").await,
        std::slice::from_ref(&first.object_id)
    );
    let (_, body) = get(&mut c, "u", SPACE, &first.object_id, None)
        .await
        .expect("get");
    assert_eq!(body, b"first");
    // Items too, and a caller-chosen id: the retry does not write again
    // (the etag would change if it did).
    let item = item_with(&mut c, "u", "", b"comment", ("req-2", false, ""))
        .await
        .expect("item");
    let again = item_with(&mut c, "u", "", b"comment", ("req-2", false, ""))
        .await
        .expect("item retry");
    assert_eq!(again, item);
    let named = put_with(&mut c, "u", "named", b"x", ("req-3", false, ""))
        .await
        .expect("named");
    let named_again = put_with(&mut c, "u", "named", b"x", ("req-3", false, ""))
        .await
        .expect("named retry");
    assert_eq!(named_again.etag, named.etag);
    assert_eq!(ids(&mut c, "u").await.len(), 3);
    // The same request id from another user is another request.
    let other = put_with(&mut c, "v", "", b"first", ("req-1", false, ""))
        .await
        .expect("another user");
    assert_ne!(other.object_id, first.object_id);
    // Erasure forgets the user's request ids with their keys.
    let p = pseudonym(&gw, "u").await;
    try_erase(&gw, "u").await.expect("erase");
    gw.stop().await;
    let store = SqliteKeyStore::open(&crate::support::keys_db::file(&gw.data_dir))
        .await
        .expect("open key store");
    let p = Pseudonym::from_hex(&p).unwrap();
    for request in ["req-1", "req-2", "req-3"] {
        let hash = request_hash(request);
        assert_eq!(store.request(&p, &hash, 0).await.unwrap(), None);
    }
}

/// The stored form of a request id, as FORMAT.md gives it.
fn request_hash(request_id: &str) -> [u8; 32] {
    let mut input = b"sealgate/v1/request\0".to_vec();
    input.extend_from_slice(request_id.as_bytes());
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input)
        .as_ref()
        .try_into()
        .unwrap()
}

async fn concurrent_retries_store_one_object() {
    let gw = TestGateway::start().await;
    let calls = (0..8).map(|i| {
        let gw = &gw;
        async move {
            let mut c = gw.content().await;
            put_with(&mut c, "u", "", &data(1000, i), ("same", false, "")).await
        }
    });
    let results: Vec<pb::ObjectInfo> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("put"))
        .collect();
    let first = &results[0];
    assert!(
        results.iter().all(|r| r.object_id == first.object_id),
        "{results:?}"
    );
    let mut c = gw.content().await;
    assert_eq!(
        ids(&mut c, "u").await,
        std::slice::from_ref(&first.object_id)
    );
    assert_eq!(gw.leftovers().await, 0);
}

async fn request_id_reused_elsewhere_is_refused() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put_with(&mut c, "u", "a", b"x", ("r", false, ""))
        .await
        .expect("put");
    for (id, what) in [("b", "another object id"), ("", "a generated id")] {
        expect_reason(
            put_with(&mut c, "u", id, b"x", ("r", false, "")).await,
            Code::InvalidArgument,
            "REQUEST_ID_REUSED",
            what,
        );
    }
    assert_eq!(ids(&mut c, "u").await, ["a"]);
    expect_reason(
        put_with(&mut c, "u", "", b"x", (&"r".repeat(257), false, "")).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "an overlong request id",
    );
}

async fn if_absent_never_replaces() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let first = put_with(&mut c, "u", "once", b"first", ("", true, ""))
        .await
        .expect("create");
    expect_reason(
        put_with(&mut c, "u", "once", b"second", ("", true, "")).await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
        "PutObject if_absent over an object",
    );
    expect_reason(
        item_with(&mut c, "u", "once", b"second", ("", true, "")).await,
        Code::AlreadyExists,
        "ALREADY_EXISTS",
        "PutItem if_absent over an object",
    );
    let (info, body) = get(&mut c, "u", SPACE, "once", None).await.expect("get");
    assert_eq!((info.etag, body), (first.etag, b"first".to_vec()));
    assert_eq!(gw.leftovers().await, 0);
}

async fn if_match_guards_writes_and_deletes() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let v1 = put_with(&mut c, "u", "doc", b"v1", ("", false, ""))
        .await
        .expect("v1");
    let v2 = put_with(&mut c, "u", "doc", b"v2", ("", false, &v1.etag))
        .await
        .expect("v2 if_match v1");
    assert_ne!(v2.etag, v1.etag, "a new write, a new etag");
    // A stale etag: nothing changes, whatever the call.
    expect_reason(
        put_with(&mut c, "u", "doc", b"v3", ("", false, &v1.etag)).await,
        Code::FailedPrecondition,
        "ETAG_MISMATCH",
        "PutObject with a stale etag",
    );
    expect_reason(
        item_with(&mut c, "u", "doc", b"v3", ("", false, &v1.etag)).await,
        Code::FailedPrecondition,
        "ETAG_MISMATCH",
        "PutItem with a stale etag",
    );
    expect_reason(
        delete_if(&mut c, "u", "doc", &v1.etag).await,
        Code::FailedPrecondition,
        "ETAG_MISMATCH",
        "DeleteObject with a stale etag",
    );
    let (info, body) = get(&mut c, "u", SPACE, "doc", None).await.expect("get");
    assert_eq!((info.etag, body), (v2.etag.clone(), b"v2".to_vec()));
    // The current etag: the item replaces, the delete deletes.
    let v3 = item_with(&mut c, "u", "doc", b"v3", ("", false, &v2.etag))
        .await
        .expect("item if_match v2");
    assert!(delete_if(&mut c, "u", "doc", &v3.etag)
        .await
        .expect("delete if_match v3"));
    // No object: no etag matches.
    expect_reason(
        put_with(&mut c, "u", "doc", b"v4", ("", false, &v3.etag)).await,
        Code::FailedPrecondition,
        "ETAG_MISMATCH",
        "if_match on a deleted object",
    );
    assert!(ids(&mut c, "u").await.is_empty());
    assert_eq!(gw.leftovers().await, 0);
    // Options that cannot hold together.
    expect_reason(
        put_with(&mut c, "u", "doc", b"x", ("", true, &v3.etag)).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "if_absent with if_match",
    );
    expect_reason(
        put_with(&mut c, "u", "", b"x", ("", false, &v3.etag)).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "if_match with a generated id",
    );
}

async fn etag_and_create_time_agree_everywhere() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let put_info = put_with(&mut c, "u", "photo", &data(70_000, 1), ("", false, ""))
        .await
        .expect("put");
    let head_info = head(&mut c, "u", SPACE, "photo").await.expect("head");
    let page = list_page(&mut c, "u", SPACE, 0, "").await.expect("list");
    let listed = &page.objects[0];
    assert_eq!(head_info.etag, put_info.etag);
    assert_eq!(head_info.create_time, put_info.create_time);
    assert_eq!(listed.etag, put_info.etag);
    assert_eq!(listed.create_time, put_info.create_time);
    assert!(put_info.create_time.is_some());
    // Overwriting changes both.
    let again = put_with(&mut c, "u", "photo", &data(70_000, 1), ("", false, ""))
        .await
        .expect("overwrite");
    assert_ne!(again.etag, put_info.etag);
    let time = |i: &pb::ObjectInfo| {
        std::time::SystemTime::try_from(i.create_time.expect("create_time")).unwrap()
    };
    assert!(time(&again) >= time(&put_info));
    let head_again = head(&mut c, "u", SPACE, "photo").await.expect("head");
    assert_eq!(
        (head_again.etag, head_again.create_time),
        (again.etag, again.create_time)
    );
}

async fn page_tokens_belong_to_their_listing() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for user in ["a", "b"] {
        for id in ["1", "2", "3"] {
            put_item(&mut c, user, SPACE, id, b"x").await.expect("put");
        }
    }
    put_item(&mut c, "a", "channels", "1", b"x")
        .await
        .expect("put");
    let page = list_page(&mut c, "a", SPACE, 1, "").await.expect("page 1");
    let token = page.next_page_token;
    assert!(!token.is_empty());
    assert_ne!(token, "1", "opaque, not the last id");
    let next = list_page(&mut c, "a", SPACE, 1, &token)
        .await
        .expect("page 2");
    assert_eq!(next.objects[0].object_id, "2");
    let forged = {
        let mut t = token.clone().into_bytes();
        t[0] = if t[0] == b'0' { b'1' } else { b'0' };
        String::from_utf8(t).unwrap()
    };
    let cases = [
        ("b", SPACE, token.as_str(), "another user's listing"),
        ("a", "channels", token.as_str(), "another space's listing"),
        ("a", SPACE, "1", "a bare object id"),
        ("a", SPACE, forged.as_str(), "an altered token"),
        ("a", SPACE, "zz", "garbage"),
    ];
    for (user, space, t, what) in cases {
        expect_reason(
            list_page(&mut c, user, space, 1, t).await,
            Code::InvalidArgument,
            "INVALID_PAGE_TOKEN",
            what,
        );
    }
}

/// Request records expire after 24 hours: a retry after that is a new
/// request, and the expired record is dropped when another is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_records_expire_after_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteKeyStore::open(&crate::support::keys_db::file(dir.path()))
        .await
        .unwrap();
    let p = Pseudonym::from_hex(&"ab".repeat(32)).unwrap();
    let now = sealgate::keys::unix_ms();
    let day = sealgate::content::REQUEST_WINDOW_MS;
    let record = |id: &str, at_ms| RequestRecord {
        pseudonym: p,
        request: request_hash("r"),
        space: SPACE.into(),
        requested_id: String::new(),
        object_id: id.into(),
        size: 1,
        etag: "e".into(),
        created_ms: at_ms,
        at_ms,
    };
    let old = record("old", now - day - 1000);
    assert_eq!(
        store.remember_request(&old, now - 2 * day).await.unwrap(),
        old
    );
    assert_eq!(
        store.request(&p, &old.request, now - day).await.unwrap(),
        None,
        "older than the window"
    );
    let new = record("new", now);
    assert_eq!(
        store.remember_request(&new, now - day).await.unwrap(),
        new,
        "the expired record gives way"
    );
    assert_eq!(
        store.request(&p, &new.request, now - day).await.unwrap(),
        Some(new.clone())
    );
    // Within the window, the first record holds.
    assert_eq!(
        store
            .remember_request(&record("newer", now), now - day)
            .await
            .unwrap(),
        new
    );
}
