//! RewrapUser: every key slot of a user's objects moved to the active
//! user-key version without touching the bodies, then the older versions
//! destroyed; a write that raced the rewrap under an older version is
//! removed and fails KEY_ROTATED.

use tonic::Code;

use super::limits::open_upload;
use super::*;

backend_tests!(
    rewrap_moves_every_key_slot_and_destroys_the_old_versions,
    a_download_open_across_a_rewrap_reads_every_byte,
);

const SLOT: std::ops::Range<usize> = sealgate::crypto::envelope::Header::KEY_SLOT_RANGE;

async fn rewrap(gw: &TestGateway, user: &str) -> Result<pb::RewrapUserResponse, Status> {
    gw.admin()
        .await
        .rewrap_user(pb::RewrapUserRequest {
            user_id: user.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub(super) async fn rotate_user(gw: &TestGateway, user: &str) -> u32 {
    gw.admin()
        .await
        .rotate_user_key(pb::RotateUserKeyRequest {
            user_id: user.into(),
        })
        .await
        .expect("RotateUserKey")
        .into_inner()
        .active_version
}

/// Runs a rewrap of `user` to its end; returns how many objects it moved.
pub(super) async fn rewrap_to_end(gw: &TestGateway, user: &str, target: u32) -> u64 {
    let r = rewrap(gw, user).await.expect("RewrapUser");
    assert_eq!(r.target_version, target);
    let end = watch_all(gw, &r.job_id).await.pop().expect("progress");
    assert_eq!(
        end.state,
        pb::JobState::Done as i32,
        "rewrap failed: {}",
        end.last_error
    );
    end.done
}

/// An object as storage holds it: its bytes with any key-slot patch the
/// S3 store keeps in metadata laid over them, and whether that patch
/// exists.
async fn stored(gw: &TestGateway, space: &str, p: &str, id: &str) -> (Vec<u8>, bool) {
    let Some((client, bucket)) = gw.s3() else {
        let bytes = std::fs::read(object_path(&gw.data_dir, space, p, id)).unwrap();
        return (bytes, false);
    };
    let o = client
        .get_object()
        .bucket(bucket)
        .key(format!("{space}/{p}/{id}"))
        .send()
        .await
        .expect("GetObject");
    let patch = o.metadata().and_then(|m| m.get("sealgate-patch")).cloned();
    let mut bytes = o.body.collect().await.unwrap().into_bytes().to_vec();
    if let Some(patch) = &patch {
        let (offset, hex) = patch.split_once(':').unwrap();
        let offset: usize = offset.parse().unwrap();
        let new = hex::decode(hex).unwrap();
        bytes[offset..offset + new.len()].copy_from_slice(&new);
    }
    (bytes, patch.is_some())
}

fn slot_version(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[SLOT.start..SLOT.start + 4].try_into().unwrap())
}

async fn rewrap_moves_every_key_slot_and_destroys_the_old_versions() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    // Under version 1: a small object and one of several chunks, in two
    // spaces; bob's object is never touched.
    let objects = [
        ("moments", "small", data(4_000, 1)),
        ("channels", "large", data(300_000, 2)),
    ];
    for (space, id, bytes) in &objects {
        put(&mut c, "alice", space, id, bytes, 64 * 1024)
            .await
            .unwrap();
    }
    put(&mut c, "bob", "moments", "bobs", &data(1_000, 3), 1_000)
        .await
        .unwrap();
    assert_eq!(rotate_user(&gw, "alice").await, 2);
    put(&mut c, "alice", "moments", "newer", &data(2_000, 4), 1_000)
        .await
        .unwrap();
    assert_eq!(rotate_user(&gw, "alice").await, 3);
    let p = pseudonym(&gw, "alice").await;
    let bob = pseudonym(&gw, "bob").await;
    let mut before = Vec::new();
    for (space, id) in [
        ("moments", "small"),
        ("channels", "large"),
        ("moments", "newer"),
    ] {
        before.push((space, id, stored(&gw, space, &p, id).await.0));
    }
    let bobs_before = stored(&gw, "moments", &bob, "bobs").await;

    assert_eq!(rewrap_to_end(&gw, "alice", 3).await, 3, "three slots moved");

    let status = key_status(&gw, "alice").await;
    let versions: Vec<_> = status
        .versions
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        versions,
        [(3, pb::UserKeyState::Active as i32)],
        "versions 1 and 2 destroyed"
    );
    for (space, id, old) in &before {
        let (now, patched) = stored(&gw, space, &p, id).await;
        assert_eq!(slot_version(&now), 3, "{id}: slot moved");
        assert_eq!(now.len(), old.len(), "{id}");
        assert_eq!(
            now[..SLOT.start],
            old[..SLOT.start],
            "{id}: before the slot"
        );
        assert_eq!(now[SLOT.end..], old[SLOT.end..], "{id}: beyond the slot");
        assert_ne!(now[SLOT.clone()], old[SLOT.clone()], "{id}: a new slot");
        // On S3 the body object itself is untouched: the slot is metadata.
        assert_eq!(patched, gw.s3().is_some(), "{id}");
    }
    assert_eq!(
        stored(&gw, "moments", &bob, "bobs").await,
        bobs_before,
        "another user's object is untouched"
    );
    let expected = [
        ("moments", "small", data(4_000, 1)),
        ("channels", "large", data(300_000, 2)),
        ("moments", "newer", data(2_000, 4)),
    ];
    for (space, id, bytes) in &expected {
        let (_, got) = get(&mut c, "alice", space, id, None).await.unwrap();
        assert_eq!(&got, bytes, "{id} reads back");
    }
    // Cold caches: only version 3 exists, and it opens everything.
    let gw = gw.restart().await;
    let mut c = gw.content().await;
    for (space, id, bytes) in &expected {
        let (_, got) = get(&mut c, "alice", space, id, Some((100, None)))
            .await
            .unwrap();
        assert_eq!(got, bytes[100..], "{id} reads back after a restart");
    }
    // Nothing left to move: a second rewrap moves nothing.
    assert_eq!(rewrap_to_end(&gw, "alice", 3).await, 0);
    let (_, got) = get(&mut c, "bob", "moments", "bobs", None).await.unwrap();
    assert_eq!(got, data(1_000, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_refuses_bad_users_precisely() {
    let gw = TestGateway::start().await;
    expect_reason(
        rewrap(&gw, "nobody-yet").await,
        Code::FailedPrecondition,
        "NO_USER_KEY",
        "a user who never wrote",
    );
    expect_reason(
        rewrap(&gw, "").await,
        Code::InvalidArgument,
        "INVALID_USER_ID",
        "an empty user id",
    );
    let mut c = gw.content().await;
    put(&mut c, "gone", "moments", "x", b"bytes", 5)
        .await
        .unwrap();
    try_erase(&gw, "gone").await.expect("erase");
    expect_reason(
        rewrap(&gw, "gone").await,
        Code::FailedPrecondition,
        "USER_ERASED",
        "an erased user",
    );
}

/// An upload sealed under version 1 that commits after a rewrap destroyed
/// version 1 (so the rewrap's listing never saw it) must not stay stored,
/// unreadable: it is removed and fails ABORTED / KEY_ROTATED, and writing
/// again succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sealed_under_a_rewrapped_version_is_removed_and_retried() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put(&mut c, "u", "moments", "first", &data(1_000, 1), 1_000)
        .await
        .unwrap();
    // The server holds the upload: it has sealed its header under version 1.
    let upload = open_upload(&gw, "racing", 1).await;
    assert_eq!(rotate_user(&gw, "u").await, 2);
    assert_eq!(
        rewrap_to_end(&gw, "u", 2).await,
        1,
        "only `first` is listed"
    );
    let body = data(5_000, 2);
    upload.tx.send(data_msg(body.clone())).await.unwrap();
    upload.tx.send(finish_msg(Some(&body))).await.unwrap();
    drop(upload.tx);
    let result = upload.done.await.unwrap();
    expect_reason(
        result,
        Code::Aborted,
        "KEY_ROTATED",
        "a write sealed under a destroyed version",
    );
    expect_code(
        get(&mut c, "u", "moments", "racing", None).await,
        Code::NotFound,
        "the raced object was removed",
    );
    put(&mut c, "u", "moments", "racing", &body, 1_000)
        .await
        .expect("writing again succeeds");
    let (_, got) = get(&mut c, "u", "moments", "racing", None).await.unwrap();
    assert_eq!(got, body);
    let (_, got) = get(&mut c, "u", "moments", "first", None).await.unwrap();
    assert_eq!(got, data(1_000, 1));
}

/// An erasure racing a rewrap leaves the user erased: no key version comes
/// back, the rewrap ends (it has nothing left to move), and garbage
/// collection removes every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_racing_a_rewrap_stays_erased() {
    const OBJECTS: usize = 120;
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for i in 0..OBJECTS {
        put(&mut c, "racer", "moments", &format!("o{i}"), b"bytes", 5)
            .await
            .unwrap();
    }
    assert_eq!(rotate_user(&gw, "racer").await, 2);
    let job = rewrap(&gw, "racer").await.expect("RewrapUser").job_id;
    let receipt = try_erase(&gw, "racer").await.expect("erase");
    assert_eq!(receipt.destroyed_key_versions, [1, 2]);
    let end = watch_all(&gw, &job).await.pop().unwrap();
    assert!(
        end.state == pb::JobState::Done as i32
            || (end.state == pb::JobState::Failed as i32 && end.last_error.contains("erased")),
        "the rewrap ends, done or stopped by the erasure: {end:?}"
    );
    let status = key_status(&gw, "racer").await;
    assert!(
        status.erased && status.versions.is_empty(),
        "no key version comes back: {status:?}"
    );
    wait_gc_done(&gw, "racer").await;
    let p = pseudonym(&gw, "racer").await;
    assert!(gw.user_objects(&p).await.is_empty(), "every object removed");
}

/// A download that began before a rewrap moved its object's slot and
/// destroyed the version it opened with reads every byte: it holds its DEK,
/// and storage keeps serving the version it opened (a 30 MiB object, a
/// multipart upload on S3, whose copy gets another ETag).
async fn a_download_open_across_a_rewrap_reads_every_byte() {
    let gw = TestGateway::start().await;
    let body = data(30 << 20, 5);
    put(
        &mut gw.content().await,
        "viewer",
        "channels",
        "video",
        &body,
        1 << 20,
    )
    .await
    .expect("put");
    // Small HTTP/2 windows: most of the object is still to be read.
    let (mut stream, mut got) =
        paused_download(&gw, "viewer", "channels", "video", 64 * 1024, 1 << 20).await;
    assert_eq!(rotate_user(&gw, "viewer").await, 2);
    assert_eq!(rewrap_to_end(&gw, "viewer", 2).await, 1);
    while let Some(m) = stream.message().await.expect("the download goes on") {
        match m.part {
            Some(pb::get_object_response::Part::Data(d)) => got.extend_from_slice(&d),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got.len(), body.len());
    assert!(got == body, "every byte is the object's");
}
