//! Tests of what only the SQLite engine does: adopting stores made by older
//! builds, and deleting a setting without a trace in the files.

use super::*;
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use super::open::SCHEMA;
use crate::keys::store::{
    audit_hash, AuditEntry, AuditLog, JobState, JobStore, KeyStore, Settings,
};

/// A store made before the audit chain: its records are chained, in
/// order and renumbered from 1, at the first open; new records follow.
#[tokio::test]
async fn older_audit_records_are_chained_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
        for (id, action) in [(3, "create_kek"), (7, "erase_user"), (8, "erasure_gc_done")] {
            sqlx::query("INSERT INTO audit (id, at_ms, action, pseudonym, detail) VALUES (?, 5, ?, NULL, 'd')")
                    .bind(id)
                    .bind(action)
                    .execute(&pool)
                    .await
                    .unwrap();
        }
        pool.close().await;
    }
    let store = SqliteKeyStore::open(&path).await.unwrap();
    store
        .audit(&AuditEntry {
            at_ms: 9,
            principal: "local".into(),
            action: "place_hold".into(),
            pseudonym: None,
            outcome: "ok".into(),
            detail: "case c".into(),
        })
        .await
        .unwrap();
    let records = store.audit_records(0, None, None, 10).await.unwrap();
    let actions: Vec<_> = records
        .iter()
        .map(|r| (r.id, r.entry.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (1, "create_kek"),
            (2, "erase_user"),
            (3, "erasure_gc_done"),
            (4, "place_hold")
        ]
    );
    let mut prev = [0u8; 32];
    for r in &records {
        assert_eq!(r.prev_hash, prev);
        assert_eq!(audit_hash(r.id, &r.entry, &prev), r.hash);
        prev = r.hash;
    }
    assert_eq!(records[0].entry.principal, "gateway");
    assert_eq!(store.audit_head().await.unwrap(), Some((4, prev)));
    store.close().await;
    // Reopening changes nothing.
    let store = SqliteKeyStore::open(&path).await.unwrap();
    assert_eq!(
        store.audit_records(0, None, None, 10).await.unwrap(),
        records
    );
}

/// A key store from before job leases: its jobs table gains the new
/// columns at open, and its unfinished job can be leased and resumed.
#[tokio::test]
async fn a_jobs_table_from_before_leases_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE jobs (
                    id TEXT PRIMARY KEY, kind TEXT NOT NULL, pseudonym TEXT,
                    state TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,
                    last_error TEXT NOT NULL DEFAULT '', created_at_ms INTEGER NOT NULL,
                    updated_at_ms INTEGER NOT NULL);
                 INSERT INTO jobs (id, kind, state, done, created_at_ms, updated_at_ms)
                 VALUES ('old', 'erasure_gc', 'running', 7, 1, 1);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteKeyStore::open(&path).await.unwrap();
    let job = store.job("old").await.unwrap().unwrap();
    assert_eq!((job.state, job.done, job.total), (JobState::Running, 7, 0));
    assert_eq!((job.owner, job.lease_until_ms), (None, 0));
    let claimed = store
        .claim_job("old", "me", 10, 20)
        .await
        .unwrap()
        .expect("claimable");
    assert_eq!((claimed.done, claimed.owner.as_deref()), (7, Some("me")));
    assert_eq!(store.unfinished_jobs().await.unwrap().len(), 1);
    store.close().await;
    // Opening again changes nothing more.
    let store = SqliteKeyStore::open(&path).await.unwrap();
    assert_eq!(store.job("old").await.unwrap().unwrap().done, 7);
}

#[tokio::test]
async fn meta_values_by_prefix_and_deleted_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let store = SqliteKeyStore::open(&path).await.unwrap();
    for (k, v) in [
        ("kms_master:0000000002", "b wrapped-two"),
        ("kms_master:0000000001", "a wrapped-one"),
        ("kms_masterx", "not under the prefix"),
        ("master_seen:1", "1"),
    ] {
        store.set_meta_if_absent(k, v).await.unwrap();
    }
    let found = store.meta_values("kms_master:").await.unwrap();
    assert_eq!(
        found,
        [
            (
                "kms_master:0000000001".to_string(),
                "a wrapped-one".to_string()
            ),
            (
                "kms_master:0000000002".to_string(),
                "b wrapped-two".to_string()
            ),
        ]
    );
    // `_` and `%` in a prefix are plain characters.
    assert!(store.meta_values("kms_master_").await.unwrap().is_empty());
    assert!(store.meta_values("kms%").await.unwrap().is_empty());
    assert!(store.delete_meta("kms_master:0000000001").await.unwrap());
    assert!(!store.delete_meta("kms_master:0000000001").await.unwrap());
    assert_eq!(store.meta_values("kms_master:").await.unwrap().len(), 1);
    store.close().await;
    // No copy of the deleted value in the database or its WAL (which
    // SQLite may remove as its last connection closes: a file gone
    // holds nothing).
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = match std::fs::read(entry.unwrap().path()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{e}"),
        };
        assert!(!bytes.windows(13).any(|w| w == b"a wrapped-one"));
    }
}

