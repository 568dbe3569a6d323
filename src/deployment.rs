//! Startup guards against fresh state over old state.
//!
//! A deployment is a key store, its keyring and an object store that belong
//! together. Each store records the deployment's id (the key store in its
//! database, the object store at its root); the gateway refuses to start,
//! with one line naming what is missing, when a part is missing or comes
//! from elsewhere:
//!
//! - the key store file is missing while the object store has an id
//!   ([`check_key_store_present`], before anything is created);
//! - the object store has an id and the key store none (a new or emptied
//!   key store) or another one;
//! - the keyring is missing while the key store holds keys or records
//!   master keys, or cannot be used (unreadable, a symbolic link, another
//!   owner, readable by others, duplicate entries);
//! - the master keys are not the ones the key store records
//!   (`keys::master::checks`): another provider (a process without
//!   `[master]` beside a store of KMS master keys, or the reverse), another
//!   naming key (another deployment's or a fresh keyring), a master version
//!   that KEKs are under, or newer than any held, missing (a keyring
//!   restored from before a rotation), or another key under a version.
//!
//! Every check that can refuse runs before anything is written; only then
//! is a keyring created (create-only, see [`LocalKeyring::create`], and
//! only beside a key store that records no master keys), what the store
//! lacks of the master keys recorded, and an id recorded: a new id goes to the key
//! store first, then the object store, so that an object store with an id
//! always has its key store recorded already. A key store with an id and an
//! object store without one (a new bucket for an existing deployment) gets
//! the key store's id; a key store holding keys but no id (from before ids)
//! adopts a new one.
//!
//! [`open_local`] (the keyring beside the data) and [`open_kms`] (master
//! versions recorded in the key store) share the id checks.

use std::path::Path;

use crate::blob::{BlobError, BlobStore};
use crate::crypto::{NamingKey, Suite};
use crate::keys::keyring::{LocalKeyring, MasterKeyError};
use crate::keys::kms::{KmsClient, KmsMasterKeys};
use crate::keys::master::{checks, ProviderKind};
use crate::keys::store::{KeyStore, StoreError};

/// The key store's setting that holds the deployment's key suite (a
/// [`Suite`] name): of the key store's wraps and of pseudonyms, recorded
/// when the deployment is made and never changed.
pub const KEY_SUITE_META: &str = "key_suite";

/// Why the gateway does not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The stores do not belong together or a part is missing; the message
    /// names the path (or bucket) and what to do.
    #[error("refusing to start: {0}")]
    Refused(String),
    /// The key store could not be read or written.
    #[error("key store {path}: {error}")]
    KeyStore {
        /// The key store.
        path: String,
        /// What failed.
        error: StoreError,
    },
    /// The object store could not be read or written.
    #[error("object store {location}: {error}")]
    Blob {
        /// The object store.
        location: String,
        /// What failed.
        error: BlobError,
    },
}

/// Where the parts of a deployment are, for the checks and their messages.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    /// The key store.
    pub key_store: &'a dyn KeyStore,
    /// Its file, or its database's URL without the password (named in
    /// messages).
    pub key_store_path: &'a Path,
    /// The local keyring file.
    pub keyring_path: &'a Path,
    /// The object store.
    pub blob: &'a dyn BlobStore,
    /// What to restore from a backup, as refusals name it.
    pub backup: Backup,
    /// The key suite of a new deployment (`crypto.suite`); an existing one
    /// keeps the one its key store records.
    pub new_key_suite: Suite,
}

/// What a deployment's backup holds that a refusal asks to restore: the
/// key store (`keys.db` or a PostgreSQL database) and, with master keys in
/// the local keyring, the keyring (with AWS KMS the master versions are
/// records of the key store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backup {
    /// The key store is a PostgreSQL database, not `keys.db`.
    pub database: bool,
    /// The master keys are in the local keyring file.
    pub keyring: bool,
}

