//! One blob-store test suite, run against every backend.

use std::sync::Arc;

use futures_util::StreamExt;
use sealgate::blob::fs::FsBlobStore;
use sealgate::blob::{BlobError, BlobKey, BlobStore, WriteMode};

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

    // A reader keeps its version when the object is replaced.
    let mut old = store.open(&key("u1", "a")).await.unwrap();
    let mut w = store
        .create(&key("u1", "a"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(b"replaced").await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(&old.read(0..5).await.unwrap()[..], b"hello");
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

    // Patches: later readers see the new bytes, the rest is unchanged.
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = store
        .create(&key("u1", "patched"), WriteMode::Replace)
        .await
        .unwrap();
    w.write(&body).await.unwrap();
    w.commit().await.unwrap();
    store
        .patch(&key("u1", "patched"), 8, &[0xAB; 64])
        .await
        .unwrap();
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
    assert!(
        store
            .patch(&key("u1", "patched"), 4090, &[0; 64])
            .await
            .is_err(),
        "patches stay near the start"
    );
    assert!(matches!(
        store.patch(&key("u1", "nope"), 8, &[0; 4]).await,
        Err(BlobError::NotFound)
    ));

    // Batched deletion.
    let n = store
        .delete_many(&[key("u1", "once"), key("u1", "patched"), key("u1", "never")])
        .await
        .unwrap();
    assert_eq!(n, 2);

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
