//! The key hierarchy: master key -> KEK shards -> user keys -> DEKs.
//!
//! [`KeyHierarchy`] is the only way the service gets at an unwrapped key. It
//! owns the key store, the master key provider, the naming key and the moka
//! caches of unwrapped KEKs (hours) and user keys (about a minute), and it
//! enforces erasure: once [`KeyHierarchy::erase`] returns, no call hands out
//! a key of that user again, cached or not.

pub mod master;
pub mod store;

pub use master::kms;
pub use store::{postgres, sqlite};

/// The local keyring at its path from before the providers moved to
/// [`master`], with the provider trait and error that lived beside it.
pub mod keyring {
    pub use super::master::keyring::{parse, LocalKeyring};
    pub use super::master::{MasterKeyError, MasterKeyProvider};
}

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;

use crate::crypto::keys::{kek_aad, user_key_aad};
use crate::crypto::{CryptoError, Kek, NamingKey, Pseudonym, UserKey, Wrapped};
use master::{MasterKeyError, MasterKeyProvider};
use store::{
    AuditEntry, DestroyKeks, InsertOutcome, Invalidation, Invalidations, KekRecord, KekRewrap,
    KeyStore, StoreError, Tombstone, UserKeyRecord, UserKeyRewrap, UserKeyState,
};

pub use crate::clock::unix_ms;

/// Errors of the key layer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    /// The user has been erased; their keys no longer exist.
    #[error("user erased")]
    UserErased,
    /// An object names a user-key version that does not exist (and the user
    /// is not erased): the object cannot be opened.
    #[error("user key version {0} does not exist")]
    MissingUserKeyVersion(u32),
    /// A wrapped key failed to unwrap: corrupt key store or wrong master key.
    #[error("key unwrap failed: {0}")]
    Unwrap(String),
    /// The key store is unreachable; retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The key store's disk is full; retryable once space is freed.
    #[error("{0}")]
    StorageFull(String),
    /// The key store is gone (file deleted or replaced); needs an operator.
    #[error("{0}")]
    StoreLost(String),
    /// Any other key store or provider failure.
    #[error("{0}")]
    Internal(String),
    /// A KEK version a user-key row names is not in the store (destroyed
    /// by a KEK rotation after the row was read, or a corrupt store).
    #[error("KEK shard {shard} version {version} missing")]
    KekMissing {
        /// Shard.
        shard: u32,
        /// Version.
        version: u32,
    },
    /// An object was sealed under a user-key version that a rewrap retired
    /// (or already destroyed) meanwhile: it must be written again.
    #[error("user key version {0} was retired by a rewrap while the write ran")]
    KeyRetired(u32),
    /// The master key provider (KMS) refused to use a master key: retrying
    /// cannot help until an operator fixes the key (enables it, restores
    /// the permission).
    #[error("{0}")]
    MasterKeyUnusable(String),
    /// The service was decommissioned: every key is destroyed.
    #[error("decommissioned: every key is destroyed")]
    Decommissioned,
    /// An erasure refused: the user is under legal hold.
    #[error("the user is under legal hold ({cases} cases)")]
    LegalHold {
        /// How many cases hold the user.
        cases: usize,
    },
}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Full(m) => Self::StorageFull(m),
            StoreError::Lost(m) => Self::StoreLost(m),
            StoreError::Backend(m) => Self::Internal(m),
            StoreError::LegalHold { cases } => Self::LegalHold { cases },
        }
    }
}

impl From<MasterKeyError> for KeyError {
    fn from(e: MasterKeyError) -> Self {
        match e {
            MasterKeyError::KmsUnavailable(_) => Self::Unavailable(e.to_string()),
            MasterKeyError::KmsRefused { .. } => Self::MasterKeyUnusable(e.to_string()),
            MasterKeyError::Store(e) => e.into(),
            e => Self::Unwrap(e.to_string()),
        }
    }
}

impl From<CryptoError> for KeyError {
    fn from(e: CryptoError) -> Self {
        Self::Internal(e.to_string())
    }
}

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
struct UserKeys {
    keys: BTreeMap<u32, Arc<UserKey>>,
    active: Option<u32>,
}

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

