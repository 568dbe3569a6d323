//! Keys for a lawful disclosure: an export under a legal case that holds
//! the user (the export service). A user whose erasure is scheduled is
//! restricted — nothing of theirs is served to the content role — but a
//! case may still need their data, so these calls skip the restriction
//! check. They keep every erasure check: an erased user has no keys, and
//! no call here hands one out once this process knows of the erasure.
//!
//! Nothing here is cached: each call reads the user's rows and unwraps
//! them (the KEK comes from its cache), so a disclosure never leaves a
//! restricted user's keys in the cache that content calls are served from.
//! Only the disclosure path of `content` may call these.

use std::sync::Arc;
use std::time::Instant;

use super::{ErasureWatch, KeyHierarchy};
use crate::crypto::{Pseudonym, UserKey};
use crate::keys::KeyError;

impl KeyHierarchy {
    /// Fails with [`KeyError::UserErased`] if the user is erased, as this
    /// process knows it or the key store records it; a scheduled erasure
    /// does not count.
    ///
    /// # Errors
    /// As described, [`KeyError::Decommissioned`], or store failures.
    pub async fn ensure_not_erased_for_disclosure(&self, p: &Pseudonym) -> Result<(), KeyError> {
        self.ensure_not_decommissioned()?;
        if self.recently_erased.contains_key(p) {
            return Err(KeyError::UserErased);
        }
        self.ensure_no_tombstone(p).await
    }

    /// Fails with [`KeyError::UserErased`] if the store holds the user's
    /// tombstone.
    pub(super) async fn ensure_no_tombstone(&self, p: &Pseudonym) -> Result<(), KeyError> {
        if self.store.tombstone(p).await?.is_some() {
            return Err(KeyError::UserErased);
        }
        Ok(())
    }

    /// A user-key version for a disclosure: read and unwrapped now, not
    /// cached, whether or not the user's erasure is scheduled.
    ///
    /// # Errors
    /// [`KeyError::UserErased`] for an erased user (also one erased while
    /// the rows were read); [`KeyError::MissingUserKeyVersion`] if that
    /// version does not exist; store or unwrap failures.
    pub async fn user_key_for_disclosure(
        &self,
        p: &Pseudonym,
        version: u32,
    ) -> Result<Arc<UserKey>, KeyError> {
        self.ensure_not_erased_for_disclosure(p).await?;
        // As a cache miss: a KEK rotation may destroy a row's KEK version
        // between the read and the unwrap.
        let mut attempts = 0;
        let keys = loop {
            attempts += 1;
            match self.unwrap_user_rows(p, Instant::now()).await {
                Err(KeyError::KekMissing { .. }) if attempts < 3 => {}
                other => break other?,
            }
        };
        if let Some(k) = keys.keys.get(&version) {
            return Ok(k.clone());
        }
        // An erasure deletes the rows and writes the tombstone together:
        // rows gone since the check mean an erasure, not a damaged object.
        self.ensure_not_erased_for_disclosure(p).await?;
        Err(KeyError::MissingUserKeyVersion(version))
    }

    /// A disclosure's watch on a user: as [`Self::watch`], but it fails
    /// only once the user is erased, not while their erasure is scheduled.
    pub async fn watch_for_disclosure(&self, p: &Pseudonym) -> ErasureWatch {
        let mut watch = self.watch(p).await;
        watch.disclosure = true;
        watch
    }
}
