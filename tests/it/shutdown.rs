//! Graceful shutdown of the real binary: on SIGTERM health turns
//! NOT_SERVING, the listener stops accepting, a call in flight finishes
//! within `server.shutdown_grace_seconds` (or is ended at its end, its
//! upload aborted), and the process exits 0.

use std::time::Duration;

use sealgate::api::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::eventually;
use crate::support::gateway::{data_msg, finish_msg, header_msg, tmp_files};
use crate::support::metrics::value;
use crate::support::serve::Served;

const USER: &str = "shutdown-user";

/// Sends `signal` to the server process.
fn signal(server: &Served, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(server.process.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// An upload under way: its header and first piece sent, observed in
/// flight by the server's metrics.
struct Upload {
    tx: mpsc::Sender<pb::PutObjectRequest>,
    call: tokio::task::JoinHandle<Result<tonic::Response<pb::PutObjectResponse>, tonic::Status>>,
}

async fn start_upload(server: &Served, id: &str, first: &[u8]) -> Upload {
    let mut client = server.content().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(header_msg(USER, "moments", id)).await.unwrap();
    tx.send(data_msg(first.to_vec())).await.unwrap();
    let call = tokio::spawn(async move { client.put_object(ReceiverStream::new(rx)).await });
    eventually(
        "the server counts the upload in flight",
        Duration::from_secs(30),
        || async { value(&server.scrape().await, "sealgate_inflight_streams", &[]) == 1.0 },
    )
    .await;
    Upload { tx, call }
}

/// Watches health on a connection of its own; returns the stream after
/// its first answer, SERVING.
/// Asserts that `upload` was ended `UNAVAILABLE` / `SHUTTING_DOWN` and the
/// server then exited 0.
async fn ended_by_shutdown(server: &mut Served, upload: Upload) {
    let ended = upload.call.await.unwrap().unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");
    assert_eq!(
        crate::support::gateway::check_details(&ended, "the ended upload"),
        "SHUTTING_DOWN"
    );
    drop(upload.tx);
    let status = server.exited().await;
    assert_eq!(status.code(), Some(0), "{}", server.process.log());
}

async fn watch_health(server: &Served) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let mut watch = HealthClient::new(server.channel().await)
        .watch(HealthCheckRequest {
            service: "sealgate.v1.ContentService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    watch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_upload_finish_then_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut server = Served::start(
        &data_dir,
        &[("SEALGATE_SERVER_SHUTDOWN_GRACE_SECONDS", "30")],
    )
    .await;
    let body = crate::support::gateway::data(3 << 20, 21);
    let upload = start_upload(&server, "slow", &body[..1 << 20]).await;
    let mut health = watch_health(&server).await;

    signal(&server, libc::SIGTERM);
    // Health says NOT_SERVING to the watcher; the watch then goes, so that
    // only the upload is left in flight.
    let next = health.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(health);
    // The listener is gone: no new connection.
    let addr = server.addr;
    eventually(
        "the listener refuses connections",
        Duration::from_secs(30),
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    assert!(
        server.process.child.try_wait().unwrap().is_none(),
        "exited with an upload in flight"
    );

    // The upload goes on and completes.
    upload
        .tx
        .send(data_msg(body[1 << 20..2 << 20].to_vec()))
        .await
        .unwrap();
    upload
        .tx
        .send(data_msg(body[2 << 20..].to_vec()))
        .await
        .unwrap();
    upload.tx.send(finish_msg(Some(&body))).await.unwrap();
    drop(upload.tx);
    let info = upload.call.await.unwrap().expect("the upload completes");
    assert_eq!(info.into_inner().info.unwrap().size, body.len() as u64);

    let status = server.exited().await;
    assert_eq!(status.code(), Some(0), "{}", server.process.log());
    assert!(
        server.process.log().contains("sealgate stopped"),
        "{}",
        server.process.log()
    );
    drop(server);

    // The object reads back from a new process.
    let server = Served::start(&data_dir, &[]).await;
    let mut client = server.content().await;
    let (_, back) = crate::support::gateway::get(&mut client, USER, "moments", "slow", None)
        .await
        .unwrap();
    assert!(back == body, "the object read back differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_ended_after_the_grace_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut server = Served::start(
        &data_dir,
        &[("SEALGATE_SERVER_SHUTDOWN_GRACE_SECONDS", "1")],
    )
    .await;
    let upload = start_upload(
        &server,
        "stalled",
        &crate::support::gateway::data(1 << 20, 5),
    )
    .await;
    // Its bytes are on disk, in a temporary file.
    eventually(
        "the upload's temporary file exists",
        Duration::from_secs(30),
        || async { !tmp_files(&data_dir).is_empty() },
    )
    .await;

    // SIGINT (Ctrl-C) does what SIGTERM does. The client sends nothing more.
    signal(&server, libc::SIGINT);
    ended_by_shutdown(&mut server, upload).await;
    assert!(
        server.process.log().contains("sealgate stopped"),
        "{}",
        server.process.log()
    );
    drop(server);

    // Nothing partial: no temporary file, no object.
    assert!(
        tmp_files(&data_dir).is_empty(),
        "{:?}",
        tmp_files(&data_dir)
    );
    let server = Served::start(&data_dir, &[]).await;
    let mut client = server.content().await;
    let missing = client
        .head_object(pb::HeadObjectRequest {
            object: Some(crate::support::gateway::obj(USER, "moments", "stalled")),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// On S3, an upload ended by the shutdown has a multipart upload under
/// way: it is aborted before the process exits, so nothing of it is left
/// in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_an_ended_upload_is_aborted_before_the_process_exits() {
    use crate::support::s3env;
    use sealgate::blob::s3::PART_SIZE;

    let moto = s3env::shared();
    let bucket = s3env::bucket_name();
    let endpoint = moto.endpoint();
    s3env::create_bucket(&endpoint, &bucket, s3env::REGION, false).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Served::start(
        &tmp.path().join("data"),
        &[
            ("SEALGATE_SERVER_SHUTDOWN_GRACE_SECONDS", "1"),
            ("SEALGATE_BLOB_BACKEND", "s3"),
            ("SEALGATE_S3_BUCKET", &bucket),
            ("SEALGATE_S3_ENDPOINT", &endpoint),
            ("SEALGATE_S3_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", s3env::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", s3env::SECRET_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    )
    .await;
    let upload = start_upload(&server, "big", &crate::support::gateway::data(1 << 20, 1)).await;
    // Messages of 1 MiB: one part and a bit, so a multipart upload exists.
    for i in 0..PART_SIZE >> 20 {
        upload
            .tx
            .send(data_msg(crate::support::gateway::data(
                1 << 20,
                2 + i as u64,
            )))
            .await
            .unwrap();
    }
    eventually(
        "the upload's first part reaches S3",
        Duration::from_secs(60),
        || async { s3env::incomplete_uploads(&endpoint, &bucket).await == 1 },
    )
    .await;

    signal(&server, libc::SIGTERM);
    ended_by_shutdown(&mut server, upload).await;
    // Already aborted when the process is gone: no waiting here.
    assert_eq!(s3env::incomplete_uploads(&endpoint, &bucket).await, 0);
    let keys = s3env::all_keys(&endpoint, &bucket).await;
    assert!(
        keys.iter().all(|k| !k.contains("big")),
        "the ended upload is stored: {keys:?}"
    );
}
