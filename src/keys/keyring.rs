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
//! KEKs not yet re-wrapped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    /// Unwrapping failed: wrong key or corrupt wrapped KEK.
    #[error("KEK unwrap failed")]
    UnwrapFailed,
    /// Cryptographic failure while wrapping.
    #[error("KEK wrap failed: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
}

/// Where master keys live: a local keyring or a KMS.
#[async_trait]
pub trait MasterKeyProvider: Send + Sync + 'static {
    /// The version new KEKs are wrapped under.
    fn current_version(&self) -> u32;
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

/// The local keyring file.
pub struct LocalKeyring {
    masters: BTreeMap<u32, MasterKey>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("master_versions", &self.masters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
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
        Ok((Self { masters }, naming))
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
    let text = Zeroizing::new(format!(
        "# sealgate local keyring. Secret: back it up, never share it.\n\
         # Losing it makes every object unreadable.\n\
         naming {}\nmaster 1 {}\n",
        hex::encode(naming.expose_for_keyring()),
        hex::encode(master.expose_for_keyring()),
    ));
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let tmp = unique_sibling(path, "tmp");
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
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
        *self
            .masters
            .keys()
            .next_back()
            .expect("keyring has a master key")
    }

    async fn wrap_kek(&self, kek: &Kek, aad: &[u8]) -> Result<(u32, Vec<u8>), MasterKeyError> {
        let version = self.current_version();
        let wrapped = self.masters[&version].wrap_kek(kek, aad)?;
        Ok((version, wrapped.as_bytes().to_vec()))
    }

    async fn unwrap_kek(
        &self,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Kek, MasterKeyError> {
        let master = self
            .masters
            .get(&version)
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
}
