//! Rewrap: every object of a user moved to one user-key version by
//! rewriting its key slot, the object body untouched, then the older
//! versions destroyed (job kind
//! [`JOB_KIND_REWRAP_USER`](crate::keys::store::JOB_KIND_REWRAP_USER),
//! parameters `user_key_version=N`).
//!
//! The job first marks every version below N retiring
//! ([`KeyHierarchy::retire_user_keys_below`](crate::keys::KeyHierarchy)),
//! then lists the user's objects space by space and rewrites each slot
//! under a version below N, checkpointing `space index:last name` after
//! every page, and finally destroys the retiring versions. A write that
//! sealed under an older version and committed after the mark is caught by
//! its own post-commit check (it removes its object and fails
//! `KEY_ROTATED`); one that committed before the mark is in the listing. A
//! reader that read a header just before its slot moved and its version
//! was destroyed reads the header again. Each slot rewrite is conditional
//! on the slot read, under the object's commit lock, so it never
//! overwrites an object replaced meanwhile.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Content, ObjectRef};
use crate::blob::{BlobError, SlotRewrite, KEY_SLOT_RANGE};
use crate::crypto::envelope::{Header, KeySlot};
use crate::crypto::{CryptoError, UserKey};
use crate::error::Error;
use crate::jobs::rotation::parse_rewrap_params;
use crate::jobs::{JobError, JobHandler, LeasedJob};
use crate::keys::KeyError;

/// Objects listed per page (and per checkpoint).
const PAGE: usize = 100;

/// How often one object's slot is read again after it changed under a
/// rewrite before the job gives up for now (and retries later).
const SLOT_ATTEMPTS: usize = 3;

/// What a slot rewrite did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    /// The slot now names the target version.
    Rewritten,
    /// Already at or past the target, or deleted meanwhile.
    Untouched,
}

