//! The real `sealgate` binary of this build: run to its end
//! ([`sealgate`]), or serving ([`Serve`], one builder with named options,
//! and [`Served`], a server that listens and exposes its metrics).

use std::ffi::OsString;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use tonic::transport::Channel;

use super::wait::eventually;

/// How long [`ServeProcess::listening`] waits for the readiness line.
const LISTENING_DEADLINE: Duration = Duration::from_secs(30);

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

/// `sealgate serve` of this build, to be started: `sealgate serve
/// --data-dir DATA_DIR --listen LISTEN` at `RUST_LOG=info`, with
/// `NO_COLOR=1` and the metrics endpoint on a port of its own (many
/// servers run at once; [`metrics_address`](super::metrics::metrics_address)
/// finds it in the log), unless an option says otherwise.
pub struct Serve {
    config: Option<PathBuf>,
    data_dir: PathBuf,
    listen: String,
    rust_log: String,
    env: Vec<(OsString, OsString)>,
    wrapper: Vec<OsString>,
}

impl Serve {
    /// The server of `data_dir`, on a loopback port of its own.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            config: None,
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".into(),
            rust_log: "info".into(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// `--config FILE` too (the flags still replace its `data_dir` and
    /// `listen`).
    pub fn config(mut self, file: &Path) -> Self {
        self.config = Some(file.to_path_buf());
        self
    }

    /// Listens on `addr` instead of a port of its own.
    pub fn listen(mut self, addr: impl std::fmt::Display) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// `RUST_LOG=filter` instead of `info`.
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_string();
        self
    }

    /// One variable of the server's environment: a configuration override
    /// (`SEALGATE_*`, `SEALGATE_METRICS_LISTEN` included), credentials.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// [`Self::env`] of each pair.
    pub fn envs(self, vars: &[(&str, &str)]) -> Self {
        vars.iter().fold(self, |serve, (k, v)| serve.env(k, v))
    }

    /// Runs the binary through `program args…` (such as `prlimit
    /// --nofile=N:N --`), which must run its last argument.
    pub fn wrapped_in(mut self, program: &str, args: &[&str]) -> Self {
        self.wrapper = std::iter::once(program)
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        self
    }

    /// Starts the server. A thread reads its stderr as it comes (so the
    /// child never blocks on a full pipe) into the log, and reports the
    /// address of the readiness line, or the whole log if the process ends
    /// before listening.
    pub fn spawn(self) -> ServeProcess {
        let binary = OsString::from(env!("CARGO_BIN_EXE_sealgate"));
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        if !self.env.iter().any(|(k, _)| k == "SEALGATE_METRICS_LISTEN") {
            command.env("SEALGATE_METRICS_LISTEN", "127.0.0.1:0");
        }
        let mut child = command
            .envs(self.env)
            .arg("serve")
            .args(
                self.config
                    .iter()
                    .flat_map(|c| [OsString::from("--config"), c.into()]),
            )
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.listen])
            .env("RUST_LOG", &self.rust_log)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sealgate");
        let stderr = child.stderr.take().unwrap();
        let (tx, ready) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let all = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
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
                let log = all.lock().unwrap().clone();
                let _ = tx.send(Err(log));
            }
        });
        ServeProcess {
            child,
            ready: Some(ready),
            log,
        }
    }
}

/// A started `sealgate serve`; killed and reaped when dropped.
pub struct ServeProcess {
    pub child: Child,
    ready: Option<mpsc::Receiver<Result<SocketAddr, String>>>,
    log: Arc<Mutex<String>>,
}

impl ServeProcess {
    /// The address of the readiness line, or the whole log if the process
    /// ended before listening; fails the test if neither happens within
    /// `deadline`. Waits once: the second call fails.
    pub async fn ready_within(&mut self, deadline: Duration) -> Result<SocketAddr, String> {
        let ready = self.ready.take().expect("readiness is awaited once");
        tokio::task::spawn_blocking(move || ready.recv_timeout(deadline))
            .await
            .unwrap()
            .unwrap_or_else(|e| {
                panic!("sealgate neither listening nor ended after {deadline:?}: {e}")
            })
    }

