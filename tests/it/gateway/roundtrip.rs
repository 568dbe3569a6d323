//! Round trips through the public API: objects of every interesting size,
//! a 100 MiB streamed object, HeadObject, ranged reads, listing, deletion,
//! items and generated ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use futures_util::StreamExt;
use sealgate::api::pb;
use tonic::Code;

use super::*;

backend_tests!(
    sizes_round_trip_with_info_and_head,
    metadata_round_trips,
    hundred_mib_streamed_round_trip,
    ranged_reads,
    list_objects_pages,
    delete_object,
    items_put_and_batch_get,
    generated_ids,
);
pg_tests!(
    sizes_round_trip_with_info_and_head,
    delete_object,
    items_put_and_batch_get,
);

const SPACE: &str = "moments";
const CHUNK: u64 = 16 * 1024;
/// Plaintext bytes per GetObject message (and per range piece) on the server.
const READ_PIECE: u64 = 64 * CHUNK;

fn attributes() -> HashMap<String, String> {
    [("origin".to_string(), "test".to_string())].into()
}

#[track_caller]
fn check_info(info: &pb::ObjectInfo, space: &str, id: &str, size: u64) {
    assert_eq!(info.space, space, "space of {id}");
    assert_eq!(info.object_id, id, "object_id of {id}");
    assert_eq!(info.size, size, "size of {id}");
    assert_eq!(info.content_type, "image/jpeg", "content_type of {id}");
    assert_eq!(info.attributes, attributes(), "attributes of {id}");
}

async fn sizes_round_trip_with_info_and_head() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let sizes: [usize; 6] = [0, 1, 16383, 16384, 16385, 5 << 20];
    // Upload message sizes deliberately not aligned to chunks, aligned, and large.
    let pieces = [7_000usize, 16_384, 1 << 20];
    for (i, &size) in sizes.iter().enumerate() {
        let id = format!("obj-{size}");
        let body = data(size, i as u64 + 1);
        let piece = pieces[i % pieces.len()];
        let info = put(&mut c, "alice", SPACE, &id, &body, piece)
            .await
            .unwrap_or_else(|e| panic!("put {size} bytes: {e:?}"));
        check_info(&info, SPACE, &id, size as u64);

        let (got_info, got) = get(&mut c, "alice", SPACE, &id, None)
            .await
            .unwrap_or_else(|e| panic!("get {size} bytes: {e:?}"));
        check_info(&got_info, SPACE, &id, size as u64);
        assert!(got == body, "content of the {size}-byte object differs");

        let head_info = head(&mut c, "alice", SPACE, &id).await.expect("head");
        assert_eq!(head_info, got_info, "HeadObject of {id}");
    }
    // Every size is still readable once all are stored (no object clobbered
    // another), and the listing reports plaintext sizes.
    let listed = list_all(&mut c, "alice", SPACE).await.expect("list");
    let mut expected: Vec<(String, u64)> = sizes
        .iter()
        .map(|&s| (format!("obj-{s}"), s as u64))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
}

