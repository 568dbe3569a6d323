//! `sealgate erase`: erases a user (crypto-shredding) and prints the receipt.

use super::{connect, Endpoint};
use crate::api::pb;
use pb::erasure_service_client::ErasureServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct EraseArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[arg(long)]
    user: String,
}

pub(super) async fn run(args: EraseArgs) -> anyhow::Result<()> {
    let EraseArgs { endpoint, user } = args;
    let mut client = ErasureServiceClient::new(connect(&endpoint).await?);
    let r = client
        .erase_user(pb::EraseUserRequest { user_id: user })
        .await?
        .into_inner();
    println!("pseudonym: {}", r.pseudonym);
    println!("erased_at_unix_ms: {}", r.erased_at_unix_ms);
    println!(
        "destroyed_key_versions: {}",
        r.destroyed_key_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("gc_job_id: {}", r.gc_job_id);
    Ok(())
}
