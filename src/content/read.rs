//! Reads: opening an object (header, key slot, metadata, body commitment),
//! then streaming its plaintext whole or by range.
//!
//! A range is checked for sense before any I/O. Opening checks erasure
//! first, and reads the header again if a rewrap destroyed its key version
//! after it was read. [`OpenedObject`] has two paths: a whole read is one
//! storage stream through one opener, sent in messages of 256 to 320 KiB
//! (or, when storage hands the whole body over in one buffer, as the
//! filesystem store does for small objects, decrypted in that buffer and
//! sent as slices of it); a range read fetches only the covering chunks.
//! Every piece is checked against the owner's erasure ([`ErasureGuard`])
//! before it leaves.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{ByteRange, Content, ObjectInfo, ObjectRef, Purpose};
use crate::blob::BlobReader;
use crate::crypto::chunked::{self, RandomAccess, RangePlan};
use crate::crypto::envelope::FIXED_HEADER_LEN;
use crate::crypto::envelope::SHA256_LEN;
use crate::crypto::{Header, ObjectLayout, Pseudonym, UnsealedObject};
use crate::error::Error;
use crate::keys::{ErasureWatch, KeyError, KeyHierarchy};

/// Plaintext bytes per blob read of a ranged GetObject (whole chunks).
pub const READ_PIECE: usize = 64 * chunked::CHUNK_SIZE;
/// Plaintext bytes per message of a streamed GetObject, at least.
pub const SEND_PIECE: usize = 256 * 1024;
/// Ciphertext fed to the opener at a time, so that a message of a streamed
/// GetObject never exceeds [`MAX_SEND_PIECE`] whatever piece sizes storage
/// hands out.
const OPEN_STEP: usize = 64 * 1024;
/// Plaintext bytes per message of a streamed GetObject, at most.
pub const MAX_SEND_PIECE: usize = SEND_PIECE + OPEN_STEP;

/// Ends a stream of a user's plaintext once the user is erased: checked
/// before each piece leaves, it fails with [`Error::UserErased`] from the
/// first check after this process learnt of the erasure (its own, or
/// another's by the key store's notice), and, if the notice was lost, from
/// the first check once the store is due to be asked again (at most
/// `cache.ttl_seconds` after it was last asked, so a stream outlives an
/// erasure no longer than a cached key does; see
/// [`KeyHierarchy::check_watch`]).
#[derive(Clone)]
pub struct ErasureGuard {
    keys: Arc<KeyHierarchy>,
    watch: ErasureWatch,
}

impl ErasureGuard {
    /// Fails if the user was erased since the stream opened.
    ///
    /// # Errors
    /// [`Error::UserErased`]; key-store failures.
    pub async fn check(&mut self) -> Result<(), Error> {
        Ok(self.keys.check_watch(&mut self.watch).await?)
    }
}

/// An object opened for reading: header checked, DEK unwrapped, body
/// commitment checked. Dropping it drops the object's key. Its reads stop
/// with [`Error::UserErased`] at the next piece after the owner is erased.
pub struct OpenedObject {
    /// Info, including decrypted metadata.
    pub info: ObjectInfo,
    guard: ErasureGuard,
    reader: Box<dyn BlobReader>,
    layout: ObjectLayout,
    body: RandomAccess,
    /// Holds the DEK, for the sealed digest.
    unsealed: UnsealedObject,
}

impl Content {
    /// Opens an object for a GetObject of `range` (`None`: the whole
    /// object). The range is checked for sense before any I/O, and against
    /// the object's size after its header is read.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or inverted range;
    /// [`Error::OutOfRange`] for a start at or past the end; as
    /// [`Content::open`].
    pub async fn get(
        &self,
        obj: &ObjectRef,
        range: Option<ByteRange>,
    ) -> Result<OpenedObject, Error> {
        if let Some(r) = range {
            r.check()?;
        }
        let opened = self.open(obj, range.is_none()).await?;
        if let Some(r) = range {
            r.check_start(opened.info.size)?;
        }
        Ok(opened)
    }

