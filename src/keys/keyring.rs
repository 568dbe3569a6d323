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

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::crypto::{Kek, MasterKey, NamingKey, Wrapped};

/// Errors of master key providers.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The keyring file is unusable; the message says how to fix it.
    #[error("keyring {path}: {message}")]
    Keyring {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// There is no keyring file (a distinct error so that the caller can
    /// decide whether creating one is safe).
    #[error("keyring {0} is missing")]
    Missing(PathBuf),
    /// No such master key version.
    #[error("master key version {0} is not in the keyring")]
    UnknownVersion(u32),
    /// The newest master version wraps new KEKs: it cannot be retired.
    #[error("master key version {0} is the newest; it wraps new KEKs")]
    NewestVersion(u32),
    /// A version to add is not above the keyring's newest (a retired or
    /// skipped version is never made again).
    #[error("master key version {version} is not above the keyring's newest, {newest}")]
    NotNewer {
        /// The version asked for.
        version: u32,
        /// The keyring's newest.
        newest: u32,
    },
    /// Unwrapping failed: wrong key or corrupt wrapped KEK.
    #[error("KEK unwrap failed")]
    UnwrapFailed,
    /// Cryptographic failure while wrapping.
    #[error("KEK wrap failed: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// KMS could not be reached or could not answer now (timeouts,
    /// throttling, its internal errors): retryable.
    #[error("KMS unavailable: {0}")]
    KmsUnavailable(String),
    /// KMS refused a request retrying cannot fix: a disabled, deleted or
    /// foreign key, no permission, a ciphertext it does not accept.
    #[error("KMS refused {op} with key {arn}: {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    KmsRefused {
        /// The operation (`Encrypt`, `Decrypt`).
        op: &'static str,
        /// The KMS key's ARN.
        arn: String,
        /// KMS's error code, such as `DisabledException`.
        code: String,
        /// KMS's message.
        message: String,
    },
    /// The KMS master version records in the key store are missing or
    /// malformed.
    #[error("KMS master versions: {0}")]
    KmsRecords(String),
    /// The key store, where KMS master versions are recorded, failed.
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

/// Where master keys live: a local keyring or a KMS.
#[async_trait]
pub trait MasterKeyProvider: Send + Sync + 'static {
    /// The version new KEKs are wrapped under.
    fn current_version(&self) -> u32;
    /// Every version held, ascending.
    fn versions(&self) -> Vec<u32>;
    /// Where `version`'s key lives when it has a name outside the process
    /// (the ARN of a KMS key); `None` for a key held in the keyring.
    fn version_key(&self, _version: u32) -> Option<String> {
        None
    }
    /// Makes `version` exist (a new key, above every existing version)
    /// unless it does; from then on it is the current version. Idempotent.
    async fn add_version(&self, version: u32) -> Result<(), MasterKeyError>;
    /// Removes `version`, which must not be the newest. The caller checks
    /// that nothing is wrapped under it.
    async fn retire_version(&self, version: u32) -> Result<(), MasterKeyError>;
    /// Destroys every master version (decommission): nothing it wrapped
    /// can be unwrapped again. Returns the versions destroyed.
    async fn destroy_all(&self) -> Result<Vec<u32>, MasterKeyError>;
    /// Wraps a KEK under the current master version.
    async fn wrap_kek(&self, kek: &Kek, aad: &[u8]) -> Result<(u32, Vec<u8>), MasterKeyError>;
    /// Unwraps a KEK wrapped under `version`.
    async fn unwrap_kek(
        &self,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Kek, MasterKeyError>;
}

/// Master keys by version.
type Masters = BTreeMap<u32, Arc<MasterKey>>;

/// What was loaded, and from which file state.
struct Loaded {
    masters: Masters,
    /// (inode, modification time in ns, length) of the file read.
    stamp: (u64, i128, u64),
}

/// The local keyring file.
pub struct LocalKeyring {
    path: PathBuf,
    loaded: RwLock<Loaded>,
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
            },
            naming,
        ))
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
                let len = file
                    .metadata()
                    .map_err(|e| err(format!("cannot read: {e}")))?
                    .len();
                let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
                file.write_all(&zeros)
                    .and_then(|()| file.sync_all())
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

/// The directory of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A unique name next to `path`: `{file name}.{random id}.{suffix}`.
fn unique_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "keyring".into(), |n| n.to_string_lossy().into_owned());
    parent_dir(path).join(format!("{name}.{}.{suffix}", crate::names::random_id()))
}

/// The user this process's files are owned by: the owner of a file it
/// creates (and removes at once) next to `path`. That is the effective uid, read
/// without unsafe code; on a file system that maps owners it is the owner
/// every file of this process gets, which is what the keyring must have.
fn effective_uid(path: &Path) -> std::io::Result<u32> {
    let probe = unique_sibling(path, "tmp");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    let uid = file.metadata().map(|m| m.uid());
    drop(file);
    let removed = std::fs::remove_file(&probe);
    let uid = uid?;
    removed?;
    Ok(uid)
}

