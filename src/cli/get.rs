//! `sealgate get`: fetches an object, or a byte range of it, to stdout or a file.
//!
//! With `-o`, the bytes go to a temporary file beside the target, renamed
//! over it only once the whole object arrived.

use std::path::PathBuf;

use anyhow::Context;
use tokio::io::AsyncWriteExt;

use super::{connect, Endpoint, ObjectArgs};
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct GetArgs {
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
}

pub(super) async fn run(args: GetArgs) -> anyhow::Result<()> {
    let GetArgs {
        endpoint,
        object,
        range,
        output,
    } = args;
    let range = range.as_deref().map(parse_range).transpose()?;
    let mut client = ContentServiceClient::new(connect(&endpoint).await?);
    let mut stream = client
        .get_object(pb::GetObjectRequest {
            object: Some(object.into()),
            range,
        })
        .await?
        .into_inner();
    match output {
        Some(path) => to_file(&mut stream, range.as_ref(), &path).await,
        None => {
            let mut out = tokio::io::stdout();
            copy(&mut stream, range.as_ref(), &mut out).await?;
            Ok(out.flush().await?)
        }
    }
}

/// Writes the object's bytes to `out`.
async fn copy(
    stream: &mut tonic::Streaming<pb::GetObjectResponse>,
    range: Option<&pb::ByteRange>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let mut progress = None;
    while let Some(msg) = stream.message().await? {
        match msg.part {
            Some(pb::get_object_response::Part::Info(info)) => {
                let total = match range {
                    Some(r) => r
                        .end
                        .unwrap_or(info.size)
                        .min(info.size)
                        .saturating_sub(r.start),
                    None => info.size,
                };
                progress = Some(super::progress::Progress::new("get", Some(total)));
            }
            Some(pb::get_object_response::Part::Data(d)) => {
                out.write_all(&d).await?;
                if let Some(p) = progress.as_mut() {
                    p.add(d.len() as u64);
                }
            }
            None => {}
        }
    }
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    Ok(())
}

/// Writes the object to a temporary file beside `path` and renames it into
/// place only once the whole object arrived and was written: a stream that
/// fails halfway (an object damaged at rest, a lost connection) leaves no
/// file, and never a truncated one at `path`.
async fn to_file(
    stream: &mut tonic::Streaming<pb::GetObjectResponse>,
    range: Option<&pb::ByteRange>,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.part", crate::names::random_id()));
    let tmp = path.with_file_name(tmp_name);
    let result = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        copy(stream, range, &mut file).await?;
        file.sync_all().await?;
        tokio::fs::rename(&tmp, path)
            .await
            .with_context(|| format!("cannot rename into {}", path.display()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Parses `START-END` (END inclusive, optional) into start and exclusive end.
pub(super) fn parse_range(s: &str) -> anyhow::Result<pb::ByteRange> {
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