    /// Opens an object: reads and checks its header and unwraps its DEK.
    /// `whole` says the caller will read the whole body, so storage may send
    /// it in the same response as the header.
    ///
    /// # Errors
    /// [`Error::UserErased`] first, then [`Error::NotFound`];
    /// [`Error::DataLoss`] if the header, key slot or body commitment fail
    /// their checks.
    pub async fn open(&self, obj: &ObjectRef, whole: bool) -> Result<OpenedObject, Error> {
        self.open_for(obj, whole, Purpose::Serve).await
    }

    /// As [`Content::open`], for `purpose`: a disclosure is not stopped by
    /// a scheduled erasure (`export.rs`).
    pub(super) async fn open_for(
        &self,
        obj: &ObjectRef,
        whole: bool,
        purpose: Purpose,
    ) -> Result<OpenedObject, Error> {
        // Content calls take the watch and the cached keys in one lookup;
        // a disclosure reads the keys it needs below.
        let (guard, ring) = match purpose {
            Purpose::Serve => {
                let (watch, ring) = self.keys.watch_with_keys(&obj.pseudonym).await?;
                (self.guard(watch), Some(ring))
            }
            Purpose::Disclosure => {
                let guard = self.user_guard_for(&obj.pseudonym, purpose).await;
                self.ensure_readable(&obj.pseudonym, purpose).await?;
                (guard, None)
            }
        };
        let mut attempts = 0;
        let (reader, fixed, layout, head, header, user_key) = loop {
            attempts += 1;
            let mut reader = if whole {
                self.blob.open_whole(&obj.key).await?
            } else {
                self.blob.open(&obj.key).await?
            };
            let len = reader.len();
            let fixed = reader.read(0..len.min(FIXED_HEADER_LEN as u64)).await?;
            let layout = ObjectLayout::new(&fixed, len)?;
            let head = reader.read(layout.head()).await?;
            let header = Header::parse(&head)?;
            let version = header.key_slot.user_key_version;
            let key = match purpose {
                Purpose::Serve => match ring.as_ref().and_then(|r| r.version(version)) {
                    Some(key) => Ok(key),
                    None => self.keys.user_key(&obj.pseudonym, version).await,
                },
                Purpose::Disclosure => {
                    self.keys
                        .user_key_for_disclosure(&obj.pseudonym, version)
                        .await
                }
            };
            match key {
                Ok(user_key) => break (reader, fixed, layout, head, header, user_key),
                // A rewrap moved the slot to another version and destroyed
                // this one after the header was read: read it again.
                Err(KeyError::MissingUserKeyVersion(_)) if attempts < 3 => {}
                Err(e) => return Err(e.into()),
            }
        };
        let unsealed = header.unseal(&user_key, &obj.identity)?;
        crate::metrics::get().unwrapped(crate::metrics::UnwrapLevel::User);
        let body_header = &head[layout.header_len() as usize..];
        // Check the body's commitment now, so that HeadObject too reports a
        // damaged body header, and a read fails before any byte is sent.
        let body = unsealed.body_random_access(body_header)?;
        Ok(OpenedObject {
            info: ObjectInfo {
                space: obj.key.space.clone(),
                object_id: obj.key.name.clone(),
                size: layout.plaintext_len(),
                metadata: unsealed.metadata.clone(),
                etag: super::etag_of(&fixed),
                created: reader.created(),
                suite: Some(header.suite),
            },
            guard,
            reader,
            layout,
            body,
            unsealed,
        })
    }
}

impl Content {
    /// A guard on the erasure of the object's owner, watching from now.
    pub async fn erasure_guard(&self, obj: &ObjectRef) -> ErasureGuard {
        self.user_erasure_guard(&obj.pseudonym).await
    }

    /// A guard on a user's erasure, watching from now.
    pub(super) async fn user_erasure_guard(&self, p: &Pseudonym) -> ErasureGuard {
        self.user_guard_for(p, Purpose::Serve).await
    }

    /// A guard on a user's erasure for `purpose`, watching from now: a
    /// disclosure's ends only once the user is erased.
    pub async fn user_guard_for(&self, p: &Pseudonym, purpose: Purpose) -> ErasureGuard {
        let watch = match purpose {
            Purpose::Serve => self.keys.watch(p).await,
            Purpose::Disclosure => self.keys.watch_for_disclosure(p).await,
        };
        self.guard(watch)
    }

