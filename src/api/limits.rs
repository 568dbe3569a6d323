//! The time limits of calls: a deadline on unary calls
//! (`limits.unary_timeout_seconds`, [`UnaryDeadline`]) and the pace a
//! streamed upload or download must keep (`limits.stream_min_bytes` every
//! `limits.stream_timeout_seconds`, [`StreamPace`]). A call that breaks one
//! ends with DEADLINE_EXCEEDED (`CALL_DEADLINE`, `STREAM_STALLED`), and
//! whatever it held (its key, its buffers, its upload permit) is dropped.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use prost::Message;
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::error::{Error, Reason};

/// The pace a stream must keep: at least `min_bytes` every `window`.
#[derive(Debug, Clone, Copy)]
pub struct StreamPace {
    /// `limits.stream_timeout_seconds`.
    pub window: Duration,
    /// `limits.stream_min_bytes`.
    pub min_bytes: u64,
}

impl StreamPace {
    /// The error of a stream that fell behind this pace; `what` names the
    /// stream ("upload", "download").
    pub fn stalled(&self, what: &str) -> Error {
        Error::DeadlineExceeded {
            reason: Reason::StreamStalled,
            message: format!(
                "the {what} moved fewer than {} bytes in {} s (limits.stream_min_bytes, \
                 limits.stream_timeout_seconds) and was ended",
                self.min_bytes,
                self.window.as_secs()
            ),
        }
    }
}

/// One stream's progress under a [`StreamPace`]: the current window ends
/// at [`Progress::deadline`]; once `min_bytes` have moved in it, the next
/// window starts.
#[derive(Debug)]
pub struct Progress {
    pace: StreamPace,
    deadline: Instant,
    moved: u64,
}

impl Progress {
    /// A stream starting now.
    pub fn new(pace: StreamPace) -> Self {
        Self {
            pace,
            deadline: Instant::now() + pace.window,
            moved: 0,
        }
    }

    /// Records `n` bytes moved.
    pub fn moved(&mut self, n: u64) {
        self.moved += n;
        if self.moved >= self.pace.min_bytes {
            self.moved = 0;
            self.deadline = Instant::now() + self.pace.window;
        }
    }

    /// When the stream has stalled unless more moves before.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The pace kept.
    pub fn pace(&self) -> StreamPace {
        self.pace
    }
}

/// A client stream (an upload's messages) that must keep a
/// [`StreamPace`] from the start of the call: when the window ends with too
/// little received, it yields the `STREAM_STALLED` error and ends. Its
/// errors are the caller's `Error`s: `map_err` classifies the transport's.
pub struct PacedStream<S, T, F> {
    inner: S,
    progress: Progress,
    timer: Pin<Box<Sleep>>,
    size: fn(&T) -> usize,
    map_err: F,
    ended: bool,
}

impl<S, T, F> PacedStream<S, T, F>
where
    S: Stream<Item = Result<T, Status>>,
    F: Fn(&Status) -> Error,
{
    /// Paces `inner`, whose messages each move `size(message)` bytes.
    pub fn new(inner: S, pace: StreamPace, size: fn(&T) -> usize, map_err: F) -> Self {
        let progress = Progress::new(pace);
        Self {
            timer: Box::pin(tokio::time::sleep_until(progress.deadline())),
            inner,
            progress,
            size,
            map_err,
            ended: false,
        }
    }
}

impl<S, T, F> Stream for PacedStream<S, T, F>
where
    S: Stream<Item = Result<T, Status>> + Unpin,
    F: Fn(&Status) -> Error + Unpin,
{
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let me = self.get_mut();
        if me.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut me.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(m))) => {
                let before = me.progress.deadline();
                me.progress.moved((me.size)(&m) as u64);
                if me.progress.deadline() != before {
                    me.timer.as_mut().reset(me.progress.deadline());
                }
                Poll::Ready(Some(Ok(m)))
            }
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err((me.map_err)(&status)))),
            Poll::Ready(None) => {
                me.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => match me.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    me.ended = true;
                    Poll::Ready(Some(Err(me.progress.pace().stalled("upload"))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The unary methods of the gateway's services, as request paths
/// (`/sealgate.v1.ContentService/HeadObject`), read from the services'
/// descriptors so that a new method is covered by its kind.
fn unary_paths() -> HashSet<String> {
    let set = prost_types::FileDescriptorSet::decode(super::pb::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set decodes");
    let mut paths = HashSet::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let name = service.name.unwrap_or_default();
            for method in service.method {
                if !method.client_streaming() && !method.server_streaming() {
                    paths.insert(format!(
                        "/{package}.{name}/{}",
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
    }
    paths
}

/// Ends a unary call of the gateway's services that runs past `timeout`
/// with DEADLINE_EXCEEDED (`CALL_DEADLINE`); the handler is dropped, with
/// whatever it held. Streaming calls are paced instead ([`StreamPace`]);
/// health and reflection are not limited here.
#[derive(Debug, Clone)]
pub struct UnaryDeadline {
    timeout: Duration,
    unary: Arc<HashSet<String>>,
}

impl UnaryDeadline {
    /// A deadline of `timeout` on every unary call.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            unary: Arc::new(unary_paths()),
        }
    }
}

impl<S> tower_layer::Layer<S> for UnaryDeadline {
    type Service = UnaryDeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UnaryDeadlineService {
            inner,
            limit: self.clone(),
        }
    }
}

/// The service of [`UnaryDeadline`].
#[derive(Debug, Clone)]
pub struct UnaryDeadlineService<S> {
    inner: S,
    limit: UnaryDeadline,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for UnaryDeadlineService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        if !self.limit.unary.contains(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let method = req.uri().path().to_string();
        let timeout = self.limit.timeout;
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::warn!(%method, "call ended at limits.unary_timeout_seconds");
                    Ok(Status::from(Error::DeadlineExceeded {
                        reason: Reason::CallDeadline,
                        message: format!(
                            "the call ran longer than {} s (limits.unary_timeout_seconds) and was ended",
                            timeout.as_secs()
                        ),
                    })
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_methods_come_from_the_descriptors() {
        let unary = unary_paths();
        assert!(unary.contains("/sealgate.v1.ContentService/HeadObject"));
        assert!(unary.contains("/sealgate.v1.ErasureService/EraseUser"));
        assert!(!unary.contains("/sealgate.v1.ContentService/PutObject"));
        assert!(!unary.contains("/sealgate.v1.ContentService/GetObject"));
    }

    #[test]
    fn a_window_restarts_once_its_bytes_moved() {
        let pace = StreamPace {
            window: Duration::from_secs(10),
            min_bytes: 100,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _time = rt.enter();
        let mut p = Progress::new(pace);
        let first = p.deadline();
        p.moved(60);
        assert_eq!((p.deadline(), p.moved), (first, 60), "60 of 100 bytes");
        p.moved(40);
        assert_eq!(p.moved, 0, "the next window");
        assert!(p.deadline() >= first);
    }
}
