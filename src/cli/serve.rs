//! `sealgate serve`: runs the gateway until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::{Config, Flags};

#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (default ./sealgate-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address (default 127.0.0.1:50051).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config,
        data_dir,
        listen,
    } = args;
    // The flags replace the file's and the environment's values before
    // anything is checked.
    let config = Config::load_with(
        config.as_deref(),
        std::env::vars(),
        &Flags { listen, data_dir },
    )?;
    crate::telemetry::init(config.log.format == crate::config::LogFormat::Json);
    // The binary raised the soft descriptor limit before the runtime
    // started (`main.rs`); the limits are derived from the raised one.
    crate::server::descriptors::log_raise();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    crate::server::run(config, listener, shutdown_signal()).await?;
    Ok(())
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
