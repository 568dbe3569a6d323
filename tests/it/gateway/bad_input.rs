//! Malformed requests, limits, cancelled uploads and corrupted storage.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::blob::s3::PART_SIZE;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use super::*;

backend_tests!(
    invalid_object_ids,
    invalid_user_ids,
    unknown_space,
    malformed_upload_streams,
    oversize_object_is_refused_and_not_stored,
    oversize_item_is_refused,
    oversize_message_is_refused_and_not_stored,
    cancelled_upload_leaves_nothing,
    corrupted_body_is_data_loss,
    corrupted_header_is_data_loss,
);

const SPACE: &str = "moments";

#[track_caller]
fn expect_invalid<T: std::fmt::Debug>(r: Result<T, Status>, naming: &str, what: &str) {
    let s = expect_code(r, Code::InvalidArgument, what);
    assert!(
        s.message().contains(naming),
        "{what}: message {:?} should name {naming}",
        s.message()
    );
    let expected = match naming {
        "object_id" => "INVALID_OBJECT_ID",
        "user_id" => "INVALID_USER_ID",
        "space" => "UNKNOWN_SPACE",
        // The shape of an upload stream, not one field.
        "header" => {
            assert_eq!(reason(&s).as_deref(), Some("INVALID_REQUEST"), "{what}");
            return;
        }
        other => panic!("no reason known for {other}"),
    };
    assert_eq!(reason(&s).as_deref(), Some(expected), "{what}");
    assert_eq!(
        violation_fields(&s),
        [naming],
        "{what}: the field violation names the field"
    );
}

/// The fields a status's BadRequest details name.
fn violation_fields(s: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    s.get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn put_msgs(
    c: &mut ContentServiceClient<Channel>,
    msgs: Vec<pb::PutObjectRequest>,
) -> Result<pb::PutObjectResponse, Status> {
    c.put_object(futures_util::stream::iter(msgs))
        .await
        .map(tonic::Response::into_inner)
}

async fn invalid_object_ids() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let long = "a".repeat(129);
    let bad = [
        "../x",
        "..",
        long.as_str(),
        ".x",
        ".tmp",
        "a/b",
        "/abs",
        "a b",
        "é",
        "a\0b",
    ];
    for id in bad {
        let w = format!("object id {id:?}");
        expect_invalid(
            get(&mut c, "u", SPACE, id, None).await,
            "object_id",
            &format!("GetObject {w}"),
        );
        expect_invalid(
            head(&mut c, "u", SPACE, id).await,
            "object_id",
            &format!("HeadObject {w}"),
        );
        expect_invalid(
            delete(&mut c, "u", SPACE, id).await,
            "object_id",
            &format!("DeleteObject {w}"),
        );
        expect_invalid(
            put(&mut c, "u", SPACE, id, b"data", 2).await,
            "object_id",
            &format!("PutObject {w}"),
        );
        expect_invalid(
            put_item(&mut c, "u", SPACE, id, b"data").await,
            "object_id",
            &format!("PutItem {w}"),
        );
        // In a batch the bad id fails on its own.
        let r = get_items(&mut c, "u", SPACE, &[id])
            .await
            .expect("GetItems");
        match &r[0].result {
            Some(pb::item_result::Result::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32, "GetItems {w}");
                assert!(e.message.contains("object_id"), "GetItems {w}: {e:?}");
            }
            other => panic!("GetItems {w}: {other:?}"),
        }
    }
    // Empty means "generate one" on writes only.
    expect_invalid(
        get(&mut c, "u", SPACE, "", None).await,
        "object_id",
        "GetObject with an empty id",
    );
    expect_invalid(
        head(&mut c, "u", SPACE, "").await,
        "object_id",
        "HeadObject with an empty id",
    );
    expect_invalid(
        delete(&mut c, "u", SPACE, "").await,
        "object_id",
        "DeleteObject with an empty id",
    );
    // A missing ObjectRef is refused too.
    let r = c.head_object(pb::HeadObjectRequest { object: None }).await;
    expect_code(r, Code::InvalidArgument, "HeadObject without an object");

    // Nothing was written anywhere by the refused requests.
    gw.assert_nothing_stored("after refused requests").await;
    assert!(!gw.data_dir.join("x").exists());

    // The longest valid id works, except on s3s-fs: it names a sidecar
    // file after the base64 of bucket and key, over 255 bytes for keys past
    // about 160 bytes, and answers 500 (after writing the object file, which
    // it keeps: its own write is not atomic). The gateway passes the
    // store's failure on.
    let max = "a".repeat(128);
    let stored = put(&mut c, "u", SPACE, &max, b"ok", 1).await;
    if backend_kind() == BackendKind::S3s {
        let s = expect_reason(
            stored,
            Code::Unavailable,
            "BACKEND_UNAVAILABLE",
            "128-byte id on s3s-fs",
        );
        assert!(s.message().contains("500"), "{s:?}");
    } else {
        stored.expect("128-byte id");
        let (_, got) = get(&mut c, "u", SPACE, &max, None).await.expect("get");
        assert_eq!(got, b"ok");
    }
    // An invalid page token is refused.
    expect_reason(
        list_page(&mut c, "u", SPACE, 2, "../x").await,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        "ListObjects with a bad page token",
    );
}

