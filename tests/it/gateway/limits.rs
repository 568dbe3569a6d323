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

use super::{eventually, expect_reason, finish_msg, header_msg, put, TestGateway};

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

async fn open_upload(gw: &TestGateway, id: &str) -> OpenUpload {
    let mut client: ContentServiceClient<Channel> = gw.content().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(header_msg("u", "moments", id)).await.unwrap();
    let done = tokio::spawn(async move {
        client
            .put_object(ReceiverStream::new(rx))
            .await
            .map(tonic::Response::into_inner)
    });
    OpenUpload { tx, done }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_limit_are_refused_until_one_ends() {
    let gw = TestGateway::start_with(|c| {
        c.limits.max_concurrent_uploads = 2;
    })
    .await;
    let first = open_upload(&gw, "one").await;
    let _second = open_upload(&gw, "two").await;
    // The two open uploads hold their permits once the server has their
    // headers; a third upload is refused from then on.
    let refused = std::cell::RefCell::new(None);
    eventually(
        "a third upload is refused",
        Duration::from_secs(10),
        || async {
            let mut c = gw.content().await;
            match put(&mut c, "u", "moments", "three", b"x", 1).await {
                Err(s) if s.code() == Code::ResourceExhausted => {
                    *refused.borrow_mut() = Some(s);
                    true
                }
                Err(s) => panic!("unexpected {s:?}"),
                Ok(_) => false,
            }
        },
    )
    .await;
    let s = expect_reason(
        Err::<(), _>(refused.into_inner().unwrap()),
        Code::ResourceExhausted,
        "TOO_MANY_UPLOADS",
        "third upload",
    );
    assert!(s.message().contains("max_concurrent_uploads"), "{s:?}");
    first.tx.send(finish_msg(Some(b""))).await.unwrap();
    drop(first.tx);
    first
        .done
        .await
        .unwrap()
        .expect("the first upload completes");
    eventually(
        "an upload is accepted once one ended",
        Duration::from_secs(10),
        || async {
            put(&mut gw.content().await, "u", "moments", "four", b"x", 1)
                .await
                .is_ok()
        },
    )
    .await;
}
