//! Reseal: objects re-encrypted into another cipher suite (job kind
//! [`JOB_KIND_RESEAL`](crate::keys::store::JOB_KIND_RESEAL), parameters
//! [`reseal_params`](crate::jobs::rotation::reseal_params)), the one job
//! that rewrites object bodies.
//!
//! The job visits every user who holds a key, in pseudonym order, and
//! each of the job's spaces (one, or all), page by page. An object sealed
//! in another suite is read, authenticated and written again in the
//! target suite through the write path of PutObject (`if_match` on the
//! etag read, the user's active key, the erasure and hold checks, the
//! post-commit checks), so a reseal is exactly a rewrite by a caller who
//! read the object: a write that lands meanwhile wins and the object is
//! looked at again; an erasure meanwhile leaves nothing behind. The
//! cursor `pseudonym:space index:last object id` is checkpointed after
//! every page, and after each user; a job killed mid-way resumes there,
//! and the objects it finished stay in the target suite (each rewrite
//! commits whole or not at all).
//!
//! A held user's objects are preserved as they are (a reseal replaces
//! ciphertext, which a hold forbids); so are a restricted user's (pending
//! erasure). The job counts both and the audit trail names the count.
//! A resealed object has a new etag and keeps its `create_time`.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::put::UploadPart;
use super::rewrap::job_error;
use super::{Content, ObjectRef, Write};
use crate::blob::WriteMode;
use crate::crypto::{Pseudonym, Suite};
use crate::error::{Error, Reason};
use crate::jobs::rotation::parse_reseal_params;
use crate::jobs::{JobError, JobHandler, LeasedJob};

/// Objects listed per page (and per checkpoint); users fetched at a time.
const PAGE: usize = 50;

/// How often one object is looked at again after a write replaced it
/// under the reseal before the job gives up for now (and retries later).
const ATTEMPTS: usize = 3;

/// Plaintext pieces in flight between the read and the write of one
/// object.
const PIECES_IN_FLIGHT: usize = 4;

/// What a reseal did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resealed {
    /// Written again in the target suite.
    Rewritten,
    /// In the target suite already, or deleted meanwhile.
    Untouched,
    /// Preserved as it is: its owner is held or restricted.
    Preserved,
}

impl Content {
    /// Writes `obj` again in `suite` unless it is in that suite already.
    async fn reseal_object(&self, obj: &ObjectRef, suite: Suite) -> Result<Resealed, Error> {
        for _ in 0..ATTEMPTS {
            let opened = match self.open(obj, true).await {
                Ok(opened) => opened,
                Err(Error::NotFound) => return Ok(Resealed::Untouched),
                Err(Error::FailedPrecondition {
                    reason: Reason::UserRestricted | Reason::ErasurePending,
                    ..
                }) => return Ok(Resealed::Preserved),
                Err(e) => return Err(e),
            };
            if opened.info.suite == Some(suite) {
                return Ok(Resealed::Untouched);
            }
            let w = Write {
                obj: obj.clone(),
                mode: WriteMode::Replace,
                if_match: Some(opened.info.etag.clone()),
                request: None,
                requested_id: obj.key.name.clone(),
                suite,
                created: opened.info.created,
            };
            let metadata = opened.info.metadata.clone();
            let size = opened.info.size;
            let (tx, rx) = tokio::sync::mpsc::channel(PIECES_IN_FLIGHT);
            let read = async move {
                let pieces = tx.clone();
                let sink = move |piece: Bytes| {
                    let pieces = pieces.clone();
                    async move { pieces.send(Ok(UploadPart::Data(piece))).await.is_ok() }
                };
                let last = match opened.read_into(None, sink).await {
                    Ok(()) => Ok(UploadPart::Finish { sha256: None }),
                    Err(e) => Err(e),
                };
                // The write has stopped listening only if it failed.
                let _ = tx.send(last).await;
            };
            let body = tokio_stream::wrappers::ReceiverStream::new(rx).boxed();
            let write = self.put_limited(
                &w,
                &metadata,
                (u64::MAX, Reason::ObjectTooLarge),
                Some(size),
                body,
            );
            let ((), written) = tokio::join!(read, write);
            match written {
                Ok(_) => return Ok(Resealed::Rewritten),
                // Replaced or deleted since it was read: look again.
                Err(Error::FailedPrecondition {
                    reason: Reason::EtagMismatch,
                    ..
                }) => {}
                Err(Error::FailedPrecondition {
                    reason: Reason::LegalHold | Reason::UserRestricted | Reason::ErasurePending,
                    ..
                }) => return Ok(Resealed::Preserved),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(
            "an object kept changing while it was resealed".into(),
        ))
    }
}

/// Runs reseal jobs.
pub struct Reseal {
    content: Arc<Content>,
}

impl Reseal {
    /// Reseals the objects `content` stores.
    pub fn new(content: Arc<Content>) -> Self {
        Self { content }
    }
}

/// `pseudonym:space index:after` (`after` empty: from the first object).
fn parse_cursor(cursor: &str) -> Option<(Pseudonym, usize, Option<String>)> {
    let (p, rest) = cursor.split_once(':')?;
    let (index, after) = rest.split_once(':')?;
    let after = (!after.is_empty()).then(|| after.to_string());
    Some((Pseudonym::from_hex(p).ok()?, index.parse().ok()?, after))
}

#[async_trait]
impl JobHandler for Reseal {
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
        let record = job.record().clone();
        let (suite, space) = parse_reseal_params(&record.params).ok_or_else(|| {
            JobError::Permanent(format!("bad reseal parameters {:?}", record.params))
        })?;
        let content = &self.content;
        let spaces: Vec<String> = match space {
            Some(space) => vec![space],
            None => content.spaces.clone(),
        };
        // Where the last run stopped: a user part-way, or none yet.
        let mut resume = match record.cursor.as_str() {
            "" => None,
            c => Some(
                parse_cursor(c)
                    .ok_or_else(|| JobError::Permanent(format!("bad reseal cursor {c:?}")))?,
            ),
        };
        let mut done = record.done;
        let mut preserved = 0u64;
        let mut after_user = None;
        // A resumed user first, from where it stopped.
        if let Some((p, index, after)) = resume.take() {
            let n = self
                .reseal_user(job, &p, &spaces, (index, after), suite, &mut done)
                .await?;
            preserved += n;
            after_user = Some(p);
        }
        loop {
            let users = content
                .keys
                .users_after(after_user.as_ref(), PAGE as u32)
                .await
                .map_err(|e| job_error(e.into()))?;
            let Some(last) = users.last().copied() else {
                break;
            };
            for p in &users {
                preserved += self
                    .reseal_user(job, p, &spaces, (0, None), suite, &mut done)
                    .await?;
            }
            after_user = Some(last);
        }
        tracing::info!(target: "sealgate::audit", job = %record.id, suite = %suite, resealed = done, preserved, "reseal finished");
        let cursor = record_end(after_user.as_ref(), spaces.len());
        job.checkpoint(done, done, &cursor).await
    }
}

