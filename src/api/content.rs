//! ContentService: the gRPC face of [`Objects`].

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::ServiceError;
use super::objects::{metadata, ObjectInfo, Objects};
use super::pb;
use super::validate;
use crate::blob::WriteMode;

/// Most ids in one GetItems call.
pub const MAX_BATCH: usize = 100;

/// The ContentService implementation.
pub struct ContentApi {
    objects: Arc<Objects>,
}

impl ContentApi {
    /// Wraps the object service.
    pub fn new(objects: Arc<Objects>) -> Self {
        Self { objects }
    }
}

fn info_pb(info: ObjectInfo) -> pb::ObjectInfo {
    pb::ObjectInfo {
        space: info.space,
        object_id: info.object_id,
        size: info.size,
        content_type: info.metadata.content_type,
        attributes: info.metadata.attributes.into_iter().collect(),
    }
}

fn object_ref(
    objects: &Objects,
    r: Option<pb::ObjectRef>,
) -> Result<super::objects::ObjectRef, ServiceError> {
    let r = r.ok_or_else(|| ServiceError::InvalidArgument("object is required".into()))?;
    objects.object_ref(&r.user_id, &r.space, &r.object_id)
}

/// An empty id asks the gateway to generate one, written create-only so a
/// generated id can never replace an existing object.
fn id_or_generated(id: String) -> (String, WriteMode) {
    if id.is_empty() {
        (validate::generate_id(), WriteMode::CreateOnly)
    } else {
        (id, WriteMode::Replace)
    }
}

