//! Wiring: builds the stores, the key hierarchy and the services from a
//! [`Config`], and serves them on a listener until a shutdown signal.
//!
//! `run` takes its listener and shutdown future, so tests bind port 0 and
//! stop the server cleanly. `incoming` accepts connections (and runs their
//! TLS handshakes), `tls` loads and reloads the certificates.
//!
//! Starting is a sequence of named steps, each in its own file and each
//! given only the parts of the configuration it reads: lock the data
//! directory (`lock`), open the stores (`stores`; a PostgreSQL key store
//! not reachable yet is retried while `grpc` serves health alone), check the deployment and open its master keys (`startup`),
//! build the services (`services`), keep health (`health`) and serve
//! (`grpc`). This file composes them and shuts the gateway down; it must
//! never grow a step of its own.
//!
//! Entry points: [`Gateway::open`] (`open_with` takes a ready KMS client, as
//! tests do), [`run`] (opens the configured object store) and [`serve`]
//! (over an opened one; `serve_with` with a KMS client). The configured
//! object store is wrapped in the metered one. A shutdown goes: health
//! NOT_SERVING, the listener closed, the calls in flight given
//! `server.shutdown_grace_seconds` and then ended, the object store settled
//! (S3: the ended uploads' multipart aborts, 15 s at most), the jobs
//! stopped with their leases handed back, the key store closed.

pub mod descriptors;
mod grpc;
mod health;
mod http;
mod incoming;
mod lock;
mod observe;
mod services;
mod startup;
mod stores;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::auth::Policy;
use crate::audit::AuditTrail;
use crate::blob::metered::MeteredBlobStore;
use crate::blob::BlobStore;
use crate::config::{Config, ConfigError, KeyStoreBackend, MasterProvider};
use crate::content::Content;
use crate::deployment;
use crate::erasure::Erasure;
use crate::holds::LegalHolds;
use crate::jobs::JobRunner;
use crate::keyadmin::KeyAdmin;
use crate::keys::kms::KmsClient;
use crate::keys::store::KeyStore;
use crate::signed_read::SignedReads;

pub use stores::{open_blob, open_for_backup};