/// A scrub stopped at each of its steps (the files copied there, as a
/// SIGKILL or a power cut would leave them) opens with everything that was
/// committed, and the WAL it leaves holds none of the bytes written
/// before: SQLite's guarantees hold through the zeroing.
#[tokio::test]
async fn a_scrub_cut_at_any_step_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let engine = SqliteEngine::open(&path).await.unwrap();
    let store = SqlStore::new(engine.clone());
    // Committed and still in the WAL when the scrub starts.
    for i in 0..40 {
        store
            .set_meta_if_absent(&format!("row:{i:03}"), &format!("value-{i:03}-committed"))
            .await
            .unwrap();
    }
    let wal = wal_path(&path);
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "frames in the WAL"
    );
    let cuts = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    engine
        .checkpoint_steps(&mut |step| {
            let at = cuts.path().join(format!("{step:?}"));
            std::fs::create_dir(&at).unwrap();
            // Not `keys.db-shm`: opening it in this process would drop
            // SQLite's locks on it (a crash leaves it stale anyway; SQLite
            // rebuilds it from the WAL).
            for name in ["keys.db", "keys.db-wal"] {
                let from = dir.path().join(name);
                if from.exists() {
                    std::fs::copy(&from, at.join(name)).unwrap();
                }
            }
            if step == ScrubStep::Zeroed {
                let bytes = std::fs::read(at.join("keys.db-wal")).unwrap();
                assert!(
                    !bytes.is_empty() && bytes.iter().all(|b| *b == 0),
                    "zeroed in place"
                );
            }
            copies.push(at);
        })
        .await
        .unwrap();
    let steps: Vec<String> = copies
        .iter()
        .map(|c| c.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(steps, ["Backfilled", "Zeroed", "Truncated"]);
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0, "truncated");
    // Writes after the scrub start the WAL afresh.
    store
        .set_meta_if_absent("row:after", "written after")
        .await
        .unwrap();
    assert_eq!(
        store.meta_value("row:after").await.unwrap().as_deref(),
        Some("written after")
    );
    store.close().await;

    for copy in copies {
        let engine = SqliteEngine::open(&copy.join("keys.db")).await.unwrap();
        let reopened = SqlStore::new(engine.clone());
        let rows = reopened.meta_values("row:").await.unwrap();
        assert_eq!(rows.len(), 40, "{}", copy.display());
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, (_, v))| *v == format!("value-{i:03}-committed")));
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&engine.pool)
            .await
            .unwrap();
        assert_eq!(check, "ok", "{}", copy.display());
        reopened.close().await;
    }
}

/// Scrubs racing with writers and readers of the same store: every write
/// is there afterwards and the database passes SQLite's integrity check
/// (a scrub that zeroed frames a reader or a later writer still needed
/// would corrupt it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrubs_racing_writers_and_readers_corrupt_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    let engine = SqliteEngine::open(&path).await.unwrap();
    let store = std::sync::Arc::new(SqlStore::new(engine.clone()));
    let mut tasks = Vec::new();
    for w in 0..3 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..150 {
                store
                    .set_meta(&format!("w{w}:{i:04}"), &"x".repeat(2000))
                    .await
                    .unwrap();
            }
        }));
    }
    for _ in 0..2 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..150 {
                store.meta_values("w").await.unwrap();
            }
        }));
    }
    let scrubber = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                engine.checkpoint().await.unwrap();
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    scrubber.await.unwrap();
    assert_eq!(store.meta_values("w").await.unwrap().len(), 450);
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&engine.pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    store.close().await;
    let reopened = SqliteKeyStore::open(&path).await.unwrap();
    assert_eq!(reopened.meta_values("w").await.unwrap().len(), 450);
    reopened.close().await;
}
