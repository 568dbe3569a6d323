//! Signed HTTP reads (`GET /v1/o/{token}`) from the real binary beside
//! nginx serving the same plaintext files from the same disk (the anchor: a
//! CDN origin's usual server), under one load generator, same run.
//!
//! ```text
//! cargo bench --bench http                   # OBJECTS=64 per size, DURATION=30 s, CONNECTIONS=16
//! DURATION=10 OBJECTS=128 cargo bench --bench http
//! TARGETS=nginx cargo bench --bench http     # one side only (no ratios): nginx or sealgate
//! cargo test --bench http                    # smoke run: OBJECTS=4, DURATION=2
//! ```
//!
//! Needs Debian's nginx (`apt-get install nginx`), run as the current user
//! with a configuration of its own in a temporary prefix (`daemon off`,
//! `worker_processes auto`, `sendfile on`, `access_log off`, keep-alive);
//! without `/usr/sbin/nginx` the bench fails. Starts `sealgate serve` (this
//! build's binary, filesystem object store, SQLite key store) on loopback
//! with an `[http]` listener, stores OBJECTS objects of 64 KiB and OBJECTS
//! of 1 MiB over USERS (4) users through PutObject and signs a read of each
//! (SignRead, 600 s), and writes the same plaintext as files beside its
//! data directory for nginx (all untimed). Each target's objects are then
//! read once and compared with what was stored.
//!
//! Then, per size, nginx and then sealgate: CONNECTIONS keep-alive
//! HTTP/1.1 connections (hyper's client connection, no pool), each reading
//! the size's objects round-robin (from its own starting point) for
//! DURATION seconds, each body read whole and its status and length
//! checked. Prints requests/s, MiB/s, p50 and p99 latency (request sent to
//! last body byte, HDR histogram) of each, and the ratios sealgate / nginx
//! of requests/s (goal: at least 0.5 for 64 KiB, 0.6 for 1 MiB) and of p99.
//! Client and servers share the machine's cores.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sealgate::api::pb;
use tonic::transport::Channel;

#[path = "common/mod.rs"]
mod common;
use common::{env_or, smoke};

/// The tests' launcher of the real binary (`tests/it/support/`).
#[path = "../tests/it/support"]
#[allow(dead_code)]
mod support {
    pub mod host;
    pub mod launch;
    pub mod metrics;
    pub mod serve;
    pub mod wait;
}
use support::serve::{Serve, ServeProcess};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Debian's nginx.
const NGINX: &str = "/usr/sbin/nginx";

/// The space of the bench's objects (one of the default configuration's).
const SPACE: &str = "moments";

/// How long the signed reads live: longer than any run.
const TTL_SECONDS: u32 = 600;

/// One size of the comparison, and its goal for sealgate's requests/s as a
/// share of nginx's.
struct Size {
    label: &'static str,
    /// Names objects and files of this size.
    tag: &'static str,
    bytes: usize,
    goal: f64,
}

/// Thumbnails, then photos.
const SIZES: [Size; 2] = [
    Size {
        label: "64 KiB",
        tag: "thumb",
        bytes: 64 * KIB,
        goal: 0.5,
    },
    Size {
        label: "1 MiB",
        tag: "photo",
        bytes: MIB,
        goal: 0.6,
    },
];

/// The plaintext of object `i` of `size`: the same for both servers, and
/// different for every object (it begins with `i`).
fn plaintext(size: &Size, i: usize) -> Vec<u8> {
    let mut body: Vec<u8> = (0..size.bytes)
        .map(|j| (j.wrapping_mul(31) ^ (j >> 11) ^ i.wrapping_mul(7)) as u8)
        .collect();
    body[..8].copy_from_slice(&(i as u64).to_le_bytes());
    body
}

/// The name of object `i` of `size`: the object id in sealgate, the file
/// name for nginx.
fn name(size: &Size, i: usize) -> String {
    format!("{}-{i:04}", size.tag)
}

