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
//!   until it succeeds, so no incomplete upload is left behind.
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

pub mod error;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, MetadataDirective, ObjectIdentifier,
};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::mpsc;

use self::error::{translate, S3Failure};
use super::{
    BlobEntry, BlobError, BlobKey, BlobReader, BlobStore, BlobWriter, ByteStream, WriteMode,
};

/// Size of a multipart part, and the threshold above which uploads are
/// multipart. S3 allows 5 MiB to 5 GiB per part and 10,000 parts, so objects
/// up to 80 GB fit; the gateway's own limit defaults to 1 GiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Multipart parts uploading at once per writer, while the next part
/// fills: memory per upload stays below `(PARTS_IN_FLIGHT + 1) * PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 2;
/// Metadata key that holds a patch: `<offset>:<hex bytes>`.
const PATCH_META: &str = "sealgate-patch";
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
    aborts: mpsc::UnboundedSender<(String, String)>,
}

impl std::fmt::Debug for S3BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BlobStore")
            .field("bucket", &self.inner.bucket)
            .finish_non_exhaustive()
    }
}

/// Why the S3 store could not start. Each message is one actionable line.
#[derive(Debug, thiserror::Error)]
pub enum S3StartError {
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

impl S3BlobStore {
    /// Connects and checks residency: the bucket's actual location
    /// (GetBucketLocation) must equal `settings.region`.
    ///
    /// # Errors
    /// [`S3StartError`] if the bucket is elsewhere or cannot be inspected.
    pub async fn connect(settings: &S3Settings) -> Result<Self, S3StartError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
        if let Some((id, secret)) = &settings.credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "sealgate-static",
            ));
        }
        let shared = loader.load().await;
        let mut builder =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
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
        let (aborts, rx) = mpsc::unbounded_channel();
        tokio::spawn(abort_retrier(client.clone(), bucket.clone(), rx));
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                bucket,
                aborts,
            }),
        })
    }

    /// Opens an object with one request: a ranged GET of its first
    /// [`PREFETCH`] bytes, whose response also carries the total length,
    /// ETag, version id and metadata; reads beyond it are ranged GETs.
    async fn open_reader(&self, key: &BlobKey) -> Result<S3Reader, BlobError> {
        let object = object_key(key)?;
        let got = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(&object)
            .range(format!("bytes=0-{}", PREFETCH - 1))
            .send()
            .await;
        let out = match got {
            Ok(out) => out,
            // Only an empty object has no byte 0.
            Err(e) => match translate(e) {
                S3Failure::InvalidRange => return self.open_empty(object).await,
                other => return Err(other.into_blob()),
            },
        };
        let len = out
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.parse::<u64>().ok())
            .or_else(|| out.content_length().and_then(|l| u64::try_from(l).ok()))
            .ok_or_else(|| BlobError::Io(std::io::Error::other("S3 response without a length")))?;
        let identity = (out.e_tag(), out.version_id(), out.metadata());
        let mut reader = S3Reader::new(self.inner.clone(), object, len, identity, None)?;
        let mut prefix = out
            .body
            .collect()
            .await
            .map_err(|e| BlobError::Unavailable(format!("reading from S3: {e}")))?
            .into_bytes()
            .to_vec();
        if prefix.len() as u64 != len.min(PREFETCH) {
            return Err(BlobError::Unavailable("S3 returned a short read".into()));
        }
        if let Some(p) = &reader.patch {
            p.apply(0, &mut prefix);
        }
        reader.prefix = prefix;
        Ok(reader)
    }

    async fn open_empty(&self, object: String) -> Result<S3Reader, BlobError> {
        let head = self
            .inner
            .client
            .head_object()
            .bucket(&self.inner.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|e| translate(e).into_blob())?;
        S3Reader::new(
            self.inner.clone(),
            object,
            u64::try_from(head.content_length().unwrap_or(0)).unwrap_or(0),
            (head.e_tag(), head.version_id(), head.metadata()),
            None,
        )
    }
}

/// The object key of a blob: `{space}/{owner}/{name}`.
fn object_key(key: &BlobKey) -> Result<String, BlobError> {
    for part in [&key.space, &key.owner, &key.name] {
        super::check_segment(part)?;
    }
    Ok(format!("{}/{}/{}", key.space, key.owner, key.name))
}

