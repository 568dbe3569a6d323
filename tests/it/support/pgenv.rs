//! A real PostgreSQL for the tests: Debian's server binaries
//! (`/usr/lib/postgresql/<version>/bin`, package `postgresql`; `.ci/run`
//! installs it), one cluster per test binary in a temporary directory, on
//! a free loopback port, with `fsync=off`. As root the cluster runs as the
//! `postgres` user (the server refuses root). Each test gets a database of
//! its own ([`fresh_database`]). The server stops, and its directory is
//! removed, when the test process exits (the launcher's guard shell,
//! [`super::launch`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::host::{free_port, is_root};
use super::launch::{ChildServer, Launch};

/// A running PostgreSQL cluster.
pub struct Postgres {
    pub port: u16,
    // Stops the server and removes its directory when the test process
    // exits.
    _server: ChildServer,
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

impl Postgres {
    /// Initialises and starts a new cluster on a free loopback port. Every
    /// role is trusted except the members of [`PASSWORD_ROLES`], who must
    /// give their password (for the tests of a wrong one).
    pub fn start() -> Self {
        Self::start_configured(|dir| {
            let hba = dir.join("data").join("pg_hba.conf");
            let trusted = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            std::fs::write(
                &hba,
                format!("host all +{PASSWORD_ROLES} 127.0.0.1/32 scram-sha-256\n{trusted}"),
            )
            .expect("write pg_hba.conf");
            Vec::new()
        })
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
            [
                "ssl=on".to_string(),
                format!("ssl_cert_file={}/server.crt", dir.display()),
                format!("ssl_key_file={}/server.key", dir.display()),
            ]
            .into_iter()
            .flat_map(|setting| ["-c".to_string(), setting])
            .collect()
        })
    }

    /// Initialises a new cluster, lets `configure` write into its
    /// directory (the data directory is `data` inside it) and return more
    /// server options, and starts it on a free loopback port.
    fn start_configured(configure: impl FnOnce(&Path) -> Vec<String>) -> Self {
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
        let mut launch = Launch::new("postgres", bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=64MB",
            ])
            .args(options)
            .stop_signal("INT")
            .log_to(dir.join("log"))
            .remove_on_stop(&dir);
        if is_root() {
            launch = launch.run_as("postgres");
        }
        let server = launch.start(format!("127.0.0.1:{port}").parse().unwrap());
        Self {
            port,
            _server: server,
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

/// The group whose members log in with a password ([`Postgres::start`]).
pub const PASSWORD_ROLES: &str = "sealgate_password_roles";

impl Postgres {
    /// A new role that must log in with `password`: its name.
    pub async fn password_role(&self, password: &str) -> String {
        use sqlx::Connection;
        let mut b = [0u8; 6];
        aws_lc_rs::rand::fill(&mut b).unwrap();
        let name = format!("pw_{}", hex::encode(b));
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect as admin");
        // The group is made once per cluster; tests racing to make it
        // find it made.
        let _ = sqlx::query(&format!("CREATE ROLE {PASSWORD_ROLES} NOLOGIN"))
            .execute(&mut admin)
            .await;
        sqlx::query(&format!(
            "CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}' IN ROLE {PASSWORD_ROLES}"
        ))
        .execute(&mut admin)
        .await
        .expect("create the role");
        admin.close().await.ok();
        name
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
