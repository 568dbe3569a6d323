//! Erasures: at once and in batches, scheduled with a cooling-off window,
//! cancelled; and the erasure feed.
//!
//! A batch is one transaction: the users' locks (in one order), then one
//! statement per step for all of them (tombstones and holds read, keys and
//! remembered requests deleted, tombstones, jobs, audit records and feed
//! events written), so a batch of a thousand costs about what one erasure
//! does. Feed events are appended under the audit lock, which the
//! transaction holds to its commit: their cursors increase in commit order.

use std::collections::HashMap;

use async_trait::async_trait;

use super::{placeholders, pseudonym_of, tombstone_row, u32_of, value_rows, SqlStore, Write};
use crate::crypto::Pseudonym;
use crate::keys::store::engine::{params, Engine, Param, SqlRow};
use crate::keys::store::{
    AuditEntry, CancelOutcome, EraseOutcome, ErasureEvent, ErasureEventKind, ErasureLog,
    Invalidation, ScheduleOutcome, ScheduleState, ScheduledErasure, Settings, StoreError,
    Tombstone, ERASURE_FEED_FLOOR_META, JOB_KIND_ERASURE_GC,
};

/// The columns of a [`ScheduledErasure`].
const SCHEDULE_COLUMNS: &str =
    "pseudonym, state, due_ms, requested_at_ms, requested_by, request_id, updated_at_ms";

/// Rows one multi-row statement writes at most.
const ROWS_PER_STATEMENT: usize = 500;

fn schedule_row(row: &impl SqlRow) -> Result<ScheduledErasure, StoreError> {
    Ok(ScheduledErasure {
        pseudonym: pseudonym_of(&row.text("pseudonym")?)?,
        state: ScheduleState::parse(&row.text("state")?)?,
        due_ms: row.int("due_ms")?,
        requested_at_ms: row.int("requested_at_ms")?,
        requested_by: row.text("requested_by")?,
        request_id: row.text("request_id")?,
        updated_at_ms: row.int("updated_at_ms")?,
    })
}

fn event_row(row: &impl SqlRow) -> Result<ErasureEvent, StoreError> {
    Ok(ErasureEvent {
        cursor: u64::try_from(row.int("cursor")?)
            .map_err(|_| StoreError::Backend("negative erasure-feed cursor".into()))?,
        at_ms: row.int("at_ms")?,
        kind: ErasureEventKind::parse(&row.text("kind")?)?,
        pseudonym: pseudonym_of(&row.text("pseudonym")?)?,
        due_ms: row.int("due_ms")?,
    })
}

fn pseudonym_params(ps: &[Pseudonym]) -> Vec<Param> {
    ps.iter().map(Param::from).collect()
}

