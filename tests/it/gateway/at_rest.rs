//! Nothing a user sent is stored in the clear: neither content nor metadata
//! nor the user id appears in any file of the data directory, nor, on S3,
//! in any object of the bucket (its key, body or metadata).

use std::os::unix::fs::PermissionsExt;

use sealgate::api::pb;

use super::*;

backend_tests!(no_plaintext_or_user_id_at_rest,);

const MARKER: &str = "PLAINTEXT-MARKER-7f3a";
const USER: &str = "user-id-marker-9c2e";
const ERASED_USER: &str = "erased-user-marker-51d0";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Scans everything at rest (see [`TestGateway::all_stored_bytes`]): no
/// marker in any stored bytes or name. Returns the names scanned.
async fn scan(gw: &TestGateway) -> Vec<String> {
    let stored = gw.all_stored_bytes().await;
    assert!(!stored.is_empty());
    let mut names = Vec::new();
    for (name, bytes) in stored {
        for needle in [MARKER, USER, ERASED_USER] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{needle:?} found in {name}"
            );
            assert!(
                !name.contains(needle),
                "{needle:?} found in the name {name}"
            );
        }
        names.push(name);
    }
    names
}

async fn no_plaintext_or_user_id_at_rest() {
    let mut gw = TestGateway::start().await;
    let mut c = gw.content().await;

    // Content: the marker at the start, across a chunk boundary, and at the end.
    let mut body = MARKER.as_bytes().to_vec();
    body.extend(data(16_384 - body.len() - 7, 1));
    body.extend_from_slice(MARKER.as_bytes());
    body.extend(data(50_000, 2));
    body.extend_from_slice(MARKER.as_bytes().repeat(100).as_slice());
    let header = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: USER.into(),
            space: "moments".into(),
            object_id: "photo-1".into(),
            content_type: format!("image/jpeg; note={MARKER}"),
            attributes: [
                (format!("key-{MARKER}"), "v".to_string()),
                ("caption".to_string(), format!("value-{MARKER}")),
                ("owner".to_string(), USER.to_string()),
            ]
            .into(),
            ..Default::default()
        })),
    };
    let msgs = vec![header, data_msg(body.clone()), finish_msg(Some(&body))];
    c.put_object(futures_util::stream::iter(msgs))
        .await
        .expect("put object");
    put(
        &mut c,
        USER,
        "channels",
        "video-2",
        MARKER.repeat(5000).as_bytes(),
        9_999,
    )
    .await
    .expect("put second object");
    c.put_item(pb::PutItemRequest {
        user_id: USER.into(),
        space: "channels".into(),
        item_id: "comment-1".into(),
        content: format!("a comment with {MARKER} and {USER} in it")
            .into_bytes()
            .into(),
        content_type: format!("text/plain; {MARKER}"),
        attributes: [("by".to_string(), USER.to_string())].into(),
        ..Default::default()
    })
    .await
    .expect("put item");
    // Erasure records (tombstone, job, audit) must not hold the user id either.
    put(&mut c, ERASED_USER, "moments", "x", MARKER.as_bytes(), 5)
        .await
        .expect("put");
    gw.erasure()
        .await
        .erase_user(pb::EraseUserRequest {
            user_id: ERASED_USER.into(),
            after_seconds: 0,
        })
        .await
        .expect("erase");

    // Let the erasure's garbage collection finish so nothing changes while
    // the store is scanned.
    wait_gc_done(&gw, ERASED_USER).await;

    // The content really was stored, and reads back with the marker.
    let (info, got) = get(&mut c, USER, "moments", "photo-1", None)
        .await
        .expect("get");
    assert_eq!(got, body);
    assert!(info.content_type.contains(MARKER));
    let user_p = pseudonym(&gw, USER).await;
    let stored = gw
        .stored_object("moments", &user_p, "photo-1")
        .await
        .expect("stored object");
    assert!(stored.len() > body.len());
    let p = pseudonym(&gw, ERASED_USER).await;

    // While the server runs: the WAL holds the latest key-store writes.
    let names = scan(&gw).await;
    for f in ["keys.db", "keys.db-wal", "keyring"] {
        assert!(names.iter().any(|n| n == f), "{f} not scanned: {names:?}");
    }
    // The objects were scanned where the backend keeps them.
    let photo = match gw.backend {
        Backend::Fs => format!("objects/moments/{user_p}/photo-1"),
        Backend::S3 { .. } => format!("s3:moments/{user_p}/photo-1"),
    };
    assert!(names.contains(&photo), "{photo} not scanned: {names:?}");

    // The key store is scanned as stored (not compressed or encrypted as a
    // whole): the erased user's pseudonym, which identifies its rows, is
    // found in it.
    let db = std::fs::read(gw.data_dir.join("keys.db")).unwrap();
    let wal = std::fs::read(gw.data_dir.join("keys.db-wal")).unwrap();
    assert!(
        contains(&db, p.as_bytes()) || contains(&wal, p.as_bytes()),
        "the key store identifies users by pseudonym"
    );

    gw.stop().await;
    let names = scan(&gw).await;
    assert!(names.iter().any(|n| n == "keys.db"), "{names:?}");

    let mode = std::fs::metadata(gw.data_dir.join("keyring"))
        .expect("keyring")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "keyring mode {:o}", mode & 0o777);
}
