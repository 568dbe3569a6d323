//! One process per data directory: `serve` takes an exclusive lock on
//! `DATA_DIR/lock` (recording its pid) before it opens the key store. A
//! second `serve` on the same directory is refused in one line naming the
//! lock and the pid that holds it; the kernel releases the lock when the
//! holder dies, so a SIGKILLed gateway leaves no stale lock behind.

use std::path::Path;
use std::time::Duration;

use sealgate::config::KeyStoreBackend;
use sealgate::server::Gateway;

use crate::support::gateway::{config, TestGateway};
use crate::support::pgenv;
use crate::support::serve::{Serve, ServeProcess};

const READY: Duration = Duration::from_secs(60);

/// Asserts that `log` refuses `data_dir` as held by `pid`, in one line,
/// and returns that line.
fn refused_for(log: &str, data_dir: &Path, pid: u32) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refusing to start"))
        .collect();
    assert_eq!(lines.len(), 1, "one line of refusal:\n{log}");
    let line = lines[0].to_string();
    let lock = data_dir.join("lock");
    for expected in [
        format!("data directory {} is in use", data_dir.display()),
        format!("by process {pid} "),
        format!("(lock {})", lock.display()),
    ] {
        assert!(line.contains(&expected), "{expected:?} in {line:?}");
    }
    line
}

/// The pid the lock file records.
fn recorded_pid(data_dir: &Path) -> u32 {
    std::fs::read_to_string(data_dir.join("lock"))
        .expect("read the lock file")
        .trim()
        .parse()
        .expect("a pid in the lock file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_is_refused_naming_the_pid_and_a_killed_one_leaves_no_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut first = Serve::new(&data_dir).spawn();
    first.listening().await;
    let pid = first.child.id();
    assert_eq!(recorded_pid(&data_dir), pid);

    let mut second = Serve::new(&data_dir).spawn();
    let log = second
        .ready_within(READY)
        .await
        .expect_err("a second serve on the same data directory is refused");
    let status = second.child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let line = refused_for(&log, &data_dir, pid);
    println!("{line}");
    // The holder is untouched, and still holds it.
    assert_eq!(recorded_pid(&data_dir), pid);

    // SIGKILL: no chance to clean up. The kernel releases the lock.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let mut third = Serve::new(&data_dir).spawn();
    third.listening().await;
    assert_eq!(recorded_pid(&data_dir), third.child.id());
}

/// Started together on an empty data directory: one serves, every other
/// is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_racing_on_an_empty_data_dir_one_serves_and_the_others_are_refused() {
    const PROCESSES: usize = 3;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    // Every process is started before any is waited for.
    let mut servers: Vec<ServeProcess> = (0..PROCESSES)
        .map(|_| Serve::new(&data_dir).spawn())
        .collect();
    let mut outcomes = Vec::new();
    for server in &mut servers {
        outcomes.push(server.ready_within(READY).await);
    }
    let serving: Vec<usize> = (0..PROCESSES).filter(|i| outcomes[*i].is_ok()).collect();
    assert_eq!(serving.len(), 1, "one serves: {outcomes:?}");
    let holder = servers[serving[0]].child.id();
    assert_eq!(recorded_pid(&data_dir), holder);
    for (i, outcome) in outcomes.iter().enumerate() {
        if let Err(log) = outcome {
            refused_for(log, &data_dir, holder);
            let status = servers[i].child.wait().unwrap();
            assert!(!status.success(), "{status:?}");
        }
    }
}

/// With a PostgreSQL key store the data directory holds the keyring: it is
/// locked all the same (replicas have a data directory each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_a_postgres_key_store_is_locked_too() {
    let url = pgenv::fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let pg = |c: &mut sealgate::config::Config| {
        c.keystore.backend = KeyStoreBackend::Postgres;
        c.keystore.url = Some(url.clone());
        c.keystore.max_connections = 4;
    };
    let mut c = config(&data_dir);
    pg(&mut c);
    let mut gw = TestGateway::start_config(c).await;
    // Serving: the lock is held.
    crate::support::gateway::key_status(&gw, "someone").await;
    let mut c = config(&data_dir);
    pg(&mut c);
    let blob = sealgate::server::open_blob(&c).await.unwrap();
    let refused = Gateway::open(&c, blob)
        .await
        .err()
        .expect("a second gateway on the data directory is refused");
    let message = refused.to_string();
    assert!(
        message.starts_with("refusing to start: data directory")
            && message.contains(&format!("by process {} ", std::process::id())),
        "{message}"
    );
    gw.stop().await;
}
