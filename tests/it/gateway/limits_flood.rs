//! The floods, as a hostile caller would send them: the real
//! binary, limited to 1,024 file descriptors (a common default), gets
//! more idle TCP connections than its limits hold. Connections past the
//! per-address limit are closed as soon as they are accepted; at the total
//! limit (derived from the descriptors) or out of descriptors the
//! longest-idle connections are closed to make room, so a new caller is
//! served at once while most of the flood stays open. The process stays
//! within its descriptor budget, its CPU idle, its log says so once.
//!
//! Also: the binary raises its soft descriptor limit to the hard one, and
//! derives its limits from the raised one.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sealgate::api::pb::content_service_client::ContentServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::{Channel, Endpoint};

use super::{get, put};
use crate::support::eventually;
use crate::support::serve::{Serve, ServeProcess};

/// The descriptor limit of the server process.
const MAX_FDS: u64 = 1024;
/// The default of `limits.max_connections_per_peer`.
const MAX_CONNECTIONS_PER_PEER: usize = 256;

/// The log line naming the connection and upload limits in force.
const LIMITS: &str = "limits: max_connections = ";
/// The log line of connections closed to make room.
const MADE_ROOM: &str = "closing the longest-idle connections to make room";

/// The connection limit in force, from the server's log.
fn max_connections(log: &str) -> usize {
    let rest = &log[log
        .find(LIMITS)
        .unwrap_or_else(|| panic!("no limits line:\n{log}"))
        + LIMITS.len()..];
    rest[..rest.find(',').unwrap()].parse().unwrap()
}

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

/// Starts the real binary limited to `max_fds` descriptors (soft and
/// hard) with `env`; returns it (killed when dropped) and its address.
async fn serve_limited(
    dir: &std::path::Path,
    max_fds: u64,
    env: &[(&str, &str)],
) -> (ServeProcess, SocketAddr) {
    let mut server = Serve::new(dir)
        .envs(env)
        .wrapped_in("prlimit", &[&format!("--nofile={max_fds}:{max_fds}"), "--"])
        .spawn();
    let addr = server.listening().await;
    (server, addr)
}