    /// The address, once the server listens (30 s at most); fails the test
    /// with the log if it ends first.
    pub async fn listening(&mut self) -> SocketAddr {
        self.ready_within(LISTENING_DEADLINE)
            .await
            .unwrap_or_else(|log| panic!("sealgate ended before listening:\n{log}"))
    }

    /// Everything the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills the server and returns its whole log, once the thread reading
    /// it has read everything.
    pub async fn stop_and_read_log(&mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let log = &self.log;
        eventually(
            "the log reader has read everything",
            Duration::from_secs(10),
            || async move { Arc::strong_count(log) == 1 },
        )
        .await;
        self.log()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary, serving: its gRPC and metrics addresses (killed when
/// dropped, unless it exited).
pub struct Served {
    pub process: ServeProcess,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl Served {
    /// How long a server may take to listen.
    const READY: Duration = Duration::from_secs(60);

    /// `sealgate serve` on `data_dir` with `env`, once it listens.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut process = Serve::new(data_dir).envs(env).spawn();
        let addr = process
            .ready_within(Self::READY)
            .await
            .unwrap_or_else(|log| panic!("sealgate did not start:\n{log}"));
        // The endpoint's line comes before the listening line.
        let metrics = super::metrics::metrics_address(&process.log())
            .expect("the log names the metrics address");
        Self {
            process,
            addr,
            metrics,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn content(&self) -> ContentServiceClient<Channel> {
        ContentServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> KeyAdminServiceClient<Channel> {
        KeyAdminServiceClient::new(self.channel().await)
    }

    /// The pseudonym of `user` (KeyStatus).
    pub async fn pseudonym(&self, user: &str) -> String {
        self.admin()
            .await
            .key_status(pb::KeyStatusRequest {
                user_id: user.into(),
                ..Default::default()
            })
            .await
            .expect("KeyStatus")
            .into_inner()
            .pseudonym
    }

    /// The metrics text.
    pub async fn scrape(&self) -> String {
        let (head, body) = super::metrics::scrape(self.metrics).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        body
    }

    /// Waits (up to a minute) for the process to exit; its exit status.
    pub async fn exited(&mut self) -> ExitStatus {
        let status = Arc::new(Mutex::new(None));
        eventually("the server exits", Duration::from_secs(60), || {
            let got = self.process.child.try_wait().expect("try_wait");
            if got.is_some() {
                *status.lock().unwrap() = got;
            }
            async move { got.is_some() }
        })
        .await;
        let status = status.lock().unwrap().take().unwrap();
        status
    }
}

/// Follows job `job_id` (WatchJob) to its end; its last progress.
pub async fn watch_to_end(
    admin: &mut KeyAdminServiceClient<Channel>,
    job_id: &str,
) -> pb::JobProgress {
    let mut stream = admin
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("WatchJob")
        .into_inner();
    let mut last = None;
    while let Some(p) = stream.message().await.expect("WatchJob stream") {
        last = Some(p);
    }
    last.expect("at least one progress message")
}

/// Follows job `job_id` until a progress message satisfies `until`; that
/// message. The job must not end first.
pub async fn watch_until(
    admin: &mut KeyAdminServiceClient<Channel>,
    job_id: &str,
    until: impl Fn(&pb::JobProgress) -> bool,
) -> pb::JobProgress {
    let mut stream = admin
        .watch_job(pb::WatchJobRequest {
            job_id: job_id.into(),
        })
        .await
        .expect("WatchJob")
        .into_inner();
    loop {
        let p = stream
            .message()
            .await
            .expect("WatchJob stream")
            .expect("job still running");
        assert_ne!(p.state, pb::JobState::Done as i32, "{p:?}");
        if until(&p) {
            return p;
        }
    }
}
