//! What reaches the gateway below the generated clients: messages that do
//! not decode, and messages at and past the size limit. Each gets the
//! documented status and reason, never INTERNAL or OUT_OF_RANGE.

use bytes::{Buf, BufMut};
use sealgate::api::codec::MAX_MESSAGE_BYTES;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Status};

use super::*;

const SPACE: &str = "moments";

/// A codec that sends and receives raw message bytes.
#[derive(Debug, Clone, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

async fn raw_unary(gw: &TestGateway, method: &'static str, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(gw.channel().await);
    grpc.ready().await.expect("ready");
    grpc.unary(Request::new(body), PathAndQuery::from_static(method), Raw)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_invalid_argument() {
    let gw = TestGateway::start().await;
    // A truncated varint, then a string field (user_id) that is not UTF-8.
    let cases: [(&'static str, Vec<u8>, &str); 4] = [
        (
            "/sealgate.v1.ContentService/PutItem",
            vec![0xff, 0xff, 0xff],
            "garbage PutItem",
        ),
        (
            "/sealgate.v1.ContentService/PutItem",
            vec![0x0a, 0x02, 0xff, 0xfe],
            "PutItem with a non-UTF-8 user id",
        ),
        (
            "/sealgate.v1.ContentService/HeadObject",
            vec![0x0a, 0x05, 0x0a],
            "HeadObject with a truncated ObjectRef",
        ),
        (
            "/sealgate.v1.ErasureService/EraseUser",
            vec![0x0a, 0x01, 0xc3],
            "EraseUser with a cut UTF-8 sequence",
        ),
    ];
    for (method, body, what) in cases {
        let s = expect_reason(
            raw_unary(&gw, method, body).await,
            Code::InvalidArgument,
            "INVALID_REQUEST",
            what,
        );
        assert!(s.message().contains("protobuf"), "{what}: {s:?}");
    }
    // Server streaming: the request is decoded before the stream starts.
    let mut grpc = tonic::client::Grpc::new(gw.channel().await);
    grpc.ready().await.expect("ready");
    let got = grpc
        .server_streaming(
            Request::new(vec![0x0a, 0x02, 0xff, 0xfe]),
            PathAndQuery::from_static("/sealgate.v1.ContentService/GetObject"),
            Raw,
        )
        .await
        .map(drop);
    expect_reason(
        got,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "GetObject with garbage",
    );
    // A client stream: a header that does not decode.
    let mut grpc = tonic::client::Grpc::new(gw.channel().await);
    grpc.ready().await.expect("ready");
    let got = grpc
        .client_streaming(
            Request::new(futures_util::stream::iter([vec![0x0a, 0xff]])),
            PathAndQuery::from_static("/sealgate.v1.ContentService/PutObject"),
            Raw,
        )
        .await
        .map(drop);
    expect_reason(
        got,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "PutObject with a garbage header",
    );
    gw.assert_nothing_stored("after malformed messages").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limit_is_resource_exhausted() {
    let gw = TestGateway::start_with(|c| c.limits.max_item_bytes = 8 << 20).await;
    let mut c = gw.content().await;
    // A PutItem whose encoded message is past the limit: tonic refuses it
    // before the handler, and the gateway says RESOURCE_EXHAUSTED.
    let s = expect_reason(
        put_item(&mut c, "u", SPACE, "big", &data(MAX_MESSAGE_BYTES, 1)).await,
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        "PutItem message past the limit",
    );
    assert!(s.message().contains("4 MiB"), "{s:?}");
    // A unary call that is not PutItem: the same.
    let mut admin = gw.admin().await.max_encoding_message_size(64 << 20);
    expect_reason(
        admin
            .key_status(pb::KeyStatusRequest {
                user_id: "u".repeat(MAX_MESSAGE_BYTES),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        "KeyStatus message past the limit",
    );
    // An item of exactly 4 MiB fits in one message.
    let four = data(4 << 20, 2);
    put_item(&mut c, "u", SPACE, "four", &four)
        .await
        .expect("a 4 MiB item in one message");
    let listed = list_all(&mut c, "u", SPACE).await.expect("list");
    assert_eq!(listed, [("four".to_string(), 4 << 20)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_pieces_of_exactly_4_mib_fit() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let body = data((4 << 20) * 2 + 7, 3);
    let msgs = vec![
        header_msg("u", SPACE, "pieces"),
        data_msg(body[..4 << 20].to_vec()),
        data_msg(body[4 << 20..8 << 20].to_vec()),
        data_msg(body[8 << 20..].to_vec()),
        finish_msg(Some(&body)),
    ];
    c.put_object(futures_util::stream::iter(msgs))
        .await
        .expect("pieces of exactly 4 MiB");
    let (_, got) = get(&mut c, "u", SPACE, "pieces", None).await.expect("get");
    assert!(got == body);
    // One byte past what a message may carry is refused, nothing stored.
    let msgs = vec![
        header_msg("u", SPACE, "over"),
        data_msg(data(MAX_MESSAGE_BYTES, 4)),
        finish_msg(None),
    ];
    expect_reason(
        c.put_object(futures_util::stream::iter(msgs)).await,
        Code::ResourceExhausted,
        "MESSAGE_TOO_LARGE",
        "a piece past the message limit",
    );
    let listed = list_all(&mut c, "u", SPACE).await.expect("list");
    assert_eq!(listed, [("pieces".to_string(), body.len() as u64)]);
    assert_eq!(gw.leftovers().await, 0);
}