/// Erasures this process learnt of, newest last: the `i`-th entry has
/// epoch `base + i + 1`. An entry is a user known to be erased, or `None`
/// when anyone may have been (another process reported a change this one
/// could not resolve). Bounded; a stream that fell behind it asks the store.
struct ErasureLog {
    base: u64,
    entries: VecDeque<Option<Pseudonym>>,
}

/// Entries kept in the erasure log.
const ERASURE_LOG_LEN: usize = 4096;

impl ErasureLog {
    /// Whether `p` was erased after epoch `seen`; `None` if the log cannot
    /// tell: it no longer reaches back that far, or it holds an unresolved
    /// change since.
    fn erased_since(&self, p: &Pseudonym, seen: u64) -> Option<bool> {
        let skip = usize::try_from(seen.checked_sub(self.base)?).ok()?;
        let mut unresolved = false;
        for entry in self.entries.iter().skip(skip) {
            match entry {
                Some(e) if e == p => return Some(true),
                Some(_) => {}
                None => unresolved = true,
            }
        }
        (!unresolved).then_some(false)
    }

    /// Appends an entry and returns the new epoch.
    fn push(&mut self, entry: Option<Pseudonym>) -> u64 {
        self.entries.push_back(entry);
        if self.entries.len() > ERASURE_LOG_LEN {
            self.entries.pop_front();
            self.base += 1;
        }
        self.base + self.entries.len() as u64
    }
}

/// A stream's watch on one user's erasure, taken before the stream gets
/// the user's key: [`KeyHierarchy::check_watch`] then fails once the user is
/// erased, whenever that happened after the watch began.
#[derive(Debug, Clone)]
pub struct ErasureWatch {
    pseudonym: Pseudonym,
    seen: u64,
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

    /// Up to `limit` KEK versions wrapped under a master version below
    /// `target`, each unwrapped and wrapped again under the current master
    /// version (which must be `target` or newer), for
    /// [`KeyStore::rewrap_keks`]. Empty when every KEK is under `target` or
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

