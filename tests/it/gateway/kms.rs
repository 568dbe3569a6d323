//! Master keys in AWS KMS (`master.provider = "aws-kms"`), against moto's
//! KMS on loopback (`kms_env`): a round trip across a restart with KEKs
//! wrapped by KMS and bound to their rows; one KMS Decrypt for any number of
//! concurrent cold requests of one shard; master rotation to another KMS key
//! and retirement of the old versions; replicas sharing the version records;
//! keys KMS refuses (missing, foreign) as a precise error; decommission.

use std::collections::BTreeMap;

use sealgate::crypto::keys::kek_aad;
use sealgate::keys::keyring::MasterKeyProvider;
use sealgate::keys::kms::{KmsMasterKeys, KmsOp};
use sealgate::keys::sqlite::SqliteKeyStore;
use tonic::Code;

use super::master_rotation::{retire, retire_refusals};
use super::*;
use crate::support::{keys_db, kms_env};

const USERS: usize = 12;

async fn start_kms(arn: &str, tweak: impl FnOnce(&mut Config)) -> TestGateway {
    let arn = arn.to_string();
    TestGateway::start_with(move |c| {
        kms_env::configure(c, &arn);
        tweak(c);
    })
    .await
}

async fn restart_kms(gw: TestGateway, arn: &str) -> TestGateway {
    let arn = arn.to_string();
    gw.restart_with(move |c| kms_env::configure(c, &arn)).await
}

/// Every KEK row: (shard, version, master version, wrapped).
async fn kek_rows(data_dir: &Path) -> Vec<(u32, u32, u32, Vec<u8>)> {
    let pool = keys_db::open(data_dir).await;
    let rows: Vec<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT shard, version, master_version, wrapped FROM keks ORDER BY shard, version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(s, v, m, w)| (s as u32, v as u32, m as u32, w))
        .collect()
}

/// The KMS master version records: (version, the KMS key's ARN).
async fn version_records(data_dir: &Path) -> Vec<(u32, String)> {
    let pool = keys_db::open(data_dir).await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key, value FROM meta WHERE key LIKE 'kms_master:%' ORDER BY key")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(k, v)| {
            let version = k.strip_prefix("kms_master:").unwrap().parse().unwrap();
            (version, v.split(' ').next().unwrap().to_string())
        })
        .collect()
}

/// KMS Decrypt of a KEK row under `arn`, with the encryption context of
/// `(shard, version)`: the plaintext's length, or KMS's error code.
async fn kms_decrypt(arn: &str, wrapped: &[u8], shard: u32, version: u32) -> Result<usize, String> {
    kms_env::sdk()
        .decrypt()
        .key_id(arn)
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped.to_vec()))
        .encryption_context("sealgate", "kek")
        .encryption_context("aad", hex::encode(kek_aad(shard, version)))
        .send()
        .await
        .map(|o| o.plaintext().map_or(0, |p| p.as_ref().len()))
        .map_err(|e| {
            use aws_sdk_kms::error::ProvideErrorMetadata;
            e.code().unwrap_or("no code").to_string()
        })
}

async fn put_users(gw: &TestGateway, users: &[String]) {
    let mut c = gw.content().await;
    for (i, u) in users.iter().enumerate() {
        put(&mut c, u, "moments", "pic", &data(3_000, i as u64), 1_000)
            .await
            .expect("put");
    }
}

async fn read_users(gw: &TestGateway, users: &[String]) {
    let mut c = gw.content().await;
    for (i, u) in users.iter().enumerate() {
        let (_, got) = get(&mut c, u, "moments", "pic", None)
            .await
            .expect("readable");
        assert_eq!(got, data(3_000, i as u64), "{u}");
    }
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|u| format!("{prefix}-{u}")).collect()
}