impl<E: Engine> Write<'_, E> {
    /// The tombstones of those of `ps` that are erased.
    async fn tombstones_of(
        &mut self,
        ps: &[Pseudonym],
    ) -> Result<HashMap<Pseudonym, Tombstone>, StoreError> {
        let sql = "SELECT pseudonym, erased_at_ms, destroyed_versions, gc_job_id FROM tombstones
                   WHERE pseudonym IN ({})";
        let mut out = HashMap::new();
        for row in self.for_users(sql, ps).await? {
            let p = pseudonym_of(&row.text("pseudonym")?)?;
            out.insert(p, tombstone_row(p, &row)?);
        }
        Ok(out)
    }

    /// The scheduled (or cancelled) erasures of those of `ps` that have one.
    async fn schedules_of(
        &mut self,
        ps: &[Pseudonym],
    ) -> Result<HashMap<Pseudonym, ScheduledErasure>, StoreError> {
        let sql =
            format!("SELECT {SCHEDULE_COLUMNS} FROM scheduled_erasures WHERE pseudonym IN ({{}})");
        let mut out = HashMap::new();
        for row in self.for_users(&sql, ps).await? {
            let s = schedule_row(&row)?;
            out.insert(s.pseudonym, s);
        }
        Ok(out)
    }

    /// How many cases hold each of those of `ps` that are held.
    pub(super) async fn holds_of(
        &mut self,
        ps: &[Pseudonym],
    ) -> Result<HashMap<Pseudonym, usize>, StoreError> {
        let sql = "SELECT pseudonym, COUNT(*) AS n FROM legal_holds WHERE pseudonym IN ({})
                   GROUP BY pseudonym";
        let mut out = HashMap::new();
        for row in self.for_users(sql, ps).await? {
            let n = usize::try_from(row.int("n")?).unwrap_or(usize::MAX);
            out.insert(pseudonym_of(&row.text("pseudonym")?)?, n);
        }
        Ok(out)
    }

    /// Runs `sql` (with `{}` for the list) for `ps`, a chunk at a time;
    /// the rows it returned.
    async fn for_users(&mut self, sql: &str, ps: &[Pseudonym]) -> Result<Vec<E::Row>, StoreError> {
        let mut rows = Vec::new();
        for chunk in ps.chunks(ROWS_PER_STATEMENT) {
            let statement = sql.replace("{}", &placeholders(1, chunk.len()));
            rows.extend(self.rows(&statement, pseudonym_params(chunk)).await?);
        }
        Ok(rows)
    }

    /// Appends feed events (kind, user, deadline) at `at_ms`, in order,
    /// under the audit lock (taken here if the transaction has not yet).
    async fn append_events(
        &mut self,
        events: &[(ErasureEventKind, Pseudonym, i64)],
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.engine.lock_audit(&mut self.tx).await?;
        let head = self
            .row("SELECT MAX(cursor) AS n FROM erasure_events", params![])
            .await?
            .map(|row| row.opt_int("n"))
            .transpose()?
            .flatten()
            .unwrap_or(0);
        let mut cursor = head;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut values = Vec::with_capacity(chunk.len() * 5);
            for (kind, p, due) in chunk {
                cursor += 1;
                values.extend(params![cursor, at_ms, kind.as_str(), p, *due]);
            }
            let sql = format!(
                "INSERT INTO erasure_events (cursor, at_ms, kind, pseudonym, due_ms) VALUES {}",
                value_rows(chunk.len(), 5)
            );
            self.execute(&sql, values).await?;
        }
        Ok(())
    }

    /// Erases `users` (distinct users, each with the id of the garbage
    /// collection job to create), in this transaction; see
    /// [`ErasureLog::erase_users`]. With `due_at`, only users whose
    /// erasure is scheduled and due by then are erased; the others are
    /// [`EraseOutcome::NotDue`].
    pub(super) async fn erase_batch(
        &mut self,
        users: &[(Pseudonym, String)],
        now: i64,
        principal: &str,
        due_at: Option<i64>,
    ) -> Result<Vec<EraseOutcome>, StoreError> {
        let ps: Vec<Pseudonym> = users.iter().map(|(p, _)| *p).collect();
        self.lock_users(&ps).await?;
        let erased = self.tombstones_of(&ps).await?;
        // Under the users' locks: no hold can be placed between this check
        // and the erasure.
        let held = self.holds_of(&ps).await?;
        let schedules = self.schedules_of(&ps).await?;
        let not_due = match due_at {
            None => Vec::new(),
            Some(at) => ps
                .iter()
                .filter(|p| {
                    !schedules
                        .get(p)
                        .is_some_and(|s| s.state == ScheduleState::Scheduled && s.due_ms <= at)
                })
                .copied()
                .collect(),
        };
        let fresh: Vec<&(Pseudonym, String)> = users
            .iter()
            .filter(|(p, _)| {
                !erased.contains_key(p) && !held.contains_key(p) && !not_due.contains(p)
            })
            .collect();
        if due_at.is_none() {
            // Asked for now of held users: recorded, restricting them, to
            // run when the last hold is released.
            let pending: Vec<Pseudonym> = ps
                .iter()
                .filter(|p| {
                    held.contains_key(p)
                        && !erased.contains_key(p)
                        && !schedules
                            .get(p)
                            .is_some_and(|s| s.state == ScheduleState::Scheduled)
                })
                .copied()
                .collect();
            self.record_pending_holds(&pending, &held, now, principal)
                .await?;
        }
        let mut made = HashMap::new();
        if !fresh.is_empty() {
            let fresh_ps: Vec<Pseudonym> = fresh.iter().map(|(p, _)| *p).collect();
            let mut destroyed: HashMap<Pseudonym, Vec<u32>> = HashMap::new();
            for row in self
                .for_users(
                    "DELETE FROM user_keys WHERE pseudonym IN ({}) RETURNING pseudonym, version",
                    &fresh_ps,
                )
                .await?
            {
                destroyed
                    .entry(pseudonym_of(&row.text("pseudonym")?)?)
                    .or_default()
                    .push(u32_of(row.int("version")?)?);
            }
            self.for_users("DELETE FROM requests WHERE pseudonym IN ({})", &fresh_ps)
                .await?;
            self.for_users(
                "DELETE FROM scheduled_erasures WHERE pseudonym IN ({})",
                &fresh_ps,
            )
            .await?;
            let mut audits = Vec::with_capacity(fresh.len());
            for (p, gc_job_id) in &fresh {
                let mut versions = destroyed.remove(p).unwrap_or_default();
                versions.sort_unstable();
                let list = versions
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                audits.push(AuditEntry {
                    at_ms: now,
                    principal: principal.to_string(),
                    action: "erase_user".into(),
                    pseudonym: Some(*p),
                    outcome: "ok".into(),
                    detail: format!("destroyed user key versions [{list}]; gc job {gc_job_id}"),
                });
                made.insert(
                    *p,
                    Tombstone {
                        pseudonym: *p,
                        erased_at_ms: now,
                        destroyed_versions: versions,
                        gc_job_id: gc_job_id.clone(),
                    },
                );
            }
            for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
                let mut tombstones = Vec::with_capacity(chunk.len() * 4);
                let mut jobs = Vec::with_capacity(chunk.len() * 5);
                for (p, gc_job_id) in chunk {
                    let list = made[p]
                        .destroyed_versions
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    tombstones.extend(params![p, now, list, gc_job_id]);
                    jobs.extend(params![gc_job_id, JOB_KIND_ERASURE_GC, p, now, now]);
                }
                let sql = format!(
                    "INSERT INTO tombstones (pseudonym, erased_at_ms, destroyed_versions, gc_job_id)
                     VALUES {}",
                    value_rows(chunk.len(), 4)
                );
                self.execute(&sql, tombstones).await?;
                let rows: Vec<String> = (0..chunk.len())
                    .map(|i| {
                        let b = i * 5;
                        format!(
                            "(${}, ${}, ${}, 'pending', 0, '', ${}, ${})",
                            b + 1,
                            b + 2,
                            b + 3,
                            b + 4,
                            b + 5
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO jobs (id, kind, pseudonym, state, done, last_error,
                                       created_at_ms, updated_at_ms)
                     VALUES {}",
                    rows.join(", ")
                );
                self.execute(&sql, jobs).await?;
            }
            self.append_audits(&audits).await?;
            let events: Vec<_> = fresh_ps
                .iter()
                .map(|p| (ErasureEventKind::Erased, *p, 0))
                .collect();
            self.append_events(&events, now).await?;
            let changes: Vec<Invalidation> =
                fresh_ps.iter().map(|p| Invalidation::User(*p)).collect();
            self.notify(&changes).await?;
        }
        Ok(ps
            .iter()
            .map(|p| {
                if let Some(t) = erased.get(p).or_else(|| made.get(p)) {
                    EraseOutcome::Erased(t.clone())
                } else if let Some(cases) = held.get(p) {
                    EraseOutcome::Held { cases: *cases }
                } else {
                    EraseOutcome::NotDue
                }
            })
            .collect())
    }
}

