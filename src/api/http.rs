//! The HTTP listener's one resource: `GET` and `HEAD /v1/o/{token}`, a
//! signed read ([`crate::signed_read`]), as a CDN pulls it from its origin.
//!
//! What a request gets:
//! - a token that does not open (changed, another deployment's, its key's
//!   master version retired) or is past its expiry: 403;
//! - its owner erased, or restricted (erasure scheduled, or asked for under
//!   a hold): 410 Gone; a response in flight ends (the connection or
//!   HTTP/2 stream is cut before its last byte) as an erased GetObject does;
//! - the object deleted, or replaced or rewrapped since the token was made
//!   (another etag): 404;
//! - else 200 with the plaintext (206 for the token's range or a `Range`
//!   header within it, 416 for a range outside), `ETag`, `Content-Type`
//!   from the object's metadata, `Content-Length`, `Accept-Ranges`,
//!   `Cache-Control` (`http.cache_control`, else `private, max-age` not
//!   beyond the token's expiry), and 304 for a matching `If-None-Match`.
//!
//! The body is the GetObject download ([`super::download`]): decrypted on
//! the fly in bounded memory, at the pace `[limits]` asks of every
//! download, each piece checked against the owner's erasure before it
//! leaves. Error bodies, logs and metrics never hold the token, the object
//! id or anything of the user: a line says the status and the reason code.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};

use super::download::download;
use super::limits::StreamPace;
use crate::content::{ByteRange, Content};
use crate::error::{Error, Reason};
use crate::signed_read::{Opened, Refused, SignedReads, PATH_PREFIX};

/// A response body: the object's plaintext, or a short text.
pub type HttpBody = UnsyncBoxBody<Bytes, Error>;

/// What the listener serves signed reads with.
pub struct HttpReadApi {
    reads: Arc<SignedReads>,
    content: Arc<Content>,
    /// `http.cache_control`; `None`: `private, max-age` to the expiry.
    cache_control: Option<HeaderValue>,
    /// The pace a body must keep (`[limits]`).
    pace: StreamPace,
    /// How long the response's head may take (`limits.unary_timeout_seconds`).
    head_timeout: Duration,
}

/// Settings of [`HttpReadApi`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// `http.cache_control` (empty: the default).
    pub cache_control: String,
    /// The pace a body must keep.
    pub pace: StreamPace,
    /// How long the response's head may take.
    pub head_timeout: Duration,
}

/// A refusal or failure: the status, and the reason code logged.
struct Answer {
    status: StatusCode,
    reason: &'static str,
    /// Extra headers (`Allow`, `Content-Range`).
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Answer {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            headers: Vec::new(),
        }
    }
}

impl From<Error> for Answer {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::UserErased => StatusCode::GONE,
            Error::FailedPrecondition { reason, .. } => match reason {
                Reason::ErasurePending | Reason::UserRestricted | Reason::Decommissioned => {
                    StatusCode::GONE
                }
                Reason::MasterKeyUnusable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::OutOfRange(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::Unavailable(_)
            | Error::ShuttingDown
            | Error::StorageFull(_)
            | Error::StorageLost(_)
            | Error::DeadlineExceeded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.reason().as_str())
    }
}

/// The statuses this resource answers, as metric labels.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        206 => "206",
        304 => "304",
        403 => "403",
        404 => "404",
        405 => "405",
        410 => "410",
        416 => "416",
        500 => "500",
        503 => "503",
        _ => "other",
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// What the object's response is made of once the token opened.
struct Serve {
    opened: crate::content::OpenedObject,
    grant: Opened,
    /// The bytes to send, `start..end`; and whether it is a part (206).
    range: (u64, u64),
    partial: bool,
}

impl HttpReadApi {
    /// Serves `reads` of `content`'s objects.
    ///
    /// # Errors
    /// A message if `settings.cache_control` is not a header value.
    pub fn new(
        reads: Arc<SignedReads>,
        content: Arc<Content>,
        settings: &HttpSettings,
    ) -> Result<Self, String> {
        let cache_control = if settings.cache_control.is_empty() {
            None
        } else {
            Some(
                HeaderValue::from_str(&settings.cache_control)
                    .map_err(|_| "http.cache_control is not a header value".to_string())?,
            )
        };
        Ok(Self {
            reads,
            content,
            cache_control,
            pace: settings.pace,
            head_timeout: settings.head_timeout,
        })
    }

