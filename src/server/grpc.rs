//! Serving: the gRPC services of a [`Gateway`] behind the layers every
//! call passes (counting, message size errors, authorization, the unary
//! deadline), on the accepted connections, until a shutdown signal; then
//! the shutdown's steps (NOT_SERVING, no more accepting, the grace period,
//! the calls still running ended). This file serves what the steps before
//! it built: it must never open a store or build a domain service.
//!
//! Besides the gateway's services: health, reflection (v1 and v1alpha), a
//! tracing span per call named by its method only, and HTTP/2 receive
//! windows larger than the default 64 KiB, so large uploads are not
//! throttled on fast links.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::health_server::{Health as HealthService, HealthServer};
use tonic_reflection::server::{v1, v1alpha};

use super::health::Health;
use super::{incoming, observe, tls, Gateway, ServeError, LOG_TARGET};
use crate::api::admin::KeyAdminApi;
use crate::api::audit::AuditApi;
use crate::api::auth::{AuthorizeLayer, Policy};
use crate::api::codec::{RequestFraming, TransportErrors, MAX_MESSAGE_BYTES};
use crate::api::content::ContentApi;
use crate::api::erasure::ErasureApi;
use crate::api::export::ExportApi;
use crate::api::holds::LegalHoldApi;
use crate::api::limits::{StreamPace, UnaryDeadline};
use crate::api::pb;
use crate::config;
use crate::export::Export;

/// HTTP/2 receive window per stream.
const STREAM_WINDOW: u32 = 2 << 20;
/// HTTP/2 receive window per connection: two streams at full speed. What
/// the windows hold is memory: 16 connections of 256 uploads keep up to
/// 64 MiB here (`sealgate bench --workload put --concurrency 256`).
const CONNECTION_WINDOW: u32 = 4 << 20;

/// After the grace period has ended the calls in flight, how long the
/// transport gets to close their connections before the server stops
/// anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// The reflection services, v1 and v1alpha, over the descriptors of the
/// gateway's services and of health.
pub(super) struct Reflection<V1, V1Alpha> {
    v1: v1::ServerReflectionServer<V1>,
    v1alpha: v1alpha::ServerReflectionServer<V1Alpha>,
}

/// Builds the reflection services.
///
/// # Errors
/// [`ServeError::Reflection`] if the descriptor sets do not build.
pub(super) fn reflection(
) -> Result<Reflection<impl v1::ServerReflection, impl v1alpha::ServerReflection>, ServeError> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // grpcurl before 1.8.8, Python's grpcio-reflection and other tools speak
    // only v1alpha.
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(Reflection { v1, v1alpha })
}

/// How the gateway is served: the parts of the configuration serving
/// reads, and what the steps before made of the rest.
pub(super) struct Serving<'a> {
    /// Connection, stream and call limits (`[limits]`).
    pub limits: &'a config::Limits,
    /// The connection and upload limits in force (set, or derived from
    /// the descriptors).
    pub budget: super::descriptors::Budget,
    /// How long the calls in flight get at shutdown
    /// (`server.shutdown_grace_seconds`).
    pub shutdown_grace: Duration,
    /// The region key administration reports (`blob.region`).
    pub region: &'a str,
    /// Named in the line that says the gateway listens.
    pub data_dir: &'a Path,
    /// Who may call what (`[[principals]]`).
    pub policy: Arc<Policy>,
    /// Whether the connections are TLS (`[tls]`), for the log.
    pub tls: bool,
    /// With an HTTP listener: SignRead serves, its URLs under this
    /// `http.public_url` (may be empty).
    pub public_url: Option<&'a str>,
}