impl Backup {
    /// The key store as a backup names it.
    fn key_store(self) -> &'static str {
        if self.database {
            "the key store database"
        } else {
            crate::keys::sqlite::FILE_NAME
        }
    }
}

impl std::fmt::Display for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key_store())?;
        if self.keyring {
            f.write_str(" and the keyring")?;
        }
        Ok(())
    }
}

fn blob_error(blob: &dyn BlobStore) -> impl Fn(BlobError) -> StartupError + '_ {
    move |error| StartupError::Blob {
        location: blob.location(),
        error,
    }
}

fn store_error(path: &Path) -> impl Fn(StoreError) -> StartupError + '_ {
    move |error| StartupError::KeyStore {
        path: path.display().to_string(),
        error,
    }
}

/// Before the key store is opened (and before anything is created): refuses
/// a missing key store file next to an object store that belongs to a
/// deployment.
///
/// # Errors
/// [`StartupError::Refused`] naming both; [`StartupError::Blob`] if the
/// object store's id cannot be read.
pub async fn check_key_store_present(
    key_store_path: &Path,
    blob: &dyn BlobStore,
    backup: Backup,
) -> Result<(), StartupError> {
    let exists = std::fs::symlink_metadata(key_store_path).map(|_| true);
    let exists = match exists {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(StartupError::Refused(format!(
                "cannot inspect the key store {}: {e}",
                key_store_path.display()
            )))
        }
    };
    if exists {
        return Ok(());
    }
    if let Some(id) = blob.store_id().await.map_err(blob_error(blob))? {
        return Err(StartupError::Refused(format!(
            "key store {} is missing but the object store {} holds the objects of \
             deployment {id}; restore {backup} from this deployment's backup",
            key_store_path.display(),
            blob.location()
        )));
    }
    Ok(())
}

/// The deployment ids both stores hold, checked to belong together.
struct Ids {
    store_id: Option<String>,
    blob_id: Option<String>,
    holds_keys: bool,
}

/// Refuses a key store and an object store of different deployments, or
/// an object store with an id next to a key store without one.
async fn check_ids(parts: Parts<'_>) -> Result<Ids, StartupError> {
    let Parts {
        key_store,
        key_store_path,
        blob,
        ..
    } = parts;
    let ks_err = store_error(key_store_path);
    // The object store's id first: it is recorded after the key store's, so
    // if it is there, a key store of the same deployment shows its id too.
    let blob_id = blob.store_id().await.map_err(blob_error(blob))?;
    let store_id = key_store.store_id().await.map_err(&ks_err)?;
    let holds_keys = key_store.holds_keys().await.map_err(&ks_err)?;
    let ks = key_store_path.display();
    let objects = blob.location();
    match (&store_id, &blob_id) {
        (Some(mine), Some(theirs)) if mine != theirs => {
            return Err(StartupError::Refused(format!(
                "key store {ks} belongs to deployment {mine} but the object store {objects} \
                 to deployment {theirs}; configure the data directory and object store of \
                 one deployment"
            )))
        }
        (None, Some(theirs)) => {
            let what = if holds_keys {
                "holds keys of no recorded deployment"
            } else {
                "is new or empty"
            };
            return Err(StartupError::Refused(format!(
                "key store {ks} {what} but the object store {objects} holds the objects of \
                 deployment {theirs}; restore {} from this deployment's backup",
                parts.backup
            )));
        }
        _ => {}
    }
    Ok(Ids {
        store_id,
        blob_id,
        holds_keys,
    })
}

