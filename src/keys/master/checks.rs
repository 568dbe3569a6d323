//! The master keys a key store belongs with, recorded in the store itself,
//! so that a process holding other master keys is refused at start instead
//! of answering wrong (NOT_FOUND for objects that exist, INTERNAL on every
//! read) or wrapping new keys under a master the other replicas lack.
//!
//! Recorded in the key store's settings table, never a key:
//!
//! - `master_provider`: `local` or `aws-kms`;
//! - `master_check:{version}` (zero-padded): when the version was first
//!   recorded (Unix ms) and, for a keyring's version, its key check value
//!   ([`crate::crypto::MasterKey::check_value`], 16 bytes, hex); a KMS
//!   version's key is named by its own record (`kms_master:`), so it has no
//!   check value here;
//! - `naming_check`: the naming key's check value.
//!
//! [`verify`] runs at every start, after the provider is opened and before
//! anything is served; it checks everything before it records anything,
//! and a value another process recorded first wins (the loser is refused).
//! A store from before these records adopts what the process holds, as
//! long as every KEK's master version is held. [`record_version`] and
//! [`forget_version`] follow rotation and retirement; [`Recorded::populated`]
//! is what a caller asks before it creates fresh master keys.

use std::collections::BTreeMap;

use super::{MasterKeyError, MasterKeyProvider, ProviderKind};
use crate::clock::unix_ms;
use crate::crypto::NamingKey;
use crate::keys::store::{KeyStore, StoreError};

/// The settings key of the master provider.
const PROVIDER_META: &str = "master_provider";
/// Prefix of the per-version records.
const VERSION_PREFIX: &str = "master_check:";
/// The settings key of the naming key's check value.
const NAMING_META: &str = "naming_check";
/// Prefix of the key schedule's records of when it first saw a version,
/// from before these records.
const SEEN_PREFIX: &str = "master_seen:";
/// Prefix of the KMS provider's version records (`kms_master:`), which name
/// the provider of a store from before these records.
const KMS_RECORD_PREFIX: &str = "kms_master:";

fn version_key(version: u32) -> String {
    format!("{VERSION_PREFIX}{version:010}")
}

/// One master version as the key store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCheck {
    /// When it was first recorded, Unix ms.
    pub recorded_ms: i64,
    /// The key's check value (hex), for a version held in a keyring.
    pub check: Option<String>,
}

impl VersionCheck {
    fn encode(&self) -> String {
        match &self.check {
            Some(check) => format!("{} {check}", self.recorded_ms),
            None => self.recorded_ms.to_string(),
        }
    }

    fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split(' ');
        let recorded_ms = parts.next()?.parse().ok()?;
        let check = parts.next().map(str::to_owned);
        parts
            .next()
            .is_none()
            .then_some(Self { recorded_ms, check })
    }

    /// "added 2026-11-20" (UTC), for messages.
    fn added(&self) -> String {
        let day = crate::clock::format_time(self.recorded_ms);
        format!("added {}", &day[..10])
    }
}

/// What the key store records of its master keys, with the KEK counts per
/// master version.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// The provider recorded, or (a store from before the record) the one
    /// its contents name: KMS version records, or KEKs without them.
    pub provider: Option<ProviderKind>,
    /// The KMS keys of the KMS provider's versions, by version.
    pub kms_arns: BTreeMap<u32, String>,
    /// The per-version records.
    pub versions: BTreeMap<u32, VersionCheck>,
    /// The naming key's check value (hex).
    pub naming: Option<String>,
    /// How many KEK versions each master version wraps.
    pub keks: BTreeMap<u32, u64>,
}

impl Recorded {
    /// Whether the store belongs to master keys already: anything recorded
    /// or any KEK. Fresh master keys must never be made beside such a
    /// store.
    pub fn populated(&self) -> bool {
        self.provider.is_some()
            || self.naming.is_some()
            || !self.versions.is_empty()
            || !self.kms_arns.is_empty()
            || !self.keks.is_empty()
    }

    /// The newest KMS key, for messages.
    fn kms_arn(&self) -> &str {
        self.kms_arns
            .values()
            .next_back()
            .map_or("", |a| a.as_str())
    }

