//! Signed HTTP reads: SignRead over gRPC, then GET/HEAD of the link on the
//! gateway's HTTP listener by a real HTTP client (hyper) over a loopback
//! socket, HTTP/1.1 and HTTP/2. Each status a CDN can see: 200, 206, 304,
//! 403 (tampered, foreign, expired, key retired), 404 (deleted, replaced),
//! 410 (erased, restricted, and a response in flight cut), 416.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::Code;

use super::master_rotation::retire;
use super::*;
use crate::support::host::free_port;

backend_tests!(each_status_of_a_signed_read);
key_store_tests!(
    tokens_survive_a_restart_and_end_with_their_master_version,
    a_response_in_flight_ends_when_its_owner_is_erased
);

/// HTTP/1.1 or HTTP/2 (prior knowledge, as on plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    H1,
    H2,
}

/// A response: status, headers, and the body (or why it broke off, with
/// the bytes received before).
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Result<Vec<u8>, String>,
}

impl Got {
    fn body(&self) -> &[u8] {
        self.body.as_deref().expect("a whole body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

/// A gateway with its HTTP listener on a free loopback port.
async fn start(tweak: impl FnOnce(&mut Config)) -> (TestGateway, u16) {
    let port = free_port();
    let gw = TestGateway::start_with(|c| {
        c.http.listen = format!("127.0.0.1:{port}");
        tweak(c);
    })
    .await;
    ready(&gw).await;
    (gw, port)
}

/// Waits until the gateway serves: its HTTP listener is bound before its
/// gRPC services answer.
async fn ready(gw: &TestGateway) {
    eventually("the gateway serving", Duration::from_secs(30), || async {
        health(gw).await == 1
    })
    .await;
}

async fn sign(
    gw: &TestGateway,
    user: &str,
    id: &str,
    range: Option<(u64, Option<u64>)>,
    ttl_seconds: u32,
) -> Result<pb::SignReadResponse, Status> {
    gw.content()
        .await
        .sign_read(pb::SignReadRequest {
            object: Some(obj(user, "moments", id)),
            range: range.map(|(start, end)| pb::ByteRange { start, end }),
            ttl_seconds,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `req` over a new client connection on `io` (TCP, or TLS over
/// it), speaking `version`.
async fn send<I>(
    io: I,
    version: Version,
    req: http::Request<Empty<Bytes>>,
) -> http::Response<hyper::body::Incoming>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match version {
        Version::H1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .expect("HTTP/1.1 handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.expect("HTTP/1.1 response")
        }
        Version::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await
                    .expect("HTTP/2 handshake");
            tokio::spawn(conn);
            sender.send_request(req).await.expect("HTTP/2 response")
        }
    }
}

/// One request on a new connection.
async fn request(
    port: u16,
    version: Version,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the HTTP listener");
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::<Bytes>::new()).unwrap();
    let response = send(tcp, version, req).await;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| e.to_string());
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Got {
    request(port, Version::H1, "GET", path, headers).await
}

/// The master version a link's token names (FORMAT.md, "Signed read
/// tokens": the 4 bytes after the version byte).
fn key_version(path: &str) -> u32 {
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(path.strip_prefix("/v1/o/").unwrap())
        .unwrap();
    assert_eq!(token[0], 1, "token format 1");
    u32::from_be_bytes(token[1..5].try_into().unwrap())
}

/// The token with one character changed (still base64url).
fn tampered(path: &str, at: usize) -> String {
    let mut p = path.to_string().into_bytes();
    let i = p.len() - at;
    p[i] = if p[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(p).unwrap()
}

/// Every status a link can answer, on HTTP/1.1 and HTTP/2.
async fn each_status_of_a_signed_read() {
    let (gw, port) = start(|_| {}).await;
    let mut content = gw.content().await;
    let body = data(300_000, 7);
    let info = put(&mut content, "ann", "moments", "cat.jpg", &body, 64 << 10)
        .await
        .unwrap();
    let link = sign(&gw, "ann", "cat.jpg", None, 0).await.unwrap();
    assert!(link.path.starts_with("/v1/o/"), "{}", link.path);
    assert!(
        !link.path.contains("ann") && !link.path.contains("cat"),
        "the link names neither user nor object"
    );
    assert_eq!(link.etag, info.etag);
    assert!(link.url.is_empty(), "no http.public_url");

    // 200, the same bytes over both protocols, with the headers a CDN uses.
    for version in [Version::H1, Version::H2] {
        let got = request(port, version, "GET", &link.path, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{version:?}");
        assert_eq!(got.body(), &body[..], "{version:?}");
        assert_eq!(got.header("content-length"), body.len().to_string());
        assert_eq!(got.header("etag"), format!("\"{}\"", info.etag));
        assert_eq!(got.header("content-type"), "image/jpeg");
        assert_eq!(got.header("accept-ranges"), "bytes");
        let max_age: u64 = got
            .header("cache-control")
            .strip_prefix("private, max-age=")
            .expect("private, max-age")
            .parse()
            .unwrap();
        assert!(
            (590..=600).contains(&max_age),
            "max-age {max_age} not beyond the token's 600 s"
        );
    }
    // HEAD: the headers, no body.
    let head = request(port, Version::H1, "HEAD", &link.path, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), body.len().to_string());
    assert!(head.body().is_empty());
    // 304 for the etag (weak comparison, in a list), not for another.
    let etag = format!("\"{}\"", info.etag);
    let not_modified = get(
        port,
        &link.path,
        &[("if-none-match", &format!("\"x\", W/{etag}"))],
    )
    .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body().is_empty());
    let modified = get(port, &link.path, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(modified.status, StatusCode::OK);

    // 206 for a Range, on both protocols; suffix and open ranges.
    for version in [Version::H1, Version::H2] {
        let part = request(
            port,
            version,
            "GET",
            &link.path,
            &[("range", "bytes=100000-100099")],
        )
        .await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(part.body(), &body[100_000..100_100]);
        assert_eq!(part.header("content-range"), "bytes 100000-100099/300000");
    }
    let tail = get(port, &link.path, &[("range", "bytes=-10")]).await;
    assert_eq!(tail.body(), &body[body.len() - 10..]);
    // 416 past the end, naming the size.
    let past = get(port, &link.path, &[("range", "bytes=300000-")]).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), "bytes */300000");

    // A link to a range: 206 for it, a Range within it, 416 outside it.
    let ranged = sign(&gw, "ann", "cat.jpg", Some((1_000, Some(2_000))), 60)
        .await
        .unwrap();
    let got = get(port, &ranged.path, &[]).await;
    assert_eq!(got.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(got.body(), &body[1_000..2_000]);
    assert_eq!(got.header("content-range"), "bytes 1000-1999/300000");
    let within = get(port, &ranged.path, &[("range", "bytes=1500-1599")]).await;
    assert_eq!(within.body(), &body[1_500..1_600]);
    let outside = get(port, &ranged.path, &[("range", "bytes=5000-5099")]).await;
    assert_eq!(outside.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let max_age = get(port, &ranged.path, &[]).await;
    assert!(max_age
        .header("cache-control")
        .strip_prefix("private, max-age=")
        .is_some_and(|s| s.parse::<u64>().unwrap() <= 60));

    // 403: a changed character anywhere, another path, a wrong method.
    for at in [1, 5, 20, link.path.len() - 8] {
        let forged = get(port, &tampered(&link.path, at), &[]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "changed at {at}");
        assert_eq!(forged.body(), b"forbidden\n");
        assert_eq!(forged.header("cache-control"), "no-store");
    }
    assert_eq!(
        get(port, "/v1/o/not-a-token", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(port, "/v1/other", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let post = request(port, Version::H1, "POST", &link.path, &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), "GET, HEAD");
    // 403: a link another deployment made, for the same names.
    let (other, other_port) = start(|_| {}).await;
    put(
        &mut other.content().await,
        "ann",
        "moments",
        "cat.jpg",
        &body,
        64 << 10,
    )
    .await
    .unwrap();
    let foreign = sign(&other, "ann", "cat.jpg", None, 0).await.unwrap();
    assert_eq!(
        get(other_port, &foreign.path, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(port, &foreign.path, &[]).await.status,
        StatusCode::FORBIDDEN,
        "a foreign deployment's token"
    );

    // 404: replaced (another etag), deleted.
    put(&mut content, "ann", "moments", "dog.jpg", &body, 64 << 10)
        .await
        .unwrap();
    let dog = sign(&gw, "ann", "dog.jpg", None, 0).await.unwrap();
    put(
        &mut content,
        "ann",
        "moments",
        "dog.jpg",
        &data(1_000, 9),
        1_000,
    )
    .await
    .unwrap();
    let replaced = get(port, &dog.path, &[]).await;
    assert_eq!(replaced.status, StatusCode::NOT_FOUND);
    assert_eq!(replaced.body(), b"not found\n");
    delete(&mut content, "ann", "moments", "dog.jpg")
        .await
        .unwrap();
    assert_eq!(
        get(port, &dog.path, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // SignRead of a missing object is NOT_FOUND, not a link.
    expect_reason(
        sign(&gw, "ann", "dog.jpg", None, 0).await,
        Code::NotFound,
        "OBJECT_NOT_FOUND",
        "no link to a missing object",
    );

    // 410 once the owner is erased, on both protocols, at once.
    try_erase(&gw, "ann").await.unwrap();
    for version in [Version::H1, Version::H2] {
        let gone = request(port, version, "GET", &link.path, &[]).await;
        assert_eq!(gone.status, StatusCode::GONE, "{version:?}");
        assert_eq!(gone.body(), b"gone\n");
    }
    expect_reason(
        sign(&gw, "ann", "cat.jpg", None, 0).await,
        Code::FailedPrecondition,
        "USER_ERASED",
        "no link for an erased user",
    );
    drop(other);
}

/// A token made before a restart opens after it; retiring the master
/// version whose key made it refuses it (403), while a new token opens.
async fn tokens_survive_a_restart_and_end_with_their_master_version() {
    let (gw, port) = start(|_| {}).await;
    let body = data(50_000, 3);
    put(&mut gw.content().await, "bo", "moments", "a", &body, 8_192)
        .await
        .unwrap();
    let old = sign(&gw, "bo", "a", None, 0).await.unwrap();
    assert_eq!(get(port, &old.path, &[]).await.body(), &body[..]);
    // Restarted, with the listener on another port.
    let port = free_port();
    let gw = gw
        .restart_with(|c| c.http.listen = format!("127.0.0.1:{port}"))
        .await;
    ready(&gw).await;
    assert_eq!(get(port, &old.path, &[]).await.body(), &body[..]);
    // Master version 2; version 1 still opens its tokens until retired.
    let (version, _) = rotate_master(&gw).await;
    assert_eq!(version, 2);
    assert_eq!(get(port, &old.path, &[]).await.status, StatusCode::OK);
    let new = sign(&gw, "bo", "a", None, 0).await.unwrap();
    assert_eq!(key_version(&old.path), 1);
    assert_eq!(
        key_version(&new.path),
        2,
        "the new token is master version 2's"
    );
    retire(&gw, 1).await.expect("retire master version 1");
    assert_eq!(
        get(port, &old.path, &[]).await.status,
        StatusCode::FORBIDDEN,
        "its key is gone with master version 1"
    );
    assert_eq!(get(port, &new.path, &[]).await.body(), &body[..]);
    // And after a restart: still refused, the new one still served.
    let port = free_port();
    let gw = gw
        .restart_with(|c| c.http.listen = format!("127.0.0.1:{port}"))
        .await;
    ready(&gw).await;
    assert_eq!(
        get(port, &old.path, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get(port, &new.path, &[]).await.status, StatusCode::OK);
    drop(gw);
}

/// A GET in flight when its owner is erased ends before its last byte
/// (HTTP/1.1: the connection is cut; HTTP/2: the stream is reset), as an
/// erased GetObject stream does; a scheduled erasure's restriction answers
/// 410 too.
async fn a_response_in_flight_ends_when_its_owner_is_erased() {
    let (gw, port) = start(|_| {}).await;
    let body = data(24 << 20, 5);
    let mut content = gw.content().await;
    put(&mut content, "cy", "moments", "big", &body, 1 << 20)
        .await
        .unwrap();
    for (user, version) in [("cy", Version::H1), ("dee", Version::H2)] {
        if user != "cy" {
            put(&mut content, user, "moments", "big", &body, 1 << 20)
                .await
                .unwrap();
        }
        let link = sign(&gw, user, "big", None, 0).await.unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = http::Request::get(format!("http://127.0.0.1:{port}{}", link.path))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send(tcp, version, req).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body_stream = response.into_body();
        // Some of it received; the rest waits in the server.
        let mut received = 0usize;
        while received < (1 << 20) {
            let frame = body_stream.frame().await.expect("a frame").expect("data");
            received += frame.data_ref().map_or(0, |d| d.len());
        }
        try_erase(&gw, user).await.unwrap();
        let mut ended_by_error = false;
        while let Some(frame) = body_stream.frame().await {
            match frame {
                Ok(f) => received += f.data_ref().map_or(0, |d| d.len()),
                Err(_) => {
                    ended_by_error = true;
                    break;
                }
            }
        }
        assert!(ended_by_error, "{version:?}: the body must break off");
        assert!(
            received < body.len(),
            "{version:?}: {received} of {} bytes arrived after the erasure",
            body.len()
        );
        assert_eq!(
            get(port, &link.path, &[]).await.status,
            StatusCode::GONE,
            "{version:?}"
        );
    }
    // Restricted by a scheduled erasure: 410 while it is pending.
    put(&mut content, "eve", "moments", "p", &data(1_000, 1), 1_000)
        .await
        .unwrap();
    let link = sign(&gw, "eve", "p", None, 0).await.unwrap();
    gw.erasure()
        .await
        .erase_user(pb::EraseUserRequest {
            user_id: "eve".into(),
            after_seconds: 3_600,
        })
        .await
        .unwrap();
    assert_eq!(get(port, &link.path, &[]).await.status, StatusCode::GONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expires() {
    let (gw, port) = start(|_| {}).await;
    put(&mut gw.content().await, "fay", "moments", "x", b"hello", 5)
        .await
        .unwrap();
    let link = sign(&gw, "fay", "x", None, 1).await.unwrap();
    let expires = link.expire_time.unwrap().seconds;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    assert!(expires - now() <= 1);
    // Accepted until its expiry second, refused from then on.
    if now() < expires {
        assert_eq!(get(port, &link.path, &[]).await.body(), b"hello");
    }
    while now() < expires {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expired = get(port, &link.path, &[]).await;
    assert_eq!(expired.status, StatusCode::FORBIDDEN);
    assert_eq!(expired.body(), b"forbidden\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_read_refusals() {
    let (gw, _) = start(|c| c.http.max_ttl_seconds = 120).await;
    put(&mut gw.content().await, "gus", "moments", "x", b"hi", 2)
        .await
        .unwrap();
    expect_reason(
        sign(&gw, "gus", "x", None, 121).await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "ttl past http.max_ttl_seconds",
    );
    expect_reason(
        sign(&gw, "gus", "x", Some((5, None)), 0).await,
        Code::OutOfRange,
        "INVALID_RANGE",
        "range past the end",
    );
    expect_reason(
        sign(&gw, "gus", "x", Some((1, Some(1))), 0).await,
        Code::InvalidArgument,
        "INVALID_RANGE",
        "empty range",
    );
    let link = sign(&gw, "gus", "x", None, 0).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ttl = link.expire_time.unwrap().seconds - now;
    assert!((119..=120).contains(&ttl), "ttl 0 is the maximum: {ttl}");
    // Without a listener, no link.
    let plain = TestGateway::start().await;
    put(&mut plain.content().await, "gus", "moments", "x", b"hi", 2)
        .await
        .unwrap();
    expect_reason(
        sign(&plain, "gus", "x", None, 0).await,
        Code::FailedPrecondition,
        "HTTP_READS_OFF",
        "no HTTP listener",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_url_and_cache_control_are_configured() {
    let (gw, port) = start(|c| {
        c.http.public_url = "https://img.example.cn/".into();
        c.http.cache_control = "public, max-age=30".into();
    })
    .await;
    put(&mut gw.content().await, "hal", "moments", "x", b"hello", 5)
        .await
        .unwrap();
    let link = sign(&gw, "hal", "x", None, 0).await.unwrap();
    assert_eq!(link.url, format!("https://img.example.cn{}", link.path));
    let got = get(port, &link.path, &[]).await;
    assert_eq!(got.header("cache-control"), "public, max-age=30");
}

/// With `[tls]`, the HTTP listener serves HTTPS without a client
/// certificate (the token is the authority), HTTP/2 and HTTP/1.1 by ALPN;
/// SignRead itself still needs the content role's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_a_client_certificate() {
    use crate::support::gateway::tls::{TlsGateway, MOMENTS};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    let port = free_port();
    let t = TlsGateway::start_with(|c| c.http.listen = format!("127.0.0.1:{port}")).await;
    let moments = t.ca.client_uri(MOMENTS);
    let mut content = t.content(Some(&moments)).await;
    let body = data(70_000, 2);
    put(&mut content, "ivy", "moments", "p", &body, 8_192)
        .await
        .unwrap();
    let link = content
        .sign_read(pb::SignReadRequest {
            object: Some(obj("ivy", "moments", "p")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(t.ca.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    for (alpn, version) in [("h2", Version::H2), ("http/1.1", Version::H1)] {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .expect("TLS handshake without a client certificate");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
        let req = http::Request::get(format!("https://localhost:{port}{}", link.path))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send(tls, version, req).await;
        assert_eq!(response.status(), StatusCode::OK, "{alpn}");
        let got = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &body[..], "{alpn}");
    }
}

/// The listener keeps the gRPC listener's slow-client limits: a request
/// head that never completes, and a connection left idle, are closed; a
/// body the client stops reading is cut once the download pace
/// (`limits.stream_min_bytes` every `limits.stream_timeout_seconds`) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_keeps_the_slow_client_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, port) = start(|c| {
        c.limits.handshake_timeout_seconds = 1;
        c.limits.idle_connection_timeout_seconds = 2;
        c.limits.stream_timeout_seconds = 1;
        c.limits.stream_min_bytes = 4 << 20;
    })
    .await;
    let mut content = gw.content().await;
    let small = data(1_000, 1);
    put(&mut content, "jo", "moments", "s", &small, 1_000)
        .await
        .unwrap();
    let big = data(32 << 20, 2);
    put(&mut content, "jo", "moments", "b", &big, 1 << 20)
        .await
        .unwrap();
    let small_link = sign(&gw, "jo", "s", None, 0).await.unwrap();
    let big_link = sign(&gw, "jo", "b", None, 0).await.unwrap();
    let closed_within = |mut tcp: tokio::net::TcpStream, what: &'static str| async move {
        let mut buf = vec![0u8; 64 << 10];
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(read.is_ok(), "{what}: the server kept the connection open");
    };
    // A head that never ends.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /v1/o/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_within(tcp, "an unfinished request head").await;
    // A keep-alive connection left idle after its response.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", small_link.path).as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    while !response.ends_with(&small) {
        let mut buf = [0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "the response ended early");
        response.extend_from_slice(&buf[..n]);
    }
    closed_within(tcp, "an idle keep-alive connection").await;
    // A body nobody reads: cut after the pace's window, short of its end.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            http::Request::get(format!("http://127.0.0.1:{port}{}", big_link.path))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    let mut received = first.data_ref().map_or(0, |d| d.len());
    // The client stalls; the server's window ends meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut broke = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => received += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(
        broke && received < big.len(),
        "{received} of {} bytes",
        big.len()
    );
}
