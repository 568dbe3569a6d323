//! A gateway running in this process: started on a fresh data directory
//! and a fresh store of the test's backend, restarted, stopped, and its
//! clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use sealgate::blob::s3::S3BlobStore;
use sealgate::config::{Config, MasterProvider};
use sealgate::keys::kms::KmsClient;
use sealgate::keys::postgres::{PgSettings, PostgresKeyStore};
use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::store::KeyStore;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::backend::{backend_kind, pg_url, register_pg_url, uses_pg_key_store, Backend};
use crate::support::s3env;

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub backend: Backend,
    /// The KMS client of a gateway with `master.provider = "aws-kms"` (its
    /// request counts).
    pub kms: Option<KmsClient>,
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// A default embedded configuration on `data_dir`.
pub fn config(data_dir: &Path) -> Config {
    let mut c = Config::load(None, Vec::<(String, String)>::new()).expect("default config");
    c.data_dir = data_dir.to_path_buf();
    c.listen = "127.0.0.1:0".parse().unwrap();
    // In-process gateways share the process's metrics; the metrics tests
    // scrape the real binary.
    c.metrics.listen = String::new();
    // A PostgreSQL key store's calls may wait 10 s for a connection on
    // this loaded machine, as they could before the 2 s default;
    // pg_outage tests the default on a silent database.
    c.keystore.acquire_timeout_ms = 10_000;
    if let Some(url) = pg_url(data_dir) {
        c.keystore.backend = sealgate::config::KeyStoreBackend::Postgres;
        c.keystore.url = Some(url);
        c.keystore.max_connections = 4;
    }
    c
}

/// A new handle on the key store of the gateway on `data_dir` (SQLite's
/// `keys.db`, or its PostgreSQL database).
pub async fn open_key_store(data_dir: &Path) -> Arc<dyn KeyStore> {
    match pg_url(data_dir) {
        Some(url) => Arc::new(
            PostgresKeyStore::open(&PgSettings {
                url,
                max_connections: 2,
                acquire_timeout: std::time::Duration::from_secs(10),
            })
            .await
            .expect("open the PostgreSQL key store"),
        ),
        None => Arc::new(
            SqliteKeyStore::open(&data_dir.join(sealgate::keys::sqlite::FILE_NAME))
                .await
                .expect("open keys.db"),
        ),
    }
}

impl TestGateway {
    /// Starts a gateway on a new temporary data directory and a new store
    /// of the test's backend.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`Self::start`], after `tweak`ing the configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        if uses_pg_key_store() {
            let url = crate::support::pgenv::fresh_database().await;
            register_pg_url(tmp.path(), url);
        }
        let mut c = config(tmp.path());
        Backend::create(backend_kind()).await.configure(&mut c);
        tweak(&mut c);
        let mut gw = Self::start_config(c).await;
        gw._tmp = Some(tmp);
        gw
    }

    /// Starts a gateway with exactly this configuration. The filesystem
    /// store is opened as `sealgate serve` opens it; an S3 store and a KMS
    /// client with the test credentials (the server would use the AWS
    /// provider chain).
    pub async fn start_config(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let data_dir = config.data_dir.clone();
        let backend = Backend::of(&config);
        let shutdown = async {
            let _ = rx.await;
        };
        let kms = match config.master.provider {
            MasterProvider::AwsKms => Some(crate::support::kms_env::client_for(&config).await),
            MasterProvider::Local => None,
        };
        let server_kms = kms.clone();
        let handle = match &backend {
            Backend::Fs => tokio::spawn(async move {
                let blob = sealgate::server::open_blob(&config)
                    .await
                    .expect("open the object store");
                sealgate::server::serve_with(config, blob, server_kms, listener, shutdown)
                    .await
                    .expect("server run");
            }),
            Backend::S3 { endpoint, bucket } => {
                let store = S3BlobStore::connect(&s3env::settings(endpoint, bucket))
                    .await
                    .expect("connect to S3");
                tokio::spawn(async move {
                    sealgate::server::serve_with(
                        config,
                        Arc::new(store),
                        server_kms,
                        listener,
                        shutdown,
                    )
                    .await
                    .expect("server run");
                })
            }
        };
        Self {
            addr,
            data_dir,
            backend,
            kms,
            _tmp: None,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Another replica of this gateway's deployment, as a scaled-out
    /// deployment runs them: a data directory of its own (one process per
    /// data directory) holding a copy of the keyring, the same PostgreSQL
    /// key store and the same object store (which must be S3: the
    /// filesystem store lives in the data directory), after `tweak`ing the
    /// configuration.
    pub async fn start_replica(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let url = pg_url(&self.data_dir).expect("replicas share a PostgreSQL key store");
        assert!(
            matches!(self.backend, Backend::S3 { .. }),
            "replicas share an S3 object store"
        );
        // Once this one answers, its stores are open and its keyring (with
        // local master keys) made.
        super::admin::health(self).await;
        let tmp = tempfile::tempdir().expect("tempdir");
        let keyring = self.data_dir.join("keyring");
        if keyring.exists() {
            std::fs::copy(&keyring, tmp.path().join("keyring")).expect("copy the keyring");
        }
        register_pg_url(tmp.path(), url);
        let mut c = config(tmp.path());
        self.backend.configure(&mut c);
        tweak(&mut c);
        let mut replica = Self::start_config(c).await;
        replica._tmp = Some(tmp);
        replica
    }

    /// Stops the server gracefully and starts a new one on the same data
    /// directory and store (a restart).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Like [`Self::restart`], after `tweak`ing the configuration.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> Self {
        self.stop().await;
        let mut c = config(&self.data_dir);
        self.backend.configure(&mut c);
        tweak(&mut c);
        let mut next = Self::start_config(c).await;
        next._tmp = self._tmp.take();
        next
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("server task");
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        // The listener is bound before the server task starts, so connecting
        // succeeds as soon as the server accepts.
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .expect("connect")
    }

    pub async fn content(&self) -> ContentServiceClient<Channel> {
        ContentServiceClient::new(self.channel().await)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub async fn erasure(&self) -> ErasureServiceClient<Channel> {
        ErasureServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> KeyAdminServiceClient<Channel> {
        KeyAdminServiceClient::new(self.channel().await)
    }

    pub async fn holds(
        &self,
    ) -> sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient<Channel> {
        sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient::new(
            self.channel().await,
        )
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
