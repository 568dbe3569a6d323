//! `sealgate export`: a user's content as one tar archive (ExportUser),
//! their own copy or, with `--case`, a disclosure under a legal case.
//!
//! The archive is written to `FILE.part` and renamed to `FILE` once it is
//! whole. Beside the partial file, `FILE.part.cursor` records which export
//! it belongs to (a digest of the user and the case), the snapshot, and how
//! many of its bytes are synced to disk. A connection that breaks is
//! resumed from there at once (a few attempts); a command that ends
//! before the archive is whole (the gateway gone, the process killed)
//! leaves both files, and the same command run again resumes from the
//! cursor, so that the file ends byte for byte as an uninterrupted export.
//! If the user's objects changed meanwhile the server refuses
//! (`EXPORT_CHANGED`): the partial file and its cursor are removed, and the
//! command says to run again for a new archive.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{connect, Endpoint};
use crate::api::pb;
use pb::export_service_client::ExportServiceClient;

/// Calls made by one run of the command: the first and the resumptions.
const ATTEMPTS: u32 = 4;
/// Archive bytes received between two updates of the cursor (each after a
/// sync of the partial file): what a killed command fetches again at most.
const CURSOR_EVERY: u64 = 64 << 20;

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
    /// The archive to write (`FILE.part` and `FILE.part.cursor` until it is
    /// whole; run again to resume).
    #[arg(short = 'o', long)]
    output: PathBuf,
}

/// Where a partial archive stands: written beside it, after its bytes up
/// to `offset` were synced.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Cursor {
    /// Which export the file is of: hex SHA-256 of the user id and the
    /// case (the user id itself is not written down).
    export: String,
    /// The snapshot the bytes are of.
    snapshot: String,
    /// Archive bytes the file holds for sure.
    offset: u64,
}

/// The partial archive being written and its cursor.
struct Partial {
    file: tokio::fs::File,
    part: PathBuf,
    cursor: PathBuf,
    export: String,
    /// Archive bytes in the file.
    have: u64,
    /// The snapshot, once the server named it.
    snapshot: String,
    /// `have` when the cursor was last written.
    saved: u64,
}

impl Partial {
    /// Opens `part`: resumed from its cursor if the cursor is of the same
    /// export and the file holds what the cursor says (bytes past the
    /// cursor are cut off), otherwise begun empty.
    async fn open(part: PathBuf, export: String) -> anyhow::Result<Self> {
        let cursor = cursor_path(&part);
        let resumable = match read_cursor(&cursor).await {
            Some(c) if c.export == export => match tokio::fs::metadata(&part).await {
                Ok(m) if m.is_file() && m.len() >= c.offset => Some(c),
                _ => None,
            },
            _ => None,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .await
            .with_context(|| format!("cannot create {}", part.display()))?;
        let (have, snapshot) = match resumable {
            Some(c) => (c.offset, c.snapshot),
            None => {
                // Not ours to resume: a stale cursor goes first.
                remove_if_there(&cursor).await?;
                (0, String::new())
            }
        };
        file.set_len(have).await?;
        file.seek(std::io::SeekFrom::Start(have)).await?;
        Ok(Self {
            file,
            part,
            cursor,
            export,
            have,
            snapshot,
            saved: have,
        })
    }

    /// Syncs the file, then records the cursor (written aside, then renamed
    /// over the old one).
    async fn save(&mut self) -> anyhow::Result<()> {
        if self.snapshot.is_empty() {
            return Ok(());
        }
        self.file.flush().await?;
        self.file.sync_data().await?;
        let cursor = Cursor {
            export: self.export.clone(),
            snapshot: self.snapshot.clone(),
            offset: self.have,
        };
        let mut tmp = self.cursor.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        tokio::fs::write(&tmp, serde_json::to_vec(&cursor)?).await?;
        tokio::fs::rename(&tmp, &self.cursor).await?;
        self.saved = self.have;
        Ok(())
    }

    /// Appends archive bytes, saving the cursor every [`CURSOR_EVERY`].
    async fn append(&mut self, data: &[u8]) -> anyhow::Result<()> {
        self.file.write_all(data).await?;
        self.have += data.len() as u64;
        if self.have - self.saved >= CURSOR_EVERY {
            self.save().await?;
        }
        Ok(())
    }

    /// Removes the file and its cursor.
    async fn discard(self) -> anyhow::Result<()> {
        drop(self.file);
        remove_if_there(&self.cursor).await?;
        remove_if_there(&self.part).await
    }
}

pub(super) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let part = part_path(&args.output)?;
    let mut partial = Partial::open(part, export_digest(&args)).await?;
    let resumed = partial.have > 0;
    if resumed {
        eprintln!(
            "export: resuming {} from its {} bytes (snapshot {})",
            partial.part.display(),
            partial.have,
            partial.snapshot
        );
    }
    let mut progress = super::progress::Progress::new("export", None);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Err(e) = fetch(&args, &mut partial, &mut progress).await else {
            break;
        };
        if broken(&e) && attempt < ATTEMPTS {
            keep(&mut partial).await;
            eprintln!(
                "export: connection broken after {} bytes ({e}); resuming",
                partial.have
            );
            continue;
        }
        if changed(&e) || partial.snapshot.is_empty() {
            // Nothing worth resuming: bytes of an older snapshot, or none.
            let (part, had) = (partial.part.clone(), partial.have);
            partial.discard().await?;
            if changed(&e) && (resumed || had > 0) {
                eprintln!(
                    "export: the user's objects changed since {} was begun; it was removed: run the command again for a new archive",
                    part.display()
                );
            }
        } else if keep(&mut partial).await {
            eprintln!(
                "export: {} keeps the {} bytes received; run the command again to resume",
                partial.part.display(),
                partial.have
            );
        }
        return Err(e);
    }
    progress.finish();
    partial.file.sync_all().await?;
    let Partial {
        file,
        part,
        cursor,
        have,
        snapshot,
        ..
    } = partial;
    drop(file);
    tokio::fs::rename(&part, &args.output)
        .await
        .with_context(|| format!("cannot rename into {}", args.output.display()))?;
    remove_if_there(&cursor).await?;
    let count = count_entries(&args.output)?;
    println!(
        "{}: {} objects, {have} bytes, snapshot {snapshot}",
        args.output.display(),
        count
    );
    Ok(())
}

