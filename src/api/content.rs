//! ContentService: the gRPC face of [`Content`]. Converts proto messages to
//! domain calls and back; every rule lives in [`crate::content`].
//!
//! What is left here are the transport's own bounds: a PutObject holds one
//! of `limits.max_concurrent_uploads` permits for its whole stream
//! (RESOURCE_EXHAUSTED `TOO_MANY_UPLOADS` without one); a GetObject is its
//! info, then the object's [`download`]; batch reads keep their encoded response within
//! `limits.max_response_bytes`, failing the items past it on their own
//! (`RESPONSE_BUDGET`).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::auth::Caller;
use super::download::download;
use super::limits::{PacedStream, StreamPace};
use super::pb;
use crate::content::{ByteRange, Content, ObjectInfo, ObjectRef, UploadPart, WriteOptions};
use crate::crypto::Metadata;
use crate::error::{Error, Reason};
use crate::signed_read::SignedReads;

/// SignRead's part: the links' maker and the listener's public address.
struct Reads {
    reads: Arc<SignedReads>,
    public_url: String,
}

/// The ContentService implementation.
pub struct ContentApi {
    content: Arc<Content>,
    /// Signed HTTP reads; `None` without an HTTP listener.
    reads: Option<Reads>,
    /// One permit per upload in progress (`limits.max_concurrent_uploads`).
    uploads: Arc<tokio::sync::Semaphore>,
    max_uploads: usize,
    /// The pace uploads and downloads must keep.
    pace: StreamPace,
}

impl ContentApi {
    /// Wraps the content service; at most `max_uploads` PutObject streams
    /// at once, each upload and download keeping `pace`.
    pub fn new(content: Arc<Content>, max_uploads: usize, pace: StreamPace) -> Self {
        Self {
            content,
            reads: None,
            uploads: Arc::new(tokio::sync::Semaphore::new(max_uploads)),
            max_uploads,
            pace,
        }
    }

    /// With SignRead served by `reads`, for the HTTP listener at
    /// `public_url` (`http.public_url`, may be empty).
    #[must_use]
    pub fn with_signed_reads(mut self, reads: Arc<SignedReads>, public_url: &str) -> Self {
        self.reads = Some(Reads {
            reads,
            public_url: public_url.trim_end_matches('/').to_string(),
        });
        self
    }

    /// The validated ref of a request's object, once its caller may use
    /// the object's space.
    async fn object_ref(
        &self,
        caller: &Caller,
        r: Option<pb::ObjectRef>,
    ) -> Result<ObjectRef, Error> {
        let r = r.ok_or_else(|| {
            Error::invalid(Reason::InvalidRequest, "object", "object is required")
        })?;
        caller.check_space(&r.space).await?;
        self.content.object_ref(&r.user_id, &r.space, &r.object_id)
    }
}

fn info_pb(info: ObjectInfo) -> pb::ObjectInfo {
    pb::ObjectInfo {
        space: info.space,
        object_id: info.object_id,
        size: info.size,
        content_type: info.metadata.content_type,
        attributes: info.metadata.attributes.into_iter().collect(),
        etag: info.etag,
        create_time: info.created.map(prost_types::Timestamp::from),
        suite: info.suite.map(|s| s.name().to_string()).unwrap_or_default(),
    }
}

/// The write options of a PutObject header or PutItem; empty strings are
/// absent.
fn write_options(request_id: String, if_absent: bool, if_match: String) -> WriteOptions {
    WriteOptions {
        if_absent,
        if_match: Some(if_match).filter(|s| !s.is_empty()),
        request_id: Some(request_id).filter(|s| !s.is_empty()),
    }
}

fn metadata(
    content_type: String,
    attributes: std::collections::HashMap<String, String>,
) -> Metadata {
    Metadata {
        content_type,
        attributes: attributes.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// An upload's messages, which must keep the pace from the call's start.
type UploadStream =
    PacedStream<Streaming<pb::PutObjectRequest>, pb::PutObjectRequest, fn(&Status) -> Error>;

/// The plaintext bytes a PutObject message carries.
fn upload_bytes(m: &pb::PutObjectRequest) -> usize {
    match &m.part {
        Some(pb::put_object_request::Part::Data(d)) => d.len(),
        _ => 0,
    }
}

/// The messages after a PutObject header: data, then the finish.
fn upload_body(
    stream: UploadStream,
) -> impl Stream<Item = Result<UploadPart, Error>> + Unpin + Send {
    stream.map(|m| match m {
        Ok(pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Data(d)),
        }) => {
            if d.len() > super::codec::MAX_PIECE_BYTES {
                return Err(super::codec::piece_too_large(d.len()));
            }
            crate::metrics::get().bytes_in(d.len() as u64);
            Ok(UploadPart::Data(d))
        }
        Ok(pb::PutObjectRequest {
            part: Some(pb::put_object_request::Part::Finish(f)),
        }) => {
            let sha256 = match f.sha256.len() {
                0 => None,
                32 => Some(f.sha256[..].try_into().expect("32 bytes")),
                n => {
                    return Err(Error::invalid(
                        Reason::InvalidRequest,
                        "finish.sha256",
                        format!("finish.sha256 must be empty or 32 bytes, got {n}"),
                    ))
                }
            };
            Ok(UploadPart::Finish { sha256 })
        }
        Ok(_) => Err(Error::invalid(
            Reason::InvalidRequest,
            "part",
            "only the first message may be a header",
        )),
        Err(e) => Err(e),
    })
}

