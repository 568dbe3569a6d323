//! Master key rotation and retirement: every KEK re-wrapped under the new
//! version by a job, objects readable throughout and after restarts,
//! retirement refused while a KEK is wrapped under the version (or for the
//! newest), and the retired version gone from the keyring file.

use std::os::unix::fs::PermissionsExt;

use sealgate::keys::keyring::LocalKeyring;
use tonic::Code;

use super::*;

backend_tests!(master_rotation_then_retirement);

const USERS: usize = 12;

pub(super) async fn retire(gw: &TestGateway, version: u32) -> Result<Vec<u32>, Status> {
    gw.admin()
        .await
        .retire_master_key(pb::RetireMasterKeyRequest { version })
        .await
        .map(|r| r.into_inner().remaining_versions)
}

/// With KEKs under version 1 and version 2 the newest: retiring 1 or 2 is
/// refused as in use, retiring 9 as no such version.
pub(super) async fn retire_refusals(gw: &TestGateway) {
    expect_reason(
        retire(gw, 1).await,
        Code::FailedPrecondition,
        "MASTER_IN_USE",
        "KEKs under 1",
    );
    expect_reason(
        retire(gw, 2).await,
        Code::FailedPrecondition,
        "MASTER_IN_USE",
        "the newest",
    );
    expect_reason(
        retire(gw, 9).await,
        Code::NotFound,
        "MASTER_VERSION_NOT_FOUND",
        "no version 9",
    );
}

/// The master versions the keyring file holds.
fn keyring_versions(data_dir: &Path) -> Vec<u32> {
    let path = data_dir.join("keyring");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the keyring stays private");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("master "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// Master versions of the stored KEKs, one entry per KEK row.
async fn kek_masters(data_dir: &Path) -> Vec<i64> {
    let pool = crate::support::keys_db::open(data_dir).await;
    let masters = sqlx::query_scalar("SELECT master_version FROM keks ORDER BY shard, version")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    masters
}

async fn read_all(gw: &TestGateway) {
    let mut c = gw.content().await;
    for u in 0..USERS {
        let (_, got) = get(&mut c, &format!("user-{u}"), "moments", "pic", None)
            .await
            .expect("readable");
        assert_eq!(got, data(20_000, u as u64));
    }
}

async fn master_rotation_then_retirement() {
    let mut gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for u in 0..USERS {
        put(
            &mut c,
            &format!("user-{u}"),
            "moments",
            "pic",
            &data(20_000, u as u64),
            7_000,
        )
        .await
        .expect("put");
    }
    let keks = kek_masters(&gw.data_dir).await.len();
    assert!(keks >= 2, "users on several shards");

    // A new master version in the keyring that no KEK is under yet (as a
    // rotation leaves it when the process dies before the first batch).
    gw.stop().await;
    let (keyring, _) = LocalKeyring::load(&gw.data_dir.join("keyring")).unwrap();
    keyring.add_version(2).unwrap();
    keyring.add_version(2).unwrap();
    assert_eq!(keyring_versions(&gw.data_dir), [1, 2]);
    let gw = gw.restart().await;
    read_all(&gw).await;
    assert_eq!(key_status(&gw, "user-0").await.master_key_version, 2);

    retire_refusals(&gw).await;
    assert_eq!(
        keyring_versions(&gw.data_dir),
        [1, 2],
        "refusals change nothing"
    );

    let mut admin = gw.admin().await;
    let started = admin
        .rotate_master_key(pb::RotateMasterKeyRequest {})
        .await
        .expect("RotateMasterKey")
        .into_inner();
    assert_eq!(started.master_version, 3);
    let updates = watch_all(&gw, &started.job_id).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
    assert_eq!(last.kind, "rotate_master");
    assert_eq!((last.done, last.total), (keks as u64, keks as u64));
    assert_eq!(kek_masters(&gw.data_dir).await, vec![3; keks]);
    read_all(&gw).await;

    assert_eq!(retire(&gw, 1).await.expect("retire 1"), [2, 3]);
    assert_eq!(retire(&gw, 2).await.expect("retire 2"), [3]);
    expect_reason(
        retire(&gw, 1).await,
        Code::NotFound,
        "MASTER_VERSION_NOT_FOUND",
        "retired",
    );
    assert_eq!(keyring_versions(&gw.data_dir), [3]);

    // Cold caches: every KEK unwraps under the one version left; new users
    // get KEKs under it.
    let gw = gw.restart().await;
    read_all(&gw).await;
    let mut c = gw.content().await;
    put(&mut c, "newcomer", "moments", "pic", b"hello", 5)
        .await
        .expect("a new user after the rotation");
    assert!(kek_masters(&gw.data_dir).await.iter().all(|m| *m == 3));
}