/// The target of every log line the wiring writes, whichever of its files
/// writes it: one name for log filters and readers, as when the wiring was
/// one file.
const LOG_TARGET: &str = "sealgate::server";

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The master keyring is unusable.
    #[error(transparent)]
    Keyring(#[from] crate::keys::keyring::MasterKeyError),
    /// The key store, keyring and object store do not belong together, or a
    /// part is missing: one line naming it.
    #[error(transparent)]
    Startup(#[from] crate::deployment::StartupError),
    /// The key store could not be opened.
    #[error("key store: {0}")]
    KeyStore(#[from] crate::keys::store::StoreError),
    /// The blob store could not be opened.
    #[error("blob store: {0}")]
    Blob(#[from] crate::blob::BlobError),
    /// The S3 store refused to start (residency, unreachable bucket).
    #[error(transparent)]
    S3(#[from] crate::blob::s3::S3StartError),
    /// The gRPC transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The data dir belongs to a decommissioned service.
    #[error(
        "the key store at {} was decommissioned (at Unix ms {at_ms}): every key is destroyed and nothing here can be served again",
        path.display()
    )]
    Decommissioned {
        /// The key store.
        path: std::path::PathBuf,
        /// When.
        at_ms: i64,
    },
    /// Another process serves this data directory.
    #[error(
        "refusing to start: data directory {} is in use by {} (lock {}); stop it or use another --data-dir",
        dir.display(),
        lock::holder_text(*pid),
        lock.display()
    )]
    DataDirInUse {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The pid its lock file records, if it could be read.
        pid: Option<u32>,
        /// The lock file.
        lock: std::path::PathBuf,
    },
    /// The data directory's lock file could not be opened or locked.
    #[error("cannot lock the data directory: {}: {source}", lock.display())]
    DataDirLock {
        /// The lock file.
        lock: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP listener could not listen.
    #[error("cannot listen on {address} (http.listen): {source}")]
    Http {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics endpoint could not listen.
    #[error("cannot listen on {address} (metrics.listen): {source}")]
    Metrics {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reflection could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Everything a running gateway holds: the domain services.
pub struct Gateway {
    /// Objects and items.
    pub content: Arc<Content>,
    /// Signed HTTP reads: their tokens made and checked.
    pub reads: Arc<SignedReads>,
    /// Erasure of users.
    pub erasure: Arc<Erasure>,
    /// Key administration.
    pub admin: Arc<KeyAdmin>,
    /// Legal holds.
    pub holds: Arc<LegalHolds>,
    /// The audit trail.
    pub audit: Arc<AuditTrail>,
    /// The key store, closed on shutdown.
    pub store: Arc<dyn KeyStore>,
    /// Durable jobs, stopped on shutdown.
    pub jobs: JobRunner,
    /// The data directory's lock, held as long as the gateway.
    data_dir_lock: Option<lock::DataDirLock>,
}

impl Gateway {
    /// Opens the key stores under `config.data_dir` over `blob` and resumes
    /// unfinished jobs.
    ///
    /// # Errors
    /// [`ServeError`] naming what could not be opened.
    pub async fn open(config: &Config, blob: Arc<dyn BlobStore>) -> Result<Self, ServeError> {
        Self::open_with(config, blob, None).await
    }

    /// As [`Self::open`], with master keys in KMS reached through `kms`
    /// (for `master.provider = "aws-kms"`; `None`: a client with the
    /// standard AWS credential chain).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub async fn open_with(
        config: &Config,
        blob: Arc<dyn BlobStore>,
        kms: Option<KmsClient>,
    ) -> Result<Self, ServeError> {
        config.validate()?;
        // One process per data directory, before anything in it is opened.
        let data_dir_lock = lock::lock_data_dir(&config.data_dir).await?;
        // The startup guards (`deployment`): nothing is created before a
        // missing key store next to a used object store is refused.
        let backup = deployment::Backup {
            database: config.keystore.backend == KeyStoreBackend::Postgres,
            keyring: config.master.provider == MasterProvider::Local,
        };
        let (store, key_store_path) =
            stores::open_key_store(&config.keystore, &config.data_dir, &*blob, backup).await?;
        let (master, naming) = startup::check_deployment(
            &config.master,
            config.kms_region(),
            kms,
            &store,
            deployment::Parts {
                key_store: &*store,
                key_store_path: &key_store_path,
                keyring_path: &config.data_dir.join("keyring"),
                blob: &*blob,
                backup,
                new_key_suite: config.crypto.suite,
            },
        )
        .await?;
        let mut gateway = services::ServiceSettings {
            cache: &config.cache,
            shards: config.keystore.shards,
            keys: &config.keys,
            erasure: &config.erasure,
            jobs: &config.jobs,
            region: &config.blob.region,
            spaces: &config.spaces,
            limits: &config.limits,
            http: &config.http,
            crypto: &config.crypto,
        }
        .build(store, master, naming, blob)
        .await?;
        gateway.data_dir_lock = Some(data_dir_lock);
        Ok(gateway)
    }
}

/// At shutdown, how long the object store gets to finish what it left to
/// the background (S3: the aborts of uploads the shutdown ended).
const SETTLE_WAIT: Duration = Duration::from_secs(15);

/// Serves the gateway on `listener` until `shutdown` completes.
///
/// # Errors
/// [`ServeError`] if a store cannot be opened or the transport fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let blob = open_blob(&config).await?;
    serve(config, blob, listener, shutdown).await
}

/// Serves the gateway over an already opened blob store.
///
/// When `shutdown` completes, health turns NOT_SERVING, the listener stops
/// accepting, and the calls in flight get `server.shutdown_grace_seconds`
/// to finish; any still running then is ended (an upload aborted, nothing
/// partial stored). The jobs hand their leases back, the key store is
/// closed, and this returns.
///
/// # Errors
/// [`ServeError`] if a key store cannot be opened, the metrics address
/// cannot be bound or the transport fails.
pub async fn serve(
    config: Config,
    blob: Arc<dyn BlobStore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(config, blob, None, listener, shutdown).await
}

/// As [`serve`], with master keys in KMS reached through `kms` (see
/// [`Gateway::open_with`]).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with(
    config: Config,
    blob: Arc<dyn BlobStore>,
    kms: Option<KmsClient>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = config.tls.as_ref().map(tls::ServerTls::load).transpose()?;
    let policy = Arc::new(Policy::new(config.principals()));
    // Health probes the store itself; the gateway's operations are counted.
    let probed_blob = blob.clone();
    let blob_settle = blob.clone();
    let blob: Arc<dyn BlobStore> = Arc::new(MeteredBlobStore::new(blob));
    let local = listener.local_addr().ok();
    let budget = descriptors::budget(&config.limits, &config.keystore);
    let (mut accepted, conns) = grpc::accept(listener, tls.clone(), &config.limits, &budget);
    let (health, health_service) = health::start().await;
    let mut shutdown = std::pin::pin!(shutdown);
    let gateway = match Gateway::open_with(&config, blob.clone(), kms.clone()).await {
        Ok(gateway) => gateway,
        // A PostgreSQL key store not reachable yet: waited for, with health
        // answering NOT_SERVING meanwhile (the replica is up, not ready).
        Err(e) if stores::retryable(&config.keystore, &e) => {
            let opening = async {
                tokio::select! {
                    opened = stores::open_retrying(&config.keystore, e, || {
                        Gateway::open_with(&config, blob.clone(), kms.clone())
                    }) => Some(opened),
                    () = &mut shutdown => None,
                }
            };
            let opened =
                grpc::while_opening(&mut accepted, local, health_service.clone(), opening).await?;
            let Some(opened) = opened else {
                tracing::info!(target: LOG_TARGET, "stopped before the key store was reached");
                return Ok(());
            };
            opened?
        }
        Err(e) => return Err(e),
    };
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some(address) = config.metrics.address().map_err(ConfigError::Invalid)? {
        if let Err(e) = start_metrics(address, gateway.store.clone(), metrics_stopped).await {
            gateway.jobs.shutdown().await;
            gateway.store.close().await;
            return Err(e);
        }
    }
    let http = match start_http(&config, &gateway, tls.clone(), conns.clone()).await {
        Ok(http) => http,
        Err(e) => {
            let _ = stop_metrics.send(true);
            gateway.jobs.shutdown().await;
            gateway.store.close().await;
            return Err(e);
        }
    };
    let reload = tls.clone().map(|t| tokio::spawn(t.watch()));
    health
        .follow(
            gateway.store.clone(),
            probed_blob,
            Duration::from_secs(config.server.health_probe_seconds),
        )
        .await;
    let reflection = grpc::reflection()?;
    let served = grpc::Serving {
        limits: &config.limits,
        budget,
        shutdown_grace: Duration::from_secs(config.server.shutdown_grace_seconds),
        region: &config.blob.region,
        data_dir: &config.data_dir,
        policy,
        tls: tls.is_some(),
        public_url: http.is_some().then_some(config.http.public_url.as_str()),
    }
    .serve(
        &gateway,
        &health,
        health_service,
        reflection,
        (accepted, conns),
        local,
        async {
            shutdown.await;
            // The HTTP listener stops with the gRPC one, and gets the same
            // grace period (it runs meanwhile).
            if let Some(http) = &http {
                http.stop();
            }
        },
    )
    .await;
    if let Some(http) = http {
        http.finish(Duration::from_secs(config.server.shutdown_grace_seconds))
            .await;
    }
    health.stop_probing();
    // Uploads ended by the shutdown left their multipart aborts to the
    // background: they are done before the process goes.
    if tokio::time::timeout(SETTLE_WAIT, blob_settle.settle())
        .await
        .is_err()
    {
        tracing::warn!(
            "multipart uploads not aborted yet at shutdown (S3 unreachable?): the bucket's lifecycle rule for incomplete uploads removes them"
        );
    }
    let _ = stop_metrics.send(true);
    if let Some(reload) = reload {
        reload.abort();
    }
    gateway.jobs.shutdown().await;
    gateway.store.close().await;
    served?;
    tracing::info!("sealgate stopped");
    Ok(())
}

/// Starts the HTTP listener of signed reads if `http.listen` is set, on
/// the gRPC listener's connection register `conns`.
///
/// # Errors
/// [`ServeError::Http`] if the address cannot be bound.
async fn start_http(
    config: &Config,
    gateway: &Gateway,
    tls: Option<Arc<tls::ServerTls>>,
    conns: Arc<incoming::Connections>,
) -> Result<Option<http::HttpListener>, ServeError> {
    let Some(address) = config.http.address().map_err(ConfigError::Invalid)? else {
        return Ok(None);
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Http { address, source })?;
    let limits = &config.limits;
    let api = crate::api::http::HttpReadApi::new(
        gateway.reads.clone(),
        gateway.content.clone(),
        &crate::api::http::HttpSettings {
            cache_control: config.http.cache_control.clone(),
            pace: crate::api::limits::StreamPace {
                window: Duration::from_secs(limits.stream_timeout_seconds),
                min_bytes: limits.stream_min_bytes,
            },
            head_timeout: Duration::from_secs(limits.unary_timeout_seconds),
        },
    )
    .map_err(ConfigError::Invalid)?;
    Ok(Some(http::start(
        listener,
        tls,
        conns,
        Arc::new(api),
        limits,
    )))
}

/// Serves `/metrics` on `address` (`metrics.listen`) until `stopped`.
///
/// # Errors
/// [`ServeError::Metrics`] if the address cannot be bound.
async fn start_metrics(
    address: std::net::SocketAddr,
    store: Arc<dyn KeyStore>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let metrics_listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Metrics { address, source })?;
    tracing::info!(
        address = %metrics_listener.local_addr().unwrap_or(address),
        "metrics endpoint listening on /metrics"
    );
    tokio::spawn(observe::serve_metrics(metrics_listener, store, stopped));
    Ok(())
}
