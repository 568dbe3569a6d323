//! Wiring: builds the stores, the key hierarchy and the services from a
//! [`Config`], and serves them on a listener until a shutdown signal.
//!
//! `run` takes its listener and shutdown future, so tests bind port 0 and
//! stop the server cleanly. `incoming` accepts connections (and runs their
//! TLS handshakes), `tls` loads and reloads the certificates.

mod incoming;
mod observe;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::admin::KeyAdminApi;
use crate::api::audit::AuditApi;
use crate::api::auth::{AuthorizeLayer, Policy};
use crate::api::codec::{TransportErrors, MAX_MESSAGE_BYTES};
use crate::api::content::ContentApi;
use crate::api::erasure::ErasureApi;
use crate::api::holds::LegalHoldApi;
use crate::api::limits::{StreamPace, UnaryDeadline};
use crate::api::pb;
use crate::audit::AuditTrail;
use crate::blob::fs::FsBlobStore;
use crate::blob::metered::MeteredBlobStore;
use crate::blob::s3::{S3BlobStore, S3Settings};
use crate::blob::BlobStore;
use crate::config::{BlobBackend, Config, ConfigError, KeyStoreBackend, MasterProvider};
use crate::content::{Content, Limits, RewrapUser};
use crate::deployment;
use crate::erasure::Erasure;
use crate::holds::LegalHolds;
use crate::jobs::gc::ErasureGc;
use crate::jobs::rotation::{RotateKek, RotateMaster};
use crate::jobs::{JobRunner, JobSettings};
use crate::keyadmin::KeyAdmin;
use crate::keys::keyring::MasterKeyProvider;
use crate::keys::kms::{KmsClient, KmsSettings};
use crate::keys::postgres::{redact_url, PgSettings, PostgresKeyStore};
use crate::keys::sqlite::SqliteKeyStore;
use crate::keys::store::{
    KeyStore, DECOMMISSIONED_META, JOB_KIND_ERASURE_GC, JOB_KIND_REWRAP_USER, JOB_KIND_ROTATE_KEK,
    JOB_KIND_ROTATE_MASTER,
};
use crate::keys::{CachePolicy, KeyHierarchy};

