//! KEK rotation: every user key of the rotated shards re-wrapped under a
//! new KEK version by a job, the old versions destroyed, objects readable
//! throughout; erasures racing a rotation stay erased; the key schedule
//! rotates KEKs and the master key on its own and retires old master
//! versions; and the erasure horizon: a copy of the key store taken before
//! an erasure opens the user's key until the schedule has run, and never
//! after.

use std::time::Duration;

use sealgate::keys::keyring::LocalKeyring;
use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::{CachePolicy, KeyHierarchy};
use tonic::Code;

use super::*;

backend_tests!(kek_rotation_of_every_shard_keeps_objects_readable);
pg_tests!(kek_rotation_of_every_shard_keeps_objects_readable);

const SHARDS: u32 = 4;

fn few_shards(c: &mut Config) {
    c.keystore.shards = SHARDS;
}

/// `(shard, version)` of every stored KEK. SQLite's is read over a
/// read-only connection of its own: tests poll this while the gateway
/// rotates, and opening the key store vacuums a file with free pages
/// (which a rotation leaves), holding the gateway's writes up each time.
async fn kek_versions(data_dir: &Path) -> Vec<(i64, i64)> {
    if crate::support::gateway::backend::pg_url(data_dir).is_none() {
        let pool = crate::support::keys_db::open_read_only(data_dir).await;
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT shard, version FROM keks ORDER BY shard, version")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        return rows;
    }
    let store = open_key_store(data_dir).await;
    let infos = store.kek_infos().await.unwrap();
    store.close().await;
    infos
        .iter()
        .map(|k| (i64::from(k.shard), i64::from(k.version)))
        .collect()
}

/// KEK versions the stored user keys are wrapped under, with counts.
async fn user_key_keks(data_dir: &Path) -> Vec<(i64, i64)> {
    let store = open_key_store(data_dir).await;
    let mut counts = std::collections::BTreeMap::<i64, i64>::new();
    let mut after = None;
    loop {
        let page = store.user_keys_in_order(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.pseudonym, last.version));
        for k in &page {
            *counts.entry(i64::from(k.kek_version)).or_default() += 1;
        }
    }
    store.close().await;
    counts.into_iter().collect()
}

async fn rotate(gw: &TestGateway, shards: Vec<u32>, all: bool) -> Result<String, Status> {
    gw.admin()
        .await
        .rotate_kek(pb::RotateKekRequest { shards, all })
        .await
        .map(|r| r.into_inner().job_id)
}

/// SQLite's jobs (kind, state, last error) and KEK rows (shard, version,
/// created), for a failure message.
async fn jobs_and_keks(data_dir: &Path) -> String {
    let pool = crate::support::keys_db::open_read_only(data_dir).await;
    let jobs: Vec<(String, String, String)> =
        sqlx::query_as("SELECT kind, state, last_error FROM jobs")
            .fetch_all(&pool)
            .await
            .unwrap();
    let keks: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT shard, version, created_at_ms FROM keks")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    format!(
        ": jobs {jobs:?}, KEKs {keks:?}, now {} ms",
        sealgate::clock::unix_ms()
    )
}

async fn put_users(gw: &TestGateway, users: usize) {
    let mut c = gw.content().await;
    for u in 0..users {
        put(
            &mut c,
            &format!("user-{u}"),
            "moments",
            "pic",
            &data(3_000, u as u64),
            1_000,
        )
        .await
        .expect("put");
    }
}

async fn read_users(gw: &TestGateway, users: impl Iterator<Item = usize>) {
    let mut c = gw.content().await;
    for u in users {
        let (_, got) = get(&mut c, &format!("user-{u}"), "moments", "pic", None)
            .await
            .unwrap_or_else(|e| panic!("user-{u} readable: {e}"));
        assert_eq!(got, data(3_000, u as u64));
    }
}