/// Writes a new keyring to a temporary file and publishes it at `path`
/// unless something is there already (then leaves that alone).
fn publish_new(path: &Path) -> std::io::Result<()> {
    let naming = NamingKey::generate().map_err(std::io::Error::other)?;
    let master = MasterKey::generate().map_err(std::io::Error::other)?;
    let text = keyring_text(&naming, &BTreeMap::from([(1, Arc::new(master))]));
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let tmp = unique_sibling(path, "tmp");
    let written = (|| {
        write_private(&tmp, &text)?;
        // link(2) fails if `path` exists: a create-only publish.
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let removed = std::fs::remove_file(&tmp);
    written?;
    removed?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `tmp` (mode 0600, never over an existing file), writes `text`
/// and fsyncs it: the first step of publishing or replacing a keyring.
fn write_private(tmp: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The keyring text of `naming` and `masters`.
fn keyring_text(naming: &NamingKey, masters: &Masters) -> Zeroizing<String> {
    let mut text = Zeroizing::new(format!(
        "# sealgate local keyring. Secret: back it up, never share it.\n\
         # Losing it makes every object unreadable.\n\
         naming {}\n",
        hex::encode(naming.expose_for_keyring()),
    ));
    for (version, key) in masters {
        text.push_str(&format!(
            "master {version} {}\n",
            hex::encode(key.expose_for_keyring())
        ));
    }
    text
}

/// Replaces the keyring at `path` by one of `naming` and `masters`: a
/// temporary file (0600) written and fsynced, renamed over `path`, the
/// directory fsynced.
fn replace(path: &Path, naming: &NamingKey, masters: &Masters) -> std::io::Result<()> {
    let text = keyring_text(naming, masters);
    let tmp = unique_sibling(path, "tmp");
    let written = (|| {
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(parent_dir(path))?.sync_all()
}

/// Parses the keyring text; every entry may appear once. Public only for
/// the fuzz target of the keyring parser (`fuzz/`).
#[doc(hidden)]
pub fn parse(text: &str) -> Result<(BTreeMap<u32, MasterKey>, NamingKey), String> {
    let mut masters = BTreeMap::new();
    let mut master_lines = BTreeMap::new();
    let mut naming: Option<(NamingKey, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("line {n}: malformed entry");
        let decode = |h: &str| -> Result<Zeroizing<Vec<u8>>, String> {
            hex::decode(h).map(Zeroizing::new).map_err(|_| bad())
        };
        match fields.as_slice() {
            ["naming", key] => {
                if let Some((_, first)) = &naming {
                    return Err(format!(
                        "line {n}: a second naming key (the first is on line {first}); \
                         a keyring holds one"
                    ));
                }
                naming = Some((NamingKey::from_bytes(&decode(key)?).map_err(|_| bad())?, n));
            }
            ["master", version, key] => {
                let version: u32 = version.parse().map_err(|_| bad())?;
                if let Some(first) = master_lines.insert(version, n) {
                    return Err(format!(
                        "line {n}: master key version {version} again (first on line {first}); \
                         each version appears once"
                    ));
                }
                masters.insert(
                    version,
                    MasterKey::from_bytes(&decode(key)?).map_err(|_| bad())?,
                );
            }
            _ => return Err(bad()),
        }
    }
    let (naming, _) = naming.ok_or_else(|| "no naming key".to_string())?;
    if masters.is_empty() {
        return Err("no master key".into());
    }
    Ok((masters, naming))
}

#[async_trait]
impl MasterKeyProvider for LocalKeyring {
    fn current_version(&self) -> u32 {
        // 0 only after `destroy_all`.
        self.read().masters.keys().next_back().copied().unwrap_or(0)
    }

    fn versions(&self) -> Vec<u32> {
        self.read().masters.keys().copied().collect()
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
        let wrapped = master.wrap_kek(kek, aad)?;
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
            .unwrap_kek(&wrapped, aad)
            .map_err(|_| MasterKeyError::UnwrapFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyring text with one naming key and master version 1, plus
    /// `extra` lines.
    fn keyring_text(extra: &str) -> String {
        format!(
            "naming {}\nmaster 1 {}\n{extra}",
            "11".repeat(32),
            "22".repeat(32)
        )
    }

    fn write_private(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn created_private_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (a, naming_a) = LocalKeyring::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (_, naming_b) = LocalKeyring::load(&path).unwrap();
        assert_eq!(naming_a.pseudonym("u"), naming_b.pseudonym("u"));
        assert_eq!(a.current_version(), 1);
        // Nothing but the keyring is left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keyring"]);
    }

    #[test]
    fn load_never_creates_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let err = LocalKeyring::load(&path).unwrap_err();
        assert!(
            matches!(&err, MasterKeyError::Missing(p) if *p == path),
            "{err}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn create_keeps_an_existing_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (_, first) = LocalKeyring::create(&path).unwrap();
        let text = std::fs::read(&path).unwrap();
        let (_, second) = LocalKeyring::create(&path).unwrap();
        assert_eq!(first.pseudonym("u"), second.pseudonym("u"));
        assert_eq!(std::fs::read(&path).unwrap(), text);
    }

    #[test]
    fn group_readable_keyring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        LocalKeyring::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = LocalKeyring::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn symlinked_keyring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real-keyring");
        LocalKeyring::create(&real).unwrap();
        let path = dir.path().join("keyring");
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let err = LocalKeyring::load(&path).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // Creating does not replace the link either.
        assert!(LocalKeyring::create(&path).is_err());
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_directory_or_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&path)
            .unwrap();
        let err = LocalKeyring::load(&path).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // A FIFO opens without blocking and is refused.
        let fifo = dir.path().join("fifo-keyring");
        let made = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = LocalKeyring::load(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn duplicate_entries_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (format!("naming {}\n", "33".repeat(32)), "line 3", "naming"),
            (
                format!("master 1 {}\n", "44".repeat(32)),
                "line 3",
                "version 1",
            ),
            (
                format!("# rotated\nmaster 2 {0}\nmaster 2 {0}\n", "55".repeat(32)),
                "line 5",
                "version 2",
            ),
        ];
        for (i, (extra, line, what)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("keyring-{i}"));
            write_private(&path, &keyring_text(extra));
            let err = LocalKeyring::load(&path).unwrap_err().to_string();
            assert!(err.contains(line) && err.contains(what), "case {i}: {err}");
        }
        // The same entries once each are fine.
        let path = dir.path().join("keyring-ok");
        write_private(
            &path,
            &keyring_text(&format!("master 2 {}\n", "55".repeat(32))),
        );
        let (k, _) = LocalKeyring::load(&path).unwrap();
        assert_eq!(k.current_version(), 2);
    }

    #[test]
    fn owner_is_the_user_of_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let mine = std::fs::metadata(dir.path()).unwrap().uid();
        assert_eq!(effective_uid(&path).unwrap(), mine);
        // The probe is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn racing_creators_end_with_one_keyring() {
        const THREADS: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("keyring");
        let barrier = std::sync::Barrier::new(THREADS);
        let loaded: Vec<(u32, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let (k, naming) = LocalKeyring::create(&path).unwrap();
                        (k.current_version(), naming.pseudonym("u").to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(loaded.iter().all(|l| *l == loaded[0]), "{loaded:?}");
        let (_, naming) = LocalKeyring::load(&path).unwrap();
        assert_eq!(naming.pseudonym("u").to_string(), loaded[0].1);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keyring"], "one keyring, no temporary file");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (k, naming) = LocalKeyring::create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let master_hex = text
            .lines()
            .find(|l| l.starts_with("master"))
            .unwrap()
            .split(' ')
            .nth(2)
            .unwrap();
        assert!(!format!("{k:?}").contains(master_hex));
        let naming_hex = text
            .lines()
            .find(|l| l.starts_with("naming"))
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap();
        assert!(!format!("{naming:?}").contains(naming_hex));
    }

    #[tokio::test]
    async fn versions_are_added_and_retired_in_place_keeping_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (k, naming) = LocalKeyring::create(&path).unwrap();
        let kek = Kek::generate().unwrap();
        let (v1, wrapped1) = k.wrap_kek(&kek, b"aad").await.unwrap();
        assert_eq!(v1, 1);

        k.add_version(2).unwrap();
        // Idempotent, for any version held.
        k.add_version(2).unwrap();
        k.add_version(1).unwrap();
        assert_eq!(k.versions(), [1, 2]);
        let (v2, _) = k.wrap_kek(&kek, b"aad").await.unwrap();
        assert_eq!(v2, 2, "new KEKs go under the new version");

        // Another process's view picks the change up when it needs it.
        let (other, other_naming) = LocalKeyring::load(&path).unwrap();
        assert_eq!(other_naming.pseudonym("u"), naming.pseudonym("u"));
        other.add_version(3).unwrap();
        let (v3, wrapped3) = k.wrap_kek(&kek, b"aad").await.unwrap();
        assert_eq!(v3, 3, "a version added elsewhere is seen before wrapping");
        other.unwrap_kek(3, &wrapped3, b"aad").await.unwrap();

        assert!(matches!(
            k.retire_version(3),
            Err(MasterKeyError::NewestVersion(3))
        ));
        assert!(matches!(
            k.retire_version(7),
            Err(MasterKeyError::UnknownVersion(7))
        ));
        k.retire_version(1).unwrap();
        assert_eq!(k.versions(), [2, 3]);
        assert!(matches!(
            k.unwrap_kek(1, &wrapped1, b"aad").await,
            Err(MasterKeyError::UnknownVersion(1))
        ));
        assert!(matches!(
            k.add_version(1),
            Err(MasterKeyError::NotNewer {
                version: 1,
                newest: 3
            })
        ));

        // The file: private, loadable, same naming key, no temporary files.
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (reloaded, naming_again) = LocalKeyring::load(&path).unwrap();
        assert_eq!(reloaded.versions(), [2, 3]);
        assert_eq!(naming_again.pseudonym("u"), naming.pseudonym("u"));
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["keyring", "keyring.lock"]);
    }
}
