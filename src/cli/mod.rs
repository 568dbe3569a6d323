//! The `sealgate` command line: `serve` runs the gateway; the other commands
//! are a gRPC client for it. Scripts and runbooks rely on these names.
//!
//! One file per command; they share one connection helper (plaintext, or
//! TLS with `--ca` and optionally a client certificate for `https://`).
//! `progress` draws the progress line of `put` and `get`; `bench` is the
//! load generator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::api::pb;

mod audit;
mod backup;
mod bench;
mod erase;
mod export;
mod get;
mod hold;
mod jobs;
mod keys;
mod ls;
mod progress;
mod put;
mod receipt;
mod rm;
mod serve;
mod sign_read;

/// Encrypted user-content storage gateway.
#[derive(Debug, Parser)]
#[command(name = "sealgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the gateway is and how to prove who we are: an `https://`
/// endpoint is spoken to over TLS, with `--ca` to verify the server and
/// `--cert`/`--key` as the client certificate that names our identity.
#[derive(Debug, Clone, clap::Args)]
struct Endpoint {
    /// Gateway address (`http://` on loopback, `https://` for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051", global = true)]
    endpoint: String,
    /// CA certificate (PEM) that signed the gateway's certificate.
    #[arg(long, env = "SEALGATE_CA", global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "SEALGATE_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "SEALGATE_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
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
    /// A user's content as one tar archive (their own copy, or with
    /// `--case` a disclosure under a legal case), resumed if the connection
    /// breaks; prints the object count.
    Export(export::ExportArgs),
    /// Delete an object.
    Rm(rm::RmArgs),
    /// A link for an HTTP GET of an object (or a range) on the HTTP
    /// listener, expiring within `http.max_ttl_seconds`; prints it.
    SignRead(sign_read::SignReadArgs),
    /// List a user's objects in a space: `id<TAB>size` per line (`DAMAGED`
    /// instead of the size for an object that fails its integrity check).
    Ls(ls::LsArgs),
    /// Erase a user (crypto-shredding) now or after a cooling-off window
    /// (`--after 15d`), a batch from a file, or cancel a scheduled
    /// erasure (`--cancel`); prints the receipt.
    Erase(erase::EraseArgs),
    /// Erasures asked for before: `status` prints where a user's stands,
    /// its receipt and the progress of its garbage collection.
    Erasure {
        #[command(subcommand)]
        command: ErasureCommand,
    },
    /// The erasure feed: `watch` follows it from a cursor.
    Erasures {
        #[command(subcommand)]
        command: ErasuresCommand,
    },
    /// Signed erasure receipts: the public keys that verify them, and
    /// `verify`, offline.
    Receipt {
        #[command(subcommand)]
        command: receipt::ReceiptCommand,
    },
    /// Key administration.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The audit trail: records, or `verify` to check its hash chain.
    Audit(audit::AuditArgs),
    /// Legal holds: a held user cannot be erased.
    Hold {
        #[command(subcommand)]
        command: hold::HoldCommand,
    },
    /// Load generator: runs a workload for a while and reports
    /// operations per second, throughput, latency percentiles and errors.
    Bench(bench::BenchArgs),
    /// A consistent online backup of the key store and keyring of the
    /// deployment on this machine into a new directory, checked by opening
    /// it; prints its manifest.
    Backup(backup::BackupArgs),
    /// Durable jobs: rotation, rewrap, garbage collection.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ErasureCommand {
    /// The receipt of a user's erasure and its garbage collection's
    /// progress.
    Status(erase::StatusArgs),
}

#[derive(Debug, Subcommand)]
enum ErasuresCommand {
    /// Prints the erasure feed after a cursor, then follows it.
    Watch(erase::WatchArgs),
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// The newest jobs: `id<TAB>kind<TAB>state<TAB>done/total[<TAB>last error]`.
    List(jobs::ListArgs),
    /// Follows a job until it ends; exits non-zero if it FAILED.
    Watch(jobs::WatchArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Key status without key material: a user's versions, or the
    /// hierarchy (master versions, KEKs, the erasure horizon).
    Status(keys::StatusArgs),
    /// Adds a master key version and re-wraps every KEK under it (a job).
    RotateMaster(keys::RotateMasterArgs),
    /// Removes an old master key version from the keyring.
    RetireMaster(keys::RetireMasterArgs),
    /// Per shard: a new KEK version, the shard's user keys re-wrapped
    /// under it, the old versions destroyed (a job).
    RotateKek(keys::RotateKekArgs),
    /// A new active version of a user's key; older versions decrypt-only.
    RotateUser(keys::RotateUserArgs),
    /// Moves every key slot of a user's objects to the active version
    /// (bodies untouched), then destroys the older versions (a job).
    Rewrap(keys::RewrapArgs),
    /// Re-encrypts every object of a space (or of all) not in the given
    /// suite into it: the one job that rewrites bodies (a job).
    Reseal(keys::ResealArgs),
    /// The end of the service: destroys every user key, KEK and master
    /// version and the keyring. Every object becomes unreadable for good.
    Decommission(keys::DecommissionArgs),
}

/// Parses the command line and runs it; the process exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<tonic::Status>() {
                Some(status) => eprintln!(
                    "error: {:?}: {}{}",
                    status.code(),
                    status.message(),
                    tls_hint(status)
                ),
                None => eprintln!("error: {}", one_line(&e)),
            }
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: many errors
/// already end with their cause's text (`cannot read FILE: No such file`),
/// so a cause whose text the line holds is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.replace('\n', " ")
}