impl<E: Engine> Write<'_, E> {
    /// Writes `schedules` (new or replacing cancelled ones), in this
    /// transaction.
    async fn upsert_schedules(&mut self, schedules: &[ScheduledErasure]) -> Result<(), StoreError> {
        for chunk in schedules.chunks(ROWS_PER_STATEMENT) {
            let mut values = Vec::with_capacity(chunk.len() * 7);
            for s in chunk {
                values.extend(params![
                    &s.pseudonym,
                    s.state.as_str(),
                    s.due_ms,
                    s.requested_at_ms,
                    &s.requested_by,
                    &s.request_id,
                    s.updated_at_ms,
                ]);
            }
            let sql = format!(
                "INSERT INTO scheduled_erasures ({SCHEDULE_COLUMNS}) VALUES {}
                 ON CONFLICT (pseudonym) DO UPDATE SET
                   state = excluded.state, due_ms = excluded.due_ms,
                   requested_at_ms = excluded.requested_at_ms,
                   requested_by = excluded.requested_by,
                   request_id = excluded.request_id,
                   updated_at_ms = excluded.updated_at_ms",
                value_rows(chunk.len(), 7)
            );
            self.execute(&sql, values).await?;
        }
        Ok(())
    }

    /// Records the erasure of held users `ps` as scheduled and due now (the
    /// due pass skips held users: it runs once the last hold is released),
    /// with an audit record and a `pending_hold` event each.
    async fn record_pending_holds(
        &mut self,
        ps: &[Pseudonym],
        held: &HashMap<Pseudonym, usize>,
        now: i64,
        principal: &str,
    ) -> Result<(), StoreError> {
        if ps.is_empty() {
            return Ok(());
        }
        let schedules: Vec<ScheduledErasure> = ps
            .iter()
            .map(|p| ScheduledErasure {
                pseudonym: *p,
                state: ScheduleState::Scheduled,
                due_ms: now,
                requested_at_ms: now,
                requested_by: principal.to_string(),
                request_id: String::new(),
                updated_at_ms: now,
            })
            .collect();
        self.upsert_schedules(&schedules).await?;
        let audits: Vec<AuditEntry> = ps
            .iter()
            .map(|p| AuditEntry {
                at_ms: now,
                principal: principal.to_string(),
                action: "erase_user".into(),
                pseudonym: Some(*p),
                outcome: "pending_hold".into(),
                detail: format!(
                    "held by {} case(s): the erasure runs when the last is released",
                    held.get(p).copied().unwrap_or(0)
                ),
            })
            .collect();
        self.append_audits(&audits).await?;
        let events: Vec<_> = ps
            .iter()
            .map(|p| (ErasureEventKind::PendingHold, *p, now))
            .collect();
        self.append_events(&events, now).await?;
        let changes: Vec<Invalidation> = ps.iter().map(|p| Invalidation::User(*p)).collect();
        self.notify(&changes).await
    }
}

