//! `sealgate erase`: erases a user (crypto-shredding) now, or after a
//! cooling-off window, or a batch of users from a file, or cancels a
//! scheduled erasure, and prints the receipt; `sealgate erasure status`:
//! where a user's erasure stands, with its receipt and its garbage
//! collection's progress; `sealgate erasures watch`: the erasure feed.

use std::path::PathBuf;

use anyhow::Context;

use super::{connect, Endpoint};
use crate::api::pb;
use pb::erasure_service_client::ErasureServiceClient;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["user", "batch"]))]
pub(super) struct EraseArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The user to erase.
    #[arg(long)]
    user: Option<String>,
    /// A file of user ids, one per line (blank lines skipped), erased in
    /// batches of 1,000; prints one line per user.
    #[arg(long)]
    batch: Option<std::path::PathBuf>,
    /// A cooling-off window (`15d`, `12h`, `90s`): the erasure is scheduled
    /// for then, and the user is restricted until it runs or is cancelled.
    #[arg(long, value_parser = crate::config::parse_seconds)]
    after: Option<u64>,
    /// Cancels the user's scheduled erasure instead.
    #[arg(long, conflicts_with_all = ["after", "batch"])]
    cancel: bool,
    /// Writes the signed receipt file here (`sealgate receipt verify`
    /// checks it); with `--after`, once the erasure ran use
    /// `sealgate erasure status --receipt FILE`.
    #[arg(long, conflicts_with = "batch")]
    receipt: Option<PathBuf>,
    /// Names the batch, so that running the same command again after a
    /// lost answer is safe (batches: the id of the i-th 1,000 is
    /// `ID-i`).
    #[arg(long)]
    request_id: Option<String>,
}

pub(super) async fn run(args: EraseArgs) -> anyhow::Result<()> {
    let mut client = ErasureServiceClient::new(connect(&args.endpoint).await?);
    let after = args.after.unwrap_or(0);
    if let Some(path) = &args.batch {
        return batch(&mut client, path, after, args.request_id.as_deref()).await;
    }
    let user = args.user.clone().unwrap_or_default();
    if args.cancel {
        let status = client
            .cancel_erasure(pb::CancelErasureRequest { user_id: user })
            .await?
            .into_inner();
        print_status(&status);
        return Ok(());
    }
    let receipt = client
        .erase_user(pb::EraseUserRequest {
            user_id: user,
            after_seconds: after,
        })
        .await?
        .into_inner();
    write_receipt(args.receipt.as_deref(), &receipt)?;
    print_receipt(&receipt);
    Ok(())
}

/// Writes the signed receipt file of `r` to `path`, if given; an error if
/// the erasure has not run yet (nothing is signed before).
fn write_receipt(path: Option<&std::path::Path>, r: &pb::EraseReceipt) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    if r.signed_receipt.is_empty() {
        anyhow::bail!(
            "no signed receipt yet: the erasure is {}; ask again with `sealgate erasure status --receipt FILE` once it ran",
            state_name(r.state())
        );
    }
    std::fs::write(path, &r.signed_receipt)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The users of `path` in batches of [`crate::erasure::MAX_BATCH`]: one
/// line per user, `user<TAB>erased|scheduled<TAB>pseudonym` or
/// `user<TAB>error<TAB>reason: message`; fails if any user failed.
async fn batch(
    client: &mut ErasureServiceClient<tonic::transport::Channel>,
    path: &std::path::Path,
    after: u64,
    request_id: Option<&str>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let users: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let mut failed = 0;
    for (i, chunk) in users.chunks(crate::erasure::MAX_BATCH).enumerate() {
        let response = client
            .erase_users(pb::EraseUsersRequest {
                user_ids: chunk.to_vec(),
                request_id: request_id.map(|r| format!("{r}-{i}")).unwrap_or_default(),
                after_seconds: after,
            })
            .await?
            .into_inner();
        for r in response.results {
            match r.result {
                Some(pb::erase_users_result::Result::Receipt(receipt)) => {
                    println!(
                        "{}\t{}\t{}",
                        r.user_id,
                        state_name(receipt.state()),
                        receipt.pseudonym
                    );
                }
                Some(pb::erase_users_result::Result::Error(e)) => {
                    failed += 1;
                    println!("{}\terror\t{}", r.user_id, e.message);
                }
                None => {
                    failed += 1;
                    println!("{}\terror\tno result", r.user_id);
                }
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} users were not erased", users.len());
    }
    Ok(())
}

fn state_name(s: pb::ErasureState) -> &'static str {
    match s {
        pb::ErasureState::Scheduled => "scheduled",
        pb::ErasureState::Cancelled => "cancelled",
        pb::ErasureState::Erased => "erased",
        pb::ErasureState::PendingHold => "pending_hold",
        pb::ErasureState::Unspecified => "unknown",
    }
}

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The user's id.
    #[arg(long)]
    user: String,
    /// Writes the signed receipt file of an erasure that ran here.
    #[arg(long)]
    receipt: Option<PathBuf>,
}

