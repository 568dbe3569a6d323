//! The store's own settings table, and the deployment id kept in it.

use async_trait::async_trait;

use super::SqlStore;
use crate::keys::store::engine::{params, Engine, SqlRow};
use crate::keys::store::{Settings, StoreError};

/// The settings key of the deployment id.
const STORE_ID: &str = "store_id";

#[async_trait]
impl<E: Engine> Settings for SqlStore<E> {
    async fn meta_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .row("SELECT value FROM meta WHERE key = $1", params![key])
            .await?;
        row.map(|row| row.text("value")).transpose()
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )
        .await
        .map(|_| ())
    }

    async fn set_meta_if_absent(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let mut tx = self.begin().await?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            params![key, value],
        )
        .await?;
        let held = tx
            .row("SELECT value FROM meta WHERE key = $1", params![key])
            .await?
            .ok_or_else(|| StoreError::Backend("setting vanished in its own transaction".into()))?
            .text("value")?;
        tx.commit().await?;
        Ok(held)
    }

    async fn meta_values(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // substr rather than LIKE: a prefix may hold `_` or `%`. The key
        // column compares bytes in both engines.
        let rows = self
            .rows(
                "SELECT key, value FROM meta WHERE substr(key, 1, length($1)) = $1 ORDER BY key",
                params![prefix],
            )
            .await?;
        rows.iter()
            .map(|row| Ok((row.text("key")?, row.text("value")?)))
            .collect()
    }

    async fn delete_meta(&self, key: &str) -> Result<bool, StoreError> {
        let deleted = self
            .write("DELETE FROM meta WHERE key = $1", params![key])
            .await?;
        if deleted > 0 {
            self.engine.scrub().await?;
        }
        Ok(deleted > 0)
    }

    async fn store_id(&self) -> Result<Option<String>, StoreError> {
        self.meta_value(STORE_ID).await
    }

    async fn init_store_id(&self, id: &str) -> Result<String, StoreError> {
        self.set_meta_if_absent(STORE_ID, id).await
    }
}
