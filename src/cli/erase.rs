//! `sealgate erase`: erases a user (crypto-shredding) and prints the
//! receipt; `sealgate erasure status`: the receipt of an erasure made
//! before, with its garbage collection's progress.

use std::path::PathBuf;

use anyhow::Context;

use super::{connect, Endpoint};
use crate::api::pb;
use pb::erasure_service_client::ErasureServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct EraseArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[arg(long)]
    user: String,
    /// Writes the signed receipt file here (`sealgate receipt verify`
    /// checks it).
    #[arg(long)]
    receipt: Option<PathBuf>,
}

pub(super) async fn run(args: EraseArgs) -> anyhow::Result<()> {
    let EraseArgs {
        endpoint,
        user,
        receipt: receipt_file,
    } = args;
    let mut client = ErasureServiceClient::new(connect(&endpoint).await?);
    let receipt = client
        .erase_user(pb::EraseUserRequest { user_id: user })
        .await?
        .into_inner();
    if let Some(path) = &receipt_file {
        std::fs::write(path, &receipt.signed_receipt)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print_receipt(&receipt);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The erased user's id.
    #[arg(long)]
    user: String,
}

/// The receipt of the user's erasure and its garbage collection; fails
/// (`NotFound`) for a user who was never erased.
pub(super) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs { endpoint, user } = args;
    let mut client = ErasureServiceClient::new(connect(&endpoint).await?);
    let status = client
        .get_erasure(pb::GetErasureRequest { user_id: user })
        .await?
        .into_inner();
    if let Some(receipt) = &status.receipt {
        print_receipt(receipt);
    }
    if let Some(gc) = &status.gc {
        let mut line = format!(
            "gc: {} {}/{}",
            super::jobs::state_name(gc.state),
            gc.done,
            gc.total
        );
        if !gc.last_error.is_empty() {
            line.push_str(&format!(" ({})", gc.last_error));
        }
        println!("{line}");
    }
    Ok(())
}

/// A receipt, one `field: value` per line; times also in RFC 3339.
fn print_receipt(r: &pb::EraseReceipt) {
    println!("pseudonym: {}", r.pseudonym);
    println!(
        "erased_at: {}",
        crate::clock::format_time(r.erased_at_unix_ms)
    );
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
    // From then on no copy of the user's keys (a key-store backup from
    // before the erasure included) can be opened.
    if r.backup_horizon_unix_ms > 0 {
        println!(
            "backup_horizon: {}",
            crate::clock::format_time(r.backup_horizon_unix_ms)
        );
    } else {
        println!("backup_horizon: none (the key schedule is off: backups stay openable)");
    }
    println!("backup_horizon_unix_ms: {}", r.backup_horizon_unix_ms);
    println!("signing_key_id: {}", r.signing_key_id);
    println!("deployment_id: {}", r.deployment_id);
    println!("region: {}", r.region);
}