async fn metadata_round_trips() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let attributes: HashMap<String, String> = [
        ("caption".to_string(), "Été à Pékin — 北京".to_string()),
        ("empty".to_string(), String::new()),
        ("w".to_string(), "1920".to_string()),
    ]
    .into();
    let header = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: "meta-user".into(),
            space: "channels".into(),
            object_id: "clip.mp4".into(),
            content_type: "video/mp4; codecs=\"avc1.42E01E\"".into(),
            attributes: attributes.clone(),
            ..Default::default()
        })),
    };
    let msgs = vec![header, data_msg(data(100, 9)), finish_msg(None)];
    let info = c
        .put_object(futures_util::stream::iter(msgs))
        .await
        .expect("put")
        .into_inner()
        .info
        .expect("info");
    let expected = pb::ObjectInfo {
        space: "channels".into(),
        object_id: "clip.mp4".into(),
        size: 100,
        content_type: "video/mp4; codecs=\"avc1.42E01E\"".into(),
        attributes,
        // Put, head and get report the same etag and creation time.
        etag: info.etag.clone(),
        create_time: info.create_time,
        suite: "aes-256-gcm".into(),
    };
    assert_eq!(info.etag.len(), 32, "{info:?}");
    let created = std::time::SystemTime::try_from(info.create_time.expect("create_time"))
        .expect("a valid time");
    let age = std::time::SystemTime::now()
        .duration_since(created)
        .expect("created in the past");
    assert!(age < std::time::Duration::from_secs(60), "{age:?}");
    assert_eq!(info, expected);
    assert_eq!(
        head(&mut c, "meta-user", "channels", "clip.mp4")
            .await
            .expect("head"),
        expected
    );
    let (got, body) = get(&mut c, "meta-user", "channels", "clip.mp4", None)
        .await
        .expect("get");
    assert_eq!(got, expected);
    assert_eq!(body, data(100, 9));
}

async fn hundred_mib_streamed_round_trip() {
    const PIECE: usize = 1 << 20;
    const PIECES: usize = 100;
    const SIZE: u64 = (PIECE * PIECES) as u64;
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;

    // Generated piece by piece as tonic pulls the stream; hashed on the way.
    let sent = Arc::new(Mutex::new(digest::Context::new(&digest::SHA256)));
    let hasher = sent.clone();
    let body = futures_util::stream::iter(0..PIECES).map(move |i| {
        let piece = data(PIECE, 10_000 + i as u64);
        hasher.lock().unwrap().update(&piece);
        data_msg(piece)
    });
    let header = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: "big".into(),
            space: SPACE.into(),
            object_id: "huge.bin".into(),
            content_type: "image/jpeg".into(),
            attributes: attributes(),
            ..Default::default()
        })),
    };
    let info = c
        .put_object(
            futures_util::stream::iter([header])
                .chain(body)
                .chain(futures_util::stream::iter([finish_msg(None)])),
        )
        .await
        .expect("put 100 MiB")
        .into_inner()
        .info
        .expect("info");
    check_info(&info, SPACE, "huge.bin", SIZE);
    let sent = sent.lock().unwrap().clone().finish();

    let mut stream = c
        .get_object(pb::GetObjectRequest {
            object: Some(obj("big", SPACE, "huge.bin")),
            range: None,
        })
        .await
        .expect("get")
        .into_inner();
    match stream
        .message()
        .await
        .expect("first message")
        .and_then(|m| m.part)
    {
        Some(pb::get_object_response::Part::Info(i)) => check_info(&i, SPACE, "huge.bin", SIZE),
        other => panic!("first message must be the info, got {other:?}"),
    }
    let mut received = digest::Context::new(&digest::SHA256);
    let mut len = 0u64;
    while let Some(m) = stream.message().await.expect("download") {
        match m.part {
            Some(pb::get_object_response::Part::Data(d)) => {
                len += d.len() as u64;
                received.update(&d);
            }
            other => panic!("unexpected message {other:?}"),
        }
    }
    assert_eq!(len, SIZE);
    assert_eq!(
        received.finish().as_ref(),
        sent.as_ref(),
        "SHA-256 of 100 MiB"
    );

    assert_eq!(
        list_all(&mut c, "big", SPACE).await.expect("list"),
        vec![("huge.bin".to_string(), SIZE)]
    );
}

