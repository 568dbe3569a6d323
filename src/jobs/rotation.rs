//! Key rotation jobs.
//!
//! Master rotation ([`RotateMaster`], kind
//! [`JOB_KIND_ROTATE_MASTER`](crate::keys::store::JOB_KIND_ROTATE_MASTER),
//! parameters `master_version=N`): makes master version N exist (adding it
//! to the keyring is idempotent, so a crash between that and the first
//! batch is harmless), then re-wraps every KEK version under an older
//! master in batches, each batch committed with the job's progress in one
//! transaction. O(shards × KEK versions): seconds. Old master versions stay
//! in the keyring until retired.
//!
//! KEK rotation ([`RotateKek`], kind
//! [`JOB_KIND_ROTATE_KEK`](crate::keys::store::JOB_KIND_ROTATE_KEK),
//! parameters `shards=all` or `shards=3,17`): in groups of up to 256 shards,
//! makes each shard's next KEK version (all in one transaction with the
//! job's cursor), re-wraps the group's user keys under them in batches
//! (each committed with the job's progress; a group of every shard reads
//! its keys in table order, each batch read while the one before it is
//! written), then destroys the older
//! versions (one transaction, one WAL truncation). The cursor `I:new` or
//! `I:moving` says whether the group starting at index I of the list has
//! its new versions yet, so a resumed job neither makes a second new
//! version nor repeats a finished group. User keys written under an old
//! version while the shard rotates are refused by the store
//! ([`InsertOutcome::StaleKek`](crate::keys::store::InsertOutcome)), and the
//! destruction itself refuses while any row is still under an old version.
//!
//! Batches: 32 KEKs per master-rotation batch, 4,096 user keys per
//! KEK-rotation batch (`with_batch` sets another size); each user-key
//! update is conditional on the row's old KEK version, so an erased user's
//! row never comes back. A group of every shard reads the next batch while
//! the one before it is written (they share no row); a group of some
//! shards goes through the shard index, reading each batch after the one
//! before it committed.

use std::sync::Arc;

use async_trait::async_trait;

use super::{JobError, JobHandler, LeasedJob};
use crate::crypto::Pseudonym;
use crate::keys::keyring::MasterKeyError;
use crate::keys::master::checks;
use crate::keys::store::{DestroyKeks, UserKeyRewrap};
use crate::keys::{KeyError, KeyHierarchy};

/// KEK versions re-wrapped per transaction.
const KEK_BATCH: u32 = 32;
/// User keys re-wrapped per transaction, unless [`RotateKek::with_batch`]
/// says otherwise.
const USER_KEY_BATCH: u32 = 4096;
/// Shards rotated together: their new KEK versions made in one
/// transaction, their user keys re-wrapped in shared batches, their old
/// versions destroyed in one transaction. The default store's 256 shards
/// are one group.
const SHARD_GROUP: usize = 256;

/// Which shards a KEK rotation moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekShards {
    /// Every shard of the store.
    All,
    /// These shards, in this order.
    Some(Vec<u32>),
}