/// Where the user's erasure stands; fails (`NotFound`) for a user never
/// erased nor scheduled.
pub(super) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs {
        endpoint,
        user,
        receipt,
    } = args;
    let mut client = ErasureServiceClient::new(connect(&endpoint).await?);
    let status = client
        .get_erasure(pb::GetErasureRequest { user_id: user })
        .await?
        .into_inner();
    if let Some(path) = &receipt {
        let Some(r) = &status.receipt else {
            anyhow::bail!(
                "no signed receipt yet: the erasure is {}",
                state_name(status.state())
            );
        };
        write_receipt(Some(path), r)?;
    }
    print_status(&status);
    Ok(())
}

fn print_status(status: &pb::ErasureStatus) {
    println!("state: {}", state_name(status.state()));
    if status.state() == pb::ErasureState::PendingHold {
        println!("holding_cases: {}", status.holding_cases);
    }
    if status.state() != pb::ErasureState::Erased {
        println!("due: {}", crate::clock::format_time(status.due_unix_ms));
        println!("due_unix_ms: {}", status.due_unix_ms);
        println!(
            "requested_at: {}",
            crate::clock::format_time(status.requested_at_unix_ms)
        );
        if status.cancelled_at_unix_ms > 0 {
            println!(
                "cancelled_at: {}",
                crate::clock::format_time(status.cancelled_at_unix_ms)
            );
        }
    }
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
}

/// A receipt, one `field: value` per line; times also in RFC 3339.
fn print_receipt(r: &pb::EraseReceipt) {
    println!("pseudonym: {}", r.pseudonym);
    if r.state() == pb::ErasureState::PendingHold {
        println!("state: {}", state_name(r.state()));
        println!("holding_cases: {}", r.holding_cases);
        return;
    }
    if r.state() == pb::ErasureState::Scheduled || r.state() == pb::ErasureState::Cancelled {
        println!("state: {}", state_name(r.state()));
        println!("due: {}", crate::clock::format_time(r.due_unix_ms));
        println!("due_unix_ms: {}", r.due_unix_ms);
        return;
    }
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

#[derive(Debug, clap::Args)]
pub(super) struct WatchArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The last cursor already processed (0: from the start).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Stops after this many events (default: follows until interrupted).
    #[arg(long)]
    limit: Option<u64>,
    /// One JSON object per line: cursor, kind, pseudonym, at_unix_ms,
    /// due_unix_ms.
    #[arg(long)]
    json: bool,
}

/// Prints the erasure feed after `--from`: `cursor<TAB>kind<TAB>pseudonym
/// <TAB>at` per event (or JSON lines).
pub(super) async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = ErasureServiceClient::new(connect(&args.endpoint).await?);
    let mut stream = client
        .watch_erasures(pb::WatchErasuresRequest {
            from_cursor: args.from,
        })
        .await?
        .into_inner();
    let mut seen = 0;
    if args.limit == Some(0) {
        return Ok(());
    }
    while let Some(event) = stream.message().await? {
        let kind = match event.kind() {
            pb::ErasureEventKind::Scheduled => "scheduled",
            pb::ErasureEventKind::Cancelled => "cancelled",
            pb::ErasureEventKind::Erased => "erased",
            pb::ErasureEventKind::Collected => "collected",
            pb::ErasureEventKind::PendingHold => "pending_hold",
            pb::ErasureEventKind::Unspecified => "unknown",
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "cursor": event.cursor,
                    "kind": kind,
                    "pseudonym": event.pseudonym,
                    "at_unix_ms": event.at_unix_ms,
                    "due_unix_ms": event.due_unix_ms,
                })
            );
        } else {
            println!(
                "{}\t{kind}\t{}\t{}",
                event.cursor,
                event.pseudonym,
                crate::clock::format_time(event.at_unix_ms)
            );
        }
        seen += 1;
        if args.limit.is_some_and(|l| seen >= l) {
            return Ok(());
        }
    }
    Ok(())
}
