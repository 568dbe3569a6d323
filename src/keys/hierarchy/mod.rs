//! The key hierarchy: master key -> KEK shards -> user keys -> DEKs.
//!
//! [`KeyHierarchy`] is the only way the service gets at an unwrapped key. It
//! owns the key store, the master key provider, the naming key and the moka
//! caches of unwrapped KEKs (hours) and user keys (about a minute), and it
//! enforces erasure: once [`KeyHierarchy::erase`] returns, no call hands out
//! a key of that user again, cached or not.
//!
//! This file holds the hierarchy and what a request calls: pseudonyms, the
//! active user key (version 1, and the shard's first KEK, made on first
//! use), a user key by version, the check of a write after its commit,
//! erasure, status and decommission. The rest of its `impl` is split by
//! what it does:
//!
//! - `cache.rs`: the caches of unwrapped keys and how a miss is filled
//!   (concurrent misses of one key unwrap it once).
//! - `watch.rs`: how erasures reach this process's caches and open streams,
//!   its own and other processes' (through the key store's invalidation
//!   feed), and the streams' [`ErasureWatch`]es.
//! - `disclosure.rs`: keys for a lawful disclosure under a legal case,
//!   which a scheduled erasure's restriction does not stop (erasure does).
//! - `rotation.rs`: the steps of user-key rotation and rewrap, KEK rotation
//!   and master rotation, one step per call, for the jobs that drive them.
//!
//! The hierarchy never writes SQL and never reads a keyring file or calls
//! KMS itself: it reaches wrapped keys through [`KeyStore`] and master keys
//! through [`MasterKeyProvider`]. It never hands out a key of an erased
//! user, nor any key once [`KeyHierarchy::decommission`] began.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;

use super::master::MasterKeyProvider;
use super::store::{
    AuditEntry, EraseOutcome, InsertOutcome, KekRecord, KeyStore, Tombstone, UserKeyRecord,
    UserKeyState,
};
use super::{unix_ms, KeyError};
use crate::crypto::keys::{kek_aad, user_key_aad};
use crate::crypto::{Kek, NamingKey, Pseudonym, UserKey};
use cache::UserKeys;
use watch::ErasureLog;

mod cache;
mod disclosure;
mod rotation;
#[cfg(test)]
mod tests;
mod watch;

pub use cache::{CachePolicy, UserKeyRing};
pub use watch::ErasureWatch;

/// What KeyStatus reports about a user, without key material.
#[derive(Debug, Clone)]
pub struct UserKeyStatus {
    /// The pseudonym.
    pub pseudonym: Pseudonym,
    /// KEK shard.
    pub shard: u32,
    /// Tombstone, if erased.
    pub tombstone: Option<Tombstone>,
    /// Live versions.
    pub versions: Vec<UserKeyRecord>,
    /// Master version new KEKs are wrapped under.
    pub master_version: u32,
}

/// What a decommission destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decommissioned {
    /// When, Unix milliseconds.
    pub at_ms: i64,
    /// User-key versions destroyed.
    pub user_keys: u64,
    /// KEK versions destroyed.
    pub kek_versions: u64,
    /// Master versions destroyed.
    pub master_versions: Vec<u32>,
}

/// The key hierarchy service.
pub struct KeyHierarchy {
    store: Arc<dyn KeyStore>,
    master: Arc<dyn MasterKeyProvider>,
    naming: NamingKey,
    shards: u32,
    keks: Cache<(u32, u32), Arc<Kek>>,
    users: Cache<Pseudonym, Arc<UserKeys>>,
    /// Pseudonyms erased by this process, remembered at least as long as a
    /// user-key cache entry lives, so that an entry loaded just before an
    /// erasure is never served after it.
    recently_erased: Cache<Pseudonym, ()>,
    /// Number of erasures this process committed; streams compare it with
    /// the value they saw last, so the common check is one atomic load.
    erasure_epoch: AtomicU64,
    erasure_log: Mutex<ErasureLog>,
    /// How often an open stream asks the store whether its user was erased
    /// (`cache.ttl_seconds`, the bound on a lost notice).
    recheck_interval: Duration,
    /// False while the feed of other processes' changes is interrupted (or
    /// once it ended): every stream asks the store at every check.
    feed_healthy: std::sync::atomic::AtomicBool,
    /// The KEK schedule's maximum KEK age, if it runs.
    kek_max_age: Option<Duration>,
    /// Set once [`Self::decommission`] began: every key access fails.
    decommissioned: std::sync::atomic::AtomicBool,
}

