//! Filesystem blob store: one file per object under
//! `{root}/{space}/{owner}/{name}`.
//!
//! Writes go to a temporary file in `{root}/.tmp`, which is fsynced, renamed
//! into place and followed by an fsync of the directory, so an object is
//! either absent or complete, across crashes too. Temporary files left by a
//! crash are removed when the store opens. Every path segment is checked
//! again here, so no key can name a file outside the root.
//!
//! The deployment id is the file [`STORE_ID_FILE`] at the root, published
//! create-only (a temporary file in the root, fsynced, hard-linked into
//! place, the root fsynced).
//!
//! Opening an object reads its first 16 KiB (128 KiB when it is to be read
//! whole, all of an item) in the same trip to a blocking thread, so a small
//! object costs one trip; a writer gathers 64 KiB per blocking write. A
//! read whose file and bytes are all in the kernel's caches skips the
//! trip: it is tried first on the calling thread with calls that fail
//! rather than wait on the disk (`openat2` with `RESOLVE_CACHED`,
//! `preadv2` with `RWF_NOWAIT`), and goes to a blocking thread only if one
//! would have waited. The trip costs several times what reading a cached
//! 64 KiB photo does. A
//! key-slot rewrite copies the file it checked, through the open handle,
//! with the new slot, and renames the copy over the path only if the path
//! still names that file.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{
    check_segment, check_slot_fits, check_store_id, BlobEntry, BlobError, BlobKey, BlobReader,
    BlobStore, BlobWriter, ByteStream, SlotRewrite, WriteMode, KEY_SLOT_RANGE,
};
use crate::crypto::envelope::KeySlot;
use writer::FsWriter;

mod writer;

const TMP_DIR: &str = ".tmp";
/// The file at the root of the store that records its deployment id. Its
/// leading dot keeps it out of every key (`check_segment`).
pub const STORE_ID_FILE: &str = ".store-id";
/// Longest store-id file read back.
const MAX_STORE_ID_BYTES: u64 = 256;
/// Bytes per blocking read of a streamed object: each read is a trip to a
/// blocking thread and back, which costs more than copying the piece from
/// the page cache, so pieces are large; but under glibc's mmap threshold
/// (128 KiB, `main.rs`), so each comes from the heap instead of a fresh
/// mapping faulted in page by page and unmapped after.
const READ_BUF: usize = 120 * 1024;
/// Bytes read with the open of an object for ranged reads: its header
/// (fixed part, key slot, metadata) in all but rare cases.
const OPEN_PREFIX: u64 = 16 * 1024;
/// Bytes read with the open of an object to be read whole: all of an item
/// (at most `limits.max_item_bytes`, 64 KiB by default, plus its header
/// and chunk tags), the first pieces of anything larger.
const WHOLE_PREFIX: u64 = 128 * 1024;

