//! Helpers every test module shares; the test modules beside this one
//! hold tests only.
//!
//! - [`host`]: free loopback ports, whether this process is root.
//! - [`launch`]: the one launcher of the servers the tests start (child
//!   processes under a guard shell, in-process servers on loopback), used
//!   by [`pgenv`] (PostgreSQL), [`s3env`] (moto's S3, and plain S3
//!   clients), [`s3s_env`] (s3s-fs) and [`proxy`] (fault proxies).
//! - [`kms_env`]: moto's KMS; [`pki`]: certificates; [`mounts`]: full and
//!   failing disks (root only).
//!
//! Modules that the benches include as well (`benches/*.rs`, by
//! `#[path]`) name their siblings `super::…`, never `crate::…`.

pub mod host;
pub mod kms_env;
pub mod launch;
pub mod mounts;
pub mod pgenv;
pub mod pki;
pub mod proxy;
pub mod s3env;
pub mod s3s_env;

use std::future::Future;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Polls `cond` every 20 ms until it holds, failing the test after
/// `timeout`. For conditions that only an outside process or a background
/// task can make true (S3 aborting an upload, a job finishing): every use
/// names what it waits for.
/// Runs the real binary with `args` to its end (without the caller's
/// `RUST_LOG`).
pub fn sealgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run sealgate")
}

/// Asserts success and returns stdout as text (lossy: binary output is
/// compared through `Output::stdout` instead).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills a server spawned with its log collected and returns the whole
/// log, once the thread reading it has read everything.
pub async fn stop_and_read_log(
    child: &mut Child,
    log: &std::sync::Arc<std::sync::Mutex<String>>,
) -> String {
    child.kill().unwrap();
    child.wait().unwrap();
    eventually(
        "the log reader has read everything",
        Duration::from_secs(10),
        || {
            let log = log.clone();
            async move { std::sync::Arc::strong_count(&log) == 2 }
        },
    )
    .await;
    let text = log.lock().unwrap().clone();
    text
}

/// The address a spawned server reports once it listens (30 s at most).
pub async fn listening(ready: mpsc::Receiver<Result<SocketAddr, String>>) -> SocketAddr {
    tokio::task::spawn_blocking(move || ready.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("ready")
        .expect("listening")
}

pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the real binary, `sealgate serve --data-dir DATA_DIR --listen
/// LISTEN`, and drains its stderr on a thread (so the child never blocks on
/// a full pipe). The receiver gets the address from the readiness line, or
/// the whole log if the process exits before listening.
pub fn spawn_serve(
    data_dir: &Path,
    listen: &str,
) -> (Child, mpsc::Receiver<Result<SocketAddr, String>>) {
    spawn_serve_env(data_dir, listen, &[])
}

/// [`spawn_serve`] with configuration overrides in the environment
/// (`SEALGATE_*`).
pub fn spawn_serve_env(
    data_dir: &Path,
    listen: &str,
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<Result<SocketAddr, String>>) {
    let (child, ready, _log) = spawn_serve_with(data_dir, listen, "info", env);
    (child, ready)
}

/// Like [`spawn_serve`] at `RUST_LOG=rust_log`; also returns everything the
/// child writes on stderr, as it arrives.
pub fn spawn_serve_logged(
    data_dir: &Path,
    listen: &str,
    rust_log: &str,
) -> (
    Child,
    mpsc::Receiver<Result<SocketAddr, String>>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    spawn_serve_with(data_dir, listen, rust_log, &[])
}

/// [`spawn_serve_logged`] with configuration overrides in the environment.
pub fn spawn_serve_with(
    data_dir: &Path,
    listen: &str,
    rust_log: &str,
    env: &[(&str, &str)],
) -> (
    Child,
    mpsc::Receiver<Result<SocketAddr, String>>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sealgate"));
    command.envs(env.iter().copied());
    spawn_serve_command(data_dir, listen, rust_log, command)
}

/// Like [`spawn_serve_logged`], with the binary run by `command` (which may
/// carry environment variables, or be a wrapper such as `prlimit` whose
/// last argument is the binary).
pub fn spawn_serve_command(
    data_dir: &Path,
    listen: &str,
    rust_log: &str,
    mut command: Command,
) -> (
    Child,
    mpsc::Receiver<Result<SocketAddr, String>>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    // Many servers run at once: each metrics endpoint on a port of its own
    // (`metrics_address` finds it in the log), unless the test chose.
    if !command
        .get_envs()
        .any(|(k, _)| k == "SEALGATE_METRICS_LISTEN")
    {
        command.env("SEALGATE_METRICS_LISTEN", "127.0.0.1:0");
    }
    let mut child = command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen])
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sealgate");
    let stderr = child.stderr.take().unwrap();
    let (tx, ready) = mpsc::channel();
    let shared = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let all = shared.clone();
    std::thread::spawn(move || {
        let mut log = String::new();
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log.push_str(&line);
            log.push('\n');
            {
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
            if line.contains("sealgate listening") {
                // `address=Some(..)` in text, `"address":"Some(..)"` in JSON.
                let addr = line
                    .split_once("address")
                    .and_then(|(_, rest)| rest.split_once("Some("))
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .and_then(|(addr, _)| addr.parse().ok());
                if let (Some(addr), Some(tx)) = (addr, tx.take()) {
                    let _ = tx.send(Ok(addr));
                }
            }
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(log));
        }
    });
    (child, ready, shared)
}

/// The address of the metrics endpoint, from the line of a server's log
/// (text or JSON) that says it listens.
pub fn metrics_address(log: &str) -> Option<SocketAddr> {
    let line = log
        .lines()
        .find(|l| l.contains("metrics endpoint listening"))?;
    let (_, rest) = line.split_once("address")?;
    let rest = rest.trim_start_matches(['=', '"', ':']);
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `GET /metrics` from `address`: the response's status line and body.
pub async fn scrape(address: SocketAddr) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the metrics endpoint");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).expect("a UTF-8 scrape");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_string(), body.to_string())
}

/// The value of the sample `name` whose labels are exactly `labels` in a
/// scrape's text; 0 when there is none (a counter never incremented).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, got) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let mut got: Vec<String> = if got.is_empty() {
            Vec::new()
        } else {
            got.split(',').map(str::to_string).collect()
        };
        got.sort();
        if got == want {
            return value.parse().expect("a sample value");
        }
    }
    0.0
}
