//! One launcher for the servers the tests start beside the gateway.
//!
//! - [`ChildServer`] (PostgreSQL, moto): a program in a child process, run
//!   in the background by a guard shell that holds a pipe from this
//!   process. When the pipe closes (this process exits, however it ends, or
//!   [`ChildServer::stop`]) the shell stops the server with its signal,
//!   waits for it and removes its directory if it has one: no server
//!   outlives the tests.
//! - [`LoopbackServer`] (s3s-fs, the fault proxies): a server in this
//!   process, a task accepting on a loopback port of its own, aborted when
//!   the handle drops.
//!
//! Both are on loopback only, and a child that does not listen in time
//! fails the test with its log.

use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a child server may take to listen.
const LISTEN_DEADLINE: Duration = Duration::from_secs(60);

/// The guard shell: `sh -c GUARD sh LOG SIGNAL DIR PROGRAM ARGS...`.
const GUARD: &str = r#"log=$1 sig=$2 dir=$3; shift 3
"$@" >"$log" 2>&1 &
pid=$!
read _
kill -"$sig" "$pid"
wait "$pid"
if [ -n "$dir" ]; then rm -rf "$dir"; fi"#;

/// How to start a [`ChildServer`]: a program, its arguments and the
/// options of its guard shell.
pub struct Launch {
    what: String,
    program: PathBuf,
    args: Vec<OsString>,
    user: Option<String>,
    stop_signal: &'static str,
    log: Option<PathBuf>,
    remove_on_stop: Option<PathBuf>,
}

impl Launch {
    /// `program`, called `what` in failures; stopped with SIGTERM, its
    /// output discarded, unless the options say otherwise.
    pub fn new(what: &str, program: impl Into<PathBuf>) -> Self {
        Self {
            what: what.to_string(),
            program: program.into(),
            args: Vec::new(),
            user: None,
            stop_signal: "TERM",
            log: None,
            remove_on_stop: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs the guard shell and the server as `user` (`runuser`; the test
    /// process must be root).
    pub fn run_as(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// Stops the server with `signal` (a name `kill` takes: `INT`, `TERM`).
    pub fn stop_signal(mut self, signal: &'static str) -> Self {
        self.stop_signal = signal;
        self
    }

    /// Writes the server's stdout and stderr to `path` (shown when it does
    /// not start).
    pub fn log_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// Removes `dir` once the server has stopped.
    pub fn remove_on_stop(mut self, dir: impl Into<PathBuf>) -> Self {
        self.remove_on_stop = Some(dir.into());
        self
    }

    /// Starts the server and waits until something accepts connections on
    /// `addr` (the address its arguments name), failing the test with its
    /// log after a minute.
    pub fn start(self, addr: SocketAddr) -> ChildServer {
        let mut command = match &self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "/bin/sh"]);
                c
            }
            None => Command::new("/bin/sh"),
        };
        let log = self.log.clone().unwrap_or_else(|| "/dev/null".into());
        let mut child = command
            .args(["-c", GUARD, "sh"])
            .arg(&log)
            .arg(self.stop_signal)
            .arg(self.remove_on_stop.clone().unwrap_or_default())
            .arg(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the guard shell of {}: {e}", self.what));
        let stdin = child.stdin.take().expect("the guard shell's stdin");
        let deadline = Instant::now() + LISTEN_DEADLINE;
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            let exited = child.try_wait().expect("try_wait").is_some();
            if exited || Instant::now() > deadline {
                let output = self
                    .log
                    .as_ref()
                    .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                    .unwrap_or_default();
                panic!(
                    "{} did not start listening on {addr}{}: {output}",
                    self.what,
                    if exited {
                        " (its guard shell exited)"
                    } else {
                        ""
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ChildServer {
            addr,
            stdin: Mutex::new(stdin),
            child: Mutex::new(child),
        }
    }
}

/// A server in a child process, stopped when this process exits.
pub struct ChildServer {
    pub addr: SocketAddr,
    // Held open: when it closes the guard shell stops the server. Behind
    // mutexes so that a server can be shared by a whole test binary.
    stdin: Mutex<ChildStdin>,
    child: Mutex<Child>,
}

impl ChildServer {
    /// Stops the server now and waits until its guard shell is done.
    pub fn stop(self) {
        let mut stdin = self.stdin.into_inner().unwrap();
        let _ = stdin.write_all(b"\n");
        drop(stdin);
        let _ = self.child.into_inner().unwrap().wait();
    }
}

/// A server in this process, accepting on a loopback port of its own;
/// aborted when dropped (unless detached).
pub struct LoopbackServer {
    pub addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LoopbackServer {
    /// Binds a loopback port and runs `serve` on the listener, on the
    /// current runtime.
    pub async fn start<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(tokio::net::TcpListener) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        Self {
            addr,
            task: Some(tokio::spawn(serve(listener))),
        }
    }

    /// Leaves the server running until the runtime stops; its address.
    pub fn detach(mut self) -> SocketAddr {
        drop(self.task.take());
        self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