/// Object `i` of `size` in sealgate: one of `users` users' (in turn).
fn object_ref(size: &Size, i: usize, users: usize) -> pb::ObjectRef {
    pb::ObjectRef {
        user_id: format!("http-bench-{}", i % users),
        space: SPACE.into(),
        object_id: name(size, i),
    }
}

/// A port of loopback nobody listens on now (for a server to bind just
/// after).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// nginx serving the files under `root` on loopback as `/{name}`; stopped
/// (`-s stop`, killed after 10 s) when dropped.
struct Nginx {
    child: Child,
    prefix: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// Writes the configuration into `prefix` and starts nginx; returns
    /// once it accepts connections.
    ///
    /// # Panics
    /// If `/usr/sbin/nginx` is missing, or nginx ends or does not listen
    /// within 10 s (with its log).
    async fn start(prefix: &Path, root: &Path) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: the http bench measures sealgate against Debian's nginx; \
             install it with `apt-get install nginx`"
        );
        let addr = free_port();
        std::fs::create_dir_all(prefix.join("temp")).unwrap();
        let p = prefix.display();
        let config = format!(
            "daemon off;
master_process on;
worker_processes auto;
pid {p}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    default_type application/octet-stream;
    client_body_temp_path {p}/temp/body;
    proxy_temp_path {p}/temp/proxy;
    fastcgi_temp_path {p}/temp/fastcgi;
    uwsgi_temp_path {p}/temp/uwsgi;
    scgi_temp_path {p}/temp/scgi;
    server {{
        listen {addr};
        root {root};
    }}
}}
",
            root = root.display()
        );
        std::fs::write(prefix.join("nginx.conf"), config).unwrap();
        let log = std::fs::File::create(prefix.join("stderr.log")).unwrap();
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nginx");
        let log = || std::fs::read_to_string(prefix.join("stderr.log")).unwrap_or_default();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "nginx ended ({status}) before listening on {addr}:\n{}",
                    log()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("nginx not listening on {addr} after 10 s:\n{}", log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            prefix: prefix.to_path_buf(),
            addr,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its workers (a killed master would leave them
        // serving).
        let _ = Command::new(NGINX)
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(self.prefix.join("nginx.conf"))
            .args(["-e", "stderr", "-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server under load: its address and one path per object of one size,
/// in object order.
struct Target<'a> {
    name: &'static str,
    addr: SocketAddr,
    paths: &'a [String],
}

/// A keep-alive HTTP/1.1 connection to `addr` (hyper's client connection,
/// driven by a task of its own).
async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// `GET path`: the status and the body, whose frames `each` sees as they
/// come.
async fn get(
    sender: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    mut each: impl FnMut(&Bytes),
) -> http::StatusCode {
    let request = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    let status = response.status();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|e| panic!("GET http://{addr}{path}: body: {e}"));
        if let Some(data) = frame.data_ref() {
            each(data);
        }
    }
    status
}

/// Reads every object of `target` once, one after the other, and compares
/// it with what was stored (and warms what caches there are).
///
/// # Panics
/// On any other status or plaintext.
async fn verify(target: &Target<'_>, size: &Size) {
    let mut sender = connect(target.addr).await;
    for (i, path) in target.paths.iter().enumerate() {
        sender.ready().await.expect("connection ready");
        let mut body = Vec::with_capacity(size.bytes);
        let status = get(&mut sender, target.addr, path, |d| {
            body.extend_from_slice(d)
        })
        .await;
        assert_eq!(status, http::StatusCode::OK, "{} GET {path}", target.name);
        assert!(
            body == plaintext(size, i),
            "{} GET {path}: {} bytes, not object {i}'s plaintext",
            target.name,
            body.len()
        );
    }
}

/// What one load run measured.
struct Load {
    requests: u64,
    bytes: u64,
    elapsed: Duration,
    /// Request sent to last body byte, in microseconds.
    latency_us: Histogram<u64>,
    /// Connections the server closed and the client opened again.
    reconnects: u64,
}

impl Load {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

/// `connections` connections, each reading `target`'s paths round-robin
/// from its own starting point until `duration` has passed (the last
/// request is finished, and counted).
///
/// # Panics
/// On a failed request, a status other than 200 or a body of another
/// length than `size`.
async fn load(target: &Target<'_>, size: &Size, connections: usize, duration: Duration) -> Load {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        let (addr, name, expected) = (target.addr, target.name, size.bytes as u64);
        let paths = target.paths.to_vec();
        let first = c * paths.len() / connections;
        tasks.spawn(async move {
            let mut latency_us = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
            let (mut requests, mut reconnects) = (0u64, 0u64);
            let mut sender = connect(addr).await;
            for path in paths.iter().cycle().skip(first) {
                if Instant::now() >= deadline {
                    break;
                }
                if sender.ready().await.is_err() {
                    sender = connect(addr).await;
                    reconnects += 1;
                }
                let sent = Instant::now();
                let mut got = 0u64;
                let status = get(&mut sender, addr, path, |d| got += d.len() as u64).await;
                latency_us.saturating_record(sent.elapsed().as_micros() as u64);
                assert_eq!(status, http::StatusCode::OK, "{name} GET {path}");
                assert_eq!(got, expected, "{name} GET {path}: body length");
                requests += 1;
            }
            (requests, reconnects, latency_us)
        });
    }
    let mut total = Load {
        requests: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).unwrap(),
        reconnects: 0,
    };
    while let Some(done) = tasks.join_next().await {
        let (requests, reconnects, latency_us) = done.expect("a connection's task");
        total.requests += requests;
        total.reconnects += reconnects;
        total.latency_us.add(&latency_us).unwrap();
    }
    total.elapsed = started.elapsed();
    total.bytes = total.requests * size.bytes as u64;
    total
}

