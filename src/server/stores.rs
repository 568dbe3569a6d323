//! Opening the stores: the object store `[blob]` (and `[s3]`) names, and
//! the key store `[keystore]` names, the latter only after the startup
//! guard that refuses a missing key store next to a used object store.
//! This file opens and nothing more: it must never create keys, nor
//! decide whether the stores belong together (`crate::deployment` does, in
//! the next step). A backup ([`open_for_backup`]) opens the key store and
//! the keyring as they are, creating nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::ServeError;
use crate::blob::fs::FsBlobStore;
use crate::blob::s3::{S3BlobStore, S3Settings};
use crate::blob::BlobStore;
use crate::config::{self, BlobBackend, Config, KeyStoreBackend, KeyStoreConfig, MasterProvider};
use crate::deployment;
use crate::keys::keyring::{LocalKeyring, MasterKeyError};
use crate::keys::postgres::{redact_url, PgSettings, PostgresKeyStore};
use crate::keys::sqlite::SqliteKeyStore;
use crate::keys::store::KeyStore;

/// Opens the configured blob store; for S3 this checks the bucket's region
/// (residency) and uses the standard AWS credential provider chain.
///
/// # Errors
/// [`ServeError`] if the store cannot be opened or fails a residency check.
pub async fn open_blob(config: &Config) -> Result<Arc<dyn BlobStore>, ServeError> {
    config.validate()?;
    open_blob_store(&config.blob, &config.s3, &config.data_dir).await
}

/// The object store of `blob.backend`: the bucket of `[s3]`, or files
/// under `data_dir/objects`.
async fn open_blob_store(
    blob: &config::Blob,
    s3: &config::S3,
    data_dir: &Path,
) -> Result<Arc<dyn BlobStore>, ServeError> {
    Ok(match blob.backend {
        BlobBackend::S3 => Arc::new(
            S3BlobStore::connect(&S3Settings {
                bucket: s3.bucket.clone(),
                region: blob.region.clone(),
                endpoint: s3.endpoint.clone(),
                force_path_style: s3.force_path_style,
                credentials: None,
            })
            .await?,
        ),
        BlobBackend::Fs => Arc::new(FsBlobStore::open(data_dir.join("objects")).await?),
    })
}

/// Opens the key store of `[keystore]` (SQLite under `data_dir`, or
/// PostgreSQL) and returns it with the path or URL that names it in
/// messages (a URL without its password). The data directory is created
/// here: the keyring is one of its files whatever the key store.
///
/// # Errors
/// [`ServeError::Startup`] if an SQLite key store is missing next to an
/// object store in use; [`ServeError::KeyStore`] or [`ServeError::Blob`]
/// if the store or the directory cannot be opened.
pub(super) async fn open_key_store(
    keystore: &KeyStoreConfig,
    data_dir: &Path,
    blob: &dyn BlobStore,
    backup: deployment::Backup,
) -> Result<(Arc<dyn KeyStore>, PathBuf), ServeError> {
    let opened: (Arc<dyn KeyStore>, PathBuf) = match keystore.backend {
        KeyStoreBackend::Sqlite => {
            let path = data_dir.join(crate::keys::sqlite::FILE_NAME);
            deployment::check_key_store_present(&path, blob, backup).await?;
            std::fs::create_dir_all(data_dir).map_err(crate::blob::BlobError::Io)?;
            (Arc::new(SqliteKeyStore::open(&path).await?), path)
        }
        KeyStoreBackend::Postgres => {
            // validate() made sure there is a URL. The keyring is still
            // a file of the data directory.
            let url = keystore.url.clone().unwrap_or_default();
            std::fs::create_dir_all(data_dir).map_err(crate::blob::BlobError::Io)?;
            let settings = PgSettings {
                max_connections: keystore.max_connections,
                acquire_timeout: Duration::from_millis(keystore.acquire_timeout_ms),
                url,
            };
            let store = PostgresKeyStore::open(&settings).await?;
            // Named in messages: the URL without its password.
            (Arc::new(store), PathBuf::from(redact_url(&settings.url)))
        }
    };
    Ok(opened)
}

