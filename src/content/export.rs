//! What an export of a user's content (the export service) needs of content:
//! every object of a user in a space, from fixed headers (nothing
//! decrypted), and reads whose erasure checks follow the export's
//! [`Purpose`].
//!
//! A disclosure under a legal case reads a user whose erasure is scheduled
//! (restricted); every other read refuses them. Both refuse an erased
//! user. The keys of a disclosure come from
//! [`KeyHierarchy::user_key_for_disclosure`](crate::keys::KeyHierarchy::user_key_for_disclosure),
//! never from the cache content calls are served from.

use futures_util::{StreamExt, TryStreamExt};

use super::{Content, ListedObject, ObjectRef};
use crate::blob::BlobKey;
use crate::crypto::Pseudonym;
use crate::error::Error;

/// Blob listings asked for at a time while collecting a user's objects.
const LIST_PAGE: usize = 1000;
/// Header reads in flight (as a listing page).
const HEADER_READS: usize = 32;

/// Whose read it is: what stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A content call, or the user's own copy: refused while the user's
    /// erasure is scheduled, and once they are erased.
    Serve,
    /// A disclosure under a legal case that holds the user: refused only
    /// once the user is erased.
    Disclosure,
}

impl Content {
    /// The configured spaces, in configuration order.
    pub fn spaces(&self) -> &[String] {
        &self.spaces
    }

    /// Fails if the user may not be read for `purpose`: erased (both), or
    /// with an erasure scheduled ([`Purpose::Serve`] only).
    ///
    /// # Errors
    /// [`Error::UserErased`], FAILED_PRECONDITION `ERASURE_PENDING`, or
    /// key-store failures.
    pub async fn ensure_readable(&self, p: &Pseudonym, purpose: Purpose) -> Result<(), Error> {
        match purpose {
            Purpose::Serve => self.keys.ensure_not_erased(p).await?,
            Purpose::Disclosure => self.keys.ensure_not_erased_for_disclosure(p).await?,
        }
        Ok(())
    }

    /// Every object of a user in `space`, sorted by id (bytewise), each
    /// with its size, etag and creation time from its fixed header. A
    /// damaged header gives `size: None`. The caller checked the user with
    /// [`Content::ensure_readable`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown space; storage failures.
    pub async fn user_objects(
        &self,
        p: &Pseudonym,
        space: &str,
    ) -> Result<Vec<ListedObject>, Error> {
        self.check_space(space)?;
        let owner = p.to_string();
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .blob
                .list(space, &owner, after.as_deref(), LIST_PAGE)
                .await?;
            let full = page.len() >= LIST_PAGE;
            after = page.last().map(|e| e.name.clone());
            let keys = page.into_iter().map(|entry| BlobKey {
                space: space.to_string(),
                owner: owner.clone(),
                name: entry.name,
            });
            let listed: Vec<Option<ListedObject>> = futures_util::stream::iter(keys)
                .map(|key| self.list_entry(key, p))
                .buffered(HEADER_READS)
                .try_collect()
                .await?;
            out.extend(listed.into_iter().flatten());
            if !full || after.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
        Ok(out)
    }

    /// A validated reference to a user's object, the user known by
    /// pseudonym.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad field.
    pub fn user_object_ref(
        &self,
        p: &Pseudonym,
        space: &str,
        object_id: &str,
    ) -> Result<ObjectRef, Error> {
        self.object_ref_for(p, space, object_id)
    }

    /// Opens an object to be read whole, for `purpose` (see
    /// [`Content::open`]).
    ///
    /// # Errors
    /// As [`Content::open`]; a disclosure is not refused
    /// `ERASURE_PENDING`.
    pub async fn open_whole_for(
        &self,
        obj: &ObjectRef,
        purpose: Purpose,
    ) -> Result<super::OpenedObject, Error> {
        self.open_for(obj, true, purpose).await
    }
}
