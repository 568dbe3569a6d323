//! What the server tells about its calls, and how it ends them.
//!
//! [`CallLayer`], the outermost tower layer: every call is counted in
//! `sealgate_requests_total{method,code}` and timed in
//! `sealgate_request_duration_seconds{method}` from its request to the end
//! of its response body (a stream's last message); a streaming call counts
//! in `sealgate_inflight_streams` meanwhile. At the end of a shutdown's
//! grace period ([`Shutdown::cancel`]) every call still running is ended:
//! its handler is dropped (an upload's writer aborts, nothing partial is
//! stored), a response stream ends with UNAVAILABLE (`SHUTTING_DOWN`).
//!
//! [`serve_metrics`]: the `/metrics` endpoint (HTTP/1.1, hyper), which
//! refreshes the job gauge from the key store on each scrape.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::api::pb;
use crate::error::Error;
use crate::keys::master::checks;
use crate::keys::store::{
    JobState, KeyStore, JOB_KIND_ERASURE_GC, JOB_KIND_ROTATE_KEK, JOB_KIND_ROTATE_MASTER,
};
use crate::metrics::{self, StreamGuard};

/// The method label of a request path the server does not serve.
const OTHER_METHOD: &str = "other";

/// Every method the server serves, by request path
/// (`/sealgate.v1.ContentService/PutObject`): its label
/// (`sealgate.v1.ContentService/PutObject`) and whether it streams. Read
/// from the services' descriptors; a path not in it is counted as
/// [`OTHER_METHOD`], so a caller cannot make new labels.
static METHODS: LazyLock<HashMap<String, (&'static str, bool)>> = LazyLock::new(|| {
    let mut methods = HashMap::new();
    for set in [
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let set =
            prost_types::FileDescriptorSet::decode(set).expect("a compiled-in descriptor set");
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                for method in service.method {
                    let streaming = method.client_streaming() || method.server_streaming();
                    let label = format!("{package}.{name}/{}", method.name.unwrap_or_default());
                    let path = format!("/{label}");
                    // Leaked once per process: a fixed, small set.
                    let label: &'static str = Box::leak(label.into_boxed_str());
                    methods.insert(path, (label, streaming));
                }
            }
        }
    }
    methods
});

/// The gRPC name of a code (`OK`, `NOT_FOUND`, ...).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn code_of(headers: &http::HeaderMap) -> Option<&'static str> {
    headers
        .get("grpc-status")
        .map(|v| code_name(Code::from_bytes(v.as_bytes())))
}

/// The shutdown of the server: `cancel` ends every call still running.
#[derive(Clone, Default)]
pub struct Shutdown {
    cancel: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// Ends every call in progress and every call to come.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    /// The layer that counts calls and ends them at [`Shutdown::cancel`].
    pub fn layer(&self) -> CallLayer {
        CallLayer {
            cancel: self.cancel.subscribe(),
        }
    }
}

/// Completes once `cancel` says so (never if its sender is gone).
async fn cancelled(mut cancel: watch::Receiver<bool>) {
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct CallLayer {
    cancel: watch::Receiver<bool>,
}

impl<S> tower_layer::Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallService {
            inner,
            cancel: self.cancel.clone(),
        }
    }
}

/// The service of [`CallLayer`].
#[derive(Clone)]
pub struct CallService<S> {
    inner: S,
    cancel: watch::Receiver<bool>,
}

/// One call being counted: recorded once, when it ends (a call dropped
/// before its end, by its client going away, is CANCELLED).
struct Call {
    method: &'static str,
    start: Instant,
    code: Option<&'static str>,
    recorded: bool,
    _stream: Option<StreamGuard>,
}

impl Call {
    fn record(&mut self) {
        if !self.recorded {
            self.recorded = true;
            metrics::get().call_ended(
                self.method,
                self.code.unwrap_or("CANCELLED"),
                self.start.elapsed(),
            );
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record();
    }
}

fn shutting_down() -> Status {
    Status::from(Error::ShuttingDown)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for CallService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body + Default + Send + 'static,
{
    type Response = http::Response<CallBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (method, streaming) = METHODS
            .get(req.uri().path())
            .copied()
            .unwrap_or((OTHER_METHOD, false));
        let mut call = Call {
            method,
            start: Instant::now(),
            code: None,
            recorded: false,
            _stream: streaming.then(|| metrics::get().stream_started()),
        };
        let cancel = self.cancel.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = tokio::select! {
                biased;
                response = response => response?,
                () = cancelled(cancel.clone()) => {
                    call.code = Some("UNAVAILABLE");
                    call.record();
                    return Ok(shutting_down().into_http::<ResBody>().map(CallBody::done));
                }
            };
            // A trailers-only response (an error before any message)
            // carries its status in the headers.
            call.code = code_of(response.headers());
            Ok(response.map(|body| CallBody {
                inner: Some(Box::pin(body)),
                call: Some(call),
                cancel: Some(Box::pin(cancelled(cancel))),
            }))
        })
    }
}

