//! S3 blob store (aws-sdk-s3), for AWS S3 in the China regions and for
//! S3-compatible stores (MinIO, Ceph) in Chinese data centres.
//!
//! - Uploads of unknown length: one PutObject below [`PART_SIZE`],
//!   multipart above it, parts sent as they fill (two in flight while the
//!   next one fills: memory per upload stays below three parts).
//! - Uploads of a declared length up to [`MAX_STREAMED_PUT`]: one PutObject
//!   whose body is fed as the client uploads, its last piece held back
//!   until commit.
//! - Any error, abort or drop (a cancelled client) aborts a multipart
//!   upload; if S3 cannot be reached the abort is retried in the background
//!   until it succeeds. The one upload left behind is one whose
//!   CreateMultipartUpload answer was lost (its id is unknown): the
//!   bucket's lifecycle rule for incomplete uploads removes it.
//! - Create-only writes send `If-None-Match: *` (PutObject and
//!   CompleteMultipartUpload).
//! - Reads: `open` is one ranged GET of the first 16 KiB, which also
//!   yields length, ETag, version and metadata; `open_whole` is one
//!   unranged GET serving both header and body. Other reads are ranged GETs
//!   pinned to the opened version (by version id on versioned buckets, else
//!   `If-Match: <etag>`) that fetch only the bytes asked for.
//! - Patches (key-slot rewrites) are stored in the object's metadata by a
//!   server-side CopyObject; the body never passes through the gateway.
//! - Deletes remove every version (ListObjectVersions, DeleteObjects).
//!
//! Every SDK error goes through [`error::translate`].
//!
//! Files:
//! - `mod.rs`: settings, the store, its constants and the [`BlobStore`]
//!   impl, which delegates the longer operations to the files below.
//! - `residency.rs`: [`S3StartError`] and the startup checks of the
//!   endpoint (before any network call) and of the bucket's location.
//! - `writer.rs`: multipart uploads, the streamed PutObject and the
//!   background retrier of multipart aborts.
//! - `reader.rs`: opening objects and reading them (prefix, live response,
//!   ranged GETs pinned to the opened version).
//! - `delete.rs`: deletes of every version of an object.
//! - `patch.rs`: the key-slot patch in object metadata, overlaid on reads,
//!   and the conditional CopyObject that rewrites it.
//! - `store_id.rs`: the bucket's deployment id ([`STORE_ID_KEY`]), written
//!   create-only.
//! - `error.rs`: the one translation of SDK errors.

mod delete;
pub mod error;
mod patch;
mod reader;
mod residency;
mod store_id;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;

pub use self::residency::S3StartError;
pub use self::store_id::STORE_ID_KEY;

use self::error::translate;
use self::writer::{AbortQueue, S3Writer};
use super::{
    BlobEntry, BlobError, BlobKey, BlobReader, BlobStore, BlobWriter, SlotRewrite, WriteMode,
};
use crate::crypto::envelope::KeySlot;

/// Size of a multipart part, and the threshold above which uploads are
/// multipart. S3 allows 5 MiB to 5 GiB per part and 10,000 parts, so objects
/// up to 80 GB fit; the gateway's own limit defaults to 1 GiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Multipart parts uploading at once per writer, while the next part
/// fills: memory per upload stays below `(PARTS_IN_FLIGHT + 1) * PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 2;
/// Metadata key that holds a patch: `<offset>:<hex bytes>`.
const PATCH_META: &str = "sealgate-patch";

/// Parses `value`, the patch metadata of an object, and overlays the patch
/// onto `data`, the object's bytes from offset `at`, as every read does.
/// Public only for the fuzz target of the patch parser (`fuzz/`) and its
/// regression tests.
///
/// # Errors
/// [`BlobError::Io`] for a malformed patch.
#[doc(hidden)]
pub fn overlay_patch(value: &str, at: u64, data: &mut [u8]) -> Result<(), BlobError> {
    let metadata = std::collections::HashMap::from([(PATCH_META.to_string(), value.to_string())]);
    if let Some(patch) = patch::Patch::parse(Some(&metadata))? {
        patch.apply(at, data);
    }
    Ok(())
}

/// Metadata key that holds the creation time, Unix milliseconds in decimal
/// (S3's own Last-Modified has whole seconds and moves on every patch).
const CREATED_META: &str = "sealgate-created";

/// The value of [`CREATED_META`].
fn created_meta(t: std::time::SystemTime) -> String {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string()
}

/// The creation time of a stored version: [`CREATED_META`], else (an object
/// written by something else) S3's Last-Modified.
fn created_of(
    metadata: Option<&std::collections::HashMap<String, String>>,
    last_modified: Option<&aws_sdk_s3::primitives::DateTime>,
) -> Option<std::time::SystemTime> {
    metadata
        .and_then(|m| m.get(CREATED_META))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .or_else(|| last_modified.and_then(|t| std::time::SystemTime::try_from(*t).ok()))
}
/// Bytes fetched by `open`: more than the header of any sealed object (at
/// most 8,396 bytes), so HeadObject, listings and range reads pay one small
/// GET for it. Whole reads (GetObject, items) use `open_whole` instead.
const PREFETCH: u64 = 16 * 1024;
/// How far past what is buffered a `read` may pull a live response (header
/// reads); anything larger is a ranged GET of its own.
const LIVE_READ_AHEAD: u64 = 1024 * 1024;
/// Known-length objects in this range are streamed as a single PutObject;
/// below it buffering costs nothing and keeps SDK retries, above it
/// multipart uploads retry per part.
const MIN_STREAMED_PUT: u64 = 1024 * 1024;
/// Largest object streamed as a single PutObject.
pub const MAX_STREAMED_PUT: u64 = 256 * 1024 * 1024;
/// DeleteObjects takes at most 1000 keys.
const DELETE_BATCH: usize = 1000;

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// The region the bucket must be in.
    pub region: String,
    /// Endpoint override (S3-compatible stores, tests).
    pub endpoint: Option<String>,
    /// Path-style addressing (MinIO, Ceph).
    pub force_path_style: bool,
    /// Static credentials; `None` uses the standard AWS provider chain.
    pub credentials: Option<(String, String)>,
}

