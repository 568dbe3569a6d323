//! Master keys in AWS KMS (`master.provider = "aws-kms"`): KEKs are wrapped
//! by KMS Encrypt and unwrapped by KMS Decrypt under a KMS key in the China
//! partition. No master key material ever enters the process.
//!
//! **What a master version is.** A record in the key store's settings table,
//! `kms_master:{version}` (zero-padded), holding the ARN of the KMS key the
//! version uses and the deployment's naming key as that KMS key wrapped it.
//! A KEK row names its master version, so a KEK is unwrapped with KMS
//! Decrypt under exactly the key its version names (KeyId passed: a
//! ciphertext of any other key is refused by KMS). Rotation
//! ([`MasterKeyProvider::add_version`]) adds version N+1 under the ARN
//! configured now (`master.kms_key_arn`): an operator moves to a new KMS key
//! by changing the ARN and rotating; the rotation job then re-wraps every
//! KEK through KMS. Retirement removes a version's record once no KEK is
//! wrapped under it, after which the old KMS key wraps nothing of this
//! deployment. A rotation under the same ARN is legitimate too (the key
//! schedule does it): versions then only count re-wraps.
//!
//! **Binding.** Every Encrypt and Decrypt carries an encryption context:
//! `sealgate` = `kek` and `aad` = the hex of the AAD the hierarchy gives
//! (shard and KEK version), or `sealgate` = `naming-key` and the master
//! version. KMS authenticates it, so a wrapped KEK moved to another shard,
//! version or row does not unwrap.
//!
//! **Replicas.** The provider keeps nothing but a cache of the version
//! records: every replica sharing the key store sees the same versions. A
//! replica reads the records again before every wrap (so a new KEK never
//! goes under a version another replica retired, nor under an older one
//! than another added) and when asked for a version it does not know.
//!
//! **The naming key** (pseudonyms) is generated on the deployment's first
//! start, wrapped by KMS into master version 1's record, and re-wrapped
//! into each new version's record, so that it stays readable after an old
//! KMS key is retired and disabled. Startup unwraps it once (one Decrypt).
//!
//! **Decommission** ([`MasterKeyProvider::destroy_all`]) deletes every
//! version record (and with them every wrapped copy of the naming key),
//! after the key store deleted every KEK: nothing this deployment wrapped
//! under KMS is left to decrypt. The KMS key itself is left alone: it is
//! the customer's and may protect other data; docs/configuration.md ("AWS
//! KMS") says what the operator does in KMS (disable it, or schedule its
//! deletion).
//!
//! **Errors.** A KMS that cannot be reached, throttles or fails inside is
//! [`MasterKeyError::KmsUnavailable`] (retryable); a refusal retrying
//! cannot fix (a disabled, deleted or foreign key, no permission, a
//! ciphertext KMS does not accept) is [`MasterKeyError::KmsRefused`],
//! naming the operation, the key's ARN and KMS's error code.
//!
//! Every request that leaves the process is counted per attempt (SDK
//! retries included) in `sealgate_kms_requests_total{op,outcome}` and in
//! the client's own counters ([`KmsClient::sent`]).
//!
//! This file is the provider: the version records and what each operation
//! asks of KMS. The requests themselves, their counting and the translation
//! of KMS's errors are the client's ([`KmsClient`], in `client.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use zeroize::Zeroize;

use super::{MasterKeyError, MasterKeyProvider, ProviderKind};
use crate::crypto::{Kek, NamingKey};
use crate::keys::store::KeyStore;

mod client;

pub use client::{KmsClient, KmsOp, KmsSettings};

/// Prefix of the version records in the key store's settings table.
const RECORD_PREFIX: &str = "kms_master:";

/// The settings key of master `version`'s record (zero-padded so that the
/// records list in version order).
fn record_key(version: u32) -> String {
    format!("{RECORD_PREFIX}{version:010}")
}

/// Deletes every KMS master version record of `store` (decommission; also
/// at startup on a decommissioned store, should a crash have come between
/// the key store's decommission and this). Sends nothing to KMS. Returns
/// the versions deleted.
///
/// # Errors
/// Key-store failures.
pub async fn delete_records(store: &dyn KeyStore) -> Result<Vec<u32>, MasterKeyError> {
    let mut deleted = Vec::new();
    for (key, _) in store.meta_values(RECORD_PREFIX).await? {
        store.delete_meta(&key).await?;
        if let Some(v) = key.strip_prefix(RECORD_PREFIX).and_then(|v| v.parse().ok()) {
            deleted.push(v);
        }
    }
    Ok(deleted)
}

/// One master version's record: the KMS key it uses and the naming key
/// wrapped by that key.
#[derive(Debug, Clone)]
struct VersionRecord {
    arn: String,
    naming: Vec<u8>,
}

impl VersionRecord {
    fn encode(&self) -> String {
        format!("{} {}", self.arn, hex::encode(&self.naming))
    }