/// Aborts multipart uploads handed to it, retrying each with capped
/// backoff until S3 accepts (or says the upload is already gone).
async fn abort_retrier(
    client: Client,
    bucket: String,
    mut rx: mpsc::UnboundedReceiver<(String, String)>,
) {
    while let Some((key, upload_id)) = rx.recv().await {
        let (client, bucket) = (client.clone(), bucket.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match abort_upload(&client, &bucket, &key, &upload_id).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot abort a multipart upload yet; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }
}

async fn abort_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), BlobError> {
    match client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => match translate(e) {
            // Already completed or aborted: nothing is left.
            S3Failure::NotFound => Ok(()),
            other => Err(other.into_blob()),
        },
    }
}

fn identifier(key: &str, version: Option<&str>) -> Result<ObjectIdentifier, BlobError> {
    ObjectIdentifier::builder()
        .key(key)
        .set_version_id(version.map(str::to_string))
        .build()
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))
}

/// A parsed patch from object metadata.
#[derive(Debug, Clone)]
struct Patch {
    offset: u64,
    bytes: Vec<u8>,
}

impl Patch {
    fn parse(meta: Option<&HashMap<String, String>>) -> Result<Option<Self>, BlobError> {
        let Some(raw) = meta.and_then(|m| m.get(PATCH_META)) else {
            return Ok(None);
        };
        let bad = || BlobError::Io(std::io::Error::other("malformed sealgate-patch metadata"));
        let (offset, hex_bytes) = raw.split_once(':').ok_or_else(bad)?;
        Ok(Some(Self {
            offset: offset.parse().map_err(|_| bad())?,
            bytes: hex::decode(hex_bytes).map_err(|_| bad())?,
        }))
    }

    fn encode(&self) -> String {
        format!("{}:{}", self.offset, hex::encode(&self.bytes))
    }

    /// Overlays the patch onto `data`, which holds object bytes from `at`.
    fn apply(&self, at: u64, data: &mut [u8]) {
        let end = at + data.len() as u64;
        let p_end = self.offset + self.bytes.len() as u64;
        let (lo, hi) = (self.offset.max(at), p_end.min(end));
        if lo < hi {
            let src = &self.bytes[(lo - self.offset) as usize..(hi - self.offset) as usize];
            data[(lo - at) as usize..(hi - at) as usize].copy_from_slice(src);
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn create(
        &self,
        key: &BlobKey,
        mode: WriteMode,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(S3Writer {
            inner: self.inner.clone(),
            key: object_key(key)?,
            mode,
            buf: Vec::new(),
            upload: None,
        }))
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
        if !(MIN_STREAMED_PUT..=MAX_STREAMED_PUT).contains(&len) {
            return Ok(super::exact_len(self.create(key, mode).await?, len));
        }
        let object = object_key(key)?;
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let body = SdkStream::from_body_1_x(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let mut req = self
            .inner
            .client
            .put_object()
            .bucket(&self.inner.bucket)
            .key(&object)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(body);
        if mode == WriteMode::CreateOnly {
            req = req.if_none_match("*");
        }
        // A streamed body cannot be hashed in advance: no request checksum
        // (the payload is AEAD ciphertext, authenticated end to end anyway).
        let send = req
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().request_checksum_calculation(
                    aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                ),
            )
            .send();
        let task = tokio::spawn(async move {
            send.await.map(|_| ()).map_err(|e| match translate(e) {
                S3Failure::PreconditionFailed => BlobError::AlreadyExists,
                other => other.into_blob(),
            })
        });
        Ok(Box::new(StreamedPut {
            tx: Some(tx),
            task,
            held: None,
            remaining: len,
        }))
    }

    async fn open(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        Ok(Box::new(self.open_reader(key).await?))
    }

    /// One unranged GET: the header is read from the front of the response
    /// and the body streamed from the rest of the same response.
    async fn open_whole(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        let object = object_key(key)?;
        let out = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(&object)
            .send()
            .await
            .map_err(|e| translate(e).into_blob())?;
        let len = out
            .content_length()
            .and_then(|l| u64::try_from(l).ok())
            .ok_or_else(|| BlobError::Io(std::io::Error::other("S3 response without a length")))?;
        let identity = (out.e_tag(), out.version_id(), out.metadata());
        let mut reader = S3Reader::new(self.inner.clone(), object, len, identity, None)?;
        reader.live = Some(out.body);
        Ok(Box::new(reader))
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

    async fn patch(&self, key: &BlobKey, offset: u64, bytes: &[u8]) -> Result<(), BlobError> {
        super::check_patch(offset, bytes.len())?;
        let object = object_key(key)?;
        let mut reader = self.open_reader(key).await?;
        if offset + bytes.len() as u64 > reader.len {
            return Err(BlobError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "patch past the end of the object",
            )));
        }
        let old = reader.patch.clone();
        let reader_etag = reader.etag.clone();
        // One patch region per object: the union of the old and the new,
        // read through the old patch and overlaid with the new bytes.
        let new_end = offset + bytes.len() as u64;
        let (start, end) = match &old {
            Some(p) => (
                p.offset.min(offset),
                (p.offset + p.bytes.len() as u64).max(new_end),
            ),
            None => (offset, new_end),
        };
        let mut region = reader.read(start..end).await?.to_vec();
        region[(offset - start) as usize..(new_end - start) as usize].copy_from_slice(bytes);
        let patch = Patch {
            offset: start,
            bytes: region,
        };
        let mut copy = self
            .inner
            .client
            .copy_object()
            .bucket(&self.inner.bucket)
            .key(&object)
            .copy_source(format!("{}/{}", self.inner.bucket, object))
            .metadata_directive(MetadataDirective::Replace)
            .metadata(PATCH_META, patch.encode());
        if let Some(etag) = reader_etag {
            // Never clobber an object replaced since it was read.
            copy = copy.copy_source_if_match(etag);
        }
        copy.send().await.map_err(|e| match translate(e) {
            S3Failure::PreconditionFailed => {
                BlobError::Unavailable("object changed while being patched; retry".into())
            }
            other => other.into_blob(),
        })?;
        Ok(())
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
}

struct Upload {
    id: String,
    /// Parts sent and acknowledged, in order.
    parts: Vec<CompletedPart>,
    /// Parts on their way, oldest first; at most [`PARTS_IN_FLIGHT`].
    in_flight:
        std::collections::VecDeque<tokio::task::JoinHandle<Result<CompletedPart, BlobError>>>,
}

impl Upload {
    /// Waits for the oldest part in flight.
    async fn settle_oldest(&mut self) -> Result<(), BlobError> {
        if let Some(task) = self.in_flight.pop_front() {
            let part = task
                .await
                .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
            self.parts.push(part);
        }
        Ok(())
    }

