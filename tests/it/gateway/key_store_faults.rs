//! Faults of the key store's filesystem, on the filesystem blob backend: a
//! full disk (erasure still goes through, on the key store's reserve), a
//! disk turned read-only under the running gateway (writes refused as
//! retryable, working again once the disk is repaired), and `keys.db`
//! deleted or replaced under the running gateway (NOT_SERVING, writes
//! refused as storage lost), health following a disk turned read-only or
//! a key store made immutable within two seconds (and back), and the
//! keyring deleted (uploads that need it
//! refused as storage lost, naming it).
//!
//! The full-disk and read-only tests mount a tmpfs or an ext4 image on a
//! loop device, which needs root: without it they report a visible
//! `SKIPPED` line and return, or fail under CI (`root_or_skip`). Every
//! mount is undone by a guard, also when a test fails.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::keys::sqlite::RESERVE_BYTES;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use super::*;
use crate::support::mounts::{ext4_data_dir, fill_disk, fsck_ext4, root_or_skip, Mount};

const SPACE: &str = "moments";
/// The items every user stores: id and content seed.
const ITEMS: [(&str, u64); 3] = [("note-a", 1), ("note-b", 2), ("note-c", 3)];
/// How long health may take to notice a lost key store.
const HEALTH_DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Gateway helpers.

/// A gateway on the filesystem backend with exactly `data_dir`.
async fn start_on(data_dir: &Path) -> TestGateway {
    let mut c = config(data_dir);
    Backend::Fs.configure(&mut c);
    TestGateway::start_config(c).await
}

/// The health of the whole server (service "").
/// Asserts that `result` failed with one of `codes`; returns the status.
#[track_caller]
fn expect_code_in<T: std::fmt::Debug>(
    result: Result<T, Status>,
    codes: &[Code],
    what: &str,
) -> Status {
    match result {
        Ok(v) => panic!("{what}: expected one of {codes:?}, got success {v:?}"),
        Err(s) => {
            assert!(
                codes.contains(&s.code()),
                "{what}: expected one of {codes:?}, got {s:?}"
            );
            s
        }
    }
}

/// The content of item `seed` of `user`.
fn item_content(user: &str, seed: u64) -> Vec<u8> {
    let salt = user
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31) + u64::from(b));
    data(200, seed.wrapping_add(salt))
}

/// Stores [`ITEMS`] for `user`.
async fn put_items(c: &mut ContentServiceClient<Channel>, user: &str) {
    for (id, seed) in ITEMS {
        put_item(c, user, SPACE, id, &item_content(user, seed))
            .await
            .unwrap_or_else(|s| panic!("put {user}/{id}: {s:?}"));
    }
}

/// Asserts that `user`'s [`ITEMS`] read back intact.
async fn assert_items_read_back(c: &mut ContentServiceClient<Channel>, user: &str) {
    let ids: Vec<&str> = ITEMS.iter().map(|(id, _)| *id).collect();
    let got = get_items(c, user, SPACE, &ids)
        .await
        .unwrap_or_else(|s| panic!("GetItems of {user}: {s:?}"));
    assert_eq!(got.len(), ITEMS.len(), "{user}: {got:?}");
    for (r, (id, seed)) in got.iter().zip(ITEMS) {
        assert_eq!(r.item_id, id);
        match &r.result {
            Some(pb::item_result::Result::Item(item)) => {
                assert_eq!(item.content, item_content(user, seed), "{user}/{id}");
            }
            other => panic!("{user}/{id}: {other:?}"),
        }
    }
}

/// Asserts that GetItems of `user` is refused as erased.
async fn assert_items_erased(c: &mut ContentServiceClient<Channel>, user: &str) {
    let ids: Vec<&str> = ITEMS.iter().map(|(id, _)| *id).collect();
    expect_items_erased(
        get_items(c, user, SPACE, &ids).await,
        &format!("GetItems of erased {user}"),
    );
}

