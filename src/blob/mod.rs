//! Object storage: where sealed objects live.
//!
//! This layer stores opaque bytes under `{space}/{owner}/{name}` keys. It knows
//! nothing of keys, users or encryption: what it is handed is already
//! ciphertext. Every backend guarantees that an object becomes visible only
//! whole (after [`BlobWriter::commit`]) and that a writer dropped or aborted
//! before commit leaves nothing behind.
//!
//! Of the rest of the crate it uses only the naming rules (every key
//! segment is checked again here), where the format puts the key slot
//! ([`KEY_SLOT_RANGE`], for [`BlobStore::rewrite_key_slot`]), and, in its
//! backends, the metrics (`metered`) and the shared AWS SDK settings (`s3`).
//!
//! - [`BlobStore`]: create (replace or create-only), `create_exact` for a
//!   declared length, open, `open_whole` for a front-to-end read, delete,
//!   delete many, `rewrite_key_slot` (conditional on the slot read), list,
//!   the deployment's store id, and `settle` (background work done);
//!   [`BlobWriter`] (write, commit, abort) and [`BlobReader`] (length, a
//!   range read or stream).
//! - `fs`: [`fs::FsBlobStore`], one file per object; `s3`:
//!   [`s3::S3BlobStore`]; `metered`: any store with its operations counted.

pub mod fs;
pub mod metered;
pub mod s3;

use std::ops::Range;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::crypto::envelope::{Header, KeySlot};

/// A stream of stored bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

/// Errors of the blob layer.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object under that key.
    #[error("object not found")]
    NotFound,
    /// A create-only write found the key taken.
    #[error("object already exists")]
    AlreadyExists,
    /// The backend cannot be reached or refused service; retryable.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend does not implement an operation the store needs (an S3
    /// server answering 501): no retry can succeed.
    #[error("storage does not support this: {0}")]
    Unsupported(String),
    /// Any other I/O failure.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Where an object lives: `{space}/{owner}/{name}`. Each part has been
/// validated by the caller to be a safe single path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobKey {
    /// Namespace.
    pub space: String,
    /// Owner prefix (the user's pseudonym in hex).
    pub owner: String,
    /// Object name.
    pub name: String,
}

/// A listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Object name within the prefix.
    pub name: String,
    /// Stored length in bytes.
    pub len: u64,
}

/// Whether a write may replace an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A committed object atomically replaces any previous one.
    Replace,
    /// Commit fails with [`BlobError::AlreadyExists`] if the key exists.
    CreateOnly,
}

/// The largest region (from the start of an object) a stored key-slot
/// patch may cover (the S3 store's patch metadata, read back from storage,
/// is held to it).
pub const MAX_PATCH_END: u64 = 4096;

/// Where a sealed object's key slot lies ([`Header::KEY_SLOT_RANGE`]).
pub const KEY_SLOT_RANGE: std::ops::Range<u64> =
    Header::KEY_SLOT_RANGE.start as u64..Header::KEY_SLOT_RANGE.end as u64;

/// What [`BlobStore::rewrite_key_slot`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRewrite {
    /// Later reads see the new key slot.
    Rewritten,
    /// The object no longer held the expected slot: nothing was written.
    Changed,
}

/// A key-slot rewrite needs an object long enough to hold one.
pub(crate) fn check_slot_fits(len: u64) -> Result<(), BlobError> {
    if len < KEY_SLOT_RANGE.end {
        return Err(BlobError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte object has no key slot"),
        )));
    }
    Ok(())
}