    /// Stops every part still on its way.
    fn cancel_in_flight(&mut self) {
        for task in self.in_flight.drain(..) {
            task.abort();
        }
    }
}

struct S3Writer {
    inner: Arc<Inner>,
    key: String,
    mode: WriteMode,
    buf: Vec<u8>,
    upload: Option<Upload>,
}

impl S3Writer {
    /// Starts uploading one part; the next write may go on while it travels.
    async fn send_part(&mut self, data: Vec<u8>) -> Result<(), BlobError> {
        let c = &self.inner.client;
        if self.upload.is_none() {
            let created = c
                .create_multipart_upload()
                .bucket(&self.inner.bucket)
                .key(&self.key)
                .send()
                .await
                .map_err(|e| translate(e).into_blob())?;
            let id = created.upload_id().ok_or_else(|| {
                BlobError::Io(std::io::Error::other(
                    "CreateMultipartUpload returned no upload id",
                ))
            })?;
            self.upload = Some(Upload {
                id: id.to_string(),
                parts: Vec::new(),
                in_flight: std::collections::VecDeque::new(),
            });
        }
        let upload = self.upload.as_mut().expect("upload started above");
        if upload.in_flight.len() >= PARTS_IN_FLIGHT {
            upload.settle_oldest().await?;
        }
        let number =
            i32::try_from(upload.parts.len() + upload.in_flight.len() + 1).unwrap_or(i32::MAX);
        let request = c
            .upload_part()
            .bucket(&self.inner.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .part_number(number)
            .body(SdkStream::from(data))
            .send();
        upload.in_flight.push_back(tokio::spawn(async move {
            let out = request.await.map_err(|e| translate(e).into_blob())?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build())
        }));
        Ok(())
    }

    async fn try_commit(&mut self) -> Result<(), BlobError> {
        let c = self.inner.client.clone();
        let create_only = self.mode == WriteMode::CreateOnly;
        let precondition = |f: S3Failure| match f {
            S3Failure::PreconditionFailed => BlobError::AlreadyExists,
            other => other.into_blob(),
        };
        if self.upload.is_none() {
            let body = std::mem::take(&mut self.buf);
            let mut req = c
                .put_object()
                .bucket(&self.inner.bucket)
                .key(&self.key)
                .body(SdkStream::from(body));
            if create_only {
                req = req.if_none_match("*");
            }
            req.send().await.map_err(|e| precondition(translate(e)))?;
            return Ok(());
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send_part(last).await?;
        }
        let upload = self.upload.as_mut().expect("multipart upload");
        while !upload.in_flight.is_empty() {
            upload.settle_oldest().await?;
        }
        let mut req = c
            .complete_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(&self.key)
            .upload_id(&upload.id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(upload.parts.clone()))
                    .build(),
            );
        if create_only {
            req = req.if_none_match("*");
        }
        req.send().await.map_err(|e| precondition(translate(e)))?;
        self.upload = None;
        Ok(())
    }