/// The plaintext endpoint connected to, if any (for [`tls_hint`]).
static PLAINTEXT_ENDPOINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// For a call that failed in the transport over a plaintext endpoint: the
/// likely cause, a gateway that serves TLS. A status the gateway sent has
/// no source; one the transport made up has.
fn tls_hint(status: &tonic::Status) -> String {
    use tonic::Code;
    let transport = std::error::Error::source(status).is_some()
        && matches!(
            status.code(),
            Code::Unknown | Code::Unavailable | Code::Internal | Code::Cancelled
        );
    match PLAINTEXT_ENDPOINT.get() {
        Some(endpoint) if transport => format!(
            " (the connection to {endpoint} failed: if the gateway serves TLS, use an https:// endpoint with --ca, and --cert and --key for a client certificate)"
        ),
        _ => String::new(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Put(args) => put::run(args).await,
        Command::Get(args) => get::run(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Rm(args) => rm::run(args).await,
        Command::SignRead(args) => sign_read::run(args).await,
        Command::Ls(args) => ls::run(args).await,
        Command::Erase(args) => erase::run(args).await,
        Command::Erasure {
            command: ErasureCommand::Status(args),
        } => erase::status(args).await,
        Command::Erasures {
            command: ErasuresCommand::Watch(args),
        } => erase::watch(args).await,
        Command::Keys {
            command: KeysCommand::Status(args),
        } => keys::status(args).await,
        Command::Hold { command } => hold::run(command).await,
        Command::Receipt { command } => receipt::run(command).await,
        Command::Audit(args) => audit::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Backup(args) => backup::run(args).await,
        Command::Keys {
            command: KeysCommand::RotateMaster(args),
        } => keys::rotate_master(args).await,
        Command::Keys {
            command: KeysCommand::RetireMaster(args),
        } => keys::retire_master(args).await,
        Command::Keys {
            command: KeysCommand::RotateKek(args),
        } => keys::rotate_kek(args).await,
        Command::Keys {
            command: KeysCommand::Decommission(args),
        } => keys::decommission(args).await,
        Command::Keys {
            command: KeysCommand::RotateUser(args),
        } => keys::rotate_user(args).await,
        Command::Keys {
            command: KeysCommand::Rewrap(args),
        } => keys::rewrap(args).await,
        Command::Keys {
            command: KeysCommand::Reseal(args),
        } => keys::reseal(args).await,
        Command::Jobs {
            command: JobsCommand::List(args),
        } => jobs::list(args).await,
        Command::Jobs {
            command: JobsCommand::Watch(args),
        } => jobs::watch(args).await,
    }
}

/// Connects to the gateway at `--endpoint`: over TLS for `https://`.
async fn connect(endpoint: &Endpoint) -> anyhow::Result<Channel> {
    let mut channel =
        Channel::from_shared(endpoint.endpoint.clone()).context("invalid --endpoint")?;
    let tls = endpoint.endpoint.starts_with("https://");
    if tls {
        // This build trusts no public roots: the gateway's CA is named.
        let ca = endpoint.ca.as_ref().context(
            "an https:// endpoint needs --ca (or SEALGATE_CA): the CA of the gateway's certificate",
        )?;
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "--ca")?));
        if let (Some(cert), Some(key)) = (&endpoint.cert, &endpoint.key) {
            let pem = read(cert, "--cert")?;
            if let Err(why) = crate::server::tls::check_client_certificate(&pem) {
                anyhow::bail!("--cert {}: {why}", cert.display());
            }
            config = config.identity(Identity::from_pem(pem, read(key, "--key")?));
        }
        channel = channel
            .tls_config(config)
            .context("TLS configuration (--ca, --cert, --key)")?;
    } else if endpoint.ca.is_some() || endpoint.cert.is_some() {
        anyhow::bail!(
            "--ca, --cert and --key need an https:// endpoint; {} is plaintext",
            endpoint.endpoint
        );
    } else {
        let _ = PLAINTEXT_ENDPOINT.set(endpoint.endpoint.clone());
    }
    channel
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", endpoint.endpoint))
}

/// A PEM file named by an option.
fn read(path: &Path, option: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{option} {}", path.display()))
}
