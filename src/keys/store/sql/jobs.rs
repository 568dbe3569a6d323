//! Durable jobs and their leases. A lease is taken or kept by one
//! conditional statement: of two processes racing for a job, one gets it.

use async_trait::async_trait;

use super::{job_row, u64_or_zero, SqlStore, JOB_COLUMNS};
use crate::clock::unix_ms;
use crate::keys::store::engine::{params, Engine, SqlRow};
use crate::keys::store::{
    AuditEntry, JobCheckpoint, JobRecord, JobState, JobStore, NewJob, StoreError,
};

fn jobs(rows: &[impl SqlRow]) -> Result<Vec<JobRecord>, StoreError> {
    rows.iter().map(job_row).collect()
}

#[async_trait]
impl<E: Engine> JobStore for SqlStore<E> {
    async fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row = self.row(&sql, params![id]).await?;
        row.as_ref().map(job_row).transpose()
    }

    async fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'running')
             ORDER BY created_at_ms, id"
        );
        jobs(&self.rows(&sql, params![]).await?)
    }

    async fn list_jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (CAST($1 AS TEXT) IS NULL OR state = $1)
             ORDER BY created_at_ms DESC, id LIMIT $2"
        );
        let rows = self
            .rows(&sql, params![state.map(JobState::as_str), limit])
            .await?;
        jobs(&rows)
    }

    async fn job_counts(&self) -> Result<Vec<(String, JobState, u64)>, StoreError> {
        let rows = self
            .rows(
                "SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state",
                params![],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.text("kind")?,
                    JobState::parse(&r.text("state")?)?,
                    u64_or_zero(r.int("n")?),
                ))
            })
            .collect()
    }

    async fn create_job(&self, job: &NewJob, exclusive: bool) -> Result<JobRecord, StoreError> {
        let now = unix_ms();
        let mut tx = self.begin().await?;
        if exclusive {
            self.engine.lock_job_kind(&mut tx.tx, &job.kind).await?;
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $1 AND state IN ('pending', 'running')
                 ORDER BY created_at_ms LIMIT 1"
            );
            if let Some(row) = tx.row(&sql, params![&job.kind]).await? {
                let existing = job_row(&row)?;
                tx.commit().await?;
                return Ok(existing);
            }
        }
        let sql = format!(
            "INSERT INTO jobs (id, kind, pseudonym, params, state, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, 'pending', $5, $6) RETURNING {JOB_COLUMNS}"
        );
        let created = tx
            .row(
                &sql,
                params![
                    &job.id,
                    &job.kind,
                    job.pseudonym.as_ref(),
                    &job.params,
                    now,
                    now
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Backend("job vanished in its own transaction".into()))?;
        let created = job_row(&created)?;
        tx.append_audit(&AuditEntry {
            at_ms: now,
            principal: "gateway".into(),
            action: "job_created".into(),
            pseudonym: job.pseudonym,
            outcome: "ok".into(),
            detail: format!("{} job {} ({})", job.kind, job.id, job.params),
        })
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn claim_job(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until_ms: i64,
    ) -> Result<Option<JobRecord>, StoreError> {
        // One conditional UPDATE: a concurrent claim waits for this row's
        // lock, then finds the lease held and updates nothing.
        let sql = format!(
            "UPDATE jobs SET owner = $1, lease_until_ms = $2, state = 'running', updated_at_ms = $3
             WHERE id = $4 AND state IN ('pending', 'running')
               AND (owner IS NULL OR owner = $1 OR lease_until_ms < $3)
             RETURNING {JOB_COLUMNS}"
        );
        let rows = self
            .engine
            .write_rows(&sql, params![owner, until_ms, now, id])
            .await?;
        rows.first().map(job_row).transpose()
    }

    async fn renew_job_lease(
        &self,
        id: &str,
        owner: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .write(
                "UPDATE jobs SET lease_until_ms = $1
                 WHERE id = $2 AND owner = $3 AND state IN ('pending', 'running')",
                params![until_ms, id, owner],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn checkpoint_job(
        &self,
        id: &str,
        owner: &str,
        c: &JobCheckpoint,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let changed = self
            .write(
                "UPDATE jobs SET done = $1, total = $2, cursor = $3, last_error = $4,
                                 lease_until_ms = $5, updated_at_ms = $6
                 WHERE id = $7 AND owner = $8 AND state IN ('pending', 'running')",
                params![
                    c.done,
                    c.total,
                    &c.cursor,
                    &c.last_error,
                    until_ms,
                    unix_ms(),
                    id,
                    owner
                ],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn finish_job(
        &self,
        id: &str,
        owner: &str,
        state: JobState,
        last_error: &str,
    ) -> Result<bool, StoreError> {
        let changed = self
            .write(
                "UPDATE jobs SET state = $1, last_error = $2, owner = NULL, lease_until_ms = 0,
                                 updated_at_ms = $3
                 WHERE id = $4 AND owner = $5 AND state IN ('pending', 'running')",
                params![state.as_str(), last_error, unix_ms(), id, owner],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn update_job(
        &self,
        id: &str,
        state: JobState,
        done: u64,
        last_error: &str,
    ) -> Result<(), StoreError> {
        self.write(
            "UPDATE jobs SET state = $1, done = $2, last_error = $3, owner = NULL,
                             lease_until_ms = 0, updated_at_ms = $4
             WHERE id = $5",
            params![state.as_str(), done, last_error, unix_ms(), id],
        )
        .await?;
        Ok(())
    }
}
