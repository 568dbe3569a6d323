//! PutObject with a declared size: streamed straight to storage (a single
//! streamed PutObject on S3), and refused whole when the stream disagrees.

use sealgate::api::pb;
use tonic::Code;

use super::*;

backend_tests!(
    declared_sizes_round_trip,
    a_stream_longer_than_declared_stores_nothing,
    a_stream_shorter_than_declared_stores_nothing,
    a_declared_size_over_the_limit_is_refused_up_front,
);

/// Uploads `data` in 64 KiB messages under a header declaring `declared`.
async fn put_declared(
    gw: &TestGateway,
    id: &str,
    declared: u64,
    data: &[u8],
) -> Result<pb::ObjectInfo, Status> {
    let mut header = header_msg("sized", "channels", id);
    if let Some(pb::put_object_request::Part::Header(h)) = &mut header.part {
        h.size = Some(declared);
    }
    let mut msgs = vec![header];
    msgs.extend(data.chunks(64 * 1024).map(|c| data_msg(c.to_vec())));
    msgs.push(finish_msg(None));
    let mut client = gw.content().await;
    let r = client.put_object(futures_util::stream::iter(msgs)).await?;
    Ok(r.into_inner().info.expect("info"))
}

async fn declared_sizes_round_trip() {
    let gw = TestGateway::start().await;
    // Below, inside and above the S3 store's streamed-PutObject range.
    for (i, len) in [0usize, 1000, 3 << 20, (8 << 20) + 17]
        .into_iter()
        .enumerate()
    {
        let body = data(len, i as u64);
        let id = format!("sized-{i}");
        let info = put_declared(&gw, &id, len as u64, &body)
            .await
            .expect("put");
        assert_eq!(info.size, len as u64);
        let mut client = gw.content().await;
        let (_, back) = get(&mut client, "sized", "channels", &id, None)
            .await
            .expect("get");
        assert!(back == body, "round trip of {len} bytes");
    }
    assert_eq!(gw.leftovers().await, 0);
}

async fn a_stream_longer_than_declared_stores_nothing() {
    let gw = TestGateway::start().await;
    let body = data(3 << 20, 1);
    let err = put_declared(&gw, "long", (2 << 20) as u64, &body)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("declared size"), "{}", err.message());
    let mut client = gw.content().await;
    let missing = get(&mut client, "sized", "channels", "long", None)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    gw.assert_nothing_stored("after a stream longer than declared")
        .await;
}

async fn a_stream_shorter_than_declared_stores_nothing() {
    let gw = TestGateway::start().await;
    let body = data(2 << 20, 2);
    let err = put_declared(&gw, "short", (3 << 20) as u64, &body)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("declared size"), "{}", err.message());
    let mut client = gw.content().await;
    let missing = get(&mut client, "sized", "channels", "short", None)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    gw.assert_nothing_stored("after a stream shorter than declared")
        .await;
}

async fn a_declared_size_over_the_limit_is_refused_up_front() {
    let gw = TestGateway::start_with(|c| c.limits.max_object_bytes = 100_000).await;
    // Only the header is needed: the refusal comes before any data.
    let err = put_declared(&gw, "huge", 100_001, &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    gw.assert_nothing_stored("after a refused declared size")
        .await;
}