/// Attempts of one erasure on a full disk ([`SqlStore::erase_with_reserve`]).
const FULL_DISK_ATTEMPTS: usize = 4;

impl<E: Engine> SqlStore<E> {
    /// One transaction of [`ErasureLog::erase_users`] (the caller handles a
    /// full disk and the scrub).
    pub(super) async fn erase_batch_once(
        &self,
        users: &[(Pseudonym, String)],
        now: i64,
        principal: &str,
        due_at: Option<i64>,
    ) -> Result<Vec<EraseOutcome>, StoreError> {
        let mut tx = self.begin().await?;
        let outcomes = tx.erase_batch(users, now, principal, due_at).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// [`Self::erase_batch_once`], giving up the erasure reserve if the
    /// disk is full; then the scrub, also for a batch that erased nobody
    /// new (a scrub that failed before is retried by the caller's retry).
    ///
    /// Uploads may have filled the disk: erasure must still work. After a
    /// full disk the erasure gives up whatever reserve there is and tries
    /// again, up to [`FULL_DISK_ATTEMPTS`] times in all. Concurrent
    /// erasures share the reserve: one that found the disk full just
    /// before another gave the reserve up finds none left to give, yet the
    /// room is there now; and one that committed makes the reserve again
    /// (below), taking the room back from those still waiting.
    pub(super) async fn erase_with_reserve(
        &self,
        users: &[(Pseudonym, String)],
        now: i64,
        principal: &str,
        due_at: Option<i64>,
    ) -> Result<Vec<EraseOutcome>, StoreError> {
        let mut attempts = 1;
        let outcomes = loop {
            match self.erase_batch_once(users, now, principal, due_at).await {
                Err(StoreError::Full(m)) if attempts < FULL_DISK_ATTEMPTS => {
                    let released = self.engine.release_reserve().await;
                    tracing::debug!(attempts, released, error = %m, "erasure on a full disk; trying again");
                    attempts += 1;
                }
                other => break other?,
            }
        };
        self.engine.scrub().await?;
        self.engine.ensure_reserve().await;
        Ok(outcomes)
    }
}

#[async_trait]
impl<E: Engine> ErasureLog for SqlStore<E> {
    async fn erase_users(
        &self,
        users: &[(Pseudonym, String)],
        now_ms: i64,
        principal: &str,
    ) -> Result<Vec<EraseOutcome>, StoreError> {
        self.erase_with_reserve(users, now_ms, principal, None)
            .await
    }