    /// Aborts now if S3 answers, else hands the abort to the retrier.
    async fn abort_upload(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            upload.cancel_in_flight();
            if abort_upload(
                &self.inner.client,
                &self.inner.bucket,
                &self.key,
                &upload.id,
            )
            .await
            .is_err()
            {
                let _ = self.inner.aborts.send((self.key.clone(), upload.id));
            }
        }
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= PART_SIZE {
            let rest = self.buf.split_off(PART_SIZE);
            let part = std::mem::replace(&mut self.buf, rest);
            if let Err(e) = self.send_part(part).await {
                self.abort_upload().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), BlobError> {
        let result = self.try_commit().await;
        if result.is_err() {
            self.abort_upload().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BlobError> {
        self.abort_upload().await;
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // A writer dropped mid-upload (the client went away): the upload
        // must not linger. The retrier aborts it in the background.
        if let Some(mut upload) = self.upload.take() {
            upload.cancel_in_flight();
            let _ = self.inner.aborts.send((self.key.clone(), upload.id));
        }
    }
}

/// A single PutObject fed while the object is written.
///
/// The last piece written is held back until `commit`: S3 stores the object
/// as soon as it has received the declared length, so sending everything
/// before the commit would make an aborted or dropped writer visible.
struct StreamedPut {
    tx: Option<mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>>,
    task: tokio::task::JoinHandle<Result<(), BlobError>>,
    held: Option<Bytes>,
    remaining: u64,
}

impl StreamedPut {
    /// Sends a piece of the body; on failure, the request's own error.
    async fn send(&mut self, piece: Bytes) -> Result<(), BlobError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(Ok(Frame::data(piece))).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        self.tx = None;
        Err(match (&mut self.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => BlobError::Unavailable("S3 upload ended before its body".into()),
            Err(e) => BlobError::Io(std::io::Error::other(e)),
        })
    }
}

#[async_trait]
impl BlobWriter for StreamedPut {
    async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        if data.len() as u64 > self.remaining {
            self.task.abort();
            return Err(super::length_mismatch(true));
        }
        self.remaining -= data.len() as u64;
        if let Some(previous) = self.held.replace(Bytes::copy_from_slice(data)) {
            self.send(previous).await?;
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), BlobError> {
        if self.remaining != 0 {
            // The request never completes its declared length: S3 stores
            // nothing.
            self.task.abort();
            return Err(super::length_mismatch(false));
        }
        if let Some(last) = self.held.take() {
            self.send(last).await?;
        }
        self.tx = None;
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(BlobError::Io(std::io::Error::other(e))),
        }
    }

    async fn abort(self: Box<Self>) -> Result<(), BlobError> {
        self.task.abort();
        Ok(())
    }
}

impl Drop for StreamedPut {
    fn drop(&mut self) {
        // The held piece never leaves, so the body stays short of its
        // declared length; aborting the task also closes the connection at
        // once. Either way S3 stores nothing.
        if !self.task.is_finished() {
            self.task.abort();
        }
    }
}

struct S3Reader {
    inner: Arc<Inner>,
    key: String,
    len: u64,
    etag: Option<String>,
    /// On a versioned bucket, reads are pinned to the version opened.
    version: Option<String>,
    patch: Option<Patch>,
    /// The object's first bytes (patch applied), fetched by `open`.
    prefix: Vec<u8>,
    /// For `open_whole`: the rest of the one response that returns the
    /// whole object, continuing right after `prefix`.
    live: Option<SdkStream>,
}

/// What a response says of the object version it comes from: ETag,
/// version id, metadata.
type VersionInfo<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a HashMap<String, String>>,
);

impl S3Reader {
    fn new(
        inner: Arc<Inner>,
        key: String,
        len: u64,
        (etag, version, metadata): VersionInfo<'_>,
        live: Option<SdkStream>,
    ) -> Result<Self, BlobError> {
        Ok(Self {
            inner,
            key,
            len,
            etag: etag.map(str::to_string),
            version: version.filter(|v| *v != "null").map(str::to_string),
            patch: Patch::parse(metadata)?,
            prefix: Vec::new(),
            live,
        })
    }

