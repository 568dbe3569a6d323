//! The HTTP listener of signed reads (`[http] listen`).
//!
//! Connections are accepted as the gRPC listener's are, into the same
//! register (`limits.max_connections` in total and per peer, the handshake
//! and idle timeouts, the longest-idle closed to make room); TLS comes from
//! `[tls]` without a client certificate (a token is a read's authority),
//! offering HTTP/2 and HTTP/1.1. hyper serves each connection, HTTP/1.1 or
//! HTTP/2 (by ALPN, or by prior knowledge on plaintext), with at most
//! `limits.max_streams_per_connection` streams and request heads read
//! within `limits.handshake_timeout_seconds`; every request goes to
//! [`HttpReadApi`], counted as an open call of its connection. A span per
//! request (debug level) names its method only (the path holds a token).
//!
//! At shutdown it stops accepting, tells each connection to close once its
//! responses are done, and ends what is left at the end of the grace
//! period. This file serves what the steps before it built.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::server::Connected;
use tower_layer::Layer;

use super::incoming::{self, Conn, Connections};
use super::tls::{Listener, ServerTls};
use super::LOG_TARGET;
use crate::api::auth::Peer;
use crate::api::http::{HttpBody, HttpReadApi};
use crate::config;

/// A running HTTP listener.
pub(super) struct HttpListener {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts serving `api` on `listener`, TLS with `tls`, its connections
/// counted in `conns`.
pub(super) fn start(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    conns: Arc<Connections>,
    api: Arc<HttpReadApi>,
    limits: &config::Limits,
) -> HttpListener {
    tracing::info!(
        target: LOG_TARGET,
        address = ?listener.local_addr().ok(),
        tls = tls.is_some(),
        "signed HTTP reads listening"
    );
    let accepted = incoming::incoming(listener, tls.map(|t| (t, Listener::Http)), conns.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.handshake_timeout_seconds))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(accept(accepted, conns, api, builder, stopped));
    HttpListener { stop, task }
}

impl HttpListener {
    /// Stops accepting and asks every connection to close once its
    /// responses are done.
    pub(super) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits up to `grace` for the connections to close, then ends them.
    pub(super) async fn finish(mut self, grace: Duration) {
        self.stop();
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            tracing::warn!(target: LOG_TARGET, "HTTP responses still in flight at the end of server.shutdown_grace_seconds: ending them");
            self.task.abort();
        }
    }
}

async fn accept(
    mut accepted: impl futures_util::Stream<Item = std::io::Result<Conn>> + Unpin,
    conns: Arc<Connections>,
    api: Arc<HttpReadApi>,
    builder: auto::Builder<TokioExecutor>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut served = JoinSet::new();
    let for_connections = stopped.clone();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            conn = accepted.next() => match conn {
                Some(Ok(conn)) => {
                    served.spawn(serve(conn, conns.clone(), api.clone(), builder.clone(), for_connections.clone()));
                }
                Some(Err(e)) => tracing::debug!(target: LOG_TARGET, error = %e, "HTTP accept failed"),
                None => break,
            },
            Some(_) = served.join_next(), if !served.is_empty() => {}
        }
    }
    // No more connections; the open ones close after their responses
    // (dropping this task, at the end of the grace period, ends them).
    drop(accepted);
    while served.join_next().await.is_some() {}
}

async fn serve(
    conn: Conn,
    conns: Arc<Connections>,
    api: Arc<HttpReadApi>,
    builder: auto::Builder<TokioExecutor>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let peer = conn.connect_info();
    let service = TowerToHyperService::new(WithPeer {
        inner: conns.open_calls().layer(Handler { api }),
        peer,
    });
    let connection = builder.serve_connection(TokioIo::new(conn), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(target: LOG_TARGET, error = %e, "HTTP connection ended");
            }
            return;
        }
        _ = stopped.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Puts the connection's [`Peer`] in each request, for the open-call count.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: Peer,
}

impl<S> tower_service::Service<http::Request<Incoming>> for WithPeer<S>
where
    S: tower_service::Service<http::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer.clone());
        self.inner.call(req)
    }
}

/// Hands each request to [`HttpReadApi`].
#[derive(Clone)]
struct Handler {
    api: Arc<HttpReadApi>,
}

impl tower_service::Service<http::Request<Incoming>> for Handler {
    type Response = http::Response<HttpBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        use tracing::Instrument;
        let api = self.api.clone();
        // At debug level: an enabled span costs a request a few
        // allocations and the formatting of its fields.
        let span = tracing::debug_span!(target: LOG_TARGET, "http", method = %req.method());
        Box::pin(async move { Ok(api.handle(req).await) }.instrument(span))
    }
}
