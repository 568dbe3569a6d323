//! Secrets bound to master versions: for each purpose (receipt signing,
//! read tokens), one random 32-byte secret per master version, wrapped by
//! that version like a KEK ([`MasterKeyProvider::wrap_kek`]) under the AAD
//! `label || id`, and kept in the key store's settings table as
//! `{prefix}{master version, 10 digits}` = `{id} {hex wrapped secret}`.
//!
//! A purpose uses the secret of the provider's current master version and
//! makes it on first use; replicas racing agree on one (the row is set
//! only if absent, and the loser takes the winner's). A companion setting
//! (a receipt key's public key) is published before the secret can be
//! used and withdrawn by a loser. A new master version thus gets new
//! secrets; retiring a master version deletes the secrets it wrapped
//! ([`forget_version`], through [`super::checks::forget_version`]), and
//! they could not be unwrapped anyway once the version is gone.

use std::sync::Arc;

use super::{MasterKeyError, MasterKeyProvider};
use crate::crypto::Kek;
use crate::keys::error::KeyError;
use crate::keys::store::{KeyStore, Settings, StoreError};

/// What a secret is for: where its rows live and what its wrap binds.
#[derive(Debug)]
pub struct Purpose {
    /// Settings-key prefix of its rows (`receipt_key:`).
    pub prefix: &'static str,
    /// The AAD's label, ending in a NUL (`sealgate/v1/receipt-key\0`).
    pub label: &'static [u8],
}

/// Erasure-receipt signing keys (the secret is an Ed25519 seed).
pub const RECEIPT_KEYS: Purpose = Purpose {
    prefix: "receipt_key:",
    label: b"sealgate/v1/receipt-key\0",
};

/// Read-token keys (the secret is an AES-256-GCM-SIV key).
pub const READ_TOKEN_KEYS: Purpose = Purpose {
    prefix: "read_token_key:",
    label: b"sealgate/v1/read-token-key\0",
};

/// Every purpose: what retiring a master version forgets.
const PURPOSES: [&Purpose; 2] = [&RECEIPT_KEYS, &READ_TOKEN_KEYS];

impl Purpose {
    /// The settings key of master `version`'s secret.
    pub fn row(&self, version: u32) -> String {
        format!("{}{version:010}", self.prefix)
    }

    fn aad(&self, id: &str) -> Vec<u8> {
        let mut aad = self.label.to_vec();
        aad.extend_from_slice(id.as_bytes());
        aad
    }
}

/// A secret and what names it.
pub struct MasterSecret {
    /// The master version that wraps it.
    pub version: u32,
    /// Its id (the purpose's own name for it).
    pub id: String,
    /// The secret (zeroized on drop).
    pub secret: Kek,
}

/// How a fresh secret is named and announced: its id, and a setting to
/// publish before it can be used (withdrawn if another process's secret
/// wins).
pub type Naming<'a> =
    &'a (dyn Fn(&Kek) -> Result<(String, Option<(String, String)>), KeyError> + Send + Sync);

/// The secrets of one purpose.
pub struct MasterSecrets {
    master: Arc<dyn MasterKeyProvider>,
    store: Arc<dyn KeyStore>,
    purpose: &'static Purpose,
    /// The deployment id, once read.
    deployment: std::sync::OnceLock<String>,
}

fn master_error(e: MasterKeyError) -> KeyError {
    KeyError::from(e)
}

impl MasterSecrets {
    /// The secrets of `purpose` under `master`, kept in `store`.
    pub fn new(
        master: Arc<dyn MasterKeyProvider>,
        store: Arc<dyn KeyStore>,
        purpose: &'static Purpose,
    ) -> Self {
        Self {
            master,
            store,
            purpose,
            deployment: std::sync::OnceLock::new(),
        }
    }

