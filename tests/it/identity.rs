//! One deployment, one identity: the key store records its master keys
//! (the provider, each master version's check value, the naming key's),
//! and a process whose master keys differ is refused at start in one line
//! naming what differs and what to do: a process without `[master]` beside
//! a key store of KMS master keys, a keyring restored from before a master
//! rotation, and replicas on one PostgreSQL key store that lack the
//! deployment's keyring or bring their own.

use std::path::Path;

use sealgate::api::pb;
use sealgate::keys::keyring::LocalKeyring;

use crate::startup::refusal_of;
use crate::support::gateway::{
    config, hierarchy, put, rotate_master, Backend, BackendKind, TestGateway,
};
use crate::support::kms_env;

const SPACE: &str = "moments";

async fn put_users(gw: &TestGateway, n: usize) {
    let mut c = gw.content().await;
    for u in 0..n {
        put(&mut c, &format!("id-{u}"), SPACE, "photo", b"bytes", 5)
            .await
            .expect("put");
    }
}

fn today() -> String {
    sealgate::clock::format_time(sealgate::clock::unix_ms())[..10].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_master_beside_a_kms_key_store_is_refused() {
    let arn = kms_env::create_key().await;
    let mut gw = TestGateway::start_with(|c| kms_env::configure(c, &arn)).await;
    put_users(&gw, 4).await;
    gw.stop().await;

    // The same data directory, the [master] section forgotten.
    let message = refusal_of(&config(&gw.data_dir), &gw.data_dir.join("objects")).await;
    assert!(
        message.contains(&format!(
            "the key store's master keys are in AWS KMS ({arn}, master version 1); this \
             process is configured with a local keyring"
        )) && message.contains(&format!(
            "add the [master] section with provider = \"aws-kms\" and kms_key_arn = \"{arn}\""
        )),
        "{message}"
    );
    assert!(!gw.data_dir.join("keyring").exists(), "no keyring was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_from_before_a_master_rotation_is_refused_naming_the_fix() {
    let mut gw = TestGateway::start().await;
    put_users(&gw, 8).await;
    let keyring = gw.data_dir.join("keyring");
    let backup = gw.data_dir.join("keyring.install-backup");
    std::fs::copy(&keyring, &backup).unwrap();
    let (_, done) = rotate_master(&gw).await;
    assert_eq!(done.last().unwrap().state, pb::JobState::Done as i32);
    let keks = done.last().unwrap().total;
    assert!(keks > 0);
    gw.stop().await;

    std::fs::copy(&backup, &keyring).unwrap();
    let message = refusal_of(&config(&gw.data_dir), &gw.data_dir.join("objects")).await;
    assert_eq!(
        message,
        format!(
            "refusing to start: keyring {}: lacks master version 2 (added {}), which {keks} \
             KEK versions are under: restore a keyring backed up after that",
            keyring.display(),
            today()
        )
    );
}

/// A replica on the deployment's PostgreSQL key store with a data
/// directory of its own.
fn replica(data_dir: &Path, url: &str) -> sealgate::config::Config {
    let mut c = config(data_dir);
    c.keystore.backend = sealgate::config::KeyStoreBackend::Postgres;
    c.keystore.url = Some(url.to_string());
    c.keystore.max_connections = 4;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_never_make_master_keys_of_their_own() {
    let url = crate::support::pgenv::fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    // The first replica makes the deployment's keyring; nothing is written
    // yet (no KEK).
    let mut a = TestGateway::start_config(replica(&a_dir, &url)).await;
    a.stop().await;
    let objects = a_dir.join("objects");

    // A second replica without the keyring is refused, and makes none.
    let b_dir = tmp.path().join("b");
    let message = refusal_of(&replica(&b_dir, &url), &objects).await;
    assert!(
        message.contains(&format!(
            "keyring {} is missing but the key store",
            b_dir.join("keyring").display()
        )) && message.contains("records this deployment's master keys"),
        "{message}"
    );
    assert!(!b_dir.join("keyring").exists(), "no keyring was made");

    // A second replica that made its own keyring is refused too.
    std::fs::create_dir_all(&b_dir).unwrap();
    LocalKeyring::create(&b_dir.join("keyring")).unwrap();
    let message = refusal_of(&replica(&b_dir, &url), &objects).await;
    assert!(
        message.contains("holds another naming key than the key store records"),
        "{message}"
    );

    // With the deployment's keyring it starts.
    std::fs::copy(a_dir.join("keyring"), b_dir.join("keyring")).unwrap();
    let blob: std::sync::Arc<dyn sealgate::blob::BlobStore> = std::sync::Arc::new(
        sealgate::blob::fs::FsBlobStore::open(&objects)
            .await
            .unwrap(),
    );
    let opened = sealgate::server::Gateway::open(&replica(&b_dir, &url), blob).await;
    assert!(opened.is_ok(), "{:?}", opened.err().map(|e| e.to_string()));
}

async fn masters(gw: &TestGateway) -> Vec<u32> {
    hierarchy(gw)
        .await
        .masters
        .iter()
        .map(|m| m.version)
        .collect()
}

/// Two replicas with master keys in KMS on one PostgreSQL key store: what
/// one changes of the master versions, the other reports at its next call
/// (no cache to expire), as it does the jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_on_master_versions_at_their_next_call() {
    let arn = kms_env::create_key().await;
    let url = crate::support::pgenv::fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let on = |dir: &str| {
        let mut c = replica(&tmp.path().join(dir), &url);
        kms_env::configure(&mut c, &arn);
        c
    };
    let a = TestGateway::start_config(on("a")).await;
    put_users(&a, 6).await;
    let b = TestGateway::start_config(on("b")).await;
    assert_eq!(masters(&a).await, [1]);
    assert_eq!(masters(&b).await, [1]);

    let (_, done) = rotate_master(&b).await;
    assert_eq!(done.last().unwrap().state, pb::JobState::Done as i32);
    // A, which made nothing of it, reports it at once.
    assert_eq!(masters(&a).await, [1, 2]);
    assert_eq!(
        crate::support::gateway::key_status(&a, "id-0")
            .await
            .master_key_version,
        2
    );
    let jobs = crate::support::gateway::list_jobs(&a, pb::JobState::Done, 10).await;
    let job_id = &done.last().unwrap().job_id;
    assert!(jobs.iter().any(|j| &j.job_id == job_id), "{jobs:?}");

    b.admin()
        .await
        .retire_master_key(pb::RetireMasterKeyRequest { version: 1 })
        .await
        .expect("retire 1 through B");
    assert_eq!(masters(&a).await, [2]);
}

/// Replicas with local keyrings: a master rotation through one adds a
/// version to its keyring only; the other, reading a KEK now under it,
/// answers FAILED_PRECONDITION/MASTER_KEY_UNUSABLE naming the missing
/// version and the fix (not INTERNAL, not "retry later").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_keyring_lacks_a_rotation_names_it_per_call() {
    let url = crate::support::pgenv::fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    // One bucket for both.
    let backend = Backend::create(BackendKind::S3).await;
    let on = |dir: &Path| {
        let mut c = replica(dir, &url);
        backend.configure(&mut c);
        c
    };
    let a = TestGateway::start_config(on(&a_dir)).await;
    put_users(&a, 4).await;
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::copy(a_dir.join("keyring"), b_dir.join("keyring")).unwrap();
    let b = TestGateway::start_config(on(&b_dir)).await;
    // B has started (its checks passed) before A rotates.
    crate::support::eventually("B serves", std::time::Duration::from_secs(30), || async {
        crate::support::gateway::health(&b).await
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    })
    .await;

    rotate_master(&a).await;
    let status = crate::support::gateway::expect_reason(
        crate::support::gateway::get(&mut b.content().await, "id-1", SPACE, "photo", None).await,
        tonic::Code::FailedPrecondition,
        "MASTER_KEY_UNUSABLE",
        "a KEK under a master version B's keyring lacks",
    );
    assert!(
        status
            .message()
            .contains("master key version 2 is not in this process's keyring"),
        "{}",
        status.message()
    );
}
