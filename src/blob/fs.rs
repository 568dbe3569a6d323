//! Filesystem blob store: one file per object under
//! `{root}/{space}/{owner}/{name}`.
//!
//! Writes go to a temporary file in `{root}/.tmp`, which is fsynced, renamed
//! into place and followed by an fsync of the directory, so an object is
//! either absent or complete, across crashes too. Temporary files left by a
//! crash are removed when the store opens. Every path segment is checked
//! again here, so no key can name a file outside the root.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::{
    check_patch, check_segment, BlobEntry, BlobError, BlobKey, BlobReader, BlobStore, BlobWriter,
    ByteStream, WriteMode,
};

const TMP_DIR: &str = ".tmp";
const READ_BUF: usize = 64 * 1024;

/// The filesystem store.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root` and removes
    /// temporary files a crash may have left.
    ///
    /// # Errors
    /// I/O errors creating or cleaning the directories.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        let tmp = root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp).await?;
        let mut entries = tokio::fs::read_dir(&tmp).await?;
        while let Some(entry) = entries.next_entry().await? {
            tokio::fs::remove_file(entry.path()).await?;
        }
        Ok(Self { root })
    }

    fn dir(&self, space: &str, owner: &str) -> Result<PathBuf, BlobError> {
        check_segment(space)?;
        check_segment(owner)?;
        Ok(self.root.join(space).join(owner))
    }

    fn path(&self, key: &BlobKey) -> Result<PathBuf, BlobError> {
        check_segment(&key.name)?;
        Ok(self.dir(&key.space, &key.owner)?.join(&key.name))
    }
}

fn random_name() -> String {
    format!("{}.part", crate::names::random_id())
}

async fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
    Ok(())
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn create(
        &self,
        key: &BlobKey,
        mode: WriteMode,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        let target = self.path(key)?;
        let tmp = self.root.join(TMP_DIR).join(random_name());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await?;
        Ok(Box::new(FsWriter {
            file: Some(tokio::io::BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            target,
            root: self.root.clone(),
            mode,
            committed: false,
        }))
    }

    async fn open(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        let path = self.path(key)?;
        let opened = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            Ok::<_, std::io::Error>((file, len))
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        match opened {
            Ok((file, len)) => Ok(Box::new(FsReader {
                file: Arc::new(file),
                len,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, BlobError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    sync_dir(parent).await?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies the object to a temporary file, patches the copy and renames
    /// it over the original: atomic, at the cost of a local copy.
    async fn patch(&self, key: &BlobKey, offset: u64, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(key)?;
        check_patch(offset, bytes.len())?;
        let tmp = self.root.join(TMP_DIR).join(random_name());
        let bytes = bytes.to_vec();
        let parent = path.parent().map(Path::to_owned);
        let result = tokio::task::spawn_blocking({
            let tmp = tmp.clone();
            move || -> Result<(), BlobError> {
                let len = match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(BlobError::NotFound)
                    }
                    Err(e) => return Err(e.into()),
                };
                if offset + bytes.len() as u64 > len {
                    return Err(BlobError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "patch past the end of the object",
                    )));
                }
                std::fs::copy(&path, &tmp)?;
                let file = std::fs::OpenOptions::new().write(true).open(&tmp)?;
                file.write_all_at(&bytes, offset)?;
                file.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                Ok(())
            }
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result?;
        if let Some(parent) = parent {
            sync_dir(&parent).await?;
        }
        Ok(())
    }

    async fn list(
        &self,
        space: &str,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlobEntry>, BlobError> {
        let dir = self.dir(space, owner)?;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut names = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if check_segment(&name).is_ok() && after.is_none_or(|a| name.as_str() > a) {
                names.push(name);
            }
        }
        names.sort_unstable();
        names.truncate(limit);
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // An object deleted between listing and stat is simply skipped.
            match tokio::fs::metadata(dir.join(&name)).await {
                Ok(m) => out.push(BlobEntry { name, len: m.len() }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

struct FsWriter {
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    tmp: PathBuf,
    target: PathBuf,
    root: PathBuf,
    mode: WriteMode,
    committed: bool,
}

#[async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("writer closed"))?;
        file.write_all(data).await?;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), BlobError> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("writer closed"))?;
        file.flush().await?;
        let file = file.into_inner();
        file.sync_all().await?;
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
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if !self.committed {
            // A cancelled upload: the temporary file must not survive.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

struct FsReader {
    file: Arc<std::fs::File>,
    len: u64,
}

/// Positional read of `len` bytes at `offset` on a blocking thread; the file
/// has no shared cursor, so concurrent reads of one object cannot interfere.
async fn read_at(file: Arc<std::fs::File>, offset: u64, len: usize) -> Result<Bytes, BlobError> {
    tokio::task::spawn_blocking(move || {
        let mut buf = BytesMut::zeroed(len);
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf.freeze())
    })
    .await
    .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
}

#[async_trait]
impl BlobReader for FsReader {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read(&mut self, range: Range<u64>) -> Result<Bytes, BlobError> {
        let len = range_len(&range, self.len)?;
        read_at(self.file.clone(), range.start, len).await
    }

    async fn stream(&mut self, range: Range<u64>) -> Result<ByteStream, BlobError> {
        range_len(&range, self.len)?;
        let file = self.file.clone();
        let stream = futures_util::stream::unfold(range, move |range| {
            let file = file.clone();
            async move {
                if range.start >= range.end {
                    return None;
                }
                let n = (range.end - range.start).min(READ_BUF as u64) as usize;
                match read_at(file, range.start, n).await {
                    Ok(bytes) => Some((Ok(bytes), range.start + n as u64..range.end)),
                    Err(e) => Some((Err(e), range.end..range.end)),
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

fn range_len(range: &Range<u64>, len: u64) -> Result<usize, BlobError> {
    if range.start > range.end || range.end > len {
        return Err(BlobError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "read past the end of the object",
        )));
    }
    usize::try_from(range.end - range.start)
        .map_err(|_| BlobError::Io(std::io::Error::other("range too large")))
}
