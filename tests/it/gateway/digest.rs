//! Object format version 2 through the API: which version a write takes
//! (FORMAT.md, "Sealing an object"), both versions read, ranged, listed
//! and rewrapped alike, and an export's SHA-256 taken from the digest a
//! version-2 object stores, so that a damaged digest fails the export.

use tonic::Code;

use super::export::{export, python_read, request, sha256_hex};
use super::rewrap::{rewrap_to_end, rotate_user};
use super::*;

backend_tests!(
    each_version_is_written_as_the_declared_size_says_and_reads_alike,
    an_export_takes_the_sha256_a_version_2_object_stores,
    object_version_1_writes_version_1_only_and_every_object_still_reads,
);

const USER: &str = "dora";
const SPACE: &str = "moments";
/// Length of a version-2 object's sealed digest (FORMAT.md).
const DIGEST: usize = 104;

/// PutObject of `body` in 64 KiB messages, declaring `declared` if given.
async fn put_sized(gw: &TestGateway, id: &str, declared: Option<u64>, body: &[u8]) {
    let mut header = header_msg(USER, SPACE, id);
    if let Some(pb::put_object_request::Part::Header(h)) = &mut header.part {
        h.size = declared;
    }
    let mut msgs = vec![header];
    msgs.extend(body.chunks(64 * 1024).map(|c| data_msg(c.to_vec())));
    msgs.push(finish_msg(Some(body)));
    gw.content()
        .await
        .put_object(futures_util::stream::iter(msgs))
        .await
        .unwrap_or_else(|e| panic!("put {id}: {e:?}"));
}

/// The stored length of an object of `plaintext` bytes in `version`,
/// from its stored header's `M` (FORMAT.md: header, C2SP body, digest).
fn stored_len(stored: &[u8], plaintext: usize, version: u8) -> usize {
    let m = u32::from_be_bytes(stored[72..76].try_into().unwrap()) as usize;
    let body = 56 + plaintext + (plaintext / 16384 + 1) * 16;
    76 + m + body + if version == 2 { DIGEST } else { 0 }
}

async fn each_version_is_written_as_the_declared_size_says_and_reads_alike() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let p = pseudonym(&gw, USER).await;
    // (id, declared size, plaintext length, the version it must take)
    let cases: [(&str, Option<u64>, usize, u8); 7] = [
        ("empty-undeclared", None, 0, 2),
        ("small-undeclared", None, 10, 2),
        ("empty-declared", Some(0), 0, 1),
        ("small-declared", Some(1000), 1000, 1),
        ("just-under", Some(65_535), 65_535, 1),
        ("at-64k", Some(65_536), 65_536, 2),
        ("large-declared", Some(200_001), 200_001, 2),
    ];
    let mut bodies = Vec::new();
    for (i, (id, declared, len, version)) in cases.into_iter().enumerate() {
        let body = data(len, i as u64);
        put_sized(&gw, id, declared, &body).await;
        let stored = gw.stored_object(SPACE, &p, id).await.expect("stored");
        assert_eq!(stored[6], version, "{id}: format version");
        assert_eq!(stored.len(), stored_len(&stored, len, version), "{id}");
        bodies.push((id, body, version));
    }
    // An item is declared by its nature: small ones are version 1.
    put_item(&mut c, USER, SPACE, "comment", b"a comment")
        .await
        .unwrap();
    let stored = gw.stored_object(SPACE, &p, "comment").await.unwrap();
    assert_eq!(stored[6], 1, "an item");
    bodies.push(("comment", b"a comment".to_vec(), 1));

    let read_all = |c: &mut ContentServiceClient<Channel>| {
        let mut c = c.clone();
        let bodies = bodies.clone();
        async move {
            for (id, body, _) in &bodies {
                let (info, got) = get(&mut c, USER, SPACE, id, None).await.unwrap();
                assert!(got == *body, "{id}: whole read");
                assert_eq!(info.size, body.len() as u64, "{id}");
                assert_eq!(
                    head(&mut c, USER, SPACE, id).await.unwrap().size,
                    body.len() as u64
                );
                // The last bytes: a range that ends at the body's end, not
                // in the digest after it.
                if body.len() > 3 {
                    let from = body.len() as u64 - 3;
                    let (_, tail) = get(&mut c, USER, SPACE, id, Some((from, None)))
                        .await
                        .unwrap();
                    assert_eq!(tail, body[body.len() - 3..], "{id}: tail");
                    let (_, mid) = get(&mut c, USER, SPACE, id, Some((1, Some(from))))
                        .await
                        .unwrap();
                    assert!(mid == body[1..body.len() - 3], "{id}: middle");
                }
            }
            let mut listed = list_all(&mut c, USER, SPACE).await.unwrap();
            listed.sort();
            let mut want: Vec<(String, u64)> = bodies
                .iter()
                .map(|(id, b, _)| (id.to_string(), b.len() as u64))
                .collect();
            want.sort();
            assert_eq!(listed, want, "listed sizes");
        }
    };
    read_all(&mut c).await;

    // A rewrap moves the key slot of either version; both still read.
    assert_eq!(rotate_user(&gw, USER).await, 2);
    assert_eq!(rewrap_to_end(&gw, USER, 2).await, bodies.len() as u64);
    read_all(&mut c).await;
}

