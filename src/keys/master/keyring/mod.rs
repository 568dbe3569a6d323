//! The local master keyring: versioned master keys and the naming key in one
//! file, mode 0600. [`LocalKeyring::load`] never creates it;
//! [`LocalKeyring::create`] creates it create-only, so processes starting at
//! once on an empty data directory end with one keyring. Whether a missing
//! keyring may be created is the caller's decision (`deployment`).
//!
//! File format, one entry per line, `#` starts a comment:
//!
//! ```text
//! naming <64 hex>
//! master <version> <64 hex>
//! ```
//!
//! The highest master version wraps new KEKs; older versions stay to unwrap
//! KEKs not yet re-wrapped, until retired.
//!
//! Rotation adds a version and retirement removes one
//! ([`LocalKeyring::add_version`], [`LocalKeyring::retire_version`]), only
//! when an operator asks. Either rewrites the file whole: under an advisory
//! lock on `keyring.lock` (so processes sharing the keyring take turns), the
//! file is read again, the new text written to a temporary file (0600),
//! fsynced, renamed over the keyring and the directory fsynced. A crash
//! leaves the old keyring or the new one, never a mix; every entry of the
//! old one but a retired version is in the new one. A process notices a
//! keyring changed by another: before wrapping, and when asked for a
//! version it does not hold.
//!
//! This file is the provider: loading and checking the file, the lock,
//! changes and destruction; it never changes an existing keyring but under
//! the lock. The file's text and how a new one reaches the disk
//! (create-only publishing, whole-file replacement) are in `file.rs`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{MasterKeyError, MasterKeyProvider, ProviderKind};
use crate::crypto::keys::CHECK_LEN;
use crate::crypto::{Kek, MasterKey, NamingKey, Suite, Wrapped};
use file::{effective_uid, parent_dir, publish_new, replace, write_private};

mod file;
#[cfg(test)]
mod tests;

pub use file::parse;

/// Master keys by version.
type Masters = BTreeMap<u32, Arc<MasterKey>>;

/// What was loaded, and from which file state.
struct Loaded {
    masters: Masters,
    /// (inode, modification time in ns, length) of the file read.
    stamp: (u64, i128, u64),
}

/// The keyring's lock, held ([`LocalKeyring::hold_changes`]) until dropped.
pub struct ChangeLock {
    _lock: std::fs::File,
}

/// The local keyring file.
pub struct LocalKeyring {
    path: PathBuf,
    loaded: RwLock<Loaded>,
    /// The deployment's key suite: of the KEKs' wraps.
    suite: Suite,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("master_versions", &self.versions())
            .finish_non_exhaustive()
    }
}

