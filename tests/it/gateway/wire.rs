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

/// One gRPC length-prefixed frame: the compressed flag, the length the
/// prefix announces (which may differ from what follows), the bytes.
fn grpc_frame(flag: u8, announced: u32, bytes: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.extend_from_slice(bytes);
    frame
}

/// The frame of `message`, as a client sends it.
fn message_frame(message: &impl prost::Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    grpc_frame(0, u32::try_from(bytes.len()).unwrap(), &bytes)
}

/// A call to `method` over a real HTTP/2 connection whose request body is
/// `chunks` exactly as given (each one HTTP/2 DATA frame, the last with
/// END_STREAM), with `headers` besides the gRPC ones: the gRPC framing is
/// the test's, not a client library's. Returns the call's status (from the
/// response headers of a trailers-only answer, else from its trailers).
async fn raw_frames(
    gw: &TestGateway,
    method: &str,
    headers: &[(&str, &str)],
    chunks: Vec<Vec<u8>>,
) -> Result<(), Status> {
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(http_body::Frame::data(bytes::Bytes::from(c)))),
    ));
    let mut request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri(format!("{}{method}", gw.endpoint()))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(tonic::body::Body::new(body)).unwrap();
    let mut channel = gw.channel().await;
    let response = channel
        .ready()
        .await
        .expect("ready")
        .call(request)
        .await
        .expect("an HTTP/2 response");
    assert_eq!(response.status(), 200, "{response:?}");
    let (parts, body) = response.into_parts();
    let status = match Status::from_header_map(&parts.headers) {
        Some(status) => status,
        None => {
            let collected = body.collect().await.expect("the response body");
            let trailers = collected.trailers().cloned().unwrap_or_default();
            Status::from_header_map(&trailers).expect("a grpc-status in the trailers")
        }
    };
    match status.code() {
        Code::Ok => Ok(()),
        _ => Err(status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_refused_with_a_reason() {
    let gw = TestGateway::start().await;
    let head = message_frame(&pb::HeadObjectRequest {
        object: Some(obj("u", SPACE, "x")),
    });
    let get = message_frame(&pb::GetObjectRequest {
        object: Some(obj("u", SPACE, "x")),
        ..Default::default()
    });
    const HEAD: &str = "/sealgate.v1.ContentService/HeadObject";
    const GET: &str = "/sealgate.v1.ContentService/GetObject";
    let mut over = head.clone();
    over[1..5].copy_from_slice(&u32::try_from(head.len() + 10).unwrap().to_be_bytes());
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        (
            HEAD,
            vec![over.clone()],
            "a length prefix larger than the data that follows",
        ),
        (
            GET,
            vec![get[..get.len() - 2].to_vec()],
            "GetObject: a message cut two bytes short",
        ),
        (HEAD, vec![head[..3].to_vec()], "a cut length prefix"),
        (
            HEAD,
            vec![grpc_frame(0, 100, b"abc")],
            "a prefix of 100 bytes before 3",
        ),
        (
            HEAD,
            vec![grpc_frame(1, 0, b"")],
            "the compressed flag without grpc-encoding",
        ),
        (
            GET,
            vec![grpc_frame(1, 2, b"\x0a\x00")],
            "GetObject: the compressed flag without grpc-encoding",
        ),
        (HEAD, vec![grpc_frame(2, 0, b"")], "compressed flag 2"),
        (HEAD, vec![], "no message at all"),
    ];
    for (method, chunks, what) in cases {
        let s = expect_reason(
            raw_frames(&gw, method, &[], chunks).await,
            Code::InvalidArgument,
            "INVALID_REQUEST",
            what,
        );
        assert!(s.message().contains("framing"), "{what}: {s:?}");
    }
    // A prefix announcing a message past the limit is refused from the
    // prefix alone, before the message is buffered.
    for method in [HEAD, GET] {
        expect_reason(
            raw_frames(
                &gw,
                method,
                &[],
                vec![grpc_frame(
                    0,
                    u32::try_from(MAX_MESSAGE_BYTES + 1).unwrap(),
                    &[0; 16],
                )],
            )
            .await,
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            &format!("{method}: a length prefix past the message limit"),
        );
    }
    // The same well-formed frames are answered as the method answers
    // them: the checks refuse what is malformed, not what is unusual.
    expect_reason(
        raw_frames(&gw, HEAD, &[], vec![head[..3].to_vec(), head[3..].to_vec()]).await,
        Code::NotFound,
        "OBJECT_NOT_FOUND",
        "one message split across DATA frames",
    );
    expect_reason(
        raw_frames(
            &gw,
            HEAD,
            &[("grpc-encoding", "identity")],
            vec![head.clone()],
        )
        .await,
        Code::NotFound,
        "OBJECT_NOT_FOUND",
        "grpc-encoding identity",
    );
    gw.assert_nothing_stored("after malformed frames").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_with_two_messages_is_refused() {
    let gw = TestGateway::start().await;
    let item = |id: &str| {
        message_frame(&pb::PutItemRequest {
            user_id: "u".into(),
            space: SPACE.into(),
            item_id: id.into(),
            content: bytes::Bytes::from_static(b"item"),
            ..Default::default()
        })
    };
    const PUT_ITEM: &str = "/sealgate.v1.ContentService/PutItem";
    // Two whole messages in one DATA frame, and in two.
    let both = [item("one"), item("two")].concat();
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![both], "two PutItem messages in one DATA frame"),
        (
            vec![item("one"), item("two")],
            "two PutItem messages in two DATA frames",
        ),
        (
            vec![item("one"), vec![0]],
            "a PutItem message and one byte more",
        ),
    ];
    for (chunks, what) in cases {
        let s = expect_reason(
            raw_frames(&gw, PUT_ITEM, &[], chunks).await,
            Code::InvalidArgument,
            "INVALID_REQUEST",
            what,
        );
        assert!(s.message().contains("more than one"), "{what}: {s:?}");
    }
    // Nothing was stored: the handler never ran.
    gw.assert_nothing_stored("after unary calls with two messages")
        .await;
    // Server streaming takes one request message too.
    let get = message_frame(&pb::GetObjectRequest {
        object: Some(obj("u", SPACE, "one")),
        ..Default::default()
    });
    expect_reason(
        raw_frames(
            &gw,
            "/sealgate.v1.ContentService/GetObject",
            &[],
            vec![get.clone(), get],
        )
        .await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "two GetObject request messages",
    );
    // One message, framed by hand, is served.
    raw_frames(&gw, PUT_ITEM, &[], vec![item("one")])
        .await
        .expect("one PutItem message");
    let listed = list_all(&mut gw.content().await, "u", SPACE)
        .await
        .expect("list");
    assert_eq!(listed, [("one".to_string(), 4)]);
}