/// Adds master version `version` under `arn` as a rotation's first step
/// does, with the gateway stopped: KEKs stay under the older versions.
async fn add_version(data_dir: &Path, arn: &str, version: u32) {
    let store = Arc::new(
        SqliteKeyStore::open(&keys_db::file(data_dir))
            .await
            .unwrap(),
    );
    let mut config = config(data_dir);
    kms_env::configure(&mut config, arn);
    let (keys, _) = KmsMasterKeys::open(store.clone(), kms_env::client_for(&config).await, arn)
        .await
        .expect("open the KMS master versions");
    keys.add_version(version).await.unwrap();
    keys.add_version(version).await.expect("idempotent");
    use sealgate::keys::store::KeyStore;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_round_trip_survives_a_restart_with_keks_bound_to_their_rows() {
    let arn = kms_env::create_key().await;
    let gw = start_kms(&arn, |_| {}).await;
    let users = users("kms", USERS);
    put_users(&gw, &users).await;
    read_users(&gw, &users).await;
    assert!(
        !gw.data_dir.join("keyring").exists(),
        "no local keyring with KMS"
    );
    assert_eq!(version_records(&gw.data_dir).await, [(1, arn.clone())]);

    let rows = kek_rows(&gw.data_dir).await;
    assert!(rows.len() >= 2, "users on several shards");
    for (shard, version, master, wrapped) in &rows {
        assert_eq!(*master, 1);
        // A KMS ciphertext, which KMS opens only with its own row's
        // context.
        assert_eq!(kms_decrypt(&arn, wrapped, *shard, *version).await, Ok(32));
        assert_eq!(
            kms_decrypt(&arn, wrapped, *shard, version + 1).await,
            Err("InvalidCiphertextException".into()),
            "another version's context"
        );
        assert_eq!(
            kms_decrypt(&arn, wrapped, shard + 1, *version).await,
            Err("InvalidCiphertextException".into()),
            "another shard's context"
        );
    }

    let gw = restart_kms(gw, &arn).await;
    read_users(&gw, &users).await;
    let kms = gw.kms.as_ref().unwrap();
    assert_eq!(kms.sent(KmsOp::Encrypt), 0, "nothing wrapped on a restart");
}

/// Concurrent first reads of users of one shard, on a fresh process: one
/// KMS Decrypt for the shard's KEK, however many users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_reads_of_one_shard_cost_one_kms_decrypt() {
    const PER_SHARD: usize = 64;
    let arn = kms_env::create_key().await;
    let gw = start_kms(&arn, |c| c.keystore.shards = 8).await;
    // Users of two shards, found by their status (no key is made).
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let user = format!("cold-{i}");
        let shard = key_status(&gw, &user).await.shard;
        by_shard.entry(shard).or_default().push(user);
        let full: Vec<_> = by_shard.values().filter(|u| u.len() >= PER_SHARD).collect();
        if full.len() == 2 {
            break;
        }
    }
    let groups: Vec<Vec<String>> = by_shard
        .into_values()
        .filter(|u| u.len() >= PER_SHARD)
        .map(|u| u[..PER_SHARD].to_vec())
        .collect();
    for group in &groups {
        put_users(&gw, group).await;
    }

    let gw = restart_kms(gw, &arn).await;
    let kms = gw.kms.clone().unwrap();
    // Serving (a call that unwraps nothing): the startup is over.
    key_status(&gw, "cold-0").await;
    assert_eq!(
        kms.sent(KmsOp::Decrypt),
        1,
        "startup unwraps the naming key once"
    );
    let read_concurrently = |group: Vec<String>| {
        let gw = &gw;
        async move {
            let client = gw.content().await;
            let reads = group.into_iter().enumerate().map(|(i, u)| {
                let mut c = client.clone();
                async move {
                    let (_, got) = get(&mut c, &u, "moments", "pic", None).await.expect("read");
                    assert_eq!(got, data(3_000, i as u64), "{u}");
                }
            });
            futures_util::future::join_all(reads).await;
        }
    };
    read_concurrently(groups[0].clone()).await;
    assert_eq!(
        kms.sent(KmsOp::Decrypt),
        2,
        "{PER_SHARD} concurrent cold reads of one shard: one KMS Decrypt"
    );
    // The second shard cold, the first warm, at once.
    let second = read_concurrently(groups[1].clone());
    let first_again = read_concurrently(groups[0].clone());
    tokio::join!(second, first_again);
    assert_eq!(
        kms.sent(KmsOp::Decrypt),
        3,
        "one more Decrypt for the second shard, none for the cached one"
    );
    assert_eq!(kms.sent(KmsOp::Encrypt), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_rotation_to_another_kms_key_then_retirement() {
    let old_arn = kms_env::create_key().await;
    let new_arn = kms_env::create_key().await;
    let mut gw = start_kms(&old_arn, |_| {}).await;
    let users = users("rot", USERS);
    put_users(&gw, &users).await;
    let keks = kek_rows(&gw.data_dir).await.len();
    assert!(keks >= 2, "users on several shards");

    // Version 2 under the new key, no KEK under it yet (as a rotation
    // leaves it when the process dies before its first batch); the
    // operator configures the new key.
    gw.stop().await;
    add_version(&gw.data_dir, &new_arn, 2).await;
    assert_eq!(
        version_records(&gw.data_dir).await,
        [(1, old_arn.clone()), (2, new_arn.clone())]
    );
    let gw = restart_kms(gw, &new_arn).await;
    read_users(&gw, &users).await;
    assert_eq!(key_status(&gw, "rot-0").await.master_key_version, 2);
    let masters: Vec<(u32, u64, String)> = hierarchy(&gw)
        .await
        .masters
        .into_iter()
        .map(|m| (m.version, m.kek_versions, m.kms_key_arn))
        .collect();
    assert_eq!(
        masters,
        [(1, keks as u64, old_arn.clone()), (2, 0, new_arn.clone())],
        "KeyStatus names each version's KMS key"
    );

    retire_refusals(&gw).await;
    assert_eq!(version_records(&gw.data_dir).await.len(), 2);

    let (target, updates) = rotate_master(&gw).await;
    assert_eq!(target, 3);
    let last = updates.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
    assert_eq!((last.done, last.total), (keks as u64, keks as u64));
    read_users(&gw, &users).await;

    assert_eq!(retire(&gw, 1).await.expect("retire 1"), [2, 3]);
    assert_eq!(retire(&gw, 2).await.expect("retire 2"), [3]);
    expect_reason(
        retire(&gw, 1).await,
        Code::NotFound,
        "MASTER_VERSION_NOT_FOUND",
        "retired",
    );
    assert_eq!(version_records(&gw.data_dir).await, [(3, new_arn.clone())]);
    // Every KEK is the new key's now: KMS refuses it under the old one.
    for (shard, version, master, wrapped) in kek_rows(&gw.data_dir).await {
        assert_eq!(master, 3);
        assert_eq!(
            kms_decrypt(&new_arn, &wrapped, shard, version).await,
            Ok(32)
        );
        assert_eq!(
            kms_decrypt(&old_arn, &wrapped, shard, version).await,
            Err("AccessDeniedException".into())
        );
    }

    // Cold caches: everything opens through the new key alone; new users
    // get KEKs under version 3.
    let gw = restart_kms(gw, &new_arn).await;
    read_users(&gw, &users).await;
    let mut c = gw.content().await;
    put(&mut c, "newcomer", "moments", "pic", b"hello", 5)
        .await
        .expect("a new user after the rotation");
    assert!(kek_rows(&gw.data_dir)
        .await
        .iter()
        .all(|(_, _, m, _)| *m == 3));
}

/// Two gateways on one key store, started together on a new one: one
/// master version 1 and one naming key (what one writes the other reads);
/// a master rotation run by one is followed by the other, which meets a
/// version it has not read and reads the records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_each_others_master_versions() {
    with_pg_key_store(with_backend(
        BackendKind::S3,
        replicas_follow_master_versions(),
    ))
    .await;
}