    /// Answers one request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<HttpBody> {
        let started = Instant::now();
        let method = method_label(req.method());
        let response = match tokio::time::timeout(self.head_timeout, self.answer(&req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(answer)) => self.refusal(answer),
            Err(_) => self.refusal(Answer::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::CallDeadline.as_str(),
            )),
        };
        let status = status_label(response.status());
        response.map(|body| {
            Observed {
                inner: body,
                method,
                status,
                started,
                done: false,
            }
            .boxed_unsync()
        })
    }

    fn refusal(&self, answer: Answer) -> Response<HttpBody> {
        if answer.status.is_server_error() {
            tracing::warn!(target: "sealgate::http", status = answer.status.as_u16(), reason = answer.reason, "signed read failed");
        } else {
            tracing::debug!(target: "sealgate::http", status = answer.status.as_u16(), reason = answer.reason, "signed read refused");
        }
        let text = answer
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase();
        let mut response = Response::new(text_body(format!("{text}\n")));
        *response.status_mut() = answer.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // Not for a CDN to keep: the next request may be answered otherwise.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in answer.headers {
            headers.insert(name, value);
        }
        response
    }

    async fn answer<B>(&self, req: &Request<B>) -> Result<Response<HttpBody>, Answer> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut a = Answer::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
                a.headers
                    .push((header::ALLOW, HeaderValue::from_static("GET, HEAD")));
                return Err(a);
            }
        };
        let token = req
            .uri()
            .path()
            .strip_prefix(PATH_PREFIX)
            .filter(|t| !t.is_empty() && !t.contains('/'))
            .ok_or_else(|| Answer::new(StatusCode::NOT_FOUND, "NO_SUCH_PATH"))?;
        let now_s = now_s();
        let grant = match self.reads.open(token, now_s).await? {
            Ok(grant) => grant,
            Err(Refused::Forged) => {
                return Err(Answer::new(StatusCode::FORBIDDEN, "TOKEN_REFUSED"))
            }
            Err(Refused::Expired) => {
                return Err(Answer::new(StatusCode::FORBIDDEN, "TOKEN_EXPIRED"))
            }
        };
        let serve = self.open(req.headers(), grant).await?;
        let etag = HeaderValue::from_str(&format!("\"{}\"", serve.opened.info.etag))
            .map_err(|_| Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"))?;
        let cache_control = self.cache_control.clone().unwrap_or_else(|| {
            let left = serve.grant.grant.expires_at_s.saturating_sub(now_s);
            HeaderValue::from_str(&format!("private, max-age={left}"))
                .unwrap_or(HeaderValue::from_static("no-store"))
        });
        let mut builder = Response::builder()
            .header(header::ETAG, etag.clone())
            .header(header::CACHE_CONTROL, cache_control)
            .header(header::ACCEPT_RANGES, "bytes");
        if if_none_match(req.headers(), &serve.opened.info.etag) {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(empty_body())
                .map_err(|_| Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"));
        }
        let content_type = match serve.opened.info.metadata.content_type.as_str() {
            "" => HeaderValue::from_static("application/octet-stream"),
            t => HeaderValue::from_str(t)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        };
        let (start, end) = serve.range;
        let size = serve.opened.info.size;
        builder = builder
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, end - start)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        if serve.partial {
            builder = builder.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end - 1),
            );
        }
        let body = if head || start == end {
            empty_body()
        } else {
            let range = (start > 0 || end < size).then_some(ByteRange {
                start,
                end: Some(end),
            });
            let pieces =
                download(serve.opened, range, self.pace).map(|piece| piece.map(Frame::data));
            StreamBody::new(pieces).boxed_unsync()
        };
        builder
            .body(body)
            .map_err(|_| Answer::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"))
    }

    /// Opens the object a token names, checks it is the version the token
    /// was made for, and settles the bytes to send.
    async fn open(&self, headers: &HeaderMap, grant: Opened) -> Result<Serve, Answer> {
        // A whole read lets storage send the body with the header.
        let whole = grant.grant.range.is_none() && !headers.contains_key(header::RANGE);
        let opened = self.content.open(&grant.object, whole).await?;
        if !grant.names(&opened.info) {
            return Err(Answer::new(StatusCode::NOT_FOUND, "OBJECT_CHANGED"));
        }
        let size = opened.info.size;
        let unsatisfiable = || {
            let mut a = Answer::new(StatusCode::RANGE_NOT_SATISFIABLE, "INVALID_RANGE");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                a.headers.push((header::CONTENT_RANGE, v));
            }
            a
        };
        let allowed = match grant.grant.range {
            Some((start, end)) => (start, end.min(size)),
            None => (0, size),
        };
        if allowed.0 >= allowed.1 && grant.grant.range.is_some() {
            return Err(unsatisfiable());
        }
        let asked = match headers.get(header::RANGE) {
            Some(value) if if_range_holds(headers, &opened.info.etag) => {
                parse_range(value.as_bytes(), size).map_err(|()| unsatisfiable())?
            }
            _ => None,
        };
        let (range, partial) = match asked {
            None => (allowed, grant.grant.range.is_some()),
            Some((start, end)) => {
                let (start, end) = (start.max(allowed.0), end.min(allowed.1));
                if start >= end {
                    return Err(unsatisfiable());
                }
                ((start, end), true)
            }
        };
        Ok(Serve {
            opened,
            grant,
            range,
            partial,
        })
    }
}