    /// "master versions 1-3", for messages.
    fn versions_text(&self) -> String {
        let versions: Vec<u32> = (self.keks.keys())
            .chain(self.versions.keys())
            .chain(self.kms_arns.keys())
            .copied()
            .collect();
        match (versions.iter().min(), versions.iter().max()) {
            (Some(a), Some(b)) if a == b => format!("master version {a}"),
            (Some(a), Some(b)) => format!("master versions {a}-{b}"),
            _ => "no master version yet".into(),
        }
    }
}

/// Reads what `store` records of its master keys.
///
/// # Errors
/// Key-store failures.
pub async fn read(store: &dyn KeyStore) -> Result<Recorded, StoreError> {
    let mut recorded = Recorded::default();
    for (key, value) in store.meta_values(KMS_RECORD_PREFIX).await? {
        if let Some(v) = key
            .strip_prefix(KMS_RECORD_PREFIX)
            .and_then(|v| v.parse().ok())
        {
            let arn = value.split(' ').next().unwrap_or_default();
            recorded.kms_arns.insert(v, arn.to_owned());
        }
    }
    for (key, value) in store.meta_values(VERSION_PREFIX).await? {
        let version = key
            .strip_prefix(VERSION_PREFIX)
            .and_then(|v| v.parse().ok());
        match (version, VersionCheck::decode(&value)) {
            (Some(v), Some(check)) => {
                recorded.versions.insert(v, check);
            }
            _ => {
                return Err(StoreError::Backend(format!(
                    "master version record {key} is malformed: {value:?}"
                )))
            }
        }
    }
    recorded.naming = store.meta_value(NAMING_META).await?;
    recorded.keks = store.kek_counts_by_master().await?.into_iter().collect();
    recorded.provider = match store.meta_value(PROVIDER_META).await? {
        Some(name) => Some(ProviderKind::from_name(&name).ok_or_else(|| {
            StoreError::Backend(format!("unknown master provider {name:?} recorded"))
        })?),
        None if !recorded.kms_arns.is_empty() => Some(ProviderKind::AwsKms),
        None if !recorded.keks.is_empty() || !recorded.versions.is_empty() => {
            Some(ProviderKind::Local)
        }
        None => None,
    };
    Ok(recorded)
}

/// Before a provider is opened: refuses a store whose master keys are of
/// another kind than `configured`, naming both and what to do.
/// `keyring` names the keyring file.
///
/// # Errors
/// The refusal, one line.
pub fn check_provider(
    recorded: &Recorded,
    configured: ProviderKind,
    keyring: &str,
) -> Result<(), String> {
    match (recorded.provider, configured) {
        (Some(ProviderKind::AwsKms), ProviderKind::Local) => Err(format!(
            "the key store's master keys are in AWS KMS ({}, {}); this process is configured \
             with a local keyring ({keyring}): add the [master] section with provider = \
             \"aws-kms\" and kms_key_arn = \"{}\" as on the other replicas",
            recorded.kms_arn(),
            recorded.versions_text(),
            recorded.kms_arn(),
        )),
        (Some(ProviderKind::Local), ProviderKind::AwsKms) => Err(format!(
            "the key store's master keys are in a local keyring ({}); this process is \
             configured with AWS KMS: remove master.provider = \"aws-kms\" and put that \
             keyring at {keyring} (moving a deployment to KMS is not supported)",
            recorded.versions_text()
        )),
        _ => Ok(()),
    }
}

fn hex_check(check: [u8; crate::crypto::keys::CHECK_LEN]) -> String {
    hex::encode(check)
}

/// How a refusal about `provider`'s keys is reported: about the keyring
/// file, or about KMS's records.
fn refusal<'a>(
    provider: &'a dyn MasterKeyProvider,
    holder: &'a str,
) -> impl Fn(String) -> MasterKeyError + 'a {
    move |message| match provider.kind() {
        ProviderKind::Local => MasterKeyError::Keyring {
            path: holder.into(),
            message,
        },
        ProviderKind::AwsKms => MasterKeyError::KmsRecords(message),
    }
}