/// Asserts, several times over, that `user` is erased with `receipt`:
/// GetErasure, KeyStatus and GetItems agree.
async fn assert_erased_with(gw: &TestGateway, user: &str, receipt: &pb::EraseReceipt) {
    let mut c = gw.content().await;
    for round in 0..3 {
        let status = try_erasure_status(gw, user)
            .await
            .unwrap_or_else(|s| panic!("GetErasure of {user} (round {round}): {s:?}"));
        assert_eq!(
            status.receipt.as_ref(),
            Some(receipt),
            "GetErasure of {user} (round {round})"
        );
        let ks = key_status(gw, user).await;
        assert!(ks.erased, "KeyStatus of {user} (round {round}): {ks:?}");
        assert!(
            ks.versions.is_empty(),
            "KeyStatus of {user} (round {round}) lists key versions: {ks:?}"
        );
        assert_eq!(ks.pseudonym, receipt.pseudonym, "{user}");
        assert_items_erased(&mut c, user).await;
    }
}

// ---------------------------------------------------------------------------
// 1. Full disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_goes_through_on_a_full_disk_and_survives_restarts() {
    if !root_or_skip("erasure_goes_through_on_a_full_disk_and_survives_restarts") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let _mount = Mount::tmpfs(&dir, "64m");
    let filler = dir.join("filler");

    let gw = start_on(&dir).await;
    let mut c = gw.content().await;
    let users: Vec<String> = (0..20).map(|i| format!("full-{i}")).collect();
    let bystanders: Vec<String> = (0..3).map(|i| format!("keep-{i}")).collect();
    for u in users.iter().chain(&bystanders) {
        put_items(&mut c, u).await;
    }
    // Warm the user-key cache: erasure must win over cached keys.
    for u in users.iter().chain(&bystanders) {
        assert_items_read_back(&mut c, u).await;
    }
    let reserve = dir.join("keys.db.reserve");
    assert_eq!(
        std::fs::metadata(&reserve)
            .expect("the key store keeps an erasure reserve")
            .len(),
        RESERVE_BYTES as u64
    );

    let filled = fill_disk(&filler);
    println!("filler: {} MiB", filled >> 20);
    // Really full: not one more page.
    let probe = dir.join("probe");
    let r = std::fs::write(&probe, b"x");
    let _ = std::fs::remove_file(&probe);
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::StorageFull),
        "the disk must be full"
    );

    // Uploads are refused as a full disk: an existing user's (object store)
    // and a new user's (a new key in the key store).
    expect_code(
        put_item(&mut c, &users[0], SPACE, "more", &data(64 << 10, 9)).await,
        Code::ResourceExhausted,
        "upload of an existing user on a full disk",
    );
    expect_code(
        put_item(&mut c, "newcomer", SPACE, "first", b"hello").await,
        Code::ResourceExhausted,
        "upload of a new user on a full disk",
    );

    // Eight concurrent erasures on the full disk.
    let concurrent = &users[..8];
    let results =
        futures_util::future::join_all(concurrent.iter().map(|u| try_erase(&gw, u))).await;
    let mut receipts: Vec<Option<pb::EraseReceipt>> = Vec::new();
    for (u, r) in concurrent.iter().zip(results) {
        match r {
            Ok(receipt) => receipts.push(Some(receipt)),
            Err(s) => {
                println!(
                    "EraseUser {u} on the full disk: {:?} {}",
                    s.code(),
                    s.message()
                );
                expect_code_in(
                    Err::<(), _>(s),
                    &[Code::ResourceExhausted, Code::Unavailable],
                    &format!("EraseUser {u} on a full disk"),
                );
                receipts.push(None);
            }
        }
    }
    let ok = receipts.iter().filter(|r| r.is_some()).count();
    println!(
        "{ok} of {} concurrent erasures succeeded on the full disk",
        concurrent.len()
    );
    assert!(
        ok >= 1,
        "no erasure succeeded on the full disk: the reserve was not given up"
    );

    // Still on the full disk: every user is either erased (GetErasure,
    // KeyStatus and GetItems agree) or untouched.
    for (u, receipt) in concurrent.iter().zip(&receipts) {
        match receipt {
            Some(receipt) => assert_erased_with(&gw, u, receipt).await,
            None => match try_erasure_status(&gw, u).await {
                // The erasure committed but its call failed (e.g. the
                // checkpoint after it): it must hold all the same.
                Ok(status) => {
                    let receipt = status.receipt.expect("receipt");
                    assert_erased_with(&gw, u, &receipt).await;
                }
                Err(s) => {
                    expect_code(
                        Err::<(), _>(s),
                        Code::NotFound,
                        &format!("GetErasure of {u} after a failed erasure"),
                    );
                    let ks = key_status(&gw, u).await;
                    assert!(!ks.erased && !ks.versions.is_empty(), "{u}: {ks:?}");
                    assert_items_read_back(&mut c, u).await;
                }
            },
        }
    }

    // Space again: failed erasures now succeed, the others one at a time.
    std::fs::remove_file(&filler).expect("delete the filler");
    for (u, receipt) in concurrent.iter().zip(receipts.iter_mut()) {
        let again = try_erase(&gw, u)
            .await
            .unwrap_or_else(|s| panic!("EraseUser {u} once the disk has space: {s:?}"));
        match receipt {
            Some(first) => assert_eq!(&again, first, "{u}: a repeated erasure's receipt"),
            None => *receipt = Some(again),
        }
    }
    for u in &users[8..] {
        let r = try_erase(&gw, u)
            .await
            .unwrap_or_else(|s| panic!("EraseUser {u}: {s:?}"));
        receipts.push(Some(r));
    }
    let receipts: Vec<pb::EraseReceipt> = receipts.into_iter().map(Option::unwrap).collect();
    for (u, receipt) in users.iter().zip(&receipts) {
        assert!(!receipt.gc_job_id.is_empty(), "{u}: {receipt:?}");
        assert_eq!(receipt.destroyed_key_versions, [1], "{u}: {receipt:?}");
        assert_erased_with(&gw, u, receipt).await;
    }
    for u in &bystanders {
        assert_items_read_back(&mut c, u).await;
    }
    // The reserve is back for the next full disk.
    assert_eq!(
        std::fs::metadata(&reserve)
            .expect("the reserve is recreated once there is space")
            .len(),
        RESERVE_BYTES as u64
    );
    // Uploads work again.
    put_item(&mut c, &bystanders[0], SPACE, "after", b"space again")
        .await
        .expect("upload once the disk has space");

    // Every acknowledged erasure survives a restart.
    drop(c);
    let mut gw = gw.restart().await;
    for (u, receipt) in users.iter().zip(&receipts) {
        assert_erased_with(&gw, u, receipt).await;
        assert_eq!(
            try_erase(&gw, u)
                .await
                .expect("EraseUser after the restart"),
            *receipt,
            "{u}: receipt after the restart"
        );
    }
    let mut c = gw.content().await;
    for u in &bystanders {
        assert_items_read_back(&mut c, u).await;
        let ks = key_status(&gw, u).await;
        assert!(!ks.erased, "{u}: {ks:?}");
    }
    assert_eq!(
        std::fs::metadata(&reserve)
            .expect("the reserve after the restart")
            .len(),
        RESERVE_BYTES as u64
    );
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 2. Read-only period.
//
// Linux refuses to remount a file system (or a bind mount of it) read-only
// while a file on it is open for writing (EBUSY), and the running gateway
// always holds `keys.db`, `keys.db-wal` and `keys.db-shm` open read-write:
// `mount -o remount,bind,ro` cannot be done under it. What does turn the
// disk read-only under a running gateway is an error of the file system
// mounted `errors=remount-ro` (the ext4 default of many distributions);
// the kernel then refuses writes with EROFS until the file system is
// unmounted, checked and mounted again: the gateway is restarted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_turned_read_only_refuses_writes_until_repaired() {
    if !root_or_skip("disk_turned_read_only_refuses_writes_until_repaired") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (image, dir, mount) = ext4_data_dir(tmp.path(), 64 << 20);

    let mut gw = start_on(&dir).await;
    let mut c = gw.content().await;
    let (victim, other) = ("ro-victim", "ro-other");
    for u in [victim, other] {
        put_items(&mut c, u).await;
        assert_items_read_back(&mut c, u).await;
    }

    mount.fail_ext4();
    let probe = std::fs::write(dir.join("probe"), b"x").map_err(|e| e.kind());
    assert_eq!(
        probe,
        Err(std::io::ErrorKind::ReadOnlyFilesystem),
        "the disk must be read-only"
    );

    let s = expect_code(
        try_erase(&gw, victim).await,
        Code::Unavailable,
        "EraseUser on a read-only disk",
    );
    println!("EraseUser on a read-only disk: {}", s.message());
    assert!(
        s.message()
            .starts_with("backend unavailable, retry later: ")
            && s.message().len() > "backend unavailable, retry later: ".len(),
        "a readable, retryable message: {s:?}"
    );
    // Refused again, the same way (the failed write left the store usable).
    expect_code(
        try_erase(&gw, victim).await,
        Code::Unavailable,
        "EraseUser on a read-only disk, again",
    );
    for (user, what) in [
        (other, "upload of an existing user on a read-only disk"),
        ("ro-newcomer", "upload of a new user on a read-only disk"),
    ] {
        let s = expect_code_in(
            put_item(&mut c, user, SPACE, "while-ro", b"refused").await,
            &[Code::Unavailable, Code::ResourceExhausted],
            what,
        );
        println!("{what}: {:?} {}", s.code(), s.message());
    }
    // Nothing was erased: the user is still readable.
    expect_code(
        try_erasure_status(&gw, victim).await,
        Code::NotFound,
        "GetErasure on a read-only disk after the erasure failed",
    );
    assert_items_read_back(&mut c, victim).await;

    // The operator's repair: stop, unmount, check, mount, start.
    drop(c);
    gw.stop().await;
    mount.unmount();
    fsck_ext4(&image);
    let _mount = Mount::ext4(&image, &dir);
    let gw = start_on(&dir).await;
    let mut c = gw.content().await;
    expect_code(
        try_erasure_status(&gw, victim).await,
        Code::NotFound,
        "GetErasure after the repair",
    );
    assert_items_read_back(&mut c, victim).await;
    assert_items_read_back(&mut c, other).await;
    let receipt = try_erase(&gw, victim)
        .await
        .expect("EraseUser once the disk is writable again");
    assert_eq!(receipt.destroyed_key_versions, [1], "{receipt:?}");
    assert_erased_with(&gw, victim, &receipt).await;
    put_item(&mut c, other, SPACE, "after-ro", b"writable again")
        .await
        .expect("upload of an existing user once writable");
    put_item(&mut c, "ro-newcomer", SPACE, "after-ro", b"welcome")
        .await
        .expect("upload of a new user once writable");

    drop(c);
    let mut gw = gw.restart().await;
    assert_erased_with(&gw, victim, &receipt).await;
    let mut c = gw.content().await;
    assert_items_read_back(&mut c, other).await;
    for (user, content) in [(other, &b"writable again"[..]), ("ro-newcomer", b"welcome")] {
        let got = get_items(&mut c, user, SPACE, &["after-ro"])
            .await
            .unwrap_or_else(|s| panic!("GetItems of {user} after the restart: {s:?}"));
        match got.first().and_then(|r| r.result.as_ref()) {
            Some(pb::item_result::Result::Item(item)) => assert_eq!(item.content, content),
            other => panic!("{user}'s item after the restart: {other:?}"),
        }
    }
    gw.stop().await;
}