/// Connections the server has closed, of `conns` (`closed` remembers
/// those seen closed): what the server sent is read and dropped, an end
/// of stream or a reset is a close.
fn count_closed(conns: &[TcpStream], closed: &mut [bool]) -> usize {
    let mut buf = [0u8; 1024];
    for (conn, closed) in conns.iter().zip(closed.iter_mut()) {
        while !*closed {
            match conn.try_read(&mut buf) {
                Ok(0) => *closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => *closed = true,
            }
        }
    }
    closed.iter().filter(|c| **c).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_leaves_other_callers_served() {
    assert_eq!(
        sealgate::config::Limits::default().max_connections_per_peer,
        MAX_CONNECTIONS_PER_PEER,
        "this test floods past the default per-address limit"
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = serve_limited(dir.path(), MAX_FDS, &[]).await;
    let pid = server.child.id();
    let max = max_connections(&server.log());
    // Derived from the descriptors: connections and uploads fit, with
    // room for the stores.
    assert!(
        (MAX_CONNECTIONS_PER_PEER..MAX_FDS as usize / 2 + 128).contains(&max),
        "max_connections {max} for {MAX_FDS} descriptors"
    );

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

    // More from three other addresses: past the total limit the
    // longest-idle connections are closed to make room, which keeps the
    // process within its descriptors, with room for uploads and the
    // stores.
    let mut all = one_peer;
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let (conns, _) = flood(host.parse().unwrap(), addr, 250).await;
        all.extend(conns);
    }
    let mut closed = vec![false; all.len()];
    eventually(
        "the flood's connections past the limit closed",
        Duration::from_secs(30),
        || {
            let open = all.len() - count_closed(&all, &mut closed);
            async move { open <= max }
        },
    )
    .await;
    let fds = open_fds(pid);
    assert!(
        fds <= baseline + max + 4 && fds < MAX_FDS as usize - 64,
        "{fds} descriptors open with the total limit reached ({baseline} before the flood)"
    );
    // A caller is served meanwhile, uploads included (an upload to the
    // filesystem store takes a descriptor of its own).
    round_trip(
        channel_from("127.0.0.5", addr).await.expect("connect"),
        "during",
    )
    .await;

    // While the flood is held the server does nothing: no busy loop. The
    // pause measures CPU time; it synchronises nothing.
    let ticks = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - ticks;
    assert!(used <= 20, "{used} ticks of CPU in 2 s with the flood held");

    // One warning for each kind of the flood's closes.
    let log = server.log();
    assert_eq!(log.matches(REFUSED).count(), 1, "{log}");
    assert_eq!(log.matches(MADE_ROOM).count(), 1, "{log}");

    // The flood ends: its slots are freed.
    drop(all);
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
async fn out_of_descriptors_the_longest_idle_connections_make_room() {
    // Limits set above what 64 descriptors hold: accepting runs out first.
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = serve_limited(
        dir.path(),
        64,
        &[
            ("SEALGATE_LIMITS_MAX_CONNECTIONS", "768"),
            ("SEALGATE_LIMITS_MAX_CONCURRENT_UPLOADS", "16"),
        ],
    )
    .await;
    let pid = server.child.id();
    // Configured past the budget: said so.
    assert!(
        server.log().contains("exceed the 64 descriptors"),
        "{}",
        server.log()
    );
    round_trip(
        channel_from("127.0.0.1", addr).await.expect("connect"),
        "before",
    )
    .await;

    // 100 connections: those past the descriptors wait in the listen
    // queue until the longest-idle ones are closed.
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
    // Every one of them is accepted in the end, and the oldest closed.
    let mut closed = vec![false; flood.len()];
    eventually(
        "the flood's first connections are closed to make room",
        Duration::from_secs(30),
        || {
            let n = count_closed(&flood, &mut closed);
            async move { n > 0 }
        },
    )
    .await;
    // A new caller is served, an upload included.
    round_trip(
        channel_from("127.0.0.2", addr).await.expect("connect"),
        "during",
    )
    .await;
    // Not spinning; logged once. The pause measures CPU time; it
    // synchronises nothing.
    let ticks = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - ticks;
    assert!(used <= 20, "{used} ticks of CPU in 2 s out of descriptors");
    assert_eq!(server.log().matches(OUT_OF_FDS).count(), 1);
    assert!(open_fds(pid) <= 64);

    drop(flood);
    round_trip(
        channel_from("127.0.0.3", addr).await.expect("connect"),
        "after",
    )
    .await;
    drop(server);
}

/// The HTTP/2 client preface and an empty SETTINGS frame: what a client
/// sends first, then nothing.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_make_room_for_a_new_caller() {
    const FLOOD: usize = 1100;
    const HOSTS: [&str; 5] = [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
    ];
    let dir = tempfile::tempdir().unwrap();
    // 220 from each address: the per-address limit is not what is tested.
    let (server, addr) = serve_limited(
        dir.path(),
        MAX_FDS,
        &[("SEALGATE_LIMITS_MAX_CONNECTIONS_PER_PEER", "1000")],
    )
    .await;
    let pid = server.child.id();
    let max = max_connections(&server.log());
    assert!(max < FLOOD, "the flood must exceed the limit {max}");

    // 1,100 idle connections from five addresses: the HTTP/2 preface, then
    // nothing.
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let mut conn = tcp_from(HOSTS[i % HOSTS.len()].parse().unwrap(), addr).await;
        conn.write_all(PREFACE).await.unwrap();
        flood.push(conn);
    }
    // The server keeps `max` of them: the longest idle are closed, exactly
    // as many as the newer ones needed.
    let mut closed = vec![false; FLOOD];
    let needed = FLOOD - max;
    eventually(
        &format!("{needed} of the flood closed to make room"),
        Duration::from_secs(60),
        || {
            let n = count_closed(&flood, &mut closed);
            assert!(n <= needed, "{n} closed, {needed} needed");
            async move { n == needed }
        },
    )
    .await;
    assert!(open_fds(pid) < MAX_FDS as usize);

    // A new caller, while the flood is held.
    let started = Instant::now();
    let call = async {
        let channel = channel_from("127.0.0.9", addr).await.expect("connect");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
    };
    let answered = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the new caller answered within 10 s");
    let took = started.elapsed();
    println!("a new caller under a flood of {FLOOD} idle connections: served in {took:?}");
    answered.expect("the new caller is served");

    // It took the place of one more idle connection, and no other.
    eventually(
        "one more of the flood closed for the new caller",
        Duration::from_secs(30),
        || {
            let n = count_closed(&flood, &mut closed);
            assert!(n <= needed + 1, "{n} closed, {} needed", needed + 1);
            async move { n == needed + 1 }
        },
    )
    .await;
    // The longest idle went first: the oldest, not the newest.
    assert!(
        closed[0] && !closed[FLOOD - 1],
        "the first closed, the last open"
    );
    assert_eq!(server.log().matches(MADE_ROOM).count(), 1);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Serve::new(dir.path())
        .wrapped_in("prlimit", &["--nofile=1024:4096", "--"])
        .spawn();
    server.listening().await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().skip(3).take(2).collect::<Vec<_>>(),
        ["4096", "4096"],
        "{line}"
    );
    let log = server.log();
    assert!(
        log.contains("descriptors: soft limit raised from 1024 to 4096 (hard limit)"),
        "{log}"
    );
    // The limits are derived from the raised one.
    assert!(log.contains("for 4096 descriptors"), "{log}");
    assert!(max_connections(&log) > 1024, "{log}");
}
