//! `sealgate export`: a user's content as one tar archive (ExportUser),
//! their own copy or, with `--case`, a disclosure under a legal case.
//!
//! The archive is written to `FILE.part` and renamed to `FILE` once it is
//! whole. A connection that breaks is resumed from the bytes the file
//! holds (a few attempts); if the user's objects changed meanwhile the
//! server refuses (`EXPORT_CHANGED`) and the command says to start again.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::AsyncWriteExt;

use super::{connect, Endpoint};
use crate::api::pb;
use pb::export_service_client::ExportServiceClient;

/// Calls made for one archive: the first and the resumptions.
const ATTEMPTS: u32 = 4;

#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// The user whose content is exported.
    #[arg(long)]
    user: String,
    /// The legal case the disclosure is made under (role legal); without
    /// it, the user's own copy (role content).
    #[arg(long)]
    case: Option<String>,
    /// The archive to write (`FILE.part` until it is whole).
    #[arg(short = 'o', long)]
    output: PathBuf,
}

pub(super) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let part = part_path(&args.output)?;
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut have = 0u64;
    let mut snapshot = String::new();
    let mut progress = super::progress::Progress::new("export", None);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fetch(&args, &mut file, &mut have, &mut snapshot, &mut progress).await {
            Ok(()) => break,
            Err(e) if attempt < ATTEMPTS && broken(&e) => {
                eprintln!("export: connection broken after {have} bytes ({e}); resuming");
            }
            Err(e) => {
                if e.downcast_ref::<tonic::Status>()
                    .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition && have > 0)
                {
                    eprintln!(
                        "export: {} holds the {have} bytes received; remove it and start again",
                        part.display()
                    );
                }
                return Err(e);
            }
        }
    }
    progress.finish();
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&part, &args.output)
        .await
        .with_context(|| format!("cannot rename into {}", args.output.display()))?;
    let count = count_entries(&args.output)?;
    println!(
        "{}: {} objects, {have} bytes, snapshot {snapshot}",
        args.output.display(),
        count
    );
    Ok(())
}

/// One call: from `have` on (resuming `snapshot` if set), appending to
/// `file`.
async fn fetch(
    args: &ExportArgs,
    file: &mut tokio::fs::File,
    have: &mut u64,
    snapshot: &mut String,
    progress: &mut super::progress::Progress,
) -> anyhow::Result<()> {
    let mut client =
        ExportServiceClient::new(connect(&args.endpoint).await?).max_decoding_message_size(4 << 20);
    let resume = (!snapshot.is_empty()).then(|| pb::ExportResume {
        snapshot: snapshot.clone(),
        offset: *have,
    });
    let mut stream = client
        .export_user(pb::ExportUserRequest {
            user_id: args.user.clone(),
            case_ref: args.case.clone().unwrap_or_default(),
            resume,
        })
        .await?
        .into_inner();
    while let Some(chunk) = stream.message().await? {
        if !chunk.snapshot.is_empty() {
            *snapshot = chunk.snapshot;
        }
        anyhow::ensure!(
            chunk.offset == *have,
            "the server sent bytes at {} while {have} were expected",
            chunk.offset
        );
        file.write_all(&chunk.data).await?;
        *have += chunk.data.len() as u64;
        progress.add(chunk.data.len() as u64);
    }
    file.flush().await?;
    Ok(())
}

/// Whether an error is a broken connection worth resuming after: a
/// status the transport made up (it has a source), or one saying the
/// server went away; never a refusal.
fn broken(e: &anyhow::Error) -> bool {
    use tonic::Code;
    let status = e.downcast_ref::<tonic::Status>().is_some_and(|s| {
        std::error::Error::source(s).is_some()
            || matches!(
                s.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown
            )
    });
    status || e.downcast_ref::<tonic::transport::Error>().is_some()
}

/// `FILE.part` beside `FILE`.
fn part_path(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut part = name.to_os_string();
    part.push(".part");
    Ok(path.with_file_name(part))
}

/// The objects in a finished archive: its regular files but the
/// manifest, found by walking the headers (only they are read).
fn count_entries(path: &Path) -> anyhow::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; 512];
    let mut entries = 0u64;
    let mut pax_size = None;
    loop {
        file.read_exact(&mut header)
            .context("the archive ends without its end blocks")?;
        if header.iter().all(|&b| b == 0) {
            return Ok(entries.saturating_sub(1));
        }
        let field = String::from_utf8_lossy(&header[124..135]).replace('\0', "");
        let mut size = u64::from_str_radix(field.trim(), 8).context("a malformed tar header")?;
        match header[156] {
            b'x' => {
                let mut records = vec![0u8; usize::try_from(size)?];
                file.read_exact(&mut records)?;
                pax_size = String::from_utf8_lossy(&records)
                    .lines()
                    .find_map(|l| l.split_once(" size=").and_then(|(_, v)| v.parse().ok()));
                file.seek(SeekFrom::Current(i64::try_from(
                    size.next_multiple_of(512) - size,
                )?))?;
                continue;
            }
            _ => {
                size = pax_size.take().unwrap_or(size);
                entries += 1;
            }
        }
        file.seek(SeekFrom::Current(i64::try_from(
            size.next_multiple_of(512),
        )?))?;
    }
}
