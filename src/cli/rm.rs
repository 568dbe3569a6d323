//! `sealgate rm`: deletes an object; a missing object is an error.

use super::{connect, Endpoint, ObjectArgs};
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct RmArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(flatten)]
    object: ObjectArgs,
}

pub(super) async fn run(args: RmArgs) -> anyhow::Result<()> {
    let RmArgs { endpoint, object } = args;
    let mut client = ContentServiceClient::new(connect(&endpoint).await?);
    let r = client
        .delete_object(pb::DeleteObjectRequest {
            object: Some(object.into()),
            ..Default::default()
        })
        .await?
        .into_inner();
    anyhow::ensure!(r.deleted, tonic::Status::not_found("object not found"));
    Ok(())
}
