//! The wire layer under the generated services: prost's codec, except that
//! a request that does not decode is INVALID_ARGUMENT (tonic reports it as
//! INTERNAL); a request layer ([`RequestFraming`]) that checks the gRPC
//! framing of one-message requests (a malformed frame or a second message
//! is INVALID_ARGUMENT, tonic says INTERNAL or nothing); and a response
//! layer that turns tonic's report of a message over the decoding limit
//! (OUT_OF_RANGE) into RESOURCE_EXHAUSTED.
//!
//! Both carry the same details as every other error ([`crate::api::error`]).
//! A request message may be 4 MiB + 1 KiB ([`MAX_MESSAGE_BYTES`]), so that
//! a 4 MiB data piece fits with its envelope.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;

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

/// The gRPC framing of requests that carry exactly one message (unary and
/// server-streaming methods), checked as the body arrives, before tonic's
/// decoder sees it: one place that answers a malformed frame with the
/// documented status instead of tonic's INTERNAL (or its silence: tonic
/// decodes the first message of a unary call and drops the rest).
///
/// - a compressed flag without a `grpc-encoding`, or a flag other than 0
///   and 1: INVALID_ARGUMENT, `INVALID_REQUEST`;
/// - a length prefix past [`MAX_MESSAGE_BYTES`]: RESOURCE_EXHAUSTED,
///   `MESSAGE_TOO_LARGE`, before the message is buffered;
/// - a body that ends inside a frame (a length prefix larger than the data
///   that follows), that carries no message, or bytes after its one
///   message (a second message): INVALID_ARGUMENT, `INVALID_REQUEST`.
///
/// The error is the body's error; tonic's decoder passes a `Status` found
/// in it through unchanged, so the handler never runs. Client-streaming
/// methods (PutObject) are not checked here: their stream's errors reach
/// the handler, which classifies them (`content::stream_error`).
#[derive(Debug, Clone)]
pub struct RequestFraming {
    /// The paths (`/package.Service/Method`) whose request is one message.
    single: Arc<HashSet<String>>,
}

impl RequestFraming {
    /// Checks the methods of `descriptor_sets` (encoded
    /// `FileDescriptorSet`s) whose request is not a stream.
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        let mut single = HashSet::new();
        for set in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                tracing::error!(
                    "a descriptor set does not decode: its methods' framing is not checked"
                );
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        if !method.client_streaming() {
                            single.insert(format!(
                                "/{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
        }
        Self {
            single: Arc::new(single),
        }
    }
}

impl<S> tower_layer::Layer<S> for RequestFraming {
    type Service = RequestFramingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestFramingService {
            inner,
            single: self.single.clone(),
        }
    }
}

/// The service of [`RequestFraming`].
#[derive(Debug, Clone)]
pub struct RequestFramingService<S> {
    inner: S,
    single: Arc<HashSet<String>>,
}

impl<S, B> tower_service::Service<http::Request<B>> for RequestFramingService<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !self.single.contains(req.uri().path()) {
            return self.inner.call(req.map(tonic::body::Body::new));
        }
        // Identity is no compression; any other encoding tonic accepts or
        // refuses itself (UNIMPLEMENTED).
        let compressed = req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes() != b"identity");
        self.inner.call(req.map(|body| {
            tonic::body::Body::new(OneMessage {
                inner: tonic::body::Body::new(body),
                frames: Frames::new(compressed),
                done: false,
            })
        }))
    }
}

/// Where a request body is in its gRPC framing.
#[derive(Debug)]
struct Frames {
    /// Whether the request named a compression (`grpc-encoding`).
    compressed: bool,
    /// The length-prefix bytes of the frame being read (flag, then length).
    header: [u8; 5],
    /// How many of them have arrived.
    header_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    /// Messages started.
    messages: usize,
}

impl Frames {
    fn new(compressed: bool) -> Self {
        Self {
            compressed,
            header: [0; 5],
            header_len: 0,
            remaining: 0,
            messages: 0,
        }
    }

    /// Follows the framing through `data`.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), Error> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            if self.messages == 1 && self.header_len == 0 {
                return Err(framing_error(
                    "more than one request message in a call that takes one",
                ));
            }
            let n = (self.header.len() - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len < self.header.len() {
                continue;
            }
            match self.header[0] {
                0 => {}
                1 if self.compressed => {}
                1 => {
                    return Err(framing_error(
                        "a message with the compressed flag set, but the call named no \
                         compression (grpc-encoding)",
                    ))
                }
                f => {
                    return Err(framing_error(format!(
                        "a message with compressed flag {f} (valid flags are 0 and 1)"
                    )))
                }
            }
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            if len > MAX_MESSAGE_BYTES {
                return Err(message_too_large());
            }
            self.messages += 1;
            self.header_len = 0;
            self.remaining = len;
        }
        Ok(())
    }

    /// The body ended: the framing must be complete, with one message.
    fn end(&self) -> Result<(), Error> {
        if self.header_len > 0 || self.remaining > 0 {
            Err(framing_error(format!(
                "the request ended inside a message frame ({} bytes short of what its \
                 length prefix announced)",
                if self.remaining > 0 {
                    self.remaining
                } else {
                    self.header.len() - self.header_len
                }
            )))
        } else if self.messages == 0 {
            Err(framing_error("the request carried no message"))
        } else {
            Ok(())
        }
    }
}

/// A malformed gRPC framing of a request.
fn framing_error(message: impl std::fmt::Display) -> Error {
    Error::invalid(
        Reason::InvalidRequest,
        "request",
        format!("malformed gRPC framing: {message}"),
    )
}

/// A request body checked by [`Frames`]: its first framing error ends it.
struct OneMessage {
    inner: tonic::body::Body,
    frames: Frames,
    done: bool,
}

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let me = self.get_mut();
        if me.done {
            return Poll::Ready(None);
        }
        let checked = match ready!(Pin::new(&mut me.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.data_ref() {
                Some(data) => me.frames.feed(data),
                // Trailers: nothing follows them.
                None => me.frames.end(),
            }
            .map(|()| Some(Ok(frame))),
            Some(Err(e)) => Ok(Some(Err(e))),
            None => me.frames.end().map(|()| None),
        };
        match checked {
            Ok(None) => {
                me.done = true;
                Poll::Ready(None)
            }
            Ok(Some(frame)) => Poll::Ready(Some(frame)),
            Err(e) => {
                me.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    /// Never ended before its end is checked (an empty body is an error).
    fn is_end_stream(&self) -> bool {
        self.done
    }
}
