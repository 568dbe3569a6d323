//! `sealgate keys ...`: key status (never key material), master rotation
//! and retirement, KEK rotation.

use super::{connect, Endpoint};
use crate::api::pb;
use pb::key_admin_service_client::KeyAdminServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// A user's key versions.
    #[arg(long, conflicts_with = "pseudonym")]
    user: Option<String>,
    /// A user's key versions, by pseudonym (as receipts and the audit
    /// trail name users).
    #[arg(long)]
    pseudonym: Option<String>,
}

/// `sealgate keys status [--user U | --pseudonym P]`: one `name: value`
/// line each; without a user, the hierarchy as a whole.
pub(super) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs {
        endpoint,
        user,
        pseudonym,
    } = args;
    let mut client = KeyAdminServiceClient::new(connect(&endpoint).await?);
    let r = client
        .key_status(pb::KeyStatusRequest {
            user_id: user.unwrap_or_default(),
            pseudonym: pseudonym.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if let Some(h) = r.hierarchy {
        for m in &h.masters {
            if m.kms_key_arn.is_empty() {
                println!(
                    "master_version: {} kek_versions={}",
                    m.version, m.kek_versions
                );
            } else {
                println!(
                    "master_version: {} kek_versions={} kms_key={}",
                    m.version, m.kek_versions, m.kms_key_arn
                );
            }
        }
        println!("shards: {} with_kek={}", h.shards, h.shards_with_kek);
        println!(
            "kek_versions: {} max_per_shard={}",
            h.kek_versions, h.max_kek_versions_per_shard
        );
        if h.oldest_kek_created_unix_ms > 0 {
            let age = crate::keys::unix_ms().saturating_sub(h.oldest_kek_created_unix_ms) / 1000;
            println!("oldest_kek_age_seconds: {age}");
        }
        match h.erasure_horizon_seconds {
            0 => println!("erasure_horizon: none (keys.kek_max_age_days = 0: no schedule)"),
            s => println!("erasure_horizon_seconds: {s}"),
        }
        let time = |ms: i64| match ms {
            0 => "never".to_string(),
            ms => crate::clock::format_time(ms),
        };
        println!(
            "master_keys_changed: {}",
            time(h.master_keys_changed_unix_ms)
        );
        println!("last_backup: {}", time(h.last_backup_unix_ms));
        let state = crate::keys::master::checks::BackupState {
            keys_changed_ms: (h.master_keys_changed_unix_ms > 0)
                .then_some(h.master_keys_changed_unix_ms),
            backup_ms: (h.last_backup_unix_ms > 0).then_some(h.last_backup_unix_ms),
        };
        if state.behind() {
            println!(
                "backup_behind: yes (no backup since the master keys last changed: run \
                 sealgate backup)"
            );
        } else {
            println!("backup_behind: no");
        }
        return Ok(());
    }
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
#[command(group(clap::ArgGroup::new("which").required(true).args(["shard", "all"])))]
pub(super) struct RotateKekArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// A shard to rotate (repeatable).
    #[arg(long)]
    shard: Vec<u32>,
    /// Every shard.
    #[arg(long)]
    all: bool,
    /// Follow the job to its end; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
}

/// `sealgate keys rotate-kek (--shard N | --all) [--wait]`: prints
/// `job_id`.
pub(super) async fn rotate_kek(args: RotateKekArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    let r = client
        .rotate_kek(pb::RotateKekRequest {
            shards: args.shard,
            all: args.all,
        })
        .await?
        .into_inner();
    println!("job_id: {}", r.job_id);
    if args.wait {
        super::jobs::watch_job(&mut client, &r.job_id).await?;
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

#[derive(Debug, clap::Args)]
pub(super) struct DecommissionArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The gateway's configured region (`blob.region`), repeated: the
    /// confirmation that this is the service to end.
    #[arg(long)]
    confirm: String,
}

/// `sealgate keys decommission --confirm REGION`: prints the receipt.
pub(super) async fn decommission(args: DecommissionArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    let r = client
        .decommission(pb::DecommissionRequest {
            confirm_region: args.confirm,
        })
        .await?
        .into_inner();
    println!("decommissioned_at_unix_ms: {}", r.decommissioned_at_unix_ms);
    println!("user_keys_destroyed: {}", r.user_keys_destroyed);
    println!("kek_versions_destroyed: {}", r.kek_versions_destroyed);
    println!(
        "master_versions_destroyed: {:?}",
        r.master_versions_destroyed
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(super) struct RotateUserArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[arg(long)]
    user: String,
}

/// `sealgate keys rotate-user --user U`: prints the pseudonym and the new
/// active version.
pub(super) async fn rotate_user(args: RotateUserArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    let r = client
        .rotate_user_key(pb::RotateUserKeyRequest { user_id: args.user })
        .await?
        .into_inner();
    println!("pseudonym: {}", r.pseudonym);
    println!("active_version: {}", r.active_version);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(super) struct RewrapArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[arg(long)]
    user: String,
    /// Follow the job to its end; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
}

/// `sealgate keys rewrap --user U [--wait]`: prints `job_id`, the
/// pseudonym and the version every key slot moves to.
pub(super) async fn rewrap(args: RewrapArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    let r = client
        .rewrap_user(pb::RewrapUserRequest { user_id: args.user })
        .await?
        .into_inner();
    println!("job_id: {}", r.job_id);
    println!("pseudonym: {}", r.pseudonym);
    println!("target_version: {}", r.target_version);
    if args.wait {
        super::jobs::watch_job(&mut client, &r.job_id).await?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(super) struct ResealArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The suite to re-encrypt into: `aes-256-gcm` or `sm4-gcm`.
    #[arg(long)]
    suite: String,
    /// One space; without it, every configured space.
    #[arg(long)]
    space: Option<String>,
    /// Follow the job to its end; exit non-zero if it fails.
    #[arg(long)]
    wait: bool,
}

/// `sealgate keys reseal --suite S [--space SPACE] [--wait]`: prints
/// `job_id`, the suite and the space (`*` for every space).
pub(super) async fn reseal(args: ResealArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    let r = client
        .reseal(pb::ResealRequest {
            suite: args.suite,
            space: args.space.unwrap_or_default(),
        })
        .await?
        .into_inner();
    println!("job_id: {}", r.job_id);
    println!("suite: {}", r.suite);
    println!("space: {}", if r.space.is_empty() { "*" } else { &r.space });
    if args.wait {
        super::jobs::watch_job(&mut client, &r.job_id).await?;
    }
    Ok(())
}
