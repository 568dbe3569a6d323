//! The filesystem store's writer: bytes go to a temporary file under
//! `.tmp/`, which a commit syncs and renames over the object's path
//! (create-only with a hard link), syncing the directories on the way; an
//! abort or a drop removes it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::sync_dir;
use crate::blob::{BlobError, BlobWriter, WriteMode};

/// Bytes an upload gathers before one write on a blocking thread.
const WRITE_BUF: usize = 64 * 1024;

pub(super) struct FsWriter {
    file: Option<Arc<std::fs::File>>,
    /// Bytes not written yet, at most [`WRITE_BUF`]; the one buffer of the
    /// upload, handed to the blocking thread that writes it and back.
    buf: Vec<u8>,
    tmp: PathBuf,
    target: PathBuf,
    root: PathBuf,
    mode: WriteMode,
    committed: bool,
    /// Stored as the file's mtime.
    created: SystemTime,
}

impl FsWriter {
    /// A writer into `tmp` (open as `file`), published at `target` under
    /// `root` on commit, as `created`.
    pub(super) fn new(
        file: std::fs::File,
        tmp: PathBuf,
        target: PathBuf,
        root: PathBuf,
        mode: WriteMode,
        created: SystemTime,
    ) -> Self {
        Self {
            file: Some(Arc::new(file)),
            buf: Vec::new(),
            tmp,
            target,
            root,
            mode,
            committed: false,
            created,
        }
    }
}

#[async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, mut data: &[u8]) -> Result<(), BlobError> {
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(WRITE_BUF);
            }
            let n = data.len().min(WRITE_BUF - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == WRITE_BUF {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), BlobError> {
        self.flush().await?;
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("writer closed"))?;
        let created = self.created;
        let file = tokio::task::spawn_blocking(move || {
            file.set_modified(created)?;
            file.sync_all()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        drop(file);
        let parent = self
            .target
            .parent()
            .ok_or_else(|| std::io::Error::other("no parent"))?;
        if tokio::fs::metadata(parent).await.is_err() {
            tokio::fs::create_dir_all(parent).await?;
            // Make the new directories themselves durable.
            let mut dir = parent;
            while let Some(up) = dir.parent() {
                sync_dir(up).await?;
                if up == self.root {
                    break;
                }
                dir = up;
            }
        }
        match self.mode {
            WriteMode::Replace => tokio::fs::rename(&self.tmp, &self.target).await?,
            WriteMode::CreateOnly => {
                // link(2) fails if the target exists: an atomic create-only
                // publish. The temporary name is removed afterwards.
                match tokio::fs::hard_link(&self.tmp, &self.target).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(BlobError::AlreadyExists)
                    }
                    Err(e) => return Err(e.into()),
                }
                tokio::fs::remove_file(&self.tmp).await?;
            }
        }
        self.committed = true;
        sync_dir(parent).await?;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) -> Result<(), BlobError> {
        self.file.take();
        match tokio::fs::remove_file(&self.tmp).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.committed = true; // nothing left for Drop to clean
        Ok(())
    }

    fn created(&self) -> SystemTime {
        self.created
    }
}

impl FsWriter {
    /// Writes the gathered bytes on a blocking thread; the buffer comes
    /// back empty for the next ones.
    async fn flush(&mut self) -> Result<(), BlobError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .clone()
            .ok_or_else(|| std::io::Error::other("writer closed"))?;
        let mut buf = std::mem::take(&mut self.buf);
        let tmp = self.tmp.clone();
        let buf = tokio::task::spawn_blocking(move || {
            // Object bytes never take the room erasures need.
            crate::disk::leave_room(&tmp, buf.len() as u64)?;
            std::io::Write::write_all(&mut &*file, &buf)?;
            buf.clear();
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        self.buf = buf;
        Ok(())
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if !self.committed {
            // A cancelled upload: the temporary file must not survive.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
