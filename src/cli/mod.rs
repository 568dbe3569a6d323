//! The `sealgate` command line: `serve` runs the gateway; the other commands
//! are a gRPC client for it. Scripts and runbooks rely on these names.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::transport::Channel;

use crate::api::pb;

mod erase;
mod get;
mod keys;
mod ls;
mod progress;
mod put;
mod rm;
mod serve;

/// Encrypted user-content storage gateway.
#[derive(Debug, Parser)]
#[command(name = "sealgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Endpoint {
    /// Gateway address.
    #[arg(long, default_value = "http://127.0.0.1:50051", global = true)]
    endpoint: String,
}

/// Names one user's space.
#[derive(Debug, clap::Args)]
struct UserSpace {
    /// The owner's user id.
    #[arg(long)]
    user: String,
    /// The space (`moments`, `channels`, ...).
    #[arg(long)]
    space: String,
}

/// Names one object.
#[derive(Debug, clap::Args)]
struct ObjectArgs {
    #[command(flatten)]
    at: UserSpace,
    /// The object id.
    #[arg(long)]
    id: String,
}

impl From<ObjectArgs> for pb::ObjectRef {
    fn from(o: ObjectArgs) -> Self {
        Self {
            user_id: o.at.user,
            space: o.at.space,
            object_id: o.id,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Store a file (or stdin with `-`); prints the object id.
    Put(put::PutArgs),
    /// Fetch an object to stdout or a file.
    Get(get::GetArgs),
    /// Delete an object.
    Rm(rm::RmArgs),
    /// List a user's objects in a space: `id<TAB>size` per line (`DAMAGED`
    /// instead of the size for an object that fails its integrity check).
    Ls(ls::LsArgs),
    /// Erase a user (crypto-shredding); prints the receipt.
    Erase(erase::EraseArgs),
    /// Key administration.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// A user's key versions, without key material.
    Status(keys::StatusArgs),
}

/// Parses the command line and runs it; the process exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!("error: {:?}: {}", status.code(), status.message()),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Put(args) => put::run(args).await,
        Command::Get(args) => get::run(args).await,
        Command::Rm(args) => rm::run(args).await,
        Command::Ls(args) => ls::run(args).await,
        Command::Erase(args) => erase::run(args).await,
        Command::Keys {
            command: KeysCommand::Status(args),
        } => keys::status(args).await,
    }
}

/// Connects to the gateway at `--endpoint`.
async fn connect(endpoint: &Endpoint) -> anyhow::Result<Channel> {
    Channel::from_shared(endpoint.endpoint.clone())
        .context("invalid --endpoint")?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", endpoint.endpoint))
}
