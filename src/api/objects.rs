//! Object operations: where keys, blobs and the crypto core meet.
//!
//! Sealing happens as bytes arrive, and each encrypted piece goes straight to
//! the blob writer, so memory stays bounded by the size of one request
//! message whatever the object size. Reading decrypts chunk by chunk; a range
//! read fetches only the chunks that cover it (plus the final chunk when the
//! range is bounded by the end of the object, to authenticate its length).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::error::ServiceError;
use super::validate;
use crate::blob::{BlobKey, BlobReader, BlobStore, WriteMode};
use crate::crypto::chunked::{self, RandomAccess, RangePlan};
use crate::crypto::envelope::FIXED_HEADER_LEN;
use crate::crypto::{Header, Metadata, ObjectIdentity, ObjectSealer, Pseudonym, UnsealedObject};
use crate::keys::KeyHierarchy;

/// Plaintext bytes per blob read of a ranged GetObject (whole chunks).
pub const READ_PIECE: usize = 64 * chunked::CHUNK_SIZE;
/// Plaintext bytes per message of a streamed GetObject, at least.
pub const SEND_PIECE: usize = 256 * 1024;

/// What callers learn about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Space.
    pub space: String,
    /// Object id.
    pub object_id: String,
    /// Plaintext size.
    pub size: u64,
    /// Decrypted metadata.
    pub metadata: Metadata,
}

/// An entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Object id.
    pub id: String,
    /// Plaintext size; `None` if the stored object fails its header check.
    pub size: Option<u64>,
}

/// A validated reference to one object of one user.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    pseudonym: Pseudonym,
    identity: ObjectIdentity,
    key: BlobKey,
}

/// Limits enforced on writes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest object.
    pub max_object_bytes: u64,
    /// Largest item.
    pub max_item_bytes: u64,
}

/// The object service.
pub struct Objects {
    keys: Arc<KeyHierarchy>,
    blob: Arc<dyn BlobStore>,
    region: String,
    spaces: Vec<String>,
    /// Size limits.
    pub limits: Limits,
}

/// An object opened for reading: header checked, DEK unwrapped.
pub struct OpenedObject {
    /// Info, including decrypted metadata.
    pub info: ObjectInfo,
    reader: Box<dyn BlobReader>,
    unsealed: UnsealedObject,
    body: RandomAccess,
    body_start: u64,
    body_header: Vec<u8>,
}

impl Objects {
    /// Builds the service.
    pub fn new(
        keys: Arc<KeyHierarchy>,
        blob: Arc<dyn BlobStore>,
        region: String,
        spaces: Vec<String>,
        limits: Limits,
    ) -> Self {
        Self {
            keys,
            blob,
            region,
            spaces,
            limits,
        }
    }

    /// The key hierarchy.
    pub fn keys(&self) -> &Arc<KeyHierarchy> {
        &self.keys
    }

    /// Validates a user id and returns its pseudonym.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArgument`] for an empty or overlong user id.
    pub fn pseudonym(&self, user_id: &str) -> Result<Pseudonym, ServiceError> {
        if user_id.is_empty() {
            return Err(ServiceError::InvalidArgument(
                "user_id must not be empty".into(),
            ));
        }
        if user_id.len() > validate::MAX_USER_ID_LEN {
            return Err(ServiceError::InvalidArgument(format!(
                "user_id must be at most {} bytes",
                validate::MAX_USER_ID_LEN
            )));
        }
        Ok(self.keys.pseudonym(user_id))
    }

    /// Validates a space name against the configured spaces.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArgument`] for an unknown space.
    pub fn check_space(&self, space: &str) -> Result<(), ServiceError> {
        if self.spaces.iter().any(|s| s == space) {
            Ok(())
        } else {
            Err(ServiceError::InvalidArgument(format!(
                "unknown space {space:?}; configured spaces: {}",
                self.spaces.join(", ")
            )))
        }
    }

