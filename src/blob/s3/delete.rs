//! Deletes: every version and delete marker of a key is listed
//! (ListObjectVersions) and removed by version id (DeleteObjects).

use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use super::error::translate;
use super::{object_key, S3BlobStore, DELETE_BATCH};
use crate::blob::{BlobError, BlobKey};

impl S3BlobStore {
    /// The body of `delete_many`: removes every version of each key and
    /// returns how many of the keys existed.
    pub(super) async fn delete_versions(&self, keys: &[BlobKey]) -> Result<u64, BlobError> {
        let c = &self.inner.client;
        let bucket = &self.inner.bucket;
        let mut existed = 0u64;
        let mut targets: Vec<ObjectIdentifier> = Vec::new();
        for key in keys {
            let object = object_key(key)?;
            let mut found = false;
            let mut key_marker: Option<String> = None;
            let mut version_marker: Option<String> = None;
            loop {
                let page = c
                    .list_object_versions()
                    .bucket(bucket)
                    .prefix(&object)
                    .set_key_marker(key_marker.take())
                    .set_version_id_marker(version_marker.take())
                    .send()
                    .await
                    .map_err(|e| translate(e).into_blob())?;
                let exact = |k: Option<&str>| k == Some(object.as_str());
                for v in page.versions().iter().filter(|v| exact(v.key())) {
                    found = true;
                    targets.push(identifier(&object, v.version_id())?);
                }
                for m in page.delete_markers().iter().filter(|m| exact(m.key())) {
                    targets.push(identifier(&object, m.version_id())?);
                }
                if page.is_truncated() != Some(true) {
                    break;
                }
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
            }
            existed += u64::from(found);
        }
        for batch in targets.chunks(DELETE_BATCH) {
            let delete = Delete::builder()
                .set_objects(Some(batch.to_vec()))
                .quiet(true)
                .build()
                .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
            let out = c
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| translate(e).into_blob())?;
            if let Some(first) = out.errors().first() {
                return Err(BlobError::Unavailable(format!(
                    "DeleteObjects failed for {} versions, first: {}",
                    out.errors().len(),
                    first.message().unwrap_or("unknown error")
                )));
            }
        }
        Ok(existed)
    }
}

fn identifier(key: &str, version: Option<&str>) -> Result<ObjectIdentifier, BlobError> {
    ObjectIdentifier::builder()
        .key(key)
        .set_version_id(version.map(str::to_string))
        .build()
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))
}
