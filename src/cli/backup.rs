//! `sealgate backup DIR`: a consistent online backup of the key store and
//! the keyring of the deployment on this machine (`crate::backup`),
//! checked by opening it; prints its manifest.

use std::path::PathBuf;

use crate::config::{Config, Flags};

#[derive(Debug, clap::Args)]
pub(super) struct BackupArgs {
    /// A new (or empty) directory for the backup.
    dir: PathBuf,
    /// The gateway's TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The gateway's data directory (default ./sealgate-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub(super) async fn run(args: BackupArgs) -> anyhow::Result<()> {
    let config = Config::load_with(
        args.config.as_deref(),
        std::env::vars(),
        &Flags {
            listen: None,
            data_dir: args.data_dir,
        },
    )?;
    let (store, sqlite, keyring) = crate::server::open_for_backup(&config).await?;
    let taken = crate::backup::take(
        crate::backup::Source {
            store: &*store,
            sqlite,
            keyring: keyring.as_ref(),
            kek_max_age: config.keys.kek_max_age(),
        },
        &args.dir,
    )
    .await;
    store.close().await;
    let report = taken?;
    print!("{}", report.text(sqlite));
    Ok(())
}
