//! Which store the gateways of a test use: the backend of each
//! backend-generic test (filesystem, moto, s3s-fs), and PostgreSQL key
//! stores for the `pg` tests.

use std::future::Future;
use std::path::{Path, PathBuf};

use sealgate::config::Config;

use crate::support::s3env;

/// Which blob store the gateways of a test use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `data_dir/objects`.
    Fs,
    /// A fresh bucket on the shared moto server.
    S3,
    /// A bucket on an s3s-fs server of the test's own.
    S3s,
}

tokio::task_local! {
    static BACKEND: BackendKind;
    static PG_KEY_STORE: ();
}

/// Runs `test` so that the gateways it starts on new data directories keep
/// their keys in PostgreSQL (a fresh database each).
pub async fn with_pg_key_store<F: Future>(test: F) -> F::Output {
    PG_KEY_STORE.scope((), test).await
}

/// Whether the running test's gateways keep their keys in PostgreSQL
/// ([`with_pg_key_store`]).
pub fn uses_pg_key_store() -> bool {
    PG_KEY_STORE.try_with(|_| ()).is_ok()
}

/// Records that the gateway of `data_dir` keeps its keys in the PostgreSQL
/// database at `url`.
pub fn register_pg_url(data_dir: &Path, url: String) {
    pg_urls()
        .lock()
        .unwrap()
        .insert(data_dir.to_path_buf(), url);
}

/// The PostgreSQL key store of each data directory that has one.
fn pg_urls() -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, String>> {
    static URLS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, String>>> =
        std::sync::OnceLock::new();
    URLS.get_or_init(Default::default)
}

/// The PostgreSQL key store's URL of `data_dir`, if it has one.
pub fn pg_url(data_dir: &Path) -> Option<String> {
    pg_urls().lock().unwrap().get(data_dir).cloned()
}

/// Runs `test` so that the gateways it starts use `kind`.
pub async fn with_backend<F: Future>(kind: BackendKind, test: F) -> F::Output {
    BACKEND.scope(kind, test).await
}

/// The backend of the running test: the filesystem outside [`with_backend`].
pub fn backend_kind() -> BackendKind {
    BACKEND.try_with(|k| *k).unwrap_or(BackendKind::Fs)
}

/// Where a gateway keeps its objects. Keys (`keys.db`, `keyring`) are always
/// in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Files under `data_dir/objects`.
    Fs,
    /// A bucket behind an S3 endpoint.
    S3 { endpoint: String, bucket: String },
}

impl Backend {
    /// A new store of `kind`: for S3, a fresh bucket on the shared server.
    pub async fn create(kind: BackendKind) -> Self {
        match kind {
            BackendKind::Fs => Self::Fs,
            BackendKind::S3 => {
                let endpoint = s3env::shared().endpoint();
                let bucket = s3env::bucket_name();
                s3env::create_bucket(&endpoint, &bucket, s3env::REGION, false).await;
                Self::S3 { endpoint, bucket }
            }
            BackendKind::S3s => {
                let endpoint = crate::support::s3s_env::start().await;
                let bucket = s3env::bucket_name();
                s3env::create_bucket(&endpoint, &bucket, s3env::REGION, false).await;
                Self::S3 { endpoint, bucket }
            }
        }
    }

    /// The backend a configuration names.
    pub fn of(config: &Config) -> Self {
        match config.blob.backend.as_str() {
            "s3" => Self::S3 {
                endpoint: config.s3.endpoint.clone().expect("s3.endpoint"),
                bucket: config.s3.bucket.clone(),
            },
            _ => Self::Fs,
        }
    }

    /// Points `config` at this store.
    pub fn configure(&self, config: &mut Config) {
        match self {
            Self::Fs => config.blob.backend = sealgate::config::BlobBackend::Fs,
            Self::S3 { endpoint, bucket } => {
                config.blob.backend = sealgate::config::BlobBackend::S3;
                config.s3.bucket = bucket.clone();
                config.s3.endpoint = Some(endpoint.clone());
                config.s3.force_path_style = true;
            }
        }
    }
}
