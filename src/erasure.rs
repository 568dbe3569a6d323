//! Erasure: crypto-shredding of users, at once or after a cooling-off
//! window, one at a time or in batches; the state of their garbage
//! collection; and the erasure feed.
//!
//! Erasing destroys every version of the user's key and writes the
//! tombstone in one key-store transaction ([`KeyHierarchy::erase_many`]);
//! from then on nothing of the user's is readable. The garbage-collection
//! job that deletes their ciphertext runs afterwards ([`crate::jobs::gc`]).
//! A batch shares its transaction and its scrub.
//!
//! The tombstone, its audit record, the job's row and the feed event are
//! written in that one transaction, which a legal hold refuses
//! (`LEGAL_HOLD`; the refusal is audited too). Erasing again is idempotent:
//! it returns the first receipt and schedules the job again.
//!
//! An erasure with a window (`after`) is scheduled instead: the user is
//! restricted at once (content calls fail `ERASURE_PENDING`; their keys
//! stay), `cancel` gives them back, and at the deadline [`Erasure::run_due`]
//! (every `erasure.due_check_seconds`, in every process) erases them as
//! above, once: the erasure checks, under the user's lock, that it is
//! still scheduled and due. A held user's deadline waits for the hold.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::Pseudonym;
use crate::error::{Error, Reason};
use crate::jobs::JobRunner;
use crate::keys::store::{
    CancelOutcome, EraseOutcome, ErasureEvent, JobRecord, KeyStore, ScheduleOutcome, ScheduleState,
    ScheduledErasure, Tombstone,
};
use crate::keys::KeyHierarchy;
use crate::receipt::keys::ReceiptSigner;

/// The most users one batch may name.
pub const MAX_BATCH: usize = 1000;

/// Longest request id of a batch, in bytes.
pub const MAX_REQUEST_ID: usize = 64;

/// The principal that carries out scheduled erasures at their deadline
/// (the audit record of the scheduling names who asked).
pub const SCHEDULE_PRINCIPAL: &str = "erasure-schedule";

/// The erasure service.
pub struct Erasure {
    keys: Arc<KeyHierarchy>,
    store: Arc<dyn KeyStore>,
    jobs: JobRunner,
    settings: ErasureSettings,
    /// Woken after every change this process commits, so that watchers
    /// here see it at once (others poll).
    changed: tokio::sync::watch::Sender<u64>,
    /// Signs erasure receipts ([`Self::with_receipts`]).
    receipts: Option<Arc<ReceiptSigner>>,
}

/// The settings of the deletion workflow.
#[derive(Debug, Clone)]
pub struct ErasureSettings {
    /// The longest cooling-off window.
    pub max_cooloff: Duration,
    /// How long feed events are kept.
    pub feed_retention: Duration,
}

/// What asking for a user's erasure did.
#[derive(Debug, Clone)]
pub enum Asked {
    /// Erased (now or before): the tombstone and its signed receipt file.
    Erased(Tombstone, Vec<u8>),
    /// Scheduled (now or before), or cancelled since by the same request.
    Scheduled(ScheduledErasure),
    /// Legal holds by this many cases cover the user: the erasure is
    /// recorded, the user restricted, and it runs when the last is released.
    PendingHold(Pseudonym, usize),
}

/// Where a user's erasure stands, as GetErasure reports it.
#[derive(Debug, Clone)]
pub enum ErasureStatus {
    /// Erased: the receipt, and its garbage-collection job if recorded.
    Erased {
        /// The record of the erasure.
        tombstone: Tombstone,
        /// Its signed receipt file.
        receipt: Vec<u8>,
        /// Its garbage-collection job, if recorded.
        gc: Option<Box<JobRecord>>,
    },
    /// Scheduled or cancelled.
    Scheduled(ScheduledErasure),
    /// Asked for while held by this many cases: runs once they release.
    PendingHold(ScheduledErasure, usize),
}

impl Erasure {
    /// Builds the service.
    pub fn new(
        keys: Arc<KeyHierarchy>,
        store: Arc<dyn KeyStore>,
        jobs: JobRunner,
        settings: ErasureSettings,
    ) -> Self {
        Self {
            keys,
            store,
            jobs,
            settings,
            changed: tokio::sync::watch::Sender::new(0),
            receipts: None,
        }
    }

    /// Signs erasure receipts with `signer` ([`Self::receipts`]).
    #[must_use]
    pub fn with_receipts(mut self, signer: Arc<ReceiptSigner>) -> Self {
        self.receipts = Some(signer);
        self
    }