/// Two replicas (a data directory each, one PostgreSQL key store, one
/// bucket, one KMS key).
async fn replicas_follow_master_versions() {
    let arn = kms_env::create_key().await;
    let a = start_kms(&arn, |_| {}).await;
    let b = a
        .start_replica({
            let arn = arn.clone();
            move |c| kms_env::configure(c, &arn)
        })
        .await;
    let store = open_key_store(&a.data_dir).await;
    let users = users("rep", USERS);
    put_users(&a, &users).await;
    read_users(&b, &users[..1]).await;
    let records: Vec<(String, String)> = store
        .meta_values("kms_master:")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.split(' ').next().unwrap().to_string()))
        .collect();
    assert_eq!(
        records,
        [("kms_master:0000000001".to_string(), arn.clone())]
    );

    let (target, updates) = rotate_master(&a).await;
    assert_eq!(target, 2);
    assert_eq!(
        updates.last().unwrap().state,
        pb::JobState::Done as i32,
        "{updates:?}"
    );
    // B has read nothing yet: its KEKs are cold, under a version it never
    // unwrapped with; it reads them, and reports the version A added.
    read_users(&b, &users).await;
    assert_eq!(key_status(&b, "rep-0").await.master_key_version, 2);
    assert_eq!(retire(&b, 1).await.expect("retire on B"), [2]);
    // A wraps its next KEK under version 2, the newest B left.
    let mut c = a.content().await;
    for u in 0..32 {
        put(&mut c, &format!("late-{u}"), "moments", "pic", b"x", 1)
            .await
            .expect("put after the retirement");
    }
    let keks = store.kek_infos().await.unwrap();
    assert!(!keks.is_empty());
    assert!(keks.iter().all(|k| k.master_version == 2), "{keks:?}");
}

