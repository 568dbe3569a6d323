//! Writes: PutObject (streamed) and PutItem (one message).

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Content, ObjectInfo, ObjectRef};
use crate::blob::WriteMode;
use crate::crypto::{Metadata, ObjectSealer};
use crate::error::{Error, Reason};

/// Sealed bytes are handed to storage in pieces of about this size.
const WRITE_PIECE: usize = super::READ_PIECE + super::READ_PIECE / 64;

impl Content {
    /// Stores an object from a stream of plaintext pieces, at most
    /// `limits.max_object_bytes`. Nothing is visible unless the whole stream
    /// arrived and was sealed; on any error, or if this future is dropped,
    /// the partial object is discarded. A `declared_size` is checked against
    /// what arrives and lets the store stream the object straight through.
    ///
    /// # Errors
    /// [`Error::TooLarge`] past the limit; [`Error::InvalidArgument`] when
    /// the bytes do not match `declared_size`; [`Error::UserErased`];
    /// whatever `body` yields; storage failures.
    pub async fn put<S>(
        &self,
        obj: &ObjectRef,
        mode: WriteMode,
        metadata: &Metadata,
        declared_size: Option<u64>,
        body: S,
    ) -> Result<ObjectInfo, Error>
    where
        S: Stream<Item = Result<Bytes, Error>> + Unpin + Send,
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
        let body = futures_util::stream::iter([Ok(content)]);
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
        S: Stream<Item = Result<Bytes, Error>> + Unpin + Send,
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
            while let Some(piece) = body.next().await {
                let piece = piece?;
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
                sealer.push(&piece, &mut sealed)?;
                if !sealed.is_empty() {
                    writer.write(&sealed).await?;
                    sealed.clear();
                }
            }
            let size = sealer.plaintext_len();
            if let Some(declared) = declared_size.filter(|&d| d != size) {
                return Err(Error::invalid(
                    Reason::SizeMismatch,
                    "size",
                    format!("received {size} bytes, but the declared size is {declared}"),
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