/// The filesystem store.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A writer of `key` whose object, once committed, says it was
    /// created at `created` (the file's modification time).
    async fn create_as_of(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        created: SystemTime,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        let target = self.path(key)?;
        let tmp = self.root.join(TMP_DIR).join(random_name());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await?
            .into_std()
            .await;
        Ok(Box::new(FsWriter::new(
            file,
            tmp,
            target,
            self.root.clone(),
            mode,
            created,
        )))
    }

    /// Opens `key` and reads its first `prefix` bytes in the same blocking
    /// call: a small object is then read with one trip to a blocking
    /// thread instead of one per read (GetItems reads thousands a second).
    async fn open_with_prefix(
        &self,
        key: &BlobKey,
        prefix: u64,
    ) -> Result<Box<dyn BlobReader>, BlobError> {
        let path = self.path(key)?;
        let opened = match open_cached(&path, prefix) {
            Some(opened) => opened,
            None => tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path)?;
                let meta = file.metadata()?;
                let len = meta.len();
                let mut front = BytesMut::zeroed(len.min(prefix) as usize);
                file.read_exact_at(&mut front, 0)?;
                Ok::<_, std::io::Error>((file, len, meta.modified().ok(), front.freeze()))
            })
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?,
        };
        match opened {
            Ok((file, len, created, front)) => Ok(Box::new(FsReader {
                file: Arc::new(file),
                len,
                created,
                front,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

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

    /// The directory of an owner's objects in a space, with room for an
    /// object's name after it (one allocation for a whole path).
    fn dir(&self, space: &str, owner: &str) -> Result<PathBuf, BlobError> {
        check_segment(space)?;
        check_segment(owner)?;
        let mut dir = PathBuf::with_capacity(
            self.root.as_os_str().len()
                + space.len()
                + owner.len()
                + crate::names::MAX_NAME_LEN
                + 3,
        );
        dir.push(&self.root);
        dir.push(space);
        dir.push(owner);
        Ok(dir)
    }

    fn path(&self, key: &BlobKey) -> Result<PathBuf, BlobError> {
        check_segment(&key.name)?;
        let mut path = self.dir(&key.space, &key.owner)?;
        path.push(&key.name);
        Ok(path)
    }
}

/// Reads the store id at `path`, if the file exists.
fn read_store_id(path: &Path) -> Result<Option<String>, BlobError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    file.take(MAX_STORE_ID_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| {
            BlobError::Io(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        })?;
    let id = text.trim();
    check_store_id(id)?;
    Ok(Some(id.to_string()))
}

/// Writes `id` to a temporary file in `root` and publishes it at
/// [`STORE_ID_FILE`] unless a store id is there; returns the recorded id.
fn publish_store_id(root: &Path, id: &str) -> Result<String, BlobError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(STORE_ID_FILE);
    // In the root rather than `.tmp`, which another process opening the
    // store would empty under this one.
    let tmp = root.join(format!("{STORE_ID_FILE}.{}.tmp", crate::names::random_id()));
    let linked = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(format!("{id}\n").as_bytes())?;
        file.sync_all()?;
        // link(2) fails if the target exists: create-only.
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let removed = std::fs::remove_file(&tmp);
    linked?;
    removed?;
    std::fs::File::open(root)?.sync_all()?;
    read_store_id(&path)?.ok_or_else(|| {
        BlobError::Io(std::io::Error::other(format!(
            "{} vanished after it was published",
            path.display()
        )))
    })
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
        self.create_as_of(key, mode, super::now_ms()).await
    }

    async fn create_exact_as_of(
        &self,
        key: &BlobKey,
        mode: WriteMode,
        len: u64,
        created: SystemTime,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(super::exact_len(
            self.create_as_of(key, mode, created).await?,
            len,
        ))
    }

    async fn open(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        self.open_with_prefix(key, OPEN_PREFIX).await
    }

    async fn open_whole(&self, key: &BlobKey) -> Result<Box<dyn BlobReader>, BlobError> {
        self.open_with_prefix(key, WHOLE_PREFIX).await
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

    /// Copies the object to a temporary file from the handle the slot was
    /// checked through, rewrites the slot in the copy and renames it over
    /// the original if the path still names the file that was checked:
    /// atomic, at the cost of a local copy. Writers of this process commit
    /// under the same per-object lock as a rewrap (`content`), so none can
    /// slip in between the check and the rename.
    async fn rewrite_key_slot(
        &self,
        key: &BlobKey,
        expected: &[u8; KeySlot::LEN],
        new: &[u8; KeySlot::LEN],
    ) -> Result<SlotRewrite, BlobError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.path(key)?;
        let tmp = self.root.join(TMP_DIR).join(random_name());
        let new = *new;
        let expected = *expected;
        let parent = path.parent().map(Path::to_owned);
        let result = tokio::task::spawn_blocking({
            let tmp = tmp.clone();
            move || -> Result<SlotRewrite, BlobError> {
                let mut source = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(BlobError::NotFound)
                    }
                    Err(e) => return Err(e.into()),
                };
                let meta = source.metadata()?;
                check_slot_fits(meta.len())?;
                let mut slot = [0u8; KeySlot::LEN];
                source.read_exact_at(&mut slot, KEY_SLOT_RANGE.start)?;
                if slot != expected {
                    return Ok(SlotRewrite::Changed);
                }
                let mut copy = std::fs::File::create_new(&tmp)?;
                std::io::copy(&mut source, &mut copy)?;
                copy.write_all_at(&new, KEY_SLOT_RANGE.start)?;
                // The creation time (the file's mtime) survives the rewrite.
                copy.set_modified(meta.modified()?)?;
                copy.sync_all()?;
                match std::fs::metadata(&path) {
                    Ok(now) if now.ino() == meta.ino() && now.dev() == meta.dev() => {}
                    Ok(_) => return Ok(SlotRewrite::Changed),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(BlobError::NotFound)
                    }
                    Err(e) => return Err(e.into()),
                }
                std::fs::rename(&tmp, &path)?;
                Ok(SlotRewrite::Rewritten)
            }
        })
        .await
        .map_err(|e| BlobError::Io(std::io::Error::other(e)))?;
        if !matches!(result, Ok(SlotRewrite::Rewritten)) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return result;
        }
        if let Some(parent) = parent {
            sync_dir(&parent).await?;
        }
        Ok(SlotRewrite::Rewritten)
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

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn store_id(&self) -> Result<Option<String>, BlobError> {
        let path = self.root.join(STORE_ID_FILE);
        tokio::task::spawn_blocking(move || read_store_id(&path))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
    }

    async fn init_store_id(&self, id: &str) -> Result<String, BlobError> {
        check_store_id(id)?;
        let (root, id) = (self.root.clone(), id.to_string());
        tokio::task::spawn_blocking(move || publish_store_id(&root, &id))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))?
    }
}

struct FsReader {
    file: Arc<std::fs::File>,
    len: u64,
    created: Option<SystemTime>,
    /// The object's first bytes, read when it was opened (the same file).
    front: Bytes,
}