/// Saves the cursor after a failed call (the call's error is the one to
/// report); whether it was saved.
async fn keep(partial: &mut Partial) -> bool {
    match partial.save().await {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "export: cannot record how far {} got: {e:#}",
                partial.part.display()
            );
            false
        }
    }
}

/// One call: from the bytes the file has on (resuming its snapshot if
/// set), appending to it.
async fn fetch(
    args: &ExportArgs,
    partial: &mut Partial,
    progress: &mut super::progress::Progress,
) -> anyhow::Result<()> {
    let mut client =
        ExportServiceClient::new(connect(&args.endpoint).await?).max_decoding_message_size(4 << 20);
    let resume = (!partial.snapshot.is_empty()).then(|| pb::ExportResume {
        snapshot: partial.snapshot.clone(),
        offset: partial.have,
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
        anyhow::ensure!(
            chunk.offset == partial.have,
            "the server sent bytes at {} while {} were expected",
            chunk.offset,
            partial.have
        );
        if !chunk.snapshot.is_empty() && chunk.snapshot != partial.snapshot {
            // A new export: recorded at once, so that a command killed
            // from now on resumes it.
            partial.snapshot = chunk.snapshot;
            partial.save().await?;
        }
        partial.append(&chunk.data).await?;
        progress.add(chunk.data.len() as u64);
    }
    partial.file.flush().await?;
    Ok(())
}

/// Which export a partial file is of: the user and the case.
fn export_digest(args: &ExportArgs) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"sealgate/v1/export-cursor\0");
    ctx.update(args.user.as_bytes());
    ctx.update(b"\0");
    ctx.update(args.case.as_deref().unwrap_or("").as_bytes());
    hex::encode(ctx.finish().as_ref())
}

/// The cursor, if there is a readable one.
async fn read_cursor(path: &Path) -> Option<Cursor> {
    let text = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&text).ok()
}

async fn remove_if_there(path: &Path) -> anyhow::Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Whether the server refused because the user's objects changed.
fn changed(e: &anyhow::Error) -> bool {
    use tonic_types::StatusExt;
    e.downcast_ref::<tonic::Status>().is_some_and(|s| {
        s.code() == tonic::Code::FailedPrecondition
            && s.get_details_error_info()
                .is_some_and(|i| i.reason == crate::error::Reason::ExportChanged.as_str())
    })
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

/// `FILE.part.cursor` beside `FILE.part`.
fn cursor_path(part: &Path) -> PathBuf {
    let mut cursor = part.as_os_str().to_os_string();
    cursor.push(".cursor");
    PathBuf::from(cursor)
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn cursor_of(part: &Path, export: &str, offset: u64) {
        let c = Cursor {
            export: export.into(),
            snapshot: "s".repeat(64),
            offset,
        };
        std::fs::write(cursor_path(part), serde_json::to_vec(&c).unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_partial_file_resumes_from_its_cursor_only_for_the_same_export() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("u.tar.part");

        // Bytes past the cursor (written, not yet recorded) are cut off.
        std::fs::write(&part, [7u8; 100]).unwrap();
        cursor_of(&part, "mine", 60).await;
        let p = Partial::open(part.clone(), "mine".into()).await.unwrap();
        assert_eq!((p.have, p.snapshot.len()), (60, 64));
        drop(p);
        assert_eq!(std::fs::read(&part).unwrap(), [7u8; 60]);

        // Another export's cursor: begun again, the cursor gone.
        cursor_of(&part, "theirs", 60).await;
        let p = Partial::open(part.clone(), "mine".into()).await.unwrap();
        assert_eq!((p.have, p.snapshot.as_str()), (0, ""));
        drop(p);
        assert_eq!(std::fs::metadata(&part).unwrap().len(), 0);
        assert!(!cursor_path(&part).exists());

        // A cursor past what the file holds, or no cursor: begun again.
        std::fs::write(&part, [7u8; 10]).unwrap();
        cursor_of(&part, "mine", 60).await;
        let p = Partial::open(part.clone(), "mine".into()).await.unwrap();
        assert_eq!(p.have, 0);
        drop(p);
        std::fs::write(&part, [7u8; 10]).unwrap();
        let p = Partial::open(part.clone(), "mine".into()).await.unwrap();
        assert_eq!(p.have, 0);
    }
}
