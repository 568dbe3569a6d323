//! Listings: a page of a user's objects in a space, with plaintext sizes.

use super::Content;
use crate::blob::{BlobError, BlobKey};
use crate::crypto::envelope::FIXED_HEADER_LEN;
use crate::crypto::ObjectLayout;
use crate::error::{Error, Reason};
use crate::names;

/// Entries per page when the caller does not say.
const DEFAULT_PAGE: usize = 100;
/// Most entries per page.
const MAX_PAGE: usize = 1000;

/// An entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Object id.
    pub id: String,
    /// Plaintext size; `None` if the stored object fails its header check.
    pub size: Option<u64>,
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
        } else if names::is_valid_name(page_token) {
            Some(page_token)
        } else {
            return Err(Error::invalid(
                Reason::InvalidPageToken,
                "page_token",
                "invalid page_token",
            ));
        };
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n => (n as usize).min(MAX_PAGE),
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
                name: entry.name,
            };
            let mut reader = match self.blob.open(&key).await {
                Ok(r) => r,
                Err(BlobError::NotFound) => continue, // deleted meanwhile
                Err(e) => return Err(e.into()),
            };
            let len = reader.len();
            let fixed = reader.read(0..len.min(FIXED_HEADER_LEN as u64)).await?;
            // One damaged object must not hide the others: it is listed,
            // marked damaged, and GetObject on it reports DATA_LOSS.
            let size = match ObjectLayout::new(&fixed, len) {
                Ok(layout) => Some(layout.plaintext_len()),
                Err(_) => {
                    tracing::warn!(space, object = %key.name, pseudonym = %pseudonym, "listed object fails its header check");
                    None
                }
            };
            out.push(ListedObject { id: key.name, size });
        }
        Ok((out, next))
    }
}
