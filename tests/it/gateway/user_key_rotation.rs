//! User-key rotation: a new active version seals new objects, older
//! versions become decrypt-only and their objects still open.

use tonic::Code;

use super::*;

async fn rotate_user(gw: &TestGateway, user: &str) -> Result<pb::RotateUserKeyResponse, Status> {
    gw.admin()
        .await
        .rotate_user_key(pb::RotateUserKeyRequest {
            user_id: user.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The user-key version in the key slot of a stored object (filesystem
/// store: `objects/SPACE/PSEUDONYM/ID`).
fn slot_version(gw: &TestGateway, pseudonym: &str, id: &str) -> u32 {
    let bytes =
        std::fs::read(gw.data_dir.join("objects/moments").join(pseudonym).join(id)).unwrap();
    let start = sealgate::crypto::envelope::Header::KEY_SLOT_RANGE.start;
    u32::from_be_bytes(bytes[start..start + 4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_user_key_seals_new_objects_under_the_new_version() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put(&mut c, "alice", "moments", "old", &data(4_000, 1), 1_000)
        .await
        .unwrap();
    let p = pseudonym(&gw, "alice").await;
    assert_eq!(slot_version(&gw, &p, "old"), 1);

    let r = rotate_user(&gw, "alice").await.expect("RotateUserKey");
    assert_eq!((r.pseudonym.as_str(), r.active_version), (p.as_str(), 2));
    let status = key_status(&gw, "alice").await;
    let states: Vec<_> = status
        .versions
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        states,
        [
            (1, pb::UserKeyState::DecryptOnly as i32),
            (2, pb::UserKeyState::Active as i32)
        ]
    );
    put(&mut c, "alice", "moments", "new", &data(4_000, 2), 1_000)
        .await
        .unwrap();
    assert_eq!(
        slot_version(&gw, &p, "new"),
        2,
        "sealed under the new version"
    );
    for (id, seed) in [("old", 1), ("new", 2)] {
        let (_, got) = get(&mut c, "alice", "moments", id, None).await.unwrap();
        assert_eq!(got, data(4_000, seed));
    }
    assert_eq!(rotate_user(&gw, "alice").await.unwrap().active_version, 3);
    // Cold caches after a restart: every version still opens its objects.
    let gw = gw.restart().await;
    let mut c = gw.content().await;
    for (id, seed) in [("old", 1), ("new", 2)] {
        let (_, got) = get(&mut c, "alice", "moments", id, None).await.unwrap();
        assert_eq!(got, data(4_000, seed));
    }

    try_erase(&gw, "alice").await.unwrap();
    expect_reason(
        rotate_user(&gw, "alice").await,
        Code::FailedPrecondition,
        "USER_ERASED",
        "rotating an erased user",
    );
    expect_reason(
        rotate_user(&gw, "").await,
        Code::InvalidArgument,
        "INVALID_USER_ID",
        "empty user id",
    );
}
