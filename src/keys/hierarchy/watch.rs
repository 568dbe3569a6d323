//! How erasures, and what other processes changed, reach what this process
//! holds: the caches of unwrapped keys and the open streams.
//!
//! An erasure this process commits, or learns of from another process
//! through the key store's invalidation feed ([`KeyHierarchy::apply`],
//! [`KeyHierarchy::follow`]), drops the user's cached keys, is remembered
//! as erased for longer than a cache entry lives, and is appended to a
//! bounded log of erasures with a new epoch. A stream's [`ErasureWatch`]
//! compares epochs (one atomic load) and, when they differ, looks in the
//! log, or in the store when the log cannot tell. The feed's other changes
//! (a user's versions rotated or rewrapped, a shard's KEK versions
//! destroyed) drop the cache entries they made stale; `All` (the feed's
//! listener reconnected, or a decommission) drops every cached key and
//! sends every open watch to the store.
//!
//! A notice can also be lost without anyone noticing (a middlebox dropping
//! the listener's flow): a stream does not rely on the feed alone. Its
//! watch asks the store for the user's tombstone (one indexed read) once
//! `cache.ttl_seconds` has passed since the store was last asked for it
//! (by the watch, or by the load of the cached key the stream started
//! from), so that an open stream stops within the same bound as a cached
//! key, and asks at every check while the feed is interrupted
//! ([`Invalidation::Interrupted`] until its listener listens again, or
//! once the feed ended).
//!
//! Nothing here erases a key or writes to the key store: it only reads
//! tombstones. A change it cannot resolve is treated as "anyone may have
//! been erased", never as "no one was".

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::cache::{UserKeyRing, UserKeys};
use super::KeyHierarchy;
use crate::crypto::Pseudonym;
use crate::keys::store::{Invalidation, Invalidations, ScheduleState};
use crate::keys::KeyError;

// Named by the documentation of the invalidation feed.
#[cfg(doc)]
use crate::keys::store::KeyStore;

/// Erasures this process learnt of, newest last: the `i`-th entry has
/// epoch `base + i + 1`. An entry is a user known to be erased, or `None`
/// when anyone may have been (another process reported a change this one
/// could not resolve). Bounded; a stream that fell behind it asks the store.
pub(super) struct ErasureLog {
    pub(super) base: u64,
    pub(super) entries: VecDeque<Option<Pseudonym>>,
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
/// erased, whenever that happened after the watch began, and wherever.
/// Its clones (a stream's reader and its sender) share when the store was
/// last asked, so a stream asks once per interval.
#[derive(Debug, Clone)]
pub struct ErasureWatch {
    pseudonym: Pseudonym,
    seen: u64,
    /// When the store was last asked whether the user is erased, on behalf
    /// of this stream: by the watch, or by the load of the cached key that
    /// was there when the watch began.
    asked: Arc<Mutex<Instant>>,
    /// A disclosure's watch: only erasure ends it, not a scheduled
    /// erasure's restriction (`disclosure.rs`).
    pub(super) disclosure: bool,
}

impl ErasureWatch {
    fn asked(&self) -> Instant {
        *self.asked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_asked(&self, at: Instant) {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        *asked = (*asked).max(at);
    }
}

impl KeyHierarchy {
    /// Records an erasure this process learnt of (`None`: anyone's may have
    /// happened) so that no cached key of the user is served again and
    /// every open stream re-checks its user at its next piece.
    pub(super) async fn note_erased(&self, p: Option<Pseudonym>) {
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

    /// Fails with [`KeyError::UserErased`] if the store holds the user's
    /// tombstone, or [`KeyError::ErasurePending`] while their erasure is
    /// scheduled: the two states in which nothing of theirs is served.
    ///
    /// # Errors
    /// As described, or store failures.
    pub(super) async fn ensure_unrestricted(&self, p: &Pseudonym) -> Result<(), KeyError> {
        if self.store.tombstone(p).await?.is_some() {
            return Err(KeyError::UserErased);
        }
        match self.store.scheduled_erasure(p).await? {
            Some(s) if s.state == ScheduleState::Scheduled => match self.holding_cases(p).await? {
                0 => Err(KeyError::ErasurePending { due_ms: s.due_ms }),
                cases => Err(KeyError::Restricted { cases }),
            },
            _ => Ok(()),
        }
    }

    /// How many cases hold the user under legal hold now.
    ///
    /// # Errors
    /// Store failures.
    pub async fn holding_cases(&self, p: &Pseudonym) -> Result<usize, KeyError> {
        Ok(self
            .store
            .holds(Some(p), None, crate::keys::store::MAX_CASES_COUNTED)
            .await?
            .len())
    }

    /// Up to `limit` users who hold a key, after `after`, in pseudonym
    /// order (erased users hold none): a scan of every user for a job
    /// that visits them all.
    ///
    /// # Errors
    /// Store failures.
    pub async fn users_after(
        &self,
        after: Option<&Pseudonym>,
        limit: u32,
    ) -> Result<Vec<Pseudonym>, KeyError> {
        let rows = self
            .store
            .user_keys_in_order(after.map(|p| (*p, u32::MAX)), limit)
            .await?;
        let mut users: Vec<Pseudonym> = rows.into_iter().map(|r| r.pseudonym).collect();
        users.dedup();
        Ok(users)
    }

    /// Fails with [`KeyError::LegalHold`] while any case holds the user:
    /// for the calls that would destroy or replace their data or keys.
    ///
    /// # Errors
    /// As described, or store failures.
    pub async fn ensure_not_held(&self, p: &Pseudonym) -> Result<(), KeyError> {
        match self.holding_cases(p).await? {
            0 => Ok(()),
            cases => Err(KeyError::LegalHold { cases }),
        }
    }

    /// Users were restricted (their erasure scheduled) or given back (it
    /// was cancelled): their cached keys go, and every open stream asks
    /// the store at its next check.
    pub async fn note_restricted(&self, ps: &[Pseudonym]) {
        for p in ps {
            self.users.invalidate(p).await;
        }
        let mut log = self.erasure_log.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = log.push(None);
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
                Ok(None) => match self.store.scheduled_erasure(&p).await {
                    // Restricted: its open streams end at their next check.
                    Ok(Some(s)) if s.state == ScheduleState::Scheduled => {
                        self.note_restricted(&[p]).await;
                    }
                    _ => self.users.invalidate(&p).await,
                },
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
                // The listener listens (again): what it missed meanwhile,
                // every watch asks the store for at its next check.
                self.feed_healthy.store(true, Ordering::Release);
            }
            Invalidation::Interrupted => {
                self.feed_healthy.store(false, Ordering::Release);
                self.note_erased(None).await;
            }
        }
    }

