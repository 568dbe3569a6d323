//! Erasure: crypto-shredding of users, and the state of their garbage
//! collection.
//!
//! Erasing destroys every version of the user's key and writes the
//! tombstone in one key-store transaction ([`KeyHierarchy::erase`]); from
//! then on nothing of the user's is readable. The garbage-collection job that
//! deletes their ciphertext runs afterwards ([`crate::jobs::gc`]).
//!
//! The tombstone, its audit record and the job's row are written in that
//! one transaction, which a legal hold refuses (`LEGAL_HOLD`; the refusal
//! is audited too). Erasing again is idempotent: it returns the first
//! receipt and schedules the job again.

use std::sync::Arc;

use crate::crypto::Pseudonym;
use crate::error::{Error, Reason};
use crate::jobs::JobRunner;
use crate::keys::store::{AuditEntry, JobRecord, KeyStore, Tombstone};
use crate::keys::KeyHierarchy;
use crate::receipt::keys::ReceiptSigner;

/// The erasure service.
pub struct Erasure {
    keys: Arc<KeyHierarchy>,
    store: Arc<dyn KeyStore>,
    jobs: JobRunner,
    /// Signs erasure receipts ([`Self::with_receipts`]).
    receipts: Option<Arc<ReceiptSigner>>,
}

/// What GetErasure reports.
#[derive(Debug, Clone)]
pub struct ErasureStatus {
    /// The receipt of the erasure.
    pub tombstone: Tombstone,
    /// Its garbage-collection job, if recorded.
    pub gc: Option<JobRecord>,
}

impl Erasure {
    /// Builds the service.
    pub fn new(keys: Arc<KeyHierarchy>, store: Arc<dyn KeyStore>, jobs: JobRunner) -> Self {
        Self {
            keys,
            store,
            jobs,
            receipts: None,
        }
    }

    /// Signs erasure receipts with `signer` ([`Self::receipt`]).
    #[must_use]
    pub fn with_receipts(mut self, signer: Arc<ReceiptSigner>) -> Self {
        self.receipts = Some(signer);
        self
    }

    fn pseudonym(&self, user_id: &str) -> Result<Pseudonym, Error> {
        self.keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))
    }

    /// Erases a user for `principal`: destroys every version of their key,
    /// records the tombstone and the audit record, and schedules the
    /// garbage collection of their objects.
    /// Idempotent: erasing again returns the first receipt.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad user id; key-store failures, in
    /// which case nothing was destroyed.
    pub async fn erase(&self, principal: &str, user_id: &str) -> Result<Tombstone, Error> {
        let p = self.pseudonym(user_id)?;
        let tombstone = match self.keys.erase(&p, principal).await {
            Ok(t) => t,
            Err(e) => {
                let e = Error::from(e);
                if e.reason() == Reason::LegalHold {
                    // A refused erasure is on the record too; if that record
                    // cannot be written, the caller hears of the failure.
                    tracing::info!(
                        target: "sealgate::audit",
                        event = "erase_user",
                        principal,
                        pseudonym = %p,
                        outcome = "refused",
                        "erasure refused: legal hold"
                    );
                    self.store
                        .audit(&AuditEntry {
                            at_ms: crate::keys::unix_ms(),
                            principal: principal.to_string(),
                            action: "erase_user".into(),
                            pseudonym: Some(p),
                            outcome: "refused".into(),
                            detail: e.to_string(),
                        })
                        .await?;
                }
                return Err(e);
            }
        };
        tracing::info!(
            target: "sealgate::audit",
            event = "erase_user",
            principal,
            outcome = "ok",
            pseudonym = %p,
            versions = ?tombstone.destroyed_versions,
            job = %tombstone.gc_job_id,
            "user erased"
        );
        self.jobs.schedule(&tombstone.gc_job_id);
        Ok(tombstone)
    }

    /// [`Self::erase`], then the erasure's signed receipt
    /// ([`Self::receipt`]), made right after the erasure commits.
    ///
    /// # Errors
    /// Those of [`Self::erase`]; those of [`Self::receipt`], in which case
    /// the erasure stands and erasing again returns its receipt.
    pub async fn erase_signed(
        &self,
        principal: &str,
        user_id: &str,
    ) -> Result<(Tombstone, Vec<u8>), Error> {
        let tombstone = self.erase(principal, user_id).await?;
        let receipt = self.receipt(&tombstone).await.inspect_err(|e| {
            tracing::warn!(
                pseudonym = %tombstone.pseudonym,
                error = %e,
                "user erased, but its receipt could not be signed; erasing again signs it"
            );
        })?;
        Ok((tombstone, receipt))
    }

    /// The signed receipt file of an erasure (FORMAT.md, "Erasure
    /// receipts"): the stored one, else signed now (with the backup horizon
    /// of now) and stored, so every later call returns the same bytes.
    ///
    /// # Errors
    /// Master-key and key-store failures; [`Error::Internal`] without a
    /// signer.
    pub async fn receipt(&self, t: &Tombstone) -> Result<Vec<u8>, Error> {
        if let Some(stored) = self.store.erasure_receipt(&t.pseudonym).await? {
            return Ok(stored);
        }
        let signer = self
            .receipts
            .as_ref()
            .ok_or_else(|| Error::Internal("erasure receipts are not configured".into()))?;
        let signed = signer.sign(t, self.backup_horizon_ms(t)).await?;
        Ok(self
            .store
            .set_erasure_receipt(&t.pseudonym, &signed)
            .await?)
    }

    /// Every receipt-signing public key ever used, by key id.
    ///
    /// # Errors
    /// Key-store failures.
    pub async fn receipt_public_keys(&self) -> Result<Vec<crate::receipt::PublicKey>, Error> {
        crate::receipt::keys::public_keys(&*self.store).await
    }

    /// When a key-store copy from before this erasure stops opening the
    /// user's keys under the current key schedule; `None` without one.
    pub fn backup_horizon_ms(&self, t: &Tombstone) -> Option<i64> {
        self.keys.backup_horizon_ms(t.erased_at_ms)
    }

    /// The receipt and garbage-collection progress of a user's erasure.
    ///
    /// # Errors
    /// [`Error::ErasureNotFound`] if the user was never erased; key-store
    /// failures.
    pub async fn status(&self, user_id: &str) -> Result<ErasureStatus, Error> {
        let p = self.pseudonym(user_id)?;
        let tombstone = self
            .store
            .tombstone(&p)
            .await?
            .ok_or(Error::ErasureNotFound)?;
        let gc = self.store.job(&tombstone.gc_job_id).await?;
        Ok(ErasureStatus { tombstone, gc })
    }
}
