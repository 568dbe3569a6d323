//! EraseUser latency through the real binary, for users holding 10 and
//! 1,000 objects, on the SQLite and on the PostgreSQL key store, beside a
//! same-run baseline.
//!
//! ```text
//! cargo bench --bench erasure                  # OBJECTS=10,1000 ROUNDS=20
//! BACKENDS=sqlite cargo bench --bench erasure  # one backend (sqlite, postgres)
//! cargo test --bench erasure                   # smoke run: OBJECTS=10,50 ROUNDS=2
//! ```
//!
//! Starts `sealgate serve` (this build's binary, filesystem object store)
//! on loopback; PostgreSQL is a cluster of Debian's server binaries started
//! for the run (`tests/it/pgenv.rs`, `fsync=off`). For each object count,
//! ROUNDS users are given that many 1 KiB items (untimed), then each is
//! erased by one EraseUser call, timed at the client. The baseline is
//! KeyStatus of a user who is not erased (one call that reads the user's
//! key versions from the key store), timed on the same server between the
//! erasures.
//! Prints the median and 90th percentile of each and the ratio of medians.
//!
//! Then batches: BATCH users (default 1,000) with one item each are erased
//! by one EraseUsers call, beside BATCH other users erased one EraseUser
//! call at a time (the baseline), both timed whole at the client.
//! An erasure's object count matters only to the garbage collection that
//! follows it, which runs after the call returns.

use std::path::Path;
use std::time::{Duration, Instant};

use sealgate::api::pb;
use tonic::transport::Channel;

#[path = "common/mod.rs"]
mod common;
use common::{env_or, smoke};

/// The tests' launchers of PostgreSQL and of the real binary
/// (`tests/it/support/`).
#[path = "../tests/it/support"]
#[allow(dead_code)]
mod support {
    pub mod host;
    pub mod launch;
    pub mod metrics;
    pub mod pgenv;
    pub mod serve;
    pub mod wait;
}
use support::pgenv;
use support::serve::{Serve, ServeProcess};

/// A `sealgate serve` process (killed when dropped) and its endpoint.
struct Server {
    _process: ServeProcess,
    endpoint: String,
}

impl Server {
    async fn start(data_dir: &Path, key_store_url: Option<&str>) -> Self {
        // Warnings only, but for the server's lifecycle lines: the
        // readiness line the builder waits for is one.
        let mut serve = Serve::new(data_dir)
            .rust_log("warn,sealgate::server=info")
            .env("SEALGATE_METRICS_LISTEN", "");
        if let Some(url) = key_store_url {
            serve = serve
                .env("SEALGATE_KEYSTORE_BACKEND", "postgres")
                .env("SEALGATE_KEYSTORE_URL", url);
        }
        let mut process = serve.spawn();
        let addr = process
            .ready_within(Duration::from_secs(60))
            .await
            .unwrap_or_else(|log| panic!("sealgate serve did not listen:\n{log}"));
        Self {
            _process: process,
            endpoint: format!("http://{addr}"),
        }
    }
}

/// Median and 90th percentile, in milliseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.9))
}