/// HTTP/2 receive window per stream.
const STREAM_WINDOW: u32 = 2 << 20;
/// HTTP/2 receive window per connection: two streams at full speed. What
/// the windows hold is memory: 16 connections of 256 uploads keep up to
/// 64 MiB here (`sealgate bench --workload put --concurrency 256`).
const CONNECTION_WINDOW: u32 = 4 << 20;

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
        // The startup guards (`deployment`): nothing is created before a
        // missing key store next to a used object store is refused.
        let backup = deployment::Backup {
            database: config.keystore.backend == KeyStoreBackend::Postgres,
            keyring: config.master.provider == MasterProvider::Local,
        };
        let (store, key_store_path): (Arc<dyn KeyStore>, PathBuf) = match config.keystore.backend {
            KeyStoreBackend::Sqlite => {
                let path = config.data_dir.join("keys.db");
                deployment::check_key_store_present(&path, &*blob, backup).await?;
                std::fs::create_dir_all(&config.data_dir).map_err(crate::blob::BlobError::Io)?;
                (Arc::new(SqliteKeyStore::open(&path).await?), path)
            }
            KeyStoreBackend::Postgres => {
                // validate() made sure there is a URL. The keyring is still
                // a file of the data directory.
                let url = config.keystore.url.clone().unwrap_or_default();
                std::fs::create_dir_all(&config.data_dir).map_err(crate::blob::BlobError::Io)?;
                let settings = PgSettings {
                    max_connections: config.keystore.max_connections,
                    url,
                };
                let store = PostgresKeyStore::open(&settings).await?;
                // Named in messages: the URL without its password.
                (Arc::new(store), PathBuf::from(redact_url(&settings.url)))
            }
        };
        // Before anything else reads the keyring (a decommissioned data dir
        // has none, and one must never be made there).
        if let Some(at) = store.meta_value(DECOMMISSIONED_META).await? {
            // A decommission that died between the key store and the KMS
            // version records: finish it (no KMS call).
            if config.master.provider == MasterProvider::AwsKms {
                match crate::keys::kms::delete_records(&*store).await {
                    Ok(left) if !left.is_empty() => tracing::warn!(
                        master_versions = ?left,
                        "decommissioned key store still held KMS master version records: deleted"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "cannot delete the KMS master version records left in a decommissioned key store")
                    }
                }
            }
            store.close().await;
            return Err(ServeError::Decommissioned {
                path: key_store_path,
                at_ms: at.parse().unwrap_or(0),
            });
        }
        let (master, naming): (Arc<dyn MasterKeyProvider>, _) = match config.master.provider {
            MasterProvider::Local => {
                let opened = deployment::open_local(deployment::Parts {
                    key_store: &*store,
                    key_store_path: &key_store_path,
                    keyring_path: &config.data_dir.join("keyring"),
                    blob: &*blob,
                    backup,
                })
                .await;
                let (keyring, naming, _id) = match opened {
                    Ok(opened) => opened,
                    Err(e) => {
                        store.close().await;
                        return Err(e.into());
                    }
                };
                (Arc::new(keyring), naming)
            }
            MasterProvider::AwsKms => {
                let arn = config.master.kms_key_arn.clone().unwrap_or_default();
                let kms = match kms {
                    Some(kms) => kms,
                    None => {
                        KmsClient::connect(&KmsSettings {
                            region: config.kms_region().unwrap_or_default(),
                            endpoint: config.master.kms_endpoint.clone(),
                            credentials: None,
                        })
                        .await
                    }
                };
                let opened = deployment::open_kms(
                    deployment::Parts {
                        key_store: &*store,
                        key_store_path: &key_store_path,
                        keyring_path: &config.data_dir.join("keyring"),
                        blob: &*blob,
                        backup,
                    },
                    store.clone(),
                    kms,
                    &arn,
                )
                .await;
                let (master, naming, _id) = match opened {
                    Ok(opened) => opened,
                    Err(e) => {
                        store.close().await;
                        return Err(e.into());
                    }
                };
                (Arc::new(master), naming)
            }
        };
        let policy = CachePolicy {
            user_ttl: Duration::from_secs(config.cache.ttl_seconds),
            kek_ttl: Duration::from_secs(config.cache.kek_ttl_seconds),
            max_users: config.cache.max_entries,
        };
        let keys = Arc::new(
            KeyHierarchy::new(
                store.clone(),
                master,
                naming,
                config.keystore.shards,
                &policy,
            )
            .with_kek_max_age(config.keys.kek_max_age()),
        );
        // Replicas sharing the key store tell each other which cached keys
        // to drop; without a feed (SQLite) the cache lifetimes bound it.
        match store.invalidations().await {
            Ok(Some(feed)) => {
                keys.follow(feed);
            }
            Ok(None) => {}
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        }
        let content = Arc::new(Content::new(
            keys.clone(),
            blob.clone(),
            config.blob.region.clone(),
            config.spaces.clone(),
            Limits {
                max_object_bytes: config.limits.max_object_bytes,
                max_item_bytes: config.limits.max_item_bytes,
                max_response_bytes: config.limits.max_response_bytes,
            },
        ));
        let jobs = JobRunner::builder(
            store.clone(),
            JobSettings {
                lease: Duration::from_secs(config.jobs.lease_seconds),
                poll: Duration::from_secs(config.jobs.poll_seconds),
            },
        )
        .handler(
            JOB_KIND_ERASURE_GC,
            Arc::new(ErasureGc::new(blob.clone(), config.spaces.clone())),
        )
        .handler(
            JOB_KIND_ROTATE_MASTER,
            Arc::new(RotateMaster::new(keys.clone())),
        )
        .handler(JOB_KIND_ROTATE_KEK, Arc::new(RotateKek::new(keys.clone())))
        .handler(
            JOB_KIND_REWRAP_USER,
            Arc::new(RewrapUser::new(content.clone())),
        )
        .start();
        let admin = Arc::new(KeyAdmin::new(keys.clone(), store.clone(), jobs.clone()));
        if keys.kek_max_age().is_some() {
            tokio::spawn(run_key_schedule(
                admin.clone(),
                jobs.stop_signal(),
                Duration::from_secs(config.keys.schedule_check_seconds),
            ));
        }
        Ok(Self {
            content,
            erasure: Arc::new(Erasure::new(keys.clone(), store.clone(), jobs.clone())),
            admin,
            holds: Arc::new(LegalHolds::new(keys.clone(), store.clone())),
            audit: Arc::new(AuditTrail::new(keys, store.clone())),
            store,
            jobs,
        })
    }
}

