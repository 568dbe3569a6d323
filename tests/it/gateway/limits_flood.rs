//! The flood, as a hostile caller would send it: the real binary,
//! limited to 1,024 file descriptors (a common default) and run with the
//! default `[limits]`, gets 1,100 idle TCP connections from one address,
//! then more from other addresses. Connections past the limits are closed
//! as soon as they are accepted; the process stays within its descriptor
//! budget, its CPU idle, its log says so once, and other callers are
//! served meanwhile.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sealgate::api::pb::content_service_client::ContentServiceClient;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::{Channel, Endpoint};

use super::{get, put};
use crate::support::eventually;
use crate::support::serve::{Serve, ServeProcess};

/// The descriptor limit of the server process.
const MAX_FDS: u64 = 1024;
/// The defaults of `[limits]` (asserted below against `Limits::default`).
const MAX_CONNECTIONS: usize = 768;
const MAX_CONNECTIONS_PER_PEER: usize = 256;

/// The log line of a refused connection.
const REFUSED: &str = "connection refused: limit reached";

/// The server's open descriptors.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The CPU time the server has used, in clock ticks (utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A raw TCP connection to `addr` from `local`.
async fn tcp_from(local: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    socket.connect(addr).await.expect("TCP connect")
}

/// Whether the server kept this connection: a kept connection gets the
/// server's HTTP/2 SETTINGS at once, a refused one is closed.
async fn kept(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(_)) => true,
        Err(_) => panic!("the server neither served nor closed a connection in 30 s"),
    }
}

/// Opens `n` idle connections from `local`; returns them with how many the
/// server kept.
async fn flood(local: IpAddr, addr: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(tcp_from(local, addr).await);
    }
    let verdicts = futures_util::future::join_all(conns.iter_mut().map(kept)).await;
    let kept = verdicts.into_iter().filter(|k| *k).count();
    (conns, kept)
}

/// A connected gRPC channel from `local`.
async fn channel_from(local: &str, addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .local_address(Some(local.parse().unwrap()))
        .connect()
        .await
}

/// A put and a get of a small object over `channel`.
async fn round_trip(channel: Channel, id: &str) {
    let mut c = ContentServiceClient::new(channel);
    put(&mut c, "u", "moments", id, b"served", 6)
        .await
        .unwrap_or_else(|s| panic!("put {id}: {s:?}"));
    let (_, got) = get(&mut c, "u", "moments", id, None)
        .await
        .unwrap_or_else(|s| panic!("get {id}: {s:?}"));
    assert_eq!(got, b"served");
}

