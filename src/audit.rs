//! The audit trail: every key lifecycle event, erasure, legal hold and
//! permission denial, appended to the key store as a hash chain (each
//! record carries the SHA-256 of its predecessor, [`audit_hash`]) and
//! emitted on the tracing target `sealgate::audit`.
//!
//! Records written with the operation they record (erasure, holds, user
//! keys) share its key-store transaction: if the record cannot be written,
//! the operation did not happen. Denials are written before the caller
//! hears of them. Records name users by pseudonym only and hold no key
//! material.
//!
//! [`AuditTrail::verify`] recomputes the chain and names the first record
//! that was edited, or whose predecessor was removed; the store also keeps
//! the id and hash of the newest record apart, so removing the newest
//! records is seen too.

use std::sync::Arc;

use crate::crypto::Pseudonym;
use crate::error::{Error, Reason};
use crate::keys::store::{audit_hash, AuditEntry, AuditLog, AuditRecord};
use crate::keys::KeyHierarchy;

/// Longest page of a listing, and the default.
pub const MAX_PAGE: u32 = 1000;

/// What [`AuditTrail::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Records checked.
    pub records: u64,
    /// The first broken record and what is wrong with it.
    pub broken: Option<(u64, String)>,
}

/// The audit trail.
pub struct AuditTrail {
    keys: Arc<KeyHierarchy>,
    store: Arc<dyn AuditLog>,
}

impl AuditTrail {
    /// Builds the service.
    pub fn new(keys: Arc<KeyHierarchy>, store: Arc<dyn AuditLog>) -> Self {
        Self { keys, store }
    }

    /// Records a refused call by `principal` (`what`: the method, or the
    /// space asked for) with its reason.
    ///
    /// # Errors
    /// Key-store failures: the record was not written.
    pub async fn denied(&self, principal: &str, what: &str, reason: Reason) -> Result<(), Error> {
        tracing::warn!(
            target: "sealgate::audit",
            event = "denied",
            principal,
            what,
            reason = reason.as_str(),
            outcome = "denied",
            "call refused"
        );
        self.store
            .audit(&AuditEntry {
                at_ms: crate::keys::unix_ms(),
                principal: principal.to_string(),
                action: "denied".into(),
                pseudonym: None,
                outcome: "denied".into(),
                detail: format!("{what}: {}", reason.as_str()),
            })
            .await?;
        Ok(())
    }

    /// A page of records (of one user if `user_id` is not empty, from
    /// `since_ms` if given), in order, and the next page's token.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad user id or page token; key-store failures.
    pub async fn list(
        &self,
        user_id: &str,
        since_ms: Option<i64>,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<AuditRecord>, Option<String>), Error> {
        let pseudonym: Option<Pseudonym> = if user_id.is_empty() {
            None
        } else {
            Some(
                self.keys
                    .pseudonym(user_id)
                    .map_err(|e| Error::invalid_name("user_id", e))?,
            )
        };
        let after = if page_token.is_empty() {
            0
        } else {
            page_token.parse::<u64>().map_err(|_| {
                Error::invalid(
                    Reason::InvalidPageToken,
                    "page_token",
                    "page_token is not one this listing gave",
                )
            })?
        };
        let limit = if page_size == 0 {
            MAX_PAGE
        } else {
            page_size.min(MAX_PAGE)
        };
        let records = self
            .store
            .audit_records(after, pseudonym.as_ref(), since_ms, limit)
            .await?;
        let next = (records.len() == limit as usize)
            .then(|| records.last().map(|r| r.id.to_string()))
            .flatten();
        Ok((records, next))
    }

    /// Recomputes the whole chain; the first broken record, if any.
    ///
    /// # Errors
    /// Key-store failures.
    pub async fn verify(&self) -> Result<Verdict, Error> {
        let mut prev: Option<(u64, [u8; 32])> = None;
        let mut records = 0u64;
        loop {
            let after = prev.map_or(0, |(id, _)| id);
            let page = self
                .store
                .audit_records(after, None, None, MAX_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            for r in &page {
                records += 1;
                let (expected_id, expected_prev) =
                    prev.map_or((1, [0u8; 32]), |(id, h)| (id + 1, h));
                let broken = if r.id != expected_id {
                    Some(format!(
                        "records {expected_id} to {} are missing",
                        r.id.saturating_sub(1)
                    ))
                } else if audit_hash(r.id, &r.entry, &r.prev_hash) != r.hash {
                    Some("the record was changed after it was written".to_string())
                } else if r.prev_hash != expected_prev {
                    Some("the record before it was changed or replaced".to_string())
                } else {
                    None
                };
                if let Some(why) = broken {
                    return Ok(Verdict {
                        records,
                        broken: Some((r.id, why)),
                    });
                }
                prev = Some((r.id, r.hash));
            }
        }
        let head = self.store.audit_head().await?;
        if head != prev {
            let last = prev.map_or(0, |(id, _)| id);
            let why = match head {
                Some((id, _)) if id > last => {
                    format!("records {} to {id} were removed", last + 1)
                }
                _ => "the newest record does not match the chain's recorded head".to_string(),
            };
            return Ok(Verdict {
                records,
                broken: Some((last + 1, why)),
            });
        }
        Ok(Verdict {
            records,
            broken: None,
        })
    }
}