    async fn erase_due(
        &self,
        users: &[(Pseudonym, String)],
        now_ms: i64,
        principal: &str,
    ) -> Result<Vec<EraseOutcome>, StoreError> {
        self.erase_with_reserve(users, now_ms, principal, Some(now_ms))
            .await
    }

    async fn schedule_erasures(
        &self,
        ps: &[Pseudonym],
        due_ms: i64,
        now_ms: i64,
        principal: &str,
        request_id: &str,
    ) -> Result<Vec<ScheduleOutcome>, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_users(ps).await?;
        let erased = tx.tombstones_of(ps).await?;
        let existing = tx.schedules_of(ps).await?;
        let mut outcomes = Vec::with_capacity(ps.len());
        let mut fresh = Vec::new();
        for p in ps {
            if let Some(t) = erased.get(p) {
                outcomes.push(ScheduleOutcome::Erased(t.clone()));
                continue;
            }
            match existing.get(p) {
                // Already scheduled: the first deadline stands.
                Some(s) if s.state == ScheduleState::Scheduled => {
                    outcomes.push(ScheduleOutcome::Scheduled(s.clone()));
                }
                // A retry of the request that was then cancelled: it stays
                // cancelled.
                Some(s) if !request_id.is_empty() && s.request_id == request_id => {
                    outcomes.push(ScheduleOutcome::Scheduled(s.clone()));
                }
                _ => {
                    let s = ScheduledErasure {
                        pseudonym: *p,
                        state: ScheduleState::Scheduled,
                        due_ms,
                        requested_at_ms: now_ms,
                        requested_by: principal.to_string(),
                        request_id: request_id.to_string(),
                        updated_at_ms: now_ms,
                    };
                    outcomes.push(ScheduleOutcome::Scheduled(s.clone()));
                    fresh.push(s);
                }
            }
        }
        if !fresh.is_empty() {
            tx.upsert_schedules(&fresh).await?;
            let audits: Vec<AuditEntry> = fresh
                .iter()
                .map(|s| AuditEntry {
                    at_ms: now_ms,
                    principal: principal.to_string(),
                    action: "schedule_erasure".into(),
                    pseudonym: Some(s.pseudonym),
                    outcome: "ok".into(),
                    detail: format!("due at {} ms", s.due_ms),
                })
                .collect();
            tx.append_audits(&audits).await?;
            let events: Vec<_> = fresh
                .iter()
                .map(|s| (ErasureEventKind::Scheduled, s.pseudonym, s.due_ms))
                .collect();
            tx.append_events(&events, now_ms).await?;
            let changes: Vec<Invalidation> = fresh
                .iter()
                .map(|s| Invalidation::User(s.pseudonym))
                .collect();
            tx.notify(&changes).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn cancel_erasure(
        &self,
        p: &Pseudonym,
        now_ms: i64,
        principal: &str,
    ) -> Result<CancelOutcome, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_user(p).await?;
        if let Some(t) = tx.tombstone(p).await? {
            tx.commit().await?;
            return Ok(CancelOutcome::Erased(t));
        }
        let Some(mut s) = tx.schedules_of(std::slice::from_ref(p)).await?.remove(p) else {
            tx.commit().await?;
            return Ok(CancelOutcome::NotScheduled);
        };
        if s.state == ScheduleState::Cancelled {
            tx.commit().await?;
            return Ok(CancelOutcome::Cancelled(s));
        }
        tx.execute(
            "UPDATE scheduled_erasures SET state = $1, updated_at_ms = $2 WHERE pseudonym = $3",
            params![ScheduleState::Cancelled.as_str(), now_ms, p],
        )
        .await?;
        tx.append_audit(&AuditEntry {
            at_ms: now_ms,
            principal: principal.to_string(),
            action: "cancel_erasure".into(),
            pseudonym: Some(*p),
            outcome: "ok".into(),
            detail: format!("was due at {} ms", s.due_ms),
        })
        .await?;
        tx.append_events(&[(ErasureEventKind::Cancelled, *p, 0)], now_ms)
            .await?;
        tx.notify(&[Invalidation::User(*p)]).await?;
        tx.commit().await?;
        s.state = ScheduleState::Cancelled;
        s.updated_at_ms = now_ms;
        Ok(CancelOutcome::Cancelled(s))
    }