async fn an_export_takes_the_sha256_a_version_2_object_stores() {
    let gw = TestGateway::start().await;
    let p = pseudonym(&gw, USER).await;
    let photo = data(200_000, 7);
    let note = data(1000, 8);
    put_sized(&gw, "photo", None, &photo).await;
    put_sized(&gw, "note", Some(1000), &note).await;
    let stored = gw.stored_object(SPACE, &p, "photo").await.unwrap();
    assert_eq!(
        (
            stored[6],
            gw.stored_object(SPACE, &p, "note").await.unwrap()[6]
        ),
        (2, 1)
    );

    let check_manifest = |archive: &[u8]| {
        let read = python_read(archive);
        let objects = read["manifest"]["objects"].as_array().unwrap().clone();
        let hashes: Vec<(&str, &str)> = objects
            .iter()
            .map(|o| (o["id"].as_str().unwrap(), o["sha256"].as_str().unwrap()))
            .collect();
        assert_eq!(
            hashes,
            [
                ("note", sha256_hex(&note).as_str()),
                ("photo", sha256_hex(&photo).as_str())
            ]
        );
    };
    let (archive, _) = export(&gw, request(USER, "", None)).await.unwrap();
    check_manifest(&archive);

    // A byte of the digest changed: the body still reads whole (a GetObject
    // does not need the digest), but the export, which takes its SHA-256
    // from the digest rather than hashing, fails on it.
    let mut damaged = stored.clone();
    let n = damaged.len();
    damaged[n - 20] ^= 1;
    gw.overwrite_stored_object(SPACE, &p, "photo", &damaged)
        .await;
    let mut c = gw.content().await;
    let (_, got) = get(&mut c, USER, SPACE, "photo", None).await.unwrap();
    assert!(got == photo);
    let e = export(&gw, request(USER, "", None)).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");

    // Relabelled version 1 with its digest cut off: the version is bound
    // into the key slot, so nothing reads.
    let mut relabelled = stored[..n - DIGEST].to_vec();
    relabelled[6] = 1;
    gw.overwrite_stored_object(SPACE, &p, "photo", &relabelled)
        .await;
    let e = get(&mut c, USER, SPACE, "photo", None).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    let e = export(&gw, request(USER, "", None)).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");

    // Its own bytes again: the export is whole.
    gw.overwrite_stored_object(SPACE, &p, "photo", &stored)
        .await;
    let (archive, _) = export(&gw, request(USER, "", None)).await.unwrap();
    check_manifest(&archive);
}

/// `crypto.object_version = 1`, for a rolling upgrade past replicas that
/// read only version 1: new objects of any size are version 1, and the
/// version-2 objects already written still read and export.
async fn object_version_1_writes_version_1_only_and_every_object_still_reads() {
    let gw = TestGateway::start().await;
    let p = pseudonym(&gw, USER).await;
    let before = data(100_000, 9);
    put_sized(&gw, "before", None, &before).await;
    let gw = gw
        .restart_with(|c| c.crypto.object_version = sealgate::crypto::Version::V1)
        .await;
    let after = data(100_000, 10);
    put_sized(&gw, "after", None, &after).await;
    put_sized(&gw, "after-declared", Some(100_000), &after).await;
    for (id, version) in [("before", 2), ("after", 1), ("after-declared", 1)] {
        let stored = gw.stored_object(SPACE, &p, id).await.unwrap();
        assert_eq!(stored[6], version, "{id}");
    }
    let mut c = gw.content().await;
    for (id, body) in [
        ("before", &before),
        ("after", &after),
        ("after-declared", &after),
    ] {
        let (_, got) = get(&mut c, USER, SPACE, id, None).await.unwrap();
        assert!(got == *body, "{id}");
    }
    let (archive, _) = export(&gw, request(USER, "", None)).await.unwrap();
    let read = python_read(&archive);
    let hashes: Vec<&str> = read["manifest"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["sha256"].as_str().unwrap())
        .collect();
    let (a, b) = (sha256_hex(&after), sha256_hex(&before));
    assert_eq!(hashes, [a.as_str(), a.as_str(), b.as_str()]);
}
