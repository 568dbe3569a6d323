//! The `sealgate` command line: `serve` runs the gateway; the other commands
//! are a gRPC client for it. Scripts and runbooks rely on these names.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::api::pb;
use crate::config::Config;

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

/// Names one object.
#[derive(Debug, clap::Args)]
struct ObjectArgs {
    /// The owner's user id.
    #[arg(long)]
    user: String,
    /// The space (`moments`, `channels`, ...).
    #[arg(long)]
    space: String,
    /// The object id.
    #[arg(long)]
    id: String,
}

impl From<ObjectArgs> for pb::ObjectRef {
    fn from(o: ObjectArgs) -> Self {
        Self {
            user_id: o.user,
            space: o.space,
            object_id: o.id,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (default ./sealgate-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Listen address (default 127.0.0.1:50051).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Store a file (or stdin with `-`); prints the object id.
    Put {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        user: String,
        #[arg(long)]
        space: String,
        /// Object id; generated if absent.
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// File to upload, or `-` for stdin.
        file: PathBuf,
    },
    /// Fetch an object to stdout or a file.
    Get {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        object: ObjectArgs,
        /// Byte range START-END, END inclusive (END may be omitted).
        #[arg(long)]
        range: Option<String>,
        /// Output file (default stdout).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Delete an object.
    Rm {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        object: ObjectArgs,
    },
    /// List a user's objects in a space: `id<TAB>size` per line (`DAMAGED`
    /// instead of the size for an object that fails its integrity check).
    Ls {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        user: String,
        #[arg(long)]
        space: String,
    },
    /// Erase a user (crypto-shredding); prints the receipt.
    Erase {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        user: String,
    },
    /// Key administration.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// A user's key versions, without key material.
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
        #[arg(long)]
        user: String,
    },
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

async fn connect(endpoint: &Endpoint) -> anyhow::Result<Channel> {
    Channel::from_shared(endpoint.endpoint.clone())
        .context("invalid --endpoint")?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", endpoint.endpoint))
}

/// Parses `START-END` (END inclusive, optional) into start and exclusive end.
fn parse_range(s: &str) -> anyhow::Result<pb::ByteRange> {
    let (start, end) = s
        .split_once('-')
        .context("--range must look like START-END")?;
    let start: u64 = start
        .trim()
        .parse()
        .context("--range START must be a number")?;
    let end = match end.trim() {
        "" => None,
        e => {
            let e: u64 = e.parse().context("--range END must be a number")?;
            anyhow::ensure!(e >= start, "--range END must not be before START");
            Some(e + 1)
        }
    };
    Ok(pb::ByteRange { start, end })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use pb::content_service_client::ContentServiceClient;
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
        } => {
            crate::telemetry::init();
            let mut config = Config::load(config.as_deref(), std::env::vars())?;
            if let Some(d) = data_dir {
                config.data_dir = d;
            }
            if let Some(l) = listen {
                config.listen = l;
            }
            config.validate()?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            crate::server::run(config, listener, shutdown_signal()).await?;
            Ok(())
        }
        Command::Put {
            endpoint,
            user,
            space,
            id,
            content_type,
            file,
        } => {
            let mut client = ContentServiceClient::new(connect(&endpoint).await?);
            // A regular file's size is declared, so the gateway can stream it
            // straight to storage; stdin's is unknown.
            let (mut input, size): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, _) =
                if file.as_os_str() == "-" {
                    (Box::new(tokio::io::stdin()), None)
                } else {
                    let f = tokio::fs::File::open(&file)
                        .await
                        .with_context(|| format!("cannot open {}", file.display()))?;
                    let meta = f.metadata().await?;
                    (Box::new(f), meta.is_file().then_some(meta.len()))
                };
            let header = pb::PutObjectRequest {
                part: Some(pb::put_object_request::Part::Header(pb::PutObjectHeader {
                    user_id: user,
                    space,
                    object_id: id.unwrap_or_default(),
                    content_type,
                    attributes: Default::default(),
                    size,
                })),
            };
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(header).await?;
            let reader = tokio::spawn(async move {
                loop {
                    let mut buf = vec![0u8; 1 << 20];
                    let n = input.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    buf.truncate(n);
                    let msg = pb::PutObjectRequest {
                        part: Some(pb::put_object_request::Part::Data(buf.into())),
                    };
                    if tx.send(msg).await.is_err() {
                        return Ok(());
                    }
                }
            });
            let response = client
                .put_object(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?;
            reader.await??;
            let info = response
                .into_inner()
                .info
                .context("no object info in response")?;
            println!("{}", info.object_id);
            Ok(())
        }
        Command::Get {
            endpoint,
            object,
            range,
            output,
        } => {
            let range = range.as_deref().map(parse_range).transpose()?;
            let mut client = ContentServiceClient::new(connect(&endpoint).await?);
            let mut stream = client
                .get_object(pb::GetObjectRequest {
                    object: Some(object.into()),
                    range,
                })
                .await?
                .into_inner();
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match &output {
                Some(path) => Box::new(
                    tokio::fs::File::create(path)
                        .await
                        .with_context(|| format!("cannot create {}", path.display()))?,
                ),
                None => Box::new(tokio::io::stdout()),
            };
            while let Some(msg) = stream.message().await? {
                if let Some(pb::get_object_response::Part::Data(d)) = msg.part {
                    out.write_all(&d).await?;
                }
            }
            out.flush().await?;
            Ok(())
        }
        Command::Rm { endpoint, object } => {
            let mut client = ContentServiceClient::new(connect(&endpoint).await?);
            let r = client
                .delete_object(pb::DeleteObjectRequest {
                    object: Some(object.into()),
                })
                .await?
                .into_inner();
            anyhow::ensure!(r.deleted, tonic::Status::not_found("object not found"));
            Ok(())
        }
        Command::Ls {
            endpoint,
            user,
            space,
        } => {
            let mut client = ContentServiceClient::new(connect(&endpoint).await?);
            let mut token = String::new();
            loop {
                let page = client
                    .list_objects(pb::ListObjectsRequest {
                        user_id: user.clone(),
                        space: space.clone(),
                        page_size: 1000,
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for o in page.objects {
                    if o.damaged {
                        println!("{}\tDAMAGED", o.object_id);
                    } else {
                        println!("{}\t{}", o.object_id, o.size);
                    }
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                token = page.next_page_token;
            }
        }
        Command::Erase { endpoint, user } => {
            let mut client =
                pb::erasure_service_client::ErasureServiceClient::new(connect(&endpoint).await?);
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
        Command::Keys {
            command: KeysCommand::Status { endpoint, user },
        } => {
            let mut client =
                pb::key_admin_service_client::KeyAdminServiceClient::new(connect(&endpoint).await?);
            let r = client
                .key_status(pb::KeyStatusRequest { user_id: user })
                .await?
                .into_inner();
            println!("pseudonym: {}", r.pseudonym);
            println!("shard: {}", r.shard);
            println!("erased: {}", r.erased);
            println!("master_key_version: {}", r.master_key_version);
            for v in r.versions {
                let state =
                    pb::UserKeyState::try_from(v.state).map_or("unknown", |s| s.as_str_name());
                println!(
                    "user_key_version: {} state={} kek_version={} created_at_unix_ms={}",
                    v.version, state, v.kek_version, v.created_at_unix_ms
                );
            }
            Ok(())
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive() {
        let r = parse_range("10-19").unwrap();
        assert_eq!((r.start, r.end), (10, Some(20)));
        let r = parse_range("5-").unwrap();
        assert_eq!((r.start, r.end), (5, None));
        assert!(parse_range("9-3").is_err());
        assert!(parse_range("x").is_err());
    }
}
