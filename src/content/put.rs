//! Writes: PutObject (streamed) and PutItem (one message), their
//! preconditions (`if_absent`, `if_match`) and safe retries (`request_id`).
//!
//! Plaintext is sealed as it arrives, in steps of 64 KiB, and each sealed
//! piece goes to the blob writer: an upload holds one message and one step.
//! Nothing is committed before the finish message arrives and the size
//! (declared, if any) and the finish's SHA-256 (if any) match. An erasure
//! during the upload ends it at the next piece. After the commit the write
//! checks its key version against the key store
//! (`KeyHierarchy::confirm_sealed_with`): if the user was erased meanwhile,
//! or a rewrap retired that version, the object is removed again (ABORTED
//! `KEY_ROTATED` for the latter).
//!
//! With a `request_id`, a write first recalls the result remembered under
//! it (24 hours, in the key store) and returns it without reading the body;
//! if a concurrent write with the same id was remembered first, that result
//! wins and the loser's generated-id object is deleted.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{etag_of, Content, ObjectInfo, Write};
use crate::blob::{BlobError, WriteMode};
use crate::crypto::envelope::FIXED_HEADER_LEN;
use crate::crypto::{Metadata, ObjectSealer};
use crate::error::{Error, Reason};
use crate::keys::store::RequestRecord;
use crate::keys::KeyError;

/// How long a request id is remembered: a retry within this window returns
/// the first call's result.
pub const REQUEST_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Longest request id.
const MAX_REQUEST_ID: usize = 256;

/// What a caller asks of a write beyond its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Create-only: ALREADY_EXISTS if the id is taken.
    pub if_absent: bool,
    /// Replace only the object with this etag.
    pub if_match: Option<String>,
    /// The caller's idempotency key: a retry with the same id by the same
    /// user within [`REQUEST_WINDOW_MS`] returns the first result.
    pub request_id: Option<String>,
}

/// The stored form of a request id: its hash, so the id itself (which may
/// be anything a client chose) is never kept.
pub(super) fn request_hash(request_id: &str) -> Result<[u8; 32], Error> {
    if request_id.len() > MAX_REQUEST_ID {
        return Err(Error::invalid(
            Reason::InvalidRequest,
            "request_id",
            format!("request_id is over {MAX_REQUEST_ID} bytes"),
        ));
    }
    Ok(super::labelled_sha256(
        b"sealgate/v1/request",
        &[request_id.as_bytes()],
    ))
}

/// Plaintext sealed at a time: a message of an upload (the CLI sends 1 MiB,
/// up to 4 MiB are allowed) is sealed and handed to storage in steps of
/// this size, so that an upload holds one message plus one step of sealed
/// bytes (256 uploads of 16 MiB stay within a few hundred MiB).
const SEAL_STEP: usize = 64 * 1024;
/// Sealed bytes of one step at most: the step and a chunk left pending
/// from the step before, with their tags.
const WRITE_PIECE: usize = SEAL_STEP + 2 * crate::crypto::chunked::CHUNK_SIZE;

/// One message of an upload after its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadPart {
    /// Plaintext bytes.
    Data(Bytes),
    /// The end of the upload, with the SHA-256 of the whole plaintext if
    /// the caller wants it checked. Without it, nothing is stored.
    Finish {
        /// Expected SHA-256 of the plaintext.
        sha256: Option<[u8; 32]>,
    },
}

impl Content {
    /// Stores an object from a stream of plaintext pieces, at most
    /// `limits.max_object_bytes`. Nothing is visible unless the whole stream
    /// arrived and was sealed; on any error, or if this future is dropped,
    /// the partial object is discarded. A `declared_size` is checked against
    /// what arrives and lets the store stream the object straight through.
    ///
    /// The stream must end with [`UploadPart::Finish`]: a stream cut short
    /// (a client bug, a proxy that truncates) stores nothing.
    ///
    /// # Errors
    /// [`Error::TooLarge`] past the limit; [`Error::InvalidArgument`] when
    /// the bytes do not match `declared_size` (`SIZE_MISMATCH`) or the
    /// finish's digest (`CHECKSUM_MISMATCH`), when the finish is missing
    /// (`UPLOAD_NOT_FINISHED`) or not last; [`Error::UserErased`]; whatever
    /// `body` yields; storage failures.
    pub async fn put<S>(
        &self,
        w: &Write,
        metadata: &Metadata,
        declared_size: Option<u64>,
        body: S,
    ) -> Result<ObjectInfo, Error>
    where
        S: Stream<Item = Result<UploadPart, Error>> + Unpin + Send,
    {
        self.put_limited(
            w,
            metadata,
            (self.limits.max_object_bytes, Reason::ObjectTooLarge),
            declared_size,
            body,
        )
        .await
    }

    /// Stores a small item from one buffer, at most `limits.max_item_bytes`.
    ///
    /// # Errors
    /// As [`Content::put`].
    pub async fn put_item(
        &self,
        w: &Write,
        metadata: &Metadata,
        content: Bytes,
    ) -> Result<ObjectInfo, Error> {
        let size = Some(content.len() as u64);
        let body = futures_util::stream::iter([
            Ok(UploadPart::Data(content)),
            Ok(UploadPart::Finish { sha256: None }),
        ]);
        self.put_limited(
            w,
            metadata,
            (self.limits.max_item_bytes, Reason::ItemTooLarge),
            size,
            body,
        )
        .await
    }