fn stamp_of(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    (
        meta.ino(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        meta.len(),
    )
}

/// Largest keyring file read; a real one is a few hundred bytes.
const MAX_KEYRING_BYTES: u64 = 1 << 20;

impl LocalKeyring {
    /// Loads the keyring at `path`; never creates it. Returns the master
    /// keys and the naming key.
    ///
    /// The file is opened once, without following a symbolic link, and the
    /// checks apply to that open file: a regular file, owned by this
    /// process's user, readable by nobody else, every entry once.
    ///
    /// # Errors
    /// [`MasterKeyError::Missing`] if there is no file at `path`;
    /// [`MasterKeyError::Keyring`] if it is a symbolic link or not a regular
    /// file, belongs to another user, is readable by group or others, cannot
    /// be read, or is malformed (a duplicate entry included).
    pub fn load(path: &Path) -> Result<(Self, NamingKey), MasterKeyError> {
        let err = |message: String| MasterKeyError::Keyring {
            path: path.to_owned(),
            message,
        };
        // O_NONBLOCK: a FIFO put in the keyring's place opens at once (and is
        // then refused) instead of blocking; regular files ignore it.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MasterKeyError::Missing(path.to_owned()))
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(err(
                    "is a symbolic link; the keyring must be a regular file".into(),
                ))
            }
            Err(e) => return Err(err(format!("cannot open: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(err("is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "permissions are {mode:o}; the keyring must be private to its owner (chmod 600)"
            )));
        }
        let uid = effective_uid(path)
            .map_err(|e| err(format!("cannot determine this process's user: {e}")))?;
        if meta.uid() != uid {
            return Err(err(format!(
                "owned by uid {}, not by uid {uid} that runs sealgate (chown it)",
                meta.uid()
            )));
        }
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_KEYRING_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if text.len() as u64 > MAX_KEYRING_BYTES {
            return Err(err("too large to be a keyring".into()));
        }
        let (masters, naming) = parse(&text).map_err(err)?;
        let loaded = Loaded {
            masters: masters.into_iter().map(|(v, k)| (v, Arc::new(k))).collect(),
            stamp: stamp_of(&meta),
        };
        Ok((
            Self {
                path: path.to_owned(),
                loaded: RwLock::new(loaded),
                suite: Suite::Aes256Gcm,
            },
            naming,
        ))
    }

    /// The keyring of a deployment whose key suite is `suite` (recorded in
    /// its key store): KEKs are wrapped in it.
    #[must_use]
    pub fn with_key_suite(mut self, suite: Suite) -> Self {
        self.suite = suite;
        self
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the file again and takes its master keys.
    fn reload(&self) -> Result<NamingKey, MasterKeyError> {
        let (fresh, naming) = Self::load(&self.path)?;
        let fresh = fresh.loaded.into_inner().unwrap_or_else(|e| e.into_inner());
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(naming)
    }

    /// Reloads if the file is not the one last read (another process
    /// rotated or retired a version).
    fn refresh(&self) -> Result<(), MasterKeyError> {
        let now = std::fs::symlink_metadata(&self.path).map_err(|e| MasterKeyError::Keyring {
            path: self.path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        if stamp_of(&now) != self.read().stamp {
            self.reload()?;
        }
        Ok(())
    }

    /// Adds master `version` (a new random key) to the keyring file unless
    /// it is there; see the module documentation for how the file is
    /// rewritten.
    ///
    /// # Errors
    /// [`MasterKeyError::NotNewer`] if `version` is missing but not above
    /// the newest; [`MasterKeyError::Keyring`] if the file cannot be read or
    /// written.
    pub fn add_version(&self, version: u32) -> Result<(), MasterKeyError> {
        self.change(|masters| {
            if masters.contains_key(&version) {
                return Ok(false);
            }
            let newest = masters.keys().next_back().copied().unwrap_or(0);
            if version <= newest {
                return Err(MasterKeyError::NotNewer { version, newest });
            }
            masters.insert(version, Arc::new(MasterKey::generate()?));
            Ok(true)
        })
    }

    /// Removes master `version` from the keyring file.
    ///
    /// # Errors
    /// [`MasterKeyError::UnknownVersion`], [`MasterKeyError::NewestVersion`];
    /// [`MasterKeyError::Keyring`] if the file cannot be read or written.
    pub fn retire_version(&self, version: u32) -> Result<(), MasterKeyError> {
        self.change(|masters| {
            let newest = masters.keys().next_back().copied().unwrap_or(0);
            if !masters.contains_key(&version) {
                return Err(MasterKeyError::UnknownVersion(version));
            }
            if version == newest {
                return Err(MasterKeyError::NewestVersion(version));
            }
            masters.remove(&version);
            Ok(true)
        })
    }

    /// Takes the keyring's lock file (`PATH.lock`), which every change of
    /// the keyring holds; released when the returned file is dropped.
    fn lock(&self) -> Result<(std::fs::File, PathBuf), MasterKeyError> {
        let err = |message: String| MasterKeyError::Keyring {
            path: self.path.clone(),
            message,
        };
        let lock_path = {
            let mut name = self.path.as_os_str().to_owned();
            name.push(".lock");
            PathBuf::from(name)
        };
        let lock = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| err(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| err(format!("cannot lock {}: {e}", lock_path.display())))?;
        Ok((lock, lock_path))
    }

    /// Holds the keyring's lock until the guard is dropped: no process
    /// adds or retires a version meanwhile (a backup copies the key store
    /// and the keyring under it, so that the two agree).
    ///
    /// # Errors
    /// [`MasterKeyError::Keyring`] if the lock file cannot be opened or
    /// locked.
    pub fn hold_changes(&self) -> Result<ChangeLock, MasterKeyError> {
        let (lock, _) = self.lock()?;
        Ok(ChangeLock { _lock: lock })
    }

    /// Writes the keyring file as it is now to the new file `dest` (mode
    /// 0600, never over an existing file), fsynced with its directory.
    /// Taken under `_held`, the copy is the keyring of everything written
    /// since the lock was taken.
    ///
    /// # Errors
    /// [`MasterKeyError::Keyring`] if the keyring cannot be read or the
    /// copy written.
    pub fn copy_to(&self, _held: &ChangeLock, dest: &Path) -> Result<(), MasterKeyError> {
        let err = |message: String| MasterKeyError::Keyring {
            path: self.path.clone(),
            message,
        };
        let mut text = Zeroizing::new(String::new());
        std::fs::File::open(&self.path)
            .and_then(|f| f.take(MAX_KEYRING_BYTES).read_to_string(&mut text))
            .map_err(|e| err(format!("cannot read: {e}")))?;
        write_private(dest, &text)
            .and_then(|()| std::fs::File::open(parent_dir(dest))?.sync_all())
            .map_err(|e| err(format!("cannot copy to {}: {e}", dest.display())))
    }

    /// Destroys the keyring: under the keyring lock, the file is
    /// overwritten in place with zeros and fsynced, then removed (the
    /// directory fsynced), and the keys held in memory are dropped
    /// (zeroized). Returns the versions it held.
    ///
    /// # Errors
    /// [`MasterKeyError::Keyring`] if the file cannot be overwritten or
    /// removed.
    pub fn destroy_all(&self) -> Result<Vec<u32>, MasterKeyError> {
        let err = |message: String| MasterKeyError::Keyring {
            path: self.path.clone(),
            message,
        };
        let (lock, lock_path) = self.lock()?;
        let versions = self.versions();
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
        {
            Ok(mut file) => {
                crate::disk::overwrite_with_zeros(&mut file)
                    .map_err(|e| err(format!("cannot overwrite: {e}")))?;
                std::fs::remove_file(&self.path).map_err(|e| err(format!("cannot remove: {e}")))?;
                std::fs::File::open(parent_dir(&self.path))
                    .and_then(|d| d.sync_all())
                    .map_err(|e| err(format!("cannot sync the directory: {e}")))?;
            }
            // Destroyed before (a repeated decommission).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(format!("cannot open to overwrite: {e}"))),
        }
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .masters
            .clear();
        drop(lock);
        let _ = std::fs::remove_file(&lock_path);
        Ok(versions)
    }

    /// Under the keyring lock: reads the file, applies `edit` to its master
    /// keys and, if `edit` changed them, writes the file anew.
    fn change(
        &self,
        edit: impl FnOnce(&mut Masters) -> Result<bool, MasterKeyError>,
    ) -> Result<(), MasterKeyError> {
        let err = |message: String| MasterKeyError::Keyring {
            path: self.path.clone(),
            message,
        };
        let (lock, _) = self.lock()?;
        let naming = self.reload()?;
        let mut masters = self.read().masters.clone();
        if edit(&mut masters)? {
            replace(&self.path, &naming, &masters)
                .map_err(|e| err(format!("cannot rewrite: {e}")))?;
            self.reload()?;
        }
        drop(lock);
        Ok(())
    }

    /// Creates the keyring at `path` with master version 1 and a fresh
    /// naming key, unless a keyring is there already, then loads what is at
    /// `path`.
    ///
    /// Create-only: the keys are written to a temporary file of a unique
    /// name in the same directory (mode 0600), fsynced, and published by a
    /// hard link, which fails if `path` exists; the directory is fsynced.
    /// Of processes creating one keyring at once, exactly one publishes and
    /// every one loads that keyring.
    ///
    /// # Errors
    /// [`MasterKeyError::Keyring`] if the file cannot be written, or as
    /// [`LocalKeyring::load`].
    pub fn create(path: &Path) -> Result<(Self, NamingKey), MasterKeyError> {
        let err = |message: String| MasterKeyError::Keyring {
            path: path.to_owned(),
            message,
        };
        // Published here or by another process first: either way, load
        // what is at `path` now.
        publish_new(path).map_err(|e| err(format!("cannot create: {e}")))?;
        Self::load(path)
    }
}

#[async_trait]
impl MasterKeyProvider for LocalKeyring {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn check_value(&self, version: u32) -> Option<[u8; CHECK_LEN]> {
        self.read().masters.get(&version).map(|k| k.check_value())
    }

    fn current_version(&self) -> u32 {
        // 0 only after `destroy_all`.
        self.read().masters.keys().next_back().copied().unwrap_or(0)
    }

    fn versions(&self) -> Vec<u32> {
        self.read().masters.keys().copied().collect()
    }

    async fn refresh(&self) -> Result<(), MasterKeyError> {
        LocalKeyring::refresh(self)
    }

    async fn add_version(&self, version: u32) -> Result<(), MasterKeyError> {
        LocalKeyring::add_version(self, version)
    }

    async fn retire_version(&self, version: u32) -> Result<(), MasterKeyError> {
        LocalKeyring::retire_version(self, version)
    }

    async fn destroy_all(&self) -> Result<Vec<u32>, MasterKeyError> {
        LocalKeyring::destroy_all(self)
    }

    async fn wrap_kek(&self, kek: &Kek, aad: &[u8]) -> Result<(u32, Vec<u8>), MasterKeyError> {
        // A KEK must never be wrapped under a version another process has
        // retired, nor under one older than another process has added.
        self.refresh()?;
        let (version, master) = {
            let loaded = self.read();
            let (v, k) =
                loaded
                    .masters
                    .iter()
                    .next_back()
                    .ok_or_else(|| MasterKeyError::Keyring {
                        path: self.path.clone(),
                        message: "every master key was destroyed (decommissioned)".into(),
                    })?;
            (*v, k.clone())
        };
        let wrapped = master.wrap_kek_in(self.suite, kek, aad)?;
        Ok((version, wrapped.as_bytes().to_vec()))
    }

    async fn unwrap_kek(
        &self,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Kek, MasterKeyError> {
        if !self.read().masters.contains_key(&version) {
            // Perhaps added by another process since this one loaded it.
            self.refresh()?;
        }
        let master = self
            .read()
            .masters
            .get(&version)
            .cloned()
            .ok_or(MasterKeyError::UnknownVersion(version))?;
        let wrapped =
            Wrapped::<Kek>::from_bytes(wrapped).map_err(|_| MasterKeyError::UnwrapFailed)?;
        master
            .unwrap_kek_in(self.suite, &wrapped, aad)
            .map_err(|_| MasterKeyError::UnwrapFailed)
    }
}