    fn guard(&self, watch: ErasureWatch) -> ErasureGuard {
        ErasureGuard {
            keys: self.keys.clone(),
            watch,
        }
    }
}

impl OpenedObject {
    /// A second guard on the owner's erasure, for the transport to check
    /// again just before each piece leaves the process (pieces wait in
    /// buffers between reading and sending).
    pub fn erasure_guard(&self) -> ErasureGuard {
        ErasureGuard {
            keys: self.guard.keys.clone(),
            watch: self.guard.watch.clone(),
        }
    }
    /// Streams the plaintext of `range` (`None`: the whole object) into
    /// `sink`, piece by piece, each piece authenticated. Stops early, without
    /// error, if `sink` returns false (receiver gone).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a range outside the object;
    /// [`Error::DataLoss`] if any chunk fails authentication.
    pub async fn read_into<F, Fut>(self, range: Option<ByteRange>, sink: F) -> Result<(), Error>
    where
        F: FnMut(Bytes) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        match range {
            None => self.read_whole(sink, false).await.map(drop),
            Some(range) => self.read_range(range, sink).await,
        }
    }

    /// Whether the object stores its plaintext's SHA-256 (format version 2).
    pub fn stores_digest(&self) -> bool {
        self.layout.digest().is_some()
    }

    /// Streams the whole plaintext into `sink`, as `read_into(None, …)`,
    /// and returns the plaintext's SHA-256 that the object stores, read and
    /// authenticated in the same storage stream (`None`: a version-1 object,
    /// or `sink` went away).
    ///
    /// # Errors
    /// As [`OpenedObject::read_into`].
    pub async fn read_whole_with_digest<F, Fut>(
        self,
        sink: F,
    ) -> Result<Option<[u8; SHA256_LEN]>, Error>
    where
        F: FnMut(Bytes) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        self.read_whole(sink, true).await
    }

    /// The plaintext's SHA-256 that the object stores, without reading
    /// the body (`None`: a version-1 object).
    ///
    /// # Errors
    /// [`Error::DataLoss`] if the sealed digest does not open; storage
    /// failures.
    pub async fn stored_digest(&mut self) -> Result<Option<[u8; SHA256_LEN]>, Error> {
        let Some(range) = self.layout.digest() else {
            return Ok(None);
        };
        let sealed = self.reader.read(range).await?;
        Ok(Some(self.unsealed.open_digest(&sealed)?))
    }

    /// Reads the whole plaintext into memory (for small items).
    ///
    /// # Errors
    /// As [`OpenedObject::read_into`].
    pub async fn read_all(self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(self.info.size as usize);
        let out_ref = &mut out;
        self.read_whole(
            |b| {
                out_ref.extend_from_slice(&b);
                async { true }
            },
            false,
        )
        .await?;
        Ok(out)
    }

    /// Front to end: one storage stream through one opener, and with
    /// `digest`, on through the sealed digest of a version-2 object, which
    /// is returned.
    async fn read_whole<F, Fut>(
        mut self,
        mut sink: F,
        digest: bool,
    ) -> Result<Option<[u8; SHA256_LEN]>, Error>
    where
        F: FnMut(Bytes) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let chunks = self.layout.chunks();
        let digest = self.layout.digest().filter(|_| digest);
        let end = digest.as_ref().map_or(chunks.end, |d| d.end);
        let mut stream = self.reader.stream(chunks.start..end).await?;
        // Storage may hand the whole of it over at once (the filesystem
        // store's small objects, read with the header): opened in place.
        let first = match stream.next().await.transpose()? {
            Some(piece) if piece.len() as u64 == end - chunks.start => match piece.try_into_mut() {
                Ok(whole) => {
                    return self
                        .read_whole_in_place(whole, digest.is_some(), sink)
                        .await
                }
                Err(piece) => Some(piece),
            },
            first => first,
        };
        let mut stream = futures_util::stream::iter(first.map(Ok)).chain(stream);
        // The body's commitment was checked and its key derived by `open`.
        let mut opener = self.body.into_opener();
        // Body bytes still to come; what follows them is the sealed digest.
        let mut body_left = chunks.end - chunks.start;
        let mut sealed_digest = Vec::new();
        // Storage hands out pieces of whatever size it likes (S3: often a few
        // KiB); plaintext goes out in pieces of SEND_PIECE, each made only of
        // authenticated chunks.
        // An item is far smaller than a message: no 320 KiB buffer for it.
        // A chunk is opened in place with its tag after it, so the buffer
        // holds one tag more than the plaintext (else the last chunk of an
        // object sized to the buffer would move it).
        let capacity = usize::try_from(self.layout.plaintext_len())
            .unwrap_or(usize::MAX)
            .min(MAX_SEND_PIECE)
            + crate::crypto::aead::TAG_LEN;
        let mut plain = Vec::with_capacity(capacity);
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            let body = piece
                .len()
                .min(usize::try_from(body_left).unwrap_or(usize::MAX));
            body_left -= body as u64;
            sealed_digest.extend_from_slice(&piece[body..]);
            for step in piece[..body].chunks(OPEN_STEP) {
                opener.push(step, &mut plain)?;
                if plain.len() >= SEND_PIECE {
                    self.guard.check().await?;
                    let full = std::mem::replace(&mut plain, Vec::with_capacity(capacity));
                    if !sink(Bytes::from(full)).await {
                        return Ok(None);
                    }
                }
            }
        }
        opener.finish(&mut plain)?;
        let digest = match digest {
            Some(_) => Some(self.unsealed.open_digest(&sealed_digest)?),
            None => None,
        };
        // Checked even with nothing left to send: a whole read (an item) is
        // refused if the user was erased while it was read.
        self.guard.check().await?;
        if !plain.is_empty() && !sink(Bytes::from(plain)).await {
            return Ok(None);
        }
        Ok(digest)
    }

    /// [`OpenedObject::read_whole`] of a body (and with `digest`, the
    /// sealed digest after it) that storage handed over whole in `stored`,
    /// which no one else holds: decrypted in place, and sent in pieces of
    /// [`SEND_PIECE`] that are slices of it.
    async fn read_whole_in_place<F, Fut>(
        mut self,
        mut stored: bytes::BytesMut,
        digest: bool,
        mut sink: F,
    ) -> Result<Option<[u8; SHA256_LEN]>, Error>
    where
        F: FnMut(Bytes) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let chunks = self.layout.chunks();
        let sealed_digest = stored.split_off((chunks.end - chunks.start) as usize);
        let len = self.body.open_whole_in_place(&mut stored)?;
        stored.truncate(len);
        let digest = match digest {
            true => Some(self.unsealed.open_digest(&sealed_digest)?),
            false => None,
        };
        let mut plain = stored.freeze();
        // Checked even with nothing to send, as `read_whole` does.
        self.guard.check().await?;
        while !plain.is_empty() {
            let piece = plain.split_to(plain.len().min(SEND_PIECE));
            if !sink(piece).await {
                return Ok(None);
            }
            if !plain.is_empty() {
                self.guard.check().await?;
            }
        }
        Ok(digest)
    }

    /// A range: only the covering chunks, in pieces of [`READ_PIECE`].
    async fn read_range<F, Fut>(mut self, range: ByteRange, mut sink: F) -> Result<(), Error>
    where
        F: FnMut(Bytes) -> Fut + Send,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let body_len = self.layout.body_len();
        let plan = RangePlan::new(body_len, range.start, range.end)?;
        let ra = &self.body;
        // Authenticate the length once, up front, if the range is bounded by
        // the end of the object.
        let final_chunk = match plan.final_chunk_range() {
            Some(r) => {
                let bytes = self.reader.read(self.layout.stored_range(r)).await?;
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
            let sub = if next >= plan.plaintext.end {
                RangePlan::new(body_len, at, range.end)?
            } else {
                RangePlan::new(body_len, at, Some(next))?
            };
            let covering = self
                .reader
                .read(self.layout.stored_range(sub.ciphertext_range()))
                .await?;
            let fin = sub.final_chunk_range().and(final_chunk.as_deref());
            let plain = ra.open_range(&sub, &covering, fin)?;
            self.guard.check().await?;
            if !sink(Bytes::from(plain)).await {
                return Ok(());
            }
            at = sub.plaintext.end;
        }
        Ok(())
    }
}