/// A failed read of an upload stream: tonic reports a message over the
/// decoding limit as OUT_OF_RANGE; a message that does not decode comes
/// from [`super::codec`] already classified; anything else (a reset
/// stream) is the caller's.
fn stream_error(status: &Status) -> Error {
    if super::codec::is_message_too_large(status) {
        super::codec::message_too_large()
    } else {
        Error::invalid(
            Reason::InvalidRequest,
            "part",
            format!("upload stream failed: {}", status.message()),
        )
    }
}

type GetStream = Pin<Box<dyn Stream<Item = Result<pb::GetObjectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::content_service_server::ContentService for ContentApi {
    async fn put_object(
        &self,
        request: Request<Streaming<pb::PutObjectRequest>>,
    ) -> Result<Response<pb::PutObjectResponse>, Status> {
        let caller = Caller::of(&request)?;
        // Held until the upload ends, however it ends.
        let _upload = self.uploads.clone().try_acquire_owned().map_err(|_| {
            Error::too_large(
                Reason::TooManyUploads,
                format!(
                    "{} uploads are in progress, the limit (limits.max_concurrent_uploads); retry later",
                    self.max_uploads
                ),
            )
        })?;
        // A client that stops sending, or trickles, is ended here, its
        // upload aborted and its permit returned.
        let mut stream: UploadStream = PacedStream::new(
            request.into_inner(),
            self.pace,
            upload_bytes,
            stream_error as fn(&Status) -> Error,
        );
        let first = stream.next().await.transpose()?;
        let header = match first {
            Some(pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Header(h)),
            }) => h,
            Some(_) => {
                return Err(Error::invalid(
                    Reason::InvalidRequest,
                    "header",
                    "the first message must be a header",
                )
                .into())
            }
            None => {
                return Err(Error::invalid(
                    Reason::InvalidRequest,
                    "header",
                    "empty upload: the first message must be a header",
                )
                .into())
            }
        };
        caller.check_space(&header.space).await?;
        let options = write_options(header.request_id, header.if_absent, header.if_match);
        let write =
            self.content
                .write_ref(&header.user_id, &header.space, &header.object_id, &options)?;
        let meta = metadata(header.content_type, header.attributes);
        let info = self
            .content
            .put(&write, &meta, header.size, upload_body(stream))
            .await?;
        Ok(Response::new(pb::PutObjectResponse {
            info: Some(info_pb(info)),
        }))
    }

    type GetObjectStream = GetStream;

    async fn get_object(
        &self,
        request: Request<pb::GetObjectRequest>,
    ) -> Result<Response<GetStream>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let obj = self.object_ref(&caller, req.object).await?;
        let range = req.range.map(|r| ByteRange {
            start: r.start,
            end: r.end,
        });
        let opened = self.content.get(&obj, range).await?;
        let info = pb::GetObjectResponse {
            part: Some(pb::get_object_response::Part::Info(info_pb(
                opened.info.clone(),
            ))),
        };
        let data = download(opened, range, self.pace).map(|piece| {
            piece
                .map(|data| pb::GetObjectResponse {
                    part: Some(pb::get_object_response::Part::Data(data)),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(
            futures_util::stream::once(async { Ok(info) }).chain(data),
        )))
    }
    async fn head_object(
        &self,
        request: Request<pb::HeadObjectRequest>,
    ) -> Result<Response<pb::ObjectInfo>, Status> {
        let caller = Caller::of(&request)?;
        let obj = self
            .object_ref(&caller, request.into_inner().object)
            .await?;
        Ok(Response::new(info_pb(self.content.head(&obj).await?)))
    }

    async fn sign_read(
        &self,
        request: Request<pb::SignReadRequest>,
    ) -> Result<Response<pb::SignReadResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let obj = self.object_ref(&caller, req.object).await?;
        let Some(Reads { reads, public_url }) = &self.reads else {
            return Err(Error::FailedPrecondition {
                reason: Reason::HttpReadsOff,
                message: "this gateway serves no HTTP reads (http.listen is empty): no link it made could be read".into(),
            }
            .into());
        };
        let range = req.range.map(|r| ByteRange {
            start: r.start,
            end: r.end,
        });
        let ttl = (req.ttl_seconds > 0)
            .then(|| std::time::Duration::from_secs(u64::from(req.ttl_seconds)));
        let now_s = crate::clock::unix_ms().max(0) as u64 / 1000;
        let link = reads.sign(&obj, range, ttl, now_s).await?;
        Ok(Response::new(pb::SignReadResponse {
            url: if public_url.is_empty() {
                String::new()
            } else {
                format!("{public_url}{}", link.path)
            },
            path: link.path,
            expire_time: Some(prost_types::Timestamp {
                seconds: i64::try_from(link.expires_at_s).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            etag: link.etag,
        }))
    }

    async fn delete_object(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let obj = self.object_ref(&caller, req.object).await?;
        let if_match = Some(req.if_match.as_str()).filter(|s| !s.is_empty());
        let deleted = self.content.delete(&obj, if_match).await?;
        Ok(Response::new(pb::DeleteObjectResponse { deleted }))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        caller.check_space(&req.space).await?;
        let (objects, next) = self
            .content
            .list(&req.user_id, &req.space, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListObjectsResponse {
            objects: objects
                .into_iter()
                .map(|o| pb::ListedObject {
                    object_id: o.id,
                    size: o.size.unwrap_or(0),
                    damaged: o.size.is_none(),
                    etag: o.etag,
                    create_time: o.created.map(prost_types::Timestamp::from),
                    suite: o.suite.map(|s| s.name().to_string()).unwrap_or_default(),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn put_item(
        &self,
        request: Request<pb::PutItemRequest>,
    ) -> Result<Response<pb::PutItemResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        caller.check_space(&req.space).await?;
        let max = self.content.limits().max_item_bytes;
        if req.content.len() as u64 > max {
            return Err(Error::too_large(
                Reason::ItemTooLarge,
                format!("item exceeds the limit of {max} bytes"),
            )
            .into());
        }
        let options = write_options(req.request_id, req.if_absent, req.if_match);
        let write = self
            .content
            .write_ref(&req.user_id, &req.space, &req.item_id, &options)?;
        let meta = metadata(req.content_type, req.attributes);
        crate::metrics::get().bytes_in(req.content.len() as u64);
        let info = self.content.put_item(&write, &meta, req.content).await?;
        Ok(Response::new(pb::PutItemResponse {
            info: Some(info_pb(info)),
        }))
    }

    async fn get_items(
        &self,
        request: Request<pb::GetItemsRequest>,
    ) -> Result<Response<pb::GetItemsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        caller.check_space(&req.space).await?;
        let results = self
            .content
            .get_items(&req.user_id, &req.space, req.item_ids)
            .await?;
        Ok(Response::new(pb::GetItemsResponse {
            items: self.item_results(results),
        }))
    }

    async fn batch_get_items(
        &self,
        request: Request<pb::BatchGetItemsRequest>,
    ) -> Result<Response<pb::BatchGetItemsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let refs = request.into_inner().refs;
        // A feed spans spaces: every ref's space is checked, and one the
        // caller may not use refuses the whole call.
        for r in &refs {
            caller.check_space(&r.space).await?;
        }
        let refs = refs
            .into_iter()
            .map(|r| (r.user_id, r.space, r.object_id))
            .collect();
        let results = self.content.batch_get_items(refs).await?;
        Ok(Response::new(pb::BatchGetItemsResponse {
            items: self.item_results(results),
        }))
    }
}

impl ContentApi {
    /// Item results in request order, within the response budget: an item
    /// that would push the encoded response past
    /// `limits.max_response_bytes` becomes a per-item RESOURCE_EXHAUSTED
    /// (`RESPONSE_BUDGET`), never a failed call.
    fn item_results(
        &self,
        results: Vec<(String, Result<crate::content::Item, Error>)>,
    ) -> Vec<pb::ItemResult> {
        use prost::Message;
        let budget =
            usize::try_from(self.content.limits().max_response_bytes).unwrap_or(usize::MAX);
        // Items stop short of the budget by room for the per-item errors
        // that follow them (a few hundred bytes each, at most 100).
        let for_items = budget.saturating_sub(ERRORS_HEADROOM);
        let mut used = 0usize;
        results
            .into_iter()
            .map(|(item_id, result)| {
                let result = match result {
                    Ok(item) => pb::item_result::Result::Item(pb::Item {
                        info: Some(info_pb(item.info)),
                        content: item.content.into(),
                    }),
                    Err(e) => pb::item_result::Result::Error(super::rpc_status(e)),
                };
                let mut out = pb::ItemResult {
                    item_id,
                    result: Some(result),
                };
                // Field tag and length prefix of a repeated message: at most
                // 1 + 10 bytes.
                let len = out.encoded_len() + 11;
                if used + len > for_items {
                    out.result = Some(pb::item_result::Result::Error(super::rpc_status(
                        Error::too_large(
                            Reason::ResponseBudget,
                            format!(
                                "the response would exceed {budget} bytes; fetch this item in another call"
                            ),
                        ),
                    )));
                    used += out.encoded_len() + 11;
                } else {
                    used += len;
                    if let Some(pb::item_result::Result::Item(item)) = &out.result {
                        crate::metrics::get().bytes_out(item.content.len() as u64);
                    }
                }
                out
            })
            .collect()
    }
}

/// Room kept in a batch response for per-item errors.
const ERRORS_HEADROOM: usize = 32 * 1024;