impl KeyHierarchy {
    /// Builds the hierarchy over a store and a master key provider.
    pub fn new(
        store: Arc<dyn KeyStore>,
        master: Arc<dyn MasterKeyProvider>,
        naming: NamingKey,
        shards: u32,
        policy: &CachePolicy,
    ) -> Self {
        Self {
            store,
            master,
            naming,
            shards: shards.max(1),
            keks: Cache::builder()
                .max_capacity(u64::from(shards.max(1)) * 4)
                .time_to_live(policy.kek_ttl)
                .build(),
            users: Cache::builder()
                .max_capacity(policy.max_users)
                .time_to_live(policy.user_ttl)
                .build(),
            recently_erased: Cache::builder()
                .time_to_live(policy.user_ttl * 2 + Duration::from_secs(1))
                .build(),
            erasure_epoch: AtomicU64::new(0),
            erasure_log: Mutex::new(ErasureLog {
                base: 0,
                entries: VecDeque::new(),
            }),
            recheck_interval: policy.user_ttl,
            feed_healthy: std::sync::atomic::AtomicBool::new(true),
            kek_max_age: None,
            decommissioned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sets the KEK schedule's maximum age (`keys.kek_max_age_days`;
    /// `None`: no schedule).
    #[must_use]
    pub fn with_kek_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.kek_max_age = max_age;
        self
    }

    /// The KEK schedule's maximum age, if a schedule runs.
    pub fn kek_max_age(&self) -> Option<Duration> {
        self.kek_max_age
    }

    /// When a key-store copy taken before `erased_at_ms` stops opening
    /// anything under the schedule: every KEK and master version alive then
    /// is destroyed within the maximum age. `None` without a schedule.
    pub fn backup_horizon_ms(&self, erased_at_ms: i64) -> Option<i64> {
        let age = i64::try_from(self.kek_max_age?.as_millis()).unwrap_or(i64::MAX);
        Some(erased_at_ms.saturating_add(age))
    }

    /// The number of KEK shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The key store (for jobs and audit).
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    /// The master key provider (for rotation and retirement).
    pub fn master(&self) -> &Arc<dyn MasterKeyProvider> {
        &self.master
    }

    /// The keyed pseudonym of a user id, after checking the id
    /// ([`crate::names::check_user_id`]).
    ///
    /// # Errors
    /// The rule the user id breaks.
    pub fn pseudonym(&self, user_id: &str) -> Result<Pseudonym, crate::names::NameError> {
        crate::names::check_user_id(user_id)?;
        Ok(self.naming.pseudonym(user_id))
    }

    /// The deployment's key suite (recorded in its key store): of the user
    /// keys' wraps and of pseudonyms.
    pub fn key_suite(&self) -> crate::crypto::Suite {
        self.naming.suite()
    }

    /// The active user key (creating version 1 for a new user), for sealing.
    ///
    /// # Errors
    /// [`KeyError::UserErased`] for an erased user; store or unwrap failures.
    pub async fn active_user_key(&self, p: &Pseudonym) -> Result<(u32, Arc<UserKey>), KeyError> {
        for _ in 0..3 {
            let keys = self.user_keys(p).await?;
            if let Some(v) = keys.active {
                return Ok((v, keys.keys[&v].clone()));
            }
            // A new user: create version 1 under the shard's newest KEK.
            let version = keys.keys.keys().next_back().map_or(1, |v| v + 1);
            let record = self.new_user_key(p, version).await?;
            match self.store.insert_user_key(&record).await? {
                InsertOutcome::Erased => return Err(KeyError::UserErased),
                // A KEK rotation began: wrap under the new version.
                InsertOutcome::StaleKek => {}
                InsertOutcome::Inserted | InsertOutcome::AlreadyExists => {
                    self.users.invalidate(p).await
                }
            }
        }
        Err(KeyError::Internal(
            "user key creation did not converge".into(),
        ))
    }

    /// A fresh user key as active version `version`, wrapped under the
    /// newest KEK of the user's shard, for the store to insert.
    pub(super) async fn new_user_key(
        &self,
        p: &Pseudonym,
        version: u32,
    ) -> Result<UserKeyRecord, KeyError> {
        let shard = p.shard(self.shards);
        let (kek_version, kek) = self.current_kek(shard).await?;
        let key = UserKey::generate()?;
        let wrapped = kek.wrap_user_key_in(
            self.key_suite(),
            &key,
            &user_key_aad(p, version, shard, kek_version),
        )?;
        Ok(UserKeyRecord {
            pseudonym: *p,
            version,
            shard,
            kek_version,
            wrapped: wrapped.as_bytes().to_vec(),
            state: UserKeyState::Active,
            created_at_ms: unix_ms(),
        })
    }

    /// A specific user-key version, for opening an object.
    ///
    /// # Errors
    /// [`KeyError::UserErased`] for an erased user;
    /// [`KeyError::MissingUserKeyVersion`] if that version does not exist.
    pub async fn user_key(&self, p: &Pseudonym, version: u32) -> Result<Arc<UserKey>, KeyError> {
        let keys = self.user_keys(p).await?;
        if let Some(k) = keys.keys.get(&version) {
            return Ok(k.clone());
        }
        // The cache may predate a rotation; look once more at the store.
        self.users.invalidate(p).await;
        let keys = self.user_keys(p).await?;
        keys.keys
            .get(&version)
            .cloned()
            .ok_or(KeyError::MissingUserKeyVersion(version))
    }

    /// Whether an upload or item write may start: refused
    /// [`KeyError::StorageFull`] while the key store keeps its room for
    /// erasures (see `crate::disk`).
    ///
    /// # Errors
    /// As described, or store failures.
    pub async fn admit_upload(&self) -> Result<(), KeyError> {
        Ok(self.store.admit_upload().await?)
    }

    /// Fails with [`KeyError::UserErased`] if the user is erased.
    ///
    /// # Errors
    /// As described, or store failures.
    pub async fn ensure_not_erased(&self, p: &Pseudonym) -> Result<(), KeyError> {
        self.user_keys(p).await.map(|_| ())
    }

    /// After an object sealed under `version` was committed: fails with
    /// [`KeyError::UserErased`] if the user was erased meanwhile, or
    /// [`KeyError::KeyRetired`] if a rewrap retired or destroyed `version`
    /// meanwhile (its listing may have missed the object, so the object
    /// must go). Reads the key store, not this process's cache: the
    /// erasure or the rewrap may have run in another process.
    ///
    /// # Errors
    /// As described, or store failures.
    pub async fn confirm_sealed_with(&self, p: &Pseudonym, version: u32) -> Result<(), KeyError> {
        self.ensure_not_decommissioned()?;
        if self.recently_erased.contains_key(p) {
            return Err(KeyError::UserErased);
        }
        let records = self.store.user_keys(p).await?;
        match records.iter().find(|r| r.version == version) {
            Some(r) if r.state != UserKeyState::Retiring => Ok(()),
            Some(_) => Err(KeyError::KeyRetired(version)),
            None if self.store.tombstone(p).await?.is_some() => Err(KeyError::UserErased),
            None => Err(KeyError::KeyRetired(version)),
        }
    }

    /// A fresh KEK as `version` of `shard`, and its record: wrapped under
    /// the current master version.
    pub(super) async fn new_kek(
        &self,
        shard: u32,
        version: u32,
    ) -> Result<(Kek, KekRecord), KeyError> {
        let kek = Kek::generate()?;
        let (master_version, wrapped) =
            self.master.wrap_kek(&kek, &kek_aad(shard, version)).await?;
        let record = KekRecord {
            shard,
            version,
            master_version,
            wrapped,
            created_at_ms: unix_ms(),
        };
        Ok((kek, record))
    }

    /// Makes a fresh KEK version under the current master version and
    /// stores it (with its audit record); `None` if another process stored
    /// that version first.
    async fn insert_new_kek(&self, shard: u32, version: u32) -> Result<Option<Kek>, KeyError> {
        let (kek, record) = self.new_kek(shard, version).await?;
        if !self.store.insert_kek(&record).await? {
            return Ok(None);
        }
        self.store
            .audit(&AuditEntry {
                at_ms: record.created_at_ms,
                principal: "gateway".into(),
                action: "create_kek".into(),
                pseudonym: None,
                outcome: "ok".into(),
                detail: format!("shard {shard} version {version}"),
            })
            .await?;
        Ok(Some(kek))
    }

    pub(super) fn ensure_not_decommissioned(&self) -> Result<(), KeyError> {
        if self.decommissioned.load(Ordering::Acquire) {
            return Err(KeyError::Decommissioned);
        }
        Ok(())
    }

    /// Decommissions the service, for `principal`: destroys every user key
    /// and KEK (one key-store transaction, scrubbed as an erasure), then
    /// every master version (the keyring overwritten and removed, or the
    /// KMS version records deleted), drops
    /// every cached key and ends every open stream at its next piece.
    /// From the first step on, every key access fails
    /// [`KeyError::Decommissioned`].
    ///
    /// # Errors
    /// Store or keyring failures; repeating the call finishes the work.
    pub async fn decommission(&self, principal: &str) -> Result<Decommissioned, KeyError> {
        // Held users' keys are preserved: refused before anything stops.
        let held = self.store.held_users().await?;
        if held > 0 {
            return Err(KeyError::HeldUsers { users: held });
        }
        self.decommissioned.store(true, Ordering::Release);
        // Streams compare epochs: a change sends them to `check_watch`,
        // which sees the flag.
        self.erasure_epoch.fetch_add(1, Ordering::AcqRel);
        let at_ms = unix_ms();
        let (user_keys, kek_versions) = match self.store.decommission(at_ms, principal).await {
            Ok(done) => done,
            // A hold placed since the check above: nothing was destroyed.
            Err(e @ super::store::StoreError::HeldUsers { .. }) => {
                self.decommissioned.store(false, Ordering::Release);
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        self.users.invalidate_all();
        self.keks.invalidate_all();
        let masters = self.master.destroy_all().await?;
        self.store
            .audit(&AuditEntry {
                at_ms: unix_ms(),
                principal: principal.into(),
                action: "decommission_masters".into(),
                pseudonym: None,
                outcome: "ok".into(),
                detail: format!(
                    "master key versions {masters:?} destroyed (local keyring overwritten and removed; KMS version records deleted)"
                ),
            })
            .await?;
        Ok(Decommissioned {
            at_ms,
            user_keys,
            kek_versions,
            master_versions: masters,
        })
    }

    /// The newest KEK version of a shard, creating version 1 if none exists.
    async fn current_kek(&self, shard: u32) -> Result<(u32, Arc<Kek>), KeyError> {
        self.ensure_not_decommissioned()?;
        if let Some(r) = self.store.latest_kek(shard).await? {
            return Ok((r.version, self.kek(shard, r.version).await?));
        }
        if let Some(kek) = self.insert_new_kek(shard, 1).await? {
            let kek = Arc::new(kek);
            self.keks.insert((shard, 1), kek.clone()).await;
            return Ok((1, kek));
        }
        // Another replica created it first: use theirs.
        Ok((1, self.kek(shard, 1).await?))
    }

    /// Crypto-shreds a user: destroys every user-key version and writes the
    /// tombstone in one transaction, then drops cached keys. Idempotent.
    ///
    /// # Errors
    /// [`KeyError::LegalHold`] for a held user; store failures (in which
    /// case nothing was destroyed).
    pub async fn erase(&self, p: &Pseudonym, principal: &str) -> Result<Tombstone, KeyError> {
        match self
            .erase_many(std::slice::from_ref(p), principal, false)
            .await?
            .pop()
        {
            Some(EraseOutcome::Erased(t)) => Ok(t),
            Some(EraseOutcome::Held { cases }) => Err(KeyError::LegalHold { cases }),
            Some(EraseOutcome::NotDue) | None => Err(KeyError::Internal(
                "an erasure of one user ended without an outcome".into(),
            )),
        }
    }

    /// Crypto-shreds the users of `ps` (distinct) in shared transactions,
    /// as [`Self::erase`] does one; with `due_only`, only those whose
    /// scheduled erasure is due now. Outcomes in the order of `ps`.
    ///
    /// # Errors
    /// Store failures (in which case nothing was destroyed).
    pub async fn erase_many(
        &self,
        ps: &[Pseudonym],
        principal: &str,
        due_only: bool,
    ) -> Result<Vec<EraseOutcome>, KeyError> {
        let users: Vec<(Pseudonym, String)> =
            ps.iter().map(|p| (*p, crate::names::random_id())).collect();
        let erased = if due_only {
            self.store.erase_due(&users, unix_ms(), principal).await
        } else {
            self.store.erase_users(&users, unix_ms(), principal).await
        };
        match erased {
            Ok(outcomes) => {
                for (p, outcome) in ps.iter().zip(&outcomes) {
                    if matches!(outcome, EraseOutcome::Erased(_)) {
                        self.note_erased(Some(*p)).await;
                    }
                }
                Ok(outcomes)
            }
            Err(e) => {
                // The erasure may have committed before what failed (the
                // scrub after it): the store decides, as for another
                // process's change, so that no cached key outlives a
                // committed erasure.
                for p in ps {
                    self.apply(super::store::Invalidation::User(*p)).await;
                }
                Err(e.into())
            }
        }
    }

    /// Key status without key material.
    ///
    /// # Errors
    /// Store failures.
    pub async fn status(&self, p: &Pseudonym) -> Result<UserKeyStatus, KeyError> {
        // What every replica last made of the master versions.
        self.master.refresh().await?;
        Ok(UserKeyStatus {
            pseudonym: *p,
            shard: p.shard(self.shards),
            tombstone: self.store.tombstone(p).await?,
            versions: self.store.user_keys(p).await?,
            master_version: self.master.current_version(),
        })
    }
}
