//! Reads: opening an object (`open_reader`, `open_empty`,
//! `open_whole_reader`) and [`S3Reader`], which serves reads from the
//! fetched prefix, the live response of a whole read, or ranged GETs pinned
//! to the opened version, with the patch overlaid.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use bytes::Bytes;
use futures_util::StreamExt;

use super::error::{translate, S3Failure};
use super::patch::Patch;
use super::{object_key, Inner, S3BlobStore, LIVE_READ_AHEAD, PREFETCH};
use crate::blob::{BlobError, BlobKey, BlobReader, ByteStream};

impl S3BlobStore {
    /// Opens an object with one request: a ranged GET of its first
    /// [`PREFETCH`] bytes, whose response also carries the total length,
    /// ETag, version id and metadata; reads beyond it are ranged GETs.
    pub(super) async fn open_reader(&self, key: &BlobKey) -> Result<S3Reader, BlobError> {
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
        let identity = (
            out.e_tag(),
            out.version_id(),
            out.metadata(),
            out.last_modified(),
        );
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
            (
                head.e_tag(),
                head.version_id(),
                head.metadata(),
                head.last_modified(),
            ),
            None,
        )
    }

    /// One unranged GET (see `open_whole`): the reader serves the header
    /// from the front of the response and streams the body from the rest.
    pub(super) async fn open_whole_reader(&self, key: &BlobKey) -> Result<S3Reader, BlobError> {
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
        let identity = (
            out.e_tag(),
            out.version_id(),
            out.metadata(),
            out.last_modified(),
        );
        let mut reader = S3Reader::new(self.inner.clone(), object, len, identity, None)?;
        reader.live = Some(out.body);
        Ok(reader)
    }
}

pub(super) struct S3Reader {
    inner: Arc<Inner>,
    key: String,
    pub(super) len: u64,
    pub(super) etag: Option<String>,
    /// On a versioned bucket, reads are pinned to the version opened.
    version: Option<String>,
    pub(super) patch: Option<Patch>,
    /// The object's first bytes (patch applied), fetched by `open`.
    prefix: Vec<u8>,
    /// When this version was created.
    created: Option<std::time::SystemTime>,
    /// For `open_whole`: the rest of the one response that returns the
    /// whole object, continuing right after `prefix`.
    live: Option<SdkStream>,
}

/// What a response says of the object version it comes from: ETag,
/// version id, metadata, last modified.
type VersionInfo<'a> = (
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a HashMap<String, String>>,
    Option<&'a aws_sdk_s3::primitives::DateTime>,
);

impl S3Reader {
    fn new(
        inner: Arc<Inner>,
        key: String,
        len: u64,
        (etag, version, metadata, last_modified): VersionInfo<'_>,
        live: Option<SdkStream>,
    ) -> Result<Self, BlobError> {
        Ok(Self {
            inner,
            key,
            len,
            etag: etag.map(str::to_string),
            version: version.filter(|v| *v != "null").map(str::to_string),
            patch: Patch::parse(metadata)?,
            created: super::created_of(metadata, last_modified),
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

    fn created(&self) -> Option<std::time::SystemTime> {
        self.created
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
