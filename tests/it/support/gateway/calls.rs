//! ContentService calls as the tests make them: uploads in messages of
//! a chosen size, downloads checked message by message, items, listings.

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use tonic::transport::Channel;
use tonic::Status;

use super::server::TestGateway;

/// Uploads `data` in messages of `piece` bytes.
pub async fn put(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
    data: &[u8],
    piece: usize,
) -> Result<pb::ObjectInfo, Status> {
    let mut msgs = vec![pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: user.into(),
            space: space.into(),
            object_id: id.into(),
            content_type: "image/jpeg".into(),
            attributes: [("origin".to_string(), "test".to_string())].into(),
            ..Default::default()
        })),
    }];
    msgs.extend(data.chunks(piece.max(1)).map(|c| pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(
            bytes::Bytes::copy_from_slice(c),
        )),
    }));
    msgs.push(finish_msg(Some(data)));
    let r = client.put_object(futures_util::stream::iter(msgs)).await?;
    Ok(r.into_inner().info.expect("info"))
}

/// Downloads an object (or a range), checking the first message is the info.
pub async fn get(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
    range: Option<(u64, Option<u64>)>,
) -> Result<(pb::ObjectInfo, Vec<u8>), Status> {
    let mut stream = client
        .get_object(pb::GetObjectRequest {
            object: Some(obj(user, space, id)),
            range: range.map(|(start, end)| pb::ByteRange { start, end }),
        })
        .await?
        .into_inner();
    let info = match stream.message().await?.and_then(|m| m.part) {
        Some(pb::get_object_response::Part::Info(i)) => i,
        other => panic!("first message must be the info, got {other:?}"),
    };
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        match m.part {
            Some(pb::get_object_response::Part::Data(d)) => out.extend_from_slice(&d),
            other => panic!("unexpected message {other:?}"),
        }
    }
    Ok((info, out))
}

/// A GetObject of a whole object by a client with HTTP/2 windows of
/// `window` bytes, after it has received at least `first` bytes of data:
/// what it has not read stays in the server. Returns the stream and the
/// bytes received.
pub async fn paused_download(
    gw: &TestGateway,
    user: &str,
    space: &str,
    id: &str,
    window: u32,
    first: usize,
) -> (tonic::Streaming<pb::GetObjectResponse>, Vec<u8>) {
    let channel = tonic::transport::Endpoint::from_shared(gw.endpoint())
        .unwrap()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .unwrap();
    let mut client = ContentServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = client
        .get_object(pb::GetObjectRequest {
            object: Some(obj(user, space, id)),
            range: None,
        })
        .await
        .expect("GetObject")
        .into_inner();
    let mut got = Vec::new();
    while got.len() < first {
        match stream.message().await.expect("read").and_then(|m| m.part) {
            Some(pb::get_object_response::Part::Data(d)) => got.extend_from_slice(&d),
            Some(pb::get_object_response::Part::Info(_)) => {}
            None => panic!("stream ended early"),
        }
    }
    (stream, got)
}

pub fn obj(user: &str, space: &str, id: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        user_id: user.into(),
        space: space.into(),
        object_id: id.into(),
    }
}

/// Deterministic test bytes (`crypto::pattern`).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    crate::crypto::pattern(len, seed)
}

/// The header message of an upload.
pub fn header_msg(user: &str, space: &str, id: &str) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            size: None,
            user_id: user.into(),
            space: space.into(),
            object_id: id.into(),
            content_type: "application/octet-stream".into(),
            attributes: Default::default(),
            ..Default::default()
        })),
    }
}

/// The finish message of an upload, with the SHA-256 of `plaintext` if given.
pub fn finish_msg(plaintext: Option<&[u8]>) -> pb::PutObjectRequest {
    let sha256 = plaintext.map_or_else(Vec::new, |p| {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, p)
            .as_ref()
            .to_vec()
    });
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Finish(pb::PutObjectFinish {
            sha256: sha256.into(),
        })),
    }
}

/// A data message of an upload.
pub fn data_msg(bytes: impl Into<bytes::Bytes>) -> pb::PutObjectRequest {
    pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(bytes.into())),
    }
}

/// HeadObject.
pub async fn head(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
) -> Result<pb::ObjectInfo, Status> {
    client
        .head_object(pb::HeadObjectRequest {
            object: Some(obj(user, space, id)),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// DeleteObject; whether something was deleted.
pub async fn delete(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
) -> Result<bool, Status> {
    client
        .delete_object(pb::DeleteObjectRequest {
            object: Some(obj(user, space, id)),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().deleted)
}

/// One ListObjects page.
pub async fn list_page(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListObjectsResponse, Status> {
    client
        .list_objects(pb::ListObjectsRequest {
            user_id: user.into(),
            space: space.into(),
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Every object of a user in a space, following page tokens.
pub async fn list_all(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
) -> Result<Vec<(String, u64)>, Status> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_page(client, user, space, 0, &token).await?;
        out.extend(page.objects.into_iter().map(|o| (o.object_id, o.size)));
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// PutItem with a fixed content type and attributes.
pub async fn put_item(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    id: &str,
    content: &[u8],
) -> Result<pb::ObjectInfo, Status> {
    client
        .put_item(pb::PutItemRequest {
            user_id: user.into(),
            space: space.into(),
            item_id: id.into(),
            content: bytes::Bytes::copy_from_slice(content),
            content_type: "text/plain".into(),
            attributes: [("kind".to_string(), "comment".to_string())].into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().info.expect("info"))
}

/// GetItems.
pub async fn get_items(
    client: &mut ContentServiceClient<Channel>,
    user: &str,
    space: &str,
    ids: &[&str],
) -> Result<Vec<pb::ItemResult>, Status> {
    client
        .get_items(pb::GetItemsRequest {
            user_id: user.into(),
            space: space.into(),
            item_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .map(|r| r.into_inner().items)
}