type GetStream = Pin<Box<dyn Stream<Item = Result<pb::GetObjectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::content_service_server::ContentService for ContentApi {
    async fn put_object(
        &self,
        request: Request<Streaming<pb::PutObjectRequest>>,
    ) -> Result<Response<pb::PutObjectResponse>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Header(h)),
            }) => h,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message must be a header",
                ))
            }
            None => {
                return Err(Status::invalid_argument(
                    "empty upload: the first message must be a header",
                ))
            }
        };
        let (object_id, mode) = id_or_generated(header.object_id);
        let obj = self
            .objects
            .object_ref(&header.user_id, &header.space, &object_id)?;
        let meta = metadata(header.content_type, header.attributes);
        let body = stream.map(|m| match m {
            Ok(pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Data(d)),
            }) => Ok(d),
            Ok(_) => Err(ServiceError::InvalidArgument(
                "only the first message may be a header".into(),
            )),
            // tonic reports a message over the decoding limit as OUT_OF_RANGE.
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                Err(ServiceError::TooLarge(format!(
                    "upload message too large (send pieces of at most 4 MiB): {}",
                    status.message()
                )))
            }
            Err(status) => Err(ServiceError::InvalidArgument(format!(
                "upload stream failed: {}",
                status.message()
            ))),
        });
        let limit = self.objects.limits.max_object_bytes;
        let info = self
            .objects
            .put(&obj, mode, &meta, limit, header.size, body)
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
        let req = request.into_inner();
        let obj = object_ref(&self.objects, req.object)?;
        let range = req.range.map(|r| (r.start, r.end));
        if range.is_some_and(|(start, end)| end.is_some_and(|e| e <= start)) {
            return Err(Status::invalid_argument(
                "range end must be greater than start",
            ));
        }
        let opened = self.objects.open(&obj, range.is_none()).await?;
        if let Some((start, _)) = range {
            if start >= opened.info.size {
                return Err(Status::out_of_range(format!(
                    "range start {start} is at or past the end of the object ({} bytes)",
                    opened.info.size
                )));
            }
        }
        let (tx, rx) = mpsc::channel::<Result<pb::GetObjectResponse, Status>>(4);
        let info = info_pb(opened.info.clone());
        tokio::spawn(async move {
            let first = pb::GetObjectResponse {
                part: Some(pb::get_object_response::Part::Info(info)),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let sink_tx = tx.clone();
            let result = opened
                .read_into(range, move |data: Bytes| {
                    let tx = sink_tx.clone();
                    async move {
                        tx.send(Ok(pb::GetObjectResponse {
                            part: Some(pb::get_object_response::Part::Data(data)),
                        }))
                        .await
                        .is_ok()
                    }
                })
                .await;
            if let Err(e) = result {
                let _ = tx.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn head_object(
        &self,
        request: Request<pb::HeadObjectRequest>,
    ) -> Result<Response<pb::ObjectInfo>, Status> {
        let obj = object_ref(&self.objects, request.into_inner().object)?;
        let opened = self.objects.open(&obj, false).await?;
        Ok(Response::new(info_pb(opened.info)))
    }

    async fn delete_object(
        &self,
        request: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let obj = object_ref(&self.objects, request.into_inner().object)?;
        let deleted = self.objects.delete(&obj).await?;
        Ok(Response::new(pb::DeleteObjectResponse { deleted }))
    }

    async fn list_objects(
        &self,
        request: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let req = request.into_inner();
        let (objects, next) = self
            .objects
            .list(&req.user_id, &req.space, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListObjectsResponse {
            objects: objects
                .into_iter()
                .map(|o| pb::ListedObject {
                    object_id: o.id,
                    size: o.size.unwrap_or(0),
                    damaged: o.size.is_none(),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn put_item(
        &self,
        request: Request<pb::PutItemRequest>,
    ) -> Result<Response<pb::PutItemResponse>, Status> {
        let req = request.into_inner();
        let max = self.objects.limits.max_item_bytes;
        if req.content.len() as u64 > max {
            return Err(
                ServiceError::TooLarge(format!("item exceeds the limit of {max} bytes")).into(),
            );
        }
        let (item_id, mode) = id_or_generated(req.item_id);
        let obj = self
            .objects
            .object_ref(&req.user_id, &req.space, &item_id)?;
        let meta = metadata(req.content_type, req.attributes);
        let size = Some(req.content.len() as u64);
        let body = futures_util::stream::iter([Ok(req.content)]);
        let info = self.objects.put(&obj, mode, &meta, max, size, body).await?;
        Ok(Response::new(pb::PutItemResponse {
            info: Some(info_pb(info)),
        }))
    }

    async fn get_items(
        &self,
        request: Request<pb::GetItemsRequest>,
    ) -> Result<Response<pb::GetItemsResponse>, Status> {
        let req = request.into_inner();
        if req.item_ids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH} item ids per call, got {}",
                req.item_ids.len()
            )));
        }
        // Errors common to the whole batch fail the call.
        let pseudonym = self.objects.pseudonym(&req.user_id)?;
        self.objects.check_space(&req.space)?;
        self.objects
            .keys()
            .ensure_not_erased(&pseudonym)
            .await
            .map_err(ServiceError::from)?;
        let objects = &self.objects;
        let max = objects.limits.max_item_bytes;
        let user_id = &req.user_id;
        let space = &req.space;
        let items = futures_util::stream::iter(req.item_ids.iter().cloned())
            .map(|item_id| async move {
                let result = async {
                    let obj = objects.object_ref(user_id, space, &item_id)?;
                    let opened = objects.open(&obj, true).await?;
                    if opened.info.size > max {
                        return Err(ServiceError::TooLarge(format!(
                            "object is larger than an item ({max} bytes); use GetObject"
                        )));
                    }
                    let info = opened.info.clone();
                    let content = opened.read_all().await?;
                    Ok((info, content))
                }
                .await;
                let result = match result {
                    Ok((info, content)) => pb::item_result::Result::Item(pb::Item {
                        info: Some(info_pb(info)),
                        content: content.into(),
                    }),
                    Err(ServiceError::UserErased) => {
                        return Err(Status::from(ServiceError::UserErased))
                    }
                    Err(e) => {
                        let status = Status::from(e);
                        pb::item_result::Result::Error(pb::ItemError {
                            code: status.code() as i32,
                            message: status.message().to_string(),
                        })
                    }
                };
                Ok(pb::ItemResult {
                    item_id,
                    result: Some(result),
                })
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(pb::GetItemsResponse { items }))
    }
}
