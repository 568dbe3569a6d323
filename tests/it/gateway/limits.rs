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
async fn connection(gw: &TestGateway, local: &str) -> Result<Channel, tonic::Status> {
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
async fn connections_past_the_total_limit_are_closed() {
    let gw = TestGateway::start_with(|c| {
        c.limits.max_connections = 2;
    })
    .await;
    let _a = connection(&gw, "127.0.0.1").await.expect("first");
    let b = connection(&gw, "127.0.0.2").await.expect("second");
    let refused = connection(&gw, "127.0.0.3").await;
    assert!(refused.is_err(), "a third in total: {refused:?}");
    drop(b);
    eventually(
        "a closed connection frees a slot",
        Duration::from_secs(10),
        || async { connection(&gw, "127.0.0.3").await.is_ok() },
    )
    .await;
}

/// An upload that has sent its header and waits: its sender ends it.
struct OpenUpload {
    tx: mpsc::Sender<pb::PutObjectRequest>,
    done: tokio::task::JoinHandle<Result<pb::PutObjectResponse, tonic::Status>>,
}

/// Starts an upload of `id` that sends its header and waits, and returns
/// once the server holds it: the filesystem store creates an upload's
/// temporary file after its header, and an upload holds its permit from
/// before that until it ends. `uploads` is how many such uploads `gw`
/// holds once this one is held (uploads that only the caller starts).
async fn open_upload(gw: &TestGateway, id: &str, uploads: usize) -> OpenUpload {
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
        c.limits.max_concurrent_uploads = 2;
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