fn print_load(size: &Size, name: &str, load: &Load) {
    println!(
        "  {:<6}  {name:<8}  {:9.1} req/s  {:7.1} MiB/s  p50 {:7.2} ms  p99 {:7.2} ms{}",
        size.label,
        load.per_second(),
        load.mib_per_second(),
        load.quantile_ms(0.50),
        load.quantile_ms(0.99),
        if load.reconnects > 0 {
            format!("  ({} reconnects)", load.reconnects)
        } else {
            String::new()
        }
    );
}

/// Every object of `size` as a file under `root`, for nginx; the paths.
fn write_files(root: &Path, size: &Size, objects: usize) -> Vec<String> {
    (0..objects)
        .map(|i| {
            let name = name(size, i);
            std::fs::write(root.join(&name), plaintext(size, i)).unwrap();
            format!("/{name}")
        })
        .collect()
}

/// Stores every object of `size` for the bench's users (untimed), four
/// uploads at a time.
async fn put_all(channel: &Channel, size: &Size, objects: usize, users: usize) {
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..objects {
        if pending.len() >= 4 {
            pending.join_next().await.unwrap().unwrap();
        }
        let mut client = pb::content_service_client::ContentServiceClient::new(channel.clone());
        let (object, body) = (object_ref(size, i, users), plaintext(size, i));
        pending.spawn(async move {
            let header = pb::PutObjectHeader {
                user_id: object.user_id,
                space: object.space,
                object_id: object.object_id,
                size: Some(body.len() as u64),
                ..Default::default()
            };
            let parts = [
                pb::put_object_request::Part::Header(header),
                pb::put_object_request::Part::Data(body.into()),
                pb::put_object_request::Part::Finish(pb::PutObjectFinish::default()),
            ];
            client
                .put_object(futures_util::stream::iter(
                    parts.map(|part| pb::PutObjectRequest { part: Some(part) }),
                ))
                .await
                .expect("put object");
        });
    }
    while let Some(done) = pending.join_next().await {
        done.unwrap();
    }
}

