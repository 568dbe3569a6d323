//! Master-key providers: where the master keys live, and the one thing they
//! do with them, wrapping and unwrapping KEKs under a numbered master
//! version.
//!
//! - [`keyring`]: [`keyring::LocalKeyring`], the master keys and the naming
//!   key in a file beside the data (`master.provider = "local"`).
//! - [`kms`]: [`kms::KmsMasterKeys`], master keys in AWS KMS
//!   (`master.provider = "aws-kms"`), their versions recorded in the key
//!   store's settings table.
//!
//! The hierarchy holds either as a [`MasterKeyProvider`]; [`MasterKeyError`]
//! is the error of both.
//!
//! A provider never sees a user key, a pseudonym or a user id: it wraps and
//! unwraps KEKs under the AAD the hierarchy gives it and knows nothing else
//! of them. It never caches an unwrapped KEK (the hierarchy's KEK cache
//! decides how long one lives) and never imports the hierarchy. Besides its
//! own keyring file or KMS, the only thing it may use is the key store
//! (where the KMS provider records its versions).

pub mod checks;
pub mod keyring;
pub mod kms;
pub mod secrets;

use std::path::PathBuf;

use async_trait::async_trait;

use crate::crypto::Kek;

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
    /// The master keys are not the ones the key store records (another
    /// provider, another deployment's keyring, a stale keyring); the
    /// message names what differs and what to do.
    #[error("{0}")]
    Mismatch(String),
    /// The key store, where KMS master versions are recorded, failed.
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

/// Which kind of provider holds a deployment's master keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// The local keyring file (`master.provider = "local"`).
    Local,
    /// AWS KMS (`master.provider = "aws-kms"`).
    AwsKms,
}

impl ProviderKind {
    /// The name the key store records (and the configuration uses).
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::AwsKms => "aws-kms",
        }
    }

    /// The kind a recorded name names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "local" => Some(Self::Local),
            "aws-kms" => Some(Self::AwsKms),
            _ => None,
        }
    }
}

/// Where master keys live: a local keyring or a KMS.
#[async_trait]
pub trait MasterKeyProvider: Send + Sync + 'static {
    /// Which kind of provider this is.
    fn kind(&self) -> ProviderKind;
    /// The check value of `version`'s key ([`crate::crypto::MasterKey::check_value`])
    /// when the key is held in this process (the keyring); `None` for a key
    /// held elsewhere (KMS, whose versions are records of the key store
    /// itself) or a version not held.
    fn check_value(&self, _version: u32) -> Option<[u8; crate::crypto::keys::CHECK_LEN]> {
        None
    }
    /// The version new KEKs are wrapped under.
    fn current_version(&self) -> u32;
    /// Every version held, ascending.
    fn versions(&self) -> Vec<u32>;
    /// Where `version`'s key lives when it has a name outside the process
    /// (the ARN of a KMS key); `None` for a key held in the keyring.
    fn version_key(&self, _version: u32) -> Option<String> {
        None
    }
    /// Reads the versions again where another process may have changed
    /// them (the keyring file, the KMS version records), so that what
    /// [`Self::versions`] says agrees with every replica's last change.
    async fn refresh(&self) -> Result<(), MasterKeyError>;
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