/// Opens, for `sealgate backup`, the key store and the keyring of the
/// deployment `config` names, as they are (nothing is created): the key
/// store, whether it is SQLite, and the local keyring when the master keys
/// are in one.
///
/// # Errors
/// [`ServeError::Startup`] if there is no key store (or keyring) to back
/// up; [`ServeError::KeyStore`] or [`ServeError::Keyring`] if one cannot be
/// opened.
pub async fn open_for_backup(
    config: &Config,
) -> Result<(Arc<dyn KeyStore>, bool, Option<LocalKeyring>), ServeError> {
    config.validate()?;
    let missing = |what: &str, path: &Path| {
        ServeError::Startup(deployment::StartupError::Refused(format!(
            "no {what} at {} to back up: give the data directory of the deployment \
             (--data-dir or data_dir)",
            path.display()
        )))
    };
    let (store, sqlite): (Arc<dyn KeyStore>, bool) = match config.keystore.backend {
        KeyStoreBackend::Sqlite => {
            let path = config.data_dir.join(crate::keys::sqlite::FILE_NAME);
            if !path.exists() {
                return Err(missing("key store", &path));
            }
            (Arc::new(SqliteKeyStore::open(&path).await?), true)
        }
        KeyStoreBackend::Postgres => {
            let settings = PgSettings {
                max_connections: 2,
                acquire_timeout: Duration::from_millis(config.keystore.acquire_timeout_ms),
                url: config.keystore.url.clone().unwrap_or_default(),
            };
            (Arc::new(PostgresKeyStore::open(&settings).await?), false)
        }
    };
    let keyring = match config.master.provider {
        MasterProvider::Local => {
            let path = config.data_dir.join("keyring");
            match LocalKeyring::load(&path) {
                Ok((keyring, _naming)) => Some(keyring),
                Err(MasterKeyError::Missing(_)) => {
                    store.close().await;
                    return Err(missing("keyring", &path));
                }
                Err(e) => {
                    store.close().await;
                    return Err(e.into());
                }
            }
        }
        MasterProvider::AwsKms => None,
    };
    Ok((store, sqlite, keyring))
}

/// The longest pause between two attempts to open a PostgreSQL key store
/// that could not be reached.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often a start still waiting for PostgreSQL says so.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(30);

/// Whether a failed start may succeed by trying again: a PostgreSQL key
/// store that could not be reached (or stopped answering during the
/// checks). What retrying cannot mend is not: authentication or TLS
/// refused, a schema this build does not know, a refused deployment, and
/// any SQLite failure (a local file).
pub(super) fn retryable(keystore: &KeyStoreConfig, e: &ServeError) -> bool {
    use crate::keys::store::StoreError;
    keystore.backend == KeyStoreBackend::Postgres
        && matches!(
            e,
            ServeError::KeyStore(StoreError::Unavailable(_))
                | ServeError::Startup(deployment::StartupError::KeyStore {
                    error: StoreError::Unavailable(_),
                    ..
                })
        )
}

/// Runs `open` again after `failed` (a [`retryable`] failure), with a
/// growing pause (2 s at most), for as long as it fails retryably; says so
/// in the log at once and then every 30 s. Returns what it finally
/// returned.
pub(super) async fn open_retrying<T, F, Fut>(
    keystore: &KeyStoreConfig,
    failed: ServeError,
    mut open: F,
) -> Result<T, ServeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServeError>>,
{
    let mut pause = Duration::from_millis(100);
    let mut error = failed;
    let mut logged: Option<std::time::Instant> = None;
    loop {
        if logged.is_none_or(|at| at.elapsed() >= RETRY_LOG_EVERY) {
            tracing::warn!(
                target: super::LOG_TARGET,
                error = %error,
                "key store unreachable at start: trying again (health NOT_SERVING until it answers)"
            );
            logged = Some(std::time::Instant::now());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
        match open().await {
            Ok(opened) => {
                tracing::info!(target: super::LOG_TARGET, "key store reached");
                return Ok(opened);
            }
            Err(e) if retryable(keystore, &e) => error = e,
            Err(e) => return Err(e),
        }
    }
}
