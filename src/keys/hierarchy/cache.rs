//! The caches of unwrapped keys: per user, every key version unwrapped
//! (about a minute), and per `(shard, version)`, KEKs (hours). A miss reads
//! the store and unwraps; concurrent misses of one key are coalesced by
//! moka's `try_get_with` into one unwrap. The lifetimes are
//! `cache.ttl_seconds` (users) and `cache.kek_ttl_seconds` (KEKs). A user's
//! rows are read again when a KEK rotation destroyed a row's KEK version
//! between the read and the unwrap.
//!
//! What is cached is never the last word on erasure: a user's entry is
//! checked against the erasures this process knows of on every hit
//! (`watch.rs` drops and remembers them), and loading reads the tombstone
//! first. Nothing here writes to the key store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::KeyHierarchy;
use crate::crypto::keys::{kek_aad, user_key_aad};
use crate::crypto::{Kek, Pseudonym, UserKey, Wrapped};
use crate::keys::store::UserKeyState;
use crate::keys::KeyError;

/// Cache sizes and lifetimes.
#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Lifetime of unwrapped user keys.
    pub user_ttl: Duration,
    /// Lifetime of unwrapped KEKs.
    pub kek_ttl: Duration,
    /// Bound on cached users.
    pub max_users: u64,
}

/// The unwrapped key versions of one user.
pub(super) struct UserKeys {
    pub(super) keys: BTreeMap<u32, Arc<UserKey>>,
    pub(super) active: Option<u32>,
    /// When the store was asked for the tombstone before these were loaded.
    pub(super) asked: Instant,
}

/// The unwrapped key versions of one user as a cache lookup found them
/// ([`KeyHierarchy::watch_with_keys`]).
pub struct UserKeyRing(pub(super) Arc<UserKeys>);

impl UserKeyRing {
    /// Version `version`, if the lookup found it; else ask
    /// [`KeyHierarchy::user_key`], which looks at the store again (the
    /// cache may predate a rotation).
    pub fn version(&self, version: u32) -> Option<Arc<UserKey>> {
        self.0.keys.get(&version).cloned()
    }
}

impl KeyHierarchy {
    pub(super) async fn user_keys(&self, p: &Pseudonym) -> Result<Arc<UserKeys>, KeyError> {
        self.ensure_not_decommissioned()?;
        let mut miss = false;
        let keys = self
            .users
            .try_get_with(*p, async {
                miss = true;
                self.load_user_keys(p).await
            })
            .await
            .map_err(|e: Arc<KeyError>| (*e).clone());
        crate::metrics::get().key_cache(crate::metrics::CacheLevel::User, !miss);
        let keys = keys?;
        if self.recently_erased.contains_key(p) {
            self.users.invalidate(p).await;
            return Err(KeyError::UserErased);
        }
        Ok(keys)
    }

    /// Loads and unwraps every version of a user's key. Concurrent misses of
    /// the same user are coalesced by the cache into one call of this.
    async fn load_user_keys(&self, p: &Pseudonym) -> Result<Arc<UserKeys>, KeyError> {
        // A KEK rotation may re-wrap a row and destroy its old KEK version
        // between reading the row and unwrapping it: read again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.load_user_keys_once(p).await {
                Err(KeyError::KekMissing { .. }) if attempts < 3 => {}
                other => return other,
            }
        }
    }

    async fn load_user_keys_once(&self, p: &Pseudonym) -> Result<Arc<UserKeys>, KeyError> {
        let asked = Instant::now();
        self.ensure_unrestricted(p).await?;
        self.unwrap_user_rows(p, asked).await
    }

    /// Reads a user's key rows and unwraps each, with no erasure check of
    /// its own: the caller checked first ([`Self::load_user_keys_once`],
    /// or `disclosure.rs`).
    pub(super) async fn unwrap_user_rows(
        &self,
        p: &Pseudonym,
        asked: Instant,
    ) -> Result<Arc<UserKeys>, KeyError> {
        let records = self.store.user_keys(p).await?;
        let mut keys = BTreeMap::new();
        let mut active = None;
        for r in records {
            let kek = self.kek(r.shard, r.kek_version).await?;
            let wrapped = Wrapped::<UserKey>::from_bytes(&r.wrapped)?;
            let key = kek
                .unwrap_user_key_in(
                    self.key_suite(),
                    &wrapped,
                    &user_key_aad(p, r.version, r.shard, r.kek_version),
                )
                .map_err(|_| {
                    KeyError::Unwrap(format!(
                        "user key version {} of shard {}",
                        r.version, r.shard
                    ))
                })?;
            crate::metrics::get().unwrapped(crate::metrics::UnwrapLevel::Kek);
            if r.state == UserKeyState::Active {
                active = Some(r.version);
            }
            keys.insert(r.version, Arc::new(key));
        }
        Ok(Arc::new(UserKeys {
            keys,
            active,
            asked,
        }))
    }

    pub(super) async fn kek(&self, shard: u32, version: u32) -> Result<Arc<Kek>, KeyError> {
        let mut miss = false;
        let kek = self
            .keks
            .try_get_with((shard, version), async {
                miss = true;
                let record = self
                    .store
                    .kek(shard, version)
                    .await?
                    .ok_or(KeyError::KekMissing { shard, version })?;
                let kek = self
                    .master
                    .unwrap_kek(
                        record.master_version,
                        &record.wrapped,
                        &kek_aad(shard, version),
                    )
                    .await?;
                crate::metrics::get().unwrapped(crate::metrics::UnwrapLevel::Master);
                Ok(Arc::new(kek))
            })
            .await
            .map_err(|e: Arc<KeyError>| (*e).clone());
        crate::metrics::get().key_cache(crate::metrics::CacheLevel::Kek, !miss);
        kek
    }
}
