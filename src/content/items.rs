//! GetItems: a batch of small objects of one user, with per-item results,
//! and BatchGetItems: a feed of items across users and spaces, where an
//! erased user's item fails on its own. At most 100 per call, 16 read at
//! once.

use futures_util::StreamExt;

use super::{Content, ObjectInfo};
use crate::error::{Error, Reason};
use crate::keys::KeyError;

/// Most ids in one GetItems call.
pub const MAX_BATCH: usize = 100;
/// Items opened and read at once.
const CONCURRENCY: usize = 16;

/// One item read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its info.
    pub info: ObjectInfo,
    /// Its plaintext.
    pub content: Vec<u8>,
}

impl Content {
    /// Reads up to [`MAX_BATCH`] items of one user in one space, in request
    /// order. Errors of the request itself (too many ids, a bad user or
    /// space) fail the call; anything else is reported per item, as the
    /// proto says: an erased user's items each fail [`Error::UserErased`],
    /// also when the user is erased while the batch is read (then no item's
    /// content leaves). An empty batch of an erased user, with no item to
    /// say so, fails the call [`Error::UserErased`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for too many ids, a bad user or space;
    /// key-store failures while checking erasure.
    pub async fn get_items(
        &self,
        user_id: &str,
        space: &str,
        item_ids: Vec<String>,
    ) -> Result<Vec<(String, Result<Item, Error>)>, Error> {
        if item_ids.len() > MAX_BATCH {
            return Err(Error::invalid(
                Reason::BatchTooLarge,
                "item_ids",
                format!(
                    "at most {MAX_BATCH} item ids per call, got {}",
                    item_ids.len()
                ),
            ));
        }
        let pseudonym = self.pseudonym(user_id)?;
        self.check_space(space)?;
        let erased = |ids: Vec<String>| {
            ids.into_iter()
                .map(|id| (id, Err(Error::UserErased)))
                .collect::<Vec<_>>()
        };
        let mut guard = self.user_erasure_guard(&pseudonym).await;
        match self.keys.ensure_not_erased(&pseudonym).await {
            // An empty batch has no item to carry the refusal: the call
            // does, so that an erased user's call never passes unnoticed.
            Err(KeyError::UserErased) if item_ids.is_empty() => return Err(Error::UserErased),
            Err(KeyError::UserErased) => return Ok(erased(item_ids)),
            other => other?,
        }
        let results = futures_util::stream::iter(item_ids)
            .map(|item_id| async move {
                let result = self.get_item(user_id, space, &item_id).await;
                (item_id, result)
            })
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        // Nothing of the batch leaves if the user was erased while it was
        // read: every item fails as erased.
        let check = guard.check().await;
        let erased_meanwhile = results
            .iter()
            .any(|(_, r)| matches!(r, Err(Error::UserErased)))
            || matches!(check, Err(Error::UserErased));
        if erased_meanwhile {
            return Ok(erased(results.into_iter().map(|(id, _)| id).collect()));
        }
        check?;
        Ok(results)
    }

    /// Reads up to [`MAX_BATCH`] items of any users and spaces (a feed), one
    /// result per `(user_id, space, item_id)` ref in request order. Every
    /// failure is reported per item, an erased user's item included.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for more than [`MAX_BATCH`] refs.
    pub async fn batch_get_items(
        &self,
        refs: Vec<(String, String, String)>,
    ) -> Result<Vec<(String, Result<Item, Error>)>, Error> {
        if refs.len() > MAX_BATCH {
            return Err(Error::invalid(
                Reason::BatchTooLarge,
                "refs",
                format!("at most {MAX_BATCH} refs per call, got {}", refs.len()),
            ));
        }
        Ok(futures_util::stream::iter(refs)
            .map(|(user_id, space, item_id)| async move {
                // `open` watches the user's erasure before taking the key, and the
                // read checks it after the last piece.
                let result = self.get_item(&user_id, &space, &item_id).await;
                (item_id, result)
            })
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await)
    }

    async fn get_item(&self, user_id: &str, space: &str, item_id: &str) -> Result<Item, Error> {
        let max = self.limits.max_item_bytes;
        let obj = self.object_ref(user_id, space, item_id)?;
        let opened = self.open(&obj, true).await?;
        if opened.info.size > max {
            return Err(Error::too_large(
                Reason::ItemTooLarge,
                format!("object is larger than an item ({max} bytes); use GetObject"),
            ));
        }
        let info = opened.info.clone();
        let content = opened.read_all().await?;
        Ok(Item { info, content })
    }
}
