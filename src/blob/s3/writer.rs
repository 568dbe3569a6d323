//! Writes: the multipart writer ([`S3Writer`], [`Upload`]), the streamed
//! PutObject of a declared length ([`StreamedPut`]) and the background
//! retrier of multipart aborts ([`abort_retrier`]).
//!
//! Streamed PutObject serves declared lengths from 1 MiB to
//! [`MAX_STREAMED_PUT`](super::MAX_STREAMED_PUT). Both the creation of a
//! multipart upload and its abort are cancellation-safe: a writer dropped
//! mid-request still hands the upload to the retrier. The retrier aborts
//! 16 at once, retries while S3 is unavailable, and gives up (logged once,
//! left to the bucket's lifecycle rule) on a refusal retrying cannot fix,
//! such as a 403; [`AbortQueue`] counts the uploads handed to it until
//! each is done, which the store's `settle` waits for at shutdown.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::mpsc;

use super::error::{translate, S3Failure};
use super::{
    created_meta, object_key, Inner, S3BlobStore, CREATED_META, PARTS_IN_FLIGHT, PART_SIZE,
};
use crate::blob::{BlobError, BlobKey, BlobWriter, WriteMode};

impl S3BlobStore {
    /// Starts the single PutObject of an object of declared length `len`
    /// (see `create_exact`): its body is fed by the returned writer.
    pub(super) fn start_streamed_put(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
        created: SystemTime,
    ) -> Result<StreamedPut, BlobError> {
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
            .metadata(CREATED_META, created_meta(created))
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
        let (client, bucket) = (self.inner.client.clone(), self.inner.bucket.clone());
        let create_only = mode == WriteMode::CreateOnly;
        let task = tokio::spawn(async move {
            let failure = match send.await {
                Ok(_) => return Ok(()),
                Err(e) => translate(e),
            };
            match failure {
                S3Failure::PreconditionFailed => Err(BlobError::AlreadyExists),
                // A server may refuse If-None-Match before it reads the body
                // and close the connection (s3s-fs does), which the SDK
                // reports as a failure to reach S3: ask whether the key is
                // taken, so the caller hears ALREADY_EXISTS, not "retry".
                S3Failure::Unavailable(m) if create_only => {
                    match client.head_object().bucket(bucket).key(object).send().await {
                        Ok(_) => Err(BlobError::AlreadyExists),
                        Err(_) => Err(BlobError::Unavailable(m)),
                    }
                }
                other => Err(other.into_blob()),
            }
        });
        Ok(StreamedPut {
            tx: Some(tx),
            task,
            held: None,
            remaining: len,
            created,
        })
    }
}

/// Longest wait between two attempts to abort one upload: an abort is one
/// small request, and the upload should go within seconds of S3's return.
const ABORT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Longest one abort attempt may take: an attempt that hangs (a connection
/// cut without a reset while S3 was away) must not hold the retries back
/// for the client's general 60 s.
const ABORT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Aborts at once at most this many multipart uploads (their tasks are
/// bounded; later ones wait in the queue).
const ABORTS_IN_FLIGHT: usize = 16;

/// How an abort ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AbortOutcome {
    /// S3 accepted, or the upload was already gone.
    Done,
    /// S3 refused in a way retrying cannot fix (access denied, a bucket
    /// that no longer exists): logged once, not retried.
    GaveUp,
}

/// The multipart uploads handed to the background retrier, and how many
/// of them it has not finished with (aborted or given up).
#[derive(Clone)]
pub(super) struct AbortQueue {
    tx: mpsc::UnboundedSender<(String, String)>,
    pending: Arc<tokio::sync::watch::Sender<usize>>,
}

impl AbortQueue {
    /// A queue and the retrier that empties it.
    pub(super) fn start(client: Client, bucket: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(tokio::sync::watch::Sender::new(0));
        tokio::spawn(abort_retrier(client, bucket, rx, pending.clone()));
        Self { tx, pending }
    }

    /// Hands `upload_id` of `key` to the retrier.
    pub(super) fn send(&self, key: String, upload_id: String) {
        self.pending.send_modify(|n| *n += 1);
        if self.tx.send((key, upload_id)).is_err() {
            self.pending.send_modify(|n| *n -= 1);
        }
    }

    /// Completes once every upload handed over is aborted or given up.
    pub(super) async fn settled(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }
}

/// Aborts multipart uploads handed to it, at most [`ABORTS_IN_FLIGHT`] at
/// once, each retried with capped backoff while S3 is unavailable.
async fn abort_retrier(
    client: Client,
    bucket: String,
    mut rx: mpsc::UnboundedReceiver<(String, String)>,
    pending: Arc<tokio::sync::watch::Sender<usize>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ABORTS_IN_FLIGHT));
    while let Some((key, upload_id)) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, bucket, pending) = (client.clone(), bucket.clone(), pending.clone());
        tokio::spawn(async move {
            abort_with_retries(&client, &bucket, &key, &upload_id).await;
            pending.send_modify(|n| *n = n.saturating_sub(1));
            drop(slot);
        });
    }
}

/// One abort, retried while S3 is unavailable.
pub(super) async fn abort_with_retries(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> AbortOutcome {
    let mut backoff = Duration::from_millis(200);
    loop {
        match abort_upload(client, bucket, key, upload_id).await {
            Ok(()) => return AbortOutcome::Done,
            Err(BlobError::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot abort a multipart upload yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ABORT_BACKOFF_MAX);
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "S3 refused to abort a multipart upload; not retrying (a bucket lifecycle rule for incomplete uploads cleans it up)"
                );
                return AbortOutcome::GaveUp;
            }
        }
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
        .customize()
        .config_override(
            aws_sdk_s3::config::Builder::default().timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(ABORT_ATTEMPT_TIMEOUT)
                    .build(),
            ),
        )
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

