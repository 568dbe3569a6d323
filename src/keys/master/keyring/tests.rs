//! Tests of the local keyring: creating, loading and refusing files, the
//! parser's duplicate checks, and versions added and retired by processes
//! sharing one keyring.

use super::*;
use std::io::Write;

/// The keyring text with one naming key and master version 1, plus
/// `extra` lines.
fn keyring_text(extra: &str) -> String {
    format!(
        "naming {}\nmaster 1 {}\n{extra}",
        "11".repeat(32),
        "22".repeat(32)
    )
}

fn write_private(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn created_private_and_reloads_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let (a, naming_a) = LocalKeyring::create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (_, naming_b) = LocalKeyring::load(&path).unwrap();
    assert_eq!(naming_a.pseudonym("u"), naming_b.pseudonym("u"));
    assert_eq!(a.current_version(), 1);
    // Nothing but the keyring is left in the directory.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keyring"]);
}

#[test]
fn load_never_creates_and_reports_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let err = LocalKeyring::load(&path).unwrap_err();
    assert!(
        matches!(&err, MasterKeyError::Missing(p) if *p == path),
        "{err}"
    );
    assert!(!path.exists());
}

#[test]
fn create_keeps_an_existing_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let (_, first) = LocalKeyring::create(&path).unwrap();
    let text = std::fs::read(&path).unwrap();
    let (_, second) = LocalKeyring::create(&path).unwrap();
    assert_eq!(first.pseudonym("u"), second.pseudonym("u"));
    assert_eq!(std::fs::read(&path).unwrap(), text);
}

#[test]
fn group_readable_keyring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    LocalKeyring::create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = LocalKeyring::load(&path).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn symlinked_keyring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-keyring");
    LocalKeyring::create(&real).unwrap();
    let path = dir.path().join("keyring");
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let err = LocalKeyring::load(&path).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // Creating does not replace the link either.
    assert!(LocalKeyring::create(&path).is_err());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_directory_or_fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&path)
        .unwrap();
    let err = LocalKeyring::load(&path).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // A FIFO opens without blocking and is refused.
    let fifo = dir.path().join("fifo-keyring");
    let made = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let err = LocalKeyring::load(&fifo).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn duplicate_entries_are_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (format!("naming {}\n", "33".repeat(32)), "line 3", "naming"),
        (
            format!("master 1 {}\n", "44".repeat(32)),
            "line 3",
            "version 1",
        ),
        (
            format!("# rotated\nmaster 2 {0}\nmaster 2 {0}\n", "55".repeat(32)),
            "line 5",
            "version 2",
        ),
    ];
    for (i, (extra, line, what)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("keyring-{i}"));
        write_private(&path, &keyring_text(extra));
        let err = LocalKeyring::load(&path).unwrap_err().to_string();
        assert!(err.contains(line) && err.contains(what), "case {i}: {err}");
    }
    // The same entries once each are fine.
    let path = dir.path().join("keyring-ok");
    write_private(
        &path,
        &keyring_text(&format!("master 2 {}\n", "55".repeat(32))),
    );
    let (k, _) = LocalKeyring::load(&path).unwrap();
    assert_eq!(k.current_version(), 2);
}

#[test]
fn owner_is_the_user_of_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let mine = std::fs::metadata(dir.path()).unwrap().uid();
    assert_eq!(effective_uid(&path).unwrap(), mine);
    // The probe is gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn racing_creators_end_with_one_keyring() {
    const THREADS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys").join("keyring");
    let barrier = std::sync::Barrier::new(THREADS);
    let loaded: Vec<(u32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let (k, naming) = LocalKeyring::create(&path).unwrap();
                    (k.current_version(), naming.pseudonym("u").to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(loaded.iter().all(|l| *l == loaded[0]), "{loaded:?}");
    let (_, naming) = LocalKeyring::load(&path).unwrap();
    assert_eq!(naming.pseudonym("u").to_string(), loaded[0].1);
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keyring"], "one keyring, no temporary file");
}

#[test]
fn debug_shows_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let (k, naming) = LocalKeyring::create(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let master_hex = text
        .lines()
        .find(|l| l.starts_with("master"))
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap();
    assert!(!format!("{k:?}").contains(master_hex));
    let naming_hex = text
        .lines()
        .find(|l| l.starts_with("naming"))
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap();
    assert!(!format!("{naming:?}").contains(naming_hex));
}

#[tokio::test]
async fn versions_are_added_and_retired_in_place_keeping_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let (k, naming) = LocalKeyring::create(&path).unwrap();
    let kek = Kek::generate().unwrap();
    let (v1, wrapped1) = k.wrap_kek(&kek, b"aad").await.unwrap();
    assert_eq!(v1, 1);

    k.add_version(2).unwrap();
    // Idempotent, for any version held.
    k.add_version(2).unwrap();
    k.add_version(1).unwrap();
    assert_eq!(k.versions(), [1, 2]);
    let (v2, _) = k.wrap_kek(&kek, b"aad").await.unwrap();
    assert_eq!(v2, 2, "new KEKs go under the new version");

    // Another process's view picks the change up when it needs it.
    let (other, other_naming) = LocalKeyring::load(&path).unwrap();
    assert_eq!(other_naming.pseudonym("u"), naming.pseudonym("u"));
    other.add_version(3).unwrap();
    let (v3, wrapped3) = k.wrap_kek(&kek, b"aad").await.unwrap();
    assert_eq!(v3, 3, "a version added elsewhere is seen before wrapping");
    other.unwrap_kek(3, &wrapped3, b"aad").await.unwrap();

    assert!(matches!(
        k.retire_version(3),
        Err(MasterKeyError::NewestVersion(3))
    ));
    assert!(matches!(
        k.retire_version(7),
        Err(MasterKeyError::UnknownVersion(7))
    ));
    k.retire_version(1).unwrap();
    assert_eq!(k.versions(), [2, 3]);
    assert!(matches!(
        k.unwrap_kek(1, &wrapped1, b"aad").await,
        Err(MasterKeyError::UnknownVersion(1))
    ));
    assert!(matches!(
        k.add_version(1),
        Err(MasterKeyError::NotNewer {
            version: 1,
            newest: 3
        })
    ));

    // The file: private, loadable, same naming key, no temporary files.
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (reloaded, naming_again) = LocalKeyring::load(&path).unwrap();
    assert_eq!(reloaded.versions(), [2, 3]);
    assert_eq!(naming_again.pseudonym("u"), naming.pseudonym("u"));
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["keyring", "keyring.lock"]);
}

/// A rotation or a retirement rewrites the keyring by rename; the file
/// it replaces is overwritten with zeros before it is let go, so its disk
/// blocks hold no master key when given back.
#[test]
fn a_replaced_keyring_is_zeroed_before_it_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let (keyring, _) = LocalKeyring::create(&path).unwrap();
    for change in [0, 1] {
        // The file as it is now, held open as a reader of the old inode.
        let mut old = std::fs::File::open(&path).unwrap();
        let len = old.metadata().unwrap().len();
        match change {
            0 => keyring.add_version(2).unwrap(),
            _ => keyring.retire_version(1).unwrap(),
        }
        let mut bytes = Vec::new();
        old.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert!(
            bytes.iter().all(|b| *b == 0),
            "change {change}: old keyring zeroed"
        );
        assert!(!std::fs::read(&path).unwrap().iter().all(|b| *b == 0));
    }
    assert_eq!(keyring.versions(), [2]);
}
