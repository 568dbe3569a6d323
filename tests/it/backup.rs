//! `sealgate backup DIR`: a consistent online backup of the key store and
//! the keyring, taken by the real binary while the gateway serves; a data
//! directory restored from it serves again beside the same objects, with
//! the users erased before it still erased; `keys status` says whether a
//! backup was taken since the master keys last changed.

use std::path::Path;
use std::process::Command;

use tonic::Code;

use crate::support::gateway::{
    expect_reason, get, hierarchy, put, rotate_master, try_erase, TestGateway,
};

const SPACE: &str = "moments";

/// Runs `sealgate backup dir --data-dir data_dir`: (success, stdout,
/// stderr).
fn backup(data_dir: &Path, dir: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("backup")
        .arg(dir)
        .arg("--data-dir")
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_serves_and_the_users_erased_before_it_stay_erased() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    for u in 0..4 {
        put(
            &mut c,
            &format!("id-{u}"),
            SPACE,
            "photo",
            format!("photo {u}").as_bytes(),
            7,
        )
        .await
        .expect("put");
    }
    try_erase(&gw, "id-0").await.expect("erase");
    assert_eq!(hierarchy(&gw).await.last_backup_unix_ms, 0);

    // Online: the gateway serves throughout.
    let tmp = tempfile::tempdir().unwrap();
    // A new directory under one that does not exist yet.
    let dir = tmp.path().join("backups").join("backup-1");
    let (ok, stdout, stderr) = backup(&gw.data_dir, &dir);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("files: keys.db keyring\n"), "{stdout}");
    assert!(stdout.contains("master_versions: 1\n"), "{stdout}");
    assert!(stdout.contains("destroy_by: "), "{stdout}");
    assert_eq!(names(&dir), ["MANIFEST", "keyring", "keys.db"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("MANIFEST")).unwrap(),
        stdout
    );
    let h = hierarchy(&gw).await;
    assert!(
        h.last_backup_unix_ms >= h.master_keys_changed_unix_ms,
        "{h:?}"
    );
    assert!(h.master_keys_changed_unix_ms > 0, "{h:?}");

    // Written after the backup: not in it.
    put(&mut c, "id-9", SPACE, "photo", b"late", 4)
        .await
        .expect("put");
    let mut gw = gw;
    gw.stop().await;

    // The data directory lost, restored from the backup.
    for name in names(&gw.data_dir) {
        if name.starts_with("keys.db") || name.starts_with("keyring") {
            // SQLite may remove its -wal or -shm meanwhile: gone either way.
            match std::fs::remove_file(gw.data_dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
                _ => {}
            }
        }
    }
    std::fs::copy(dir.join("keys.db"), gw.data_dir.join("keys.db")).unwrap();
    std::fs::copy(dir.join("keyring"), gw.data_dir.join("keyring")).unwrap();
    let gw = gw.restart().await;
    let mut c = gw.content().await;
    for u in 1..4 {
        let (_, got) = get(&mut c, &format!("id-{u}"), SPACE, "photo", None)
            .await
            .expect("restored");
        assert_eq!(got, format!("photo {u}").as_bytes());
    }
    expect_reason(
        get(&mut c, "id-0", SPACE, "photo", None).await,
        Code::FailedPrecondition,
        "USER_ERASED",
        "a user erased before the backup",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_goes_into_a_new_directory_and_records_nothing_else() {
    let gw = TestGateway::start().await;
    put(&mut gw.content().await, "id-1", SPACE, "photo", b"x", 1)
        .await
        .expect("put");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("old"), b"a previous backup").unwrap();
    let (ok, _, stderr) = backup(&gw.data_dir, tmp.path());
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "backup directory {}: is not empty; give a new directory for each backup",
            tmp.path().display()
        )),
        "{stderr}"
    );
    assert_eq!(
        hierarchy(&gw).await.last_backup_unix_ms,
        0,
        "nothing recorded"
    );

    let empty = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = backup(&empty.path().join("none"), &tmp.path().join("b"));
    assert!(!ok);
    assert!(stderr.contains("no key store at"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_status_says_a_backup_is_behind_a_master_rotation() {
    let gw = TestGateway::start().await;
    put(&mut gw.content().await, "id-1", SPACE, "photo", b"x", 1)
        .await
        .expect("put");
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = backup(&gw.data_dir, &tmp.path().join("b"));
    assert!(ok, "{stderr}");
    let before = hierarchy(&gw).await;
    assert!(before.last_backup_unix_ms >= before.master_keys_changed_unix_ms);

    rotate_master(&gw).await;
    let after = hierarchy(&gw).await;
    assert_eq!(after.last_backup_unix_ms, before.last_backup_unix_ms);
    assert!(
        after.master_keys_changed_unix_ms > after.last_backup_unix_ms,
        "{after:?}"
    );

    // The CLI says so.
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(["keys", "status", "--endpoint", &gw.endpoint()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("backup_behind: yes (no backup since the master keys last changed"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
