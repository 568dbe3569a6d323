//! KEK rotation jobs of many small batches on both key stores. A rotation
//! of every shard reads each batch while the one before it is written; one
//! of some shards reads through the KEK index after each write. Either
//! way every user key moves once, opens to the same key afterwards, and
//! an erasure racing the rotation stays an erasure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sealgate::crypto::{Dek, Pseudonym, Suite, WrappedDek};
use sealgate::jobs::rotation::{KekShards, RotateKek};
use sealgate::jobs::{JobRunner, JobSettings};
use sealgate::keyadmin::KeyAdmin;
use sealgate::keys::keyring::LocalKeyring;
use sealgate::keys::store::{JobRecord, JobState, KeyStore, JOB_KIND_ROTATE_KEK};
use sealgate::keys::{CachePolicy, KeyHierarchy};

use crate::keystore::{keystore_tests, Fixture};

keystore_tests!(
    a_rotation_of_every_shard_in_many_batches_moves_every_key_once,
    a_rotation_of_some_shards_in_many_batches_moves_only_theirs,
    erasures_racing_a_rotation_in_many_batches_stay_erased,
);

const SHARDS: u32 = 4;

/// A hierarchy over `store` with the keyring at `keyring` (created if
/// `create`), a KEK rotation runner re-wrapping `batch` keys per
/// transaction, and its admin.
fn hierarchy(store: &Arc<dyn KeyStore>, keyring: &Path, create: bool) -> Arc<KeyHierarchy> {
    let (master, naming) = if create {
        LocalKeyring::create(keyring).unwrap()
    } else {
        LocalKeyring::load(keyring).unwrap()
    };
    Arc::new(KeyHierarchy::new(
        store.clone(),
        Arc::new(master),
        naming,
        SHARDS,
        &CachePolicy {
            user_ttl: Duration::from_secs(60),
            kek_ttl: Duration::from_secs(60),
            max_users: 1_000,
        },
    ))
}

fn admin(store: &Arc<dyn KeyStore>, keys: &Arc<KeyHierarchy>, batch: u32) -> KeyAdmin {
    let jobs = JobRunner::builder(
        store.clone(),
        JobSettings {
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(5),
        },
    )
    .handler(
        JOB_KIND_ROTATE_KEK,
        Arc::new(RotateKek::new(keys.clone()).with_batch(batch)),
    )
    .start();
    KeyAdmin::new(keys.clone(), store.clone(), jobs)
}

/// A store with a new keyring and `n` users.
struct Rig {
    /// Holds the SQLite store's directory.
    _fixture: Fixture,
    _dir: tempfile::TempDir,
    keyring: std::path::PathBuf,
    store: Arc<dyn KeyStore>,
    keys: Arc<KeyHierarchy>,
    users: Vec<(Pseudonym, WrappedDek)>,
}

impl Rig {
    async fn new(f: Fixture, n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keyring = dir.path().join("keyring");
        let store = f.open().await;
        let keys = hierarchy(&store, &keyring, true);
        let users = users(&keys, n).await;
        Self {
            _fixture: f,
            _dir: dir,
            keyring,
            store,
            keys,
            users,
        }
    }
}

/// Users `0..n`, each with a user key and a DEK wrapped under it.
async fn users(keys: &KeyHierarchy, n: usize) -> Vec<(Pseudonym, WrappedDek)> {
    let mut out = Vec::new();
    for u in 0..n {
        let p = keys.pseudonym(&format!("user-{u}")).unwrap();
        let (version, key) = keys.active_user_key(&p).await.unwrap();
        assert_eq!(version, 1);
        let dek = Dek::generate().unwrap();
        out.push((p, key.wrap_dek(Suite::Aes256Gcm, &dek, b"object").unwrap()));
    }
    out
}

/// The job once it has ended.
async fn ended(admin: &KeyAdmin, id: &str) -> JobRecord {
    let mut seen = None;
    loop {
        let job = admin.job_change(id, seen.as_ref()).await.unwrap();
        if matches!(job.state, JobState::Done | JobState::Failed) {
            return job;
        }
        seen = Some(job);
    }
}

