//! `sealgate jobs list` and `sealgate jobs watch ID`: durable jobs and
//! their progress. `watch` (and every `--wait`) ends when the job does,
//! exiting non-zero if it FAILED.

use std::io::{IsTerminal, Write};

use anyhow::bail;

use super::{connect, Endpoint};
use crate::api::pb;
use pb::key_admin_service_client::KeyAdminServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// At most this many jobs, newest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Only jobs in this state: pending, running, done or failed.
    #[arg(long, value_parser = ["pending", "running", "done", "failed"])]
    state: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(super) struct WatchArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The job id.
    id: String,
}

pub(super) fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Pending) => "PENDING",
        Ok(pb::JobState::Running) => "RUNNING",
        Ok(pb::JobState::Done) => "DONE",
        Ok(pb::JobState::Failed) => "FAILED",
        _ => "UNKNOWN",
    }
}

/// One line per job: `id  kind  state  done/total  [last error]`.
pub(super) async fn list(args: ListArgs) -> anyhow::Result<()> {
    let ListArgs {
        endpoint,
        limit,
        state,
    } = args;
    let state = match state.as_deref() {
        Some("pending") => pb::JobState::Pending,
        Some("running") => pb::JobState::Running,
        Some("done") => pb::JobState::Done,
        Some("failed") => pb::JobState::Failed,
        _ => pb::JobState::Unspecified,
    };
    let mut client = KeyAdminServiceClient::new(connect(&endpoint).await?);
    let jobs = client
        .list_jobs(pb::ListJobsRequest {
            limit,
            state: state as i32,
        })
        .await?
        .into_inner()
        .jobs;
    for j in jobs {
        let mut line = format!(
            "{}\t{}\t{}\t{}/{}",
            j.job_id,
            j.kind,
            state_name(j.state),
            j.done,
            j.total
        );
        if !j.last_error.is_empty() {
            line.push('\t');
            line.push_str(&j.last_error);
        }
        println!("{line}");
    }
    Ok(())
}

pub(super) async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let mut client = KeyAdminServiceClient::new(connect(&args.endpoint).await?);
    watch_job(&mut client, &args.id).await
}

/// Follows a job to its end: a progress bar on a terminal, one line per
/// update otherwise (on stderr either way).
///
/// # Errors
/// If the job FAILED (with its last error), the stream broke, or the job
/// cannot be watched.
pub(super) async fn watch_job(
    client: &mut KeyAdminServiceClient<tonic::transport::Channel>,
    id: &str,
) -> anyhow::Result<()> {
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            job_id: id.to_string(),
        })
        .await?
        .into_inner();
    let terminal = std::io::stderr().is_terminal();
    let mut last = None;
    while let Some(p) = stream.message().await? {
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r\x1b[2K{}", bar(&p));
        } else {
            let mut line = format!(
                "{} {} {}/{}",
                p.job_id,
                state_name(p.state),
                p.done,
                p.total
            );
            if !p.last_error.is_empty() {
                line.push_str(&format!(" last_error: {}", p.last_error));
            }
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        last = Some(p);
    }
    if terminal {
        eprintln!();
    }
    match last {
        Some(p) if p.state == pb::JobState::Done as i32 => Ok(()),
        Some(p) if p.state == pb::JobState::Failed as i32 => {
            bail!("job {} ({}) FAILED: {}", p.job_id, p.kind, p.last_error)
        }
        _ => bail!("job {id}: the watch ended before the job did"),
    }
}

/// `[#########           ] 45% 450/1000 RUNNING` (no percentage while the
/// total is unknown).
fn bar(p: &pb::JobProgress) -> String {
    const WIDTH: u64 = 30;
    let state = state_name(p.state);
    if p.total == 0 {
        return format!("{} {} {} done {state}", p.job_id, p.kind, p.done);
    }
    let filled = (p.done.min(p.total) * WIDTH / p.total) as usize;
    format!(
        "[{}{}] {:3}% {}/{} {state}",
        "#".repeat(filled),
        " ".repeat(WIDTH as usize - filled),
        p.done.min(p.total) * 100 / p.total,
        p.done,
        p.total
    )
}