/// Gives `user` `objects` items of 1 KiB, 32 calls in flight.
async fn fill(channel: &Channel, user: &str, objects: usize) {
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..objects {
        if pending.len() >= 32 {
            pending.join_next().await.unwrap().unwrap();
        }
        let mut client = pb::content_service_client::ContentServiceClient::new(channel.clone());
        let (user, id) = (user.to_string(), format!("item-{i}"));
        pending.spawn(async move {
            client
                .put_item(pb::PutItemRequest {
                    user_id: user,
                    space: "channels".into(),
                    item_id: id,
                    content: vec![7u8; 1024].into(),
                    ..Default::default()
                })
                .await
                .expect("put item");
        });
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
}

/// `n` users of `prefix`, one item each, 64 calls in flight.
async fn fill_users(channel: &Channel, prefix: &str, n: usize) -> Vec<String> {
    let users: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let mut pending = tokio::task::JoinSet::new();
    for user in &users {
        if pending.len() >= 64 {
            pending.join_next().await.unwrap().unwrap();
        }
        let channel = channel.clone();
        let user = user.clone();
        pending.spawn(async move { fill(&channel, &user, 1).await });
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
    users
}

/// One EraseUsers of `batch` users beside as many EraseUser calls.
async fn batches(backend: &str, channel: &Channel, batch: usize) {
    let mut erasure = pb::erasure_service_client::ErasureServiceClient::new(channel.clone());
    let singles = fill_users(channel, "single", batch).await;
    let batched = fill_users(channel, "batched", batch).await;
    let started = Instant::now();
    for user in &singles {
        erasure
            .erase_user(pb::EraseUserRequest {
                user_id: user.clone(),
                after_seconds: 0,
            })
            .await
            .expect("erase user");
    }
    let one_at_a_time = started.elapsed();
    let started = Instant::now();
    let results = erasure
        .erase_users(pb::EraseUsersRequest {
            user_ids: batched,
            request_id: String::new(),
            after_seconds: 0,
        })
        .await
        .expect("erase users")
        .into_inner()
        .results;
    let one_batch = started.elapsed();
    assert!(results
        .iter()
        .all(|r| matches!(r.result, Some(pb::erase_users_result::Result::Receipt(_)))));
    println!(
        "{backend:8} {batch} users: one EraseUsers {:8.1} ms | baseline {batch} EraseUser calls {:8.1} ms | ratio {:.3}",
        one_batch.as_secs_f64() * 1000.0,
        one_at_a_time.as_secs_f64() * 1000.0,
        one_batch.as_secs_f64() / one_at_a_time.as_secs_f64()
    );
}

async fn run(backend: &str, key_store_url: Option<&str>, counts: &[usize], rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), key_store_url).await;
    let channel = Channel::from_shared(server.endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut erasure = pb::erasure_service_client::ErasureServiceClient::new(channel.clone());
    let mut admin = pb::key_admin_service_client::KeyAdminServiceClient::new(channel.clone());
    fill(&channel, "baseline-user", 1).await;
    for &objects in counts {
        let (mut erase, mut baseline) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let user = format!("user-{objects}-{round}");
            fill(&channel, &user, objects).await;
            let started = Instant::now();
            admin
                .key_status(pb::KeyStatusRequest {
                    user_id: "baseline-user".into(),
                    ..Default::default()
                })
                .await
                .expect("key status");
            baseline.push(started.elapsed());
            let started = Instant::now();
            erasure
                .erase_user(pb::EraseUserRequest {
                    user_id: user.clone(),
                    after_seconds: 0,
                })
                .await
                .expect("erase user");
            erase.push(started.elapsed());
        }
        let (erase_p50, erase_p90) = summary(erase);
        let (base_p50, base_p90) = summary(baseline);
        println!(
            "{backend:8} {objects:5} objects: EraseUser p50 {erase_p50:7.2} ms p90 {erase_p90:7.2} ms | \
             baseline KeyStatus p50 {base_p50:6.2} ms p90 {base_p90:6.2} ms | ratio {:.2}",
            erase_p50 / base_p50
        );
    }
    batches(
        backend,
        &channel,
        env_or("BATCH", if smoke() { 50 } else { 1000 }),
    )
    .await;
}

#[tokio::main]
async fn main() {
    let smoke = smoke();
    let counts: Vec<usize> = env_or(
        "OBJECTS",
        String::from(if smoke { "10,50" } else { "10,1000" }),
    )
    .split(',')
    .map(|n| n.trim().parse().expect("OBJECTS: numbers"))
    .collect();
    let rounds: usize = env_or("ROUNDS", if smoke { 2 } else { 20 });
    println!("EraseUser latency, {rounds} users per object count");
    for backend in env_or("BACKENDS", String::from("sqlite,postgres")).split(',') {
        match backend.trim() {
            "sqlite" => run("sqlite", None, &counts, rounds).await,
            "postgres" => {
                let url = pgenv::fresh_database().await;
                run("postgres", Some(&url), &counts, rounds).await;
            }
            other => panic!("BACKENDS: unknown backend {other:?} (sqlite, postgres)"),
        }
    }
}