impl Serving<'_> {
    /// Serves `gateway`, health and reflection on the connections
    /// `accepted` (on `local`) until `shutdown` completes, then shuts down
    /// as [`until_shutdown`] says. Returns how the transport ended.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn serve(
        self,
        gateway: &Gateway,
        health: &Health,
        health_service: HealthServer<impl HealthService>,
        reflection: Reflection<impl v1::ServerReflection, impl v1alpha::ServerReflection>,
        (accepted, conns): (Accepted, Arc<incoming::Connections>),
        local: Option<SocketAddr>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let calls = observe::Shutdown::default();
        let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
        tracing::info!(
            target: LOG_TARGET,
            address = ?local,
            tls = self.tls,
            data_dir = %self.data_dir.display(),
            "sealgate listening"
        );
        let limits = self.limits;
        let mut content = ContentApi::new(
            gateway.content.clone(),
            self.budget.uploads,
            StreamPace {
                window: Duration::from_secs(limits.stream_timeout_seconds),
                min_bytes: limits.stream_min_bytes,
            },
        );
        if let Some(public_url) = self.public_url {
            content = content.with_signed_reads(gateway.reads.clone(), public_url);
        }
        let server = tonic::transport::Server::builder()
            // HTTP/2's default 64 KiB windows throttle large uploads on fast
            // links; these bound what one stream or connection may have in
            // flight towards the gateway.
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_concurrent_streams(limits.max_streams_per_connection)
            // One span per call, named by method only: requests carry user ids,
            // which never reach logs.
            .trace_fn(
                |req| tracing::info_span!(target: LOG_TARGET, "grpc", method = %req.uri().path()),
            )
            // Each connection's open calls counted: one with a call open is
            // never closed to make room for another.
            .layer(conns.open_calls())
            // Every call counted, with the status it ends with; ended at the
            // end of a shutdown's grace period.
            .layer(calls.layer())
            // An oversize request message is RESOURCE_EXHAUSTED, as documented.
            .layer(TransportErrors)
            // Every call is authorized here (api::auth), before any service.
            .layer(AuthorizeLayer::new(self.policy, gateway.audit.clone()))
            // A unary call ends at its deadline; streams keep a pace instead.
            .layer(UnaryDeadline::new(Duration::from_secs(
                limits.unary_timeout_seconds,
            )))
            // A request of one message is framed as one: a malformed frame,
            // or a second message, is refused with its reason.
            .layer(RequestFraming::new(&[
                pb::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
            ]))
            .add_service(health_service)
            .add_service(reflection.v1)
            .add_service(reflection.v1alpha)
            .add_service(
                pb::content_service_server::ContentServiceServer::new(content)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                pb::erasure_service_server::ErasureServiceServer::new(ErasureApi::new(
                    gateway.erasure.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                pb::key_admin_service_server::KeyAdminServiceServer::new(KeyAdminApi::new(
                    gateway.admin.clone(),
                    self.region.to_string(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                pb::legal_hold_service_server::LegalHoldServiceServer::new(LegalHoldApi::new(
                    gateway.holds.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                pb::audit_service_server::AuditServiceServer::new(AuditApi::new(
                    gateway.audit.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                pb::export_service_server::ExportServiceServer::new(ExportApi::new(
                    Arc::new(Export::new(
                        gateway.content.clone(),
                        gateway.store.clone(),
                        gateway.store.clone(),
                    )),
                    StreamPace {
                        window: Duration::from_secs(limits.stream_timeout_seconds),
                        min_bytes: limits.stream_min_bytes,
                    },
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(accepted, async {
                let _ = accepting_stopped.await;
            });
        until_shutdown(
            server,
            shutdown,
            health,
            stop_accepting,
            self.shutdown_grace,
            &calls,
        )
        .await
    }
}

/// The connections accepted on a listener (TLS handshakes done), within
/// the connection limits: one accept loop for the whole life of the
/// server, whichever transport serves them.
pub(super) type Accepted = ReceiverStream<std::io::Result<incoming::Conn>>;

/// Starts accepting connections on `listener`: TLS with `tls`, within the
/// connection limits of `limits` and the descriptor budget `budget`.
/// Returns the connections and their register (which closes the
/// longest-idle ones to make room, and counts each one's open calls).
pub(super) fn accept(
    listener: TcpListener,
    tls: Option<Arc<tls::ServerTls>>,
    limits: &config::Limits,
    budget: &super::descriptors::Budget,
) -> (Accepted, Arc<incoming::Connections>) {
    let conns = incoming::Connections::new(incoming::ConnLimits {
        total: budget.connections,
        per_peer: limits.max_connections_per_peer,
        handshake_timeout: Duration::from_secs(limits.handshake_timeout_seconds),
        idle_timeout: Duration::from_secs(limits.idle_connection_timeout_seconds),
    });
    let tls = tls.map(|t| (t, tls::Listener::Grpc));
    (incoming::incoming(listener, tls, conns.clone()), conns)
}

/// What a call other than health's is told while the gateway opens its
/// stores.
const STARTING: &str =
    "the gateway is starting: its key store is not open yet (unreachable?); retry later";

/// Serves health alone (every service NOT_SERVING) on `accepted` while
/// `opening` runs, then stops: the connections are told to go away
/// (clients reconnect, to the full server) and calls still running end.
/// Every other call is answered UNAVAILABLE, retryable. Returns what
/// `opening` returned, or how the transport failed.
pub(super) async fn while_opening<T>(
    accepted: &mut Accepted,
    local: Option<SocketAddr>,
    health_service: HealthServer<impl HealthService>,
    opening: impl Future<Output = T>,
) -> Result<T, tonic::transport::Error> {
    tracing::info!(
        target: LOG_TARGET,
        address = ?local,
        "health answering NOT_SERVING while the stores open"
    );
    let calls = observe::Shutdown::default();
    let (opened, stop) = tokio::sync::watch::channel(false);
    let when_opened = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|opened| *opened).await;
    };
    // Once the stores are open this server takes no more connections (they
    // wait in `accepted` for the next one) and tells its own to go away.
    let connections = futures_util::StreamExt::take_until(accepted, when_opened(stop.clone()));
    let server = tonic::transport::Server::builder()
        .layer(calls.layer())
        .layer(StartingLayer)
        .add_service(health_service)
        .serve_with_incoming_shutdown(connections, when_opened(stop));
    let mut server = std::pin::pin!(server);
    let mut opening = std::pin::pin!(opening);
    let out = tokio::select! {
        served = &mut server => {
            // Ended by itself (the accept loop gone): nothing to serve
            // health on until the stores are open.
            served?;
            return Ok(opening.await);
        }
        out = &mut opening => out,
    };
    opened.send_replace(true);
    calls.cancel();
    // The stores are open: a transport that failed now is the next
    // server's to report.
    if let Ok(Err(e)) = tokio::time::timeout(CANCEL_WAIT, &mut server).await {
        tracing::warn!(target: LOG_TARGET, error = %e, "the health-only server ended with an error");
    }
    Ok(out)
}

/// The layer of [`while_opening`]: a call the health-only server does not
/// serve (UNIMPLEMENTED) is answered UNAVAILABLE, [`STARTING`].
#[derive(Debug, Clone, Copy)]
struct StartingLayer;

impl<S> tower_layer::Layer<S> for StartingLayer {
    type Service = StartingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StartingService(inner)
    }
}

/// The service of [`StartingLayer`].
#[derive(Debug, Clone)]
struct StartingService<S>(S);

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for StartingService<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<
        S::Future,
        fn(http::Response<ResBody>) -> http::Response<ResBody>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        use futures_util::TryFutureExt;
        self.0.call(req).map_ok(starting::<ResBody>)
    }
}

/// UNIMPLEMENTED (12) becomes UNAVAILABLE, [`STARTING`].
fn starting<B>(mut response: http::Response<B>) -> http::Response<B> {
    if response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"12")
    {
        let headers = response.headers_mut();
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            headers.remove(name);
        }
        if tonic::Status::unavailable(STARTING)
            .add_header(headers)
            .is_err()
        {
            tracing::error!(target: LOG_TARGET, "cannot encode the status of a call made while starting");
        }
    }
    response
}

/// Runs `server` until `shutdown` completes; then health turns NOT_SERVING,
/// the listener stops accepting (`stop_accepting`), and the calls in flight
/// get `grace` to finish; any still running then is ended (`calls`), and
/// the transport gets [`CANCEL_WAIT`] to close their connections.
async fn until_shutdown(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    shutdown: impl Future<Output = ()>,
    health: &Health,
    stop_accepting: tokio::sync::oneshot::Sender<()>,
    grace: Duration,
    calls: &observe::Shutdown,
) -> Result<(), tonic::transport::Error> {
    let mut server = std::pin::pin!(server);
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        served = &mut server => served,
        () = &mut shutdown => {
            // Balancers see NOT_SERVING before the listener goes; the probe
            // must not turn it back.
            health.not_serving().await;
            let _ = stop_accepting.send(());
            tracing::info!(target: LOG_TARGET, grace_seconds = grace.as_secs(), "shutting down: waiting for the calls in flight");
            match tokio::time::timeout(grace, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(target: LOG_TARGET, "calls still in flight at the end of server.shutdown_grace_seconds: ending them");
                    calls.cancel();
                    match tokio::time::timeout(CANCEL_WAIT, &mut server).await {
                        Ok(served) => served,
                        Err(_) => {
                            tracing::warn!(target: LOG_TARGET, "connections still open after the calls ended; stopping anyway");
                            Ok(())
                        }
                    }
                }
            }
        }
    }
}
