//! Key rotation on the SQLite and on the PostgreSQL key store, beside a
//! same-run baseline.
//!
//! ```text
//! cargo bench --bench rotation          # USERS=100000 SHARDS=256 by default
//! BACKENDS=postgres cargo bench --bench rotation   # one backend (sqlite, postgres)
//! cargo test --bench rotation           # smoke run: USERS=300 SHARDS=4 by default
//! ```
//!
//! PostgreSQL is a cluster of Debian's server binaries started for the run
//! on loopback (the tests' launcher, `tests/it/support/pgenv.rs`;
//! `fsync=off`, so the figure leaves out the disk's flush time).
//!
//! Builds a key store of USERS users over SHARDS shards (KEKs wrapped by a
//! local keyring, user keys wrapped by the KEKs, as the gateway writes
//! them), then times, through the real job machinery (`RotateKek`,
//! `RotateMaster` on a `JobRunner`): a KEK rotation of every shard, in user
//! keys re-wrapped per second, and a master rotation. Each job is timed
//! from the request to its DONE state read back right after its handler
//! returned (the handler says so; no polling interval).
//!
//! Two baselines of one re-wrap, one unwrap plus one wrap of a 32-byte
//! user key per user:
//! - raw aws-lc-rs AES-256-GCM: each key opened and sealed again with one
//!   prepared key per side and a counter nonce, the cryptographic floor;
//! - sealgate's KEK wrap (`Kek::unwrap_user_key`, `Kek::wrap_user_key`),
//!   which builds the AES key schedule and draws a random nonce per call.
//!
//! Prints the rotation's rate beside both and the ratios.

#[path = "common/mod.rs"]
mod common;
use common::{env_or, smoke};

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use sealgate::crypto::keys::{kek_aad, user_key_aad};
use sealgate::crypto::{Kek, NamingKey, UserKey, Wrapped};
use sealgate::jobs::rotation::{KekShards, RotateKek, RotateMaster};
use sealgate::jobs::{JobError, JobHandler, JobRunner, JobSettings, LeasedJob};
use sealgate::keyadmin::KeyAdmin;
use sealgate::keys::keyring::{LocalKeyring, MasterKeyProvider};
use sealgate::keys::postgres::{PgSettings, PostgresKeyStore};
use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::store::{
    JobRecord, JobState, KekRecord, KeyStore, JOB_KIND_ROTATE_KEK, JOB_KIND_ROTATE_MASTER,
};
use sealgate::keys::{unix_ms, CachePolicy, KeyHierarchy};

/// A job handler that reports each run of the handler it wraps as it
/// returns (the job's id and whether the run succeeded), so that the bench
/// waits on the job's end instead of polling the store on an interval.
struct Reporting {
    handler: Arc<dyn JobHandler>,
    ran: mpsc::UnboundedSender<(String, Result<(), JobError>)>,
}

#[async_trait::async_trait]
impl JobHandler for Reporting {
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
        let result = self.handler.run(job).await;
        let _ = self.ran.send((job.record().id.clone(), result.clone()));
        result
    }
}