    /// Applies every change of `feed` (the store's
    /// [`KeyStore::invalidations`]) until it ends or the hierarchy is
    /// dropped. Once it ended, nothing tells this process of other
    /// processes' erasures: every watch asks the store at every check.
    pub fn follow(self: &Arc<Self>, mut feed: Invalidations) -> tokio::task::JoinHandle<()> {
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(change) = feed.recv().await {
                let Some(keys) = keys.upgrade() else { return };
                keys.apply(change).await;
            }
            if let Some(keys) = keys.upgrade() {
                keys.feed_healthy.store(false, Ordering::Release);
            }
        })
    }

    /// Starts watching a user for erasure. Take the watch before getting
    /// the user's key, so an erasure between the two is seen. The store
    /// counts as last asked when the user's cached key was loaded, if one
    /// is cached, since the stream may be served from it.
    pub async fn watch(&self, p: &Pseudonym) -> ErasureWatch {
        let seen = self.erasure_epoch.load(Ordering::Acquire);
        let cached = self.users.get(p).await;
        Self::watch_from(p, seen, cached.as_deref())
    }

    /// [`Self::watch`] and then the user's keys, as opening an object for
    /// content calls needs them, with one lookup of the cache: the watch
    /// begins before the keys are got, and counts the store as asked when
    /// they were loaded.
    ///
    /// # Errors
    /// As [`Self::user_key`].
    pub async fn watch_with_keys(
        &self,
        p: &Pseudonym,
    ) -> Result<(ErasureWatch, UserKeyRing), KeyError> {
        let seen = self.erasure_epoch.load(Ordering::Acquire);
        let keys = self.user_keys(p).await?;
        Ok((Self::watch_from(p, seen, Some(&keys)), UserKeyRing(keys)))
    }

    fn watch_from(p: &Pseudonym, seen: u64, cached: Option<&UserKeys>) -> ErasureWatch {
        let now = Instant::now();
        let asked = cached.map_or(now, |k| k.asked.min(now));
        ErasureWatch {
            pseudonym: *p,
            seen,
            asked: Arc::new(Mutex::new(asked)),
            disclosure: false,
        }
    }

    /// Fails with [`KeyError::UserErased`] if the watched user was erased
    /// since the watch began. One atomic load unless this process learnt
    /// of an erasure since the last check, or the store is due to be asked
    /// (`cache.ttl_seconds` since it was last asked for the watch, or the
    /// feed of other processes' changes is interrupted); a watch older
    /// than the in-memory log asks the key store too.
    ///
    /// # Errors
    /// As described, or store failures.
    pub async fn check_watch(&self, watch: &mut ErasureWatch) -> Result<(), KeyError> {
        let now = self.erasure_epoch.load(Ordering::Acquire);
        let due = !self.feed_healthy.load(Ordering::Acquire)
            || watch.asked().elapsed() >= self.recheck_interval;
        if now == watch.seen && !due {
            return Ok(());
        }
        self.ensure_not_decommissioned()?;
        let known = if due {
            None
        } else {
            self.erasure_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .erased_since(&watch.pseudonym, watch.seen)
        };
        match known {
            Some(true) => return Err(KeyError::UserErased),
            Some(false) => {}
            None => {
                let asking = Instant::now();
                if watch.disclosure {
                    self.ensure_no_tombstone(&watch.pseudonym).await?;
                } else {
                    self.ensure_unrestricted(&watch.pseudonym).await?;
                }
                watch.set_asked(asking);
            }
        }
        watch.seen = now;
        Ok(())
    }
}
