//! `sealgate backup DIR`: a consistent online backup of what a deployment
//! on this machine needs to be restored, checked by opening it.
//!
//! Into a new directory (mode 0700), while the gateway serves:
//!
//! - `keys.db`: the SQLite key store through `VACUUM INTO` (one read
//!   transaction: consistent, and compacted, so no free page holds a key
//!   erased before it); a PostgreSQL key store is the database's own
//!   backup (`pg_dump`), named in the report, not copied;
//! - `keyring`: the local keyring (with AWS KMS the master versions are
//!   records of the key store), copied under the keyring's lock, which is
//!   held from before the key store is copied: no rotation or retirement
//!   comes between the two, so every master version a KEK of the copy is
//!   under is in the copied keyring;
//! - `MANIFEST`: the deployment id, when it was taken, the master versions,
//!   and the date by which it must be destroyed (a backup holds the keys of
//!   every user erased after it was taken: with the key schedule on, the
//!   erasure receipt's backup horizon holds only if no backup outlives
//!   `keys.kek_max_age_days`).
//!
//! The copy is then opened as a start would open it: the keyring against
//! the copied key store's records (`keys::master::checks::compare`) and the
//! deployment id. Only then is the backup recorded in the live key store
//! (`keys status` and `sealgate_backup_behind_master_keys` say whether one
//! was taken since the master keys last changed).
//!
//! Restoring is copying `keys.db` and `keyring` into an empty data
//! directory beside the same object store: the startup guards check that
//! they belong together.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::{format_time, unix_ms};
use crate::keys::keyring::{LocalKeyring, MasterKeyError, MasterKeyProvider};
use crate::keys::master::checks;
use crate::keys::sqlite::{companions, SqliteKeyStore, FILE_NAME};
use crate::keys::store::{KeyStore, StoreError};