/// A response body that records its call when it ends, and ends with
/// UNAVAILABLE (`SHUTTING_DOWN`) at the shutdown's cancellation.
pub struct CallBody<B> {
    inner: Option<Pin<Box<B>>>,
    call: Option<Call>,
    cancel: Option<BoxFuture<()>>,
}

impl<B> CallBody<B> {
    /// A body already recorded.
    fn done(inner: B) -> Self {
        Self {
            inner: Some(Box::pin(inner)),
            call: None,
            cancel: None,
        }
    }
}

impl<B: Default> Default for CallBody<B> {
    fn default() -> Self {
        Self::done(B::default())
    }
}

impl<B> http_body::Body for CallBody<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(cancel) = this.cancel.as_mut() {
            if cancel.as_mut().poll(cx).is_ready() {
                this.cancel = None;
                if let Some(mut call) = this.call.take() {
                    // The rest of the response goes; the stream's end says
                    // why.
                    this.inner = None;
                    call.code = Some("UNAVAILABLE");
                    call.record();
                    let mut trailers = http::HeaderMap::new();
                    if shutting_down().add_header(&mut trailers).is_ok() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = std::task::ready!(inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(trailers), Some(call)) = (f.trailers_ref(), this.call.as_mut()) {
                    if let Some(code) = code_of(trailers) {
                        call.code = Some(code);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut() {
                    call.code = Some("UNKNOWN");
                }
                this.finish();
            }
            None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl<B> CallBody<B> {
    /// The body ended: the call is recorded (OK unless a status said
    /// otherwise) and no cancellation can touch it any more.
    fn finish(&mut self) {
        self.cancel = None;
        if let Some(mut call) = self.call.take() {
            call.code.get_or_insert("OK");
            call.record();
        }
    }
}

/// How long one scrape connection may last.
const SCRAPE_CONNECTION_LIMIT: Duration = Duration::from_secs(30);
/// How long a scrape waits for the key store's job counts.
const JOB_COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `/metrics` on `listener` until `stop` says so.
pub async fn serve_metrics(
    listener: TcpListener,
    store: Arc<dyn KeyStore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                // Out of descriptors: never a busy loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(scrape(&req, &*store).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(SCRAPE_CONNECTION_LIMIT, connection).await;
        });
    }
}

async fn scrape<B>(
    req: &http::Request<B>,
    store: &dyn KeyStore,
) -> http::Response<http_body_util::Full<Bytes>> {
    let respond = |status: http::StatusCode, content_type: &str, body: String| {
        let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        response
    };
    if req.uri().path() != "/metrics" {
        return respond(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".into(),
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return respond(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".into(),
        );
    }
    refresh_jobs(store).await;
    refresh_backup(store).await;
    respond(
        http::StatusCode::OK,
        metrics::CONTENT_TYPE,
        metrics::get().encode(),
    )
}

/// Sets `sealgate_backup_behind_master_keys` from the key store; a key
/// store that does not answer leaves the last value.
async fn refresh_backup(store: &dyn KeyStore) {
    match tokio::time::timeout(JOB_COUNT_TIMEOUT, checks::backup_state(store)).await {
        Ok(Ok(state)) => metrics::get().set_backup_behind(state.behind()),
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: cannot read the backup state"),
        Err(_) => tracing::debug!("metrics: reading the backup state timed out"),
    }
}

/// Sets `sealgate_jobs{kind,state}` from the key store (every known kind in
/// every state, zero included); a key store that does not answer leaves
/// the last values.
async fn refresh_jobs(store: &dyn KeyStore) {
    match tokio::time::timeout(JOB_COUNT_TIMEOUT, store.job_counts()).await {
        Ok(Ok(counts)) => {
            let m = metrics::get();
            for kind in [
                JOB_KIND_ERASURE_GC,
                JOB_KIND_ROTATE_MASTER,
                JOB_KIND_ROTATE_KEK,
            ] {
                for state in JobState::ALL {
                    let n = counts
                        .iter()
                        .find(|(k, s, _)| k == kind && *s == state)
                        .map_or(0, |(_, _, n)| *n);
                    m.set_jobs(kind, state.as_str(), n);
                }
            }
            for (kind, state, n) in &counts {
                m.set_jobs(kind, state.as_str(), *n);
            }
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: cannot count jobs"),
        Err(_) => tracing::debug!("metrics: counting jobs timed out"),
    }
}