/// How soon health must follow a key store that stops (or starts again)
/// taking writes: probes a second apart, each failing at once.
const HEALTH_FOLLOWS_WRITES: Duration = Duration::from_secs(2);

/// Waits (up to [`HEALTH_FOLLOWS_WRITES`]) until the gateway's health is
/// `status`; how long it took since `since`.
async fn health_turns(
    gw: &TestGateway,
    status: ServingStatus,
    since: std::time::Instant,
) -> Duration {
    eventually(
        &format!(
            "health turns {} within {HEALTH_FOLLOWS_WRITES:?}",
            status.as_str_name()
        ),
        HEALTH_FOLLOWS_WRITES.saturating_sub(since.elapsed()),
        || async { health(gw).await == status as i32 },
    )
    .await;
    since.elapsed()
}

/// The disk turned read-only under the gateway (reads still work from
/// the page cache): health turns NOT_SERVING within two seconds, without a
/// call to fail first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_within_two_seconds_of_the_disk_turning_read_only() {
    if !root_or_skip("health_turns_not_serving_within_two_seconds_of_the_disk_turning_read_only") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, dir, mount) = ext4_data_dir(tmp.path(), 64 << 20);
    let mut gw = start_on(&dir).await;
    put_items(&mut gw.content().await, "ro-health").await;
    assert_eq!(health(&gw).await, ServingStatus::Serving as i32);

    mount.fail_ext4();
    let failed = std::time::Instant::now();
    let took = health_turns(&gw, ServingStatus::NotServing, failed).await;
    println!("NOT_SERVING {took:?} after the disk turned read-only");
    // Reads go on meanwhile.
    assert_items_read_back(&mut gw.content().await, "ro-health").await;
    gw.stop().await;
}

