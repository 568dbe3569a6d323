//! One gateway process per data directory: an exclusive advisory lock
//! (`flock`) on `DATA_DIR/lock`, taken before the key store is opened and
//! held for the life of the process. The kernel releases it when the
//! process ends, however it ends (a SIGKILL, a crash), so there is never a
//! stale lock to clean up. The file records the holder's pid, which a
//! refused start names.
//!
//! Every key store takes it: `keys.db` must have one writer process, and
//! with PostgreSQL the data directory still holds the keyring (replicas
//! each have their own data directory). This file locks and nothing more.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::ServeError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "lock";

/// The data directory's lock, held while this value lives.
#[derive(Debug)]
pub(super) struct DataDirLock {
    _file: File,
}

/// Takes the lock of `data_dir` (created if missing) and records this
/// process's pid in it.
///
/// # Errors
/// [`ServeError::DataDirInUse`] naming the holder's pid if another process
/// holds it; [`ServeError::DataDirLock`] if the file cannot be opened or
/// locked.
pub(super) async fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, ServeError> {
    let path = data_dir.join(LOCK_FILE);
    let failed = |source: std::io::Error| ServeError::DataDirLock {
        lock: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(failed)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    // flock(2) on Unix: held by this open file, released by the kernel
    // with it.
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ServeError::DataDirInUse {
                dir: data_dir.to_path_buf(),
                pid: holder(&mut file).await,
                lock: path,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
    }
    // Ours: the pid of the previous holder (gone) is replaced.
    let recorded = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    recorded.map_err(failed)?;
    Ok(DataDirLock { _file: file })
}

/// The pid the holder recorded. It writes it just after taking the lock:
/// a start racing with it may look before, so an empty file is read again
/// for a moment.
async fn holder(file: &mut File) -> Option<u32> {
    for _ in 0..25 {
        let mut text = String::new();
        if file.rewind().is_ok() && file.read_to_string(&mut text).is_ok() {
            if let Ok(pid) = text.trim().parse() {
                return Some(pid);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// How a refused start names the holder.
pub(super) fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_string(),
    }
}
