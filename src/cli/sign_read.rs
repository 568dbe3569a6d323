//! `sealgate sign-read`: a link for an HTTP GET of an object (or a byte
//! range of it) on the gateway's HTTP listener; prints the URL
//! (`http.public_url` and the path) or, without a public URL, the path.

use super::{connect, Endpoint, ObjectArgs};
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct SignReadArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(flatten)]
    object: ObjectArgs,
    /// How long the link lives (at most `http.max_ttl_seconds`; 0 or
    /// absent: that maximum).
    #[arg(long, default_value_t = 0)]
    ttl_seconds: u32,
    /// Only bytes START-END, END inclusive (END may be omitted).
    #[arg(long)]
    range: Option<String>,
}

pub(super) async fn run(args: SignReadArgs) -> anyhow::Result<()> {
    let SignReadArgs {
        endpoint,
        object,
        ttl_seconds,
        range,
    } = args;
    let range = range.as_deref().map(super::get::parse_range).transpose()?;
    let mut client = ContentServiceClient::new(connect(&endpoint).await?);
    let link = client
        .sign_read(pb::SignReadRequest {
            object: Some(object.into()),
            range,
            ttl_seconds,
        })
        .await?
        .into_inner();
    println!(
        "{}",
        if link.url.is_empty() {
            link.path
        } else {
            link.url
        }
    );
    Ok(())
}
