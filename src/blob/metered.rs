//! `MeteredBlobStore`: any [`BlobStore`] with each operation counted in
//! `sealgate_storage_requests_total{op,outcome}` ([`crate::metrics`]).
//!
//! Operations: `create`, `open`, `read` (a range read or stream of an
//! opened object), `commit`, `abort`, `delete`, `rewrite_key_slot`,
//! `list`, `store_id`; pieces written to an open writer are not counted (a
//! store sends them as it sees fit). Outcomes: `ok`, `not_found`,
//! `already_exists`, `unavailable`, `unsupported`, `error`, and `changed`
//! (a key-slot rewrite that found the object changed).

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobEntry, BlobError, BlobKey, BlobReader, BlobStore, BlobWriter, ByteStream, SlotRewrite,
    WriteMode,
};
use crate::crypto::envelope::KeySlot;

/// A [`BlobStore`] whose operations are counted.
pub struct MeteredBlobStore(Arc<dyn BlobStore>);

impl MeteredBlobStore {
    /// Counts the operations of `inner`.
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        Self(inner)
    }
}

fn outcome<T>(r: &Result<T, BlobError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(BlobError::NotFound) => "not_found",
        Err(BlobError::AlreadyExists) => "already_exists",
        Err(BlobError::Unavailable(_)) => "unavailable",
        Err(BlobError::Unsupported(_)) => "unsupported",
        Err(BlobError::Io(_)) => "error",
    }
}

fn count<T>(op: &'static str, r: Result<T, BlobError>) -> Result<T, BlobError> {
    crate::metrics::get().storage(op, outcome(&r));
    r
}

#[async_trait]
impl BlobStore for MeteredBlobStore {
    async fn create(
        &self,
        key: &BlobKey,
        mode: WriteMode,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        count("create", self.0.create(key, mode).await)
            .map(|w| Box::new(MeteredWriter(w)) as Box<dyn BlobWriter>)
    }

    async fn create_exact(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        count("create", self.0.create_exact(key, mode, len).await)
            .map(|w| Box::new(MeteredWriter(w)) as Box<dyn BlobWriter>)
    }

    async fn create_exact_as_of(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
        created: std::time::SystemTime,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        count(
            "create",
            self.0.create_exact_as_of(key, mode, len, created).await,
        )
        .map(|w| Box::new(MeteredWriter(w)) as Box<dyn BlobWriter>)
    }

    async fn open(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        count("open", self.0.open(key).await)
            .map(|r| Box::new(MeteredReader(r)) as Box<dyn BlobReader>)
    }

    async fn open_whole(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        count("open", self.0.open_whole(key).await)
            .map(|r| Box::new(MeteredReader(r)) as Box<dyn BlobReader>)
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError> {
        count("delete", self.0.delete(key).await)
    }

    async fn delete_many(&self, keys: &[BlobKey]) -> Result<u64, BlobError> {
        count("delete", self.0.delete_many(keys).await)
    }

    async fn rewrite_key_slot(
        &self,
        key: &BlobKey,
        expected: &[u8; KeySlot::LEN],
        new: &[u8; KeySlot::LEN],
    ) -> Result<SlotRewrite, BlobError> {
        let r = self.0.rewrite_key_slot(key, expected, new).await;
        let outcome = match r {
            Ok(SlotRewrite::Changed) => "changed",
            _ => outcome(&r),
        };
        crate::metrics::get().storage("rewrite_key_slot", outcome);
        r
    }

    async fn list(
        &self,
        space: &str,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobEntry>, BlobError> {
        count("list", self.0.list(space, owner, after, limit).await)
    }

    fn location(&self) -> String {
        self.0.location()
    }

    async fn settle(&self) {
        self.0.settle().await;
    }

    async fn store_id(&self) -> Result<Option<String>, BlobError> {
        count("store_id", self.0.store_id().await)
    }

    async fn init_store_id(&self, id: &str) -> Result<String, BlobError> {
        count("store_id", self.0.init_store_id(id).await)
    }
}

struct MeteredWriter(Box<dyn BlobWriter>);

#[async_trait]
impl BlobWriter for MeteredWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.0.write(data).await
    }

    async fn commit(self: Box<Self>) -> Result<(), BlobError> {
        count("commit", self.0.commit().await)
    }

    async fn abort(self: Box<Self>) -> Result<(), BlobError> {
        count("abort", self.0.abort().await)
    }

    fn created(&self) -> SystemTime {
        self.0.created()
    }
}

struct MeteredReader(Box<dyn BlobReader>);

#[async_trait]
impl BlobReader for MeteredReader {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn created(&self) -> Option<SystemTime> {
        self.0.created()
    }

    async fn read(&mut self, range: Range<u64>) -> Result<Bytes, BlobError> {
        count("read", self.0.read(range).await)
    }

    async fn stream(&mut self, range: Range<u64>) -> Result<ByteStream, BlobError> {
        count("read", self.0.stream(range).await)
    }
}