async fn invalid_user_ids() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let long = "u".repeat(257);
    for user in ["", long.as_str()] {
        let w = format!("user id of {} bytes", user.len());
        expect_invalid(
            get(&mut c, user, SPACE, "x", None).await,
            "user_id",
            &format!("GetObject, {w}"),
        );
        expect_invalid(
            head(&mut c, user, SPACE, "x").await,
            "user_id",
            &format!("HeadObject, {w}"),
        );
        expect_invalid(
            delete(&mut c, user, SPACE, "x").await,
            "user_id",
            &format!("DeleteObject, {w}"),
        );
        expect_invalid(
            put(&mut c, user, SPACE, "x", b"d", 1).await,
            "user_id",
            &format!("PutObject, {w}"),
        );
        expect_invalid(
            put_item(&mut c, user, SPACE, "x", b"d").await,
            "user_id",
            &format!("PutItem, {w}"),
        );
        expect_invalid(
            get_items(&mut c, user, SPACE, &["x"]).await,
            "user_id",
            &format!("GetItems, {w}"),
        );
        expect_invalid(
            list_page(&mut c, user, SPACE, 0, "").await,
            "user_id",
            &format!("ListObjects, {w}"),
        );
        // An empty user id asks KeyStatus for the hierarchy as a whole.
        if !user.is_empty() {
            let r = gw
                .admin()
                .await
                .key_status(pb::KeyStatusRequest {
                    user_id: user.into(),
                    ..Default::default()
                })
                .await;
            expect_invalid(r, "user_id", &format!("KeyStatus, {w}"));
        }
        let r = gw
            .erasure()
            .await
            .erase_user(pb::EraseUserRequest {
                user_id: user.into(),
                after_seconds: 0,
            })
            .await;
        expect_invalid(r, "user_id", &format!("EraseUser, {w}"));
        let r = gw
            .erasure()
            .await
            .get_erasure(pb::GetErasureRequest {
                user_id: user.into(),
            })
            .await;
        expect_invalid(r, "user_id", &format!("GetErasure, {w}"));
    }
    gw.assert_nothing_stored("after refused requests").await;
    // 256 bytes is still a valid user id.
    put(&mut c, &"u".repeat(256), SPACE, "x", b"d", 1)
        .await
        .expect("256-byte user id");
}

