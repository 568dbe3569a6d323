//! S3 going away mid-run: calls fail UNAVAILABLE, in-flight multipart
//! uploads are aborted (none is left once S3 is back), and the gateway
//! recovers without a restart.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::blob::s3::PART_SIZE;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::support::proxy::FaultProxy;
use crate::support::s3env;

async fn wait_for<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    crate::support::eventually(what, Duration::from_secs(60), cond).await;
}

fn header(id: &str) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: "fault-user".into(),
            space: "channels".into(),
            object_id: id.into(),
            content_type: "video/mp4".into(),
            attributes: Default::default(),
            ..Default::default()
        })),
    }
}

fn data(bytes: Vec<u8>) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(bytes.into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_fails_unavailable_aborts_uploads_and_recovers() {
    let moto = s3env::shared();
    let bucket = s3env::bucket_name();
    s3env::create_bucket(&moto.endpoint(), &bucket, s3env::REGION, false).await;
    let proxy = FaultProxy::start(moto.addr).await;

    // The gateway reaches S3 only through the proxy.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = crate::support::gateway::config(tmp.path());
    crate::support::gateway::Backend::S3 {
        endpoint: proxy.endpoint(),
        bucket: bucket.clone(),
    }
    .configure(&mut config);
    let mut gw = crate::support::gateway::TestGateway::start_config(config).await;
    let mut client = gw.content().await;

    let small = crate::support::gateway::data(50_000, 3);
    crate::support::gateway::put(
        &mut client,
        "fault-user",
        "channels",
        "small",
        &small,
        10_000,
    )
    .await
    .unwrap();

    // A large upload under way: its first part is in S3.
    let (tx, rx) = mpsc::channel(2);
    tx.send(header("big")).await.unwrap();
    let mut upload_client = client.clone();
    let upload =
        tokio::spawn(async move { upload_client.put_object(ReceiverStream::new(rx)).await });
    // Messages of 1 MiB (the gRPC message limit is 4 MiB): one part and a bit.
    for i in 0..(PART_SIZE >> 20) + 1 {
        tx.send(data(crate::support::gateway::data(1 << 20, i as u64)))
            .await
            .unwrap();
    }
    let direct = moto.endpoint();
    // A part on its way means the gateway has CreateMultipartUpload's
    // answer: cutting S3 off any earlier could lose that answer, and then
    // no one knows the upload's id (the bucket's lifecycle rule removes it).
    let before = proxy.upstream_bytes();
    wait_for("the first part to be on its way to S3", || async {
        assert!(!upload.is_finished(), "the upload ended early");
        proxy.upstream_bytes() - before >= PART_SIZE as u64
    })
    .await;
    assert_eq!(s3env::incomplete_uploads(&direct, &bucket).await, 1);

    // S3 goes away. The upload's next part fails; the call fails UNAVAILABLE.
    proxy.set_up(false);
    for i in 0..(PART_SIZE >> 20) {
        if tx
            .send(data(crate::support::gateway::data(1 << 20, 100 + i as u64)))
            .await
            .is_err()
        {
            break; // the call already failed
        }
    }
    // A well-behaved client finishes; the upload still cannot commit.
    let _ = tx.send(crate::support::gateway::finish_msg(None)).await;
    drop(tx);
    let status = upload.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("retry"), "{}", status.message());

    // New calls fail UNAVAILABLE with a retryable message too.
    let get = crate::support::gateway::get(&mut client, "fault-user", "channels", "small", None)
        .await
        .unwrap_err();
    assert_eq!(get.code(), Code::Unavailable, "{get:?}");
    assert!(get.message().contains("retry later"), "{}", get.message());
    let put = crate::support::gateway::put(&mut client, "fault-user", "channels", "other", b"x", 1)
        .await
        .unwrap_err();
    assert_eq!(put.code(), Code::Unavailable, "{put:?}");
    // The incomplete upload is still there: S3 could not be told.
    assert_eq!(s3env::incomplete_uploads(&direct, &bucket).await, 1);

    // S3 returns: the abort goes through, and the same gateway serves again.
    proxy.set_up(true);
    wait_for("the interrupted multipart upload to be aborted", || async {
        s3env::incomplete_uploads(&direct, &bucket).await == 0
    })
    .await;
    let (_, back) =
        crate::support::gateway::get(&mut client, "fault-user", "channels", "small", None)
            .await
            .unwrap();
    assert_eq!(back, small);
    let missing = crate::support::gateway::get(&mut client, "fault-user", "channels", "big", None)
        .await
        .unwrap_err();
    assert_eq!(
        missing.code(),
        Code::NotFound,
        "the interrupted upload left no object"
    );

    gw.stop().await;
}
