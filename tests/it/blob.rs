//! One blob-store test suite, run against every backend.

use std::sync::Arc;

use futures_util::StreamExt;
use sealgate::blob::fs::FsBlobStore;
use sealgate::blob::{BlobError, BlobKey, BlobStore, SlotRewrite, WriteMode};

fn key(owner: &str, name: &str) -> BlobKey {
    BlobKey {
        space: "moments".into(),
        owner: owner.into(),
        name: name.into(),
    }
}

/// The suite: every backend must pass all of it.
async fn suite(store: Arc<dyn BlobStore>) {
    // Nothing is visible before commit, and an abort leaves nothing.
    let mut w = store
        .create(&key("u1", "a"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(b"hello ").await.unwrap();
    w.write(b"world").await.unwrap();
    assert!(matches!(
        store.open(&key("u1", "a")).await,
        Err(BlobError::NotFound)
    ));
    assert!(store
        .list("moments", "u1", None, 10)
        .await
        .unwrap()
        .is_empty());
    w.commit().await.unwrap();
    let mut r = store.open(&key("u1", "a")).await.unwrap();
    assert_eq!(r.len(), 11);
    assert_eq!(&r.read(6..11).await.unwrap()[..], b"world");
    assert!(r.read(6..12).await.is_err(), "reads past the end fail");
    let mut s = r.stream(2..9).await.unwrap();
    let mut streamed = Vec::new();
    while let Some(piece) = s.next().await {
        streamed.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(streamed, b"llo wor");

    let mut w = store
        .create(&key("u1", "b"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(b"partial").await.unwrap();
    w.abort().await.unwrap();
    let w = {
        let mut w = store
            .create(&key("u1", "c"), WriteMode::Replace)
            .await
            .unwrap();
        w.write(b"dropped").await.unwrap();
        w
    };
    drop(w);
    assert!(matches!(
        store.open(&key("u1", "b")).await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        store.open(&key("u1", "c")).await,
        Err(BlobError::NotFound)
    ));

    // A reader keeps its version when the object is replaced, or fails
    // retryably; it never mixes versions.
    let mut old = store.open(&key("u1", "a")).await.unwrap();
    let mut w = store
        .create(&key("u1", "a"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(b"replaced").await.unwrap();
    w.commit().await.unwrap();
    match old.read(0..5).await {
        Ok(bytes) => assert_eq!(
            &bytes[..],
            b"hello",
            "an open reader never sees the new version"
        ),
        Err(e) => assert!(matches!(e, BlobError::Unavailable(_)), "{e:?}"),
    }
    let mut new = store.open(&key("u1", "a")).await.unwrap();
    assert_eq!(&new.read(0..8).await.unwrap()[..], b"replaced");

    // Listing: ascending, paged by `after`, per owner.
    for name in ["d", "b2", "e"] {
        let mut w = store
            .create(&key("u1", name), WriteMode::Replace)
            .await
            .unwrap();
        w.write(name.as_bytes()).await.unwrap();
        w.commit().await.unwrap();
    }
    let mut w = store
        .create(&key("u2", "z"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(b"other owner").await.unwrap();
    w.commit().await.unwrap();
    let names = |v: Vec<sealgate::blob::BlobEntry>| {
        v.into_iter().map(|e| (e.name, e.len)).collect::<Vec<_>>()
    };
    let page = names(store.list("moments", "u1", None, 2).await.unwrap());
    assert_eq!(page, [("a".to_string(), 8), ("b2".to_string(), 2)]);
    let page = names(store.list("moments", "u1", Some("b2"), 10).await.unwrap());
    assert_eq!(page, [("d".to_string(), 1), ("e".to_string(), 1)]);
    assert!(store
        .list("channels", "u1", None, 10)
        .await
        .unwrap()
        .is_empty());

    // Delete: true once, then false.
    assert!(store.delete(&key("u1", "d")).await.unwrap());
    assert!(!store.delete(&key("u1", "d")).await.unwrap());
    assert!(matches!(
        store.open(&key("u1", "d")).await,
        Err(BlobError::NotFound)
    ));

    // Whole-object readers: small reads from the front, then a stream of
    // the rest continuing right there, or from anywhere else.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let mut w = store
        .create(&key("u1", "whole"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(&body).await.unwrap();
    w.commit().await.unwrap();
    let collect = |mut s: sealgate::blob::ByteStream| async move {
        let mut out = Vec::new();
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    };
    let mut r = store.open_whole(&key("u1", "whole")).await.unwrap();
    assert_eq!(r.len(), body.len() as u64);
    assert_eq!(&r.read(0..10).await.unwrap()[..], &body[..10]);
    assert_eq!(&r.read(0..100).await.unwrap()[..], &body[..100]);
    let rest = collect(r.stream(100..body.len() as u64).await.unwrap()).await;
    assert!(
        rest == body[100..],
        "stream continues after the header reads"
    );
    let mut r = store.open_whole(&key("u1", "whole")).await.unwrap();
    assert_eq!(&r.read(0..50).await.unwrap()[..], &body[..50]);
    let middle = collect(r.stream(200_000..250_000).await.unwrap()).await;
    assert!(
        middle == body[200_000..250_000],
        "a stream elsewhere is fetched on its own"
    );
    assert_eq!(
        &r.read(299_990..300_000).await.unwrap()[..],
        &body[299_990..]
    );
    assert!(matches!(
        store.open_whole(&key("u1", "nope")).await,
        Err(BlobError::NotFound)
    ));

    // A rewrite that keeps a creation time (a reseal): streamed (3 MiB) or
    // not (100 bytes), readers see that time, to the millisecond.
    let kept = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_600_000_000_123);
    for (name, len) in [("kept-big", 3 << 20), ("kept-small", 100usize)] {
        let mut w = store
            .create_exact_as_of(&key("u1", name), WriteMode::Replace, len as u64, kept)
            .await
            .unwrap();
        w.write(&vec![7u8; len]).await.unwrap();
        w.commit().await.unwrap();
        let r = store.open(&key("u1", name)).await.unwrap();
        assert_eq!(r.created(), Some(kept), "{name}");
        assert!(store.delete(&key("u1", name)).await.unwrap());
    }

    // Writers of a declared length: exact is stored, anything else is not.
    // 3 MiB is inside the S3 store's streamed-PutObject range.
    let sized: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    let len = sized.len() as u64;
    let mut w = store
        .create_exact(&key("u1", "exact"), WriteMode::CreateOnly, len)
        .await
        .unwrap();
    for piece in sized.chunks(64 * 1024) {
        w.write(piece).await.unwrap();
    }
    w.commit().await.unwrap();
    let mut r = store.open(&key("u1", "exact")).await.unwrap();
    assert_eq!(r.len(), len);
    assert!(r.read(len - 70_000..len).await.unwrap() == sized[sized.len() - 70_000..]);
    let mut w = store
        .create_exact(&key("u1", "exact"), WriteMode::CreateOnly, len)
        .await
        .unwrap();
    w.write(&sized).await.unwrap();
    let got = w.commit().await;
    assert!(matches!(got, Err(BlobError::AlreadyExists)), "{got:?}");
    let mut w = store
        .create_exact(&key("u1", "fewer"), WriteMode::Replace, len)
        .await
        .unwrap();
    w.write(&sized[..2 * 1024 * 1024]).await.unwrap();
    assert!(w.commit().await.is_err(), "fewer bytes than declared");
    let mut w = store
        .create_exact(&key("u1", "more"), WriteMode::Replace, len)
        .await
        .unwrap();
    w.write(&sized).await.unwrap();
    assert!(w.write(b"x").await.is_err(), "more bytes than declared");
    w.abort().await.unwrap();
    let mut w = store
        .create_exact(&key("u1", "dropped-exact"), WriteMode::Replace, len)
        .await
        .unwrap();
    w.write(&sized[..2 * 1024 * 1024]).await.unwrap();
    drop(w);
    for name in ["fewer", "more", "dropped-exact"] {
        assert!(
            matches!(store.open(&key("u1", name)).await, Err(BlobError::NotFound)),
            "{name}"
        );
    }
    assert!(store.delete(&key("u1", "exact")).await.unwrap());

    // Create-only writes never replace.
    let mut w = store
        .create(&key("u1", "once"), WriteMode::CreateOnly)
        .await
        .unwrap();
    w.write(b"first").await.unwrap();
    w.commit().await.unwrap();
    let mut w = store
        .create(&key("u1", "once"), WriteMode::CreateOnly)
        .await
        .unwrap();
    w.write(b"second").await.unwrap();
    assert!(matches!(w.commit().await, Err(BlobError::AlreadyExists)));
    let mut r = store.open(&key("u1", "once")).await.unwrap();
    assert_eq!(&r.read(0..5).await.unwrap()[..], b"first");

    // Key-slot rewrites: conditional on the slot read; later readers see
    // the new slot, the rest is unchanged.
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = store
        .create(&key("u1", "patched"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(&body).await.unwrap();
    w.commit().await.unwrap();
    let slot: [u8; 64] = body[8..72].try_into().unwrap();
    assert_eq!(
        store
            .rewrite_key_slot(&key("u1", "patched"), &[0xCD; 64], &[0xAB; 64])
            .await
            .unwrap(),
        SlotRewrite::Changed,
        "a slot that is not the one expected is left alone"
    );
    assert_eq!(
        store
            .rewrite_key_slot(&key("u1", "patched"), &slot, &[0xAB; 64])
            .await
            .unwrap(),
        SlotRewrite::Rewritten
    );
    let mut r = store.open(&key("u1", "patched")).await.unwrap();
    assert_eq!(r.len(), body.len() as u64);
    let all = r.read(0..body.len() as u64).await.unwrap();
    assert_eq!(&all[..8], &body[..8]);
    assert_eq!(&all[8..72], &[0xAB; 64][..]);
    assert_eq!(&all[72..], &body[72..]);
    let mut s = r.stream(0..100).await.unwrap();
    let mut streamed = Vec::new();
    while let Some(piece) = s.next().await {
        streamed.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(&streamed[..], &all[..100]);
    let mut whole = store.open_whole(&key("u1", "patched")).await.unwrap();
    assert_eq!(&whole.read(0..80).await.unwrap()[..], &all[..80]);
    let mut rest = Vec::new();
    let mut s = whole.stream(80..all.len() as u64).await.unwrap();
    while let Some(piece) = s.next().await {
        rest.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(&rest[..], &all[80..], "whole readers see the rewrite too");
    // A second rewrite expects the first's slot.
    assert_eq!(
        store
            .rewrite_key_slot(&key("u1", "patched"), &slot, &[0x11; 64])
            .await
            .unwrap(),
        SlotRewrite::Changed
    );
    assert_eq!(
        store
            .rewrite_key_slot(&key("u1", "patched"), &[0xAB; 64], &[0x11; 64])
            .await
            .unwrap(),
        SlotRewrite::Rewritten
    );
    let mut r = store.open(&key("u1", "patched")).await.unwrap();
    assert_eq!(&r.read(0..80).await.unwrap()[8..72], &[0x11; 64][..]);
    let mut w = store
        .create(&key("u1", "short"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(&[0; 40]).await.unwrap();
    w.commit().await.unwrap();
    assert!(
        store
            .rewrite_key_slot(&key("u1", "short"), &[0; 64], &[1; 64])
            .await
            .is_err(),
        "an object too short for a key slot is refused"
    );
    assert!(store.delete(&key("u1", "short")).await.unwrap());
    assert!(matches!(
        store
            .rewrite_key_slot(&key("u1", "nope"), &[0; 64], &[1; 64])
            .await,
        Err(BlobError::NotFound)
    ));

    // Batched deletion.
    let n = store
        .delete_many(&[
            key("u1", "once"),
            key("u1", "patched"),
            key("u1", "never"),
            key("u1", "whole"),
        ])
        .await
        .unwrap();
    assert_eq!(n, 3);

    // Names that could escape the store are refused, never resolved.
    for bad in ["..", ".", "../x", "a/b", "", ".tmp"] {
        assert!(
            store
                .create(&key("u1", bad), WriteMode::Replace)
                .await
                .is_err(),
            "{bad:?}"
        );
        assert!(store.open(&key(bad, "a")).await.is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn fs_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().join("objects")).await.unwrap();
    suite(Arc::new(store)).await;
    // Temporary files never outlive their writer.
    assert_eq!(
        std::fs::read_dir(dir.path().join("objects/.tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn fs_store_removes_crash_leftovers_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("objects");
    std::fs::create_dir_all(root.join(".tmp")).unwrap();
    std::fs::write(root.join(".tmp/deadbeef.part"), b"half an object").unwrap();
    FsBlobStore::open(&root).await.unwrap();
    assert_eq!(std::fs::read_dir(root.join(".tmp")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_passes_the_suite() {
    let (store, bucket) = crate::support::s3env::fresh_store(false).await;
    suite(Arc::new(store)).await;
    let endpoint = crate::support::s3env::shared().endpoint();
    assert_eq!(
        crate::support::s3env::incomplete_uploads(&endpoint, &bucket).await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_versioned_store_passes_the_suite_and_deletes_every_version() {
    let (store, bucket) = crate::support::s3env::fresh_store(true).await;
    let store: Arc<dyn BlobStore> = Arc::new(store);
    suite(store.clone()).await;
    for body in [&b"v1"[..], b"v2", b"v3"] {
        let mut w = store
            .create(&key("u9", "multi"), WriteMode::Replace)
            .await
            .unwrap();
        w.write(body).await.unwrap();
        w.commit().await.unwrap();
    }
    let endpoint = crate::support::s3env::shared().endpoint();
    let c = crate::support::s3env::client(&endpoint, crate::support::s3env::REGION);
    let versions = |c: aws_sdk_s3::Client, bucket: String| async move {
        c.list_object_versions()
            .bucket(bucket)
            .prefix("moments/u9/multi")
            .send()
            .await
            .unwrap()
            .versions()
            .len()
    };
    assert_eq!(versions(c.clone(), bucket.clone()).await, 3);
    assert!(store.delete(&key("u9", "multi")).await.unwrap());
    assert_eq!(versions(c, bucket).await, 0, "every stored version is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_multipart_uploads_complete_or_leave_nothing() {
    use sealgate::blob::s3::PART_SIZE;
    let (store, bucket) = crate::support::s3env::fresh_store(false).await;
    let endpoint = crate::support::s3env::shared().endpoint();
    let big: Vec<u8> = (0..(2 * PART_SIZE + 12345))
        .map(|i| (i % 253) as u8)
        .collect();

    // Multipart, written in uneven pieces, create-only.
    let mut w = store
        .create(&key("u1", "big"), WriteMode::CreateOnly)
        .await
        .unwrap();
    for piece in big.chunks(3_000_001) {
        w.write(piece).await.unwrap();
    }
    w.commit().await.unwrap();
    let mut r = store.open(&key("u1", "big")).await.unwrap();
    assert_eq!(r.len(), big.len() as u64);
    let tail = r
        .read(big.len() as u64 - 100_000..big.len() as u64)
        .await
        .unwrap();
    assert_eq!(&tail[..], &big[big.len() - 100_000..]);

    // Create-only applies to multipart completion too.
    let mut w = store
        .create(&key("u1", "big"), WriteMode::CreateOnly)
        .await
        .unwrap();
    w.write(&big).await.unwrap();
    assert!(matches!(w.commit().await, Err(BlobError::AlreadyExists)));
    assert_eq!(
        crate::support::s3env::incomplete_uploads(&endpoint, &bucket).await,
        0
    );

    // Aborted and dropped multipart writers leave no upload behind.
    let mut w = store
        .create(&key("u1", "aborted"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(&big[..PART_SIZE + 1]).await.unwrap();
    assert_eq!(
        crate::support::s3env::incomplete_uploads(&endpoint, &bucket).await,
        1
    );
    w.abort().await.unwrap();
    assert_eq!(
        crate::support::s3env::incomplete_uploads(&endpoint, &bucket).await,
        0
    );
    let mut w = store
        .create(&key("u1", "dropped"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(&big[..PART_SIZE + 1]).await.unwrap();
    drop(w);
    crate::support::eventually(
        "the dropped upload is aborted",
        std::time::Duration::from_secs(30),
        || async { crate::support::s3env::incomplete_uploads(&endpoint, &bucket).await == 0 },
    )
    .await;
    assert!(matches!(
        store.open(&key("u1", "aborted")).await,
        Err(BlobError::NotFound)
    ));
    assert!(matches!(
        store.open(&key("u1", "dropped")).await,
        Err(BlobError::NotFound)
    ));
}

/// The suite on a second S3 implementation, s3s-fs, which has no versioning
/// API: the store probes that at startup and deletes plainly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3s_fs_store_passes_the_suite() {
    let endpoint = crate::support::s3s_env::start().await;
    let bucket = crate::support::s3env::bucket_name();
    crate::support::s3env::create_bucket(&endpoint, &bucket, crate::support::s3env::REGION, false)
        .await;
    // The store answers 501 to the operation version-aware deletes need.
    let c = crate::support::s3env::client(&endpoint, crate::support::s3env::REGION);
    let err = c
        .list_object_versions()
        .bucket(&bucket)
        .send()
        .await
        .expect_err("s3s-fs has no ListObjectVersions");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(501));
    let store = sealgate::blob::s3::S3BlobStore::connect(&crate::support::s3env::settings(
        &endpoint, &bucket,
    ))
    .await
    .expect("connect to s3s-fs");
    suite(Arc::new(store)).await;
    assert_eq!(
        crate::support::s3s_env::incomplete_uploads(&endpoint),
        Some(0)
    );
}
