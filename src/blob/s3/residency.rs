//! Residency at startup: [`S3StartError`] and the checks made by
//! [`S3BlobStore::connect`](super::S3BlobStore::connect): the endpoint and
//! region against the residency catalogue before the client is built
//! ([`check_endpoint`]), then that the bucket is in the configured region.

use aws_sdk_s3::Client;

use super::error::translate;
use super::S3Settings;
use crate::blob::BlobError;

/// Why the S3 store could not start. Each message is one actionable line.
#[derive(Debug, thiserror::Error)]
pub enum S3StartError {
    /// The endpoint or region is outside the residency catalogue
    /// ([`crate::residency::check`]); refused before any network call.
    #[error("{0}")]
    Endpoint(String),
    /// The bucket is not where the configuration says (residency).
    #[error(
        "residency: bucket {bucket:?} is in region {actual:?}, but blob.region is {configured:?}; \
         use a bucket in an allowed China region"
    )]
    WrongBucketRegion {
        /// Bucket.
        bucket: String,
        /// Where it is.
        actual: String,
        /// Where it should be.
        configured: String,
    },
    /// The bucket cannot be reached or inspected.
    #[error("s3: cannot inspect bucket {bucket:?}: {source}")]
    Bucket {
        /// Bucket.
        bucket: String,
        /// Why.
        source: BlobError,
    },
}

/// Checks the endpoint's host and the region against the residency
/// catalogue ([`crate::residency::check`], the whole catalogue: the
/// configuration's validation narrows it to `residency.allowed_regions`)
/// before any client exists, so that no request can leave for a host
/// outside the mainland whoever calls [`S3BlobStore::connect`](super::S3BlobStore::connect).
pub(super) fn check_endpoint(settings: &S3Settings) -> Result<(), S3StartError> {
    crate::residency::check(settings.endpoint.as_deref(), &settings.region, &[])
        .map(drop)
        .map_err(S3StartError::Endpoint)
}

/// Checks that the bucket's actual location (GetBucketLocation) equals
/// `settings.region`.
pub(super) async fn check_bucket_region(
    client: &Client,
    settings: &S3Settings,
) -> Result<(), S3StartError> {
    let bucket = settings.bucket.clone();
    let err = |source| S3StartError::Bucket {
        bucket: bucket.clone(),
        source,
    };
    let location = client
        .get_bucket_location()
        .bucket(&bucket)
        .send()
        .await
        .map_err(|e| err(translate(e).into_blob()))?;
    // An empty LocationConstraint means us-east-1.
    let actual = location
        .location_constraint()
        .map(|c| c.as_str().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "us-east-1".to_string());
    if actual != settings.region {
        return Err(S3StartError::WrongBucketRegion {
            bucket,
            actual,
            configured: settings.region.clone(),
        });
    }
    Ok(())
}