/// Whether `provider` and `naming` are the master keys `recorded`
/// describes (see [`verify`]); writes nothing, so that a backup's keyring
/// is checked against its key store as a start would check it.
///
/// # Errors
/// The refusal, as [`verify`] gives it.
pub fn compare(
    recorded: &Recorded,
    provider: &dyn MasterKeyProvider,
    naming: &NamingKey,
    holder: &str,
) -> Result<(), MasterKeyError> {
    let refuse = refusal(provider, holder);
    if let Err(message) = check_provider(recorded, provider.kind(), holder) {
        return Err(MasterKeyError::Mismatch(message));
    }
    let naming_check = hex_check(naming.check_value());
    if let Some(theirs) = &recorded.naming {
        if *theirs != naming_check {
            return Err(refuse(naming_refusal()));
        }
    }
    let held = provider.versions();
    let newest_held = held.last().copied().unwrap_or(0);
    for (&version, &keks) in &recorded.keks {
        if !held.contains(&version) {
            let added = recorded
                .versions
                .get(&version)
                .map(|v| format!(" ({})", v.added()))
                .unwrap_or_default();
            return Err(refuse(format!(
                "lacks master version {version}{added}, which {keks} KEK versions are \
                 under: restore a keyring backed up after that"
            )));
        }
    }
    for (&version, check) in &recorded.versions {
        if held.contains(&version) {
            let mine = provider.check_value(version).map(hex_check);
            if let (Some(mine), Some(theirs)) = (mine, &check.check) {
                if mine != *theirs {
                    return Err(refuse(version_refusal(version)));
                }
            }
        } else if version > newest_held {
            return Err(refuse(format!(
                "lacks master version {version} ({}), the key store's newest: restore a \
                 keyring backed up after that",
                check.added()
            )));
        }
    }
    Ok(())
}

/// With the provider open: refuses master keys that are not the ones the
/// store records ([`compare`]), then records what is missing (the provider, the naming
/// key's and each held version's check value). `holder` names where the
/// keys are in messages (the keyring's path, or the KMS key).
///
/// Refused, in one line naming the fix: a naming key with another check
/// value (its pseudonyms name no existing object); a master version that
/// KEKs are under, or above every version held, that the provider lacks (a
/// keyring restored from before a rotation); a held version with another
/// check value (another deployment's keyring).
///
/// # Errors
/// [`MasterKeyError::Keyring`] or [`MasterKeyError::KmsRecords`] carrying
/// the refusal; key-store failures.
pub async fn verify(
    store: &dyn KeyStore,
    provider: &dyn MasterKeyProvider,
    naming: &NamingKey,
    holder: &str,
) -> Result<(), MasterKeyError> {
    let recorded = read(store).await?;
    compare(&recorded, provider, naming, holder)?;
    let refuse = refusal(provider, holder);
    let naming_check = hex_check(naming.check_value());
    // Everything holds: record what is missing. Another process may have
    // recorded first; what holds is what it recorded.
    let provider_name = provider.kind().name();
    let held_provider = store
        .set_meta_if_absent(PROVIDER_META, provider_name)
        .await?;
    if held_provider != provider_name {
        let recorded = read(store).await?;
        let message = check_provider(&recorded, provider.kind(), holder)
            .err()
            .unwrap_or_else(|| format!("the key store records master provider {held_provider}"));
        return Err(MasterKeyError::Mismatch(message));
    }
    if store.set_meta_if_absent(NAMING_META, &naming_check).await? != naming_check {
        return Err(refuse(naming_refusal()));
    }
    for version in provider.versions() {
        if !recorded.versions.contains_key(&version) {
            record_version(store, provider, version)
                .await
                .map_err(|e| match e {
                    MasterKeyError::Mismatch(m) => refuse(m),
                    e => e,
                })?;
        }
    }
    Ok(())
}

fn naming_refusal() -> String {
    "holds another naming key than the key store records (its pseudonyms would name no \
     existing object): it is another deployment's, or was made afresh; put this \
     deployment's keyring in its place (copy it from a replica or restore it from a backup)"
        .into()
}

