//! Key administration: what ops may learn and do about keys, never key
//! material. Today: the status of a user's keys.

use std::sync::Arc;

use crate::error::Error;
use crate::keys::{KeyHierarchy, UserKeyStatus};

/// The key-administration service.
pub struct KeyAdmin {
    keys: Arc<KeyHierarchy>,
}

impl KeyAdmin {
    /// Builds the service.
    pub fn new(keys: Arc<KeyHierarchy>) -> Self {
        Self { keys }
    }

    /// A user's key versions and erasure state, without key material.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad user id; key-store failures.
    pub async fn user_status(&self, user_id: &str) -> Result<UserKeyStatus, Error> {
        let p = self
            .keys
            .pseudonym(user_id)
            .map_err(|e| Error::invalid_name("user_id", e))?;
        Ok(self.keys.status(&p).await?)
    }
}