fn now_s() -> u64 {
    u64::try_from(crate::clock::unix_ms()).unwrap_or(0) / 1000
}

fn empty_body() -> HttpBody {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn text_body(text: String) -> HttpBody {
    Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// Whether `If-None-Match` names the object's etag (or `*`): weak
/// comparison, as RFC 9110 asks of it.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"') == etag)
}

/// Whether a `Range` applies: no `If-Range`, or one naming the object's
/// etag (strong comparison). A date in `If-Range` never matches: the
/// object is sent whole.
fn if_range_holds(headers: &HeaderMap, etag: &str) -> bool {
    match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.trim() == format!("\"{etag}\""),
    }
}

/// A `Range` header of one byte range over an object of `size` bytes:
/// `Ok(Some(start..end))`; `Ok(None)` for a form this resource does not
/// serve as a part (several ranges, another unit: the whole is sent, as
/// RFC 9110 allows); `Err` for a range that selects nothing (416).
fn parse_range(value: &[u8], size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Ok(value) = std::str::from_utf8(value) else {
        return Ok(None);
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => Err(()),
            Some(n) if size > 0 => Ok(Some((size.saturating_sub(n), size))),
            Some(_) => Err(()),
            None => Ok(None),
        },
        (first, "") => match number(first) {
            Some(start) if start < size => Ok(Some((start, size))),
            Some(_) => Err(()),
            None => Ok(None),
        },
        (first, last) => match (number(first), number(last)) {
            (Some(start), Some(last)) if start <= last => {
                if start >= size {
                    Err(())
                } else {
                    Ok(Some((start, last.saturating_add(1).min(size))))
                }
            }
            _ => Ok(None),
        },
    }
}

/// A response body counted in the metrics when it ends or is dropped.
struct Observed {
    inner: HttpBody,
    method: &'static str,
    status: &'static str,
    started: Instant,
    done: bool,
}

impl Observed {
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            crate::metrics::get().http_ended(self.method, self.status, self.started.elapsed());
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            me.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range(b"bytes=0-99", 1000), Ok(Some((0, 100))));
        assert_eq!(parse_range(b"bytes=900-", 1000), Ok(Some((900, 1000))));
        assert_eq!(parse_range(b"bytes=-100", 1000), Ok(Some((900, 1000))));
        assert_eq!(parse_range(b"bytes=-5000", 1000), Ok(Some((0, 1000))));
        assert_eq!(parse_range(b"bytes=990-5000", 1000), Ok(Some((990, 1000))));
        assert_eq!(parse_range(b"bytes=1000-", 1000), Err(()));
        assert_eq!(parse_range(b"bytes=1000-1001", 1000), Err(()));
        assert_eq!(parse_range(b"bytes=-0", 1000), Err(()));
        // Not served as a part: the whole object instead.
        assert_eq!(parse_range(b"bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(parse_range(b"items=0-1", 1000), Ok(None));
        assert_eq!(parse_range(b"bytes=5-1", 1000), Ok(None));
        assert_eq!(parse_range(b"bytes=a-b", 1000), Ok(None));
    }
}
