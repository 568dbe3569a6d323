//! A real PostgreSQL for the tests: Debian's server binaries
//! (`/usr/lib/postgresql/<version>/bin`, package `postgresql`; `.ci/run`
//! installs it), one cluster per test binary in a temporary directory, on
//! a free loopback port, with `fsync=off`. As root the cluster runs as the
//! `postgres` user (the server refuses root). Each test gets a database of
//! its own ([`fresh_database`]). The server stops, and its directory is
//! removed, when the test process exits: a wrapper shell holds a pipe from
//! this process and stops the server when the pipe closes (however this
//! process ends).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running PostgreSQL cluster.
pub struct Postgres {
    pub port: u16,
    // Held open: when the test process exits the pipe closes and the wrapper
    // shell stops the server and removes its directory.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The directory of the newest installed server's binaries.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEALGATE_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql/<version>/bin: \
         apt-get install postgresql (the key-store tests need them; .ci/run installs them)",
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program args...`, as the `postgres` user when running as root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// As root, makes `dir` and everything in it the `postgres` user's (the
/// server refuses to run as root and to read files it does not own).
pub fn give_to_postgres(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown of {} failed", dir.display());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// Initialises and starts a new cluster on a free loopback port.
    pub fn start() -> Self {
        Self::start_configured(|_| String::new())
    }

    /// A cluster that takes connections over TLS only: `cert` and `key`
    /// (PEM) are its certificate and key, and a connection without TLS is
    /// rejected (`pg_hba.conf`: `hostssl` trust, `hostnossl` reject).
    pub fn start_tls(cert: &str, key: &str) -> Self {
        Self::start_configured(|dir| {
            std::fs::write(dir.join("server.crt"), cert).expect("write server.crt");
            let key_path = dir.join("server.key");
            std::fs::write(&key_path, key).expect("write server.key");
            // The server refuses a key others can read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod server.key");
            std::fs::write(
                dir.join("data").join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 0.0.0.0/0 reject\n",
            )
            .expect("write pg_hba.conf");
            format!(
                "-c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.display()
            )
        })
    }

    /// Initialises a new cluster, lets `configure` write into its
    /// directory (the data directory is `data` inside it) and return more
    /// server options, and starts it on a free loopback port.
    fn start_configured(configure: impl FnOnce(&Path) -> String) -> Self {
        let bin = bin_dir();
        // Kept past this function: the wrapper shell removes it.
        let dir = tempfile::Builder::new()
            .prefix("sealgate-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        give_to_postgres(&dir);
        let data = dir.join("data");
        let out = command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let options = configure(&dir);
        give_to_postgres(&dir);
        let port = free_port();
        let mut child = command(Path::new("/bin/sh"))
            .arg("-c")
            .arg(
                r#""$0" -D "$1/data" -k "$1" -h 127.0.0.1 -p "$2" -c fsync=off \
                   -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 \
                   -c shared_buffers=64MB $3 >"$1/log" 2>&1 &
                   pid=$!; read _; kill -INT $pid; wait $pid; rm -rf "$1""#,
            )
            .arg(bin.join("postgres"))
            .arg(&dir)
            .arg(port.to_string())
            .arg(options)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn postgres");
        let stdin = child.stdin.take().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                panic!("postgres did not start listening on {addr}: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            _stdin: Mutex::new(stdin),
            _child: Mutex::new(child),
        }
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new empty database and returns its URL.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection;
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let name = format!("t_{}", hex::encode(b));
        // The server accepts connections before it is ready ("starting
        // up"): retry the first one.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut conn = loop {
            match sqlx::PgConnection::connect(&self.url("postgres")).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot connect to the test PostgreSQL: {e}"),
            }
        };
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        conn.close().await.ok();
        self.url(&name)
    }
}

/// The cluster shared by the whole test binary.
pub fn shared() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(Postgres::start)
}

/// A new empty database in the shared cluster: its URL.
pub async fn fresh_database() -> String {
    shared().fresh_database().await
}
