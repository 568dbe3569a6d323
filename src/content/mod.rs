//! Content: the object operations of the service, where keys, blobs and the
//! crypto core meet (put, get, head, delete, list, items).
//!
//! Transport-free: callers hand in validated requests and plaintext streams
//! and get [`crate::error::Error`] back; `api` turns proto messages into these
//! calls, and background jobs may use them without knowing gRPC exists.
//!
//! Sealing happens as bytes arrive, and each encrypted piece goes straight to
//! the blob writer, so memory stays bounded by one request message whatever
//! the object size ([`put`]). Reading decrypts chunk by chunk; a range read
//! fetches only the chunks that cover it ([`read`]).
//!
//! This file holds what the operations share: validated [`ObjectRef`]s and
//! [`Write`]s (a generated id is written create-only, as `if_absent` is;
//! `if_match` names the etag to replace), [`etag_of`] (a hash of the fixed
//! header, which changes with every write and rewrap), head, delete, and
//! the commit lock: writes and deletes of one object in this process take
//! the same stripe around their `if_match` check and their commit, so the
//! check still holds when the commit lands. Beside it: `put`, `read`,
//! `list`, `items` and `rewrap` (the rewrap job).

mod export;
mod items;
mod list;
mod put;
mod read;
mod reseal;
mod rewrap;

use std::sync::Arc;
use std::time::SystemTime;

use crate::blob::{BlobError, BlobKey, BlobStore, WriteMode};
use crate::crypto::envelope::FIXED_HEADER_LEN;
use crate::crypto::{Metadata, ObjectIdentity, Pseudonym, Suite, Version};
use crate::error::{Error, Reason};
use crate::keys::store::RequestLog;
use crate::keys::KeyHierarchy;
use crate::names;

pub use export::Purpose;
pub use items::{Item, MAX_BATCH};
pub use list::ListedObject;
pub use put::{UploadPart, WriteOptions, REQUEST_WINDOW_MS};
pub use read::{ErasureGuard, OpenedObject, MAX_SEND_PIECE, READ_PIECE, SEND_PIECE};
pub use reseal::Reseal;
pub use rewrap::RewrapUser;

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
    /// Changes whenever the stored bytes change ([`etag_of`]).
    pub etag: String,
    /// When this version was stored; `None` if the store cannot tell.
    pub created: Option<SystemTime>,
    /// The suite it is sealed in; `None` only for a replayed write whose
    /// object has been replaced or deleted since.
    pub suite: Option<Suite>,
}

/// An object's etag: the first 16 bytes of SHA-256 over its fixed header,
/// in hex. The fixed header holds the key slot, whose wrapped data key is
/// fresh for every write and every rewrap, so the etag changes whenever the
/// stored object does (a body changed under the same header fails its
/// integrity check instead).
pub fn etag_of(stored_prefix: &[u8]) -> String {
    let fixed = &stored_prefix[..stored_prefix.len().min(FIXED_HEADER_LEN)];
    hex::encode(&labelled_sha256(b"sealgate/v1/etag", &[fixed])[..16])
}

/// SHA-256 of `label || 0x00 || parts[0] || 0x00 || parts[1] ...`: the
/// one form of the service's domain-separated digests (etags, request ids,
/// page tokens).
fn labelled_sha256(label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(label);
    for part in parts {
        ctx.update(b"\0");
        ctx.update(part);
    }
    ctx.finish().as_ref().try_into().expect("32 bytes")
}

impl Content {
    /// The first bytes of a stored object, up to its fixed header, and the
    /// reader they came from; `None` if there is no such object.
    async fn read_fixed(
        &self,
        key: &BlobKey,
    ) -> Result<Option<(bytes::Bytes, Box<dyn crate::blob::BlobReader>)>, Error> {
        let mut reader = match self.blob.open(key).await {
            Ok(r) => r,
            Err(BlobError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = reader.len();
        let fixed = reader.read(0..len.min(FIXED_HEADER_LEN as u64)).await?;
        Ok(Some((fixed, reader)))
    }
}

/// A validated reference to one object of one user.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    pseudonym: Pseudonym,
    identity: ObjectIdentity,
    key: BlobKey,
}

impl ObjectRef {
    /// The owner's pseudonym.
    pub fn pseudonym(&self) -> &Pseudonym {
        &self.pseudonym
    }
}

/// Limits enforced on writes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest object.
    pub max_object_bytes: u64,
    /// Largest item.
    pub max_item_bytes: u64,
    /// Largest batch-read response.
    pub max_response_bytes: u64,
}

