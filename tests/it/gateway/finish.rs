//! Finished uploads: a PutObject stores something only after its finish
//! message, and only if the finish's digest and the declared size match.

use sealgate::api::pb;
use tonic::Code;

use super::*;

backend_tests!(
    uploads_store_nothing_without_a_matching_finish,
    a_matching_finish_stores_the_object,
);

async fn upload(
    c: &mut ContentServiceClient<Channel>,
    msgs: Vec<pb::PutObjectRequest>,
) -> Result<pb::ObjectInfo, Status> {
    c.put_object(futures_util::stream::iter(msgs))
        .await
        .map(|r| r.into_inner().info.expect("info"))
}

fn sized(mut header: pb::PutObjectRequest, size: u64) -> pb::PutObjectRequest {
    if let Some(pb::put_object_request::Part::Header(h)) = &mut header.part {
        h.size = Some(size);
    }
    header
}

async fn uploads_store_nothing_without_a_matching_finish() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let body = data(300_000, 1);
    let other = data(300_000, 2);
    let cases: Vec<(&str, Vec<pb::PutObjectRequest>, &str)> = vec![
        (
            "a stream cut short",
            vec![
                header_msg("u", "moments", "a"),
                data_msg(body[..100_000].to_vec()),
            ],
            "UPLOAD_NOT_FINISHED",
        ),
        (
            "a header that half-closes",
            vec![header_msg("u", "moments", "b")],
            "UPLOAD_NOT_FINISHED",
        ),
        (
            "a declared size cut short",
            vec![
                sized(header_msg("u", "moments", "c"), body.len() as u64),
                data_msg(body[..1000].to_vec()),
            ],
            "UPLOAD_NOT_FINISHED",
        ),
        (
            "a wrong digest",
            vec![
                header_msg("u", "moments", "d"),
                data_msg(body.clone()),
                finish_msg(Some(&other)),
            ],
            "CHECKSUM_MISMATCH",
        ),
        (
            "a wrong digest over a declared size",
            vec![
                sized(header_msg("u", "moments", "e"), body.len() as u64),
                data_msg(body.clone()),
                finish_msg(Some(&other)),
            ],
            "CHECKSUM_MISMATCH",
        ),
        (
            "a wrong declared size",
            vec![
                sized(header_msg("u", "moments", "f"), body.len() as u64 + 1),
                data_msg(body.clone()),
                finish_msg(Some(&body)),
            ],
            "SIZE_MISMATCH",
        ),
        (
            "data after the finish",
            vec![
                header_msg("u", "moments", "g"),
                data_msg(body.clone()),
                finish_msg(None),
                data_msg(b"more".to_vec()),
            ],
            "INVALID_REQUEST",
        ),
    ];
    for (what, msgs, reason) in cases {
        expect_reason(
            upload(&mut c, msgs).await,
            Code::InvalidArgument,
            reason,
            what,
        );
    }
    for id in ["a", "b", "c", "d", "e", "f", "g"] {
        expect_code(
            get(&mut c, "u", "moments", id, None).await,
            Code::NotFound,
            id,
        );
    }
    assert!(list_all(&mut c, "u", "moments").await.unwrap().is_empty());
    gw.assert_nothing_stored("after unfinished or mismatched uploads")
        .await;
}

async fn a_matching_finish_stores_the_object() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let body = data(300_000, 3);
    for (id, header, digest) in [
        (
            "digest",
            header_msg("u", "moments", "digest"),
            Some(&body[..]),
        ),
        ("no-digest", header_msg("u", "moments", "no-digest"), None),
        (
            "sized",
            sized(header_msg("u", "moments", "sized"), body.len() as u64),
            Some(&body[..]),
        ),
    ] {
        let info = upload(
            &mut c,
            vec![header, data_msg(body.clone()), finish_msg(digest)],
        )
        .await
        .expect(id);
        assert_eq!(info.size, body.len() as u64);
        let (_, back) = get(&mut c, "u", "moments", id, None).await.expect(id);
        assert!(back == body, "{id} round trip");
    }
}