/// A signed read of every object of `size`: the paths.
async fn sign_all(channel: &Channel, size: &Size, objects: usize, users: usize) -> Vec<String> {
    let mut client = pb::content_service_client::ContentServiceClient::new(channel.clone());
    let mut paths = Vec::with_capacity(objects);
    for i in 0..objects {
        let signed = client
            .sign_read(pb::SignReadRequest {
                object: Some(object_ref(size, i, users)),
                range: None,
                ttl_seconds: TTL_SECONDS,
            })
            .await
            .expect("sign read")
            .into_inner();
        paths.push(signed.path);
    }
    paths
}

/// `sealgate serve` of this build with its HTTP listener, holding every
/// object of every size (stored untimed); the process, the listener's
/// address and the signed paths per size.
async fn sealgate(
    data_dir: &Path,
    objects: usize,
    users: usize,
) -> (ServeProcess, SocketAddr, Vec<Vec<String>>) {
    let http = free_port();
    let mut process = Serve::new(data_dir)
        .rust_log("warn,sealgate::server=info")
        .env("SEALGATE_METRICS_LISTEN", "")
        .env("SEALGATE_HTTP_LISTEN", &http.to_string())
        .spawn();
    let addr = process
        .ready_within(Duration::from_secs(60))
        .await
        .unwrap_or_else(|log| panic!("sealgate serve did not listen:\n{log}"));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut paths = Vec::new();
    for size in &SIZES {
        put_all(&channel, size, objects, users).await;
        paths.push(sign_all(&channel, size, objects, users).await);
    }
    (process, http, paths)
}

fn main() {
    let (objects, duration) = if smoke() {
        (env_or("OBJECTS", 4), env_or("DURATION", 2))
    } else {
        (env_or("OBJECTS", 64), env_or("DURATION", 30))
    };
    let users: usize = env_or("USERS", 4);
    let connections: usize = env_or("CONNECTIONS", 16);
    let duration = Duration::from_secs(duration);
    let targets: String = env_or("TARGETS", "nginx,sealgate".to_string());
    let targets: Vec<&str> = targets.split(',').map(str::trim).collect();
    for t in &targets {
        assert!(
            ["nginx", "sealgate"].contains(t),
            "TARGETS={t:?}: nginx, sealgate or both (nginx,sealgate)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        // Run as root, nginx's workers are `nobody`: they must reach the files.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Each side with its address and its paths per size, nginx first.
        let mut sides: Vec<(&'static str, SocketAddr, Vec<Vec<String>>)> = Vec::new();
        let _nginx = if targets.contains(&"nginx") {
            let (prefix, files) = (dir.path().join("nginx"), dir.path().join("files"));
            std::fs::create_dir_all(&prefix).unwrap();
            std::fs::create_dir_all(&files).unwrap();
            let paths = SIZES
                .iter()
                .map(|size| write_files(&files, size, objects))
                .collect();
            let nginx = Nginx::start(&prefix, &files).await;
            sides.push(("nginx", nginx.addr, paths));
            Some(nginx)
        } else {
            None
        };
        let _sealgate = if targets.contains(&"sealgate") {
            let (process, addr, paths) = sealgate(&dir.path().join("sealgate"), objects, users).await;
            sides.push(("sealgate", addr, paths));
            Some(process)
        } else {
            None
        };
        println!(
            "http: {objects} objects of each size over {users} users, {connections} connections, {} s per target per size{}",
            duration.as_secs(),
            if smoke() { " [smoke]" } else { "" }
        );
        for (s, size) in SIZES.iter().enumerate() {
            let mut loads = Vec::new();
            for (name, addr, paths) in &sides {
                let target = Target {
                    name,
                    addr: *addr,
                    paths: &paths[s],
                };
                verify(&target, size).await;
                let load = load(&target, size, connections, duration).await;
                print_load(size, target.name, &load);
                loads.push(load);
            }
            if let [nginx, sealgate] = &loads[..] {
                println!(
                    "  {:<6}  sealgate / nginx: req/s {:.2} (goal >= {:.2}), p99 {:.2} (lower is better)",
                    size.label,
                    sealgate.per_second() / nginx.per_second(),
                    size.goal,
                    sealgate.quantile_ms(0.99) / nginx.quantile_ms(0.99),
                );
            }
        }
    });
}
