//! Listings: a page of a user's objects in a space, with plaintext sizes,
//! etags and creation times read from each object's fixed header.
//!
//! Headers are read 32 at a time; an object whose fixed header is malformed
//! is listed as damaged, never hiding the others. Page tokens are opaque: a
//! 12-byte tag binding the user, the space and the last id, then that id,
//! in hex.

use futures_util::{StreamExt, TryStreamExt};

use super::{etag_of, labelled_sha256, Content};
use crate::blob::BlobKey;
use crate::crypto::{ObjectLayout, Pseudonym};
use crate::error::{Error, Reason};
use crate::names;

/// Entries per page when the caller does not say.
const DEFAULT_PAGE: usize = 100;
/// Most entries per page.
const MAX_PAGE: usize = 1000;
/// Header reads in flight for one page: a 1,000-entry page on S3 costs
/// about 1000 / 32 round trips, not 1,000.
const HEADER_READS: usize = 32;
/// Bytes of a page token's tag.
const TAG_LEN: usize = 12;

/// An entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Object id.
    pub id: String,
    /// Plaintext size; `None` if the stored object's fixed header is
    /// malformed (only its shape is checked: nothing is decrypted).
    pub size: Option<u64>,
    /// As [`super::ObjectInfo::etag`].
    pub etag: String,
    /// As [`super::ObjectInfo::created`].
    pub created: Option<std::time::SystemTime>,
    /// The suite its header names; `None` when the header is malformed.
    pub suite: Option<crate::crypto::Suite>,
}

/// The tag that binds a page token to one listing.
fn token_tag(pseudonym: &Pseudonym, space: &str, after: &str) -> [u8; TAG_LEN] {
    let owner = pseudonym.to_string();
    let parts: [&[u8]; 3] = [owner.as_bytes(), space.as_bytes(), after.as_bytes()];
    labelled_sha256(b"sealgate/v1/page-token", &parts)[..TAG_LEN]
        .try_into()
        .expect("TAG_LEN bytes")
}

/// A page token: opaque to callers, it names the last id of the page and
/// is bound to the user and the space.
fn make_page_token(pseudonym: &Pseudonym, space: &str, after: &str) -> String {
    let mut token = hex::encode(token_tag(pseudonym, space, after));
    token.push_str(&hex::encode(after));
    token
}

/// The last id a page token names, if it is a token of this listing.
fn parse_page_token(pseudonym: &Pseudonym, space: &str, token: &str) -> Result<String, Error> {
    let bad = || {
        Error::invalid(
            Reason::InvalidPageToken,
            "page_token",
            "page_token is not one this listing (this user and space) returned",
        )
    };
    let bytes = hex::decode(token).map_err(|_| bad())?;
    if bytes.len() <= TAG_LEN {
        return Err(bad());
    }
    let (tag, after) = bytes.split_at(TAG_LEN);
    let after = String::from_utf8(after.to_vec()).map_err(|_| bad())?;
    if !names::is_valid_name(&after) || tag != token_tag(pseudonym, space, &after) {
        return Err(bad());
    }
    Ok(after)
}

impl Content {
    /// Lists a page of a user's objects in a space; returns the entries and
    /// the token of the next page, if any.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad user, space or token;
    /// [`Error::UserErased`]; storage failures.
    pub async fn list(
        &self,
        user_id: &str,
        space: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ListedObject>, Option<String>), Error> {
        let pseudonym = self.pseudonym(user_id)?;
        self.check_space(space)?;
        let after = if page_token.is_empty() {
            None
        } else {
            Some(parse_page_token(&pseudonym, space, page_token)?)
        };
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
        };
        self.keys.ensure_not_erased(&pseudonym).await?;
        let owner = pseudonym.to_string();
        let mut entries = self
            .blob
            .list(space, &owner, after.as_deref(), limit + 1)
            .await?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries
                .last()
                .map(|e| make_page_token(&pseudonym, space, &e.name))
        } else {
            None
        };
        let keys = entries.into_iter().map(|entry| BlobKey {
            space: space.to_string(),
            owner: owner.clone(),
            name: entry.name,
        });
        let out: Vec<Option<ListedObject>> = futures_util::stream::iter(keys)
            .map(|key| self.list_entry(key, &pseudonym))
            .buffered(HEADER_READS)
            .try_collect()
            .await?;
        Ok((out.into_iter().flatten().collect(), next))
    }

    /// One entry from the object's fixed header; `None` if it was deleted
    /// since the listing.
    pub(super) async fn list_entry(
        &self,
        key: BlobKey,
        pseudonym: &Pseudonym,
    ) -> Result<Option<ListedObject>, Error> {
        let Some((fixed, reader)) = self.read_fixed(&key).await? else {
            return Ok(None); // deleted since the listing
        };
        let len = reader.len();
        // One damaged object must not hide the others: it is listed,
        // marked damaged, and GetObject on it reports DATA_LOSS.
        let layout = match ObjectLayout::new(&fixed, len) {
            Ok(layout) => Some(layout),
            Err(_) => {
                tracing::warn!(space = %key.space, object = %key.name, pseudonym = %pseudonym, "listed object fails its header check");
                None
            }
        };
        Ok(Some(ListedObject {
            id: key.name,
            size: layout.map(|l| l.plaintext_len()),
            suite: layout.map(|l| l.suite()),
            etag: etag_of(&fixed),
            created: reader.created(),
        }))
    }
}