    /// The deployment's id (the key store's), which what the secrets sign
    /// or seal binds; read once, it never changes.
    ///
    /// # Errors
    /// Key-store failures; [`KeyError::Internal`] if the store has none.
    pub async fn deployment_id(&self) -> Result<&str, KeyError> {
        if let Some(id) = self.deployment.get() {
            return Ok(id);
        }
        let id = self
            .store
            .store_id()
            .await?
            .ok_or_else(|| KeyError::Internal("the key store has no deployment id".into()))?;
        Ok(self.deployment.get_or_init(|| id))
    }

    /// The provider's current master version.
    pub fn current_version(&self) -> u32 {
        self.master.current_version()
    }

    /// Whether the provider still holds master `version`.
    pub fn holds_version(&self, version: u32) -> bool {
        self.master.versions().contains(&version)
    }

    /// The secret of master `version`; `None` if it has none (never made,
    /// or forgotten with its retired version).
    ///
    /// # Errors
    /// Master-key and key-store failures; [`KeyError::Internal`] for a
    /// malformed row.
    pub async fn get(&self, version: u32) -> Result<Option<MasterSecret>, KeyError> {
        match self.store.meta_value(&self.purpose.row(version)).await? {
            Some(row) => self.open(version, &row).await.map(Some),
            None => Ok(None),
        }
    }

    /// The secret of the current master version, made (named by `naming`)
    /// if there is none, or taken from the process that made it first.
    ///
    /// # Errors
    /// As [`MasterSecrets::get`], and those of `naming`.
    pub async fn current(&self, naming: Naming<'_>) -> Result<MasterSecret, KeyError> {
        let version = self.master.current_version();
        if let Some(secret) = self.get(version).await? {
            return Ok(secret);
        }
        self.create(naming).await
    }

    async fn open(&self, version: u32, row: &str) -> Result<MasterSecret, KeyError> {
        let corrupt =
            || KeyError::Internal(format!("malformed setting {}", self.purpose.row(version)));
        let (id, wrapped) = row.split_once(' ').ok_or_else(corrupt)?;
        let wrapped = hex::decode(wrapped).map_err(|_| corrupt())?;
        let secret = self
            .master
            .unwrap_kek(version, &wrapped, &self.purpose.aad(id))
            .await
            .map_err(master_error)?;
        Ok(MasterSecret {
            version,
            id: id.to_string(),
            secret,
        })
    }

    async fn create(&self, naming: Naming<'_>) -> Result<MasterSecret, KeyError> {
        let secret = Kek::generate().map_err(|e| KeyError::Internal(e.to_string()))?;
        let (id, publish) = naming(&secret)?;
        let (version, wrapped) = self
            .master
            .wrap_kek(&secret, &self.purpose.aad(&id))
            .await
            .map_err(master_error)?;
        // Published before the secret can be used.
        if let Some((key, value)) = &publish {
            self.store.set_meta_if_absent(key, value).await?;
        }
        let ours = format!("{id} {}", hex::encode(wrapped));
        let held = self
            .store
            .set_meta_if_absent(&self.purpose.row(version), &ours)
            .await?;
        if held == ours {
            tracing::info!(
                target: "sealgate::audit",
                master_version = version,
                key_id = %id,
                purpose = self.purpose.prefix.trim_end_matches(':'),
                "new secret under the master key"
            );
            return Ok(MasterSecret {
                version,
                id,
                secret,
            });
        }
        // Another process made this version's secret first: use it, and
        // withdraw what was published for ours.
        drop(secret);
        let theirs = self.open(version, &held).await?;
        if let Some((key, _)) = publish {
            self.store.delete_meta(&key).await?;
        }
        Ok(theirs)
    }
}

/// Deletes every secret master `version` wrapped, of every purpose.
///
/// # Errors
/// Key-store failures.
pub async fn forget_version(store: &dyn Settings, version: u32) -> Result<(), StoreError> {
    for purpose in PURPOSES {
        store.delete_meta(&purpose.row(version)).await?;
    }
    Ok(())
}
