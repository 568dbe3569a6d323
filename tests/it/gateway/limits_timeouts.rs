//! Time limits: an upload that stalls or trickles, a reader that never
//! reads, an idle connection and a unary call past its deadline are ended
//! by the server, and what they held is given back.

use std::time::{Duration, Instant};

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::config::Config;
use tokio::io::AsyncReadExt;
use tonic::Code;

use super::limits::{connection, h2raw, open_upload};
use super::{
    data, data_msg, eventually, expect_reason, obj, object_path, pseudonym, put, put_item,
    tmp_files, TestGateway,
};

/// How long the server lets a stream go below its pace in these tests.
const WINDOW: Duration = Duration::from_secs(1);

/// A gateway whose streams must move 64 KiB every second.
fn paced(c: &mut Config) {
    c.limits.stream_timeout_seconds = WINDOW.as_secs();
    c.limits.stream_min_bytes = 64 * 1024;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_ended_and_its_permit_returned() {
    let gw = TestGateway::start_with(|c| {
        paced(c);
        c.limits.max_concurrent_uploads = Some(1);
    })
    .await;
    let started = Instant::now();
    let upload = open_upload(&gw, "stalled", 1).await;
    let ended = tokio::time::timeout(Duration::from_secs(30), upload.done)
        .await
        .expect("the server ends a stalled upload")
        .unwrap();
    assert!(started.elapsed() >= WINDOW, "{:?}", started.elapsed());
    let s = expect_reason(
        ended,
        Code::DeadlineExceeded,
        "STREAM_STALLED",
        "an upload that sent its header and nothing more",
    );
    assert!(s.message().contains("limits.stream_min_bytes"), "{s:?}");
    assert_eq!(tmp_files(&gw.data_dir), Vec::<std::path::PathBuf>::new());
    // Its permit is back: the one upload allowed goes through.
    put(&mut gw.content().await, "u", "moments", "next", b"x", 1)
        .await
        .expect("an upload after the stalled one ended");
    drop(upload.tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upload_is_ended() {
    let gw = TestGateway::start_with(paced).await;
    let upload = open_upload(&gw, "trickle", 1).await;
    // 1 KiB every 100 ms: 10 KiB a second, under the 64 KiB the server
    // asks for. The client's pace is the point of the test, not a wait.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0usize;
    let started = Instant::now();
    let done = upload.done;
    tokio::pin!(done);
    let ended = loop {
        tokio::select! {
            ended = &mut done => break ended.unwrap(),
            _ = tick.tick() => {
                assert!(started.elapsed() < Duration::from_secs(30), "still open after 30 s");
                if upload.tx.send(data_msg(vec![7u8; 1024])).await.is_ok() {
                    sent += 1;
                }
            }
        }
    };
    assert!(sent >= 5, "the client trickled {sent} pieces");
    expect_reason(
        ended,
        Code::DeadlineExceeded,
        "STREAM_STALLED",
        "a trickling upload",
    );
    assert_eq!(tmp_files(&gw.data_dir), Vec::<std::path::PathBuf>::new());
}

/// Whether this process has the file at `path` open.
fn is_open(path: &std::path::Path) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_is_ended() {
    let gw = TestGateway::start_with(paced).await;
    let body = data(8 << 20, 3);
    let mut c = gw.content().await;
    put(&mut c, "u", "moments", "big", &body, 1 << 20)
        .await
        .unwrap();
    let path = object_path(&gw.data_dir, "moments", &pseudonym(&gw, "u").await, "big");
    let mut stream = c
        .get_object(pb::GetObjectRequest {
            object: Some(obj("u", "moments", "big")),
            range: None,
        })
        .await
        .expect("GetObject")
        .into_inner();
    // The client takes nothing: the server ends the read, closing the
    // object (and dropping its key and read-ahead).
    eventually(
        "the server stops reading for a client that takes nothing",
        Duration::from_secs(30),
        || async { !is_open(&path) },
    )
    .await;
    // What was already on its way arrives, then the stream's end.
    let mut got = 0usize;
    let end = loop {
        match stream.message().await {
            Ok(Some(pb::GetObjectResponse {
                part: Some(pb::get_object_response::Part::Data(d)),
            })) => got += d.len(),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the whole object arrived ({got} bytes)"),
            Err(s) => break s,
        }
    };
    assert!(got < body.len(), "{got} bytes");
    expect_reason(
        Err::<(), _>(end),
        Code::DeadlineExceeded,
        "STREAM_STALLED",
        "a reader that never read",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_its_slot_freed() {
    let gw = TestGateway::start_with(|c| {
        c.limits.idle_connection_timeout_seconds = 1;
        c.limits.max_connections_per_peer = 1;
    })
    .await;
    let started = Instant::now();
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    h2raw::open(&mut idle).await;
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // the server's settings acknowledgement
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection is still open after 30 s"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // Its slot is free: the one connection this peer may have is served.
    connection(&gw, "127.0.0.1")
        .await
        .expect("a new connection once the idle one is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_past_its_deadline_is_ended() {
    use sqlx::Connection;
    let gw = TestGateway::start_with(|c| {
        c.limits.unary_timeout_seconds = 1;
    })
    .await;
    let mut c: ContentServiceClient<_> = gw.content().await;
    put_item(&mut c, "known-user", "moments", "i", b"x")
        .await
        .expect("the gateway serves, its key store open");
    // Someone holds the key store's write lock: a new user's key cannot be
    // stored, and the call waits for the store.
    let url = format!("sqlite://{}", gw.data_dir.join("keys.db").display());
    let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let started = Instant::now();
    let s = expect_reason(
        put_item(&mut c, "new-user", "moments", "i", b"x").await,
        Code::DeadlineExceeded,
        "CALL_DEADLINE",
        "a call waiting on a locked key store",
    );
    assert!(
        s.message().contains("limits.unary_timeout_seconds"),
        "{s:?}"
    );
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(9)).contains(&took),
        "ended after {took:?}, not at the key store's own 10 s busy timeout"
    );
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    lock.close().await.unwrap();
    put_item(&mut c, "new-user", "moments", "i", b"x")
        .await
        .expect("served once the store is free");
}