/// A plaintext byte range: start, and exclusive end (`None`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte; `None` reads to the end of the object.
    pub end: Option<u64>,
}

impl ByteRange {
    /// Refuses an empty or inverted range, before any I/O.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`INVALID_RANGE`).
    pub fn check(&self) -> Result<(), Error> {
        if self.end.is_some_and(|e| e <= self.start) {
            return Err(Error::invalid(
                Reason::InvalidRange,
                "range",
                "range end must be greater than start",
            ));
        }
        Ok(())
    }

    /// Refuses a range that starts at or past the end of an object of
    /// `size` bytes.
    ///
    /// # Errors
    /// [`Error::OutOfRange`].
    pub fn check_start(&self, size: u64) -> Result<(), Error> {
        if self.start >= size {
            return Err(Error::OutOfRange(format!(
                "range start {} is at or past the end of the object ({size} bytes)",
                self.start
            )));
        }
        Ok(())
    }
}

/// A validated write: where, how it may replace what is there, and the
/// caller's request id ([`Content::write_ref`]).
#[derive(Debug, Clone)]
pub struct Write {
    obj: ObjectRef,
    mode: WriteMode,
    if_match: Option<String>,
    /// SHA-256 of the request id, if the caller gave one.
    request: Option<[u8; 32]>,
    /// The object id the caller asked for; empty for a generated one.
    requested_id: String,
    /// The suite to seal in: `crypto.suite`, or a reseal's target.
    suite: Suite,
    /// The creation time the new version keeps (a reseal's, of the object
    /// it rewrites); `None`: now.
    created: Option<SystemTime>,
}

/// Stripes of the commit lock: writes and deletes of one object within
/// this process take the same stripe around their precondition check and
/// their commit, so the check holds when the commit lands.
const COMMIT_STRIPES: usize = 64;

/// The content service.
pub struct Content {
    keys: Arc<KeyHierarchy>,
    /// Writes remembered by request id: the one part of the key store that
    /// content uses beside the hierarchy.
    requests: Arc<dyn RequestLog>,
    blob: Arc<dyn BlobStore>,
    region: String,
    spaces: Vec<String>,
    limits: Limits,
    /// The suite new objects are sealed in (`crypto.suite`).
    suite: Suite,
    /// The newest format version new objects take (`crypto.object_version`).
    object_version: Version,
    commit_locks: Box<[tokio::sync::Mutex<()>]>,
}

impl Content {
    /// Builds the service over a key hierarchy and a blob store; objects are
    /// bound to `region`, and callers may use `spaces`.
    pub fn new(
        keys: Arc<KeyHierarchy>,
        requests: Arc<dyn RequestLog>,
        blob: Arc<dyn BlobStore>,
        region: String,
        spaces: Vec<String>,
        limits: Limits,
    ) -> Self {
        Self {
            keys,
            requests,
            blob,
            region,
            spaces,
            limits,
            suite: Suite::default(),
            object_version: Version::V2,
            commit_locks: (0..COMMIT_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The commit lock stripe of an object.
    fn commit_lock(&self, key: &BlobKey) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        &self.commit_locks[(hash % COMMIT_STRIPES as u64) as usize]
    }

    /// The etag of the object stored at `key` now, if there is one.
    async fn current_etag(&self, key: &BlobKey) -> Result<Option<String>, Error> {
        Ok(self
            .read_fixed(key)
            .await?
            .map(|(fixed, _)| etag_of(&fixed)))
    }

    /// Fails `ETAG_MISMATCH` unless the object exists with etag `want`.
    async fn check_etag(&self, obj: &ObjectRef, want: &str) -> Result<(), Error> {
        match self.current_etag(&obj.key).await? {
            Some(etag) if etag == want => Ok(()),
            Some(_) => Err(Error::FailedPrecondition {
                reason: Reason::EtagMismatch,
                message: "the object changed: its etag is not the one in if_match".into(),
            }),
            None => Err(Error::FailedPrecondition {
                reason: Reason::EtagMismatch,
                message: "if_match names an etag, but the object does not exist".into(),
            }),
        }
    }

    /// Seals new objects in `suite` (the default is suite 1, AES-256-GCM);
    /// objects of every suite stay readable.
    #[must_use]
    pub fn with_suite(mut self, suite: Suite) -> Self {
        self.suite = suite;
        self
    }

    /// Writes new objects in format versions up to `version` (the default
    /// is 2; see [`Version::to_write`]); objects of every version stay
    /// readable.
    #[must_use]
    pub fn with_object_version(mut self, version: Version) -> Self {
        self.object_version = version;
        self
    }

    /// The size limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Validates a user id and returns its pseudonym.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or overlong user id.
    pub fn pseudonym(&self, user_id: &str) -> Result<Pseudonym, Error> {
        self.keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))
    }