async fn unknown_space() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    // A huge name is quoted only in part: the answer stays small enough for
    // any client's metadata limit.
    let huge = "s".repeat(20_000);
    let s = expect_reason(
        head(&mut c, "u", &huge, "x").await,
        Code::InvalidArgument,
        "UNKNOWN_SPACE",
        "HeadObject, a 20,000-byte space",
    );
    assert!(s.message().len() < 300, "{} bytes", s.message().len());
    assert!(s.message().contains("20000 bytes"), "{}", s.message());
    for space in ["nope", "", "MOMENTS", ".tmp", "../moments"] {
        let w = format!("space {space:?}");
        expect_invalid(
            get(&mut c, "u", space, "x", None).await,
            "space",
            &format!("GetObject, {w}"),
        );
        expect_invalid(
            head(&mut c, "u", space, "x").await,
            "space",
            &format!("HeadObject, {w}"),
        );
        expect_invalid(
            delete(&mut c, "u", space, "x").await,
            "space",
            &format!("DeleteObject, {w}"),
        );
        expect_invalid(
            put(&mut c, "u", space, "x", b"d", 1).await,
            "space",
            &format!("PutObject, {w}"),
        );
        expect_invalid(
            put_item(&mut c, "u", space, "x", b"d").await,
            "space",
            &format!("PutItem, {w}"),
        );
        expect_invalid(
            get_items(&mut c, "u", space, &["x"]).await,
            "space",
            &format!("GetItems, {w}"),
        );
        expect_invalid(
            list_page(&mut c, "u", space, 0, "").await,
            "space",
            &format!("ListObjects, {w}"),
        );
    }
    gw.assert_nothing_stored("after refused requests").await;
}

async fn malformed_upload_streams() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;

    // Data before any header.
    let r = put_msgs(
        &mut c,
        vec![data_msg(data(100, 1)), header_msg("u", SPACE, "x")],
    )
    .await;
    expect_invalid(r, "header", "data as the first message");
    // No message at all.
    let r = put_msgs(&mut c, vec![]).await;
    expect_invalid(r, "header", "empty upload stream");
    // A first message with no part.
    let r = put_msgs(&mut c, vec![pb::PutObjectRequest { part: None }]).await;
    expect_invalid(r, "header", "empty first message");
    // A second header mid-stream, with enough data before it to have
    // started writing.
    let r = put_msgs(
        &mut c,
        vec![
            header_msg("u", SPACE, "x"),
            data_msg(data(300_000, 2)),
            header_msg("u", SPACE, "y"),
            data_msg(data(100, 3)),
        ],
    )
    .await;
    expect_invalid(r, "header", "second header mid-stream");
    // A message with no part mid-stream.
    let r = put_msgs(
        &mut c,
        vec![
            header_msg("u", SPACE, "z"),
            data_msg(data(10, 2)),
            pb::PutObjectRequest { part: None },
        ],
    )
    .await;
    expect_code(r, Code::InvalidArgument, "empty message mid-stream");

    for id in ["x", "y", "z"] {
        expect_code(get(&mut c, "u", SPACE, id, None).await, Code::NotFound, id);
    }
    assert!(list_all(&mut c, "u", SPACE).await.unwrap().is_empty());
    // The failed uploads' temporary files (or multipart uploads) were
    // removed before the error was returned, and nothing else is stored.
    gw.assert_nothing_stored("after malformed uploads").await;
}

async fn oversize_object_is_refused_and_not_stored() {
    let gw = TestGateway::start_with(|c| c.limits.max_object_bytes = 100_000).await;
    let mut c = gw.content().await;
    let body = data(100_001, 4);
    for piece in [10_000, 100_001] {
        let s = expect_code(
            put(&mut c, "u", SPACE, "big", &body, piece).await,
            Code::ResourceExhausted,
            &format!("100 001 bytes in pieces of {piece}"),
        );
        assert!(s.message().contains("100000"), "{s:?}");
        expect_code(
            get(&mut c, "u", SPACE, "big", None).await,
            Code::NotFound,
            "oversize object",
        );
        gw.assert_nothing_stored("nothing stored, temporary file included")
            .await;
    }
    // Far past the limit.
    expect_code(
        put(&mut c, "u", SPACE, "bigger", &data(3 << 20, 5), 1 << 20).await,
        Code::ResourceExhausted,
        "3 MiB object",
    );
    gw.assert_nothing_stored("after a 3 MiB object").await;

    // Exactly the limit is fine; a refused overwrite leaves it intact.
    put(&mut c, "u", SPACE, "big", &body[..100_000], 30_000)
        .await
        .expect("object of exactly the limit");
    expect_code(
        put(&mut c, "u", SPACE, "big", &body, 30_000).await,
        Code::ResourceExhausted,
        "oversize overwrite",
    );
    let (info, got) = get(&mut c, "u", SPACE, "big", None).await.expect("get");
    assert_eq!(info.size, 100_000);
    assert!(got == body[..100_000]);
    assert_eq!(gw.leftovers().await, 0);
}