    /// Validates a full object reference.
    ///
    /// # Errors
    /// [`ServiceError::InvalidArgument`] naming the bad field.
    pub fn object_ref(
        &self,
        user_id: &str,
        space: &str,
        object_id: &str,
    ) -> Result<ObjectRef, ServiceError> {
        let pseudonym = self.pseudonym(user_id)?;
        self.check_space(space)?;
        if let Some(problem) = validate::name_problem(object_id) {
            return Err(ServiceError::InvalidArgument(format!(
                "object_id {problem}"
            )));
        }
        let identity = ObjectIdentity::new(&self.region, space, pseudonym, object_id)
            .map_err(|_| ServiceError::InvalidArgument("object identity too long".into()))?;
        Ok(ObjectRef {
            pseudonym,
            identity,
            key: BlobKey {
                space: space.to_string(),
                owner: pseudonym.to_string(),
                name: object_id.to_string(),
            },
        })
    }

    /// Stores an object from a stream of plaintext pieces. Nothing is visible
    /// unless the whole stream arrived and was sealed; on any error, or if
    /// this future is dropped, the partial object is discarded.
    ///
    /// # Errors
    /// [`ServiceError::TooLarge`] past `limit` bytes; [`ServiceError::UserErased`];
    /// whatever the input stream yields; storage failures.
    pub async fn put<S>(
        &self,
        obj: &ObjectRef,
        mode: WriteMode,
        metadata: &Metadata,
        limit: u64,
        declared_size: Option<u64>,
        mut body: S,
    ) -> Result<ObjectInfo, ServiceError>
    where
        S: futures_util::Stream<Item = Result<Bytes, ServiceError>> + Unpin + Send,
    {
        if let Some(declared) = declared_size {
            if declared > limit {
                return Err(ServiceError::TooLarge(format!(
                    "declared size {declared} exceeds the limit of {limit} bytes"
                )));
            }
        }
        let (version, user_key) = self.keys.active_user_key(&obj.pseudonym).await?;
        let (mut sealer, prefix) = ObjectSealer::new(&user_key, version, &obj.identity, metadata)?;
        drop(user_key);
        let mut writer = match declared_size {
            // The stored length is known up front: the envelope header, then
            // the body message (whose 56-byte header ends `prefix`).
            Some(n) => {
                let stored =
                    prefix.len() as u64 - chunked::HEADER_LEN as u64 + chunked::message_len(n);
                self.blob.create_exact(&obj.key, mode, stored).await?
            }
            None => self.blob.create(&obj.key, mode).await?,
        };
        let result = async {
            writer.write(&prefix).await?;
            let mut sealed = Vec::with_capacity(READ_PIECE + READ_PIECE / 64);
            while let Some(piece) = body.next().await {
                let piece = piece?;
                let total = sealer.plaintext_len() + piece.len() as u64;
                if total > limit {
                    return Err(ServiceError::TooLarge(format!(
                        "object exceeds the limit of {limit} bytes"
                    )));
                }
                if let Some(declared) = declared_size.filter(|&d| total > d) {
                    return Err(ServiceError::InvalidArgument(format!(
                        "more bytes than the declared size {declared}"
                    )));
                }
                sealer.push(&piece, &mut sealed)?;
                if !sealed.is_empty() {
                    writer.write(&sealed).await?;
                    sealed.clear();
                }
            }
            let size = sealer.plaintext_len();
            if let Some(declared) = declared_size.filter(|&d| d != size) {
                return Err(ServiceError::InvalidArgument(format!(
                    "received {size} bytes, but the declared size is {declared}"
                )));
            }
            sealer.finish(&mut sealed)?;
            writer.write(&sealed).await?;
            Ok::<_, ServiceError>(size)
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

    /// Opens an object: reads and checks its header and unwraps its DEK.
    /// `whole` says the caller will read the whole body, so storage may send
    /// it in the same response as the header.
    ///
    /// # Errors
    /// [`ServiceError::UserErased`] first, then [`ServiceError::NotFound`];
    /// [`ServiceError::DataLoss`] if the header or key slot fail their checks.
    pub async fn open(&self, obj: &ObjectRef, whole: bool) -> Result<OpenedObject, ServiceError> {
        self.keys.ensure_not_erased(&obj.pseudonym).await?;
        let mut reader = if whole {
            self.blob.open_whole(&obj.key).await?
        } else {
            self.blob.open(&obj.key).await?
        };
        let len = reader.len();
        let fixed = reader.read(0..len.min(FIXED_HEADER_LEN as u64)).await?;
        let header_len = Header::total_len(&fixed)? as u64;
        let body_start = header_len + chunked::HEADER_LEN as u64;
        if len < body_start {
            return Err(ServiceError::DataLoss);
        }
        let head = reader.read(0..body_start).await?;
        let header = Header::parse(&head)?;
        let body_len = len - header_len;
        let size = chunked::plaintext_len(body_len)?;
        let user_key = self
            .keys
            .user_key(&obj.pseudonym, header.key_slot.user_key_version)
            .await?;
        let unsealed = header.unseal(&user_key, &obj.identity)?;
        let body_header = head[header_len as usize..].to_vec();
        // Check the body's commitment now, so that HeadObject too reports a
        // damaged body header, and a read fails before any byte is sent.
        let body = unsealed.body_random_access(&body_header)?;
        Ok(OpenedObject {
            info: ObjectInfo {
                space: obj.key.space.clone(),
                object_id: obj.key.name.clone(),
                size,
                metadata: unsealed.metadata.clone(),
            },
            reader,
            body_start: header_len,
            body_header,
            unsealed,
            body,
        })
    }

    /// Deletes an object.
    ///
    /// # Errors
    /// [`ServiceError::UserErased`]; storage failures.
    pub async fn delete(&self, obj: &ObjectRef) -> Result<bool, ServiceError> {
        self.keys.ensure_not_erased(&obj.pseudonym).await?;
        Ok(self.blob.delete(&obj.key).await?)
    }

    /// Lists a page of a user's objects in a space, with plaintext sizes.
    ///
    /// # Errors
    /// [`ServiceError::UserErased`]; invalid token; storage failures.
    pub async fn list(
        &self,
        user_id: &str,
        space: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ListedObject>, Option<String>), ServiceError> {
        let pseudonym = self.pseudonym(user_id)?;
        self.check_space(space)?;
        let after = if page_token.is_empty() {
            None
        } else if validate::is_valid_name(page_token) {
            Some(page_token)
        } else {
            return Err(ServiceError::InvalidArgument("invalid page_token".into()));
        };
        let limit = match page_size {
            0 => 100,
            n => n.min(1000) as usize,
        };
        self.keys.ensure_not_erased(&pseudonym).await?;
        let owner = pseudonym.to_string();
        let mut entries = self.blob.list(space, &owner, after, limit + 1).await?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.name.clone())
        } else {
            None
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = BlobKey {
                space: space.to_string(),
                owner: owner.clone(),
                name: entry.name.clone(),
            };
            let mut reader = match self.blob.open(&key).await {
                Ok(r) => r,
                Err(crate::blob::BlobError::NotFound) => continue, // deleted meanwhile
                Err(e) => return Err(e.into()),
            };
            let len = reader.len();
            let fixed = reader.read(0..len.min(FIXED_HEADER_LEN as u64)).await?;
            // One damaged object must not hide the others: it is listed,
            // marked damaged, and GetObject on it reports DATA_LOSS.
            let size = Header::total_len(&fixed).and_then(|header_len| {
                chunked::plaintext_len(len.saturating_sub(header_len as u64))
            });
            match size {
                Ok(size) => out.push(ListedObject {
                    id: entry.name,
                    size: Some(size),
                }),
                Err(_) => {
                    tracing::warn!(space, object = %entry.name, pseudonym = %pseudonym, "listed object fails its header check");
                    out.push(ListedObject {
                        id: entry.name,
                        size: None,
                    });
                }
            }
        }
        Ok((out, next))
    }
}