/// Records the deployment id where it is missing (the key store first);
/// returns it.
async fn record_ids(parts: Parts<'_>, ids: Ids) -> Result<(String, Suite), StartupError> {
    let Parts {
        key_store,
        key_store_path,
        blob,
        ..
    } = parts;
    let ks_err = store_error(key_store_path);
    // The key suite before the id: a deployment with an id has its suite.
    let suite = match key_store
        .meta_value(KEY_SUITE_META)
        .await
        .map_err(&ks_err)?
    {
        Some(name) => name,
        None => {
            // Keys or an id from before key suites were recorded are
            // suite 1's; only a new deployment takes the configured one.
            let new = ids.store_id.is_none() && !ids.holds_keys;
            let suite = if new {
                parts.new_key_suite
            } else {
                Suite::Aes256Gcm
            };
            key_store
                .set_meta_if_absent(KEY_SUITE_META, suite.name())
                .await
                .map_err(&ks_err)?
        }
    };
    let suite = Suite::from_name(&suite).ok_or_else(|| {
        StartupError::Refused(format!(
            "key store {} records the key suite {}, which this build lacks; run the \
             sealgate that made it",
            key_store_path.display(),
            crate::error::quote(&suite)
        ))
    })?;
    let id = match ids.store_id {
        Some(id) => id,
        None => {
            let id = key_store
                .init_store_id(&crate::names::random_id())
                .await
                .map_err(&ks_err)?;
            if ids.holds_keys {
                tracing::info!(store_id = %id, "key store from before store ids: recorded an id");
            }
            id
        }
    };
    if ids.blob_id.as_deref() != Some(id.as_str()) {
        let recorded = blob.init_store_id(&id).await.map_err(blob_error(blob))?;
        if recorded != id {
            return Err(StartupError::Refused(format!(
                "key store {} belongs to deployment {id} but the object store {} \
                 was just claimed by deployment {recorded}; configure the data directory and \
                 object store of one deployment",
                key_store_path.display(),
                blob.location()
            )));
        }
    }
    tracing::info!(deployment = %id, key_suite = %suite, "key store, master keys and object store belong together");
    Ok((id, suite))
}

/// With the key store open: checks that the parts belong together, then
/// loads (or, on a new deployment, creates) the local keyring and records
/// the deployment id where it is missing. Returns the keyring, its naming
/// key and the deployment id.
///
/// # Errors
/// [`StartupError::Refused`] as the module describes; the other variants if
/// a store cannot be read or written.
pub async fn open_local(
    parts: Parts<'_>,
) -> Result<(LocalKeyring, NamingKey, String), StartupError> {
    let ids = check_ids(parts).await?;
    let keyring_path = parts.keyring_path;
    let recorded = checks::read(parts.key_store)
        .await
        .map_err(store_error(parts.key_store_path))?;
    checks::check_provider(
        &recorded,
        ProviderKind::Local,
        &keyring_path.display().to_string(),
    )
    .map_err(StartupError::Refused)?;
    let (keyring, naming) = match LocalKeyring::load(keyring_path) {
        Ok(loaded) => loaded,
        // Fresh master keys never go beside a store that belongs to some.
        Err(MasterKeyError::Missing(_)) if recorded.populated() => {
            let what = if ids.holds_keys {
                "holds keys"
            } else {
                "records this deployment's master keys"
            };
            return Err(StartupError::Refused(format!(
                "keyring {} is missing but the key store {} {what}; restore the \
                 keyring from the backup taken with {} (or, beside replicas, copy theirs)",
                keyring_path.display(),
                parts.key_store_path.display(),
                parts.backup.key_store()
            )));
        }
        Err(MasterKeyError::Missing(_)) => {
            LocalKeyring::create(keyring_path).map_err(|e| StartupError::Refused(e.to_string()))?
        }
        Err(e) => return Err(StartupError::Refused(e.to_string())),
    };
    checks::verify(
        parts.key_store,
        &keyring,
        &naming,
        &keyring_path.display().to_string(),
    )
    .await
    .map_err(master_refused(parts))?;
    let (id, suite) = record_ids(parts, ids).await?;
    Ok((keyring.with_key_suite(suite), naming.for_suite(suite), id))
}