/// Starts the real binary limited to `max_fds` descriptors; returns it
/// (killed when dropped) and its address.
async fn serve_limited(dir: &std::path::Path, max_fds: u64) -> (ServeProcess, SocketAddr) {
    let mut server = Serve::new(dir)
        .wrapped_in("prlimit", &[&format!("--nofile={max_fds}:{max_fds}"), "--"])
        .spawn();
    let addr = server.listening().await;
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_leaves_other_callers_served() {
    let defaults = sealgate::config::Limits::default();
    assert_eq!(
        (defaults.max_connections, defaults.max_connections_per_peer),
        (MAX_CONNECTIONS, MAX_CONNECTIONS_PER_PEER),
        "this test floods past the default limits"
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = serve_limited(dir.path(), MAX_FDS).await;
    let pid = server.child.id();

    // A caller connected before the flood, from the flood's address.
    let resident = channel_from("127.0.0.1", addr).await.expect("resident");
    round_trip(resident.clone(), "before").await;
    let baseline = open_fds(pid);

    // 1,100 idle connections from one address: the per-peer limit keeps
    // all but 255 of them (the resident caller holds one slot).
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    let (one_peer, kept) = flood(local, addr, 1100).await;
    assert_eq!(kept, MAX_CONNECTIONS_PER_PEER - 1, "kept from one address");
    let fds = open_fds(pid);
    assert!(
        fds <= baseline + kept + 4,
        "{fds} descriptors open, {baseline} before the flood and {kept} connections kept"
    );
    round_trip(resident.clone(), "resident-1").await;
    round_trip(
        channel_from("127.0.0.9", addr)
            .await
            .expect("another address connects"),
        "other-peer",
    )
    .await;

    // More from three other addresses: the total limit keeps the process
    // within its descriptors, with room for uploads and the stores.
    let mut others = Vec::new();
    let mut kept_total = kept + 1; // and the resident caller
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let (conns, kept) = flood(host.parse().unwrap(), addr, 250).await;
        kept_total += kept;
        others.push(conns);
    }
    // 127.0.0.9's connection, dropped with its channel, may still count.
    assert!(
        (MAX_CONNECTIONS - 1..=MAX_CONNECTIONS).contains(&kept_total),
        "kept in total: {kept_total}"
    );
    let fds = open_fds(pid);
    assert!(
        fds <= baseline + MAX_CONNECTIONS + 4 && fds < MAX_FDS as usize - 64,
        "{fds} descriptors open with the total limit reached ({baseline} before the flood)"
    );
    // The resident caller is still served, uploads included (an upload to
    // the filesystem store takes a descriptor of its own).
    round_trip(resident.clone(), "resident-2").await;

    // While the flood is held the server does nothing: no busy loop. The
    // pause measures CPU time; it synchronises nothing.
    let ticks = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - ticks;
    assert!(used <= 20, "{used} ticks of CPU in 2 s with the flood held");

    // One warning for the whole flood.
    let warnings = server.log().matches(REFUSED).count();
    assert_eq!(warnings, 1, "{}", server.log());

    // The flood ends: its slots are freed.
    drop(one_peer);
    drop(others);
    eventually(
        "a new caller from the flood's address is served",
        Duration::from_secs(30),
        || async {
            match channel_from("127.0.0.1", addr).await {
                Ok(c) => ContentServiceClient::new(c)
                    .head_object(sealgate::api::pb::HeadObjectRequest {
                        object: Some(super::obj("u", "moments", "before")),
                    })
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        },
    )
    .await;
    drop(server);
}

/// The log line of an accept that failed for want of descriptors.
const OUT_OF_FDS: &str = "cannot accept connections: out of file descriptors";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    // Limits above what 64 descriptors hold: accepting runs out first.
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = serve_limited(dir.path(), 64).await;
    let pid = server.child.id();
    let resident = channel_from("127.0.0.1", addr).await.expect("resident");
    round_trip(resident.clone(), "before").await;

    // 100 connections: those past the descriptors wait in the listen queue.
    let mut flood = Vec::new();
    for _ in 0..100 {
        flood.push(tcp_from("127.0.0.1".parse().unwrap(), addr).await);
    }
    eventually(
        "the server logs that it is out of descriptors",
        Duration::from_secs(30),
        || async { server.log().contains(OUT_OF_FDS) },
    )
    .await;
    // Backing off, not spinning; logged once. The pause measures CPU time;
    // it synchronises nothing.
    let ticks = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - ticks;
    assert!(used <= 20, "{used} ticks of CPU in 2 s out of descriptors");
    assert_eq!(server.log().matches(OUT_OF_FDS).count(), 1);
    // The resident connection still answers calls that need no
    // descriptor. (One that opens a file fails meanwhile: this is what the
    // connection limits keep the process from.)
    tonic_health::pb::health_client::HealthClient::new(resident.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a health check on an open connection");

    drop(flood);
    eventually(
        "accepting again once descriptors are free",
        Duration::from_secs(30),
        || async { server.log().contains("accepting connections again") },
    )
    .await;
    round_trip(
        channel_from("127.0.0.2", addr).await.expect("connect"),
        "after",
    )
    .await;
    drop(server);
}
