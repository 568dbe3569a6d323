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

mod items;
mod list;
mod put;
mod read;

use std::sync::Arc;

use crate::blob::{BlobKey, BlobStore, WriteMode};
use crate::crypto::{Metadata, ObjectIdentity, Pseudonym};
use crate::error::{Error, Reason};
use crate::keys::KeyHierarchy;
use crate::names;

pub use items::{Item, MAX_BATCH};
pub use list::ListedObject;
pub use put::UploadPart;
pub use read::{ErasureGuard, OpenedObject, MAX_SEND_PIECE, READ_PIECE, SEND_PIECE};

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

/// The content service.
pub struct Content {
    keys: Arc<KeyHierarchy>,
    blob: Arc<dyn BlobStore>,
    region: String,
    spaces: Vec<String>,
    limits: Limits,
}

impl Content {
    /// Builds the service over a key hierarchy and a blob store; objects are
    /// bound to `region`, and callers may use `spaces`.
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

    /// Validates the reference of an object about to be written. An empty
    /// id asks for a generated one, written create-only so that a generated
    /// id can never replace an existing object; a caller's id replaces.
    ///
    /// # Errors
    /// As [`Content::object_ref`].
    pub fn new_object_ref(
        &self,
        user_id: &str,
        space: &str,
        object_id: &str,
    ) -> Result<(ObjectRef, WriteMode), Error> {
        if object_id.is_empty() {
            let id = names::random_id();
            Ok((self.object_ref(user_id, space, &id)?, WriteMode::CreateOnly))
        } else {
            Ok((
                self.object_ref(user_id, space, object_id)?,
                WriteMode::Replace,
            ))
        }
    }

    /// Reads and checks an object's header: its [`ObjectInfo`], with the
    /// decrypted metadata, without reading the body.
    ///
    /// # Errors
    /// As [`Content::open`].
    pub async fn head(&self, obj: &ObjectRef) -> Result<ObjectInfo, Error> {
        Ok(self.open(obj, false).await?.info)
    }

    /// Deletes an object (every stored version).
    ///
    /// # Errors
    /// [`Error::UserErased`]; storage failures.
    pub async fn delete(&self, obj: &ObjectRef) -> Result<bool, Error> {
        self.keys.ensure_not_erased(&obj.pseudonym).await?;
        Ok(self.blob.delete(&obj.key).await?)
    }
}