async fn ranged_reads() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    // A chunk-aligned object (its final chunk is empty) and an unaligned one.
    for (id, size) in [
        ("aligned", 5u64 << 20),
        ("unaligned", 2 * READ_PIECE + 40_000),
    ] {
        let body = data(size as usize, size);
        put(&mut c, "ranger", SPACE, id, &body, 1 << 20)
            .await
            .expect("put");
        let n = size;
        let ok: Vec<(&str, u64, Option<u64>, std::ops::Range<u64>)> = vec![
            ("first byte", 0, Some(1), 0..1),
            ("last byte", n - 1, Some(n), n - 1..n),
            ("last byte, open end", n - 1, None, n - 1..n),
            (
                "spanning a 16 KiB boundary",
                CHUNK - 4,
                Some(CHUNK + 6),
                CHUNK - 4..CHUNK + 6,
            ),
            (
                "one byte either side of a boundary",
                CHUNK - 1,
                Some(CHUNK + 1),
                CHUNK - 1..CHUNK + 1,
            ),
            (
                "exactly the second chunk",
                CHUNK,
                Some(2 * CHUNK),
                CHUNK..2 * CHUNK,
            ),
            (
                "end past the object clamps",
                n - 10,
                Some(n + 1000),
                n - 10..n,
            ),
            (
                "end far past the object clamps",
                100,
                Some(u64::MAX),
                100..n,
            ),
            ("open end", n / 2 + 3, None, n / 2 + 3..n),
            ("whole object as a range", 0, None, 0..n),
            (
                "spanning several read pieces",
                READ_PIECE - 5,
                Some(2 * READ_PIECE + 5),
                READ_PIECE - 5..2 * READ_PIECE + 5,
            ),
        ];
        for (what, start, end, expect) in ok {
            let (info, got) = get(&mut c, "ranger", SPACE, id, Some((start, end)))
                .await
                .unwrap_or_else(|e| panic!("{id}: {what}: {e:?}"));
            // The info describes the whole object, whatever the range.
            check_info(&info, SPACE, id, n);
            assert!(
                got == body[expect.start as usize..expect.end as usize],
                "{id}: {what}: got {} bytes, expected bytes {expect:?}",
                got.len()
            );
        }
        for (what, start, end) in [
            ("start at the end", n, None),
            ("start at the end, bounded", n, Some(n + 1)),
            ("start past the end", n + 100, None),
        ] {
            expect_code(
                get(&mut c, "ranger", SPACE, id, Some((start, end))).await,
                Code::OutOfRange,
                &format!("{id}: {what}"),
            );
        }
        for (what, start, end) in [
            ("empty range", 5, Some(5)),
            ("empty range at 0", 0, Some(0)),
            ("end before start", 10, Some(3)),
        ] {
            expect_code(
                get(&mut c, "ranger", SPACE, id, Some((start, end))).await,
                Code::InvalidArgument,
                &format!("{id}: {what}"),
            );
        }
    }
    // An empty object has no byte to start at.
    put(&mut c, "ranger", SPACE, "empty", b"", 1)
        .await
        .expect("put empty");
    expect_code(
        get(&mut c, "ranger", SPACE, "empty", Some((0, None))).await,
        Code::OutOfRange,
        "range of an empty object",
    );
    let (info, got) = get(&mut c, "ranger", SPACE, "empty", None)
        .await
        .expect("get empty");
    assert_eq!(info.size, 0);
    assert!(got.is_empty());
}