async fn oversize_item_is_refused() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let s = expect_code(
        put_item(&mut c, "u", "channels", "big", &data(65_537, 1)).await,
        Code::ResourceExhausted,
        "65 537-byte item",
    );
    assert!(s.message().contains("65536"), "{s:?}");
    let r = get_items(&mut c, "u", "channels", &["big"])
        .await
        .expect("GetItems");
    assert!(
        matches!(&r[0].result, Some(pb::item_result::Result::Error(e)) if e.code == Code::NotFound as i32),
        "{r:?}"
    );
    gw.assert_nothing_stored("after an oversize item").await;
    put_item(&mut c, "u", "channels", "big", &data(65_536, 1))
        .await
        .expect("65 536-byte item");
}

async fn oversize_message_is_refused_and_not_stored() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    // One message over gRPC's 4 MiB decoding limit, after a valid piece.
    let msgs = vec![
        header_msg("u", SPACE, "huge-message"),
        data_msg(data(1000, 1)),
        data_msg(data(5 << 20, 2)),
    ];
    let s = expect_code(
        put_msgs(&mut c, msgs).await,
        Code::ResourceExhausted,
        "a 5 MiB message",
    );
    assert!(s.message().contains("4 MiB"), "{s:?}");
    expect_code(
        get(&mut c, "u", SPACE, "huge-message", None).await,
        Code::NotFound,
        "object after an oversize message",
    );
    gw.assert_nothing_stored("after an oversize message").await;

    // A data piece one byte over 4 MiB fits gRPC's limit (4 MiB + 1 KiB
    // for the message around it) but not the proto's: refused, nothing
    // stored; exactly 4 MiB goes through.
    let piece = 4 << 20;
    let msgs = vec![
        header_msg("u", SPACE, "big-piece"),
        data_msg(data(piece + 1, 3)),
    ];
    let s = expect_code(
        put_msgs(&mut c, msgs).await,
        Code::ResourceExhausted,
        "a 4 MiB + 1 byte piece",
    );
    assert_eq!(reason(&s).as_deref(), Some("MESSAGE_TOO_LARGE"), "{s:?}");
    assert!(s.message().contains(&(piece + 1).to_string()), "{s:?}");
    gw.assert_nothing_stored("after an oversize piece").await;
    let mut msgs = vec![
        header_msg("u", SPACE, "big-piece"),
        data_msg(data(piece, 3)),
    ];
    msgs.push(finish_msg(None));
    put_msgs(&mut c, msgs).await.expect("a 4 MiB piece");
}

async fn cancelled_upload_leaves_nothing() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    // Enough data for the store to hold an unfinished upload: the
    // filesystem writes a temporary file at once, S3 buffers a whole part
    // in memory before starting a multipart upload.
    let pieces = match gw.backend {
        Backend::Fs => 4,
        Backend::S3 { .. } => (PART_SIZE >> 16) + 16,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(pieces + 1);
    tx.send(header_msg("canceller", SPACE, "partial"))
        .await
        .unwrap();
    for i in 0..pieces {
        tx.send(data_msg(data(64 * 1024, i as u64))).await.unwrap();
    }
    {
        let mut call = Box::pin(c.put_object(ReceiverStream::new(rx)));
        tokio::select! {
            r = &mut call => panic!("the upload cannot finish while its stream is open: {r:?}"),
            () = eventually(
                "the upload has a temporary file (or multipart upload)",
                Duration::from_secs(10),
                || async { gw.leftovers().await > 0 },
            ) => {}
        }
        // The client goes away mid-upload.
        drop(call);
    }
    eventually(
        "the temporary file (or multipart upload) is removed",
        Duration::from_secs(10),
        || async { gw.leftovers().await == 0 },
    )
    .await;
    expect_code(
        get(&mut c, "canceller", SPACE, "partial", None).await,
        Code::NotFound,
        "cancelled upload",
    );
    // Ending the (already cancelled) request stream now must not commit it.
    drop(tx);
    expect_code(
        head(&mut c, "canceller", SPACE, "partial").await,
        Code::NotFound,
        "cancelled upload after its stream ended",
    );
    assert!(list_all(&mut c, "canceller", SPACE)
        .await
        .unwrap()
        .is_empty());
    gw.assert_nothing_stored("after a cancelled upload").await;
    // The connection is still usable.
    put(&mut c, "canceller", SPACE, "whole", b"fine", 2)
        .await
        .expect("put");
}

