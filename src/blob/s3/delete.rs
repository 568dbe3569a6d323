//! Deletes. On a bucket with versioning (enabled or suspended), every
//! version and delete marker of a key is listed (ListObjectVersions) and
//! removed by version id (DeleteObjects); on one without (or on a store
//! with no versioning API at all), a key is deleted plainly. Which one is
//! probed once at startup ([`probe_versioning`]): a 501, or an answer the
//! SDK cannot parse, means no versioning.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;

use super::error::{translate, S3Failure};
use super::residency::S3StartError;
use super::{object_key, S3BlobStore, DELETE_BATCH};
use crate::blob::{BlobError, BlobKey};

/// Whether the bucket keeps versions: GetBucketVersioning says Enabled or
/// Suspended (a suspended bucket still holds the versions made before). A
/// store without the API (501) or whose answer the SDK cannot parse keeps
/// none.
///
/// # Errors
/// [`S3StartError::Bucket`] for any other failure (access denied, no such
/// bucket, unreachable).
pub(super) async fn probe_versioning(client: &Client, bucket: &str) -> Result<bool, S3StartError> {
    match client.get_bucket_versioning().bucket(bucket).send().await {
        Ok(out) => Ok(out.status().is_some()),
        // A 200 whose body the SDK cannot read (moto names its root element
        // GetBucketVersioningResponse): read the Status from the text.
        Err(SdkError::ServiceError(e)) if e.raw().status().is_success() => {
            let body = e.raw().body().bytes().unwrap_or_default();
            let body = String::from_utf8_lossy(body);
            let versioned = ["Enabled", "Suspended"]
                .iter()
                .any(|s| body.contains(&format!("<Status>{s}</Status>")));
            tracing::info!(bucket, versioned, "GetBucketVersioning answer read as text");
            Ok(versioned)
        }
        Err(SdkError::ResponseError(_)) => {
            tracing::info!(
                bucket,
                "GetBucketVersioning answer unreadable: using plain deletes"
            );
            Ok(false)
        }
        Err(e) => match translate(e) {
            S3Failure::NotImplemented(_) => {
                tracing::info!(
                    bucket,
                    "the store has no versioning API: using plain deletes"
                );
                Ok(false)
            }
            other => Err(S3StartError::Bucket {
                bucket: bucket.to_string(),
                source: other.into_blob(),
            }),
        },
    }
}

impl S3BlobStore {
    /// `delete_many` on a bucket without versions: a HeadObject tells
    /// whether each key exists, then DeleteObjects removes them.
    pub(super) async fn delete_plain(&self, keys: &[BlobKey]) -> Result<u64, BlobError> {
        let c = &self.inner.client;
        let bucket = &self.inner.bucket;
        let mut targets = Vec::new();
        for key in keys {
            let object = object_key(key)?;
            match c.head_object().bucket(bucket).key(&object).send().await {
                Ok(_) => targets.push(identifier(&object, None)?),
                Err(e) => match translate(e) {
                    S3Failure::NotFound => {}
                    other => return Err(other.into_blob()),
                },
            }
        }
        self.delete_identifiers(&targets).await?;
        Ok(targets.len() as u64)
    }

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
        self.delete_identifiers(&targets).await?;
        Ok(existed)
    }

    /// DeleteObjects in batches of [`DELETE_BATCH`].
    async fn delete_identifiers(&self, targets: &[ObjectIdentifier]) -> Result<(), BlobError> {
        let c = &self.inner.client;
        let bucket = &self.inner.bucket;
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
        Ok(())
    }
}

fn identifier(key: &str, version: Option<&str>) -> Result<ObjectIdentifier, BlobError> {
    ObjectIdentifier::builder()
        .key(key)
        .set_version_id(version.map(str::to_string))
        .build()
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))
}
