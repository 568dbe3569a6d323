//! Mounts for the tests of full and failing disks: a tmpfs of a given
//! size or an ext4 image on a loop device, undone by a guard also when a
//! test fails, and a filler that writes until the disk refuses. Mounting
//! needs root: without it a test is skipped with a `SKIPPED` line that
//! `cargo test` shows, and fails under CI (`CI` set), which must run it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::host::is_root;

/// True when this process runs as root, so `test` can mount. Otherwise,
/// under CI (the `CI` environment variable set, as `.ci/run` sets it) the
/// test fails: CI must run it. Elsewhere it is skipped: a `SKIPPED` line
/// goes straight to the process's stderr, which `cargo test` shows (its
/// capture would hide `println!` or `eprintln!` of a test that passes),
/// and the caller returns.
///
/// # Panics
/// When not root under CI.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !crate::support::host::under_ci(),
        "{test} needs root for its mounts and CI is set: run the suite as root"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root for mounts (not running as root; CI, which runs it, is not set)"
    );
    false
}

/// Runs a command, failing the test with its output if it fails.
pub fn run(program: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A mount on `dir`, lazily unmounted when dropped (even if the test
/// failed, even if the gateway still has files open on it) unless
/// [`Mount::unmount`] unmounted it.
pub struct Mount {
    dir: Option<PathBuf>,
}

impl Mount {
    /// A tmpfs of `size` (as `mount -o size=` takes it) on `dir`.
    pub fn tmpfs(dir: &Path, size: &str) -> Self {
        let opts = format!("size={size}");
        run(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                opts.as_ref(),
                "tmpfs".as_ref(),
                dir.as_os_str(),
            ],
        );
        Self {
            dir: Some(dir.to_path_buf()),
        }
    }

    /// The ext4 image `image` (on a loop device) on `dir`, with
    /// `errors=remount-ro`: an error of the file system turns it read-only
    /// under every open file.
    pub fn ext4(image: &Path, dir: &Path) -> Self {
        run(
            "mount",
            &[
                "-t".as_ref(),
                "ext4".as_ref(),
                "-o".as_ref(),
                "loop,errors=remount-ro".as_ref(),
                image.as_os_str(),
                dir.as_os_str(),
            ],
        );
        Self {
            dir: Some(dir.to_path_buf()),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_deref().expect("mounted")
    }

    /// Makes the ext4 file system fail: with `errors=remount-ro` the kernel
    /// turns it read-only at once, also for files already open for writing.
    pub fn fail_ext4(&self) {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(self.dir())
            .output()
            .expect("run findmnt");
        let source = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let device = Path::new(&source)
            .file_name()
            .unwrap_or_else(|| panic!("no device for {}: {source:?}", self.dir().display()))
            .to_owned();
        let trigger = Path::new("/sys/fs/ext4")
            .join(device)
            .join("trigger_fs_error");
        std::fs::write(&trigger, b"read-only period")
            .unwrap_or_else(|e| panic!("write {}: {e}", trigger.display()));
    }

    /// Unmounts (not lazily: nothing may still hold a file on it).
    pub fn unmount(mut self) {
        let dir = self.dir.take().expect("mounted");
        run("umount", &[dir.as_os_str()]);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = Command::new("umount").arg("-l").arg(&dir).status();
        }
    }
}

/// A new ext4 image of `size` bytes at `path`.
pub fn make_ext4(path: &Path, size: u64) {
    std::fs::File::create(path)
        .and_then(|f| f.set_len(size))
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    run(
        "mkfs.ext4",
        &["-q".as_ref(), "-F".as_ref(), path.as_os_str()],
    );
}

/// Checks and repairs an unmounted ext4 image (as an operator would after
/// the file system turned read-only on an error).
pub fn fsck_ext4(path: &Path) {
    let out = Command::new("e2fsck")
        .args(["-f", "-y"])
        .arg(path)
        .output()
        .expect("run e2fsck");
    // 0: clean; 1: errors corrected.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck {} ({}): {}{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fills the filesystem holding `path` with one file at `path`, writing
/// until the disk refuses (ENOSPC); returns the bytes written.
pub fn fill_disk(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0xa5u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => panic!("writing the filler made no progress"),
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("write the filler: {e}"),
        }
    }
    written
}

/// A data directory `tmp/data` on a new ext4 image `tmp/disk.ext4` of
/// `size` bytes, mounted: the image's path, the directory and the mount.
pub fn ext4_data_dir(tmp: &Path, size: u64) -> (std::path::PathBuf, std::path::PathBuf, Mount) {
    let image = tmp.join("disk.ext4");
    let dir = tmp.join("data");
    std::fs::create_dir(&dir).unwrap();
    make_ext4(&image, size);
    let mount = Mount::ext4(&image, &dir);
    (image, dir, mount)
}