/// Runs `chattr flag path…`.
fn chattr(flag: &str, paths: &[std::path::PathBuf]) {
    let mut args: Vec<&std::ffi::OsStr> = vec![flag.as_ref()];
    args.extend(paths.iter().map(|p| p.as_os_str()));
    crate::support::mounts::run("chattr", &args);
}

/// `keys.db` and its WAL made immutable under the running gateway (writes
/// fail EPERM, reads work): health turns NOT_SERVING within two seconds,
/// and SERVING again within two seconds of the flag being cleared, without
/// a restart; writes then work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_an_immutable_key_store_away_and_back_within_two_seconds() {
    if !root_or_skip("health_follows_an_immutable_key_store_away_and_back_within_two_seconds") {
        return;
    }
    // ext4 enforces the immutable flag on files already open for writing.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, dir, _mount) = ext4_data_dir(tmp.path(), 64 << 20);
    let mut gw = start_on(&dir).await;
    let mut c = gw.content().await;
    put_items(&mut c, "frozen").await;
    assert_eq!(health(&gw).await, ServingStatus::Serving as i32);
    let files: Vec<std::path::PathBuf> = ["keys.db", "keys.db-wal"]
        .iter()
        .map(|f| dir.join(f))
        .collect();

    chattr("+i", &files);
    let frozen = std::time::Instant::now();
    let took = health_turns(&gw, ServingStatus::NotServing, frozen).await;
    println!("NOT_SERVING {took:?} after keys.db was made immutable");
    expect_code_in(
        put_item(&mut c, "frozen-newcomer", SPACE, "first", b"refused").await,
        &[Code::Unavailable],
        "upload of a new user while keys.db is immutable",
    );

    chattr("-i", &files);
    let thawed = std::time::Instant::now();
    let took = health_turns(&gw, ServingStatus::Serving, thawed).await;
    println!("SERVING {took:?} after the immutable flag was cleared");
    put_items(&mut c, "frozen-newcomer").await;
    assert_items_read_back(&mut c, "frozen").await;
    assert_items_read_back(&mut c, "frozen-newcomer").await;
    drop(c);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Key store deleted or replaced while serving.