    /// The first result of a retried request: what the write remembered
    /// under the user's request id within the window, with the object's
    /// metadata if it is still the object that write stored.
    async fn recall(&self, w: &Write) -> Result<Option<ObjectInfo>, Error> {
        let Some(request) = &w.request else {
            return Ok(None);
        };
        let since = crate::keys::unix_ms() - REQUEST_WINDOW_MS;
        let Some(record) = self
            .requests
            .request(&w.obj.pseudonym, request, since)
            .await?
        else {
            return Ok(None);
        };
        if record.space != w.obj.key.space || record.requested_id != w.requested_id {
            return Err(Error::invalid(
                Reason::RequestIdReused,
                "request_id",
                "request_id was used by another write of this user (another space or object id) within 24 hours",
            ));
        }
        Ok(Some(self.recalled_info(record).await?))
    }

    async fn recalled_info(&self, record: RequestRecord) -> Result<ObjectInfo, Error> {
        let obj = self.object_ref_for(&record.pseudonym, &record.space, &record.object_id)?;
        let (metadata, suite) = match self.head(&obj).await {
            Ok(info) if info.etag == record.etag => (info.metadata, info.suite),
            // Replaced or deleted since: the first result without metadata.
            Ok(_) | Err(Error::NotFound) => (Metadata::default(), None),
            Err(e) => return Err(e),
        };
        Ok(ObjectInfo {
            space: record.space,
            object_id: record.object_id,
            size: record.size,
            metadata,
            etag: record.etag,
            created: Some(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(
                        u64::try_from(record.created_ms).unwrap_or(0),
                    ),
            ),
            suite,
        })
    }

    /// Remembers a finished write under its request id. If a concurrent
    /// call with the same id was remembered first, that call's result is
    /// the answer, and a generated-id object this call stored is deleted
    /// (nobody will ever learn its id). If remembering fails, such an
    /// object is deleted too, so that the caller's retry leaves no orphan.
    async fn remember(&self, w: &Write, info: ObjectInfo) -> Result<ObjectInfo, Error> {
        let Some(request) = w.request else {
            return Ok(info);
        };
        let record = RequestRecord {
            pseudonym: w.obj.pseudonym,
            request,
            space: info.space.clone(),
            requested_id: w.requested_id.clone(),
            object_id: info.object_id.clone(),
            size: info.size,
            etag: info.etag.clone(),
            created_ms: info
                .created
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            at_ms: crate::keys::unix_ms(),
        };
        let since = record.at_ms - REQUEST_WINDOW_MS;
        let held = self.requests.remember_request(&record, since).await;
        let generated = w.requested_id.is_empty();
        match held {
            Ok(held) if held == record => Ok(info),
            Ok(held) => {
                if generated {
                    self.blob.delete(&w.obj.key).await?;
                }
                self.recalled_info(held).await
            }
            Err(e) => {
                if generated {
                    if let Err(d) = self.blob.delete(&w.obj.key).await {
                        tracing::warn!(error = %d, "removing an unremembered generated-id object");
                    }
                }
                Err(e.into())
            }
        }
    }

