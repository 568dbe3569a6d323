//! `sealgate keys ...`: a user's key versions (never key material), master
//! rotation and retirement.

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

#[derive(Debug, clap::Args)]
pub(super) struct RotateMasterArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Follow the job to its end; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
}

/// `sealgate keys rotate-master [--wait]`: prints `job_id` and
/// `master_version`.
pub(super) async fn rotate_master(args: RotateMasterArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    let r = client
        .rotate_master_key(pb::RotateMasterKeyRequest {})
        .await?
        .into_inner();
    println!("job_id: {}", r.job_id);
    println!("master_version: {}", r.master_version);
    if args.wait {
        super::jobs::watch_job(&mut client, &r.job_id).await?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(super) struct RetireMasterArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The master key version to remove from the keyring.
    #[arg(long)]
    version: u32,
}

/// `sealgate keys retire-master --version N`: prints the versions left.
pub(super) async fn retire_master(args: RetireMasterArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    let r = client
        .retire_master_key(pb::RetireMasterKeyRequest {
            version: args.version,
        })
        .await?
        .into_inner();
    println!(
        "master_versions: {}",
        r.remaining_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(())
}
