//! Key records: KEKs, user keys, erasure, rotation and decommission.

use async_trait::async_trait;

use super::{kek_row, u32_of, u64_or_zero, user_key_row, SqlStore};
use crate::clock::unix_ms;
use crate::crypto::Pseudonym;
use crate::keys::store::engine::{params, Engine, SqlRow};
use crate::keys::store::{
    AuditEntry, DestroyKeks, EraseOutcome, InsertOutcome, Invalidation, KekInfo, KekRecord,
    KekRewrap, KeyRecords, LeasedProgress, StoreError, Tombstone, UserKeyRecord, UserKeyRewrap,
    UserKeyState, DECOMMISSIONED_META,
};

fn user_keys(rows: &[impl SqlRow]) -> Result<Vec<UserKeyRecord>, StoreError> {
    rows.iter().map(user_key_row).collect()
}

fn keks(rows: &[impl SqlRow]) -> Result<Vec<KekRecord>, StoreError> {
    rows.iter().map(kek_row).collect()
}

fn versions(rows: &[impl SqlRow]) -> Result<Vec<u32>, StoreError> {
    let mut versions = rows
        .iter()
        .map(|row| u32_of(row.int("version")?))
        .collect::<Result<Vec<u32>, _>>()?;
    versions.sort_unstable();
    Ok(versions)
}

#[async_trait]
impl<E: Engine> KeyRecords for SqlStore<E> {
    async fn latest_kek(&self, shard: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = self
            .row(
                "SELECT * FROM keks WHERE shard = $1 ORDER BY version DESC LIMIT 1",
                params![shard],
            )
            .await?;
        row.as_ref().map(kek_row).transpose()
    }

    async fn kek(&self, shard: u32, version: u32) -> Result<Option<KekRecord>, StoreError> {
        let row = self
            .row(
                "SELECT * FROM keks WHERE shard = $1 AND version = $2",
                params![shard, version],
            )
            .await?;
        row.as_ref().map(kek_row).transpose()
    }