impl OpenedObject {
    /// Streams the plaintext of `range` (start, exclusive end; `None` for the
    /// whole object) into `sink`, piece by piece, each piece authenticated.
    /// Stops early, without error, if `sink` returns false (receiver gone).
    ///
    /// # Errors
    /// [`ServiceError::OutOfRange`] for a range outside the object;
    /// [`ServiceError::DataLoss`] if any chunk fails authentication.
    pub async fn read_into<F, Fut>(
        mut self,
        range: Option<(u64, Option<u64>)>,
        mut sink: F,
    ) -> Result<(), ServiceError>
    where
        F: FnMut(Bytes) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let body_len = self.reader.len() - self.body_start;
        match range {
            None => {
                let mut opener = self.unsealed.body_opener(&self.body_header)?;
                let start = self.body_start + chunked::HEADER_LEN as u64;
                let mut stream = self.reader.stream(start..self.reader.len()).await?;
                // Storage hands out pieces of whatever size it likes (S3:
                // often a few KiB); plaintext goes out in pieces of
                // SEND_PIECE, each made only of authenticated chunks.
                let capacity = SEND_PIECE + 4 * chunked::ENCRYPTED_CHUNK_LEN;
                let mut plain = Vec::with_capacity(capacity);
                while let Some(piece) = stream.next().await {
                    opener.push(&piece?, &mut plain)?;
                    if plain.len() >= SEND_PIECE {
                        let full = std::mem::replace(&mut plain, Vec::with_capacity(capacity));
                        if !sink(Bytes::from(full)).await {
                            return Ok(());
                        }
                    }
                }
                opener.finish(&mut plain)?;
                if !plain.is_empty() {
                    sink(Bytes::from(plain)).await;
                }
                Ok(())
            }
            Some((start, end)) => {
                let plan = RangePlan::new(body_len, start, end)?;
                let ra = &self.body;
                // Authenticate the length once, up front, if the range is
                // bounded by the end of the object.
                let final_chunk = match plan.final_chunk_range() {
                    Some(r) => {
                        let bytes = self
                            .reader
                            .read(self.body_start + r.start..self.body_start + r.end)
                            .await?;
                        ra.authenticate_length(body_len, &bytes)?;
                        Some(bytes)
                    }
                    None => None,
                };
                let piece = READ_PIECE as u64;
                let mut at = plan.plaintext.start;
                while at < plan.plaintext.end {
                    // Pieces end on chunk boundaries so each covers whole chunks once.
                    let next = ((at / piece) + 1) * piece;
                    let is_last = next >= plan.plaintext.end;
                    let sub = if is_last {
                        RangePlan::new(body_len, at, end)?
                    } else {
                        RangePlan::new(body_len, at, Some(next))?
                    };
                    let ct = sub.ciphertext_range();
                    let covering = self
                        .reader
                        .read(self.body_start + ct.start..self.body_start + ct.end)
                        .await?;
                    let fin = sub.final_chunk_range().and(final_chunk.as_deref());
                    let plain = ra.open_range(&sub, &covering, fin)?;
                    if !sink(Bytes::from(plain)).await {
                        return Ok(());
                    }
                    at = sub.plaintext.end;
                }
                Ok(())
            }
        }
    }

    /// Reads the whole plaintext into memory (for small items).
    ///
    /// # Errors
    /// As [`OpenedObject::read_into`].
    pub async fn read_all(self) -> Result<Vec<u8>, ServiceError> {
        let mut out = Vec::with_capacity(self.info.size as usize);
        let out_ref = &mut out;
        self.read_into(None, |b| {
            out_ref.extend_from_slice(&b);
            async { true }
        })
        .await?;
        Ok(out)
    }
}

/// Builds metadata from request fields.
pub fn metadata(
    content_type: String,
    attributes: std::collections::HashMap<String, String>,
) -> Metadata {
    Metadata {
        content_type,
        attributes: attributes.into_iter().collect::<BTreeMap<_, _>>(),
    }
}