/// Flips one bit of a user's stored object at `offset` (negative: from the
/// end).
async fn flip(gw: &TestGateway, pseudonym: &str, id: &str, offset: i64) {
    let mut bytes = gw
        .stored_object(SPACE, pseudonym, id)
        .await
        .expect("stored object");
    let at = if offset < 0 {
        bytes.len() - offset.unsigned_abs() as usize
    } else {
        offset as usize
    };
    bytes[at] ^= 0x01;
    gw.overwrite_stored_object(SPACE, pseudonym, id, &bytes)
        .await;
}

/// Offset in the stored object of the body's chunk `index` (after the
/// envelope header, its sealed metadata and the C2SP header).
async fn chunk_offset(gw: &TestGateway, pseudonym: &str, id: &str, index: u64) -> i64 {
    let bytes = gw
        .stored_object(SPACE, pseudonym, id)
        .await
        .expect("stored object");
    let m = u32::from_be_bytes(bytes[72..76].try_into().unwrap()) as u64;
    (76 + m + 56 + index * (16 * 1024 + 16)) as i64
}

async fn corrupted_body_is_data_loss() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    const CHUNK: u64 = 16 * 1024;
    let size = 3 * CHUNK + 100; // chunks 0, 1, 2 and a short final chunk 3
    let body = data(size as usize, 6);
    for id in ["mid", "tail"] {
        put(&mut c, "u", SPACE, id, &body, 10_000)
            .await
            .expect("put");
    }
    let p = pseudonym(&gw, "u").await;

    // One bit of chunk 1.
    flip(&gw, &p, "mid", chunk_offset(&gw, &p, "mid", 1).await + 100).await;
    expect_code(
        get(&mut c, "u", SPACE, "mid", None).await,
        Code::DataLoss,
        "full read",
    );
    for (what, start, end) in [
        ("inside the chunk", CHUNK + 5, Some(CHUNK + 10)),
        ("the whole chunk", CHUNK, Some(2 * CHUNK)),
        ("across it", 100, Some(3 * CHUNK)),
        ("from it to the end", CHUNK + 1, None),
    ] {
        expect_code(
            get(&mut c, "u", SPACE, "mid", Some((start, end))).await,
            Code::DataLoss,
            &format!("range {what}"),
        );
    }
    // Ranges that do not touch the chunk still read correctly.
    for (start, end) in [
        (0, Some(100)),
        (2 * CHUNK + 1, Some(2 * CHUNK + 10)),
        (3 * CHUNK, None),
    ] {
        let (_, got) = get(&mut c, "u", SPACE, "mid", Some((start, end)))
            .await
            .unwrap_or_else(|e| panic!("range {start}..{end:?}: {e:?}"));
        let end = end.unwrap_or(size);
        assert!(got == body[start as usize..end as usize]);
    }
    // The header is intact.
    assert_eq!(
        head(&mut c, "u", SPACE, "mid").await.expect("head").size,
        size
    );

    // One bit of the final chunk's tag, the last byte before the 104-byte
    // digest (no declared size: format version 2).
    flip(&gw, &p, "tail", -1 - 104).await;
    expect_code(
        get(&mut c, "u", SPACE, "tail", None).await,
        Code::DataLoss,
        "full read",
    );
    expect_code(
        get(&mut c, "u", SPACE, "tail", Some((3 * CHUNK + 1, None))).await,
        Code::DataLoss,
        "range of the final chunk",
    );
    expect_code(
        get(&mut c, "u", SPACE, "tail", Some((0, None))).await,
        Code::DataLoss,
        "open range over the whole object",
    );
    let (_, got) = get(&mut c, "u", SPACE, "tail", Some((0, Some(10))))
        .await
        .expect("first chunk still reads");
    assert_eq!(got, &body[..10]);
}