/// What an open returns: the file, its length and time, its first bytes.
type Opened = std::io::Result<(std::fs::File, u64, Option<SystemTime>, Bytes)>;

/// Opens `path` and reads its first `prefix` bytes on this thread if
/// nothing of it waits on the disk: the path resolved from the dentry
/// cache, the bytes in the page cache. `None` if something would have
/// waited (or the kernel cannot say): then the caller does it on a
/// blocking thread. A file that does not exist is answered here when the
/// cache knows it does not (else the blocking thread finds out).
fn open_cached(path: &Path, prefix: u64) -> Option<Opened> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    let fd = match rustix::fs::openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::CACHED,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            return Some(Err(std::io::ErrorKind::NotFound.into()));
        }
        Err(_) => return None,
    };
    let file = std::fs::File::from(fd);
    // The inode is in memory once the file is open.
    let meta = file.metadata().ok()?;
    let len = meta.len();
    let mut front = BytesMut::zeroed(len.min(prefix) as usize);
    read_cached(&file, &mut front, 0)?;
    Some(Ok((file, len, meta.modified().ok(), front.freeze())))
}

/// Fills `buf` from `offset` of `file` if every byte is in the page cache
/// (`RWF_NOWAIT`); `None` if a read would wait on the disk, or fails.
fn read_cached(file: &std::fs::File, buf: &mut [u8], offset: u64) -> Option<()> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::preadv2(
            file,
            &mut [std::io::IoSliceMut::new(&mut buf[done..])],
            offset + done as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) | Err(_) => return None,
            Ok(n) => done += n,
        }
    }
    Some(())
}

/// Positional read of `len` bytes at `offset`: from the page cache on this
/// thread if it holds them all, else on a blocking thread. The file has no
/// shared cursor, so concurrent reads of one object cannot interfere.
async fn read_at(file: Arc<std::fs::File>, offset: u64, len: usize) -> Result<Bytes, BlobError> {
    let mut buf = BytesMut::zeroed(len);
    if read_cached(&file, &mut buf, offset).is_some() {
        return Ok(buf.freeze());
    }
    drop(buf);
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

    fn created(&self) -> Option<SystemTime> {
        self.created
    }

    async fn read(&mut self, range: Range<u64>) -> Result<Bytes, BlobError> {
        let len = range_len(&range, self.len)?;
        if range.end <= self.front.len() as u64 {
            return Ok(self.front.slice(range.start as usize..range.end as usize));
        }
        read_at(self.file.clone(), range.start, len).await
    }

    async fn stream(&mut self, mut range: Range<u64>) -> Result<ByteStream, BlobError> {
        range_len(&range, self.len)?;
        if range.end <= self.front.len() as u64 {
            // All of it was read by the open: handed over, so that the
            // caller holds the only reference and may decrypt it in place
            // (a later read reads the file again).
            let front = std::mem::take(&mut self.front);
            let piece = front.slice(range.start as usize..range.end as usize);
            return Ok(Box::pin(futures_util::stream::once(async { Ok(piece) })));
        }
        // What the open read already goes first, the rest from the file.
        let front_end = range.end.min(self.front.len() as u64);
        let head = (range.start < front_end)
            .then(|| Ok(self.front.slice(range.start as usize..front_end as usize)));
        range.start = range.start.max(front_end);
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
        Ok(Box::pin(futures_util::stream::iter(head).chain(stream)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the page cache is opened and read on the calling thread;
    /// one dropped from it (`POSIX_FADV_DONTNEED`) reads the same bytes,
    /// by whichever path the kernel allows.
    #[tokio::test]
    async fn reads_give_the_same_bytes_from_the_cache_or_a_blocking_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (file, len, _, front) = open_cached(&path, 1000)
            .expect("a file just written is cached")
            .unwrap();
        assert_eq!((len, &front[..]), (300_000, &data[..1000]));
        let file = Arc::new(file);
        let cached = read_at(file.clone(), 5, 200_000).await.unwrap();
        assert_eq!(&cached[..], &data[5..200_005]);
        file.sync_all().unwrap();
        rustix::fs::fadvise(&*file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let cold = read_at(file.clone(), 100_000, 200_000).await.unwrap();
        assert_eq!(&cold[..], &data[100_000..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn store_id_is_recorded_once_and_never_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        assert_eq!(store.store_id().await.unwrap(), None);
        let ids: Vec<String> = (0..8).map(|i| format!("id-{i}")).collect();
        let recorded = futures_util::future::join_all(ids.iter().map(|id| {
            let store = store.clone();
            async move { store.init_store_id(id).await.unwrap() }
        }))
        .await;
        assert!(recorded.iter().all(|r| *r == recorded[0]), "{recorded:?}");
        assert!(ids.contains(&recorded[0]));
        assert_eq!(store.store_id().await.unwrap(), Some(recorded[0].clone()));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [STORE_ID_FILE, TMP_DIR], "no temporary file left");
        assert!(store.init_store_id("../x").await.is_err());
    }
}