    fn decode(key: &str, value: &str) -> Result<(u32, Self), MasterKeyError> {
        let bad =
            || MasterKeyError::KmsRecords(format!("master version record {key} is malformed"));
        let version: u32 = key
            .strip_prefix(RECORD_PREFIX)
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .ok_or_else(bad)?;
        let (arn, naming) = value.split_once(' ').ok_or_else(bad)?;
        let naming = hex::decode(naming).map_err(|_| bad())?;
        if arn.is_empty() || naming.is_empty() {
            return Err(bad());
        }
        Ok((
            version,
            Self {
                arn: arn.into(),
                naming,
            },
        ))
    }
}

/// The encryption context of a KEK: its AAD (shard and version).
fn kek_context(aad: &[u8]) -> [(&'static str, String); 2] {
    [("sealgate", "kek".into()), ("aad", hex::encode(aad))]
}

/// The encryption context of the naming key in master `version`'s record.
fn naming_context(version: u32) -> [(&'static str, String); 2] {
    [
        ("sealgate", "naming-key".into()),
        ("master_version", version.to_string()),
    ]
}

/// Master keys in AWS KMS; see the module documentation.
pub struct KmsMasterKeys {
    kms: KmsClient,
    store: Arc<dyn KeyStore>,
    /// `master.kms_key_arn`: the key new versions use.
    configured_arn: String,
    /// The version records as last read: version to KMS key ARN.
    versions: RwLock<BTreeMap<u32, String>>,
}

impl std::fmt::Debug for KmsMasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsMasterKeys")
            .field("configured_arn", &self.configured_arn)
            .field("master_versions", &self.versions())
            .finish_non_exhaustive()
    }
}

impl KmsMasterKeys {
    /// Opens the master versions recorded in `store`, or on a new
    /// deployment (no record, and `store` holds no key) creates master
    /// version 1 under `configured_arn` with a new naming key; returns the
    /// provider and the naming key (one KMS Decrypt, or an Encrypt and a
    /// Decrypt on a new deployment). Replicas starting together on a new
    /// store end with one version 1 and one naming key.
    ///
    /// # Errors
    /// [`MasterKeyError::KmsRecords`] if `store` holds keys but no version
    /// record, or a malformed one; KMS and key-store failures.
    pub async fn open(
        store: Arc<dyn KeyStore>,
        kms: KmsClient,
        configured_arn: &str,
    ) -> Result<(Self, NamingKey), MasterKeyError> {
        let keys = Self {
            kms,
            store,
            configured_arn: configured_arn.into(),
            versions: RwLock::new(BTreeMap::new()),
        };
        let mut records = keys.reload().await?;
        if records.is_empty() {
            if keys.store.holds_keys().await? {
                return Err(MasterKeyError::KmsRecords(
                    "the key store holds keys but no KMS master version record: it was made \
                     with another master provider (master.provider = \"local\"?) or its records \
                     were removed"
                        .into(),
                ));
            }
            let naming = NamingKey::generate()?;
            let wrapped = keys
                .kms
                .encrypt(
                    configured_arn,
                    naming.expose_for_keyring(),
                    &naming_context(1),
                )
                .await?;
            let record = VersionRecord {
                arn: configured_arn.into(),
                naming: wrapped,
            };
            // Another replica may have made version 1 first: theirs holds.
            keys.store
                .set_meta_if_absent(&record_key(1), &record.encode())
                .await?;
            records = keys.reload().await?;
        }
        let (&newest, record) = records
            .iter()
            .next_back()
            .ok_or_else(|| MasterKeyError::KmsRecords("no master version record".into()))?;
        if record.arn != configured_arn {
            tracing::warn!(
                master_version = newest,
                key = %record.arn,
                configured = %configured_arn,
                "master.kms_key_arn is not the key of the newest master version; new KEKs are wrapped under the newest version's key until a master rotation (rotate-master) adds a version under the configured one"
            );
        }
        let naming = keys.naming_key(newest, record).await?;
        Ok((keys, naming))
    }

    /// Unwraps the naming key of `version`'s record.
    async fn naming_key(
        &self,
        version: u32,
        record: &VersionRecord,
    ) -> Result<NamingKey, MasterKeyError> {
        let mut plaintext = self
            .kms
            .decrypt(&record.arn, &record.naming, &naming_context(version))
            .await?;
        let naming = NamingKey::from_bytes(&plaintext).map_err(|_| MasterKeyError::KmsRefused {
            op: "Decrypt",
            arn: record.arn.clone(),
            code: "WrongLength".into(),
            message: "the naming key is not 32 bytes".into(),
        });
        plaintext.zeroize();
        naming
    }

    /// Reads every version record again, caches their ARNs and returns
    /// them.
    async fn reload(&self) -> Result<BTreeMap<u32, VersionRecord>, MasterKeyError> {
        let mut records = BTreeMap::new();
        for (key, value) in self.store.meta_values(RECORD_PREFIX).await? {
            let (version, record) = VersionRecord::decode(&key, &value)?;
            records.insert(version, record);
        }
        *self.versions.write().unwrap_or_else(|e| e.into_inner()) =
            records.iter().map(|(v, r)| (*v, r.arn.clone())).collect();
        Ok(records)
    }

