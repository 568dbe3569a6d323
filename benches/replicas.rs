//! 4 MiB put+get through two gateway replicas against one, in the same run,
//! on the same S3 server (moto) and PostgreSQL key store.
//!
//! ```text
//! cargo bench --bench replicas      # SECONDS=20 CONCURRENCY=8 by default
//! ```
//!
//! Starts moto and a PostgreSQL cluster as the tests do, two `sealgate
//! serve` processes (this build's binary) sharing one bucket and one key
//! store, each with its own data directory holding the same keyring, then
//! runs `sealgate bench --workload put-get --size 4194304` through replica
//! A alone and through A and B (`--replica`: each upload is read back
//! through the other replica), alternating, and prints MB/s of both and
//! their ratio. On one machine both replicas share its cores, so the ratio
//! shows what a second replica costs or gains here, not on separate hosts.
//!
//! Under `cargo test --benches` (no `--bench` argument) it is a smoke run:
//! one second per run, two callers, one round (unless the environment
//! says otherwise).

#[path = "common/mod.rs"]
mod common;
use common::{env_or, smoke};

/// The tests' launchers of moto and PostgreSQL (`tests/it/support/`).
#[path = "../tests/it/support"]
#[allow(dead_code)]
mod support {
    pub mod host;
    pub mod launch;
    pub mod metrics;
    pub mod pgenv;
    pub mod s3env;
    pub mod serve;
    pub mod wait;
}
use support::serve::{Serve, ServeProcess};
use support::{pgenv, s3env};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SEALGATE: &str = env!("CARGO_BIN_EXE_sealgate");

/// A `sealgate serve` process (killed when dropped) and its endpoint.
struct Replica {
    _process: ServeProcess,
    endpoint: String,
}

impl Replica {
    async fn start(data_dir: &Path, s3: &str, bucket: &str, key_store: &str) -> Self {
        // Warnings only, but for the server's lifecycle lines: the
        // readiness line the builder waits for is one.
        let mut process = Serve::new(data_dir)
            .rust_log("warn,sealgate::server=info")
            .env("SEALGATE_METRICS_LISTEN", "")
            .env("SEALGATE_BLOB_BACKEND", "s3")
            .env("SEALGATE_S3_BUCKET", bucket)
            .env("SEALGATE_S3_ENDPOINT", s3)
            .env("SEALGATE_S3_FORCE_PATH_STYLE", "true")
            .env("SEALGATE_KEYSTORE_BACKEND", "postgres")
            .env("SEALGATE_KEYSTORE_URL", key_store)
            .env("AWS_ACCESS_KEY_ID", s3env::ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", s3env::SECRET_KEY)
            .spawn();
        let addr = process
            .ready_within(Duration::from_secs(60))
            .await
            .unwrap_or_else(|log| panic!("replica did not listen:\n{log}"));
        Self {
            _process: process,
            endpoint: format!("http://{addr}"),
        }
    }
}

/// MB/s of put+get of one `sealgate bench` run.
fn put_get(endpoint: &str, replica: Option<&str>, seconds: u64, concurrency: u64) -> f64 {
    let mut cmd = Command::new(SEALGATE);
    cmd.args(["bench", "--endpoint", endpoint, "--workload", "put-get"])
        .args(["--size", "4194304", "--json"])
        .args(["--duration", &seconds.to_string()])
        .args(["--concurrency", &concurrency.to_string()]);
    if let Some(r) = replica {
        cmd.args(["--replica", r]);
    }
    let out = cmd.output().expect("run sealgate bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["errors"], serde_json::json!({}), "errors: {report}");
    report["mb_per_second"].as_f64().expect("mb_per_second")
}

fn main() {
    let smoke = smoke();
    let seconds = env_or("SECONDS", if smoke { 1 } else { 20 });
    let concurrency = env_or("CONCURRENCY", if smoke { 2 } else { 8 });
    let rounds = if smoke { 1 } else { 2 };
    let moto = s3env::Moto::start();
    let s3 = moto.endpoint();
    let bucket = s3env::bucket_name();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3env::create_bucket(&s3, &bucket, s3env::REGION, false));
    let pg = pgenv::Postgres::start();
    let url = rt.block_on(pg.fresh_database());

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = rt.block_on(Replica::start(dir_a.path(), &s3, &bucket, &url));
    let keyring = dir_a.path().join("keyring");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !keyring.exists() {
        assert!(Instant::now() < deadline, "replica A made no keyring");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The replicas share the deployment's keyring (made by the first).
    std::fs::copy(dir_a.path().join("keyring"), dir_b.path().join("keyring")).unwrap();
    let b = rt.block_on(Replica::start(dir_b.path(), &s3, &bucket, &url));

    println!("put+get of 4 MiB objects, {concurrency} callers, {seconds} s per run");
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        one.push(put_get(&a.endpoint, None, seconds, concurrency));
        two.push(put_get(
            &a.endpoint,
            Some(&b.endpoint),
            seconds,
            concurrency,
        ));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("one replica:   {:8.1} MB/s (runs {one:.1?})", mean(&one));
    println!("two replicas:  {:8.1} MB/s (runs {two:.1?})", mean(&two));
    println!("ratio two / one: {:.2}", mean(&two) / mean(&one));
}
