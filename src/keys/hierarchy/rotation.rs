//! The steps of rotation, one per call, for what drives them:
//!
//! - a user's key rotated, a new version made active (`keyadmin`);
//! - a user rewrapped: versions below a target retired, then destroyed
//!   (`content::rewrap`);
//! - KEK rotation: new KEK versions, user keys re-wrapped to them in
//!   batches, the old versions destroyed (`jobs::rotation`);
//! - master rotation: KEKs re-wrapped under the newest master version
//!   (`jobs::rotation`).
//!
//! Each step keeps this process's caches true to what it changed. Nothing
//! here decides when to rotate, holds a job's cursor or commits a batch of
//! re-wraps: the jobs do, through the key store, with what these steps
//! return.

use std::collections::BTreeMap;

use super::KeyHierarchy;
use crate::crypto::keys::{kek_aad, user_key_aad};
use crate::crypto::{Pseudonym, UserKey, Wrapped};
use crate::keys::store::{
    DestroyKeks, InsertOutcome, KekRecord, KekRewrap, UserKeyRecord, UserKeyRewrap,
};
use crate::keys::KeyError;

// Named by the steps' documentation: what the store does with their results.
#[cfg(doc)]
use crate::keys::store::KeyRecords;

impl KeyHierarchy {
    /// Rotates a user's key for `principal`: a new version becomes active
    /// (new objects are sealed under it), every older one decrypt-only
    /// (objects under them still open). Returns the new version.
    ///
    /// # Errors
    /// [`KeyError::UserErased`]; store or unwrap failures.
    pub async fn rotate_user_key(&self, p: &Pseudonym, principal: &str) -> Result<u32, KeyError> {
        self.ensure_not_decommissioned()?;
        for _ in 0..5 {
            let existing = self.store.user_keys(p).await?;
            let version = existing.iter().map(|r| r.version).max().unwrap_or(0) + 1;
            let record = self.new_user_key(p, version).await?;
            match self.store.rotate_user_key(&record, principal).await? {
                InsertOutcome::Inserted => {
                    self.users.invalidate(p).await;
                    return Ok(version);
                }
                InsertOutcome::Erased => return Err(KeyError::UserErased),
                // A concurrent rotation or a KEK rotation: look again.
                InsertOutcome::AlreadyExists | InsertOutcome::StaleKek => {}
            }
        }
        Err(KeyError::Internal(
            "user key rotation did not converge".into(),
        ))
    }

    /// Starts a rewrap of the user to `version`: every version below it
    /// becomes retiring (see [`KeyRecords::retire_user_keys_below`]) and this
    /// process's cached keys of the user are dropped, so that its writes
    /// see the change. Returns the retiring versions.
    ///
    /// # Errors
    /// Store failures.
    pub async fn retire_user_keys_below(
        &self,
        p: &Pseudonym,
        version: u32,
    ) -> Result<Vec<u32>, KeyError> {
        let versions = self.store.retire_user_keys_below(p, version).await?;
        self.users.invalidate(p).await;
        Ok(versions)
    }

    /// Ends a rewrap: destroys the user's retiring versions (see
    /// [`KeyRecords::destroy_retiring_user_keys`]) and drops them from this
    /// process's cache. Returns the versions destroyed.
    ///
    /// # Errors
    /// Store failures.
    pub async fn destroy_retiring_user_keys(
        &self,
        p: &Pseudonym,
        principal: &str,
    ) -> Result<Vec<u32>, KeyError> {
        let versions = self.store.destroy_retiring_user_keys(p, principal).await?;
        self.users.invalidate(p).await;
        Ok(versions)
    }

    /// For a KEK rotation of `shards`: per shard a fresh KEK, as the
    /// version after the shard's newest, wrapped under the current master
    /// version; records for [`KeyRecords::insert_keks`].
    ///
    /// # Errors
    /// Master-key or store failures.
    pub async fn new_kek_versions(&self, shards: &[u32]) -> Result<Vec<KekRecord>, KeyError> {
        let newest = self.newest_keks(shards).await?;
        let mut records = Vec::with_capacity(shards.len());
        for (shard, version) in newest {
            records.push(self.new_kek(shard, version + 1).await?.1);
        }
        Ok(records)
    }

    /// The newest KEK version of each of `shards` (0 for none), in order.
    ///
    /// # Errors
    /// Store failures.
    pub async fn newest_keks(&self, shards: &[u32]) -> Result<Vec<(u32, u32)>, KeyError> {
        let mut newest: BTreeMap<u32, u32> = shards.iter().map(|s| (*s, 0)).collect();
        for info in self.store.kek_infos().await? {
            if let Some(v) = newest.get_mut(&info.shard) {
                *v = (*v).max(info.version);
            }
        }
        Ok(shards.iter().map(|s| (*s, newest[s])).collect())
    }

    /// Up to `limit` user-key versions of the shards of `targets` (`(shard,
    /// KEK version)` pairs) under a KEK version below their shard's target,
    /// unwrapped and wrapped again under the target, for
    /// [`KeyRecords::rewrap_user_keys`].
    ///
    /// # Errors
    /// [`KeyError::Unwrap`] for a row that does not unwrap; store failures.
    pub async fn rewrap_user_keys_to(
        &self,
        targets: &[(u32, u32)],
        limit: u32,
    ) -> Result<Vec<UserKeyRewrap>, KeyError> {
        let records = self.store.user_keys_below_keks(targets, limit).await?;
        self.rewrap_records(targets, records).await
    }