    pub(super) async fn put_limited<S>(
        &self,
        w: &Write,
        metadata: &Metadata,
        (limit, too_large): (u64, Reason),
        declared_size: Option<u64>,
        mut body: S,
    ) -> Result<ObjectInfo, Error>
    where
        S: Stream<Item = Result<UploadPart, Error>> + Unpin + Send,
    {
        // A retry of a remembered request: the first result, body unread.
        if let Some(first) = self.recall(w).await? {
            return Ok(first);
        }
        // Erasures first: no upload starts while the key store keeps its
        // room for them.
        self.keys.admit_upload().await?;
        if let Some(declared) = declared_size {
            if declared > limit {
                return Err(Error::too_large(
                    too_large,
                    format!("declared size {declared} exceeds the limit of {limit} bytes"),
                ));
            }
        }
        let obj = &w.obj;
        // Before any key is made for a new user: metadata the format cannot
        // hold names the field at fault.
        metadata
            .encode()
            .map_err(|_| Error::metadata_too_large(&metadata.content_type))?;
        // Fail fast, before the bytes travel; checked again at the commit.
        if let Some(want) = &w.if_match {
            self.check_etag(obj, want).await?;
        }
        // A held user's objects are preserved: a write may add one, never
        // replace one (create-only; an existing id is refused at commit).
        let held = if w.mode == WriteMode::Replace || w.if_match.is_some() {
            self.keys.holding_cases(&obj.pseudonym).await?
        } else {
            0
        };
        if held > 0 && w.if_match.is_some() {
            return Err(KeyError::LegalHold { cases: held }.into());
        }
        let mode = if held > 0 {
            WriteMode::CreateOnly
        } else {
            w.mode
        };
        let mut guard = self.erasure_guard(obj).await;
        let (version, user_key) = self.keys.active_user_key(&obj.pseudonym).await?;
        let format = (self.object_version.to_write(declared_size), w.suite);
        let (mut sealer, prefix) =
            ObjectSealer::new_in(format, &user_key, version, &obj.identity, metadata)?;
        drop(user_key);
        let etag = etag_of(&prefix[..FIXED_HEADER_LEN.min(prefix.len())]);
        let mut writer = match (declared_size, w.created) {
            (Some(n), Some(created)) => {
                self.blob
                    .create_exact_as_of(&obj.key, mode, sealer.stored_len(n), created)
                    .await?
            }
            (Some(n), None) => {
                self.blob
                    .create_exact(&obj.key, mode, sealer.stored_len(n))
                    .await?
            }
            // A kept creation time comes with a size: a reseal's.
            (None, _) => self.blob.create(&obj.key, mode).await?,
        };
        let created = writer.created();
        let result = async {
            writer.write(&prefix).await?;
            let mut sealed = Vec::with_capacity(WRITE_PIECE);
            let mut finish = None;
            while let Some(part) = body.next().await {
                let piece = match part? {
                    UploadPart::Data(_) | UploadPart::Finish { .. } if finish.is_some() => {
                        return Err(Error::invalid(
                            Reason::InvalidRequest,
                            "finish",
                            "the finish message must be the last of the upload",
                        ));
                    }
                    UploadPart::Finish { sha256 } => {
                        finish = Some(sha256);
                        continue;
                    }
                    UploadPart::Data(piece) => piece,
                };
                // An erasure during the upload ends it at the next piece.
                guard.check().await?;
                let total = sealer.plaintext_len() + piece.len() as u64;
                if total > limit {
                    return Err(Error::too_large(
                        too_large,
                        format!("object exceeds the limit of {limit} bytes"),
                    ));
                }
                if let Some(declared) = declared_size.filter(|&d| total > d) {
                    return Err(Error::invalid(
                        Reason::SizeMismatch,
                        "size",
                        format!("more bytes than the declared size {declared}"),
                    ));
                }
                for step in piece.chunks(SEAL_STEP) {
                    sealer.push(step, &mut sealed)?;
                    if !sealed.is_empty() {
                        writer.write(&sealed).await?;
                        sealed.clear();
                    }
                }
            }
            let Some(expected) = finish else {
                return Err(Error::invalid(
                    Reason::UploadNotFinished,
                    "finish",
                    "the upload ended without its finish message; nothing was stored",
                ));
            };
            let size = sealer.plaintext_len();
            if let Some(declared) = declared_size.filter(|&d| d != size) {
                return Err(Error::invalid(
                    Reason::SizeMismatch,
                    "size",
                    format!("received {size} bytes, but the declared size is {declared}"),
                ));
            }
            if expected.is_some_and(|want| sealer.plaintext_sha256()[..] != want[..]) {
                return Err(Error::invalid(
                    Reason::ChecksumMismatch,
                    "finish.sha256",
                    "the SHA-256 of the received bytes differs from the finish message's; nothing was stored",
                ));
            }
            sealer.finish(&mut sealed)?;
            writer.write(&sealed).await?;
            Ok::<_, Error>(size)
        }
        .await;
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, "aborting a failed upload");
                }
                return Err(e);
            }
        };
        {
            let _commit = self.commit_lock(&obj.key).lock().await;
            if let Some(want) = &w.if_match {
                if let Err(e) = self.check_etag(obj, want).await {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(error = %abort, "aborting an upload that failed if_match");
                    }
                    return Err(e);
                }
            }
            match writer.commit().await {
                Err(BlobError::AlreadyExists) if held > 0 => {
                    return Err(KeyError::LegalHold { cases: held }.into());
                }
                other => other?,
            }
        }
        // The user may have been erased while the upload ran: the key used is
        // destroyed, so the object is unreadable; remove it so that garbage
        // collection, which may already be done, leaves nothing behind. Or a
        // rewrap may have retired the key version used: its listing may have
        // missed this object, which would become unreadable when the
        // version is destroyed; remove it, and the caller writes again. Only
        // this write's object goes: a later write of the same id (under the
        // commit lock, so none lands between the check and the delete)
        // stays.
        match self.keys.confirm_sealed_with(&obj.pseudonym, version).await {
            Ok(()) => {}
            Err(e @ KeyError::KeyRetired(_)) => {
                let _commit = self.commit_lock(&obj.key).lock().await;
                if self.current_etag(&obj.key).await?.as_ref() == Some(&etag) {
                    self.blob.delete(&obj.key).await?;
                }
                return Err(e.into());
            }
            Err(e) => {
                self.blob.delete(&obj.key).await?;
                return Err(e.into());
            }
        }
        let info = ObjectInfo {
            space: obj.key.space.clone(),
            object_id: obj.key.name.clone(),
            size,
            metadata: metadata.clone(),
            etag,
            created: Some(created),
            suite: Some(w.suite),
        };
        self.remember(w, info).await
    }
}