/// Each user's (shard, KEK version), in table order.
async fn kek_versions(store: &dyn KeyStore) -> Vec<(Pseudonym, u32, u32)> {
    let rows = store.user_keys_in_order(None, 10_000).await.unwrap();
    rows.iter()
        .map(|r| (r.pseudonym, r.shard, r.kek_version))
        .collect()
}

/// Through a new hierarchy (nothing cached), each user's key opens the
/// DEK wrapped under it before the rotation.
async fn open_all(store: &Arc<dyn KeyStore>, keyring: &Path, users: &[(Pseudonym, WrappedDek)]) {
    let fresh = hierarchy(store, keyring, false);
    for (p, wrapped) in users {
        let key = fresh.user_key(p, 1).await.unwrap();
        assert!(
            key.unwrap_dek(Suite::Aes256Gcm, wrapped, b"object").is_ok(),
            "{p}"
        );
    }
}

async fn a_rotation_of_every_shard_in_many_batches_moves_every_key_once(f: Fixture) {
    let r = Rig::new(f, 50).await;
    let admin = admin(&r.store, &r.keys, 7);
    let job = admin.rotate_kek("test", KekShards::All).await.unwrap();
    let job = ended(&admin, &job.id).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    // Eight batches; each key re-wrapped once (a batch read twice would
    // count twice).
    assert_eq!((job.done, job.total), (50, 50));
    let rows = kek_versions(&*r.store).await;
    assert_eq!(rows.len(), 50);
    assert!(rows.iter().all(|(_, _, v)| *v == 2), "{rows:?}");
    let keks = r.store.kek_infos().await.unwrap();
    assert_eq!(keks.len(), SHARDS as usize);
    assert!(keks.iter().all(|k| k.version == 2), "{keks:?}");
    open_all(&r.store, &r.keyring, &r.users).await;
}

async fn a_rotation_of_some_shards_in_many_batches_moves_only_theirs(f: Fixture) {
    let r = Rig::new(f, 50).await;
    let moving = |shard: u32| shard == 1 || shard == 2;
    let expected = kek_versions(&*r.store)
        .await
        .iter()
        .filter(|(_, s, _)| moving(*s))
        .count() as u64;
    assert!(
        expected > 6,
        "too few users in shards 1 and 2 for three batches"
    );
    let admin = admin(&r.store, &r.keys, 3);
    let job = admin
        .rotate_kek("test", KekShards::Some(vec![1, 2]))
        .await
        .unwrap();
    let job = ended(&admin, &job.id).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!((job.done, job.total), (expected, expected));
    for (p, shard, version) in kek_versions(&*r.store).await {
        assert_eq!(
            version,
            if moving(shard) { 2 } else { 1 },
            "{p} of shard {shard}"
        );
    }
    open_all(&r.store, &r.keyring, &r.users).await;
}

async fn erasures_racing_a_rotation_in_many_batches_stay_erased(f: Fixture) {
    let r = Rig::new(f, 60).await;
    let admin = admin(&r.store, &r.keys, 5);
    let job = admin.rotate_kek("test", KekShards::All).await.unwrap();
    let erased: Vec<Pseudonym> = r.users.iter().step_by(3).map(|(p, _)| *p).collect();
    for p in &erased {
        r.keys.erase(p, "test").await.unwrap();
    }
    let job = ended(&admin, &job.id).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let rows = kek_versions(&*r.store).await;
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|(_, _, v)| *v == 2), "{rows:?}");
    for p in &erased {
        assert!(r.store.user_keys(p).await.unwrap().is_empty(), "{p}");
        assert!(r.store.tombstone(p).await.unwrap().is_some(), "{p}");
    }
    let live: Vec<_> = r
        .users
        .into_iter()
        .filter(|(p, _)| !erased.contains(p))
        .collect();
    open_all(&r.store, &r.keyring, &live).await;
}