/// The cursor of a finished user: every space done.
fn record_end(p: Option<&Pseudonym>, spaces: usize) -> String {
    p.map_or_else(String::new, |p| format!("{p}:{spaces}:"))
}

impl Reseal {
    /// Reseals `p`'s objects in `spaces` from `(space index, after)` on,
    /// checkpointing after every page; returns how many were preserved.
    async fn reseal_user(
        &self,
        job: &mut LeasedJob,
        p: &Pseudonym,
        spaces: &[String],
        (mut index, mut after): (usize, Option<String>),
        suite: Suite,
        done: &mut u64,
    ) -> Result<u64, JobError> {
        let content = &self.content;
        let owner = p.to_string();
        let mut preserved = 0;
        while let Some(space) = spaces.get(index) {
            loop {
                // A listing that fails is the store's trouble, not the
                // job's: tried again until it lists.
                let page = content
                    .blob
                    .list(space, &owner, after.as_deref(), PAGE)
                    .await
                    .map_err(|e| JobError::Transient(format!("listing {space}: {e}")))?;
                let Some(last) = page.last().map(|e| e.name.clone()) else {
                    break;
                };
                for entry in &page {
                    let obj = content
                        .object_ref_for(p, space, &entry.name)
                        .map_err(job_error)?;
                    match content.reseal_object(&obj, suite).await {
                        Ok(Resealed::Rewritten) => *done += 1,
                        Ok(Resealed::Untouched) => {}
                        Ok(Resealed::Preserved) => preserved += 1,
                        // Erased meanwhile: nothing of the user to reseal.
                        Err(Error::UserErased) => return Ok(preserved),
                        Err(e) => return Err(job_error(e)),
                    }
                }
                job.checkpoint(*done, 0, &format!("{p}:{index}:{last}"))
                    .await?;
                after = Some(last);
            }
            index += 1;
            after = None;
        }
        job.checkpoint(*done, 0, &record_end(Some(p), spaces.len()))
            .await?;
        Ok(preserved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse() {
        let p = Pseudonym::from_raw([7; 32]);
        assert_eq!(parse_cursor(&format!("{p}:0:")), Some((p, 0, None)));
        assert_eq!(
            parse_cursor(&format!("{p}:1:photo-9")),
            Some((p, 1, Some("photo-9".into())))
        );
        assert_eq!(parse_cursor("zz:0:"), None);
        assert_eq!(parse_cursor(&format!("{p}:x:")), None);
    }
}