    /// The KMS client (its request counts).
    pub fn client(&self) -> &KmsClient {
        &self.kms
    }

    fn arn_of(&self, version: u32) -> Option<String> {
        self.versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&version)
            .cloned()
    }
}

#[async_trait]
impl MasterKeyProvider for KmsMasterKeys {
    fn kind(&self) -> ProviderKind {
        ProviderKind::AwsKms
    }

    fn current_version(&self) -> u32 {
        // 0 only after `destroy_all`.
        self.versions().last().copied().unwrap_or(0)
    }

    fn versions(&self) -> Vec<u32> {
        self.versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    fn version_key(&self, version: u32) -> Option<String> {
        self.arn_of(version)
    }

    async fn refresh(&self) -> Result<(), MasterKeyError> {
        self.reload().await.map(|_| ())
    }

    async fn add_version(&self, version: u32) -> Result<(), MasterKeyError> {
        let records = self.reload().await?;
        if records.contains_key(&version) {
            return Ok(());
        }
        let Some((&newest, record)) = records.iter().next_back() else {
            return Err(MasterKeyError::KmsRecords(
                "every master version was destroyed (decommissioned)".into(),
            ));
        };
        if version <= newest {
            return Err(MasterKeyError::NotNewer { version, newest });
        }
        // The naming key moves into the new version's record, under the
        // configured key, so that it outlives the old key's retirement.
        let naming = self.naming_key(newest, record).await?;
        let wrapped = self
            .kms
            .encrypt(
                &self.configured_arn,
                naming.expose_for_keyring(),
                &naming_context(version),
            )
            .await?;
        drop(naming);
        let record = VersionRecord {
            arn: self.configured_arn.clone(),
            naming: wrapped,
        };
        self.store
            .set_meta_if_absent(&record_key(version), &record.encode())
            .await?;
        self.reload().await?;
        Ok(())
    }

    async fn retire_version(&self, version: u32) -> Result<(), MasterKeyError> {
        let records = self.reload().await?;
        if !records.contains_key(&version) {
            return Err(MasterKeyError::UnknownVersion(version));
        }
        if records.keys().next_back() == Some(&version) {
            return Err(MasterKeyError::NewestVersion(version));
        }
        self.store.delete_meta(&record_key(version)).await?;
        self.reload().await?;
        Ok(())
    }

    async fn destroy_all(&self) -> Result<Vec<u32>, MasterKeyError> {
        let destroyed = delete_records(&*self.store).await?;
        self.reload().await?;
        Ok(destroyed)
    }

    async fn wrap_kek(&self, kek: &Kek, aad: &[u8]) -> Result<(u32, Vec<u8>), MasterKeyError> {
        // Never under a version another replica retired, nor under one
        // older than another added.
        let records = self.reload().await?;
        let (&version, record) = records.iter().next_back().ok_or_else(|| {
            MasterKeyError::KmsRecords("every master version was destroyed (decommissioned)".into())
        })?;
        let wrapped = self
            .kms
            .encrypt(&record.arn, kek.expose_for_kms(), &kek_context(aad))
            .await?;
        Ok((version, wrapped))
    }

    async fn unwrap_kek(
        &self,
        version: u32,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<Kek, MasterKeyError> {
        let arn = match self.arn_of(version) {
            Some(arn) => arn,
            // Perhaps added by another replica since this one read them.
            None => {
                self.reload().await?;
                self.arn_of(version)
                    .ok_or(MasterKeyError::UnknownVersion(version))?
            }
        };
        let mut plaintext = self.kms.decrypt(&arn, wrapped, &kek_context(aad)).await?;
        let kek = Kek::unwrapped_by_kms(&plaintext).map_err(|_| MasterKeyError::KmsRefused {
            op: "Decrypt",
            arn: arn.clone(),
            code: "WrongLength".into(),
            message: "the KEK is not 32 bytes".into(),
        });
        plaintext.zeroize();
        kek
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_malformed_ones_are_refused() {
        let record = VersionRecord {
            arn: "arn:aws-cn:kms:cn-north-1:123456789012:key/k".into(),
            naming: vec![1, 2, 3],
        };
        let (v, back) = VersionRecord::decode(&record_key(7), &record.encode()).unwrap();
        assert_eq!(v, 7);
        assert_eq!((back.arn, back.naming), (record.arn, record.naming));
        assert_eq!(record_key(7), "kms_master:0000000007");
        for (key, value) in [
            ("kms_master:x", "arn 01"),
            ("kms_master:0000000000", "arn 01"),
            ("kms_master:0000000001", "arn"),
            ("kms_master:0000000001", "arn zz"),
            ("kms_master:0000000001", " 01"),
        ] {
            assert!(
                matches!(
                    VersionRecord::decode(key, value),
                    Err(MasterKeyError::KmsRecords(_))
                ),
                "{key} {value}"
            );
        }
    }
}