/// An object store backend.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts writing `key`. Nothing is visible until [`BlobWriter::commit`].
    async fn create(
        &self,
        key: &BlobKey,
        mode: WriteMode,
    ) -> Result<Box<dyn BlobWriter>, BlobError>;

    /// Like [`BlobStore::create`], for an object of exactly `len` bytes, so
    /// that a backend may stream it to storage as it is written. Writing more
    /// than `len` bytes fails; committing after fewer fails and stores
    /// nothing.
    async fn create_exact(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(exact_len(self.create(key, mode).await?, len))
    }

    /// Like [`BlobStore::create_exact`], for a rewrite that keeps the
    /// creation time of the object it replaces (a reseal): readers of the
    /// new version see `created`, not the time of the rewrite.
    async fn create_exact_as_of(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
        created: SystemTime,
    ) -> Result<Box<dyn BlobWriter>, BlobError>;

    /// Opens `key` for reading. Later reads see this version of the object,
    /// or, if it was replaced meanwhile and the backend cannot keep the old
    /// version readable, fail with [`BlobError::Unavailable`]: they never
    /// mix the bytes of two versions.
    async fn open(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError>;

    /// Like [`BlobStore::open`], for a reader that will read the object from
    /// its start to its end: a backend may fetch it in one request.
    async fn open_whole(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        self.open(key).await
    }

    /// Deletes every stored version of `key`. Returns false if there was none.
    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError>;

    /// Deletes many objects (every version of each); returns how many existed.
    async fn delete_many(&self, keys: &[BlobKey]) -> Result<u64, BlobError> {
        let mut n = 0;
        for key in keys {
            n += u64::from(self.delete(key).await?);
        }
        Ok(n)
    }

    /// Replaces the key slot of `key` (bytes [`KEY_SLOT_RANGE`] of a
    /// sealed object) with `new` if it still holds `expected`, atomically
    /// and without sending the rest of the object through the gateway: how
    /// a rewrap moves an object to another user-key version. Returns
    /// [`SlotRewrite::Changed`], writing nothing, if the object was replaced
    /// or rewritten since `expected` was read.
    ///
    /// # Errors
    /// [`BlobError::NotFound`]; an object too short to hold a key slot;
    /// storage failures.
    async fn rewrite_key_slot(
        &self,
        key: &BlobKey,
        expected: &[u8; KeySlot::LEN],
        new: &[u8; KeySlot::LEN],
    ) -> Result<SlotRewrite, BlobError>;

    /// Lists up to `limit` objects of `space/owner/` with names strictly
    /// after `after`, in ascending name order.
    async fn list(
        &self,
        space: &str,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobEntry>, BlobError>;

    /// Completes once the work this store left to the background is done:
    /// for S3, the aborts of multipart uploads whose writers were dropped
    /// (retried while S3 is unavailable: bound the wait). At shutdown.
    async fn settle(&self) {}

    /// Where the store is, for messages: its directory, or `s3://bucket`.
    fn location(&self) -> String {
        "the object store".into()
    }

    /// The id of the deployment this store belongs to, if one is recorded.
    /// The record lives at the root of the store, outside every
    /// `{space}/{owner}/` prefix, so no listing shows it.
    async fn store_id(&self) -> Result<Option<String>, BlobError>;

    /// Records `id` as the store's deployment id unless one is recorded
    /// already (create-only: of concurrent calls, one records); returns the
    /// recorded id, `id` or the one found.
    async fn init_store_id(&self, id: &str) -> Result<String, BlobError>;
}

/// An object being written.
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, data: &[u8]) -> Result<(), BlobError>;

    /// Makes the object durable and visible.
    async fn commit(self: Box<Self>) -> Result<(), BlobError>;

    /// Discards the object. Dropping an uncommitted writer does the same.
    async fn abort(self: Box<Self>) -> Result<(), BlobError>;

    /// The object's creation time, fixed when the writer was created (whole
    /// milliseconds) and stored with the object: readers of this version
    /// report it ([`BlobReader::created`]).
    fn created(&self) -> SystemTime;
}

/// Now, in whole milliseconds: the resolution creation times are stored at.
pub(crate) fn now_ms() -> SystemTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// An opened object.
#[async_trait]
pub trait BlobReader: Send {
    /// Stored length in bytes.
    fn len(&self) -> u64;

    /// When this version of the object was created ([`BlobWriter::created`]),
    /// kept across [`BlobStore::rewrite_key_slot`]; `None` if the store
    /// cannot tell.
    fn created(&self) -> Option<SystemTime>;

    /// Whether the object is empty (never, for a sealed object).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads exactly the bytes of `range`.
    async fn read(&mut self, range: Range<u64>) -> Result<Bytes, BlobError>;

    /// Streams the bytes of `range`, reading only those.
    async fn stream(&mut self, range: Range<u64>) -> Result<ByteStream, BlobError>;
}

/// A path segment must be a plain name ([`crate::names::check_name`]): no
/// separators, not `.`/`..`, no leading dot (which also keeps `.tmp` out of
/// reach).
pub(crate) fn check_segment(s: &str) -> Result<(), BlobError> {
    crate::names::check_name(s).map_err(|e| {
        BlobError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("invalid object path segment: {e}"),
        ))
    })
}

/// A deployment id is a plain name ([`crate::names::check_name`]), such as
/// [`crate::names::random_id`] makes. Checks one given or read back.
pub(crate) fn check_store_id(id: &str) -> Result<(), BlobError> {
    crate::names::check_name(id).map_err(|e| {
        BlobError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("invalid store id {id:?}: {e}"),
        ))
    })
}

/// The error of a [`BlobStore::create_exact`] writer given more (`extra`)
/// or fewer bytes than declared.
pub(crate) fn length_mismatch(extra: bool) -> BlobError {
    let what = if extra { "more" } else { "fewer" };
    BlobError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{what} bytes written than the object's declared length"),
    ))
}

/// Wraps `inner` so that exactly `len` bytes must be written before commit.
pub(crate) fn exact_len(inner: Box<dyn BlobWriter>, len: u64) -> Box<dyn BlobWriter> {
    Box::new(ExactLen {
        inner,
        remaining: len,
    })
}

/// Enforces the declared length over any writer.
struct ExactLen {
    inner: Box<dyn BlobWriter>,
    remaining: u64,
}

#[async_trait]
impl BlobWriter for ExactLen {
    async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        if data.len() as u64 > self.remaining {
            return Err(length_mismatch(true));
        }
        self.remaining -= data.len() as u64;
        self.inner.write(data).await
    }

    async fn commit(self: Box<Self>) -> Result<(), BlobError> {
        if self.remaining != 0 {
            self.inner.abort().await?;
            return Err(length_mismatch(false));
        }
        self.inner.commit().await
    }

    async fn abort(self: Box<Self>) -> Result<(), BlobError> {
        self.inner.abort().await
    }

    fn created(&self) -> SystemTime {
        self.inner.created()
    }
}
