//! `sealgate put`: stores a file (or stdin) and prints the object id.

use std::path::PathBuf;

use anyhow::Context;
use tokio::io::AsyncReadExt;

use super::{connect, Endpoint, UserSpace};
use crate::api::pb;
use pb::content_service_client::ContentServiceClient;

#[derive(Debug, clap::Args)]
pub(super) struct PutArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(flatten)]
    at: UserSpace,
    /// Object id; generated if absent.
    #[arg(long)]
    id: Option<String>,
    #[arg(long, default_value = "application/octet-stream")]
    content_type: String,
    /// File to upload, or `-` for stdin.
    file: PathBuf,
}

pub(super) async fn run(args: PutArgs) -> anyhow::Result<()> {
    let PutArgs {
        endpoint,
        at: UserSpace { user, space },
        id,
        content_type,
        file,
    } = args;
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
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(header).await?;
    // The upload ends with a finish carrying the SHA-256 of what was sent;
    // if reading the input fails, the stream ends without it and the
    // gateway stores nothing.
    let reader = tokio::spawn(async move {
        let mut progress = super::progress::Progress::new("put", size);
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = input.read(&mut buf).await?;
            if n == 0 {
                progress.finish();
                let finish = pb::PutObjectRequest {
                    part: Some(pb::put_object_request::Part::Finish(pb::PutObjectFinish {
                        sha256: digest.finish().as_ref().to_vec().into(),
                    })),
                };
                let _ = tx.send(finish).await;
                return Ok::<_, std::io::Error>(());
            }
            buf.truncate(n);
            digest.update(&buf);
            progress.add(n as u64);
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
