//! The local master keyring: versioned master keys and the naming key in one
//! file, created on first start with mode 0600.
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
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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

impl LocalKeyring {
    /// Loads the keyring at `path`, creating it (mode 0600, atomically) with
    /// master version 1 and a fresh naming key if it does not exist. Returns
    /// the master keys and the naming key.
    ///
    /// # Errors
    /// [`MasterKeyError::Keyring`] if the file cannot be created or read, is
    /// malformed, or is readable by group or others.
    pub fn load_or_create(path: &Path) -> Result<(Self, NamingKey), MasterKeyError> {
        let err = |message: String| MasterKeyError::Keyring {
            path: path.to_owned(),
            message,
        };
        if !path.exists() {
            Self::create(path).map_err(|e| err(format!("cannot create: {e}")))?;
        }
        let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "permissions are {mode:o}; the keyring must be private to its owner (chmod 600)"
            )));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?,
        );
        let mut masters = BTreeMap::new();
        let mut naming = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bad = || err(format!("line {}: malformed entry", n + 1));
            let decode = |h: &str| -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
                hex::decode(h).map(Zeroizing::new).map_err(|_| bad())
            };
            match fields.as_slice() {
                ["naming", key] => {
                    naming = Some(NamingKey::from_bytes(&decode(key)?).map_err(|_| bad())?)
                }
                ["master", version, key] => {
                    let version: u32 = version.parse().map_err(|_| bad())?;
                    masters.insert(
                        version,
                        MasterKey::from_bytes(&decode(key)?).map_err(|_| bad())?,
                    );
                }
                _ => return Err(bad()),
            }
        }
        let naming = naming.ok_or_else(|| err("no naming key".into()))?;
        if masters.is_empty() {
            return Err(err("no master key".into()));
        }
        Ok((Self { masters }, naming))
    }

    fn create(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let naming = NamingKey::generate()?;
        let master = MasterKey::generate()?;
        let text = Zeroizing::new(format!(
            "# sealgate local keyring. Secret: back it up, never share it.\n\
             # Losing it makes every object unreadable.\n\
             naming {}\nmaster 1 {}\n",
            hex::encode(naming.expose_for_keyring()),
            hex::encode(master.expose_for_keyring()),
        ));
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
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

    #[test]
    fn created_private_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (a, naming_a) = LocalKeyring::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (_, naming_b) = LocalKeyring::load_or_create(&path).unwrap();
        assert_eq!(naming_a.pseudonym("u"), naming_b.pseudonym("u"));
        assert_eq!(a.current_version(), 1);
    }

    #[test]
    fn group_readable_keyring_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        LocalKeyring::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = LocalKeyring::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        let (k, naming) = LocalKeyring::load_or_create(&path).unwrap();
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