impl Content {
    /// Moves `obj`'s key slot to user-key `target` (whose key is `new`)
    /// unless it is there or past it already.
    async fn rewrap_object(
        &self,
        obj: &ObjectRef,
        target: u32,
        new: &UserKey,
    ) -> Result<Moved, Error> {
        for _ in 0..SLOT_ATTEMPTS {
            // Writers of this process commit under the same lock.
            let _commit = self.commit_lock(&obj.key).lock().await;
            let Some((fixed, _)) = self.read_fixed(&obj.key).await? else {
                return Ok(Moved::Untouched);
            };
            let range = KEY_SLOT_RANGE.start as usize..KEY_SLOT_RANGE.end as usize;
            let Some(encoded) = fixed.get(range) else {
                return Err(Error::DataLoss);
            };
            let format = Header::format_of(&fixed)?;
            let slot = KeySlot::decode(encoded)?;
            if slot.user_key_version >= target {
                return Ok(Moved::Untouched);
            }
            let old = self
                .keys
                .user_key(&obj.pseudonym, slot.user_key_version)
                .await?;
            let moved = slot
                .rewrap(format, &old, new, target, &obj.identity)
                .map_err(|_: CryptoError| Error::DataLoss)?;
            crate::metrics::get().unwrapped(crate::metrics::UnwrapLevel::User);
            match self
                .blob
                .rewrite_key_slot(&obj.key, &slot.encode(), &moved.encode())
                .await
            {
                Ok(SlotRewrite::Rewritten) => {
                    // An erasure's garbage collection may have deleted the
                    // object between the check and the rename: the rename
                    // must not leave it behind.
                    if let Err(e) = self.keys.ensure_not_erased(&obj.pseudonym).await {
                        self.blob.delete(&obj.key).await?;
                        return Err(e.into());
                    }
                    return Ok(Moved::Rewritten);
                }
                // Replaced or rewritten since it was read: look again.
                Ok(SlotRewrite::Changed) => {}
                Err(BlobError::NotFound) => return Ok(Moved::Untouched),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(
            "an object kept changing while its key slot was rewritten".into(),
        ))
    }
}

/// Runs rewrap jobs.
pub struct RewrapUser {
    content: Arc<Content>,
}

impl RewrapUser {
    /// Rewraps the objects `content` stores.
    pub fn new(content: Arc<Content>) -> Self {
        Self { content }
    }
}

/// Whether trying again can help after a rewrap step failed.
pub(super) fn job_error(e: Error) -> JobError {
    match e {
        Error::Unavailable(m) | Error::StorageFull(m) | Error::StorageLost(m) => {
            JobError::Transient(m)
        }
        Error::UserErased => JobError::Permanent("the user was erased: nothing to rewrap".into()),
        Error::DataLoss => JobError::Permanent(
            "an object of the user fails its integrity checks; the older key versions are kept"
                .into(),
        ),
        other => JobError::Permanent(other.to_string()),
    }
}

fn parse_cursor(cursor: &str) -> Option<(usize, Option<String>)> {
    let (index, after) = cursor.split_once(':')?;
    let after = (!after.is_empty()).then(|| after.to_string());
    Some((index.parse().ok()?, after))
}

#[async_trait]
impl JobHandler for RewrapUser {
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
        let record = job.record().clone();
        let Some(p) = record.pseudonym else {
            return Err(JobError::Permanent("rewrap job without a user".into()));
        };
        let target = parse_rewrap_params(&record.params).ok_or_else(|| {
            JobError::Permanent(format!("bad rewrap parameters {:?}", record.params))
        })?;
        let content = &self.content;
        let keys = &content.keys;
        // Idempotent: a resumed job marks again, which changes nothing.
        keys.retire_user_keys_below(&p, target)
            .await
            .map_err(|e| job_error(e.into()))?;
        let new = match keys.user_key(&p, target).await {
            Ok(key) => key,
            Err(KeyError::MissingUserKeyVersion(v)) => {
                return Err(JobError::Permanent(format!(
                    "user key version {v} does not exist"
                )))
            }
            Err(e) => return Err(job_error(e.into())),
        };
        let (mut index, mut after) = match record.cursor.as_str() {
            "" => (0, None),
            c => parse_cursor(c)
                .ok_or_else(|| JobError::Permanent(format!("bad rewrap cursor {c:?}")))?,
        };
        let mut done = record.done;
        let owner = p.to_string();
        while let Some(space) = content.spaces.get(index) {
            loop {
                let page = content
                    .blob
                    .list(space, &owner, after.as_deref(), PAGE)
                    .await
                    .map_err(|e| job_error(e.into()))?;
                let Some(last) = page.last().map(|e| e.name.clone()) else {
                    break;
                };
                for entry in &page {
                    let obj = content
                        .object_ref_for(&p, space, &entry.name)
                        .map_err(job_error)?;
                    if content
                        .rewrap_object(&obj, target, &new)
                        .await
                        .map_err(job_error)?
                        == Moved::Rewritten
                    {
                        done += 1;
                    }
                }
                job.checkpoint(done, 0, &format!("{index}:{last}")).await?;
                after = Some(last);
            }
            index += 1;
            after = None;
            job.checkpoint(done, 0, &format!("{index}:")).await?;
        }
        drop(new);
        let destroyed = keys
            .destroy_retiring_user_keys(&p, "gateway")
            .await
            .map_err(|e| job_error(e.into()))?;
        if !destroyed.is_empty() {
            tracing::info!(target: "sealgate::audit", pseudonym = %p, versions = ?destroyed, "user key versions destroyed after rewrap");
        }
        job.checkpoint(done, done, &format!("{index}:")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse() {
        assert_eq!(parse_cursor("0:"), Some((0, None)));
        assert_eq!(parse_cursor("2:photo-9"), Some((2, Some("photo-9".into()))));
        assert_eq!(parse_cursor("x:"), None);
        assert_eq!(parse_cursor("3"), None);
    }
}