/// A CreateMultipartUpload whose answer the writer has not taken yet.
struct PendingCreate {
    task: Option<tokio::task::JoinHandle<Result<String, BlobError>>>,
    key: String,
    aborts: AbortQueue,
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let (key, aborts) = (self.key.clone(), self.aborts.clone());
            tokio::spawn(async move {
                if let Ok(Ok(id)) = task.await {
                    aborts.send(key, id);
                }
            });
        }
    }
}

pub(super) struct S3Writer {
    inner: Arc<Inner>,
    key: String,
    mode: WriteMode,
    buf: Vec<u8>,
    upload: Option<Upload>,
    created: SystemTime,
}

impl S3Writer {
    /// A writer for `key` that has sent nothing yet, of an object created
    /// at `created` (stored in its metadata).
    pub(super) fn new(
        inner: Arc<Inner>,
        key: String,
        mode: WriteMode,
        created: SystemTime,
    ) -> Self {
        Self {
            inner,
            key,
            mode,
            buf: Vec::new(),
            upload: None,
            created,
        }
    }

    /// Starts uploading one part; the next write may go on while it travels.
    /// CreateMultipartUpload, cancellation-safe: it runs as a task of its
    /// own, and if this future is dropped before the answer arrives (the
    /// client went away), the upload S3 created is handed to the abort
    /// retrier once its id is known, instead of being left behind.
    async fn create_upload(&self) -> Result<String, BlobError> {
        let request = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(&self.inner.bucket)
            .key(&self.key)
            .metadata(CREATED_META, created_meta(self.created))
            .send();
        let mut pending = PendingCreate {
            task: Some(tokio::spawn(async move {
                let created = request.await.map_err(|e| translate(e).into_blob())?;
                created.upload_id().map(str::to_string).ok_or_else(|| {
                    BlobError::Io(std::io::Error::other(
                        "CreateMultipartUpload returned no upload id",
                    ))
                })
            })),
            key: self.key.clone(),
            aborts: self.inner.aborts.clone(),
        };
        let task = pending.task.as_mut().expect("task set above");
        let result = task
            .await
            .unwrap_or_else(|e| Err(BlobError::Io(std::io::Error::other(e))));
        pending.task = None;
        result
    }

    async fn send_part(&mut self, data: Vec<u8>) -> Result<(), BlobError> {
        let c = &self.inner.client;
        if self.upload.is_none() {
            let id = self.create_upload().await?;
            self.upload = Some(Upload {
                id,
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
                .metadata(CREATED_META, created_meta(self.created))
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
        // The upload stays recorded until S3 has answered: if this future is
        // dropped meanwhile (the client went away during an abort), `Drop`
        // still hands the upload to the background retrier.
        let Some(upload) = self.upload.as_mut() else {
            return;
        };
        upload.cancel_in_flight();
        let id = upload.id.clone();
        let aborted = abort_upload(&self.inner.client, &self.inner.bucket, &self.key, &id)
            .await
            .is_ok();
        self.upload = None;
        if !aborted {
            self.inner.aborts.send(self.key.clone(), id);
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

    fn created(&self) -> SystemTime {
        self.created
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // A writer dropped mid-upload (the client went away): the upload
        // must not linger. The retrier aborts it in the background.
        if let Some(mut upload) = self.upload.take() {
            upload.cancel_in_flight();
            self.inner.aborts.send(self.key.clone(), upload.id);
        }
    }
}

/// A single PutObject fed while the object is written.
///
/// The last piece written is held back until `commit`: S3 stores the object
/// as soon as it has received the declared length, so sending everything
/// before the commit would make an aborted or dropped writer visible.
pub(super) struct StreamedPut {
    tx: Option<mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>>,
    task: tokio::task::JoinHandle<Result<(), BlobError>>,
    held: Option<Bytes>,
    remaining: u64,
    created: SystemTime,
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
            return Err(crate::blob::length_mismatch(true));
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
            return Err(crate::blob::length_mismatch(false));
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

    fn created(&self) -> SystemTime {
        self.created
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An S3 endpoint on loopback that answers every request with `status`
    /// and an S3 error `code`; the number of requests it got.
    async fn refusing_s3(status: &'static str, code: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let body = format!("<Error><Code>{code}</Code><Message>no</Message></Error>");
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}"), count)
    }

    fn client(endpoint: &str) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("cn-north-1"))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "k", "s", None, None, "test",
            ))
            .build();
        Client::from_conf(conf)
    }

    #[tokio::test]
    async fn aborts_refused_for_good_are_not_retried() {
        for (status, code) in [
            ("403 Forbidden", "AccessDenied"),
            ("400 Bad Request", "InvalidRequest"),
        ] {
            let (endpoint, count) = refusing_s3(status, code).await;
            let outcome = abort_with_retries(&client(&endpoint), "b", "k", "u").await;
            assert_eq!(outcome, AbortOutcome::GaveUp, "{status}");
            assert_eq!(count.load(Ordering::SeqCst), 1, "{status}: one request");
        }
        let (endpoint, count) = refusing_s3("404 Not Found", "NoSuchUpload").await;
        let outcome = abort_with_retries(&client(&endpoint), "b", "k", "u").await;
        assert_eq!(outcome, AbortOutcome::Done, "an upload already gone");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
