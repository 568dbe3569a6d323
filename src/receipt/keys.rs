//! Receipt-signing keys: one Ed25519 key per master key version, its
//! 32-byte seed a secret bound to that version
//! ([`crate::keys::master::secrets`], purpose `receipt_key:`), its id the
//! public key's id.
//!
//! - `receipt_key:{master version, 10 digits}` = `{key id} {hex wrapped seed}`;
//! - `receipt_public:{key id}` = hex public key, published before the key
//!   signs anything and kept forever so that every receipt ever signed can
//!   be verified.
//!
//! Retiring a master version deletes its wrapped seed; its public key
//! stays.

use std::sync::Arc;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

use super::{PublicKey, Receipt, PUBLIC_KEY_LEN};
use crate::error::Error;
use crate::keys::keyring::MasterKeyProvider;
use crate::keys::master::secrets::{MasterSecrets, RECEIPT_KEYS};
use crate::keys::store::{KeyStore, Settings, Tombstone};
use crate::keys::KeyError;

/// Settings-key prefix of the public keys, by key id.
pub const PUBLIC_PREFIX: &str = "receipt_public:";

/// The settings key of a public key.
pub fn public_meta(key_id: &str) -> String {
    format!("{PUBLIC_PREFIX}{key_id}")
}

/// An Ed25519 signing key (its key pair frees and cleanses its memory on
/// drop) and its public key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public.key_id)
    }
}

impl SigningKey {
    /// The key of a 32-byte seed.
    ///
    /// # Errors
    /// [`Error::Internal`] if the seed is refused (it is not 32 bytes).
    pub fn from_seed(seed: &[u8]) -> Result<Self, Error> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| Error::Internal(format!("receipt signing key: {e}")))?;
        let key: [u8; PUBLIC_KEY_LEN] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| Error::Internal("Ed25519 public key not 32 bytes".into()))?;
        Ok(Self {
            pair,
            public: PublicKey::new(key),
        })
    }

    /// The public key and its id.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `receipt` (whose key id is set to this key's): the receipt
    /// file, `encoding || signature`.
    ///
    /// # Errors
    /// [`Error::Internal`] if the receipt cannot be encoded.
    pub fn sign(&self, mut receipt: Receipt) -> Result<Vec<u8>, Error> {
        receipt.key_id.clone_from(&self.public.key_id);
        let mut file = receipt
            .encode()
            .map_err(|e| Error::Internal(format!("erasure receipt: {e}")))?;
        let signature = self.pair.sign(&file);
        file.extend_from_slice(signature.as_ref());
        Ok(file)
    }
}

/// Signs erasure receipts with the current master version's key.
pub struct ReceiptSigner {
    secrets: MasterSecrets,
    region: String,
    /// The key last used and its master version.
    current: tokio::sync::Mutex<Option<(u32, Arc<SigningKey>)>>,
}

impl ReceiptSigner {
    /// A signer for the gateway running in `region`.
    pub fn new(
        master: Arc<dyn MasterKeyProvider>,
        store: Arc<dyn KeyStore>,
        region: impl Into<String>,
    ) -> Self {
        Self {
            secrets: MasterSecrets::new(master, store, &RECEIPT_KEYS),
            region: region.into(),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The signed receipt file of an erasure, with the backup horizon
    /// `horizon_ms` (`None`: 0).
    ///
    /// # Errors
    /// Master-key and key-store failures; [`Error::Internal`] if the store
    /// has no deployment id.
    pub async fn sign(&self, t: &Tombstone, horizon_ms: Option<i64>) -> Result<Vec<u8>, Error> {
        let deployment_id = self.deployment_id().await?;
        let mut versions = t.destroyed_versions.clone();
        versions.sort_unstable();
        versions.dedup();
        let key = self.key().await?;
        key.sign(Receipt {
            deployment_id,
            region: self.region.clone(),
            pseudonym: *t.pseudonym.as_bytes(),
            erased_at_ms: t.erased_at_ms,
            destroyed_versions: versions,
            backup_horizon_ms: horizon_ms.unwrap_or(0).max(0),
            key_id: String::new(),
        })
    }

    async fn deployment_id(&self) -> Result<String, Error> {
        Ok(self.secrets.deployment_id().await?.to_string())
    }

    /// The signing key of the provider's current master version, made if
    /// there is none.
    ///
    /// # Errors
    /// Master-key and key-store failures.
    pub async fn key(&self) -> Result<Arc<SigningKey>, Error> {
        let version = self.secrets.current_version();
        let mut current = self.current.lock().await;
        if let Some((v, key)) = &*current {
            if *v == version {
                return Ok(key.clone());
            }
        }
        let secret = self
            .secrets
            .current(&|seed| {
                let key = SigningKey::from_seed(seed.expose_for_kms())
                    .map_err(|e| KeyError::Internal(e.to_string()))?;
                let id = key.public.key_id.clone();
                let public = (public_meta(&id), hex::encode(key.public.key));
                Ok((id, Some(public)))
            })
            .await?;
        let key = SigningKey::from_seed(secret.secret.expose_for_kms())?;
        if key.public.key_id != secret.id {
            return Err(Error::Internal(format!(
                "receipt signing key of master version {} is not key {}",
                secret.version, secret.id
            )));
        }
        let key = Arc::new(key);
        *current = Some((secret.version, key.clone()));
        Ok(key)
    }
}

/// Every receipt-signing public key ever made, by key id.
///
/// # Errors
/// Key-store failures; [`Error::Internal`] for a malformed row.
pub async fn public_keys(store: &dyn Settings) -> Result<Vec<PublicKey>, Error> {
    store
        .meta_values(PUBLIC_PREFIX)
        .await?
        .into_iter()
        .map(|(k, v)| {
            let id = k.strip_prefix(PUBLIC_PREFIX).unwrap_or(&k);
            let key =
                hex::decode(&v).map_err(|_| Error::Internal(format!("malformed setting {k}")))?;
            PublicKey::from_parts(id, &key)
                .map_err(|e| Error::Internal(format!("setting {k}: {e}")))
        })
        .collect()
}