async fn kek_rotation_of_every_shard_keeps_objects_readable() {
    const USERS: usize = 40;
    let gw = TestGateway::start_with(few_shards).await;
    put_users(&gw, USERS).await;
    let before = kek_versions(&gw.data_dir).await;
    assert_eq!(before, (0..4).map(|s| (s, 1)).collect::<Vec<_>>());

    let id = rotate(&gw, vec![], true).await.expect("RotateKek");
    let updates = watch_all(&gw, &id).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
    assert_eq!(last.kind, "rotate_kek");
    assert_eq!((last.done, last.total), (USERS as u64, USERS as u64));
    assert_eq!(
        kek_versions(&gw.data_dir).await,
        (0..4).map(|s| (s, 2)).collect::<Vec<_>>(),
        "version 1 of every shard destroyed"
    );
    assert_eq!(user_key_keks(&gw.data_dir).await, [(2, USERS as i64)]);
    read_users(&gw, 0..USERS).await;
    // Cold caches: the keys unwrap under the new versions alone.
    let gw = gw.restart_with(few_shards).await;
    read_users(&gw, 0..USERS).await;

    // One shard: only it moves on.
    let id = rotate(&gw, vec![2], false)
        .await
        .expect("RotateKek shard 2");
    assert_eq!(
        watch_all(&gw, &id).await.last().unwrap().state,
        pb::JobState::Done as i32
    );
    let after = kek_versions(&gw.data_dir).await;
    assert_eq!(after, [(0, 2), (1, 2), (2, 3), (3, 2)]);
    read_users(&gw, 0..USERS).await;

    // A new user after the rotations gets the newest KEK version.
    let mut c = gw.content().await;
    put(&mut c, "newcomer", "moments", "pic", b"hi", 2)
        .await
        .unwrap();
    let status = key_status(&gw, "newcomer").await;
    let newest = after
        .iter()
        .find(|(s, _)| *s == i64::from(status.shard))
        .unwrap()
        .1;
    assert_eq!(i64::from(status.versions[0].kek_version), newest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_kek_refuses_bad_requests() {
    let gw = TestGateway::start_with(few_shards).await;
    expect_reason(
        rotate(&gw, vec![], false).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "no shards",
    );
    expect_reason(
        rotate(&gw, vec![4], false).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "shard past the configured 4",
    );
    expect_reason(
        rotate(&gw, vec![1], true).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "shards and all",
    );
}

/// Erasures while the shards rotate: the erased users stay erased (no
/// user-key row comes back), everyone else reads back, and no request
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasures_racing_a_kek_rotation_stay_erased() {
    const USERS: usize = 60;
    let gw = TestGateway::start_with(few_shards).await;
    put_users(&gw, USERS).await;
    let id = rotate(&gw, vec![], true).await.expect("RotateKek");
    let erased: Vec<usize> = (0..USERS).step_by(3).collect();
    let (_, receipts) = tokio::join!(read_users(&gw, (0..USERS).filter(|u| u % 3 != 0)), async {
        let mut r = Vec::new();
        for u in &erased {
            r.push(try_erase(&gw, &format!("user-{u}")).await.expect("erase"));
        }
        r
    });
    assert_eq!(
        watch_all(&gw, &id).await.last().unwrap().state,
        pb::JobState::Done as i32
    );
    for (u, receipt) in erased.iter().zip(&receipts) {
        let status = key_status(&gw, &format!("user-{u}")).await;
        assert!(
            status.erased && status.versions.is_empty(),
            "user-{u}: {status:?}"
        );
        assert_eq!(receipt.destroyed_key_versions, [1]);
    }
    let live = (USERS - erased.len()) as i64;
    assert_eq!(user_key_keks(&gw.data_dir).await, [(2, live)]);
    read_users(&gw, (0..USERS).filter(|u| u % 3 != 0)).await;
}

/// A store where a user key is written under a KEK version that is no
/// longer the newest (a process that chose its KEK before a rotation
/// began): the store refuses it, so the rotation can never miss a row.
#[tokio::test]
async fn a_user_key_under_a_superseded_kek_is_refused() {
    use sealgate::crypto::Pseudonym;
    use sealgate::keys::store::roles::*;
    use sealgate::keys::store::{InsertOutcome, KekRecord, UserKeyRecord, UserKeyState};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteKeyStore::open(&crate::support::keys_db::file(dir.path()))
        .await
        .unwrap();
    for version in [1, 2] {
        assert!(store
            .insert_kek(&KekRecord {
                shard: 0,
                version,
                master_version: 1,
                wrapped: vec![version as u8; 60],
                created_at_ms: 1,
            })
            .await
            .unwrap());
    }
    let record = |kek_version| UserKeyRecord {
        pseudonym: Pseudonym::from_hex(&"ab".repeat(32)).unwrap(),
        version: 1,
        shard: 0,
        kek_version,
        wrapped: vec![0; 60],
        state: UserKeyState::Active,
        created_at_ms: 1,
    };
    assert_eq!(
        store.insert_user_key(&record(1)).await.unwrap(),
        InsertOutcome::StaleKek
    );
    assert_eq!(
        store.insert_user_key(&record(2)).await.unwrap(),
        InsertOutcome::Inserted
    );
    store.close().await;
}

/// The erasure horizon. A copy of the key store taken before an erasure
/// (a backup) together with the keyring opens the erased user's key until
/// the schedule has rotated the user's KEK and the master key and retired
/// the old master version; after that, neither the copy with the live
/// keyring nor the copy's rows with the live store's KEKs open it. The
/// receipt names when that will be at the latest.
///
/// The events are ordered, not timed: until the backup has been checked
/// the gateway runs a schedule under which nothing can be due (a maximum
/// age of a day); only then does it restart with one that makes every key
/// due at two seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_before_an_erasure_opens_nothing_after_the_horizon() {
    let gw = TestGateway::start_with(|c| {
        few_shards(c);
        c.keys.kek_max_age_days = 1.0;
    })
    .await;
    put_users(&gw, 1).await;
    let p = sealgate::crypto::Pseudonym::from_hex(&pseudonym(&gw, "user-0").await).unwrap();

    let backup = gw.data_dir.join("backup.db");
    let pool = crate::support::keys_db::open(&gw.data_dir).await;
    sqlx::query("VACUUM INTO ?")
        .bind(backup.display().to_string())
        .execute(&pool)
        .await
        .unwrap();
    let receipt = try_erase(&gw, "user-0").await.expect("erase");
    assert_eq!(
        receipt.backup_horizon_unix_ms,
        receipt.erased_at_unix_ms + 86_400_000,
        "erased at + keys.kek_max_age_days"
    );

    // Before the schedule has run: the backup and the keyring open the key.
    let keyring = gw.data_dir.join("keyring");
    assert!(
        open_from(&backup, &keyring).await.is_ok(),
        "before the horizon"
    );

    // A schedule fast enough for a test: every key is due at two seconds.
    let gw = gw
        .restart_with(|c| {
            few_shards(c);
            c.keys.kek_max_age_days = 4.0 / 86_400.0;
            c.keys.schedule_check_seconds = 1;
        })
        .await;

    // The schedule rotates the KEK and the master and retires master 1.
    eventually(
        "the schedule destroyed KEK version 1 and retired master 1",
        Duration::from_secs(30),
        || async {
            let keks = kek_versions(&gw.data_dir).await;
            let (kr, _) = LocalKeyring::load(&keyring).unwrap();
            let masters = sealgate::keys::keyring::MasterKeyProvider::versions(&kr);
            !keks.iter().any(|(_, v)| *v == 1) && !masters.contains(&1)
        },
    )
    .await;
    let err = open_from(&backup, &keyring).await.unwrap_err();
    assert!(err.contains("unwrap") || err.contains("master"), "{err}");
    // The backup's user-key row against the live store's KEKs: the KEK
    // version it needs is gone.
    let user_row = SqliteKeyStore::open(&backup).await.unwrap();
    let rows = sealgate::keys::store::KeyRecords::user_keys(&user_row, &p)
        .await
        .unwrap();
    sealgate::keys::store::KeyStore::close(&user_row).await;
    assert_eq!(rows.len(), 1);
    let live = pool_keks(&gw.data_dir, rows[0].shard, rows[0].kek_version).await;
    assert_eq!(
        live, 0,
        "KEK version {} of the shard destroyed",
        rows[0].kek_version
    );
    pool.close().await;
}

async fn pool_keks(data_dir: &Path, shard: u32, version: u32) -> i64 {
    let pool = crate::support::keys_db::open(data_dir).await;
    let n = sqlx::query_scalar("SELECT COUNT(*) FROM keks WHERE shard = ? AND version = ?")
        .bind(i64::from(shard))
        .bind(i64::from(version))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// Opens user-0's key version 1 from a key-store copy with a keyring, as
/// someone holding both would.
async fn open_from(store: &Path, keyring: &Path) -> Result<(), String> {
    let copy = store.with_extension("scratch.db");
    std::fs::copy(store, &copy).unwrap();
    let store = Arc::new(SqliteKeyStore::open(&copy).await.unwrap());
    let (master, naming) = LocalKeyring::load(keyring).unwrap();
    let keys = KeyHierarchy::new(
        store.clone(),
        Arc::new(master),
        naming,
        SHARDS,
        &CachePolicy {
            user_ttl: Duration::from_secs(1),
            kek_ttl: Duration::from_secs(1),
            max_users: 10,
        },
    );
    let p = keys.pseudonym("user-0").unwrap();
    let opened = keys
        .user_key(&p, 1)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    sealgate::keys::store::KeyStore::close(&*store).await;
    std::fs::remove_file(&copy).unwrap();
    opened
}

/// `sealgate keys status` without a user shows the hierarchy; the key
/// schedule's horizon is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_status_of_the_hierarchy() {
    let gw = TestGateway::start_with(few_shards).await;
    put_users(&gw, 8).await;
    let status = gw
        .admin()
        .await
        .key_status(pb::KeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let h = status.hierarchy.expect("the hierarchy");
    let keks = kek_versions(&gw.data_dir).await.len() as u64;
    assert_eq!(h.masters.len(), 1);
    assert_eq!((h.masters[0].version, h.masters[0].kek_versions), (1, keks));
    assert_eq!((h.shards, h.kek_versions), (SHARDS, keks));
    assert_eq!(h.max_kek_versions_per_shard, 1);
    assert!(h.oldest_kek_created_unix_ms > 0);
    assert_eq!(h.erasure_horizon_seconds, 30 * 86_400);
    assert!(status.pseudonym.is_empty() && status.versions.is_empty());

    let by_pseudonym = gw
        .admin()
        .await
        .key_status(pb::KeyStatusRequest {
            pseudonym: pseudonym(&gw, "user-3").await,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_pseudonym.versions.len(), 1);
    expect_reason(
        gw.admin()
            .await
            .key_status(pb::KeyStatusRequest {
                pseudonym: "zz".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "not a pseudonym",
    );
}

/// A KEK rotation over 40,000 users on one shard, the real binary
/// SIGKILLed mid-job: the next process takes the job over when the lease
/// ends and finishes it from its checkpoint; every key is under the new
/// version, the old version is gone, the objects read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rotation_resumes_after_sigkill() {
    use sealgate::crypto::keys::{kek_aad, user_key_aad};
    use sealgate::crypto::UserKey;
    use sealgate::keys::keyring::MasterKeyProvider;

    use crate::support::serve::{watch_to_end, Serve};

    const SEEDED: usize = 40_000;
    const ENV: &[(&str, &str)] = &[
        ("SEALGATE_JOBS_LEASE_SECONDS", "2"),
        ("SEALGATE_JOBS_POLL_SECONDS", "1"),
        ("SEALGATE_KEYSTORE_SHARDS", "1"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path();
    let start = move || async move {
        let mut process = Serve::new(data_dir).envs(ENV).spawn();
        let addr = process
            .ready_within(Duration::from_secs(30))
            .await
            .unwrap_or_else(|log| panic!("sealgate not listening:\n{log}"));
        (process, format!("http://{addr}"))
    };
    let (mut first, url) = start().await;
    let mut c = ContentServiceClient::connect(url.clone()).await.unwrap();
    for u in 0..3 {
        put(
            &mut c,
            &format!("user-{u}"),
            "moments",
            "pic",
            &data(3_000, u as u64),
            1_000,
        )
        .await
        .unwrap();
    }

    // 40,000 more users, written as the gateway writes them, under KEK
    // version 1 of the one shard.
    let pool = crate::support::keys_db::open(data_dir).await;
    let (master_version, wrapped): (i64, Vec<u8>) =
        sqlx::query_as("SELECT master_version, wrapped FROM keks WHERE shard = 0 AND version = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    let (keyring, naming) = LocalKeyring::load(&data_dir.join("keyring")).unwrap();
    let kek = keyring
        .unwrap_kek(master_version as u32, &wrapped, &kek_aad(0, 1))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..SEEDED {
        let p = naming.pseudonym(&format!("seed-{i}"));
        let key = UserKey::generate().unwrap();
        let wrapped = kek.wrap_user_key(&key, &user_key_aad(&p, 1, 0, 1)).unwrap();
        sqlx::query(
            "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state, created_at_ms)
             VALUES (?, 1, 0, 1, ?, 'active', 1)",
        )
        .bind(p.to_string())
        .bind(wrapped.as_bytes().to_vec())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
    let total = (SEEDED + 3) as u64;

    let mut admin = KeyAdminServiceClient::connect(url).await.unwrap();
    let job_id = admin
        .rotate_kek(pb::RotateKekRequest {
            shards: vec![],
            all: true,
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut stream = admin
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let p = stream.message().await.unwrap().expect("job still running");
        assert_ne!(
            p.state,
            pb::JobState::Done as i32,
            "finished before the kill: {p:?}"
        );
        if p.done > 0 {
            assert!(p.done < total, "{p:?}");
            break;
        }
    }
    first.child.kill().expect("SIGKILL");
    assert!(!first.child.wait().unwrap().success());

    let (second, url) = start().await;
    let mut admin = KeyAdminServiceClient::connect(url.clone()).await.unwrap();
    let last = watch_to_end(&mut admin, &job_id).await;
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    assert_eq!(
        (last.done, last.total),
        (total, total),
        "each key once, from the checkpoint"
    );
    assert_eq!(kek_versions(data_dir).await, [(0, 2)]);
    assert_eq!(user_key_keks(data_dir).await, [(2, total as i64)]);
    let mut c = ContentServiceClient::connect(url).await.unwrap();
    for u in 0..3 {
        let (_, got) = get(&mut c, &format!("user-{u}"), "moments", "pic", None)
            .await
            .unwrap();
        assert_eq!(got, data(3_000, u as u64));
    }
    drop(second);
}

/// Shards whose KEKs were made at different times rotate together: once
/// one shard's KEK is due, the schedule rotates every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_rotates_every_shard_once_one_is_due() {
    let gw = TestGateway::start_with(|c| {
        few_shards(c);
        c.keys.kek_max_age_days = 1.0;
        c.keys.schedule_check_seconds = 1;
    })
    .await;
    put_users(&gw, 20).await;
    let before = kek_versions(&gw.data_dir).await;
    assert!(before.len() >= 2, "users in one shard only: {before:?}");
    assert!(before.iter().all(|(_, v)| *v == 1), "{before:?}");
    // The first shard's KEK made a day ago: due (at half the maximum age),
    // the others not for hours.
    let oldest = before[0].0;
    crate::support::keys_db::execute(
        &gw.data_dir,
        &format!("UPDATE keks SET created_at_ms = created_at_ms - 86400000 WHERE shard = {oldest}"),
    )
    .await;
    // Every shard gets a new newest version and keeps only it: 2 where a
    // user made version 1, and 1 in a shard none of the users fell in
    // (some shard is empty in about one run in eighty).
    let after: Vec<(i64, i64)> = (0..i64::from(SHARDS))
        .map(|s| {
            let newest = before.iter().find(|(b, _)| *b == s).map_or(0, |(_, v)| *v);
            (s, newest + 1)
        })
        .collect();
    crate::support::wait::eventually_explained(
        "the schedule rotated every shard",
        Duration::from_secs(30),
        || async { kek_versions(&gw.data_dir).await == after },
        || jobs_and_keks(&gw.data_dir),
    )
    .await;
    read_users(&gw, 0..20).await;
}
