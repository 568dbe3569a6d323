//! `sealgate keys status`: prints a user's key versions, without key material.

use super::{connect, Endpoint};
use crate::api::pb;
use pb::key_admin_service_client::KeyAdminServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[arg(long)]
    user: String,
}

pub(super) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs { endpoint, user } = args;
    let mut client = KeyAdminServiceClient::new(connect(&endpoint).await?);
    let r = client
        .key_status(pb::KeyStatusRequest { user_id: user })
        .await?
        .into_inner();
    println!("pseudonym: {}", r.pseudonym);
    println!("shard: {}", r.shard);
    println!("erased: {}", r.erased);
    println!("master_key_version: {}", r.master_key_version);
    for v in r.versions {
        let state = pb::UserKeyState::try_from(v.state).map_or("unknown", |s| s.as_str_name());
        println!(
            "user_key_version: {} state={} kek_version={} created_at_unix_ms={}",
            v.version, state, v.kek_version, v.created_at_unix_ms
        );
    }
    Ok(())
}