    /// Pulls the live response into `prefix` until it holds `end` bytes.
    async fn fill_to(&mut self, end: u64) -> Result<(), BlobError> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        while (self.prefix.len() as u64) < end {
            let at = self.prefix.len() as u64;
            match live.next().await {
                Some(Ok(bytes)) => {
                    self.prefix.extend_from_slice(&bytes);
                    if let Some(p) = &self.patch {
                        p.apply(at, &mut self.prefix[at as usize..]);
                    }
                }
                Some(Err(e)) => {
                    return Err(BlobError::Unavailable(format!("reading from S3: {e}")))
                }
                None => return Err(BlobError::Unavailable("S3 returned a short read".into())),
            }
        }
        Ok(())
    }

    async fn get(&self, range: &Range<u64>) -> Result<SdkStream, BlobError> {
        let mut req = self
            .inner
            .client
            .get_object()
            .bucket(&self.inner.bucket)
            .key(&self.key)
            .range(format!("bytes={}-{}", range.start, range.end - 1));
        // Pin the reads to the object that was opened: by version id where
        // the bucket keeps versions, else by ETag (a replaced object then
        // fails the read instead of mixing two versions' bytes).
        if let Some(version) = &self.version {
            req = req.version_id(version);
        } else if let Some(etag) = &self.etag {
            req = req.if_match(etag);
        }
        let out = req.send().await.map_err(|e| match translate(e) {
            S3Failure::PreconditionFailed => {
                BlobError::Unavailable("object changed while being read; retry".into())
            }
            other => other.into_blob(),
        })?;
        Ok(out.body)
    }

    fn check(&self, range: &Range<u64>) -> Result<(), BlobError> {
        if range.start > range.end || range.end > self.len {
            return Err(BlobError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the object",
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl BlobReader for S3Reader {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read(&mut self, range: Range<u64>) -> Result<Bytes, BlobError> {
        self.check(&range)?;
        if self.live.is_some()
            && range.end.saturating_sub(self.prefix.len() as u64) <= LIVE_READ_AHEAD
        {
            self.fill_to(range.end).await?;
        }
        if range.end <= self.prefix.len() as u64 {
            return Ok(Bytes::copy_from_slice(
                &self.prefix[range.start as usize..range.end as usize],
            ));
        }
        self.live = None;
        let body = self.get(&range).await?;
        let data = body
            .collect()
            .await
            .map_err(|e| BlobError::Unavailable(format!("reading from S3: {e}")))?
            .into_bytes();
        if data.len() as u64 != range.end - range.start {
            return Err(BlobError::Unavailable("S3 returned a short read".into()));
        }
        Ok(match &self.patch {
            Some(p) => {
                let mut v = data.to_vec();
                p.apply(range.start, &mut v);
                Bytes::from(v)
            }
            None => data,
        })
    }

    async fn stream(&mut self, range: Range<u64>) -> Result<ByteStream, BlobError> {
        self.check(&range)?;
        // What is already in memory is served from there; the rest comes
        // from the live response if it continues exactly there, else from a
        // new ranged GET.
        let cached = self.prefix.len() as u64;
        let head = if range.start < cached {
            let piece = Bytes::copy_from_slice(
                &self.prefix[range.start as usize..range.end.min(cached) as usize],
            );
            futures_util::stream::iter(Some(Ok(piece)))
        } else {
            futures_util::stream::iter(None)
        };
        let rest = range.start.max(cached)..range.end;
        if rest.is_empty() {
            return Ok(Box::pin(head));
        }
        let body = match self.live.take() {
            Some(live) if rest.start == cached => live,
            _ => self.get(&rest).await?,
        };
        let patch = self.patch.clone();
        let end = rest.end;
        let stream = futures_util::stream::unfold((body, rest.start), move |(mut body, at)| {
            let patch = patch.clone();
            async move {
                if at >= end {
                    return None;
                }
                match body.next().await {
                    Some(Ok(bytes)) => {
                        // A live response runs to the object's end; stop at ours.
                        let mut piece = bytes.slice(..bytes.len().min((end - at) as usize));
                        if let Some(p) = &patch {
                            let mut v = piece.to_vec();
                            p.apply(at, &mut v);
                            piece = Bytes::from(v);
                        }
                        let next = at + piece.len() as u64;
                        Some((Ok(piece), (body, next)))
                    }
                    Some(Err(e)) => Some((
                        Err(BlobError::Unavailable(format!("reading from S3: {e}"))),
                        (body, end),
                    )),
                    None => Some((
                        Err(BlobError::Unavailable("S3 returned a short read".into())),
                        (body, end),
                    )),
                }
            }
        });
        Ok(Box::pin(head.chain(stream)))
    }
}