/// Why a backup was not taken (nothing is recorded; the directory may hold
/// a partial copy, named in the message).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target directory cannot be used.
    #[error("backup directory {path}: {message}")]
    Target {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key store could not be copied or read.
    #[error("key store: {0}")]
    Store(#[from] StoreError),
    /// The keyring could not be copied or read.
    #[error(transparent)]
    Keyring(#[from] MasterKeyError),
    /// The copy does not open as the deployment it was taken of.
    #[error("the backup in {path} does not open: {message}")]
    Unusable {
        /// The directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// What the backup is of.
pub struct Source<'a> {
    /// The live key store.
    pub store: &'a dyn KeyStore,
    /// Whether it is SQLite (copied) rather than PostgreSQL (not copied).
    pub sqlite: bool,
    /// The local keyring, when the master keys are in one.
    pub keyring: Option<&'a LocalKeyring>,
    /// `keys.kek_max_age_days`, when the key schedule is on.
    pub kek_max_age: Option<Duration>,
}

/// A backup taken.
#[derive(Debug, Clone)]
pub struct Report {
    /// The directory.
    pub dir: PathBuf,
    /// The deployment's id.
    pub deployment: String,
    /// When it was taken, Unix ms.
    pub taken_ms: i64,
    /// The files written, by name.
    pub files: Vec<&'static str>,
    /// The master versions it holds.
    pub master_versions: Vec<u32>,
    /// When it must be destroyed for erasure receipts' backup horizons to
    /// hold (the key schedule on), Unix ms.
    pub destroy_by_ms: Option<i64>,
}

impl Report {
    /// The manifest's text, also what the CLI prints.
    pub fn text(&self, sqlite: bool) -> String {
        let mut out = format!(
            "sealgate backup\ndeployment: {}\ntaken: {}\ntaken_unix_ms: {}\nfiles: {}\n\
             master_versions: {}\n",
            self.deployment,
            format_time(self.taken_ms),
            self.taken_ms,
            self.files.join(" "),
            self.master_versions
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        );
        if !sqlite {
            out.push_str(
                "key_store: a PostgreSQL database, not in this directory: back it up with \
                 pg_dump at the same time\n",
            );
        }
        match self.destroy_by_ms {
            Some(ms) => out.push_str(&format!(
                "destroy_by: {} (it holds the keys of users erased after it was taken)\n",
                format_time(ms)
            )),
            None => out.push_str(
                "destroy_by: none (the key schedule is off: it opens the objects of users \
                 erased after it was taken for as long as it is kept)\n",
            ),
        }
        out
    }
}

/// Takes a backup of `source` into the new or empty directory `dir`.
///
/// # Errors
/// [`BackupError`]; nothing is recorded in the live store then.
pub async fn take(source: Source<'_>, dir: &Path) -> Result<Report, BackupError> {
    let target = |message: String| BackupError::Target {
        path: dir.to_owned(),
        message,
    };
    prepare(dir).map_err(target)?;
    let deployment = source.store.store_id().await?.ok_or_else(|| {
        BackupError::Store(StoreError::Backend(
            "the key store records no deployment id: start the gateway on it once".into(),
        ))
    })?;
    let taken_ms = unix_ms();
    let mut files = Vec::new();
    {
        // Held until both are copied: no master version comes or goes
        // between the key store's copy and the keyring's.
        let held = source.keyring.map(LocalKeyring::hold_changes).transpose()?;
        if source.sqlite {
            source.store.backup_into(&dir.join(FILE_NAME)).await?;
            files.push(FILE_NAME);
        }
        if let (Some(keyring), Some(held)) = (source.keyring, &held) {
            keyring.copy_to(held, &dir.join("keyring"))?;
            files.push("keyring");
        }
    }
    let master_versions = check(&source, dir, &deployment).await?;
    let report = Report {
        dir: dir.to_owned(),
        deployment,
        taken_ms,
        files,
        master_versions,
        destroy_by_ms: source
            .kek_max_age
            .map(|age| taken_ms.saturating_add(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))),
    };
    write_manifest(dir, &report.text(source.sqlite)).map_err(target)?;
    checks::record_backup(source.store, taken_ms).await?;
    Ok(report)
}

/// Creates `dir` (0700, with any missing parent) or accepts it empty.
fn prepare(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create: {e}"))?;
    let mut entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read: {e}"))?;
    if entries.next().is_some() {
        return Err("is not empty; give a new directory for each backup".into());
    }
    Ok(())
}

/// Opens the copy as a start would: the keyring against the copied key
/// store's records, the deployment id. Returns the master versions.
async fn check(source: &Source<'_>, dir: &Path, deployment: &str) -> Result<Vec<u32>, BackupError> {
    let unusable = |message: String| BackupError::Unusable {
        path: dir.to_owned(),
        message,
    };
    // The records to check the keyring against: the copy's, or with
    // PostgreSQL the live store's.
    let copy = if source.sqlite {
        Some(
            SqliteKeyStore::open(&dir.join(FILE_NAME))
                .await
                .map_err(|e| unusable(e.to_string()))?,
        )
    } else {
        None
    };
    let store: &dyn KeyStore = match &copy {
        Some(copy) => copy,
        None => source.store,
    };
    let checked = async {
        let id = store.store_id().await.map_err(|e| e.to_string())?;
        if id.as_deref() != Some(deployment) {
            return Err(format!(
                "its key store belongs to deployment {id:?}, not {deployment}"
            ));
        }
        let recorded = checks::read(store).await.map_err(|e| e.to_string())?;
        if source.keyring.is_none() {
            return Ok(recorded.kms_arns.keys().copied().collect());
        }
        let (keyring, naming) =
            LocalKeyring::load(&dir.join("keyring")).map_err(|e| e.to_string())?;
        checks::compare(
            &recorded,
            &keyring,
            &naming,
            &dir.join("keyring").display().to_string(),
        )
        .map_err(|e| e.to_string())?;
        Ok(keyring.versions())
    }
    .await;
    if let Some(copy) = &copy {
        copy.close().await;
        // What opening the copy may have left beside it.
        for file in companions(&dir.join(FILE_NAME)) {
            let _ = std::fs::remove_file(file);
        }
    }
    checked.map_err(unusable)
}

fn write_manifest(dir: &Path, text: &str) -> Result<(), String> {
    let path = dir.join("MANIFEST");
    std::fs::write(&path, text)
        .and_then(|()| std::fs::File::open(&path)?.sync_all())
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