/// The S3 store.
#[derive(Clone)]
pub struct S3BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    bucket: String,
    /// Whether the bucket has (or had) versioning on, so that deletes must
    /// remove every version; probed once at startup.
    versioned: bool,
    aborts: AbortQueue,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.inner.bucket)
            .finish_non_exhaustive()
    }
}

impl S3BlobStore {
    /// Connects and checks residency: first, before any network call, the
    /// endpoint's host and `settings.region` against the residency
    /// catalogue; then the bucket's actual location (GetBucketLocation)
    /// must equal `settings.region`.
    ///
    /// # Errors
    /// [`S3StartError`] if the endpoint or region is outside the
    /// catalogue, or the bucket is elsewhere or cannot be inspected.
    pub async fn connect(settings: &S3Settings) -> Result<Self, S3StartError> {
        residency::check_endpoint(settings)?;
        let shared = crate::aws::sdk_config(
            &settings.region,
            settings.credentials.as_ref(),
            Duration::from_secs(60),
        )
        .await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        residency::check_bucket_region(&client, settings).await?;
        let versioned = delete::probe_versioning(&client, &settings.bucket).await?;
        let bucket = settings.bucket.clone();
        let aborts = AbortQueue::start(client.clone(), bucket.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                bucket,
                versioned,
                aborts,
            }),
        })
    }
}

/// The object key of a blob: `{space}/{owner}/{name}`.
fn object_key(key: &BlobKey) -> Result<String, BlobError> {
    for part in [&key.space, &key.owner, &key.name] {
        super::check_segment(part)?;
    }
    Ok(format!("{}/{}/{}", key.space, key.owner, key.name))
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn create(
        &self,
        key: &BlobKey,
        mode: WriteMode,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(S3Writer::new(
            self.inner.clone(),
            object_key(key)?,
            mode,
            crate::blob::now_ms(),
        )))
    }

    /// Objects of a known length up to [`MAX_STREAMED_PUT`] go to S3 as one
    /// PutObject whose body is fed as the bytes are written: the upload to
    /// S3 overlaps the upload to the gateway, and memory stays at a few
    /// pieces. Larger objects use multipart uploads.
    async fn create_exact(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        self.create_exact_as_of(key, mode, len, crate::blob::now_ms())
            .await
    }

    async fn create_exact_as_of(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
        created: std::time::SystemTime,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        if !(MIN_STREAMED_PUT..=MAX_STREAMED_PUT).contains(&len) {
            let writer = S3Writer::new(self.inner.clone(), object_key(key)?, mode, created);
            return Ok(super::exact_len(Box::new(writer), len));
        }
        Ok(Box::new(self.start_streamed_put(key, mode, len, created)?))
    }

    async fn open(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        Ok(Box::new(self.open_reader(key).await?))
    }

    /// One unranged GET: the header is read from the front of the response
    /// and the body streamed from the rest of the same response.
    async fn open_whole(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        Ok(Box::new(self.open_whole_reader(key).await?))
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError> {
        self.delete_many(std::slice::from_ref(key))
            .await
            .map(|n| n > 0)
    }

    /// Lists every version (and delete marker) of each key, then removes
    /// them with DeleteObjects by version id. On an unversioned bucket the
    /// only version is `null`; on a versioned one nothing survives.
    async fn delete_many(&self, keys: &[BlobKey]) -> Result<u64, BlobError> {
        if self.inner.versioned {
            self.delete_versions(keys).await
        } else {
            self.delete_plain(keys).await
        }
    }

    async fn rewrite_key_slot(
        &self,
        key: &BlobKey,
        expected: &[u8; KeySlot::LEN],
        new: &[u8; KeySlot::LEN],
    ) -> Result<SlotRewrite, BlobError> {
        self.copy_with_key_slot(key, expected, new).await
    }

    async fn list(
        &self,
        space: &str,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobEntry>, BlobError> {
        super::check_segment(space)?;
        super::check_segment(owner)?;
        let prefix = format!("{space}/{owner}/");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        while out.len() < limit {
            let mut req = self
                .inner
                .client
                .list_objects_v2()
                .bucket(&self.inner.bucket)
                .prefix(&prefix)
                .max_keys(i32::try_from(limit - out.len()).unwrap_or(1000).min(1000));
            match &token {
                Some(t) => req = req.continuation_token(t),
                None => {
                    if let Some(a) = after {
                        req = req.start_after(format!("{prefix}{a}"));
                    }
                }
            }
            let page = req.send().await.map_err(|e| translate(e).into_blob())?;
            for o in page.contents() {
                let Some(name) = o.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                if super::check_segment(name).is_ok() {
                    out.push(BlobEntry {
                        name: name.to_string(),
                        len: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    fn location(&self) -> String {
        format!("s3://{}", self.inner.bucket)
    }

    async fn settle(&self) {
        self.inner.aborts.settled().await;
    }

    async fn store_id(&self) -> Result<Option<String>, BlobError> {
        self.read_store_id().await
    }

    /// A PutObject of [`STORE_ID_KEY`] with `If-None-Match: *`; on 412 the
    /// id recorded first is read back.
    async fn init_store_id(&self, id: &str) -> Result<String, BlobError> {
        self.record_store_id(id).await
    }
}