fn version_refusal(version: u32) -> String {
    format!(
        "holds another key as master version {version} than the key store records (check \
         value differs): it is another deployment's keyring; put this deployment's keyring \
         in its place"
    )
}

/// Records `version` (now, with its check value if the provider holds the
/// key) unless the store records it; refuses ([`MasterKeyError::Mismatch`])
/// if the store records another check value for it.
///
/// # Errors
/// The refusal; key-store failures.
pub async fn record_version(
    store: &dyn KeyStore,
    provider: &dyn MasterKeyProvider,
    version: u32,
) -> Result<(), MasterKeyError> {
    // A key schedule from before these records kept when it first saw
    // the version (`master_seen:`): its age goes on from then.
    let seen = store
        .meta_value(&format!("{SEEN_PREFIX}{version}"))
        .await?
        .and_then(|ms| ms.parse().ok());
    let mine = VersionCheck {
        recorded_ms: seen.unwrap_or_else(unix_ms),
        check: provider.check_value(version).map(hex_check),
    };
    let held = store
        .set_meta_if_absent(&version_key(version), &mine.encode())
        .await?;
    let theirs = VersionCheck::decode(&held).ok_or_else(|| {
        MasterKeyError::Mismatch(format!("master version record {version} is malformed"))
    })?;
    match (&mine.check, &theirs.check) {
        (Some(m), Some(t)) if m != t => Err(MasterKeyError::Mismatch(version_refusal(version))),
        _ => Ok(()),
    }
}

/// Forgets a retired version: its record and every secret it wrapped
/// ([`super::secrets::forget_version`]).
///
/// # Errors
/// Key-store failures.
pub async fn forget_version(store: &dyn KeyStore, version: u32) -> Result<(), StoreError> {
    store.delete_meta(&version_key(version)).await?;
    super::secrets::forget_version(store, version).await
}

/// When the newest master version was recorded (the keyring last gained a
/// key), Unix ms.
///
/// # Errors
/// Key-store failures.
pub async fn newest_version_recorded_ms(store: &dyn KeyStore) -> Result<Option<i64>, StoreError> {
    Ok(read(store)
        .await?
        .versions
        .values()
        .next_back()
        .map(|v| v.recorded_ms))
}

/// The settings key of when the last backup was taken.
const BACKUP_META: &str = "backup_taken";

/// When the master keys last changed and the last backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupState {
    /// When the newest master version was recorded (the keyring gained
    /// it), Unix ms.
    pub keys_changed_ms: Option<i64>,
    /// When the last `sealgate backup` was taken, Unix ms.
    pub backup_ms: Option<i64>,
}

impl BackupState {
    /// Whether no backup holds the newest master version (none was taken
    /// since it was added).
    pub fn behind(&self) -> bool {
        match (self.keys_changed_ms, self.backup_ms) {
            (Some(changed), Some(backup)) => backup < changed,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Records that a backup was taken at `at_ms`.
///
/// # Errors
/// Key-store failures.
pub async fn record_backup(store: &dyn KeyStore, at_ms: i64) -> Result<(), StoreError> {
    store.set_meta(BACKUP_META, &at_ms.to_string()).await
}

/// When the master keys last changed and the last backup was taken.
///
/// # Errors
/// Key-store failures.
pub async fn backup_state(store: &dyn KeyStore) -> Result<BackupState, StoreError> {
    Ok(BackupState {
        keys_changed_ms: newest_version_recorded_ms(store).await?,
        backup_ms: store
            .meta_value(BACKUP_META)
            .await?
            .and_then(|ms| ms.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::BackupState;

    #[test]
    fn a_backup_is_behind_master_keys_added_after_it() {
        let state = |changed, backup| BackupState {
            keys_changed_ms: changed,
            backup_ms: backup,
        };
        assert!(state(Some(10), None).behind(), "never backed up");
        assert!(state(Some(10), Some(9)).behind(), "before the change");
        assert!(!state(Some(10), Some(10)).behind());
        assert!(!state(Some(10), Some(11)).behind());
        assert!(!state(None, None).behind(), "no master keys yet");
    }
}