async fn corrupted_header_is_data_loss() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let body = data(20_000, 7);
    let p = pseudonym(&gw, "u").await;
    // Envelope header: magic, user-key version, wrapped DEK (nonce,
    // ciphertext, tag), metadata length, sealed metadata.
    for (i, at) in [0u64, 11, 14, 40, 71, 75, 80].into_iter().enumerate() {
        let id = format!("h{i}");
        put(&mut c, "u", SPACE, &id, &body, 20_000)
            .await
            .expect("put");
        flip(&gw, &p, &id, at as i64).await;
        expect_code(
            head(&mut c, "u", SPACE, &id).await,
            Code::DataLoss,
            &format!("HeadObject, bit flipped at {at}"),
        );
        expect_code(
            get(&mut c, "u", SPACE, &id, None).await,
            Code::DataLoss,
            &format!("GetObject, bit flipped at {at}"),
        );
        expect_code(
            get(&mut c, "u", SPACE, &id, Some((0, Some(1)))).await,
            Code::DataLoss,
            &format!("ranged GetObject, bit flipped at {at}"),
        );
    }
    // The body's C2SP header (salt, commitment) is checked when the body is
    // read (HeadObject does not read the body).
    for (i, back) in [10i64, 40].into_iter().enumerate() {
        let id = format!("c2sp{i}");
        put(&mut c, "u", SPACE, &id, &body, 20_000)
            .await
            .expect("put");
        let at = chunk_offset(&gw, &p, &id, 0).await - back;
        flip(&gw, &p, &id, at).await;
        expect_code(
            get(&mut c, "u", SPACE, &id, None).await,
            Code::DataLoss,
            &format!("GetObject, bit flipped at {at}"),
        );
        expect_code(
            get(&mut c, "u", SPACE, &id, Some((0, Some(1)))).await,
            Code::DataLoss,
            &format!("ranged GetObject, bit flipped at {at}"),
        );
    }
    // A truncated object.
    put(&mut c, "u", SPACE, "short", &body, 20_000)
        .await
        .expect("put");
    let bytes = gw.stored_object(SPACE, &p, "short").await.expect("stored");
    gw.overwrite_stored_object(SPACE, &p, "short", &bytes[..50])
        .await;
    expect_code(
        head(&mut c, "u", SPACE, "short").await,
        Code::DataLoss,
        "truncated file",
    );
    // Per item in a batch.
    put_item(&mut c, "u", SPACE, "item", b"comment")
        .await
        .expect("put item");
    flip(&gw, &p, "item", 40).await;
    let r = get_items(&mut c, "u", SPACE, &["item"])
        .await
        .expect("GetItems");
    assert!(
        matches!(&r[0].result, Some(pb::item_result::Result::Error(e)) if e.code == Code::DataLoss as i32),
        "{r:?}"
    );
}

/// Metadata the format cannot hold is refused naming the field at fault:
/// a content type that alone exceeds 8 KiB names `content_type`; many
/// attributes name `attributes`. Nothing is stored, no key is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_metadata_names_its_field() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let long = "x".repeat(20_000);
    let many: std::collections::HashMap<String, String> = (0..200)
        .map(|i| (format!("attribute-{i}"), "v".repeat(40)))
        .collect();
    for (content_type, attributes, field) in [
        (long.as_str(), Default::default(), "content_type"),
        ("text/plain", many, "attributes"),
    ] {
        let s = c
            .put_item(pb::PutItemRequest {
                user_id: "newcomer".into(),
                space: SPACE.into(),
                item_id: "x".into(),
                content: bytes::Bytes::from_static(b"d"),
                content_type: content_type.into(),
                attributes,
                ..Default::default()
            })
            .await
            .expect_err("oversize metadata");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert_eq!(violation_fields(&s), [field], "{s:?}");
    }
    gw.assert_nothing_stored("after oversize metadata").await;
    let status = crate::support::gateway::key_status(&gw, "newcomer").await;
    assert!(status.versions.is_empty(), "no key made: {status:?}");
}
