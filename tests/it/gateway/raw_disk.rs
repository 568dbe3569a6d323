//! Erasure against someone who holds the disk: the embedded deployment on
//! an ext4 image (a loop device, mounted without `discard`, so freed blocks
//! keep their bytes), the image read raw after `sync`. When EraseUser has
//! returned, no byte string of an erased user's wrapped key is anywhere in
//! the image (not in `keys.db`, its WAL, nor a block either gave back);
//! past the horizon steps (every KEK rotated, the master rotated, master 1
//! retired), none of the destroyed KEK wraps and no copy of master 1's
//! keyring line. Root only, like the other mount tests.

use std::collections::HashMap;

use super::*;
use crate::support::mounts::{ext4_data_dir, root_or_skip};

const USERS: usize = 8;
const ERASED: usize = 4;

/// Every `(shard, version, wrapped)` KEK and `(pseudonym, wrapped)` user
/// key of the store, read directly.
async fn rows(data_dir: &Path) -> (Vec<Vec<u8>>, HashMap<String, Vec<Vec<u8>>>) {
    let pool = crate::support::keys_db::open(data_dir).await;
    let keks: Vec<Vec<u8>> = sqlx::query_scalar("SELECT wrapped FROM keks")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut users: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let found: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT pseudonym, wrapped FROM user_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    for (p, w) in found {
        users.entry(p).or_default().push(w);
    }
    pool.close().await;
    (keks, users)
}

/// How many times any of `patterns` occurs in `haystack` (patterns of at
/// least 8 bytes, found by their first 8).
fn occurrences(haystack: &[u8], patterns: &[Vec<u8>]) -> usize {
    let mut by_head: HashMap<[u8; 8], Vec<&[u8]>> = HashMap::new();
    for p in patterns {
        assert!(p.len() >= 8);
        by_head
            .entry(p[..8].try_into().unwrap())
            .or_default()
            .push(p);
    }
    let mut n = 0;
    for i in 0..haystack.len().saturating_sub(7) {
        let head: [u8; 8] = haystack[i..i + 8].try_into().unwrap();
        if let Some(ps) = by_head.get(&head) {
            n += ps.iter().filter(|p| haystack[i..].starts_with(p)).count();
        }
    }
    n
}

/// The image's bytes once everything written is on it.
fn raw(image: &Path) -> Vec<u8> {
    crate::support::mounts::run("sync", &[]);
    std::fs::read(image).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_disk_holds_nothing_of_erased_users_nor_of_retired_keys() {
    if !root_or_skip("the_raw_disk_holds_nothing_of_erased_users_nor_of_retired_keys") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (image, dir, mount) = ext4_data_dir(tmp.path(), 48 << 20);

    let mut c = config(&dir);
    Backend::Fs.configure(&mut c);
    c.keystore.shards = 4;
    let mut gw = TestGateway::start_config(c).await;
    let mut content = gw.content().await;
    for u in 0..USERS {
        for o in 0..2 {
            put(
                &mut content,
                &format!("disk-{u}"),
                "moments",
                &format!("photo-{o}"),
                &data(40_000, (u * 2 + o) as u64),
                40_000,
            )
            .await
            .expect("put");
        }
    }
    let (keks_before, user_keys) = rows(&dir).await;
    let mut erased_keys = Vec::new();
    for u in 0..ERASED {
        let p = pseudonym(&gw, &format!("disk-{u}")).await;
        erased_keys.extend(user_keys[&p].iter().cloned());
    }
    assert_eq!(erased_keys.len(), ERASED);
    let before = occurrences(&raw(&image), &erased_keys);
    assert!(
        before >= ERASED,
        "the keys are on the disk before: {before}"
    );

    for u in 0..ERASED {
        try_erase(&gw, &format!("disk-{u}")).await.expect("erase");
    }
    let after_erasure = occurrences(&raw(&image), &erased_keys);
    println!("erased users' wrapped keys on the raw disk: {before} before, {after_erasure} after EraseUser");
    assert_eq!(
        after_erasure, 0,
        "erased users' wrapped keys on the raw disk"
    );

    // The horizon: every KEK rotated (the old versions destroyed), the
    // master rotated, master 1 retired.
    let master_1 = std::fs::read_to_string(dir.join("keyring"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("master 1 "))
        .expect("master 1 in the keyring")
        .to_string();
    let mut admin = gw.admin().await;
    let job = admin
        .rotate_kek(pb::RotateKekRequest {
            shards: vec![],
            all: true,
        })
        .await
        .expect("RotateKek")
        .into_inner()
        .job_id;
    let last = watch_all(&gw, &job).await;
    assert_eq!(last.last().unwrap().state, pb::JobState::Done as i32);
    let (_, last) = rotate_master(&gw).await;
    assert_eq!(last.last().unwrap().state, pb::JobState::Done as i32);
    admin
        .retire_master_key(pb::RetireMasterKeyRequest { version: 1 })
        .await
        .expect("retire master 1");
    let disk = raw(&image);
    let kek_copies = occurrences(&disk, &keks_before);
    let master_copies = occurrences(&disk, &[master_1.clone().into_bytes()]);
    println!(
        "past the horizon: {kek_copies} destroyed KEK wraps, {master_copies} retired master lines"
    );
    assert_eq!(kek_copies, 0, "destroyed KEK wraps on the raw disk");
    assert_eq!(master_copies, 0, "the retired master line on the raw disk");

    // The bystanders read back.
    for u in ERASED..USERS {
        let (_, got) = get(
            &mut content,
            &format!("disk-{u}"),
            "moments",
            "photo-0",
            None,
        )
        .await
        .expect("a bystander");
        assert_eq!(got, data(40_000, (u * 2) as u64));
    }
    gw.stop().await;
    mount.unmount();
}