/// A KEK whose master version names a KMS key that does not exist, or
/// another key than the one that wrapped it: reads fail at once with
/// `MASTER_KEY_UNUSABLE` naming KMS's refusal, and a master rotation fails
/// instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_kms_refuses_are_a_precise_error() {
    let arn = kms_env::create_key().await;
    let next_arn = kms_env::create_key().await;
    let mut gw = start_kms(&arn, |_| {}).await;
    put_users(&gw, &users("gone", 1)).await;
    gw.stop().await;
    // The naming key moves to version 2; the KEKs stay under version 1.
    add_version(&gw.data_dir, &next_arn, 2).await;
    for (wrong, code) in [
        (kms_env::missing_key_arn(), "NotFoundException"),
        (kms_env::create_key().await, "AccessDeniedException"),
    ] {
        let pool = keys_db::open(&gw.data_dir).await;
        sqlx::query("UPDATE meta SET value = ? || substr(value, instr(value, ' ')) WHERE key = 'kms_master:0000000001'")
            .bind(&wrong)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        gw = restart_kms(gw, &next_arn).await;
        let kms = gw.kms.clone().unwrap();
        // Serving (a call that unwraps nothing): the startup's requests
        // are done.
        key_status(&gw, "gone-0").await;
        let decrypts = kms.sent(KmsOp::Decrypt);
        let mut c = gw.content().await;
        let s = expect_reason(
            get(&mut c, "gone-0", "moments", "pic", None).await,
            Code::FailedPrecondition,
            "MASTER_KEY_UNUSABLE",
            code,
        );
        assert!(
            s.message().contains(code) && s.message().contains(&wrong),
            "{s:?}"
        );
        // Not retried: the read sent one Decrypt, however long it took.
        assert_eq!(
            kms.sent(KmsOp::Decrypt) - decrypts,
            1,
            "{code}: Decrypt attempts of the refused read"
        );
        let (_, updates) = rotate_master(&gw).await;
        let last = updates.last().unwrap();
        assert_eq!(last.state, pb::JobState::Failed as i32, "{updates:?}");
        assert!(last.last_error.contains(code), "{last:?}");
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_deletes_every_kms_record_and_leaves_the_kms_key_alone() {
    let arn = kms_env::create_key().await;
    let gw = start_kms(&arn, |_| {}).await;
    put_users(&gw, &users("dec", 4)).await;
    // The wrapped KEKs and naming key, as stored.
    let mut wrapped: Vec<Vec<u8>> = kek_rows(&gw.data_dir)
        .await
        .into_iter()
        .map(|(_, _, _, w)| w)
        .collect();
    let db = keys_db::open(&gw.data_dir).await;
    let records: Vec<String> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key LIKE 'kms_master:%'")
            .fetch_all(&db)
            .await
            .unwrap();
    db.close().await;
    wrapped.extend(
        records
            .iter()
            .map(|r| r.split(' ').nth(1).unwrap().as_bytes().to_vec()),
    );
    let mut gw = gw;
    let receipt = gw
        .admin()
        .await
        .decommission(pb::DecommissionRequest {
            confirm_region: "cn-north-1".into(),
        })
        .await
        .expect("Decommission")
        .into_inner();
    assert_eq!(receipt.master_versions_destroyed, [1]);
    assert!(kek_rows(&gw.data_dir).await.is_empty());
    assert!(version_records(&gw.data_dir).await.is_empty());
    let db = keys_db::open(&gw.data_dir).await;
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM meta WHERE key LIKE 'kms%'")
        .fetch_all(&db)
        .await
        .unwrap();
    db.close().await;
    assert!(left.is_empty(), "{left:?}");
    let mut c = gw.content().await;
    expect_reason(
        get(&mut c, "dec-0", "moments", "pic", None).await,
        Code::FailedPrecondition,
        "DECOMMISSIONED",
        "a read after decommission",
    );
    gw.stop().await;
    let left: Vec<String> = read_tree(&gw.data_dir)
        .into_iter()
        .filter(|(_, bytes)| {
            wrapped
                .iter()
                .any(|w| bytes.windows(w.len()).any(|x| x == w.as_slice()))
        })
        .map(|(name, _)| name)
        .collect();
    assert!(left.is_empty(), "wrapped keys left in {left:?}");
    // As if a crash had come between the key store's decommission and the
    // records' deletion: a start finishes it, and refuses to serve.
    let db = keys_db::open(&gw.data_dir).await;
    sqlx::query("INSERT INTO meta (key, value) VALUES ('kms_master:0000000001', ?)")
        .bind(format!("{arn} {}", hex::encode(b"left over")))
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let mut config = config(&gw.data_dir);
    kms_env::configure(&mut config, &arn);
    let blob = sealgate::server::open_blob(&config).await.unwrap();
    let refused = sealgate::server::Gateway::open_with(
        &config,
        blob,
        Some(kms_env::client_for(&config).await),
    )
    .await
    .err()
    .expect("a decommissioned store is refused");
    assert!(
        refused.to_string().contains("was decommissioned"),
        "{refused}"
    );
    assert!(version_records(&gw.data_dir).await.is_empty());
    // The customer's KMS key is untouched: the operator decides its fate.
    let key = kms_env::sdk()
        .describe_key()
        .key_id(&arn)
        .send()
        .await
        .expect("DescribeKey");
    assert!(key.key_metadata().unwrap().enabled());
}

/// KMS away: KEKs already cached keep serving (a user of a warm shard not
/// read before still opens: their user key unwraps under the cached KEK);
/// a cold shard fails `UNAVAILABLE` (retryable) and opens once KMS is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_outage_spares_cached_keks_and_fails_cold_shards_retryably() {
    let arn = kms_env::create_key().await;
    let gw = start_kms(&arn, |c| c.keystore.shards = 4).await;
    let mut by_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0..64 {
        let user = format!("outage-{i}");
        by_shard
            .entry(key_status(&gw, &user).await.shard)
            .or_default()
            .push(user);
    }
    let mut shards = by_shard.into_values().filter(|u| u.len() >= 2);
    let warm = shards.next().expect("a shard with two users");
    let cold = shards.next().expect("another shard");
    let (warm, cold) = (warm[..2].to_vec(), cold[..1].to_vec());
    put_users(&gw, &warm).await;
    put_users(&gw, &cold).await;

    let proxy = crate::support::proxy::FaultProxy::start(s3env::shared().addr).await;
    let endpoint = proxy.endpoint();
    let gw = gw
        .restart_with(|c| {
            kms_env::configure(c, &arn);
            c.master.kms_endpoint = Some(endpoint);
        })
        .await;
    let mut c = gw.content().await;
    let (_, got) = get(&mut c, &warm[0], "moments", "pic", None)
        .await
        .expect("read with KMS up");
    assert_eq!(got, data(3_000, 0));

    proxy.set_up(false);
    let (_, got) = get(&mut c, &warm[1], "moments", "pic", None)
        .await
        .expect("a warm shard's KEK serves without KMS");
    assert_eq!(got, data(3_000, 1));
    let s = expect_reason(
        get(&mut c, &cold[0], "moments", "pic", None).await,
        Code::Unavailable,
        "BACKEND_UNAVAILABLE",
        "a cold shard without KMS",
    );
    assert!(s.message().contains("KMS"), "{s:?}");

    proxy.set_up(true);
    let (_, got) = get(&mut c, &cold[0], "moments", "pic", None)
        .await
        .expect("the cold shard once KMS is back");
    assert_eq!(got, data(3_000, 0));
}
