//! Admission limits: connections in total and per peer address, and
//! concurrent uploads.

use std::net::IpAddr;
use std::time::Duration;

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{eventually, expect_reason, finish_msg, header_msg, put, tmp_files, TestGateway};

/// A connection from `local` that has answered a health check, or the
/// error of the check.
pub(super) async fn connection(gw: &TestGateway, local: &str) -> Result<Channel, tonic::Status> {
    let local: IpAddr = local.parse().unwrap();
    let channel = Endpoint::from_shared(gw.endpoint())
        .unwrap()
        .local_address(Some(local))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_peer_limit_are_closed() {
    let gw = TestGateway::start_with(|c| {
        c.limits.max_connections_per_peer = 2;
    })
    .await;
    let first = connection(&gw, "127.0.0.1").await.expect("first");
    let _second = connection(&gw, "127.0.0.1").await.expect("second");
    let refused = connection(&gw, "127.0.0.1").await;
    assert!(refused.is_err(), "a third from one peer: {refused:?}");
    connection(&gw, "127.0.0.2")
        .await
        .expect("another peer address is served");
    drop(first);
    eventually(
        "a closed connection frees its peer's slot",
        Duration::from_secs(10),
        || async { connection(&gw, "127.0.0.1").await.is_ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_total_limit_the_longest_idle_connection_makes_room() {
    use tokio::io::AsyncReadExt;
    let gw = TestGateway::start_with(|c| {
        c.limits.max_connections = Some(2);
    })
    .await;
    // Two connections, each with a call open (a health Watch, whose
    // stream stays open once its first answer came): a connection with a
    // call open is never closed to make room, so a third is refused.
    let block = h2raw::call_headers("/grpc.health.v1.Health/Watch");
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        h2raw::open(&mut s).await;
        h2raw::write_frame(&mut s, h2raw::HEADERS, 0x4, 1, &block).await;
        // An empty HealthCheckRequest, END_STREAM.
        h2raw::write_frame(&mut s, h2raw::DATA, 0x1, 1, &[0, 0, 0, 0, 0]).await;
        while h2raw::read_frame(&mut s).await.0 != h2raw::DATA {}
        busy.push(s);
    }
    let refused = connection(&gw, "127.0.0.3").await;
    assert!(
        refused.is_err(),
        "a third with both calls open: {refused:?}"
    );
    drop(busy);
    // Two idle connections (the preface, then nothing): the older one
    // makes room for a third.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut s = kept_connection(&gw).await;
        h2raw::open(&mut s).await;
        // Nothing moves on it after this: the first is idle longer.
        h2raw::settle(&mut s).await;
        idle.push(s);
    }
    connection(&gw, "127.0.0.3")
        .await
        .expect("a third is served: the longest idle made room");
    // What the server sent before is read past, up to the close.
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while matches!(idle[0].read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(closed.is_ok(), "the oldest idle connection is closed");
    // The newer one stays open.
    let open = loop {
        match idle[1].try_read(&mut buf) {
            Ok(0) => break false,
            Ok(_) => {}
            Err(e) => break e.kind() == std::io::ErrorKind::WouldBlock,
        }
    };
    assert!(open, "the newer idle connection is still open");
}

/// A TCP connection the server keeps (its SETTINGS arrive), polling until
/// the slots of closed ones are free.
async fn kept_connection(gw: &TestGateway) -> tokio::net::TcpStream {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let mut head = [0u8; 1];
        let peeked = tokio::time::timeout(Duration::from_secs(5), s.peek(&mut head)).await;
        if matches!(peeked, Ok(Ok(1))) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An upload that has sent its header and waits: its sender ends it.
pub(super) struct OpenUpload {
    pub tx: mpsc::Sender<pb::PutObjectRequest>,
    pub done: tokio::task::JoinHandle<Result<pb::PutObjectResponse, tonic::Status>>,
}

/// Starts an upload of `id` that sends its header and waits, and returns
/// once the server holds it: the filesystem store creates an upload's
/// temporary file after its header, and an upload holds its permit from
/// before that until it ends. `uploads` is how many such uploads `gw`
/// holds once this one is held (uploads that only the caller starts).
pub(super) async fn open_upload(gw: &TestGateway, id: &str, uploads: usize) -> OpenUpload {
    let mut client: ContentServiceClient<Channel> = gw.content().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(header_msg("u", "moments", id)).await.unwrap();
    let done = tokio::spawn(async move {
        client
            .put_object(ReceiverStream::new(rx))
            .await
            .map(tonic::Response::into_inner)
    });
    let upload = OpenUpload { tx, done };
    eventually(
        &format!("the server holds upload {id}"),
        Duration::from_secs(10),
        || async {
            assert!(
                !upload.done.is_finished(),
                "upload {id} ended before it was held"
            );
            tmp_files(&gw.data_dir).len() == uploads
        },
    )
    .await;
    upload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_limit_are_refused_until_one_ends() {
    let gw = TestGateway::start_with(|c| {
        c.limits.max_concurrent_uploads = Some(2);
    })
    .await;
    // One after the other, each held by the server before the next starts:
    // a third call started while one of them was still on its way would
    // take that one's permit.
    let first = open_upload(&gw, "one", 1).await;
    let second = open_upload(&gw, "two", 2).await;
    let s = expect_reason(
        put(&mut gw.content().await, "u", "moments", "three", b"x", 1).await,
        Code::ResourceExhausted,
        "TOO_MANY_UPLOADS",
        "third upload",
    );
    assert!(s.message().contains("max_concurrent_uploads"), "{s:?}");
    assert!(!second.done.is_finished(), "the second upload still runs");
    first.tx.send(finish_msg(Some(b""))).await.unwrap();
    drop(first.tx);
    first
        .done
        .await
        .unwrap()
        .expect("the first upload completes");
    // The permit goes with the call's handler, before its response.
    put(&mut gw.content().await, "u", "moments", "four", b"x", 1)
        .await
        .expect("an upload is accepted once one ended");
    drop(second.tx);
    expect_reason(
        second.done.await.unwrap(),
        Code::InvalidArgument,
        "UPLOAD_NOT_FINISHED",
        "the second upload, cut short",
    );
}

/// Raw HTTP/2 over a TCP stream, as a client that does not queue its
/// calls would speak it.
pub(super) mod h2raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const SETTINGS: u8 = 0x4;
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;

    pub async fn write_frame(s: &mut TcpStream, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        s.write_all(&frame).await.unwrap();
    }

    /// The next frame: (type, flags, stream, payload).
    pub async fn read_frame(s: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.expect("a frame");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.expect("a frame's payload");
        (head[3], head[4], stream, payload)
    }

    pub const PING: u8 = 0x6;

    /// A PING answered: every frame sent before it was read by the server,
    /// and its answer is the last byte the server sends until asked again.
    pub async fn settle(s: &mut TcpStream) {
        write_frame(s, PING, 0, 0, b"settled!").await;
        loop {
            let (kind, flags, _, payload) = read_frame(s).await;
            if kind == PING && flags & 1 == 1 && payload == b"settled!" {
                return;
            }
        }
    }

    /// Opens the connection: the preface and our (empty) settings; returns
    /// the server's settings once acknowledged, so that the server
    /// enforces them from the next frame on.
    pub async fn open(s: &mut TcpStream) -> Vec<(u16, u32)> {
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        write_frame(s, SETTINGS, 0, 0, &[]).await;
        loop {
            let (kind, flags, _, payload) = read_frame(s).await;
            if kind == SETTINGS && flags & 1 == 0 {
                write_frame(s, SETTINGS, 1, 0, &[]).await;
                return payload
                    .chunks(6)
                    .map(|e| {
                        (
                            u16::from_be_bytes([e[0], e[1]]),
                            u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                        )
                    })
                    .collect();
            }
        }
    }

    /// The HPACK block of a gRPC call to `path` (literal fields, no
    /// Huffman coding, nothing indexed by the peer).
    pub fn call_headers(path: &str) -> Vec<u8> {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        let mut field = |name: &str, value: &str| {
            block.push(0x00);
            block.push(u8::try_from(name.len()).unwrap());
            block.extend_from_slice(name.as_bytes());
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        };
        field(":path", path);
        field(":authority", "localhost");
        field("content-type", "application/grpc");
        field("te", "trailers");
        block
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_per_connection_limit_are_refused() {
    let gw = TestGateway::start_with(|c| {
        c.limits.max_streams_per_connection = 2;
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let settings = h2raw::open(&mut s).await;
    assert!(
        settings.contains(&(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS, 2)),
        "the server announces its limit: {settings:?}"
    );
    // Three calls whose requests never end: the first two stay open (the
    // server waits for their messages), the third is one too many. A
    // well-behaved client (tonic's) queues it instead.
    let block = h2raw::call_headers("/grpc.health.v1.Health/Check");
    for stream in [1, 3, 5] {
        // END_HEADERS, not END_STREAM.
        h2raw::write_frame(&mut s, h2raw::HEADERS, 0x4, stream, &block).await;
    }
    let refused = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (kind, _, stream, payload) = h2raw::read_frame(&mut s).await;
            if kind == h2raw::RST_STREAM {
                let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                return (stream, code);
            }
        }
    })
    .await
    .expect("a stream reset within 30 s");
    assert_eq!(refused, (5, h2raw::REFUSED_STREAM), "the third stream");
    // Other connections are served meanwhile.
    connection(&gw, "127.0.0.1")
        .await
        .expect("another connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_its_handshake_is_dropped_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = crate::support::gateway::tls::TlsGateway::start_with(|c| {
        c.limits.handshake_timeout_seconds = 1;
    })
    .await;
    let started = std::time::Instant::now();
    // One says nothing; one sends the start of a TLS record and stops.
    let mut silent = tokio::net::TcpStream::connect(t.gw.addr).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(t.gw.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    // A caller with a certificate is served while both are held.
    let client = t.ca.client_uri(crate::support::gateway::tls::MOMENTS);
    let mut c = t.content(Some(&client)).await;
    put(&mut c, "u", "moments", "a", b"served", 6)
        .await
        .expect("a good caller is served");
    for (what, stream) in [("silent", &mut silent), ("partial", &mut partial)] {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after 30 s"));
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{what}: the server sent something: {read:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{what}: closed before the deadline ({:?})",
            started.elapsed()
        );
    }
}