    /// Validates a space name against the configured spaces.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown space.
    pub fn check_space(&self, space: &str) -> Result<(), Error> {
        if self.spaces.iter().any(|s| s == space) {
            Ok(())
        } else {
            Err(Error::invalid(
                Reason::UnknownSpace,
                "space",
                format!(
                    "unknown space {}; configured spaces: {}",
                    crate::error::quote(space),
                    self.spaces.join(", ")
                ),
            ))
        }
    }

    /// Validates a full object reference.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad field.
    pub fn object_ref(
        &self,
        user_id: &str,
        space: &str,
        object_id: &str,
    ) -> Result<ObjectRef, Error> {
        let pseudonym = self.pseudonym(user_id)?;
        self.object_ref_for(&pseudonym, space, object_id)
    }

    /// As [`Content::object_ref`], for a user known by pseudonym (a signed
    /// read token carries the pseudonym, never the user id).
    ///
    /// # Errors
    /// As [`Content::object_ref`].
    pub fn object_ref_for(
        &self,
        pseudonym: &Pseudonym,
        space: &str,
        object_id: &str,
    ) -> Result<ObjectRef, Error> {
        let pseudonym = *pseudonym;
        self.check_space(space)?;
        names::check_name(object_id).map_err(|e| Error::invalid_name("object_id", e))?;
        let identity =
            ObjectIdentity::new(&self.region, space, pseudonym, object_id).map_err(|_| {
                Error::invalid(Reason::InvalidRequest, "object", "object identity too long")
            })?;
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

    /// Validates a write. An empty id asks for a generated one, written
    /// create-only so that a generated id can never replace an existing
    /// object; a caller's id replaces, unless `if_absent` (create-only) or
    /// `if_match` (only the object with that etag) says otherwise.
    ///
    /// # Errors
    /// As [`Content::object_ref`]; [`Error::InvalidArgument`] for
    /// conflicting or malformed options.
    pub fn write_ref(
        &self,
        user_id: &str,
        space: &str,
        object_id: &str,
        options: &WriteOptions,
    ) -> Result<Write, Error> {
        let invalid = |field, message: &str| Error::invalid(Reason::InvalidRequest, field, message);
        if options.if_absent && options.if_match.is_some() {
            return Err(invalid(
                "if_match",
                "if_absent and if_match exclude each other",
            ));
        }
        if object_id.is_empty() && options.if_match.is_some() {
            return Err(invalid(
                "if_match",
                "if_match needs the object_id of the object it names",
            ));
        }
        let request = options
            .request_id
            .as_deref()
            .map(put::request_hash)
            .transpose()?;
        let (obj, mode) = if object_id.is_empty() {
            let id = names::random_id();
            (self.object_ref(user_id, space, &id)?, WriteMode::CreateOnly)
        } else if options.if_absent {
            (
                self.object_ref(user_id, space, object_id)?,
                WriteMode::CreateOnly,
            )
        } else {
            (
                self.object_ref(user_id, space, object_id)?,
                WriteMode::Replace,
            )
        };
        Ok(Write {
            obj,
            mode,
            if_match: options.if_match.clone(),
            request,
            requested_id: object_id.to_string(),
            suite: self.suite,
            created: None,
        })
    }

    /// Reads and checks an object's header: its [`ObjectInfo`], with the
    /// decrypted metadata, without reading the body.
    ///
    /// # Errors
    /// As [`Content::open`].
    pub async fn head(&self, obj: &ObjectRef) -> Result<ObjectInfo, Error> {
        Ok(self.open(obj, false).await?.info)
    }

    /// Deletes an object (every stored version); with `if_match`, only if
    /// the object has that etag.
    ///
    /// # Errors
    /// [`Error::UserErased`]; `ETAG_MISMATCH`; storage failures.
    pub async fn delete(&self, obj: &ObjectRef, if_match: Option<&str>) -> Result<bool, Error> {
        self.keys.ensure_not_erased(&obj.pseudonym).await?;
        // A held user's objects are preserved.
        self.keys.ensure_not_held(&obj.pseudonym).await?;
        let _commit = self.commit_lock(&obj.key).lock().await;
        if let Some(want) = if_match {
            self.check_etag(obj, want).await?;
        }
        Ok(self.blob.delete(&obj.key).await?)
    }
}