/// The parameters of a KEK rotation.
pub fn rotate_kek_params(shards: &KekShards) -> String {
    match shards {
        KekShards::All => "shards=all".into(),
        KekShards::Some(list) => format!(
            "shards={}",
            list.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The shards of KEK rotation parameters.
pub fn parse_rotate_kek_params(params: &str) -> Option<KekShards> {
    let list = params.strip_prefix("shards=")?;
    if list == "all" {
        return Some(KekShards::All);
    }
    list.split(',')
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<u32>>>()
        .filter(|l| !l.is_empty())
        .map(KekShards::Some)
}

/// The parameters of a master rotation to `version`.
pub fn rotate_master_params(version: u32) -> String {
    format!("master_version={version}")
}

/// The target version in master rotation parameters.
pub fn parse_rotate_master_params(params: &str) -> Option<u32> {
    params.strip_prefix("master_version=")?.parse().ok()
}

/// The parameters of a rewrap to user-key `version`.
pub fn rewrap_params(version: u32) -> String {
    format!("user_key_version={version}")
}

/// The target version in rewrap parameters.
pub fn parse_rewrap_params(params: &str) -> Option<u32> {
    params.strip_prefix("user_key_version=")?.parse().ok()
}

/// The parameters of a reseal job: `suite=NAME` and, for one space,
/// ` space=NAME`.
pub fn reseal_params(suite: crate::crypto::Suite, space: Option<&str>) -> String {
    match space {
        Some(space) => format!("suite={} space={space}", suite.name()),
        None => format!("suite={}", suite.name()),
    }
}

/// The suite and the space (`None`: all) of [`reseal_params`].
pub fn parse_reseal_params(params: &str) -> Option<(crate::crypto::Suite, Option<String>)> {
    let mut parts = params.split(' ');
    let suite = crate::crypto::Suite::from_name(parts.next()?.strip_prefix("suite=")?)?;
    let space = match parts.next() {
        None => None,
        Some(p) => Some(p.strip_prefix("space=")?.to_string()),
    };
    if parts.next().is_some() {
        return None;
    }
    Some((suite, space))
}

/// Whether trying again can help after a key-layer error.
pub(crate) fn key_error(e: KeyError) -> JobError {
    match e {
        KeyError::Unavailable(m) | KeyError::StorageFull(m) | KeyError::StoreLost(m) => {
            JobError::Transient(m)
        }
        KeyError::UserErased
        | KeyError::ErasurePending { .. }
        | KeyError::Restricted { .. }
        | KeyError::HeldUsers { .. }
        | KeyError::Decommissioned
        | KeyError::LegalHold { .. }
        | KeyError::MissingUserKeyVersion(_)
        | KeyError::KeyRetired(_)
        | KeyError::KekMissing { .. }
        | KeyError::MasterKeyUnusable(_)
        | KeyError::Unwrap(_)
        | KeyError::Internal(_) => JobError::Permanent(e.to_string()),
    }
}

fn master_error(e: MasterKeyError) -> JobError {
    match e {
        // A keyring file that cannot be read or written now (a full or
        // read-only disk) may be repaired.
        MasterKeyError::Keyring { .. } => JobError::Transient(e.to_string()),
        // KMS or the key store holding its version records away for now.
        MasterKeyError::KmsUnavailable(_) => JobError::Transient(e.to_string()),
        MasterKeyError::Store(e) => e.into(),
        _ => JobError::Permanent(e.to_string()),
    }
}

/// Runs master rotations.
pub struct RotateMaster {
    keys: Arc<KeyHierarchy>,
}

impl RotateMaster {
    /// Rotates the masters of `keys`.
    pub fn new(keys: Arc<KeyHierarchy>) -> Self {
        Self { keys }
    }
}

#[async_trait]
impl JobHandler for RotateMaster {
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
        let target = parse_rotate_master_params(&job.record().params).ok_or_else(|| {
            JobError::Permanent(format!(
                "bad master rotation parameters {:?}",
                job.record().params
            ))
        })?;
        self.keys
            .master()
            .add_version(target)
            .await
            .map_err(master_error)?;
        let store = self.keys.store().clone();
        // The store records the new version (and its check value), so that
        // a process starting with a keyring from before it is refused.
        checks::record_version(&*store, &**self.keys.master(), target)
            .await
            .map_err(master_error)?;
        let remaining: u64 = store
            .kek_counts_by_master()
            .await?
            .iter()
            .filter(|(m, _)| *m < target)
            .map(|(_, n)| n)
            .sum();
        let mut done = job.record().done;
        let total = done + remaining;
        job.checkpoint(done, total, "").await?;
        loop {
            let batch = self
                .keys
                .rewrap_keks_to_master(target, KEK_BATCH)
                .await
                .map_err(key_error)?;
            if batch.is_empty() {
                return Ok(());
            }
            let next = done + batch.len() as u64;
            let held = store
                .rewrap_keks(&batch, &job.progress(next, total.max(next), ""))
                .await?;
            job.note_progress(held, next, total.max(next), "")?;
            done = next;
        }
    }
}

/// Runs KEK rotations.
pub struct RotateKek {
    keys: Arc<KeyHierarchy>,
    batch_size: u32,
}

impl RotateKek {
    /// Rotates the KEKs of `keys`.
    pub fn new(keys: Arc<KeyHierarchy>) -> Self {
        Self {
            keys,
            batch_size: USER_KEY_BATCH,
        }
    }

    /// Re-wraps `user_keys` user keys per transaction instead of 4,096
    /// (at least one).
    #[must_use]
    pub fn with_batch(mut self, user_keys: u32) -> Self {
        self.batch_size = user_keys.max(1);
        self
    }
}

/// Where a KEK rotation stands: the group of shards starting at this
/// index of the list, and whether its new versions exist. Cursors of the
/// older one-shard form (`I:V`) resume as `I:new`, which at worst makes one
/// more version that is destroyed with the others.
fn parse_cursor(cursor: &str) -> Option<(usize, bool)> {
    let (index, phase) = cursor.split_once(':')?;
    Some((index.parse().ok()?, phase == "moving"))
}

/// One batch of a KEK rotation's user keys, re-wrapped.
struct Batch {
    rewraps: Vec<UserKeyRewrap>,
    /// Where an in-order scan goes on from.
    next: Option<(Pseudonym, u32)>,
    /// Whether the scan has ended: no user key of the group was left
    /// under an old version when it was read.
    ended: bool,
}

impl RotateKek {
    /// The next batch of user keys under an old version of their
    /// shard's KEK, re-wrapped under `targets`: in table order after
    /// `after`, or (not `in_order`) through the shard index.
    async fn next_batch(
        &self,
        targets: &[(u32, u32)],
        in_order: bool,
        after: Option<(Pseudonym, u32)>,
    ) -> Result<Batch, JobError> {
        if in_order {
            let (rewraps, next) = self
                .keys
                .rewrap_user_keys_in_order(targets, after, self.batch_size)
                .await
                .map_err(key_error)?;
            Ok(Batch {
                rewraps,
                ended: next.is_none(),
                next,
            })
        } else {
            let rewraps = self
                .keys
                .rewrap_user_keys_to(targets, self.batch_size)
                .await
                .map_err(key_error)?;
            Ok(Batch {
                ended: rewraps.is_empty(),
                rewraps,
                next: None,
            })
        }
    }
}

#[async_trait]
impl JobHandler for RotateKek {
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
        let bad = || {
            JobError::Permanent(format!(
                "bad KEK rotation parameters {:?}",
                job.record().params
            ))
        };
        let shards: Vec<u32> =
            match parse_rotate_kek_params(&job.record().params).ok_or_else(bad)? {
                KekShards::All => (0..self.keys.shards()).collect(),
                KekShards::Some(list) => list,
            };
        if let Some(s) = shards.iter().find(|s| **s >= self.keys.shards()) {
            return Err(JobError::Permanent(format!(
                "shard {s} does not exist (the store has {})",
                self.keys.shards()
            )));
        }
        let store = self.keys.store().clone();
        let (mut index, mut moving) = match job.record().cursor.as_str() {
            "" => (0, false),
            c => parse_cursor(c)
                .ok_or_else(|| JobError::Permanent(format!("bad KEK rotation cursor {c:?}")))?,
        };
        let mut done = job.record().done;
        let mut total = job.record().total;
        if total == 0 {
            total = store
                .count_user_keys(&shards[index.min(shards.len())..])
                .await?;
            job.checkpoint(done, total, &job.record().cursor.clone())
                .await?;
        }
        while index < shards.len() {
            let group = &shards[index..(index + SHARD_GROUP).min(shards.len())];
            let cursor = format!("{index}:moving");
            let targets: Vec<(u32, u32)> = if moving {
                // Made when the cursor moved here: each shard's newest.
                self.keys.newest_keks(group).await.map_err(key_error)?
            } else {
                // A new version after each shard's newest: the versions as
                // of now (or later ones) are what gets destroyed.
                let records = self.keys.new_kek_versions(group).await.map_err(key_error)?;
                let held = store
                    .insert_keks(&records, "gateway", &job.progress(done, total, &cursor))
                    .await?;
                job.note_progress(held, done, total, &cursor)?;
                records.iter().map(|r| (r.shard, r.version)).collect()
            };
            // A group of every shard reads the user keys in the table's
            // own order (no index lookups, and each batch's updates fall on
            // neighbouring pages); a smaller one through the shard index.
            let in_order = group.len() == self.keys.shards() as usize;
            let mut read = self.next_batch(&targets, in_order, None).await?;
            loop {
                let Batch {
                    rewraps,
                    next,
                    ended,
                } = read;
                let written = done + rewraps.len() as u64;
                let write = async {
                    if rewraps.is_empty() {
                        return Ok(None);
                    }
                    let progress = job.progress(written, total.max(written), &cursor);
                    let held = store.rewrap_user_keys(&rewraps, &progress).await?;
                    Ok::<_, JobError>(Some(held))
                };
                // In table order the next batch starts after this one and
                // shares no row with it: read and re-wrap it while this
                // one is written. Through the index, the next batch is
                // whatever is still under an old version once this one
                // has committed.
                let ahead = async {
                    match next {
                        Some(after) if in_order => {
                            Some(self.next_batch(&targets, true, Some(after)).await)
                        }
                        _ => None,
                    }
                };
                let (held, ahead) = tokio::join!(write, ahead);
                if let Some(held) = held? {
                    job.note_progress(held, written, total.max(written), &cursor)?;
                    done = written;
                    total = total.max(written);
                }
                if let Some(ahead) = ahead {
                    read = ahead?;
                    continue;
                }
                if !ended {
                    read = self.next_batch(&targets, in_order, None).await?;
                    continue;
                }
                match self
                    .keys
                    .destroy_keks_below(&targets, "gateway")
                    .await
                    .map_err(key_error)?
                {
                    DestroyKeks::Destroyed(pairs) => {
                        if !pairs.is_empty() {
                            tracing::info!(target: "sealgate::audit", shards = group.len(), versions = pairs.len(), "old KEK versions destroyed");
                        }
                        break;
                    }
                    // Written under an old version meanwhile: move them too.
                    DestroyKeks::StillInUse(_) => {
                        read = self.next_batch(&targets, in_order, None).await?;
                    }
                }
            }
            index += group.len();
            moving = false;
            job.checkpoint(done, total, &format!("{index}:new")).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Suite;

    #[test]
    fn parameters_round_trip() {
        for suite in Suite::ALL {
            for space in [None, Some("moments")] {
                let params = reseal_params(suite, space);
                assert_eq!(
                    parse_reseal_params(&params),
                    Some((suite, space.map(str::to_string)))
                );
            }
        }
        assert_eq!(parse_reseal_params("suite=rot13"), None);
        assert_eq!(parse_reseal_params("suite=sm4-gcm space=a b"), None);
        assert_eq!(parse_reseal_params("space=moments"), None);
    }

    #[test]
    fn rewrap_params_round_trip() {
        assert_eq!(parse_rewrap_params(&rewrap_params(7)), Some(7));
        for bad in ["", "user_key_version=", "user_key_version=x", "shards=all"] {
            assert_eq!(parse_rewrap_params(bad), None, "{bad}");
        }
    }

    #[test]
    fn kek_params_round_trip() {
        for shards in [
            KekShards::All,
            KekShards::Some(vec![3]),
            KekShards::Some(vec![0, 17, 255]),
        ] {
            assert_eq!(
                parse_rotate_kek_params(&rotate_kek_params(&shards)),
                Some(shards)
            );
        }
        for bad in ["", "shards=", "shards=x", "shards=1,,2", "master_version=1"] {
            assert_eq!(parse_rotate_kek_params(bad), None, "{bad}");
        }
    }
}