    async fn insert_kek(&self, r: &KekRecord) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_shards(&[r.shard], true).await?;
        let inserted = self
            .engine
            .insert_keks(&mut tx.tx, std::slice::from_ref(r))
            .await?
            == 1;
        tx.commit().await?;
        Ok(inserted)
    }

    async fn kek_infos(&self) -> Result<Vec<KekInfo>, StoreError> {
        let rows = self
            .rows(
                "SELECT shard, version, master_version, created_at_ms FROM keks
                 ORDER BY shard, version",
                params![],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(KekInfo {
                    shard: u32_of(row.int("shard")?)?,
                    version: u32_of(row.int("version")?)?,
                    master_version: u32_of(row.int("master_version")?)?,
                    created_at_ms: row.int("created_at_ms")?,
                })
            })
            .collect()
    }

    async fn kek_counts_by_master(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let rows = self
            .rows(
                "SELECT master_version, COUNT(*) AS n FROM keks GROUP BY master_version
                 ORDER BY master_version",
                params![],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((u32_of(r.int("master_version")?)?, u64_or_zero(r.int("n")?))))
            .collect()
    }

    async fn keks_below_master(
        &self,
        master_version: u32,
        limit: u32,
    ) -> Result<Vec<KekRecord>, StoreError> {
        let rows = self
            .rows(
                "SELECT * FROM keks WHERE master_version < $1 ORDER BY shard, version LIMIT $2",
                params![master_version, limit],
            )
            .await?;
        keks(&rows)
    }

    async fn rewrap_keks(
        &self,
        rewraps: &[KekRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError> {
        let Some(mut tx) = self.begin_leased(progress).await? else {
            return Ok(false);
        };
        self.engine.rewrap_keks(&mut tx.tx, rewraps).await?;
        tx.commit_progress(progress).await?;
        Ok(true)
    }

    async fn insert_keks(
        &self,
        records: &[KekRecord],
        principal: &str,
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError> {
        let Some(mut tx) = self.begin_leased(progress).await? else {
            return Ok(false);
        };
        let shards: Vec<u32> = records.iter().map(|r| r.shard).collect();
        tx.lock_shards(&shards, true).await?;
        self.engine.insert_keks(&mut tx.tx, records).await?;
        if !records.is_empty() {
            let made: Vec<String> = records
                .iter()
                .map(|r| format!("{}:{}", r.shard, r.version))
                .collect();
            tx.append_audit(&AuditEntry {
                at_ms: unix_ms(),
                principal: principal.into(),
                action: "create_kek".into(),
                pseudonym: None,
                outcome: "ok".into(),
                detail: format!("shard:version {}", made.join(" ")),
            })
            .await?;
        }
        tx.commit_progress(progress).await?;
        Ok(true)
    }

    async fn destroy_keks_below(
        &self,
        targets: &[(u32, u32)],
        principal: &str,
    ) -> Result<DestroyKeks, StoreError> {
        let mut tx = self.begin().await?;
        let shards: Vec<u32> = targets.iter().map(|(s, _)| *s).collect();
        // Exclusive: no user key is written under these shards meanwhile.
        tx.lock_shards(&shards, true).await?;
        let in_use = self
            .engine
            .count_user_keys_below(&mut tx.tx, targets)
            .await?;
        if in_use > 0 {
            tx.commit().await?;
            return Ok(DestroyKeks::StillInUse(in_use));
        }
        let mut destroyed = self.engine.delete_keks_below(&mut tx.tx, targets).await?;
        destroyed.sort_unstable();
        if !destroyed.is_empty() {
            let list: Vec<String> = destroyed.iter().map(|(s, v)| format!("{s}:{v}")).collect();
            tx.append_audit(&AuditEntry {
                at_ms: unix_ms(),
                principal: principal.into(),
                action: "destroy_kek".into(),
                pseudonym: None,
                outcome: "ok".into(),
                detail: format!("shard:version {}", list.join(" ")),
            })
            .await?;
            let mut shards: Vec<u32> = destroyed.iter().map(|(s, _)| *s).collect();
            shards.dedup();
            let changes: Vec<Invalidation> = shards.into_iter().map(Invalidation::Shard).collect();
            tx.notify(&changes).await?;
        }
        tx.commit().await?;
        if !destroyed.is_empty() {
            self.engine.scrub().await?;
        }
        Ok(DestroyKeks::Destroyed(destroyed))
    }

    async fn holds_keys(&self) -> Result<bool, StoreError> {
        Ok(self
            .row("SELECT shard FROM keks LIMIT 1", params![])
            .await?
            .is_some())
    }

    async fn user_keys(&self, p: &Pseudonym) -> Result<Vec<UserKeyRecord>, StoreError> {
        let rows = self
            .rows(
                "SELECT * FROM user_keys WHERE pseudonym = $1 ORDER BY version",
                params![p],
            )
            .await?;
        user_keys(&rows)
    }

    async fn insert_user_key(&self, r: &UserKeyRecord) -> Result<InsertOutcome, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(refused) = tx.refuse_user_key(r).await? {
            tx.commit().await?;
            return Ok(refused);
        }
        let inserted = tx
            .execute(
                "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state,
                                        created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                params![
                    &r.pseudonym,
                    r.version,
                    r.shard,
                    r.kek_version,
                    &r.wrapped,
                    r.state.as_str(),
                    r.created_at_ms
                ],
            )
            .await?
            == 1;
        if inserted {
            tx.append_audit(&AuditEntry {
                at_ms: r.created_at_ms,
                principal: "gateway".into(),
                action: "create_user_key".into(),
                pseudonym: Some(r.pseudonym),
                outcome: "ok".into(),
                detail: format!(
                    "version {} under shard {} KEK version {}",
                    r.version, r.shard, r.kek_version
                ),
            })
            .await?;
        }
        tx.commit().await?;
        Ok(if inserted {
            InsertOutcome::Inserted
        } else {
            InsertOutcome::AlreadyExists
        })
    }

    async fn rotate_user_key(
        &self,
        r: &UserKeyRecord,
        principal: &str,
    ) -> Result<InsertOutcome, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(refused) = tx.refuse_user_key(r).await? {
            tx.commit().await?;
            return Ok(refused);
        }
        let highest = tx
            .row(
                "SELECT MAX(version) AS n FROM user_keys WHERE pseudonym = $1",
                params![&r.pseudonym],
            )
            .await?
            .map(|row| row.opt_int("n"))
            .transpose()?
            .flatten();
        if highest.unwrap_or(0) + 1 != i64::from(r.version) {
            tx.commit().await?;
            return Ok(InsertOutcome::AlreadyExists);
        }
        tx.execute(
            "UPDATE user_keys SET state = $1 WHERE pseudonym = $2 AND state = $3",
            params![
                UserKeyState::DecryptOnly.as_str(),
                &r.pseudonym,
                UserKeyState::Active.as_str()
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO user_keys (pseudonym, version, shard, kek_version, wrapped, state,
                                    created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            params![
                &r.pseudonym,
                r.version,
                r.shard,
                r.kek_version,
                &r.wrapped,
                UserKeyState::Active.as_str(),
                r.created_at_ms
            ],
        )
        .await?;
        tx.append_audit(&AuditEntry {
            at_ms: r.created_at_ms,
            principal: principal.into(),
            action: "rotate_user_key".into(),
            pseudonym: Some(r.pseudonym),
            outcome: "ok".into(),
            detail: format!(
                "version {} active under shard {} KEK version {}; older versions decrypt-only",
                r.version, r.shard, r.kek_version
            ),
        })
        .await?;
        tx.notify(&[Invalidation::User(r.pseudonym)]).await?;
        tx.commit().await?;
        Ok(InsertOutcome::Inserted)
    }

    async fn retire_user_keys_below(
        &self,
        p: &Pseudonym,
        version: u32,
    ) -> Result<Vec<u32>, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_user(p).await?;
        let changed = tx
            .execute(
                "UPDATE user_keys SET state = $1
                 WHERE pseudonym = $2 AND version < $3 AND state != $1 AND state != $4",
                params![
                    UserKeyState::Retiring.as_str(),
                    p,
                    version,
                    UserKeyState::Active.as_str()
                ],
            )
            .await?;
        let rows = tx
            .rows(
                "SELECT version FROM user_keys WHERE pseudonym = $1 AND state = $2",
                params![p, UserKeyState::Retiring.as_str()],
            )
            .await?;
        if changed > 0 {
            tx.notify(&[Invalidation::User(*p)]).await?;
        }
        tx.commit().await?;
        versions(&rows)
    }

    async fn destroy_retiring_user_keys(
        &self,
        p: &Pseudonym,
        principal: &str,
    ) -> Result<Vec<u32>, StoreError> {
        let mut tx = self.begin().await?;
        tx.lock_user(p).await?;
        // Under the user's lock: a held user's keys are preserved.
        let cases = tx
            .holds_of(std::slice::from_ref(p))
            .await?
            .remove(p)
            .unwrap_or(0);
        if cases > 0 {
            return Err(StoreError::LegalHold { cases });
        }
        let rows = tx
            .rows(
                "DELETE FROM user_keys WHERE pseudonym = $1 AND state = $2 RETURNING version",
                params![p, UserKeyState::Retiring.as_str()],
            )
            .await?;
        let versions = versions(&rows)?;
        if !versions.is_empty() {
            tx.append_audit(&AuditEntry {
                at_ms: unix_ms(),
                principal: principal.into(),
                action: "destroy_user_key_versions".into(),
                pseudonym: Some(*p),
                outcome: "ok".into(),
                detail: format!("rewrapped; versions {versions:?} destroyed"),
            })
            .await?;
            tx.notify(&[Invalidation::User(*p)]).await?;
        }
        tx.commit().await?;
        if !versions.is_empty() {
            self.engine.scrub().await?;
        }
        Ok(versions)
    }

    async fn user_keys_below_keks(
        &self,
        targets: &[(u32, u32)],
        limit: u32,
    ) -> Result<Vec<UserKeyRecord>, StoreError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        user_keys(&self.engine.user_keys_below_keks(targets, limit).await?)
    }

    async fn user_keys_in_order(
        &self,
        after: Option<(Pseudonym, u32)>,
        limit: u32,
    ) -> Result<Vec<UserKeyRecord>, StoreError> {
        let (p, version) = after.map_or((String::new(), 0), |(p, v)| (p.to_string(), v));
        let rows = self
            .rows(
                "SELECT * FROM user_keys WHERE (pseudonym, version) > ($1, $2)
                 ORDER BY pseudonym, version LIMIT $3",
                params![p, version, limit],
            )
            .await?;
        user_keys(&rows)
    }

    async fn count_user_keys(&self, shards: &[u32]) -> Result<u64, StoreError> {
        self.engine.count_user_keys(shards).await
    }

    async fn rewrap_user_keys(
        &self,
        rewraps: &[UserKeyRewrap],
        progress: &LeasedProgress<'_>,
    ) -> Result<bool, StoreError> {
        let Some(mut tx) = self.begin_leased(progress).await? else {
            return Ok(false);
        };
        self.engine.rewrap_user_keys(&mut tx.tx, rewraps).await?;
        tx.commit_progress(progress).await?;
        Ok(true)
    }

    async fn tombstone(&self, p: &Pseudonym) -> Result<Option<Tombstone>, StoreError> {
        let row = self.row(super::TOMBSTONE_SELECT, params![p]).await?;
        row.map(|row| super::tombstone_row(*p, &row)).transpose()
    }

    async fn erase_user(
        &self,
        p: &Pseudonym,
        now: i64,
        gc_job_id: &str,
        principal: &str,
    ) -> Result<Tombstone, StoreError> {
        let users = [(*p, gc_job_id.to_string())];
        match self
            .erase_with_reserve(&users, now, principal, None)
            .await?
            .pop()
        {
            Some(EraseOutcome::Erased(t)) => Ok(t),
            Some(EraseOutcome::Held { cases }) => Err(StoreError::LegalHold { cases }),
            Some(EraseOutcome::NotDue) | None => Err(StoreError::Backend(
                "an erasure of one user ended without an outcome".into(),
            )),
        }
    }

    async fn erasure_receipts(
        &self,
        ps: &[Pseudonym],
    ) -> Result<Vec<(Pseudonym, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for chunk in ps.chunks(500) {
            let sql = format!(
                "SELECT pseudonym, receipt FROM tombstones
                 WHERE pseudonym IN ({}) AND receipt IS NOT NULL",
                super::placeholders(1, chunk.len())
            );
            let params = chunk
                .iter()
                .map(crate::keys::store::engine::Param::from)
                .collect();
            for row in self.rows(&sql, params).await? {
                out.push((
                    super::pseudonym_of(&row.text("pseudonym")?)?,
                    row.bytes("receipt")?,
                ));
            }
        }
        Ok(out)
    }

    async fn set_erasure_receipts(
        &self,
        receipts: &[(Pseudonym, Vec<u8>)],
    ) -> Result<Vec<(Pseudonym, Vec<u8>)>, StoreError> {
        let ps: Vec<Pseudonym> = receipts.iter().map(|(p, _)| *p).collect();
        let mut tx = self.begin().await?;
        tx.lock_users(&ps).await?;
        for (p, receipt) in receipts {
            tx.execute(
                "UPDATE tombstones SET receipt = $2 WHERE pseudonym = $1 AND receipt IS NULL",
                params![p, receipt],
            )
            .await?;
        }
        tx.commit().await?;
        let held = self.erasure_receipts(&ps).await?;
        if held.len() != ps.len() {
            return Err(StoreError::Backend(
                "no tombstone to hold an erasure receipt".into(),
            ));
        }
        Ok(held)
    }

    async fn held_users(&self) -> Result<usize, StoreError> {
        let row = self
            .row(
                "SELECT COUNT(DISTINCT pseudonym) AS n FROM legal_holds",
                params![],
            )
            .await?;
        Ok(match row {
            Some(row) => usize::try_from(row.int("n")?).unwrap_or(usize::MAX),
            None => 0,
        })
    }

    async fn decommission(&self, at_ms: i64, principal: &str) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin().await?;
        // Placing a hold appends to the audit chain: under its lock, no
        // hold commits between this count and the commit below.
        tx.engine.lock_audit(&mut tx.tx).await?;
        let held = tx
            .row(
                "SELECT COUNT(DISTINCT pseudonym) AS n FROM legal_holds",
                params![],
            )
            .await?
            .map(|row| row.int("n"))
            .transpose()?
            .unwrap_or(0);
        if held > 0 {
            return Err(StoreError::HeldUsers {
                users: usize::try_from(held).unwrap_or(usize::MAX),
            });
        }
        let users = tx.execute("DELETE FROM user_keys", params![]).await?;
        let keks = tx.execute("DELETE FROM keks", params![]).await?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            params![DECOMMISSIONED_META, at_ms.to_string()],
        )
        .await?;
        tx.append_audit(&AuditEntry {
            at_ms,
            principal: principal.into(),
            action: "decommission".into(),
            pseudonym: None,
            outcome: "ok".into(),
            detail: format!("{users} user key versions and {keks} KEK versions destroyed"),
        })
        .await?;
        tx.notify(&[Invalidation::All]).await?;
        tx.commit().await?;
        self.engine.scrub().await?;
        Ok((users, keks))
    }
}