async fn list_objects_pages() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    // Stored out of order, with different sizes.
    let objects = [
        ("e-obj", 5usize),
        ("a-obj", 0),
        ("c-obj", 16_384),
        ("b-obj", 1),
        ("d-obj", 20_000),
    ];
    for (i, (id, size)) in objects.iter().enumerate() {
        put(&mut c, "lister", SPACE, id, &data(*size, i as u64), 4096)
            .await
            .expect("put");
    }
    // Noise that must not show up: another user, another space.
    put(&mut c, "other", SPACE, "a-obj", b"x", 1)
        .await
        .expect("put other user");
    put_item(&mut c, "lister", "channels", "note", b"hi")
        .await
        .expect("put other space");

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_page(&mut c, "lister", SPACE, 2, &token)
            .await
            .expect("list page");
        let done = page.next_page_token.is_empty();
        token = page.next_page_token;
        pages.push(
            page.objects
                .into_iter()
                .map(|o| (o.object_id, o.size))
                .collect::<Vec<_>>(),
        );
        if done {
            break;
        }
        assert!(pages.len() < 10, "paging does not terminate");
    }
    let p = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(s, n)| (s.to_string(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pages,
        vec![
            p(&[("a-obj", 0), ("b-obj", 1)]),
            p(&[("c-obj", 16_384), ("d-obj", 20_000)]),
            p(&[("e-obj", 5)]),
        ]
    );

    // page_size 0 means 100: everything in one page, no token.
    let all = list_page(&mut c, "lister", SPACE, 0, "")
        .await
        .expect("list");
    assert_eq!(all.objects.len(), 5);
    assert!(all.next_page_token.is_empty());
    // A page size of exactly the count ends without a token too.
    let exact = list_page(&mut c, "lister", SPACE, 5, "")
        .await
        .expect("list");
    assert_eq!(exact.objects.len(), 5);
    assert!(exact.next_page_token.is_empty());
    // A user with no objects lists nothing, successfully.
    let none = list_page(&mut c, "nobody", SPACE, 2, "")
        .await
        .expect("list");
    assert!(none.objects.is_empty() && none.next_page_token.is_empty());
    assert_eq!(
        list_all(&mut c, "lister", "channels").await.expect("list"),
        vec![("note".to_string(), 2)]
    );
}

async fn delete_object() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put(&mut c, "deleter", SPACE, "gone", &data(40_000, 3), 10_000)
        .await
        .expect("put");
    put(&mut c, "deleter", SPACE, "kept", &data(10, 4), 10)
        .await
        .expect("put");
    assert!(delete(&mut c, "deleter", SPACE, "gone")
        .await
        .expect("delete"));
    expect_code(
        get(&mut c, "deleter", SPACE, "gone", None).await,
        Code::NotFound,
        "get after delete",
    );
    expect_code(
        head(&mut c, "deleter", SPACE, "gone").await,
        Code::NotFound,
        "head after delete",
    );
    assert!(
        !delete(&mut c, "deleter", SPACE, "gone")
            .await
            .expect("second delete"),
        "a second delete must report deleted=false"
    );
    assert!(!delete(&mut c, "deleter", SPACE, "never-existed")
        .await
        .expect("delete of a missing object"),);
    assert_eq!(
        list_all(&mut c, "deleter", SPACE).await.expect("list"),
        vec![("kept".to_string(), 10)]
    );
    let (_, kept) = get(&mut c, "deleter", SPACE, "kept", None)
        .await
        .expect("other object survives");
    assert_eq!(kept, data(10, 4));
}

