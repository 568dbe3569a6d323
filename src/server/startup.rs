//! Checking the deployment, with the key store open: a decommissioned key
//! store is refused before anything reads the keyring, then the master key
//! provider `[master]` names is opened through the startup guards of
//! `crate::deployment` (the key store, the keyring or KMS versions and the
//! object store must belong together). On any refusal the key store is
//! closed here. This file must never build a service nor serve.
//!
//! With `aws-kms`, a decommissioned key store that still holds KMS master
//! version records (a crash between the two steps of a decommission) has
//! them deleted before the refusal, without a KMS call.

use std::path::Path;
use std::sync::Arc;

use super::{ServeError, LOG_TARGET};
use crate::config::{Master, MasterProvider};
use crate::crypto::NamingKey;
use crate::deployment;
use crate::keys::keyring::MasterKeyProvider;
use crate::keys::kms::{KmsClient, KmsSettings};
use crate::keys::store::{KeyStore, DECOMMISSIONED_META};

/// Checks that the deployment `parts` describes may be served and opens its
/// master keys: the local keyring, or KMS reached through `kms` (`None`: a
/// client for `kms_region` with the standard AWS credential chain). Returns
/// the master key provider and the naming key.
///
/// # Errors
/// [`ServeError::Decommissioned`], or [`ServeError::Startup`] naming the
/// part that does not belong; the key store is closed first.
pub(super) async fn check_deployment(
    master: &Master,
    kms_region: Option<String>,
    kms: Option<KmsClient>,
    store: &Arc<dyn KeyStore>,
    parts: deployment::Parts<'_>,
) -> Result<(Arc<dyn MasterKeyProvider>, NamingKey), ServeError> {
    // Before anything else reads the keyring (a decommissioned data dir
    // has none, and one must never be made there).
    refuse_decommissioned(master.provider, store, parts.key_store_path).await?;
    open_master(master, kms_region, kms, store, parts).await
}

/// Refuses a key store that was decommissioned.
async fn refuse_decommissioned(
    provider: MasterProvider,
    store: &Arc<dyn KeyStore>,
    key_store_path: &Path,
) -> Result<(), ServeError> {
    if let Some(at) = store.meta_value(DECOMMISSIONED_META).await? {
        // A decommission that died between the key store and the KMS
        // version records: finish it (no KMS call).
        if provider == MasterProvider::AwsKms {
            match crate::keys::kms::delete_records(&**store).await {
                Ok(left) if !left.is_empty() => tracing::warn!(
                    target: LOG_TARGET,
                    master_versions = ?left,
                    "decommissioned key store still held KMS master version records: deleted"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, error = %e, "cannot delete the KMS master version records left in a decommissioned key store")
                }
            }
        }
        store.close().await;
        return Err(ServeError::Decommissioned {
            path: key_store_path.to_path_buf(),
            at_ms: at.parse().unwrap_or(0),
        });
    }
    Ok(())
}

/// Opens the master key provider of `master.provider` through the
/// deployment's startup guards.
async fn open_master(
    master: &Master,
    kms_region: Option<String>,
    kms: Option<KmsClient>,
    store: &Arc<dyn KeyStore>,
    parts: deployment::Parts<'_>,
) -> Result<(Arc<dyn MasterKeyProvider>, NamingKey), ServeError> {
    let opened = match master.provider {
        MasterProvider::Local => {
            deployment::open_local(parts)
                .await
                .map(|(keyring, naming, _id)| {
                    (Arc::new(keyring) as Arc<dyn MasterKeyProvider>, naming)
                })
        }
        MasterProvider::AwsKms => {
            let arn = master.kms_key_arn.clone().unwrap_or_default();
            let kms = match kms {
                Some(kms) => kms,
                None => {
                    KmsClient::connect(&KmsSettings {
                        region: kms_region.unwrap_or_default(),
                        endpoint: master.kms_endpoint.clone(),
                        credentials: None,
                    })
                    .await
                }
            };
            deployment::open_kms(parts, store.clone(), kms, &arn)
                .await
                .map(|(master, naming, _id)| {
                    (Arc::new(master) as Arc<dyn MasterKeyProvider>, naming)
                })
        }
    };
    match opened {
        Ok(master_keys) => Ok(master_keys),
        Err(e) => {
            // Refused: the key store opened for the check is closed again.
            store.close().await;
            Err(e.into())
        }
    }
}
