//! The keyring file on disk: its text (written by [`keyring_text`], read by
//! [`parse`]), a new keyring published create-only ([`publish_new`]), a
//! changed one replaced whole ([`replace`]), and the owner a keyring must
//! have ([`effective_uid`]).
//!
//! Nothing here takes the keyring lock or decides what changes: the
//! provider (`mod.rs`) does both and calls in here under the lock. Nothing
//! here keeps a key beyond the call; every text holding keys is zeroized
//! on drop.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::Masters;
use crate::crypto::{MasterKey, NamingKey};

/// The directory of `path` (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A unique name next to `path`: `{file name}.{random id}.{suffix}`.
fn unique_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "keyring".into(), |n| n.to_string_lossy().into_owned());
    parent_dir(path).join(format!("{name}.{}.{suffix}", crate::names::random_id()))
}

/// The user this process's files are owned by: the owner of a file it
/// creates (and removes at once) next to `path`. That is the effective uid, read
/// without unsafe code; on a file system that maps owners it is the owner
/// every file of this process gets, which is what the keyring must have.
pub(super) fn effective_uid(path: &Path) -> std::io::Result<u32> {
    let probe = unique_sibling(path, "tmp");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)?;
    let uid = file.metadata().map(|m| m.uid());
    drop(file);
    let removed = std::fs::remove_file(&probe);
    let uid = uid?;
    removed?;
    Ok(uid)
}

/// Writes a new keyring to a temporary file and publishes it at `path`
/// unless something is there already (then leaves that alone).
pub(super) fn publish_new(path: &Path) -> std::io::Result<()> {
    let naming = NamingKey::generate().map_err(std::io::Error::other)?;
    let master = MasterKey::generate().map_err(std::io::Error::other)?;
    let text = keyring_text(&naming, &BTreeMap::from([(1, Arc::new(master))]));
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let tmp = unique_sibling(path, "tmp");
    let written = (|| {
        write_private(&tmp, &text)?;
        // link(2) fails if `path` exists: a create-only publish.
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let removed = std::fs::remove_file(&tmp);
    written?;
    removed?;
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `tmp` (mode 0600, never over an existing file), writes `text`
/// and fsyncs it: the first step of publishing or replacing a keyring.
pub(super) fn write_private(tmp: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The keyring text of `naming` and `masters`.
fn keyring_text(naming: &NamingKey, masters: &Masters) -> Zeroizing<String> {
    let mut text = Zeroizing::new(format!(
        "# sealgate local keyring. Secret: back it up, never share it.\n\
         # Losing it makes every object unreadable.\n\
         naming {}\n",
        hex::encode(naming.expose_for_keyring()),
    ));
    for (version, key) in masters {
        text.push_str(&format!(
            "master {version} {}\n",
            hex::encode(key.expose_for_keyring())
        ));
    }
    text
}

/// Replaces the keyring at `path` by one of `naming` and `masters`: a
/// temporary file (0600) written and fsynced, renamed over `path`, the
/// directory fsynced; then the old file, held open across the rename, is
/// overwritten in place with zeros and synced before it is let go, so
/// that its disk blocks (a retired master key among them) are not given
/// back holding keys.
pub(super) fn replace(path: &Path, naming: &NamingKey, masters: &Masters) -> std::io::Result<()> {
    let text = keyring_text(naming, masters);
    let old = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let tmp = unique_sibling(path, "tmp");
    let written = (|| {
        write_private(&tmp, &text)?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(parent_dir(path))?.sync_all()?;
    let mut old = old;
    crate::disk::overwrite_with_zeros(&mut old)
}

/// Parses the keyring text; every entry may appear once. Public only for
/// the fuzz target of the keyring parser (`fuzz/`).
#[doc(hidden)]
pub fn parse(text: &str) -> Result<(BTreeMap<u32, MasterKey>, NamingKey), String> {
    let mut masters = BTreeMap::new();
    let mut master_lines = BTreeMap::new();
    let mut naming: Option<(NamingKey, usize)> = None;
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("line {n}: malformed entry");
        let decode = |h: &str| -> Result<Zeroizing<Vec<u8>>, String> {
            hex::decode(h).map(Zeroizing::new).map_err(|_| bad())
        };
        match fields.as_slice() {
            ["naming", key] => {
                if let Some((_, first)) = &naming {
                    return Err(format!(
                        "line {n}: a second naming key (the first is on line {first}); \
                         a keyring holds one"
                    ));
                }
                naming = Some((NamingKey::from_bytes(&decode(key)?).map_err(|_| bad())?, n));
            }
            ["master", version, key] => {
                let version: u32 = version.parse().map_err(|_| bad())?;
                if let Some(first) = master_lines.insert(version, n) {
                    return Err(format!(
                        "line {n}: master key version {version} again (first on line {first}); \
                         each version appears once"
                    ));
                }
                masters.insert(
                    version,
                    MasterKey::from_bytes(&decode(key)?).map_err(|_| bad())?,
                );
            }
            _ => return Err(bad()),
        }
    }
    let (naming, _) = naming.ok_or_else(|| "no naming key".to_string())?;
    if masters.is_empty() {
        return Err("no master key".into());
    }
    Ok((masters, naming))
}