    async fn scheduled_erasure(
        &self,
        p: &Pseudonym,
    ) -> Result<Option<ScheduledErasure>, StoreError> {
        let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM scheduled_erasures WHERE pseudonym = $1");
        self.row(&sql, params![p])
            .await?
            .as_ref()
            .map(schedule_row)
            .transpose()
    }

    async fn due_erasures(&self, now_ms: i64, limit: u32) -> Result<Vec<Pseudonym>, StoreError> {
        let rows = self
            .rows(
                "SELECT s.pseudonym FROM scheduled_erasures s
                 WHERE s.state = 'scheduled' AND s.due_ms <= $1
                   AND NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.pseudonym = s.pseudonym)
                 ORDER BY s.due_ms, s.pseudonym LIMIT $2",
                params![now_ms, limit],
            )
            .await?;
        rows.iter()
            .map(|row| pseudonym_of(&row.text("pseudonym")?))
            .collect()
    }

    async fn append_erasure_event(
        &self,
        kind: ErasureEventKind,
        p: &Pseudonym,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.append_events(&[(kind, *p, 0)], at_ms).await?;
        tx.commit().await
    }

    async fn erasure_events(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ErasureEvent>, StoreError> {
        let rows = self
            .rows(
                "SELECT cursor, at_ms, kind, pseudonym, due_ms FROM erasure_events
                 WHERE cursor > $1 ORDER BY cursor LIMIT $2",
                params![after, limit],
            )
            .await?;
        rows.iter().map(event_row).collect()
    }

    async fn erasure_feed_floor(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta_value(ERASURE_FEED_FLOOR_META)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    async fn prune_erasure_events(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        tx.engine.lock_audit(&mut tx.tx).await?;
        // The newest event stays, whatever its age: the next cursor follows
        // it.
        let dropped = tx
            .rows(
                "DELETE FROM erasure_events
                 WHERE at_ms < $1 AND cursor < (SELECT MAX(cursor) FROM erasure_events)
                 RETURNING cursor",
                params![before_ms],
            )
            .await?;
        let mut floor = 0;
        for row in &dropped {
            floor = floor.max(row.int("cursor")?);
        }
        if floor > 0 {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![ERASURE_FEED_FLOOR_META, floor.to_string()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(dropped.len() as u64)
    }
}
