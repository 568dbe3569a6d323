//! The calls a workload is made of, each as `sealgate put` and `get` make
//! them, with what it did: objects or items and plaintext bytes moved, or
//! the gRPC codes it failed with. This file makes single calls: it must
//! never decide which call comes next nor time one (the callers do).

use tonic::transport::Channel;

use super::plan::Plan;
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;

/// Plaintext bytes in one PutObject data message, as `sealgate put` sends.
const PIECE: usize = 1 << 20;

/// The operations the workloads are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Op {
    Put,
    Get,
    Items,
    Head,
}

impl Op {
    pub(super) fn name(self) -> &'static str {
        match self {
            Op::Put => "PutObject",
            Op::Get => "GetObject",
            Op::Items => "GetItems",
            Op::Head => "HeadObject",
        }
    }
}

/// What one call did.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) objects: u64,
    pub(super) bytes: u64,
    /// The call's status if it failed, or each failed item's.
    pub(super) errors: Vec<tonic::Code>,
}

impl Outcome {
    pub(super) fn failed(code: tonic::Code) -> Self {
        Self {
            errors: vec![code],
            ..Self::default()
        }
    }
}

pub(super) fn put_outcome(plan: &Plan, put: Result<(), tonic::Status>) -> Outcome {
    match put {
        Ok(()) => Outcome {
            objects: 1,
            bytes: plan.size,
            errors: Vec::new(),
        },
        Err(s) => Outcome::failed(s.code()),
    }
}

pub(super) fn object_ref(plan: &Plan, user: usize, id: &str) -> pb::ObjectRef {
    pb::ObjectRef {
        user_id: plan.users[user].clone(),
        space: plan.space.clone(),
        object_id: id.to_string(),
    }
}

/// Uploads the plan's body as `id` of `user`, as `sealgate put` uploads a
/// file: declared size, 1 MiB messages, the finish's SHA-256.
pub(super) async fn put_object(
    client: &mut ContentServiceClient<Channel>,
    plan: &Plan,
    user: usize,
    id: &str,
) -> Result<(), tonic::Status> {
    let header = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
            user_id: plan.users[user].clone(),
            space: plan.space.clone(),
            object_id: id.to_string(),
            content_type: "application/octet-stream".into(),
            size: Some(plan.size),
            ..Default::default()
        })),
    };
    let body = plan.body.clone();
    let pieces = (0..body.len().div_ceil(PIECE)).map(move |i| pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Data(
            body.slice(i * PIECE..((i + 1) * PIECE).min(body.len())),
        )),
    });
    let finish = pb::PutObjectRequest {
        part: Some(pb::put_object_request::Part::Finish(pb::PutObjectFinish {
            sha256: plan.sha256.clone(),
        })),
    };
    let messages = std::iter::once(header)
        .chain(pieces)
        .chain(std::iter::once(finish));
    client
        .put_object(futures_util::stream::iter(messages))
        .await
        .map(|_| ())
}

pub(super) async fn get_object(
    client: &mut ContentServiceClient<Channel>,
    plan: &Plan,
    user: usize,
    id: &str,
) -> Outcome {
    let result = async {
        let mut stream = client
            .get_object(pb::GetObjectRequest {
                object: Some(object_ref(plan, user, id)),
                range: None,
            })
            .await?
            .into_inner();
        let mut bytes = 0u64;
        while let Some(msg) = stream.message().await? {
            if let Some(pb::get_object_response::Part::Data(d)) = msg.part {
                bytes += d.len() as u64;
            }
        }
        Ok::<_, tonic::Status>(bytes)
    }
    .await;
    match result {
        Ok(bytes) if bytes == plan.size => Outcome {
            objects: 1,
            bytes,
            errors: Vec::new(),
        },
        // A short object is a data error the server did not report.
        Ok(_) => Outcome::failed(tonic::Code::DataLoss),
        Err(s) => Outcome::failed(s.code()),
    }
}

/// One GetItems batch of all of `user`'s items.
pub(super) async fn get_items(
    client: &mut ContentServiceClient<Channel>,
    plan: &Plan,
    user: usize,
) -> Outcome {
    let response = client
        .get_items(pb::GetItemsRequest {
            user_id: plan.users[user].clone(),
            space: plan.space.clone(),
            item_ids: plan.items[user].clone(),
        })
        .await;
    match response {
        Err(s) => Outcome::failed(s.code()),
        Ok(r) => {
            let mut outcome = Outcome::default();
            for item in r.into_inner().items {
                match item.result {
                    Some(pb::item_result::Result::Item(i)) => {
                        outcome.objects += 1;
                        outcome.bytes += i.content.len() as u64;
                    }
                    Some(pb::item_result::Result::Error(e)) => {
                        outcome.errors.push(tonic::Code::from_i32(e.code));
                    }
                    None => outcome.errors.push(tonic::Code::Internal),
                }
            }
            outcome
        }
    }
}
