//! Disk-level rules: uploads leave room for erasures, and a file that held
//! keys is overwritten in place before its blocks are given back.
//!
//! An erasure writes a few kilobytes to the key store (the tombstone, its
//! audit record, its job), and on a full disk it gives up the key store's
//! 8 MiB reserve to find them. Uploads must never take that room: a write
//! of object bytes ([`leave_room`], in the filesystem object store) and
//! the admission of an upload or item write (the key store's volume) are
//! refused as a full disk while less than [`ERASURE_ROOM`] would stay free.
//! This module imports nothing of the crate.

use std::path::Path;

/// Free space uploads leave on a volume that holds the key store or the
/// objects: twice the key store's erasure reserve.
pub const ERASURE_ROOM: u64 = 16 << 20;

/// Bytes available to this process on the filesystem of `path`.
///
/// # Errors
/// The `statvfs` failure.
pub fn available(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Refuses (`StorageFull`) a write of `len` bytes on the filesystem of
/// `path` that would leave less than [`ERASURE_ROOM`] free.
///
/// # Errors
/// `StorageFull` naming what is kept free; the `statvfs` failure.
pub fn leave_room(path: &Path, len: u64) -> std::io::Result<()> {
    let free = available(path)?;
    if free < len.saturating_add(ERASURE_ROOM) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "{} MiB free, and {} MiB stay free for erasures",
                free >> 20,
                ERASURE_ROOM >> 20
            ),
        ));
    }
    Ok(())
}

/// Overwrites every byte of `file` with zeros in place and syncs it, so
/// that the blocks it holds carry no key when they are given back (on a
/// filesystem that writes in place).
///
/// # Errors
/// The write or sync failure.
pub fn overwrite_with_zeros(file: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let len = file.metadata()?.len();
    let zeros = vec![0u8; 64 << 10];
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}