/// A master-key failure at startup: a refusal, or the key store's error.
fn master_refused(parts: Parts<'_>) -> impl Fn(MasterKeyError) -> StartupError + '_ {
    move |e| match e {
        MasterKeyError::Store(error) => StartupError::KeyStore {
            path: parts.key_store_path.display().to_string(),
            error,
        },
        e => StartupError::Refused(e.to_string()),
    }
}

/// As [`open_local`] with master keys in AWS KMS: the master versions
/// recorded in `key_store` (the same store as `parts.key_store`), created
/// under `kms_key_arn` on a new deployment ([`KmsMasterKeys::open`]); the
/// keyring path is not read. A key store that holds keys but no KMS
/// version (one made with the local keyring) is refused.
///
/// # Errors
/// As [`open_local`]; [`StartupError::Refused`] naming what KMS answered if
/// the naming key cannot be unwrapped.
pub async fn open_kms(
    parts: Parts<'_>,
    key_store: std::sync::Arc<dyn KeyStore>,
    kms: KmsClient,
    kms_key_arn: &str,
) -> Result<(KmsMasterKeys, NamingKey, String), StartupError> {
    let ids = check_ids(parts).await?;
    let recorded = checks::read(parts.key_store)
        .await
        .map_err(store_error(parts.key_store_path))?;
    checks::check_provider(
        &recorded,
        ProviderKind::AwsKms,
        &parts.keyring_path.display().to_string(),
    )
    .map_err(StartupError::Refused)?;
    let (master, naming) = KmsMasterKeys::open(key_store, kms, kms_key_arn)
        .await
        .map_err(|e| match e {
            MasterKeyError::Store(error) => StartupError::KeyStore {
                path: parts.key_store_path.display().to_string(),
                error,
            },
            e => StartupError::Refused(format!("master keys in KMS: {e}")),
        })?;
    checks::verify(parts.key_store, &master, &naming, kms_key_arn)
        .await
        .map_err(master_refused(parts))?;
    let (id, suite) = record_ids(parts, ids).await?;
    Ok((master, naming.for_suite(suite), id))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blob::fs::FsBlobStore;
    use crate::keys::sqlite::SqliteKeyStore;
    use crate::keys::store::{KekRecord, KeyRecords, Settings};

    const SQLITE_LOCAL: Backup = Backup {
        database: false,
        keyring: true,
    };

    struct Fixture {
        dir: tempfile::TempDir,
        store: Arc<SqliteKeyStore>,
        blob: FsBlobStore,
    }

    impl Fixture {
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(
                SqliteKeyStore::open(&dir.path().join(crate::keys::sqlite::FILE_NAME))
                    .await
                    .unwrap(),
            );
            let blob = FsBlobStore::open(dir.path().join("objects")).await.unwrap();
            Self { dir, store, blob }
        }

        async fn open(&self) -> Result<(LocalKeyring, NamingKey, String), StartupError> {
            self.open_as(Suite::Aes256Gcm).await
        }

        /// Opens with `crypto.suite = suite`.
        async fn open_as(
            &self,
            suite: Suite,
        ) -> Result<(LocalKeyring, NamingKey, String), StartupError> {
            let key_store_path = self.dir.path().join(crate::keys::sqlite::FILE_NAME);
            let keyring_path = self.dir.path().join("keyring");
            open_local(Parts {
                key_store: &*self.store,
                key_store_path: &key_store_path,
                keyring_path: &keyring_path,
                blob: &self.blob,
                backup: SQLITE_LOCAL,
                new_key_suite: suite,
            })
            .await
        }
    }

    #[tokio::test]
    async fn a_new_deployment_records_one_id_in_both_stores() {
        let f = Fixture::new().await;
        let (_, naming, id) = f.open().await.unwrap();
        assert_eq!(f.store.store_id().await.unwrap().as_deref(), Some(&*id));
        assert_eq!(f.blob.store_id().await.unwrap().as_deref(), Some(&*id));
        // Again: the same id and keyring.
        let (_, again, same) = f.open().await.unwrap();
        assert_eq!(same, id);
        assert_eq!(again.pseudonym("u"), naming.pseudonym("u"));
    }

    #[tokio::test]
    async fn a_new_deployment_takes_the_configured_key_suite_for_good() {
        let f = Fixture::new().await;
        let (_, naming, _) = f.open_as(Suite::Sm4Gcm).await.unwrap();
        assert_eq!(naming.suite(), Suite::Sm4Gcm);
        let (_, again, _) = f.open_as(Suite::Aes256Gcm).await.unwrap();
        assert_eq!(again.suite(), Suite::Sm4Gcm);
        assert_eq!(again.pseudonym("u"), naming.pseudonym("u"));
        assert_eq!(
            f.store.meta_value(KEY_SUITE_META).await.unwrap().as_deref(),
            Some("sm4-gcm")
        );
    }

    #[tokio::test]
    async fn a_deployment_from_before_key_suites_stays_in_suite_1() {
        let f = Fixture::new().await;
        let (_, naming, _) = f.open().await.unwrap();
        // A store of an older sealgate: an id, no key suite recorded.
        assert!(f.store.delete_meta(KEY_SUITE_META).await.unwrap());
        let (_, again, _) = f.open_as(Suite::Sm4Gcm).await.unwrap();
        assert_eq!(again.suite(), Suite::Aes256Gcm);
        assert_eq!(again.pseudonym("u"), naming.pseudonym("u"));
    }

    #[tokio::test]
    async fn a_key_store_from_before_ids_adopts_one() {
        let f = Fixture::new().await;
        LocalKeyring::create(&f.dir.path().join("keyring")).unwrap();
        f.store
            .insert_kek(&KekRecord {
                shard: 0,
                version: 1,
                master_version: 1,
                wrapped: vec![0; 40],
                created_at_ms: 0,
            })
            .await
            .unwrap();
        assert_eq!(f.store.store_id().await.unwrap(), None);
        let (_, _, id) = f.open().await.unwrap();
        assert_eq!(f.store.store_id().await.unwrap().as_deref(), Some(&*id));
        assert_eq!(f.blob.store_id().await.unwrap().as_deref(), Some(&*id));
    }

    #[tokio::test]
    async fn a_new_object_store_gets_the_key_stores_id() {
        let f = Fixture::new().await;
        let (_, _, id) = f.open().await.unwrap();
        let fresh = FsBlobStore::open(f.dir.path().join("objects-2"))
            .await
            .unwrap();
        let key_store_path = f.dir.path().join(crate::keys::sqlite::FILE_NAME);
        let keyring_path = f.dir.path().join("keyring");
        let (_, _, got) = open_local(Parts {
            key_store: &*f.store,
            key_store_path: &key_store_path,
            keyring_path: &keyring_path,
            blob: &fresh,
            backup: SQLITE_LOCAL,
            new_key_suite: Suite::Aes256Gcm,
        })
        .await
        .unwrap();
        assert_eq!(got, id);
        assert_eq!(fresh.store_id().await.unwrap().as_deref(), Some(&*id));
    }

    #[tokio::test]
    async fn refusals_write_nothing() {
        let f = Fixture::new().await;
        f.blob.init_store_id("someone-elses").await.unwrap();
        let err = f.open().await.unwrap_err().to_string();
        assert!(err.starts_with("refusing to start: key store "), "{err}");
        assert!(err.contains("is new or empty"), "{err}");
        assert!(!f.dir.path().join("keyring").exists());
        assert_eq!(f.store.store_id().await.unwrap(), None);
    }

    fn keyring_path(f: &Fixture) -> std::path::PathBuf {
        f.dir.path().join("keyring")
    }

    async fn insert_kek(f: &Fixture, shard: u32, master_version: u32) {
        f.store
            .insert_kek(&KekRecord {
                shard,
                version: 1,
                master_version,
                wrapped: vec![0; 40],
                created_at_ms: 0,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_store_records_its_master_keys_and_a_store_from_before_adopts_them() {
        let f = Fixture::new().await;
        // A store from before the records: a keyring and a KEK, nothing
        // recorded.
        LocalKeyring::create(&keyring_path(&f)).unwrap();
        insert_kek(&f, 0, 1).await;
        assert!(checks::read(&*f.store).await.unwrap().naming.is_none());
        f.open().await.unwrap();
        let recorded = checks::read(&*f.store).await.unwrap();
        assert_eq!(recorded.provider, Some(ProviderKind::Local));
        assert!(recorded.naming.is_some());
        assert_eq!(recorded.versions.keys().copied().collect::<Vec<_>>(), [1]);
        assert!(recorded.versions[&1].check.is_some());
        // And again: nothing differs.
        f.open().await.unwrap();
    }

    #[tokio::test]
    async fn no_fresh_keyring_beside_a_store_that_records_one() {
        let f = Fixture::new().await;
        f.open().await.unwrap();
        // No KEK yet, but the store belongs to this keyring.
        std::fs::remove_file(keyring_path(&f)).unwrap();
        let err = f.open().await.unwrap_err().to_string();
        assert!(
            err.contains("is missing but the key store")
                && err.contains("records this deployment's master keys"),
            "{err}"
        );
        assert!(!keyring_path(&f).exists(), "no keyring was made");
    }

    #[tokio::test]
    async fn another_keyring_is_refused_naming_the_naming_key() {
        let f = Fixture::new().await;
        f.open().await.unwrap();
        let other = tempfile::tempdir().unwrap();
        LocalKeyring::create(&other.path().join("keyring")).unwrap();
        std::fs::copy(other.path().join("keyring"), keyring_path(&f)).unwrap();
        let err = f.open().await.unwrap_err().to_string();
        assert!(
            err.contains("holds another naming key than the key store records"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_keyring_from_before_a_rotation_is_refused_naming_the_version() {
        let f = Fixture::new().await;
        let (keyring, _, _) = f.open().await.unwrap();
        insert_kek(&f, 0, 1).await;
        let stale = f.dir.path().join("keyring.stale");
        std::fs::copy(keyring_path(&f), &stale).unwrap();
        // A rotation: version 2 added and recorded, no KEK under it yet.
        keyring.add_version(2).unwrap();
        checks::record_version(&*f.store, &keyring, 2)
            .await
            .unwrap();
        std::fs::copy(&stale, keyring_path(&f)).unwrap();
        let err = f.open().await.unwrap_err().to_string();
        let today = &crate::clock::format_time(crate::clock::unix_ms())[..10];
        assert!(
            err.contains(&format!(
                "lacks master version 2 (added {today}), the key store's newest: restore a \
                 keyring backed up after that"
            )),
            "{err}"
        );
        // The rotation moved a KEK under version 2.
        insert_kek(&f, 1, 2).await;
        let err = f.open().await.unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "lacks master version 2 (added {today}), which 1 KEK versions are under: \
                 restore a keyring backed up after that"
            )),
            "{err}"
        );
        // Another key under a recorded version.
        let other = tempfile::tempdir().unwrap();
        let (forged, _) = LocalKeyring::create(&other.path().join("keyring")).unwrap();
        forged.add_version(2).unwrap();
        let err = checks::record_version(&*f.store, &forged, 2)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds another key as master version 2 than the key store records"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn kms_master_keys_in_the_store_refuse_a_local_keyring() {
        let f = Fixture::new().await;
        f.store
            .set_meta_if_absent(
                "kms_master:0000000001",
                "arn:aws-cn:kms:cn-north-1:111122223333:key/k 00ff",
            )
            .await
            .unwrap();
        let err = f.open().await.unwrap_err().to_string();
        assert!(
            err.contains(
                "the key store's master keys are in AWS KMS \
                 (arn:aws-cn:kms:cn-north-1:111122223333:key/k, master version 1)"
            ) && err.contains("add the [master] section with provider = \"aws-kms\""),
            "{err}"
        );
        assert!(!keyring_path(&f).exists(), "no keyring was made");
    }
}