    /// Like [`Self::rewrap_user_keys_to`] for a rotation of every shard:
    /// the next `limit` user-key versions after `after` in the table's own
    /// order (no index lookup, no sort), those under a KEK version below
    /// their shard's target re-wrapped. Returns the re-wraps and where the
    /// scan stands (`None` at the end of the table).
    ///
    /// # Errors
    /// As [`Self::rewrap_user_keys_to`].
    pub async fn rewrap_user_keys_in_order(
        &self,
        targets: &[(u32, u32)],
        after: Option<(Pseudonym, u32)>,
        limit: u32,
    ) -> Result<(Vec<UserKeyRewrap>, Option<(Pseudonym, u32)>), KeyError> {
        let records = self.store.user_keys_in_order(after, limit).await?;
        let next = if records.len() < limit as usize {
            None
        } else {
            records.last().map(|r| (r.pseudonym, r.version))
        };
        let target_of: BTreeMap<u32, u32> = targets.iter().copied().collect();
        let records = records
            .into_iter()
            .filter(|r| target_of.get(&r.shard).is_some_and(|t| r.kek_version < *t))
            .collect();
        Ok((self.rewrap_records(targets, records).await?, next))
    }

    async fn rewrap_records(
        &self,
        targets: &[(u32, u32)],
        records: Vec<UserKeyRecord>,
    ) -> Result<Vec<UserKeyRewrap>, KeyError> {
        let target_of: BTreeMap<u32, u32> = targets.iter().copied().collect();
        let mut rewraps = Vec::with_capacity(records.len());
        for r in records {
            let shard = r.shard;
            let Some(&target) = target_of.get(&shard) else {
                return Err(KeyError::Internal(format!(
                    "user key of shard {shard} outside the rotation"
                )));
            };
            let to = self.kek(shard, target).await?;
            let from = self.kek(shard, r.kek_version).await?;
            let wrapped = Wrapped::<UserKey>::from_bytes(&r.wrapped)?;
            let key = from
                .unwrap_user_key_in(
                    self.key_suite(),
                    &wrapped,
                    &user_key_aad(&r.pseudonym, r.version, shard, r.kek_version),
                )
                .map_err(|_| {
                    KeyError::Unwrap(format!(
                        "user key version {} of shard {shard} (KEK version {})",
                        r.version, r.kek_version
                    ))
                })?;
            crate::metrics::get().unwrapped(crate::metrics::UnwrapLevel::Kek);
            let wrapped = to.wrap_user_key_in(
                self.key_suite(),
                &key,
                &user_key_aad(&r.pseudonym, r.version, shard, target),
            )?;
            rewraps.push(UserKeyRewrap {
                pseudonym: r.pseudonym,
                version: r.version,
                shard,
                from_kek: r.kek_version,
                to_kek: target,
                wrapped: wrapped.as_bytes().to_vec(),
            });
        }
        Ok(rewraps)
    }

    /// Destroys, for each `(shard, version)` of `targets`, the shard's KEK
    /// versions below it (unless a user key is still under one) and drops
    /// them from this process's cache.
    ///
    /// # Errors
    /// Store failures.
    pub async fn destroy_keks_below(
        &self,
        targets: &[(u32, u32)],
        principal: &str,
    ) -> Result<DestroyKeks, KeyError> {
        let outcome = self.store.destroy_keks_below(targets, principal).await?;
        if let DestroyKeks::Destroyed(pairs) = &outcome {
            for pair in pairs {
                self.keks.invalidate(pair).await;
            }
        }
        Ok(outcome)
    }

    /// Up to `limit` KEK versions wrapped under a master version below
    /// `target`, each unwrapped and wrapped again under the current master
    /// version (which must be `target` or newer), for
    /// [`KeyRecords::rewrap_keks`]. Empty when every KEK is under `target` or
    /// newer.
    ///
    /// # Errors
    /// [`KeyError::Unwrap`] if a KEK does not unwrap (corrupt row, missing
    /// master version) or the current master version is below `target`;
    /// store failures.
    pub async fn rewrap_keks_to_master(
        &self,
        target: u32,
        limit: u32,
    ) -> Result<Vec<KekRewrap>, KeyError> {
        let records = self.store.keks_below_master(target, limit).await?;
        let mut rewraps = Vec::with_capacity(records.len());
        for r in records {
            let aad = kek_aad(r.shard, r.version);
            let kek = self
                .master
                .unwrap_kek(r.master_version, &r.wrapped, &aad)
                .await
                .map_err(|e| {
                    KeyError::Unwrap(format!("KEK shard {} version {}: {e}", r.shard, r.version))
                })?;
            crate::metrics::get().unwrapped(crate::metrics::UnwrapLevel::Master);
            let (to_master, wrapped) = self.master.wrap_kek(&kek, &aad).await?;
            if to_master < target {
                return Err(KeyError::Unwrap(format!(
                    "the keyring's newest master version is {to_master}, below {target}"
                )));
            }
            rewraps.push(KekRewrap {
                shard: r.shard,
                version: r.version,
                from_master: r.master_version,
                to_master,
                wrapped,
            });
        }
        Ok(rewraps)
    }
}