/// Runs the key schedule ([`KeyAdmin::schedule_pass`]) every `every`
/// until the jobs stop.
async fn run_key_schedule(
    admin: Arc<KeyAdmin>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                if let Err(e) = admin.schedule_pass().await {
                    tracing::warn!(error = %e, "key schedule pass failed; trying again at the next");
                }
            }
        }
    }
}

/// Opens the configured blob store; for S3 this checks the bucket's region
/// (residency) and uses the standard AWS credential provider chain.
///
/// # Errors
/// [`ServeError`] if the store cannot be opened or fails a residency check.
pub async fn open_blob(config: &Config) -> Result<Arc<dyn BlobStore>, ServeError> {
    config.validate()?;
    Ok(match config.blob.backend {
        BlobBackend::S3 => Arc::new(
            S3BlobStore::connect(&S3Settings {
                bucket: config.s3.bucket.clone(),
                region: config.blob.region.clone(),
                endpoint: config.s3.endpoint.clone(),
                force_path_style: config.s3.force_path_style,
                credentials: None,
            })
            .await?,
        ),
        BlobBackend::Fs => Arc::new(FsBlobStore::open(config.data_dir.join("objects")).await?),
    })
}

/// The longest one probe of a store may take before health counts it as
/// unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What health probes: the key store (can it take writes) and the object
/// store (a read of its store id: a file read, or one S3 GET), which must
/// still hold the store id it had (an emptied or replaced data directory
/// or bucket is not the store this gateway's keys belong to).
struct Probes {
    store: Arc<dyn KeyStore>,
    blob: Arc<dyn BlobStore>,
    /// The object store's id, as first read.
    blob_id: std::sync::Mutex<Option<String>>,
}

impl Probes {
    /// Why the gateway cannot serve, if it cannot.
    async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, self.store.check_health()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("key store: {e}")),
            Err(_) => return Err(format!("key store: no answer in {PROBE_TIMEOUT:?}")),
        }
        let id = match tokio::time::timeout(PROBE_TIMEOUT, self.blob.store_id()).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => return Err(format!("object store: {e}")),
            Err(_) => return Err(format!("object store: no answer in {PROBE_TIMEOUT:?}")),
        };
        let mut known = self.blob_id.lock().unwrap_or_else(|p| p.into_inner());
        match (&*known, id) {
            (None, id) => {
                *known = id;
                Ok(())
            }
            (Some(k), Some(id)) if *k == id => Ok(()),
            (Some(k), Some(id)) => Err(format!(
                "object store: its store id is now {id}, not {k}: another store is mounted"
            )),
            (Some(_), None) => Err(format!(
                "object store: its store id is gone from {}",
                self.blob.location()
            )),
        }
    }
}

/// Sets health (the whole server and each service) to `status`.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    use tonic::server::NamedService;
    for service in [
        "",
        pb::content_service_server::ContentServiceServer::<ContentApi>::NAME,
        pb::erasure_service_server::ErasureServiceServer::<ErasureApi>::NAME,
        pb::key_admin_service_server::KeyAdminServiceServer::<KeyAdminApi>::NAME,
        pb::legal_hold_service_server::LegalHoldServiceServer::<LegalHoldApi>::NAME,
        pb::audit_service_server::AuditServiceServer::<AuditApi>::NAME,
    ] {
        reporter.set_service_status(service, status).await;
    }
}

/// Sets health SERVING while the key store can take writes and the object
/// store answers, NOT_SERVING while either cannot (a key store file
/// deleted or replaced, its disk unreachable; S3 down). Returns the status
/// set.
async fn report_health(
    reporter: &tonic_health::server::HealthReporter,
    probes: &Probes,
    last: Option<tonic_health::ServingStatus>,
) -> tonic_health::ServingStatus {
    use tonic_health::ServingStatus;
    let status = match probes.check().await {
        Ok(()) => ServingStatus::Serving,
        Err(e) => {
            if last != Some(ServingStatus::NotServing) {
                tracing::error!(error = %e, "store unhealthy: NOT_SERVING");
            }
            ServingStatus::NotServing
        }
    };
    if last != Some(status) {
        if last.is_some() && status == ServingStatus::Serving {
            tracing::info!("stores healthy again: SERVING");
        }
        set_health(reporter, status).await;
    }
    status
}