    /// The signed receipt file of an erasure (FORMAT.md, "Erasure
    /// receipts"): see [`Self::receipts`].
    ///
    /// # Errors
    /// As [`Self::receipts`].
    pub async fn receipt(&self, t: &Tombstone) -> Result<Vec<u8>, Error> {
        self.receipts(std::slice::from_ref(t))
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("no erasure receipt".into()))
    }

    /// The signed receipt files of erasures, in order: the stored ones,
    /// the others signed now (with the backup horizon of now) and stored
    /// in one transaction, so every later call returns the same bytes.
    ///
    /// # Errors
    /// Master-key and key-store failures; [`Error::Internal`] without a
    /// signer.
    pub async fn receipts(&self, ts: &[Tombstone]) -> Result<Vec<Vec<u8>>, Error> {
        let ps: Vec<Pseudonym> = ts.iter().map(|t| t.pseudonym).collect();
        let mut held: HashMap<Pseudonym, Vec<u8>> = self
            .store
            .erasure_receipts(&ps)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<&Tombstone> = ts
            .iter()
            .filter(|t| !held.contains_key(&t.pseudonym))
            .collect();
        if !missing.is_empty() {
            let signer = self
                .receipts
                .as_ref()
                .ok_or_else(|| Error::Internal("erasure receipts are not configured".into()))?;
            let mut signed = Vec::with_capacity(missing.len());
            for t in missing {
                signed.push((
                    t.pseudonym,
                    signer.sign(t, self.backup_horizon_ms(t)).await?,
                ));
            }
            held.extend(self.store.set_erasure_receipts(&signed).await?);
        }
        ts.iter()
            .map(|t| {
                held.get(&t.pseudonym)
                    .cloned()
                    .ok_or_else(|| Error::Internal("an erasure receipt went missing".into()))
            })
            .collect()
    }

    /// Every receipt-signing public key ever used, by key id.
    ///
    /// # Errors
    /// Key-store failures.
    pub async fn receipt_public_keys(&self) -> Result<Vec<crate::receipt::PublicKey>, Error> {
        crate::receipt::keys::public_keys(&*self.store).await
    }

    fn pseudonym(&self, user_id: &str) -> Result<Pseudonym, Error> {
        self.keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))
    }

    /// The window `after` asks for, checked against the longest allowed.
    fn window(&self, after: Duration) -> Result<Option<Duration>, Error> {
        if after.is_zero() {
            return Ok(None);
        }
        if after > self.settings.max_cooloff {
            return Err(Error::invalid(
                Reason::InvalidRequest,
                "after_seconds",
                format!(
                    "after_seconds {} is past the longest cooling-off window, {} s (erasure.max_cooloff_days)",
                    after.as_secs(),
                    self.settings.max_cooloff.as_secs()
                ),
            ));
        }
        Ok(Some(after))
    }

    /// Erases a user for `principal` (or schedules it `after` from now):
    /// see [`Erasure::erase_many`].
    ///
    /// # Errors
    /// As [`Erasure::erase_many`]'s per-user results, or its errors.
    pub async fn erase(
        &self,
        principal: &str,
        user_id: &str,
        after: Duration,
    ) -> Result<Asked, Error> {
        self.erase_many(principal, &[user_id.to_string()], after, "")
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("an erasure without an outcome".into())))
    }

    /// Erases the users of `user_ids` for `principal` in shared
    /// transactions, or with a window (`after` non-zero) schedules their
    /// erasure; one result per id, in order (a user named twice gets the
    /// same result twice). Idempotent: erasing again returns the first
    /// receipt, scheduling again the first deadline; a retry under the
    /// same `request_id` does not schedule again what was cancelled since.
    ///
    /// # Errors
    /// For the whole batch: too many ids, a bad window or request id, or
    /// key-store failures (in which case nothing was destroyed). Per user:
    /// a bad user id, or `LEGAL_HOLD`.
    pub async fn erase_many(
        &self,
        principal: &str,
        user_ids: &[String],
        after: Duration,
        request_id: &str,
    ) -> Result<Vec<Result<Asked, Error>>, Error> {
        if user_ids.len() > MAX_BATCH {
            return Err(Error::invalid(
                Reason::BatchTooLarge,
                "user_ids",
                format!(
                    "{} user ids; one EraseUsers takes at most {MAX_BATCH}",
                    user_ids.len()
                ),
            ));
        }
        if request_id.len() > MAX_REQUEST_ID {
            return Err(Error::invalid(
                Reason::InvalidRequest,
                "request_id",
                format!("request_id is over {MAX_REQUEST_ID} bytes"),
            ));
        }
        let window = self.window(after)?;
        let named: Vec<Result<Pseudonym, Error>> =
            user_ids.iter().map(|u| self.pseudonym(u)).collect();
        let mut distinct: Vec<Pseudonym> = named
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .copied()
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        let mut results: HashMap<Pseudonym, Result<Asked, Error>> = HashMap::new();
        if !distinct.is_empty() {
            match window {
                None => self.erase_now(principal, &distinct, &mut results).await?,
                Some(after) => {
                    self.schedule(principal, &distinct, after, request_id, &mut results)
                        .await?;
                }
            }
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(named
            .into_iter()
            .map(|p| {
                let p = p?;
                results
                    .get(&p)
                    .cloned()
                    .unwrap_or_else(|| Err(Error::Internal("a user without an outcome".into())))
            })
            .collect())
    }

    async fn erase_now(
        &self,
        principal: &str,
        ps: &[Pseudonym],
        results: &mut HashMap<Pseudonym, Result<Asked, Error>>,
    ) -> Result<(), Error> {
        let outcomes = self.keys.erase_many(ps, principal, false).await?;
        let mut restricted = Vec::new();
        let erased: Vec<Tombstone> = outcomes
            .iter()
            .filter_map(|o| match o {
                EraseOutcome::Erased(t) => Some(t.clone()),
                _ => None,
            })
            .collect();
        // Signed right after the commit, before the garbage collections
        // start (they write to the store too); if signing fails the
        // erasures stand, and asking again (or GetErasure) signs them.
        let signed = self.receipts(&erased).await;
        for t in &erased {
            self.erased(principal, t);
        }
        let receipts: HashMap<Pseudonym, Vec<u8>> = erased
            .iter()
            .map(|t| t.pseudonym)
            .zip(signed.inspect_err(|e| {
                tracing::warn!(error = %e, "users erased, but their receipts could not be signed; erasing again signs them");
            })?)
            .collect();
        for (p, outcome) in ps.iter().zip(outcomes) {
            let result = match outcome {
                EraseOutcome::Erased(t) => {
                    let receipt = receipts.get(p).cloned().unwrap_or_default();
                    Ok(Asked::Erased(t, receipt))
                }
                EraseOutcome::Held { cases } => {
                    tracing::info!(
                        target: "sealgate::audit",
                        event = "erase_user",
                        principal,
                        pseudonym = %p,
                        outcome = "pending_hold",
                        cases,
                        "user under legal hold: erasure recorded, runs when the last hold is released"
                    );
                    restricted.push(*p);
                    Ok(Asked::PendingHold(*p, cases))
                }
                EraseOutcome::NotDue => Err(Error::Internal(
                    "an erasure at once found nothing due".into(),
                )),
            };
            results.insert(*p, result);
        }
        self.keys.note_restricted(&restricted).await;
        Ok(())
    }

    async fn schedule(
        &self,
        principal: &str,
        ps: &[Pseudonym],
        after: Duration,
        request_id: &str,
        results: &mut HashMap<Pseudonym, Result<Asked, Error>>,
    ) -> Result<(), Error> {
        let now = crate::keys::unix_ms();
        let due = now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        let outcomes = self
            .store
            .schedule_erasures(ps, due, now, principal, request_id)
            .await?;
        let mut restricted = Vec::new();
        for (p, outcome) in ps.iter().zip(outcomes) {
            let result = match outcome {
                ScheduleOutcome::Scheduled(s) => {
                    tracing::info!(
                        target: "sealgate::audit",
                        event = "schedule_erasure",
                        principal,
                        outcome = "ok",
                        pseudonym = %p,
                        due_ms = s.due_ms,
                        "user's erasure scheduled"
                    );
                    restricted.push(*p);
                    Ok(Asked::Scheduled(s))
                }
                ScheduleOutcome::Erased(t) => {
                    let receipt = self.receipt(&t).await?;
                    Ok(Asked::Erased(t, receipt))
                }
            };
            results.insert(*p, result);
        }
        self.keys.note_restricted(&restricted).await;
        Ok(())
    }

    /// Logs an erasure and starts its garbage collection.
    fn erased(&self, principal: &str, t: &Tombstone) {
        tracing::info!(
            target: "sealgate::audit",
            event = "erase_user",
            principal,
            outcome = "ok",
            pseudonym = %t.pseudonym,
            versions = ?t.destroyed_versions,
            job = %t.gc_job_id,
            "user erased"
        );
        self.jobs.schedule(&t.gc_job_id);
    }

    /// Calls off a user's scheduled erasure, for `principal`.
    ///
    /// # Errors
    /// [`Error::ErasureNotFound`] if none was scheduled,
    /// [`Error::UserErased`] once it ran; key-store failures.
    pub async fn cancel(&self, principal: &str, user_id: &str) -> Result<ErasureStatus, Error> {
        let p = self.pseudonym(user_id)?;
        let outcome = self
            .store
            .cancel_erasure(&p, crate::keys::unix_ms(), principal)
            .await?;
        match outcome {
            CancelOutcome::Cancelled(s) => {
                tracing::info!(
                    target: "sealgate::audit",
                    event = "cancel_erasure",
                    principal,
                    outcome = "ok",
                    pseudonym = %p,
                    "user's scheduled erasure cancelled"
                );
                self.keys.note_restricted(&[p]).await;
                self.changed.send_modify(|n| *n += 1);
                Ok(ErasureStatus::Scheduled(s))
            }
            CancelOutcome::NotScheduled => Err(Error::ErasureNotFound),
            CancelOutcome::Erased(_) => Err(Error::UserErased),
        }
    }

    /// When a key-store copy from before this erasure stops opening the
    /// user's keys under the current key schedule; `None` without one.
    pub fn backup_horizon_ms(&self, t: &Tombstone) -> Option<i64> {
        self.keys.backup_horizon_ms(t.erased_at_ms)
    }

    /// Where a user's erasure stands: erased (with its receipt and
    /// garbage-collection progress), scheduled or cancelled.
    ///
    /// # Errors
    /// [`Error::ErasureNotFound`] if the user was never erased nor
    /// scheduled; key-store failures.
    pub async fn status(&self, user_id: &str) -> Result<ErasureStatus, Error> {
        let p = self.pseudonym(user_id)?;
        // The schedule first: an erasure that commits between the two reads
        // (deleting the schedule, writing the tombstone) is then seen as
        // erased, never as neither.
        let schedule = self.store.scheduled_erasure(&p).await?;
        if let Some(tombstone) = self.store.tombstone(&p).await? {
            let gc = self.store.job(&tombstone.gc_job_id).await?.map(Box::new);
            // Signed here if the process that erased died before signing.
            let receipt = self.receipt(&tombstone).await?;
            return Ok(ErasureStatus::Erased {
                tombstone,
                receipt,
                gc,
            });
        }
        let Some(s) = schedule else {
            return Err(Error::ErasureNotFound);
        };
        if s.state == ScheduleState::Scheduled {
            let cases = self.keys.holding_cases(&p).await?;
            if cases > 0 {
                return Ok(ErasureStatus::PendingHold(s, cases));
            }
        }
        Ok(ErasureStatus::Scheduled(s))
    }

    /// Carries out the scheduled erasures that are due (up to a batch),
    /// and drops feed events past their retention. Every process runs it;
    /// each user is erased once (checked under the user's lock). Returns
    /// how many users this pass erased.
    ///
    /// # Errors
    /// Key-store failures (the next pass tries again).
    pub async fn run_due(&self) -> Result<usize, Error> {
        let now = crate::keys::unix_ms();
        let due = self.store.due_erasures(now, MAX_BATCH as u32).await?;
        let mut erased = 0;
        if !due.is_empty() {
            let outcomes = self.keys.erase_many(&due, SCHEDULE_PRINCIPAL, true).await?;
            let mut done = Vec::new();
            for outcome in outcomes {
                if let EraseOutcome::Erased(t) = outcome {
                    if t.erased_at_ms >= now {
                        erased += 1;
                    }
                    done.push(t);
                }
            }
            // Signed now; if that fails, GetErasure signs them later.
            if let Err(e) = self.receipts(&done).await {
                tracing::warn!(error = %e, "scheduled erasures ran, but their receipts could not be signed yet");
            }
            for t in &done {
                self.erased(SCHEDULE_PRINCIPAL, t);
            }
            self.changed.send_modify(|n| *n += 1);
        }
        let retention = i64::try_from(self.settings.feed_retention.as_millis()).unwrap_or(i64::MAX);
        self.store
            .prune_erasure_events(now.saturating_sub(retention))
            .await?;
        Ok(erased)
    }

    /// Feed events after `after`, at most `limit`.
    ///
    /// # Errors
    /// [`Error::CursorExpired`] if events after `after` were dropped by
    /// retention; key-store failures.
    pub async fn events(&self, after: u64, limit: u32) -> Result<Vec<ErasureEvent>, Error> {
        let floor = self.store.erasure_feed_floor().await?;
        if after < floor {
            return Err(Error::CursorExpired { from: after, floor });
        }
        Ok(self.store.erasure_events(after, limit).await?)
    }

    /// Changes when this process commits an erasure-feed event.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