    /// The keyed pseudonym of a user id, after checking the id
    /// ([`crate::names::check_user_id`]).
    ///
    /// # Errors
    /// The rule the user id breaks.
    pub fn pseudonym(&self, user_id: &str) -> Result<Pseudonym, crate::names::NameError> {
        crate::names::check_user_id(user_id)?;
        Ok(self.naming.pseudonym(user_id))
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
    async fn new_user_key(&self, p: &Pseudonym, version: u32) -> Result<UserKeyRecord, KeyError> {
        let shard = p.shard(self.shards);
        let (kek_version, kek) = self.current_kek(shard).await?;
        let key = UserKey::generate()?;
        let wrapped = kek.wrap_user_key(&key, &user_key_aad(p, version, shard, kek_version))?;
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

    /// Starts a rewrap of the user to `version`: every version below it
    /// becomes retiring (see [`KeyStore::retire_user_keys_below`]) and this
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
    /// [`KeyStore::destroy_retiring_user_keys`]) and drops them from this
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

    async fn user_keys(&self, p: &Pseudonym) -> Result<Arc<UserKeys>, KeyError> {
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
        if self.store.tombstone(p).await?.is_some() {
            return Err(KeyError::UserErased);
        }
        let records = self.store.user_keys(p).await?;
        let mut keys = BTreeMap::new();
        let mut active = None;
        for r in records {
            let kek = self.kek(r.shard, r.kek_version).await?;
            let wrapped = Wrapped::<UserKey>::from_bytes(&r.wrapped)?;
            let key = kek
                .unwrap_user_key(
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
        Ok(Arc::new(UserKeys { keys, active }))
    }

    /// For a KEK rotation of `shards`: per shard a fresh KEK, as the
    /// version after the shard's newest, wrapped under the current master
    /// version; records for [`KeyStore::insert_keks`].
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

    /// A fresh KEK as `version` of `shard`, and its record: wrapped under
    /// the current master version.
    async fn new_kek(&self, shard: u32, version: u32) -> Result<(Kek, KekRecord), KeyError> {
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

    /// Up to `limit` user-key versions of the shards of `targets` (`(shard,
    /// KEK version)` pairs) under a KEK version below their shard's target,
    /// unwrapped and wrapped again under the target, for
    /// [`KeyStore::rewrap_user_keys`].
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
                .unwrap_user_key(
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
            let wrapped =
                to.wrap_user_key(&key, &user_key_aad(&r.pseudonym, r.version, shard, target))?;
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

    fn ensure_not_decommissioned(&self) -> Result<(), KeyError> {
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
        self.decommissioned.store(true, Ordering::Release);
        // Streams compare epochs: a change sends them to `check_watch`,
        // which sees the flag.
        self.erasure_epoch.fetch_add(1, Ordering::AcqRel);
        let at_ms = unix_ms();
        let (user_keys, kek_versions) = self.store.decommission(at_ms, principal).await?;
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

    async fn kek(&self, shard: u32, version: u32) -> Result<Arc<Kek>, KeyError> {
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

    /// Crypto-shreds a user: destroys every user-key version and writes the
    /// tombstone in one transaction, then drops cached keys. Idempotent.
    ///
    /// # Errors
    /// Store failures (in which case nothing was destroyed).
    pub async fn erase(&self, p: &Pseudonym, principal: &str) -> Result<Tombstone, KeyError> {
        let tombstone = self
            .store
            .erase_user(p, unix_ms(), &crate::names::random_id(), principal)
            .await?;
        self.note_erased(Some(*p)).await;
        Ok(tombstone)
    }

    /// Records an erasure this process learnt of (`None`: anyone's may have
    /// happened) so that no cached key of the user is served again and
    /// every open stream re-checks its user at its next piece.
    async fn note_erased(&self, p: Option<Pseudonym>) {
        match &p {
            Some(p) => {
                self.recently_erased.insert(*p, ()).await;
                self.users.invalidate(p).await;
            }
            None => self.users.invalidate_all(),
        }
        let mut log = self.erasure_log.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = log.push(p);
        self.erasure_epoch.store(epoch, Ordering::Release);
    }

    /// Applies a change another process committed to the shared key store
    /// (see [`KeyStore::invalidations`]). A user whose keys changed is
    /// dropped from the cache and, if the store shows a tombstone, treated
    /// exactly as an erasure by this process; if the store cannot be asked,
    /// every open stream re-checks its user.
    pub async fn apply(&self, change: Invalidation) {
        match change {
            Invalidation::User(p) => match self.store.tombstone(&p).await {
                Ok(Some(_)) => self.note_erased(Some(p)).await,
                Ok(None) => self.users.invalidate(&p).await,
                Err(e) => {
                    tracing::warn!(error = %e, "key store unreachable while applying an invalidation");
                    self.users.invalidate(&p).await;
                    self.note_erased(None).await;
                }
            },
            Invalidation::Shard(shard) => {
                // Keyed by (shard, version): drop every version of the shard.
                let stale: Vec<_> = self
                    .keks
                    .iter()
                    .filter(|(k, _)| k.0 == shard)
                    .map(|(k, _)| *k)
                    .collect();
                for key in stale {
                    self.keks.invalidate(&key).await;
                }
            }
            Invalidation::All => {
                self.keks.invalidate_all();
                self.note_erased(None).await;
            }
        }
    }

    /// Applies every change of `feed` (the store's
    /// [`KeyStore::invalidations`]) until it ends or the hierarchy is
    /// dropped.
    pub fn follow(self: &Arc<Self>, mut feed: Invalidations) -> tokio::task::JoinHandle<()> {
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(change) = feed.recv().await {
                let Some(keys) = keys.upgrade() else { break };
                keys.apply(change).await;
            }
        })
    }

    /// Starts watching a user for erasure. Take the watch before getting
    /// the user's key, so an erasure between the two is seen.
    pub fn watch(&self, p: &Pseudonym) -> ErasureWatch {
        ErasureWatch {
            pseudonym: *p,
            seen: self.erasure_epoch.load(Ordering::Acquire),
        }
    }

    /// Fails with [`KeyError::UserErased`] if the watched user was erased
    /// since the watch began. One atomic load unless this process erased
    /// someone since the last check; a watch older than the in-memory log
    /// asks the key store.
    ///
    /// # Errors
    /// As described, or store failures.
    pub async fn check_watch(&self, watch: &mut ErasureWatch) -> Result<(), KeyError> {
        let now = self.erasure_epoch.load(Ordering::Acquire);
        if now == watch.seen {
            return Ok(());
        }
        self.ensure_not_decommissioned()?;
        let known = self
            .erasure_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .erased_since(&watch.pseudonym, watch.seen);
        let erased = match known {
            Some(erased) => erased,
            None => self.store.tombstone(&watch.pseudonym).await?.is_some(),
        };
        if erased {
            return Err(KeyError::UserErased);
        }
        watch.seen = now;
        Ok(())
    }

    /// Key status without key material.
    ///
    /// # Errors
    /// Store failures.
    pub async fn status(&self, p: &Pseudonym) -> Result<UserKeyStatus, KeyError> {
        Ok(UserKeyStatus {
            pseudonym: *p,
            shard: p.shard(self.shards),
            tombstone: self.store.tombstone(p).await?,
            versions: self.store.user_keys(p).await?,
            master_version: self.master.current_version(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::keyring::LocalKeyring;
    use super::sqlite::SqliteKeyStore;
    use super::*;

    /// Counts calls through to a real local keyring.
    struct Counting {
        inner: LocalKeyring,
        unwraps: AtomicUsize,
    }

    #[async_trait]
    impl MasterKeyProvider for Counting {
        async fn destroy_all(&self) -> Result<Vec<u32>, MasterKeyError> {
            self.inner.destroy_all()
        }

        fn current_version(&self) -> u32 {
            self.inner.current_version()
        }
        fn versions(&self) -> Vec<u32> {
            self.inner.versions()
        }
        async fn add_version(&self, version: u32) -> Result<(), MasterKeyError> {
            self.inner.add_version(version)
        }
        async fn retire_version(&self, version: u32) -> Result<(), MasterKeyError> {
            self.inner.retire_version(version)
        }
        async fn wrap_kek(&self, kek: &Kek, aad: &[u8]) -> Result<(u32, Vec<u8>), MasterKeyError> {
            self.inner.wrap_kek(kek, aad).await
        }
        async fn unwrap_kek(
            &self,
            version: u32,
            wrapped: &[u8],
            aad: &[u8],
        ) -> Result<Kek, MasterKeyError> {
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            // Widen the window in which concurrent misses overlap.
            tokio::task::yield_now().await;
            self.inner.unwrap_kek(version, wrapped, aad).await
        }
    }

    async fn hierarchy(dir: &std::path::Path) -> (Arc<KeyHierarchy>, Arc<Counting>) {
        let (keyring, naming) = LocalKeyring::create(&dir.join("keyring")).unwrap();
        let master = Arc::new(Counting {
            inner: keyring,
            unwraps: AtomicUsize::new(0),
        });
        let store = Arc::new(SqliteKeyStore::open(&dir.join("keys.db")).await.unwrap());
        let policy = CachePolicy {
            user_ttl: Duration::from_secs(60),
            kek_ttl: Duration::from_secs(3600),
            max_users: 1000,
        };
        (
            Arc::new(KeyHierarchy::new(
                store,
                master.clone(),
                naming,
                16,
                &policy,
            )),
            master,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_unwrap_once_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = {
            let (keys, _) = hierarchy(dir.path()).await;
            let p = keys.pseudonym("alice").unwrap();
            let (version, _) = keys.active_user_key(&p).await.unwrap();
            assert_eq!(version, 1);
            p
        };
        // A fresh process: cold caches, same store and keyring.
        let (keys, master) = hierarchy(dir.path()).await;
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.user_key(&p, 1).await.map(|_| ()) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            master.unwraps.load(Ordering::SeqCst),
            1,
            "one KEK unwrap for 32 concurrent misses"
        );
        assert!(matches!(
            keys.user_key(&p, 2).await,
            Err(KeyError::MissingUserKeyVersion(2))
        ));
    }

    #[tokio::test]
    async fn erasure_invalidates_cached_keys_and_blocks_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = hierarchy(dir.path()).await;
        let p = keys.pseudonym("bob").unwrap();
        let other = keys.pseudonym("carol").unwrap();
        keys.active_user_key(&p).await.unwrap();
        keys.active_user_key(&other).await.unwrap();
        keys.user_key(&p, 1).await.unwrap(); // cached now
        let receipt = keys.erase(&p, "test").await.unwrap();
        assert_eq!(receipt.destroyed_versions, vec![1]);
        assert!(matches!(
            keys.user_key(&p, 1).await,
            Err(KeyError::UserErased)
        ));
        assert!(matches!(
            keys.active_user_key(&p).await,
            Err(KeyError::UserErased)
        ));
        assert_eq!(
            keys.erase(&p, "test").await.unwrap(),
            receipt,
            "erasure is idempotent"
        );
        assert!(keys.store().user_keys(&p).await.unwrap().is_empty());
        keys.user_key(&other, 1).await.unwrap();

        // Another process with cold caches sees the same.
        let (fresh, _) = hierarchy(dir.path()).await;
        assert!(matches!(
            fresh.user_key(&p, 1).await,
            Err(KeyError::UserErased)
        ));
        assert!(matches!(
            fresh.active_user_key(&p).await,
            Err(KeyError::UserErased)
        ));
    }

    /// Two processes on one key store: what another process changed
    /// reaches this one's cache only through [`KeyHierarchy::apply`] (or
    /// the cache lifetime).
    #[tokio::test]
    async fn changes_from_another_process_apply_to_caches_and_streams() {
        let dir = tempfile::tempdir().unwrap();
        let (a, master_a) = hierarchy(dir.path()).await;
        let (b, _) = hierarchy(dir.path()).await;
        let bob = a.pseudonym("bob").unwrap();
        let carol = a.pseudonym("carol").unwrap();
        a.active_user_key(&bob).await.unwrap();
        a.active_user_key(&carol).await.unwrap();
        let mut bob_stream = a.watch(&bob);
        let mut carol_stream = a.watch(&carol);

        b.erase(&bob, "test").await.unwrap();
        assert_eq!(b.rotate_user_key(&carol, "test").await.unwrap(), 2);
        // Without a notice, A still serves what it cached.
        a.user_key(&bob, 1).await.unwrap();
        assert_eq!(a.active_user_key(&carol).await.unwrap().0, 1);
        a.check_watch(&mut bob_stream).await.unwrap();

        a.apply(Invalidation::User(bob)).await;
        a.apply(Invalidation::User(carol)).await;
        assert!(matches!(
            a.user_key(&bob, 1).await,
            Err(KeyError::UserErased)
        ));
        assert!(matches!(
            a.check_watch(&mut bob_stream).await,
            Err(KeyError::UserErased)
        ));
        // A rotation is not an erasure: carol's stream goes on, and new
        // writes use her new version.
        a.check_watch(&mut carol_stream).await.unwrap();
        assert_eq!(a.active_user_key(&carol).await.unwrap().0, 2);

        // A notice that anything may have changed: streams ask the store.
        let dave = a.pseudonym("dave").unwrap();
        a.active_user_key(&dave).await.unwrap();
        let mut dave_stream = a.watch(&dave);
        let mut carol_stream = a.watch(&carol);
        b.erase(&dave, "test").await.unwrap();
        a.apply(Invalidation::All).await;
        assert!(matches!(
            a.check_watch(&mut dave_stream).await,
            Err(KeyError::UserErased)
        ));
        a.check_watch(&mut carol_stream).await.unwrap();
        assert!(matches!(
            a.user_key(&dave, 1).await,
            Err(KeyError::UserErased)
        ));

        // A shard's notice drops its cached KEKs: the next cold user of the
        // shard unwraps the KEK again; other shards stay cached.
        let unwraps = master_a.unwraps.load(Ordering::SeqCst);
        let shard = carol.shard(16);
        a.apply(Invalidation::Shard(shard)).await;
        a.users.invalidate_all();
        a.user_key(&carol, 2).await.unwrap();
        assert_eq!(master_a.unwraps.load(Ordering::SeqCst), unwraps + 1);
    }

    #[tokio::test]
    async fn wrapped_keys_are_bound_to_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = hierarchy(dir.path()).await;
        let a = keys.pseudonym("a").unwrap();
        let b = keys.pseudonym("b").unwrap();
        keys.active_user_key(&a).await.unwrap();
        let mut row = keys.store().user_keys(&a).await.unwrap().remove(0);
        // Move a's wrapped key under b's pseudonym: the AAD no longer matches.
        row.pseudonym = b;
        row.shard = b.shard(16);
        keys.store().insert_user_key(&row).await.unwrap();
        let (fresh, _) = hierarchy(dir.path()).await;
        assert!(matches!(
            fresh.user_key(&b, 1).await,
            Err(KeyError::Unwrap(_) | KeyError::Internal(_) | KeyError::KekMissing { .. })
        ));
    }
}
