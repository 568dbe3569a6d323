//! `sealgate get`: fetches an object, or a byte range of it, to stdout or a file.

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