/// Waits until job `id` has ended: until its handler reports a run, then
/// until the runner's record of the end (one write after the handler
/// returns) reads back. A run that failed ends the bench: it would measure
/// retries, not a rotation.
async fn ended(
    store: &dyn KeyStore,
    ran: &mut mpsc::UnboundedReceiver<(String, Result<(), JobError>)>,
    id: &str,
) -> JobRecord {
    loop {
        let (ran_id, result) = ran.recv().await.expect("the job runner runs");
        if ran_id != id {
            continue;
        }
        if let Err(e) = result {
            panic!("a run of job {id} failed: {e}");
        }
        loop {
            let job = store.job(id).await.unwrap().unwrap();
            if matches!(job.state, JobState::Done | JobState::Failed) {
                return job;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The tests' PostgreSQL launcher (`tests/it/support/`).
#[path = "../tests/it/support"]
#[allow(dead_code)]
mod support {
    pub mod host;
    pub mod launch;
    pub mod pgenv;
}
use support::pgenv;

/// Where the bench's user keys go.
enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

#[tokio::main]
async fn main() {
    let backends = std::env::var("BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    for backend in backends.split(',') {
        let dir = tempfile::tempdir().unwrap();
        match backend.trim() {
            "sqlite" => run(Backend::Sqlite(dir.path().join("keys.db")), dir.path()).await,
            "postgres" => {
                let url = pgenv::fresh_database().await;
                run(Backend::Postgres(url), dir.path()).await;
            }
            other => panic!("BACKENDS: unknown backend {other:?} (sqlite, postgres)"),
        }
    }
}

async fn run(backend: Backend, dir: &std::path::Path) {
    let smoke = smoke();
    let users: u32 = env_or("USERS", if smoke { 300 } else { 100_000 });
    let shards: u32 = env_or("SHARDS", if smoke { 4 } else { 256 });
    let (master, naming): (LocalKeyring, NamingKey) =
        LocalKeyring::create(&dir.join("keyring")).unwrap();
    let master: Arc<dyn MasterKeyProvider> = Arc::new(master);
    let store: Arc<dyn KeyStore> = match &backend {
        Backend::Sqlite(path) => Arc::new(SqliteKeyStore::open(path).await.unwrap()),
        Backend::Postgres(url) => Arc::new(
            PostgresKeyStore::open(&PgSettings {
                url: url.clone(),
                max_connections: 8,
                acquire_timeout: std::time::Duration::from_secs(10),
            })
            .await
            .unwrap(),
        ),
    };

    // The store as the gateway would have written it.
    let mut keks = Vec::new();
    for shard in 0..shards {
        let kek = Kek::generate().unwrap();
        let (master_version, wrapped) = master.wrap_kek(&kek, &kek_aad(shard, 1)).await.unwrap();
        store
            .insert_kek(&KekRecord {
                shard,
                version: 1,
                master_version,
                wrapped,
                created_at_ms: unix_ms(),
            })
            .await
            .unwrap();
        keks.push(kek);
    }
    let mut wrapped_keys = Vec::with_capacity(users as usize);
    for u in 0..users {
        let p = naming.pseudonym(&format!("user-{u}"));
        let shard = p.shard(shards);
        let key = UserKey::generate().unwrap();
        let wrapped = keks[shard as usize]
            .wrap_user_key(&key, &user_key_aad(&p, 1, shard, 1))
            .unwrap();
        wrapped_keys.push((p, shard, wrapped.as_bytes().to_vec()));
    }
    insert_user_keys(&backend, &wrapped_keys).await;

    let raw = raw_rewrap_rate(&wrapped_keys);

    // sealgate's KEK wrap: one unwrap and one wrap per user, nothing else.
    let to = Kek::generate().unwrap();
    let started = Instant::now();
    for (p, shard, wrapped) in &wrapped_keys {
        let key = keks[*shard as usize]
            .unwrap_user_key(
                &Wrapped::<UserKey>::from_bytes(wrapped).unwrap(),
                &user_key_aad(p, 1, *shard, 1),
            )
            .unwrap();
        std::hint::black_box(
            to.wrap_user_key(&key, &user_key_aad(p, 1, *shard, 2))
                .unwrap(),
        );
    }
    let kek_wrap = f64::from(users) / started.elapsed().as_secs_f64();

    let keys = Arc::new(KeyHierarchy::new(
        store.clone(),
        master,
        naming,
        shards,
        &CachePolicy {
            user_ttl: Duration::from_secs(60),
            kek_ttl: Duration::from_secs(3600),
            max_users: 1000,
        },
    ));
    let (ran_tx, mut ran) = mpsc::unbounded_channel();
    let jobs = JobRunner::builder(
        store.clone(),
        JobSettings {
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(5),
        },
    )
    .handler(
        JOB_KIND_ROTATE_KEK,
        Arc::new(Reporting {
            handler: Arc::new(RotateKek::new(keys.clone())),
            ran: ran_tx.clone(),
        }),
    )
    .handler(
        JOB_KIND_ROTATE_MASTER,
        Arc::new(Reporting {
            handler: Arc::new(RotateMaster::new(keys.clone())),
            ran: ran_tx,
        }),
    )
    .start();
    let admin = KeyAdmin::new(keys.clone(), store.clone(), jobs.clone());

    let started = Instant::now();
    let job = admin.rotate_kek("bench", KekShards::All).await.unwrap();
    let job = ended(&*store, &mut ran, &job.id).await;
    let kek_time = started.elapsed();
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!(job.done, u64::from(users));
    let rotation = f64::from(users) / kek_time.as_secs_f64();

    let started = Instant::now();
    let (job, _) = admin.rotate_master("bench").await.unwrap();
    let job = ended(&*store, &mut ran, &job.id).await;
    let master_time = started.elapsed();
    assert_eq!(job.state, JobState::Done, "{job:?}");
    jobs.shutdown().await;

    let name = match backend {
        Backend::Sqlite(_) => "SQLite",
        Backend::Postgres(_) => "PostgreSQL",
    };
    store.close().await;
    println!("{name} key store: users {users}, shards {shards}");
    println!("baseline: raw aws-lc-rs AES-256-GCM open+seal, prepared keys: {raw:>10.0} keys/s");
    println!("baseline: sealgate KEK unwrap+wrap (key schedule, nonce per call): {kek_wrap:>10.0} keys/s");
    println!(
        "KEK rotation of every shard:                 {rotation:>10.0} users/s ({:.2} s)",
        kek_time.as_secs_f64()
    );
    println!(
        "ratio rotation / raw AES-256-GCM: {:.3}; rotation / sealgate KEK wrap: {:.3}",
        rotation / raw,
        rotation / kek_wrap
    );
    println!(
        "master rotation ({shards} KEKs re-wrapped):        {:.3} s (request to DONE read back)",
        master_time.as_secs_f64()
    );
}

/// User keys re-wrapped per second by raw aws-lc-rs AES-256-GCM: each
/// user's 32 bytes, sealed beforehand under one prepared key with the
/// user's AAD, opened and sealed again under a second prepared key, with a
/// counter nonce. What a re-wrap cannot go below.
fn raw_rewrap_rate(users: &[(sealgate::crypto::Pseudonym, u32, Vec<u8>)]) -> f64 {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
    let key = |byte: u8| LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[byte; 32]).unwrap());
    let (from, to) = (key(1), key(2));
    let nonce = |i: usize| {
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    // Setting up, not measured: every user's key sealed under `from`.
    let sealed: Vec<Vec<u8>> = users
        .iter()
        .enumerate()
        .map(|(i, (p, shard, _))| {
            let mut in_out = vec![0x5a; 32];
            from.seal_in_place_append_tag(
                nonce(i),
                Aad::from(user_key_aad(p, 1, *shard, 1)),
                &mut in_out,
            )
            .unwrap();
            in_out
        })
        .collect();
    // As the KEK baseline does: both AADs made per user.
    let started = Instant::now();
    for (i, (sealed, (p, shard, _))) in sealed.iter().zip(users).enumerate() {
        let mut in_out = sealed.clone();
        let key = from
            .open_in_place(
                nonce(i),
                Aad::from(user_key_aad(p, 1, *shard, 1)),
                &mut in_out,
            )
            .unwrap();
        let mut rewrapped = key.to_vec();
        to.seal_in_place_append_tag(
            nonce(i),
            Aad::from(user_key_aad(p, 1, *shard, 2)),
            &mut rewrapped,
        )
        .unwrap();
        std::hint::black_box(rewrapped);
    }
    users.len() as f64 / started.elapsed().as_secs_f64()
}

/// Writes the user keys straight into the store's table, in one
/// transaction (setting up, not measured).
async fn insert_user_keys(backend: &Backend, keys: &[(sealgate::crypto::Pseudonym, u32, Vec<u8>)]) {
    match backend {
        Backend::Sqlite(path) => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let mut tx = pool.begin().await.unwrap();
            for (p, shard, wrapped) in keys {
                sqlx::query(
                    "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state, created_at_ms)
                     VALUES (?, 1, ?, 1, ?, 'active', ?)",
                )
                .bind(p.to_string())
                .bind(i64::from(*shard))
                .bind(wrapped)
                .bind(unix_ms())
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
            pool.close().await;
        }
        Backend::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            for chunk in keys.chunks(10_000) {
                let pseudonyms: Vec<String> = chunk.iter().map(|(p, _, _)| p.to_string()).collect();
                let shards: Vec<i64> = chunk.iter().map(|(_, s, _)| i64::from(*s)).collect();
                let wrapped: Vec<&[u8]> = chunk.iter().map(|(_, _, w)| w.as_slice()).collect();
                sqlx::query(
                    "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state, created_at_ms)
                     SELECT p, 1, s, 1, w, 'active', $4 FROM unnest($1::text[], $2::bigint[], $3::bytea[]) AS t(p, s, w)",
                )
                .bind(pseudonyms)
                .bind(shards)
                .bind(wrapped)
                .bind(unix_ms())
                .execute(&pool)
                .await
                .unwrap();
            }
            sqlx::query("VACUUM ANALYZE user_keys")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}
