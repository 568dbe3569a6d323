//! `sealgate receipt public-key`: the public keys that verify erasure
//! receipts, as text lines `<key_id> <hex public key>`; `sealgate receipt
//! verify`: checks a receipt file against such lines, offline.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{connect, Endpoint};
use crate::api::pb;
use crate::receipt::{self, PublicKey};
use pb::erasure_service_client::ErasureServiceClient;

#[derive(Debug, Subcommand)]
pub(super) enum ReceiptCommand {
    /// The gateway's receipt-signing public keys, one line `<key_id>
    /// <hex public key>` each (role `erasure`).
    PublicKey(PublicKeyArgs),
    /// Verifies a receipt file offline (no gateway): prints its fields and
    /// exits 0, or prints why not and exits non-zero.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub(super) struct PublicKeyArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only the key of this id.
    #[arg(long)]
    key_id: Option<String>,
    /// Writes the lines to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(super) struct VerifyArgs {
    /// A file of public key lines (`sealgate receipt public-key`).
    #[arg(long)]
    public_key: PathBuf,
    /// The receipt file (`sealgate erase --receipt`).
    receipt: PathBuf,
}

pub(super) async fn run(command: ReceiptCommand) -> anyhow::Result<()> {
    match command {
        ReceiptCommand::PublicKey(args) => public_key(args).await,
        ReceiptCommand::Verify(args) => verify(&args),
    }
}

async fn public_key(args: PublicKeyArgs) -> anyhow::Result<()> {
    let PublicKeyArgs {
        endpoint,
        key_id,
        out,
    } = args;
    let mut client = ErasureServiceClient::new(connect(&endpoint).await?);
    let keys = client
        .receipt_public_keys(pb::ReceiptPublicKeysRequest {
            key_id: key_id.clone().unwrap_or_default(),
        })
        .await?
        .into_inner()
        .keys;
    if let Some(id) = &key_id {
        anyhow::ensure!(!keys.is_empty(), "the gateway has no receipt key {id:?}");
    }
    let mut text = String::new();
    for k in keys {
        // Checked here too: a line this command writes always verifies its id.
        let key = PublicKey::from_parts(&k.key_id, &k.public_key)
            .context("the gateway sent a malformed public key")?;
        text.push_str(&key.to_line());
        text.push('\n');
    }
    match out {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}

fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let keys = std::fs::read_to_string(&args.public_key)
        .with_context(|| format!("cannot read {}", args.public_key.display()))?;
    let keys = PublicKey::parse_lines(&keys)
        .with_context(|| format!("public key file {}", args.public_key.display()))?;
    let file = std::fs::read(&args.receipt)
        .with_context(|| format!("cannot read {}", args.receipt.display()))?;
    let r = receipt::verify(&file, &keys)
        .with_context(|| format!("receipt {} does not verify", args.receipt.display()))?;
    println!("verified: signature by key {}", r.key_id);
    println!("pseudonym: {}", r.pseudonym_hex());
    println!(
        "erased_at: {} ({} ms)",
        crate::clock::format_time(r.erased_at_ms),
        r.erased_at_ms
    );
    println!(
        "destroyed_key_versions: {}",
        r.destroyed_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    if r.backup_horizon_ms > 0 {
        println!(
            "backup_horizon: {} ({} ms)",
            crate::clock::format_time(r.backup_horizon_ms),
            r.backup_horizon_ms
        );
    } else {
        println!("backup_horizon: none");
    }
    println!("signing_key_id: {}", r.key_id);
    println!("deployment_id: {}", r.deployment_id);
    println!("region: {}", r.region);
    Ok(())
}