/// Probes the stores every `every` and keeps health in step.
async fn watch_health(
    reporter: tonic_health::server::HealthReporter,
    probes: Probes,
    mut last: tonic_health::ServingStatus,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        last = report_health(&reporter, &probes, Some(last)).await;
    }
}

/// After the grace period has ended the calls in flight, how long the
/// transport gets to close their connections before the server stops
/// anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

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
    let gateway = Gateway::open_with(&config, blob, kms).await?;
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some(address) = config.metrics.address().map_err(ConfigError::Invalid)? {
        let metrics_listener = match TcpListener::bind(address).await {
            Ok(l) => l,
            Err(source) => {
                gateway.jobs.shutdown().await;
                gateway.store.close().await;
                return Err(ServeError::Metrics { address, source });
            }
        };
        tracing::info!(
            address = %metrics_listener.local_addr().unwrap_or(address),
            "metrics endpoint listening on /metrics"
        );
        tokio::spawn(observe::serve_metrics(
            metrics_listener,
            gateway.store.clone(),
            metrics_stopped,
        ));
    }
    let reload = tls.clone().map(|t| tokio::spawn(t.watch()));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let probes = Probes {
        store: gateway.store.clone(),
        blob: probed_blob,
        blob_id: std::sync::Mutex::new(None),
    };
    let status = report_health(&health_reporter, &probes, None).await;
    let probe = tokio::spawn(watch_health(
        health_reporter.clone(),
        probes,
        status,
        Duration::from_secs(config.server.health_probe_seconds),
    ));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // grpcurl before 1.8.8, Python's grpcio-reflection and other tools speak
    // only v1alpha.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let local = listener.local_addr().ok();
    let calls = observe::Shutdown::default();
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    tracing::info!(
        address = ?local,
        tls = tls.is_some(),
        data_dir = %config.data_dir.display(),
        "sealgate listening"
    );
    let server = tonic::transport::Server::builder()
        // HTTP/2's default 64 KiB windows throttle large uploads on fast
        // links; these bound what one stream or connection may have in
        // flight towards the gateway.
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(config.limits.max_streams_per_connection)
        // One span per call, named by method only: requests carry user ids,
        // which never reach logs.
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        // Every call counted, with the status it ends with; ended at the
        // end of a shutdown's grace period.
        .layer(calls.layer())
        // An oversize request message is RESOURCE_EXHAUSTED, as documented.
        .layer(TransportErrors)
        // Every call is authorized here (api::auth), before any service.
        .layer(AuthorizeLayer::new(policy, gateway.audit.clone()))
        // A unary call ends at its deadline; streams keep a pace instead.
        .layer(UnaryDeadline::new(Duration::from_secs(
            config.limits.unary_timeout_seconds,
        )))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::content_service_server::ContentServiceServer::new(ContentApi::new(
                gateway.content.clone(),
                config.limits.max_concurrent_uploads,
                StreamPace {
                    window: Duration::from_secs(config.limits.stream_timeout_seconds),
                    min_bytes: config.limits.stream_min_bytes,
                },
            ))
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
                config.blob.region.clone(),
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
            pb::audit_service_server::AuditServiceServer::new(AuditApi::new(gateway.audit.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            incoming::incoming(
                listener,
                tls,
                incoming::ConnLimits {
                    total: config.limits.max_connections,
                    per_peer: config.limits.max_connections_per_peer,
                    handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_seconds),
                    idle_timeout: Duration::from_secs(
                        config.limits.idle_connection_timeout_seconds,
                    ),
                },
            ),
            async {
                let _ = accepting_stopped.await;
            },
        );
    let mut server = std::pin::pin!(server);
    let mut shutdown = std::pin::pin!(shutdown);
    let served = tokio::select! {
        served = &mut server => served,
        () = &mut shutdown => {
            // Balancers see NOT_SERVING before the listener goes; the probe
            // must not turn it back.
            probe.abort();
            set_health(&health_reporter, tonic_health::ServingStatus::NotServing).await;
            let _ = stop_accepting.send(());
            let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down: waiting for the calls in flight");
            match tokio::time::timeout(grace, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!("calls still in flight at the end of server.shutdown_grace_seconds: ending them");
                    calls.cancel();
                    match tokio::time::timeout(CANCEL_WAIT, &mut server).await {
                        Ok(served) => served,
                        Err(_) => {
                            tracing::warn!("connections still open after the calls ended; stopping anyway");
                            Ok(())
                        }
                    }
                }
            }
        }
    };
    probe.abort();
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
