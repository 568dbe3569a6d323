//! The wire layer under the generated services: prost's codec, except that
//! a request that does not decode is INVALID_ARGUMENT (tonic reports it as
//! INTERNAL), and a response layer that turns tonic's report of a message
//! over the decoding limit (OUT_OF_RANGE) into RESOURCE_EXHAUSTED.
//!
//! Both carry the same details as every other error ([`crate::api::error`]).
//! A request message may be 4 MiB + 1 KiB ([`MAX_MESSAGE_BYTES`]), so that
//! a 4 MiB data piece fits with its envelope.

use std::marker::PhantomData;
use std::task::{Context, Poll};

use futures_util::future::MapOk;
use futures_util::TryFutureExt;
use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstEncoder};

use crate::error::{Error, Reason};

/// Largest PutObject data piece: 4 MiB, as the proto says.
pub const MAX_PIECE_BYTES: usize = 4 << 20;

/// Largest request message the gateway decodes: a data piece of
/// [`MAX_PIECE_BYTES`] and room for the fields around it.
pub const MAX_MESSAGE_BYTES: usize = MAX_PIECE_BYTES + 1024;

/// The codec of every generated service and client (`codec_path` in
/// `build.rs`).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic::codec::Codec::encoder(&mut ProstCodec::<T, U>::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(PhantomData)
    }
}

/// prost decoding; a malformed message (bad wire format, a string that is
/// not UTF-8) is INVALID_ARGUMENT, reason `INVALID_REQUEST`.
#[derive(Debug, Clone)]
pub struct CheckedDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Error::invalid(
                Reason::InvalidRequest,
                "request",
                format!("the message is not a valid protobuf encoding: {e}"),
            )
            .into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// The error for a message past [`MAX_MESSAGE_BYTES`].
pub fn message_too_large() -> Error {
    Error::too_large(
        Reason::MessageTooLarge,
        format!(
            "a request message is larger than {MAX_MESSAGE_BYTES} bytes encoded \
             (4 MiB + 1 KiB): send PutObject data in pieces of at most 4 MiB"
        ),
    )
}

/// The error for a PutObject data piece past [`MAX_PIECE_BYTES`] (which the
/// decoding limit lets through by up to 1 KiB).
pub fn piece_too_large(len: usize) -> Error {
    Error::too_large(
        Reason::MessageTooLarge,
        format!(
            "a PutObject data piece of {len} bytes is over 4 MiB ({MAX_PIECE_BYTES} bytes): \
             send data in pieces of at most 4 MiB"
        ),
    )
}

/// Whether `status` is tonic's report of a message over the decoding limit.
pub fn is_message_too_large(status: &Status) -> bool {
    status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .starts_with("Error, decoded message length too large")
}

/// Rewrites tonic's OUT_OF_RANGE for an oversize request message into
/// RESOURCE_EXHAUSTED (`MESSAGE_TOO_LARGE`). Unary and server-streaming
/// requests are decoded before the handler runs, so their error leaves as a
/// trailers-only response, which is where this looks; a client stream's
/// oversize message reaches the handler, which maps it itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransportErrors;

impl<S> tower_layer::Layer<S> for TransportErrors {
    type Service = TransportErrorsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TransportErrorsService(inner)
    }
}

/// The service of [`TransportErrors`].
#[derive(Debug, Clone)]
pub struct TransportErrorsService<S>(S);

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>>
    for TransportErrorsService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(http::Response<ResBody>) -> http::Response<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        self.0.call(req).map_ok(rewrite::<ResBody>)
    }
}

fn rewrite<B>(mut response: http::Response<B>) -> http::Response<B> {
    // Cheap test first: nearly every response is not OUT_OF_RANGE (11).
    if response
        .headers()
        .get("grpc-status")
        .is_none_or(|v| v.as_bytes() != b"11")
    {
        return response;
    }
    match Status::from_header_map(response.headers()) {
        Some(status) if is_message_too_large(&status) => {
            let headers = response.headers_mut();
            for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                headers.remove(name);
            }
            let ours = Status::from(message_too_large());
            if ours.add_header(headers).is_err() {
                tracing::error!("cannot encode the status of an oversize message");
            }
            response
        }
        _ => response,
    }
}
