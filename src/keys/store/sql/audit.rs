//! The audit trail (one hash chain) and the writes remembered by request
//! id.

use async_trait::async_trait;

use super::{audit_record, hash_of_hex, request_row, SqlStore, AUDIT_COLUMNS};
use crate::crypto::Pseudonym;
use crate::keys::store::engine::{params, Engine, SqlRow};
use crate::keys::store::{
    AuditEntry, AuditLog, AuditRecord, RequestLog, RequestRecord, StoreError,
};

#[async_trait]
impl<E: Engine> AuditLog for SqlStore<E> {
    async fn audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let mut tx = self.begin().await?;
        let record = tx.append_audit(entry).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn audit_records(
        &self,
        after_id: u64,
        p: Option<&Pseudonym>,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE id > $1
               AND (CAST($2 AS TEXT) IS NULL OR pseudonym = $2)
               AND (CAST($3 AS BIGINT) IS NULL OR at_ms >= $3) ORDER BY id LIMIT $4"
        );
        let rows = self
            .rows(&sql, params![after_id, p, since_ms, limit])
            .await?;
        rows.iter().map(audit_record).collect()
    }

    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let row = self
            .row("SELECT value FROM meta WHERE key = 'audit_head'", params![])
            .await?;
        let Some(row) = row else { return Ok(None) };
        let value = row.text("value")?;
        let corrupt = || StoreError::Backend("corrupt audit head".into());
        let (id, hash) = value.split_once(' ').ok_or_else(corrupt)?;
        let id = id.parse().map_err(|_| corrupt())?;
        let hash = hash_of_hex(hash).ok_or_else(corrupt)?;
        Ok(Some((id, hash)))
    }
}

/// The columns of a [`RequestRecord`].
const REQUEST_COLUMNS: &str =
    "pseudonym, request, space, requested_id, object_id, size, etag, created_ms, at_ms";

#[async_trait]
impl<E: Engine> RequestLog for SqlStore<E> {
    async fn request(
        &self,
        p: &Pseudonym,
        request: &[u8; 32],
        since_ms: i64,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM requests
             WHERE pseudonym = $1 AND request = $2 AND at_ms >= $3"
        );
        let row = self.row(&sql, params![p, &request[..], since_ms]).await?;
        row.as_ref().map(request_row).transpose()
    }

    async fn remember_request(
        &self,
        r: &RequestRecord,
        since_ms: i64,
    ) -> Result<RequestRecord, StoreError> {
        let size =
            i64::try_from(r.size).map_err(|_| StoreError::Backend("size out of range".into()))?;
        let mut tx = self.begin().await?;
        tx.execute("DELETE FROM requests WHERE at_ms < $1", params![since_ms])
            .await?;
        tx.execute(
            "INSERT INTO requests (pseudonym, request, space, requested_id, object_id, size, etag,
                                   created_ms, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            params![
                &r.pseudonym,
                &r.request[..],
                &r.space,
                &r.requested_id,
                &r.object_id,
                size,
                &r.etag,
                r.created_ms,
                r.at_ms
            ],
        )
        .await?;
        let sql =
            format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE pseudonym = $1 AND request = $2");
        let row = tx
            .row(&sql, params![&r.pseudonym, &r.request[..]])
            .await?
            .ok_or_else(|| StoreError::Backend("request vanished in its own transaction".into()))?;
        let held = request_row(&row)?;
        tx.commit().await?;
        Ok(held)
    }
}
