//! Writes: PutObject (streamed) and PutItem (one message).

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Content, ObjectInfo, ObjectRef};
use crate::blob::WriteMode;
use crate::crypto::{Metadata, ObjectSealer};
use crate::error::{Error, Reason};

/// Sealed bytes are handed to storage in pieces of about this size.
const WRITE_PIECE: usize = super::READ_PIECE + super::READ_PIECE / 64;

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
        obj: &ObjectRef,
        mode: WriteMode,
        metadata: &Metadata,
        declared_size: Option<u64>,
        body: S,
    ) -> Result<ObjectInfo, Error>
    where
        S: Stream<Item = Result<UploadPart, Error>> + Unpin + Send,
    {
        self.put_limited(
            obj,
            mode,
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
        obj: &ObjectRef,
        mode: WriteMode,
        metadata: &Metadata,
        content: Bytes,
    ) -> Result<ObjectInfo, Error> {
        let size = Some(content.len() as u64);
        let body = futures_util::stream::iter([
            Ok(UploadPart::Data(content)),
            Ok(UploadPart::Finish { sha256: None }),
        ]);
        self.put_limited(
            obj,
            mode,
            metadata,
            (self.limits.max_item_bytes, Reason::ItemTooLarge),
            size,
            body,
        )
        .await
    }

    async fn put_limited<S>(
        &self,
        obj: &ObjectRef,
        mode: WriteMode,
        metadata: &Metadata,
        (limit, too_large): (u64, Reason),
        declared_size: Option<u64>,
        mut body: S,
    ) -> Result<ObjectInfo, Error>
    where
        S: Stream<Item = Result<UploadPart, Error>> + Unpin + Send,
    {
        if let Some(declared) = declared_size {
            if declared > limit {
                return Err(Error::too_large(
                    too_large,
                    format!("declared size {declared} exceeds the limit of {limit} bytes"),
                ));
            }
        }
        let mut guard = self.erasure_guard(obj);
        let (version, user_key) = self.keys.active_user_key(&obj.pseudonym).await?;
        let (mut sealer, prefix) = ObjectSealer::new(&user_key, version, &obj.identity, metadata)?;
        drop(user_key);
        let mut writer = match declared_size {
            Some(n) => {
                self.blob
                    .create_exact(&obj.key, mode, sealer.stored_len(n))
                    .await?
            }
            None => self.blob.create(&obj.key, mode).await?,
        };
        let result = async {
            writer.write(&prefix).await?;
            let mut sealed = Vec::with_capacity(WRITE_PIECE);
            let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
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
                digest.update(&piece);
                sealer.push(&piece, &mut sealed)?;
                if !sealed.is_empty() {
                    writer.write(&sealed).await?;
                    sealed.clear();
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
            if expected.is_some_and(|want| digest.finish().as_ref() != want) {
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
        writer.commit().await?;
        // The user may have been erased while the upload ran: the key used is
        // destroyed, so the object is unreadable; remove it so that garbage
        // collection, which may already be done, leaves nothing behind.
        if let Err(e) = self.keys.ensure_not_erased(&obj.pseudonym).await {
            self.blob.delete(&obj.key).await?;
            return Err(e.into());
        }
        Ok(ObjectInfo {
            space: obj.key.space.clone(),
            object_id: obj.key.name.clone(),
            size,
            metadata: metadata.clone(),
        })
    }
}