/// How `keys.db` is taken away from the running gateway.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// `keys.db`, `keys.db-wal` and `keys.db-shm` deleted.
    Deleted,
    /// `keys.db` replaced by a copy of itself (a different file).
    Replaced,
}

/// After `loss`, health turns NOT_SERVING and writes are refused
/// UNAVAILABLE with a message naming what happened.
async fn key_store_lost_while_serving(loss: Loss) {
    let gw = TestGateway::start_with(|c| Backend::Fs.configure(c)).await;
    let mut c = gw.content().await;
    let user = "before-loss";
    put_items(&mut c, user).await;
    assert_eq!(
        health(&gw).await,
        ServingStatus::Serving as i32,
        "healthy before the loss"
    );

    let db = gw.data_dir.join("keys.db");
    let word = match loss {
        Loss::Deleted => {
            std::fs::remove_file(&db).expect("delete keys.db");
            for side in ["keys.db-wal", "keys.db-shm"] {
                match std::fs::remove_file(gw.data_dir.join(side)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("delete {side}: {e}"),
                }
            }
            "deleted"
        }
        Loss::Replaced => {
            let copy = gw.data_dir.join("keys.db.copy");
            std::fs::copy(&db, &copy).expect("copy keys.db");
            std::fs::remove_file(&db).expect("delete keys.db");
            std::fs::rename(&copy, &db).expect("rename the copy into place");
            "replaced"
        }
    };

    eventually(
        &format!("health is NOT_SERVING after keys.db was {word}"),
        HEALTH_DEADLINE,
        || async { health(&gw).await == ServingStatus::NotServing as i32 },
    )
    .await;

    let expected = format!("keys.db was {word}");
    let s = expect_code(
        put_item(&mut c, "after-loss", SPACE, "first", b"hello").await,
        Code::Unavailable,
        &format!("upload of a new user after keys.db was {word}"),
    );
    assert!(s.message().contains(&expected), "{s:?}");
    // Several at once: calls that find no idle key-store connection must be
    // refused the same way.
    let uploads = (0..8).map(|i| {
        let gw = &gw;
        async move {
            let mut c = gw.content().await;
            put_item(&mut c, &format!("after-loss-{i}"), SPACE, "first", b"hello").await
        }
    });
    for (i, r) in futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .enumerate()
    {
        let s = expect_code(
            r,
            Code::Unavailable,
            &format!("concurrent upload {i} of a new user after keys.db was {word}"),
        );
        assert!(
            s.message().contains(&expected),
            "concurrent upload {i} of a new user after keys.db was {word}: {s:?}"
        );
    }
    let s = expect_code(
        try_erase(&gw, user).await,
        Code::Unavailable,
        &format!("EraseUser after keys.db was {word}"),
    );
    assert!(s.message().contains(&expected), "{s:?}");
    let s = expect_code(
        try_erase(&gw, "never-stored").await,
        Code::Unavailable,
        &format!("EraseUser of another user after keys.db was {word}"),
    );
    assert!(s.message().contains(&expected), "{s:?}");
    // Still NOT_SERVING: nothing brought it back.
    assert_eq!(health(&gw).await, ServingStatus::NotServing as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_key_store_turns_not_serving_and_refuses_writes() {
    key_store_lost_while_serving(Loss::Deleted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_key_store_turns_not_serving_and_refuses_writes() {
    key_store_lost_while_serving(Loss::Replaced).await;
}

/// The keyring deleted under the running gateway: an upload that needs a
/// new KEK wrapped (a new user of a shard without one) is refused
/// UNAVAILABLE naming the keyring and saying an operator must restore it
/// (`STORAGE_LOST`), never INTERNAL, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keyring_refuses_uploads_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_on(dir.path()).await;
    // Serving: the stores are open and the keyring made.
    assert_eq!(health(&gw).await, ServingStatus::Serving as i32);
    let keyring = gw.data_dir.join("keyring");
    assert!(keyring.exists(), "the embedded default made a keyring");
    std::fs::remove_file(&keyring).unwrap();
    let mut c = gw.content().await;
    let s = expect_code(
        put_item(&mut c, "after-keyring-loss", SPACE, "first", b"hello").await,
        Code::Unavailable,
        "upload of a new user after the keyring was deleted",
    );
    assert_eq!(reason(&s).as_deref(), Some("STORAGE_LOST"), "{s:?}");
    let keyring = keyring.display().to_string();
    assert!(
        s.message().contains(&keyring) && s.message().contains("an operator must restore it"),
        "{s:?}"
    );
    gw.assert_nothing_stored("after the keyring was deleted")
        .await;
}

// ---------------------------------------------------------------------------
// Erasure before uploads: clients that refill every freed byte of a full
// disk never take the room erasures need.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasures_win_over_uploads_that_refill_a_full_disk() {
    if !root_or_skip("erasures_win_over_uploads_that_refill_a_full_disk") {
        return;
    }
    const ROUNDS: usize = 3;
    const PER_ROUND: usize = 8;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let _mount = Mount::tmpfs(&dir, "64m");
    let gw = start_on(&dir).await;
    let mut c = gw.content().await;
    let users: Vec<Vec<String>> = (0..ROUNDS)
        .map(|r| (0..PER_ROUND).map(|i| format!("round{r}-{i}")).collect())
        .collect();
    for u in users.iter().flatten() {
        put_items(&mut c, u).await;
    }
    fill_disk(&dir.join("filler"));

    // Clients that upload again as soon as a call fails, for as long as
    // the test runs: every byte freed is asked for at once.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stored = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let refills: Vec<_> = (0..3)
        .map(|k| {
            let (stop, stored, endpoint) = (stop.clone(), stored.clone(), gw.endpoint());
            tokio::spawn(async move {
                let channel = Channel::from_shared(endpoint)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut c = ContentServiceClient::new(channel);
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let id = format!("refill-{n}");
                    if put_item(
                        &mut c,
                        &format!("refiller-{k}"),
                        SPACE,
                        &id,
                        &data(64 << 10, n),
                    )
                    .await
                    .is_ok()
                    {
                        stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let mut succeeded = Vec::new();
    for round in &users {
        let results = futures_util::future::join_all(round.iter().map(|u| try_erase(&gw, u))).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        for (u, r) in round.iter().zip(&results) {
            if let Err(s) = r {
                println!("EraseUser {u}: {:?} {}", s.code(), s.message());
            }
        }
        succeeded.push(ok);
        // Their objects are collected: space the refilling clients ask for.
        for (u, r) in round.iter().zip(&results) {
            if r.is_ok() {
                wait_gc_done(&gw, u).await;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in refills {
        r.await.unwrap();
    }
    println!(
        "erasures succeeding of {PER_ROUND} per round, with clients refilling the disk: \
         {succeeded:?} ({} uploads stored meanwhile)",
        stored.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(succeeded, vec![PER_ROUND; ROUNDS]);
    // And the uploads were refused as a full disk, not lost: a new one now
    // is RESOURCE_EXHAUSTED / STORAGE_FULL.
    let refused = put_item(&mut c, "late", SPACE, "x", &data(64 << 10, 1)).await;
    expect_code(
        refused,
        Code::ResourceExhausted,
        "an upload on the full disk",
    );
}

/// An erasure that commits (in the WAL) but whose scrub then fails
/// (`keys.db` itself immutable: the checkpoint cannot copy frames into it)
/// is reported as failed, yet this process never serves the user's cached
/// key again: the store, which holds the tombstone, decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_whose_scrub_fails_after_its_commit_still_ends_cached_reads() {
    if !root_or_skip("an_erasure_whose_scrub_fails_after_its_commit_still_ends_cached_reads") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, dir, _mount) = ext4_data_dir(tmp.path(), 64 << 20);
    let gw = start_on(&dir).await;
    let mut c = gw.content().await;
    put_items(&mut c, "half").await;
    // The user's key is cached.
    assert_items_read_back(&mut c, "half").await;

    let db = vec![dir.join("keys.db")];
    chattr("+i", &db);
    let erased = try_erase(&gw, "half").await;
    println!("EraseUser with keys.db immutable: {erased:?}");
    let committed = try_erasure_status(&gw, "half").await.is_ok();
    if committed {
        // Whatever the call answered, the erasure holds here at once.
        assert_items_erased(&mut c, "half").await;
    }
    chattr("-i", &db);
    assert!(
        committed,
        "the erasure committed in the WAL (the premise of this test)"
    );
}
