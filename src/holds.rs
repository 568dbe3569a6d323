//! Legal holds: a case (litigation, a criminal investigation) stops a
//! user's erasure until it releases them. Several cases can hold one user;
//! erasure fails `LEGAL_HOLD` while any does (checked inside the erasure's
//! own key-store transaction, so a hold placed at the same moment is never
//! missed).
//!
//! Holds name users by pseudonym only; placing and releasing one is
//! recorded in the audit trail with the principal that did it.

use std::sync::Arc;

use crate::crypto::Pseudonym;
use crate::error::{Error, Reason};
use crate::keys::store::{HoldRecord, HoldStore, PlaceHold};
use crate::keys::KeyHierarchy;

/// Longest page of a hold listing, and the default.
pub const MAX_PAGE: u32 = 1000;

/// The legal-hold service.
pub struct LegalHolds {
    keys: Arc<KeyHierarchy>,
    store: Arc<dyn HoldStore>,
}

impl LegalHolds {
    /// Builds the service.
    pub fn new(keys: Arc<KeyHierarchy>, store: Arc<dyn HoldStore>) -> Self {
        Self { keys, store }
    }

    fn pseudonym(&self, user_id: &str) -> Result<Pseudonym, Error> {
        self.keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))
    }

    /// Places `case_ref`'s hold on a user, by `principal`. Placing the same
    /// case again returns the existing hold.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad user id or case reference, USER_ERASED if
    /// the user is already erased, key-store failures.
    pub async fn place(
        &self,
        principal: &str,
        user_id: &str,
        case_ref: &str,
    ) -> Result<HoldRecord, Error> {
        let pseudonym = self.pseudonym(user_id)?;
        check_case(case_ref)?;
        let hold = HoldRecord {
            pseudonym,
            case_ref: case_ref.to_string(),
            placed_at_ms: crate::keys::unix_ms(),
            placed_by: principal.to_string(),
        };
        match self.store.place_hold(&hold).await? {
            PlaceHold::Placed => {
                tracing::info!(
                    target: "sealgate::audit",
                    event = "place_hold",
                    principal,
                    pseudonym = %pseudonym,
                    case = case_ref,
                    outcome = "ok",
                    "legal hold placed"
                );
                Ok(hold)
            }
            PlaceHold::Exists(existing) => Ok(existing),
            PlaceHold::Erased => Err(Error::UserErased),
        }
    }

    /// Releases `case_ref`'s hold on a user; whether there was one.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad user id or case reference; key-store
    /// failures.
    pub async fn release(
        &self,
        principal: &str,
        user_id: &str,
        case_ref: &str,
    ) -> Result<bool, Error> {
        let pseudonym = self.pseudonym(user_id)?;
        check_case(case_ref)?;
        let released = self
            .store
            .release_hold(&pseudonym, case_ref, principal)
            .await?;
        if released {
            tracing::info!(
                target: "sealgate::audit",
                event = "release_hold",
                principal,
                pseudonym = %pseudonym,
                case = case_ref,
                outcome = "ok",
                "legal hold released"
            );
        }
        Ok(released)
    }

    /// A page of holds (of one user, if `user_id` is not empty) and the
    /// token of the next page, if any.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad user id or page token; key-store failures.
    pub async fn list(
        &self,
        user_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<HoldRecord>, Option<String>), Error> {
        let pseudonym = if user_id.is_empty() {
            None
        } else {
            Some(self.pseudonym(user_id)?)
        };
        let after = parse_token(page_token)?;
        let limit = if page_size == 0 {
            MAX_PAGE
        } else {
            page_size.min(MAX_PAGE)
        };
        let holds = self
            .store
            .holds(
                pseudonym.as_ref(),
                after.as_ref().map(|(p, c)| (p, c.as_str())),
                limit,
            )
            .await?;
        let next = (holds.len() == limit as usize)
            .then(|| {
                holds
                    .last()
                    .map(|h| format!("{}/{}", h.pseudonym, h.case_ref))
            })
            .flatten();
        Ok((holds, next))
    }
}

/// A case reference: like a stored name, `[A-Za-z0-9._-]`, 1 to 128
/// bytes, no leading dot.
fn check_case(case_ref: &str) -> Result<(), Error> {
    crate::names::check_name(case_ref)
        .map_err(|e| Error::invalid(Reason::InvalidRequest, "case_ref", format!("case_ref {e}")))
}

/// A page token: the pseudonym and case of the last hold of the previous
/// page.
fn parse_token(token: &str) -> Result<Option<(Pseudonym, String)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::invalid(
            Reason::InvalidPageToken,
            "page_token",
            "page_token is not one this listing gave",
        )
    };
    let (p, case) = token.split_once('/').ok_or_else(bad)?;
    let p = Pseudonym::from_hex(p).map_err(|_| bad())?;
    check_case(case).map_err(|_| bad())?;
    Ok(Some((p, case.to_string())))
}
