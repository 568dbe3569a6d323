//! The deployment id of a bucket: the object [`STORE_ID_KEY`] at the
//! bucket's root, written once with `If-None-Match: *`. Listings are per
//! `{space}/{owner}/` prefix and every key segment is a plain name (no
//! leading dot), so no listing shows it and no object key can name it.

use aws_sdk_s3::primitives::ByteStream as SdkStream;

use super::error::{translate, S3Failure};
use super::S3BlobStore;
use crate::blob::{check_store_id, BlobError};

/// The object that records the bucket's deployment id.
pub const STORE_ID_KEY: &str = ".sealgate-store-id";
/// Longest store-id object read back.
const MAX_STORE_ID_BYTES: usize = 256;

impl S3BlobStore {
    /// The recorded id, if any.
    pub(super) async fn read_store_id(&self) -> Result<Option<String>, BlobError> {
        let got = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(STORE_ID_KEY)
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            Err(e) => {
                return match translate(e) {
                    S3Failure::NotFound => Ok(None),
                    other => Err(other.into_blob()),
                }
            }
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| BlobError::Unavailable(format!("reading from S3: {e}")))?
            .into_bytes();
        let malformed = || {
            BlobError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "s3://{}/{STORE_ID_KEY} does not hold a store id",
                    self.inner.bucket
                ),
            ))
        };
        if body.len() > MAX_STORE_ID_BYTES {
            return Err(malformed());
        }
        let text = std::str::from_utf8(&body).map_err(|_| malformed())?;
        let id = text.trim();
        check_store_id(id)?;
        Ok(Some(id.to_string()))
    }

    /// Records `id` unless an id is recorded; returns the recorded one.
    pub(super) async fn record_store_id(&self, id: &str) -> Result<String, BlobError> {
        check_store_id(id)?;
        let put = self
            .inner
            .client
            .put_object()
            .bucket(&self.inner.bucket)
            .key(STORE_ID_KEY)
            .content_type("text/plain")
            .body(SdkStream::from(format!("{id}\n").into_bytes()))
            .if_none_match("*")
            .send()
            .await;
        match put {
            Ok(_) => Ok(id.to_string()),
            // Recorded first by someone else: theirs stands.
            Err(e) => match translate(e) {
                S3Failure::PreconditionFailed => self.read_store_id().await?.ok_or_else(|| {
                    BlobError::Unavailable(format!(
                        "s3://{}/{STORE_ID_KEY} exists but cannot be read yet; retry",
                        self.inner.bucket
                    ))
                }),
                other => Err(other.into_blob()),
            },
        }
    }
}