async fn items_put_and_batch_get() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let space = "channels";
    let big = data(64 * 1024, 7); // exactly the default item limit
    put_item(&mut c, "commenter", space, "c1", b"first comment")
        .await
        .expect("put c1");
    let info = put_item(&mut c, "commenter", space, "c2", &big)
        .await
        .expect("put an item of exactly the limit");
    assert_eq!(info.size, big.len() as u64);
    put_item(&mut c, "commenter", space, "c3", b"")
        .await
        .expect("put empty item");
    // An object too large to be fetched as an item.
    put(&mut c, "commenter", space, "movie", &data(70_000, 8), 8192)
        .await
        .expect("put object");

    let ids = [
        "c1",
        "missing",
        "c2",
        "c3",
        "movie",
        "../bad",
        "missing-2",
        "c1",
    ];
    let results = get_items(&mut c, "commenter", space, &ids)
        .await
        .expect("GetItems succeeds as a batch");
    assert_eq!(results.len(), ids.len());
    for (r, id) in results.iter().zip(ids) {
        assert_eq!(r.item_id, id, "results are in request order");
    }
    let item = |i: usize| match &results[i].result {
        Some(pb::item_result::Result::Item(item)) => item.clone(),
        other => panic!("result {i} ({}) should be an item: {other:?}", ids[i]),
    };
    let error = |i: usize| match &results[i].result {
        Some(pb::item_result::Result::Error(e)) => e.clone(),
        other => panic!("result {i} ({}) should be an error: {other:?}", ids[i]),
    };
    let expect_item = |i: usize, content: &[u8]| {
        let it = item(i);
        assert_eq!(&it.content[..], content, "content of {}", ids[i]);
        let info = it.info.expect("item info");
        assert_eq!(info.object_id, ids[i]);
        assert_eq!(info.space, space);
        assert_eq!(info.size, content.len() as u64);
        assert_eq!(info.content_type, "text/plain");
        assert_eq!(
            info.attributes,
            HashMap::from([("kind".to_string(), "comment".to_string())])
        );
    };
    expect_item(0, b"first comment");
    expect_item(2, &big);
    expect_item(3, b"");
    expect_item(7, b"first comment");
    assert_eq!(error(1).code, Code::NotFound as i32);
    assert_eq!(error(6).code, Code::NotFound as i32);
    assert_eq!(
        error(4).code,
        Code::ResourceExhausted as i32,
        "object larger than an item"
    );
    let bad = error(5);
    assert_eq!(bad.code, Code::InvalidArgument as i32);
    assert!(bad.message.contains("object_id"), "{bad:?}");

    // Items are objects: GetObject reads them too.
    let (_, c1) = get(&mut c, "commenter", space, "c1", None)
        .await
        .expect("get item as object");
    assert_eq!(c1, b"first comment");

    // At most 100 ids per call.
    let hundred: Vec<String> = (0..100).map(|i| format!("id-{i}")).collect();
    let hundred_refs: Vec<&str> = hundred.iter().map(String::as_str).collect();
    let r = get_items(&mut c, "commenter", space, &hundred_refs)
        .await
        .expect("100 ids are allowed");
    assert_eq!(r.len(), 100);
    assert!(r.iter().zip(&hundred).all(|(x, id)| &x.item_id == id
        && matches!(&x.result, Some(pb::item_result::Result::Error(e)) if e.code == Code::NotFound as i32)));
    let many: Vec<String> = (0..101).map(|i| format!("id-{i}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    expect_code(
        get_items(&mut c, "commenter", space, &many_refs).await,
        Code::InvalidArgument,
        "GetItems with 101 ids",
    );
}

fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

async fn generated_ids() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let body = data(20_000, 11);
    let a = put(&mut c, "gen", SPACE, "", &body, 5000)
        .await
        .expect("put");
    let b = put(&mut c, "gen", SPACE, "", &body, 5000)
        .await
        .expect("put");
    for info in [&a, &b] {
        assert!(is_generated_id(&info.object_id), "{:?}", info.object_id);
        check_info(info, SPACE, &info.object_id, body.len() as u64);
    }
    assert_ne!(a.object_id, b.object_id, "generated ids must differ");
    let (_, got) = get(&mut c, "gen", SPACE, &a.object_id, None)
        .await
        .expect("get by generated id");
    assert_eq!(got, body);

    let item = put_item(&mut c, "gen", "channels", "", b"generated item")
        .await
        .expect("put item");
    assert!(is_generated_id(&item.object_id), "{:?}", item.object_id);
    let r = get_items(&mut c, "gen", "channels", &[&item.object_id])
        .await
        .expect("get items");
    match &r[0].result {
        Some(pb::item_result::Result::Item(i)) => assert_eq!(&i.content[..], b"generated item"),
        other => panic!("{other:?}"),
    }
    let mut listed: Vec<String> = list_all(&mut c, "gen", SPACE)
        .await
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    listed.sort();
    let mut expected = vec![a.object_id.clone(), b.object_id.clone()];
    expected.sort();
    assert_eq!(listed, expected);
}
