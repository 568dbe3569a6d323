//! Legal holds, placed and released under the user's lock: a hold placed
//! as an erasure runs is seen by it.

use async_trait::async_trait;

use super::{hold_row, SqlStore};
use crate::clock::unix_ms;
use crate::crypto::Pseudonym;
use crate::keys::store::engine::{params, Engine};
use crate::keys::store::{AuditEntry, HoldRecord, HoldStore, PlaceHold, StoreError};

/// The columns of a [`HoldRecord`].
const HOLD_COLUMNS: &str = "pseudonym, case_ref, placed_at_ms, placed_by";

#[async_trait]
impl<E: Engine> HoldStore for SqlStore<E> {
    async fn place_hold(&self, h: &HoldRecord) -> Result<PlaceHold, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_user(&h.pseudonym).await?;
        if tx.tombstone(&h.pseudonym).await?.is_some() {
            tx.commit().await?;
            return Ok(PlaceHold::Erased);
        }
        let sql = format!(
            "SELECT {HOLD_COLUMNS} FROM legal_holds WHERE pseudonym = $1 AND case_ref = $2"
        );
        if let Some(row) = tx.row(&sql, params![&h.pseudonym, &h.case_ref]).await? {
            let existing = hold_row(&row)?;
            tx.commit().await?;
            return Ok(PlaceHold::Exists(existing));
        }
        tx.execute(
            "INSERT INTO legal_holds (pseudonym, case_ref, placed_at_ms, placed_by)
             VALUES ($1, $2, $3, $4)",
            params![&h.pseudonym, &h.case_ref, h.placed_at_ms, &h.placed_by],
        )
        .await?;
        tx.append_audit(&AuditEntry {
            at_ms: h.placed_at_ms,
            principal: h.placed_by.clone(),
            action: "place_hold".into(),
            pseudonym: Some(h.pseudonym),
            outcome: "ok".into(),
            detail: format!("case {}", h.case_ref),
        })
        .await?;
        tx.commit().await?;
        Ok(PlaceHold::Placed)
    }

    async fn release_hold(
        &self,
        p: &Pseudonym,
        case_ref: &str,
        principal: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_user(p).await?;
        let released = tx
            .execute(
                "DELETE FROM legal_holds WHERE pseudonym = $1 AND case_ref = $2",
                params![p, case_ref],
            )
            .await?
            > 0;
        if released {
            tx.append_audit(&AuditEntry {
                at_ms: unix_ms(),
                principal: principal.to_string(),
                action: "release_hold".into(),
                pseudonym: Some(*p),
                outcome: "ok".into(),
                detail: format!("case {case_ref}"),
            })
            .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn holds(
        &self,
        p: Option<&Pseudonym>,
        after: Option<(&Pseudonym, &str)>,
        limit: u32,
    ) -> Result<Vec<HoldRecord>, StoreError> {
        let (after_p, after_case) = after.map_or((String::new(), String::new()), |(p, c)| {
            (p.to_string(), c.to_string())
        });
        let sql = format!(
            "SELECT {HOLD_COLUMNS} FROM legal_holds
             WHERE (CAST($1 AS TEXT) IS NULL OR pseudonym = $1) AND (pseudonym, case_ref) > ($2, $3)
             ORDER BY pseudonym, case_ref LIMIT $4"
        );
        let rows = self
            .rows(&sql, params![p, after_p, after_case, limit])
            .await?;
        rows.iter().map(hold_row).collect()
    }
}
