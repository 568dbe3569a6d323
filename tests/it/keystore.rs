//! The key-store suite: every test runs on SQLite (`keystore::sqlite::name`)
//! and on a real PostgreSQL (`keystore::postgres::name`, a fresh database
//! in the cluster of `pgenv`), through the `KeyStore` trait alone.

use std::path::PathBuf;
use std::sync::Arc;

use sealgate::crypto::Pseudonym;
use sealgate::keys::postgres::{PgSettings, PostgresKeyStore};
use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::store::roles::*;
use sealgate::keys::store::{
    audit_hash, AuditEntry, DestroyKeks, HoldRecord, InsertOutcome, Invalidation, JobCheckpoint,
    JobState, KekRecord, KeyStore, LeasedProgress, NewJob, PlaceHold, RequestRecord, StoreError,
    UserKeyRecord, UserKeyRewrap, UserKeyState, DECOMMISSIONED_META, JOB_KIND_ERASURE_GC,
    JOB_KIND_ROTATE_KEK,
};

use crate::support::pgenv;

/// Runs each named test, an `async fn(Fixture)` in scope with
/// [`Fixture`], on both backends.
macro_rules! keystore_tests {
    ($($name:ident),+ $(,)?) => {
        /// The suite on SQLite.
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::sqlite().await).await;
                }
            )+
        }
        /// The suite on PostgreSQL.
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::postgres().await).await;
                }
            )+
        }
    };
}

pub(crate) use keystore_tests;

keystore_tests!(
    user_keys_are_inserted_once_and_refused_under_a_stale_kek,
    erasure_deletes_keys_and_refuses_later_inserts,
    legal_holds_block_erasure,
    one_of_two_handles_claims_a_job,
    job_leases_expire_and_pass_on,
    exclusive_jobs_are_created_once,
    audit_chain_stays_one_chain_under_concurrent_appenders,
    kek_rotation_moves_every_user_key_and_destroys_old_versions,
    a_lost_lease_writes_nothing,
    user_key_rotation_retire_and_destroy,
    decommission_destroys_every_key,
    requests_are_remembered_once,
    meta_and_store_id_hold_the_first_value,
    invalidations_follow_commits,
);

/// A key store under test, and how to open another handle on it (another
/// process's view).
pub struct Fixture {
    kind: Kind,
    _dir: Option<tempfile::TempDir>,
}

enum Kind {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Fixture {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            kind: Kind::Sqlite(dir.path().join("keys.db")),
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Self {
        Self {
            kind: Kind::Postgres(pgenv::fresh_database().await),
            _dir: None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.kind, Kind::Postgres(_))
    }

    /// A new handle on the store.
    pub async fn open(&self) -> Arc<dyn KeyStore> {
        match &self.kind {
            Kind::Sqlite(path) => Arc::new(SqliteKeyStore::open(path).await.unwrap()),
            Kind::Postgres(url) => Arc::new(
                PostgresKeyStore::open(&PgSettings {
                    url: url.clone(),
                    max_connections: 4,
                    acquire_timeout: std::time::Duration::from_secs(10),
                })
                .await
                .unwrap(),
            ),
        }
    }
}

fn pseudonym(n: u8) -> Pseudonym {
    Pseudonym::from_hex(&format!("{n:02x}").repeat(32)).unwrap()
}

fn kek(shard: u32, version: u32) -> KekRecord {
    KekRecord {
        shard,
        version,
        master_version: 1,
        wrapped: vec![shard as u8, version as u8, 0xee],
        created_at_ms: 1_000,
    }
}

fn user_key(p: Pseudonym, version: u32, shard: u32, kek_version: u32) -> UserKeyRecord {
    UserKeyRecord {
        pseudonym: p,
        version,
        shard,
        kek_version,
        wrapped: vec![version as u8, kek_version as u8, 0xaa],
        state: UserKeyState::Active,
        created_at_ms: 2_000,
    }
}

fn entry(action: &str, detail: String) -> AuditEntry {
    AuditEntry {
        at_ms: 5,
        principal: "local".into(),
        action: action.into(),
        pseudonym: None,
        outcome: "ok".into(),
        detail,
    }
}

fn new_job(id: &str, kind: &str) -> NewJob {
    NewJob {
        id: id.into(),
        kind: kind.into(),
        pseudonym: None,
        params: "p".into(),
    }
}

fn progress<'a>(id: &'a str, owner: &'a str, done: u64) -> LeasedProgress<'a> {
    LeasedProgress {
        id,
        owner,
        until_ms: i64::MAX / 2,
        checkpoint: JobCheckpoint {
            done,
            total: 0,
            cursor: format!("at {done}"),
            last_error: String::new(),
        },
    }
}

/// Checks the whole chain and that the head names its last record.
async fn assert_chain(store: &dyn KeyStore, expected: usize) {
    let records = store.audit_records(0, None, None, 10_000).await.unwrap();
    assert_eq!(records.len(), expected);
    let mut prev = [0u8; 32];
    for (n, r) in records.iter().enumerate() {
        assert_eq!(r.id, n as u64 + 1, "ids from 1 without gaps");
        assert_eq!(r.prev_hash, prev, "record {} links to the one before", r.id);
        assert_eq!(audit_hash(r.id, &r.entry, &prev), r.hash);
        prev = r.hash;
    }
    if expected > 0 {
        assert_eq!(
            store.audit_head().await.unwrap(),
            Some((expected as u64, prev))
        );
    }
}

async fn user_keys_are_inserted_once_and_refused_under_a_stale_kek(f: Fixture) {
    let store = f.open().await;
    let p = pseudonym(1);
    assert!(store.insert_kek(&kek(3, 1)).await.unwrap());
    assert!(!store.insert_kek(&kek(3, 1)).await.unwrap(), "exists");
    assert_eq!(store.latest_kek(3).await.unwrap(), Some(kek(3, 1)));
    assert!(store.holds_keys().await.unwrap());
    assert_eq!(
        store.insert_user_key(&user_key(p, 1, 3, 1)).await.unwrap(),
        InsertOutcome::Inserted
    );
    assert_eq!(
        store.insert_user_key(&user_key(p, 1, 3, 1)).await.unwrap(),
        InsertOutcome::AlreadyExists
    );
    assert!(store.insert_kek(&kek(3, 2)).await.unwrap());
    assert_eq!(
        store.insert_user_key(&user_key(p, 2, 3, 1)).await.unwrap(),
        InsertOutcome::StaleKek,
        "a KEK rotation began: the key must be wrapped under version 2"
    );
    assert_eq!(
        store.user_keys(&p).await.unwrap(),
        vec![user_key(p, 1, 3, 1)]
    );
    assert_eq!(store.kek(3, 1).await.unwrap(), Some(kek(3, 1)));
    assert_eq!(store.latest_kek(3).await.unwrap(), Some(kek(3, 2)));
    assert_eq!(store.kek_counts_by_master().await.unwrap(), vec![(1, 2)]);
    // The insert is on the audit trail.
    let records = store.audit_records(0, Some(&p), None, 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].entry.action, "create_user_key");
    store.close().await;
}

async fn erasure_deletes_keys_and_refuses_later_inserts(f: Fixture) {
    let store = f.open().await;
    let other = f.open().await;
    let p = pseudonym(2);
    store.insert_kek(&kek(0, 1)).await.unwrap();
    store.insert_user_key(&user_key(p, 1, 0, 1)).await.unwrap();
    store
        .remember_request(
            &RequestRecord {
                pseudonym: p,
                request: [7; 32],
                space: "s".into(),
                requested_id: String::new(),
                object_id: "o".into(),
                size: 1,
                etag: "e".into(),
                created_ms: 1,
                at_ms: 10,
            },
            0,
        )
        .await
        .unwrap();
    let t = store.erase_user(&p, 50, "gc1", "local").await.unwrap();
    assert_eq!(t.destroyed_versions, vec![1]);
    assert_eq!(t.gc_job_id, "gc1");
    // Seen by another handle at once.
    assert_eq!(other.user_keys(&p).await.unwrap(), vec![]);
    assert_eq!(other.tombstone(&p).await.unwrap(), Some(t.clone()));
    assert_eq!(other.request(&p, &[7; 32], 0).await.unwrap(), None);
    assert_eq!(
        other.insert_user_key(&user_key(p, 1, 0, 1)).await.unwrap(),
        InsertOutcome::Erased,
        "no key is created for an erased user"
    );
    assert_eq!(
        other
            .rotate_user_key(&user_key(p, 1, 0, 1), "local")
            .await
            .unwrap(),
        InsertOutcome::Erased
    );
    // Idempotent: the first tombstone stands.
    assert_eq!(other.erase_user(&p, 99, "gc2", "local").await.unwrap(), t);
    let gc = store.job("gc1").await.unwrap().unwrap();
    assert_eq!(
        (gc.kind.as_str(), gc.state),
        (JOB_KIND_ERASURE_GC, JobState::Pending)
    );
    assert_eq!(gc.pseudonym, Some(p));
    assert_eq!(store.job("gc2").await.unwrap(), None);
    // Erasures racing with inserts from two handles: whatever the order, no
    // key survives an erasure that returned.
    for n in 10..20u8 {
        let p = pseudonym(n);
        let (a, b) = (store.clone(), other.clone());
        let insert = tokio::spawn(async move { a.insert_user_key(&user_key(p, 1, 0, 1)).await });
        let erase =
            tokio::spawn(async move { b.erase_user(&p, 60, &format!("gc-{n}"), "local").await });
        let inserted = insert.await.unwrap().unwrap();
        erase.await.unwrap().unwrap();
        assert!(matches!(
            inserted,
            InsertOutcome::Inserted | InsertOutcome::Erased
        ));
        assert_eq!(store.user_keys(&p).await.unwrap(), vec![], "user {n}");
    }
    assert_chain(
        &*store,
        store
            .audit_records(0, None, None, 10_000)
            .await
            .unwrap()
            .len(),
    )
    .await;
    store.close().await;
    other.close().await;
}

async fn legal_holds_block_erasure(f: Fixture) {
    let store = f.open().await;
    let p = pseudonym(3);
    let hold = HoldRecord {
        pseudonym: p,
        case_ref: "case-1".into(),
        placed_at_ms: 5,
        placed_by: "legal".into(),
    };
    assert_eq!(store.place_hold(&hold).await.unwrap(), PlaceHold::Placed);
    assert_eq!(
        store.place_hold(&hold).await.unwrap(),
        PlaceHold::Exists(hold.clone())
    );
    match store.erase_user(&p, 9, "gc", "local").await {
        Err(StoreError::LegalHold { cases: 1 }) => {}
        other => panic!("erasure under hold: {other:?}"),
    }
    assert_eq!(store.tombstone(&p).await.unwrap(), None);
    assert_eq!(store.job("gc").await.unwrap(), None, "nothing written");
    assert_eq!(
        store.holds(None, None, 10).await.unwrap(),
        vec![hold.clone()]
    );
    assert_eq!(
        store
            .holds(Some(&p), Some((&p, "case-1")), 10)
            .await
            .unwrap(),
        vec![]
    );
    // Pages in byte order, as SQLite orders them, whatever the database's
    // collation.
    let q = pseudonym(4);
    for case_ref in ["alpha", "Zeta", "_x"] {
        let h = HoldRecord {
            pseudonym: q,
            case_ref: case_ref.into(),
            placed_at_ms: 6,
            placed_by: "legal".into(),
        };
        assert_eq!(store.place_hold(&h).await.unwrap(), PlaceHold::Placed);
    }
    let cases: Vec<String> = store
        .holds(Some(&q), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.case_ref)
        .collect();
    assert_eq!(cases, ["Zeta", "_x", "alpha"]);
    let after_zeta = store.holds(Some(&q), Some((&q, "Zeta")), 1).await.unwrap();
    assert_eq!(after_zeta[0].case_ref, "_x");
    assert!(store.release_hold(&p, "case-1", "legal").await.unwrap());
    assert!(!store.release_hold(&p, "case-1", "legal").await.unwrap());
    store.erase_user(&p, 9, "gc", "local").await.unwrap();
    assert_eq!(store.place_hold(&hold).await.unwrap(), PlaceHold::Erased);
    store.close().await;
}

async fn one_of_two_handles_claims_a_job(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    for round in 0..5 {
        let id = format!("job-{round}");
        a.create_job(&new_job(&id, JOB_KIND_ROTATE_KEK), false)
            .await
            .unwrap();
        let mut racers = Vec::new();
        for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            let id = id.clone();
            racers.push(tokio::spawn(async move {
                store
                    .claim_job(&id, &format!("owner-{n}"), 100, 10_000)
                    .await
                    .unwrap()
            }));
        }
        let mut winners = Vec::new();
        for r in racers {
            if let Some(job) = r.await.unwrap() {
                winners.push(job);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one claim wins");
        let job = &winners[0];
        assert_eq!(job.state, JobState::Running);
        let owner = job.owner.clone().unwrap();
        assert_eq!(a.job(&id).await.unwrap().unwrap().owner, Some(owner));
    }
    a.close().await;
    b.close().await;
}

async fn job_leases_expire_and_pass_on(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let job = a
        .create_job(&new_job("j", JOB_KIND_ROTATE_KEK), false)
        .await
        .unwrap();
    assert_eq!((job.state, job.owner.as_deref()), (JobState::Pending, None));
    assert!(a.claim_job("j", "a", 100, 200).await.unwrap().is_some());
    assert!(
        b.claim_job("j", "b", 150, 300).await.unwrap().is_none(),
        "held"
    );
    assert!(
        a.claim_job("j", "a", 150, 250).await.unwrap().is_some(),
        "own lease"
    );
    assert!(a.renew_job_lease("j", "a", 260).await.unwrap());
    assert!(!b.renew_job_lease("j", "b", 260).await.unwrap());
    let c = JobCheckpoint {
        done: 5,
        total: 10,
        cursor: "5".into(),
        last_error: String::new(),
    };
    assert!(a.checkpoint_job("j", "a", &c, 270).await.unwrap());
    assert!(!b.checkpoint_job("j", "b", &c, 270).await.unwrap());
    // The lease ends; b takes the job over and resumes from the checkpoint.
    let taken = b.claim_job("j", "b", 271, 400).await.unwrap().unwrap();
    assert_eq!(
        (taken.done, taken.total, taken.cursor.as_str()),
        (5, 10, "5")
    );
    assert!(
        !a.renew_job_lease("j", "a", 500).await.unwrap(),
        "a lost it"
    );
    assert!(!a.finish_job("j", "a", JobState::Done, "").await.unwrap());
    assert_eq!(b.unfinished_jobs().await.unwrap().len(), 1);
    assert!(b
        .finish_job("j", "b", JobState::Failed, "gave up")
        .await
        .unwrap());
    let done = a.job("j").await.unwrap().unwrap();
    assert_eq!(
        (
            done.state,
            done.last_error.as_str(),
            done.owner,
            done.lease_until_ms
        ),
        (JobState::Failed, "gave up", None, 0)
    );
    assert!(
        b.claim_job("j", "b", 500, 600).await.unwrap().is_none(),
        "finished"
    );
    assert_eq!(a.unfinished_jobs().await.unwrap(), vec![]);
    assert_eq!(
        a.list_jobs(Some(JobState::Failed), 10).await.unwrap().len(),
        1
    );
    assert_eq!(a.list_jobs(None, 10).await.unwrap().len(), 1);
    assert_eq!(
        a.job_counts().await.unwrap(),
        vec![(JOB_KIND_ROTATE_KEK.to_string(), JobState::Failed, 1)]
    );
    a.update_job("j", JobState::Pending, 0, "").await.unwrap();
    assert_eq!(b.unfinished_jobs().await.unwrap().len(), 1);
    a.close().await;
    b.close().await;
}

async fn exclusive_jobs_are_created_once(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let mut tasks = Vec::new();
    for n in 0..6 {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .create_job(&new_job(&format!("x{n}"), JOB_KIND_ROTATE_KEK), true)
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one job, every caller told its id: {ids:?}");
    assert_eq!(a.unfinished_jobs().await.unwrap().len(), 1);
    a.close().await;
    b.close().await;
}

async fn audit_chain_stays_one_chain_under_concurrent_appenders(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let store = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .audit(&entry("denied", format!("n {n}")))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_chain(&*a, 40).await;
    assert_chain(&*b, 40).await;
    let page = a.audit_records(10, None, Some(5), 5).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    assert_eq!(a.audit_records(0, None, Some(6), 5).await.unwrap(), vec![]);
    a.close().await;
    b.close().await;
}

async fn kek_rotation_moves_every_user_key_and_destroys_old_versions(f: Fixture) {
    let store = f.open().await;
    let shards = [0u32, 1, 2, 3];
    for s in shards {
        store.insert_kek(&kek(s, 1)).await.unwrap();
    }
    for n in 0..40u8 {
        let p = pseudonym(n + 100);
        store
            .insert_user_key(&user_key(p, 1, u32::from(n) % 4, 1))
            .await
            .unwrap();
    }
    assert_eq!(store.count_user_keys(&shards).await.unwrap(), 40);
    assert_eq!(store.count_user_keys(&[1]).await.unwrap(), 10);
    store
        .create_job(&new_job("rot", JOB_KIND_ROTATE_KEK), false)
        .await
        .unwrap();
    store
        .claim_job("rot", "me", 1, i64::MAX / 2)
        .await
        .unwrap()
        .unwrap();
    let new: Vec<KekRecord> = shards.iter().map(|s| kek(*s, 2)).collect();
    assert!(store
        .insert_keks(&new, "local", &progress("rot", "me", 0))
        .await
        .unwrap());
    assert_eq!(store.kek_infos().await.unwrap().len(), 8);
    let targets: Vec<(u32, u32)> = shards.iter().map(|s| (*s, 2)).collect();
    let below = store.user_keys_below_keks(&targets, 1000).await.unwrap();
    assert_eq!(below.len(), 40);
    assert_eq!(
        store
            .user_keys_below_keks(&targets[..1], 1000)
            .await
            .unwrap()
            .len(),
        10
    );
    // The table in its own order, in pages.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.user_keys_in_order(after, 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| (r.pseudonym, r.version));
        all.extend(page);
    }
    assert_eq!(all.len(), 40);
    let mut sorted = all.clone();
    sorted.sort_by_key(|r| (r.pseudonym.to_string(), r.version));
    assert_eq!(all, sorted);
    // Destroying the old versions is refused while any key is under one.
    assert_eq!(
        store.destroy_keks_below(&targets, "local").await.unwrap(),
        DestroyKeks::StillInUse(40)
    );
    let rewraps: Vec<UserKeyRewrap> = all
        .iter()
        .take(39)
        .map(|r| UserKeyRewrap {
            pseudonym: r.pseudonym,
            version: r.version,
            shard: r.shard,
            from_kek: 1,
            to_kek: 2,
            wrapped: vec![9, 9],
        })
        .collect();
    assert!(store
        .rewrap_user_keys(&rewraps, &progress("rot", "me", 39))
        .await
        .unwrap());
    assert_eq!(store.job("rot").await.unwrap().unwrap().done, 39);
    assert_eq!(
        store.destroy_keks_below(&targets, "local").await.unwrap(),
        DestroyKeks::StillInUse(1)
    );
    let last = &all[39];
    // A rewrap whose row moved meanwhile (from_kek no longer matches) is
    // skipped: an erased user's row never comes back either.
    let stale = UserKeyRewrap {
        pseudonym: rewraps[0].pseudonym,
        version: 1,
        shard: rewraps[0].shard,
        from_kek: 1,
        to_kek: 2,
        wrapped: vec![6],
    };
    store
        .erase_user(&last.pseudonym, 1, "gc-last", "local")
        .await
        .unwrap();
    let gone = UserKeyRewrap {
        pseudonym: last.pseudonym,
        version: 1,
        shard: last.shard,
        from_kek: 1,
        to_kek: 2,
        wrapped: vec![6],
    };
    assert!(store
        .rewrap_user_keys(&[stale, gone], &progress("rot", "me", 40))
        .await
        .unwrap());
    assert_eq!(store.user_keys(&last.pseudonym).await.unwrap(), vec![]);
    assert_eq!(
        store.user_keys(&rewraps[0].pseudonym).await.unwrap()[0].wrapped,
        vec![9, 9]
    );
    let mut expected: Vec<(u32, u32)> = shards.iter().map(|s| (*s, 1)).collect();
    expected.sort_unstable();
    assert_eq!(
        store.destroy_keks_below(&targets, "local").await.unwrap(),
        DestroyKeks::Destroyed(expected)
    );
    assert_eq!(store.kek(0, 1).await.unwrap(), None);
    assert_eq!(store.kek_infos().await.unwrap().len(), 4);
    assert_eq!(
        store.destroy_keks_below(&targets, "local").await.unwrap(),
        DestroyKeks::Destroyed(vec![])
    );
    assert!(store
        .finish_job("rot", "me", JobState::Done, "")
        .await
        .unwrap());
    let n = store
        .audit_records(0, None, None, 10_000)
        .await
        .unwrap()
        .len();
    assert_chain(&*store, n).await;
    store.close().await;
}

async fn a_lost_lease_writes_nothing(f: Fixture) {
    let store = f.open().await;
    store.insert_kek(&kek(0, 1)).await.unwrap();
    let p = pseudonym(5);
    store.insert_user_key(&user_key(p, 1, 0, 1)).await.unwrap();
    store
        .create_job(&new_job("r", JOB_KIND_ROTATE_KEK), false)
        .await
        .unwrap();
    store.claim_job("r", "a", 1, 10).await.unwrap().unwrap();
    store
        .claim_job("r", "b", 11, i64::MAX / 2)
        .await
        .unwrap()
        .unwrap();
    assert!(!store
        .insert_keks(&[kek(0, 2)], "local", &progress("r", "a", 1))
        .await
        .unwrap());
    assert_eq!(store.kek(0, 2).await.unwrap(), None);
    let rewrap = UserKeyRewrap {
        pseudonym: p,
        version: 1,
        shard: 0,
        from_kek: 1,
        to_kek: 2,
        wrapped: vec![1],
    };
    assert!(!store
        .rewrap_user_keys(&[rewrap], &progress("r", "a", 1))
        .await
        .unwrap());
    assert_eq!(store.user_keys(&p).await.unwrap()[0].kek_version, 1);
    assert!(!store
        .rewrap_keks(&[], &progress("r", "a", 1))
        .await
        .unwrap());
    let job = store.job("r").await.unwrap().unwrap();
    assert_eq!((job.done, job.owner.as_deref()), (0, Some("b")));
    store.close().await;
}

async fn user_key_rotation_retire_and_destroy(f: Fixture) {
    let store = f.open().await;
    let p = pseudonym(6);
    store.insert_kek(&kek(2, 1)).await.unwrap();
    store.insert_user_key(&user_key(p, 1, 2, 1)).await.unwrap();
    assert_eq!(
        store
            .rotate_user_key(&user_key(p, 3, 2, 1), "local")
            .await
            .unwrap(),
        InsertOutcome::AlreadyExists,
        "not the next version"
    );
    assert_eq!(
        store
            .rotate_user_key(&user_key(p, 2, 2, 1), "local")
            .await
            .unwrap(),
        InsertOutcome::Inserted
    );
    let states: Vec<_> = store
        .user_keys(&p)
        .await
        .unwrap()
        .iter()
        .map(|k| k.state)
        .collect();
    assert_eq!(states, [UserKeyState::DecryptOnly, UserKeyState::Active]);
    assert_eq!(store.retire_user_keys_below(&p, 2).await.unwrap(), vec![1]);
    assert_eq!(store.retire_user_keys_below(&p, 2).await.unwrap(), vec![1]);
    assert_eq!(
        store.destroy_retiring_user_keys(&p, "local").await.unwrap(),
        vec![1]
    );
    assert_eq!(
        store.destroy_retiring_user_keys(&p, "local").await.unwrap(),
        Vec::<u32>::new()
    );
    let left = store.user_keys(&p).await.unwrap();
    assert_eq!(left.iter().map(|k| k.version).collect::<Vec<_>>(), [2]);
    store.close().await;
}

async fn decommission_destroys_every_key(f: Fixture) {
    let store = f.open().await;
    store.insert_kek(&kek(0, 1)).await.unwrap();
    store.insert_kek(&kek(1, 1)).await.unwrap();
    store
        .insert_user_key(&user_key(pseudonym(7), 1, 0, 1))
        .await
        .unwrap();
    assert_eq!(store.decommission(77, "local").await.unwrap(), (1, 2));
    assert!(!store.holds_keys().await.unwrap());
    assert_eq!(store.user_keys(&pseudonym(7)).await.unwrap(), vec![]);
    assert_eq!(
        store
            .meta_value(DECOMMISSIONED_META)
            .await
            .unwrap()
            .as_deref(),
        Some("77")
    );
    let reopened = f.open().await;
    assert_eq!(
        reopened
            .meta_value(DECOMMISSIONED_META)
            .await
            .unwrap()
            .as_deref(),
        Some("77")
    );
    store.close().await;
    reopened.close().await;
}

async fn requests_are_remembered_once(f: Fixture) {
    let store = f.open().await;
    let p = pseudonym(8);
    let record = |object_id: &str, at_ms| RequestRecord {
        pseudonym: p,
        request: [1; 32],
        space: "s".into(),
        requested_id: String::new(),
        object_id: object_id.into(),
        size: 3,
        etag: "e".into(),
        created_ms: 1,
        at_ms,
    };
    assert_eq!(
        store.remember_request(&record("a", 10), 0).await.unwrap(),
        record("a", 10)
    );
    assert_eq!(
        store.remember_request(&record("b", 11), 0).await.unwrap(),
        record("a", 10)
    );
    assert_eq!(
        store.request(&p, &[1; 32], 10).await.unwrap(),
        Some(record("a", 10))
    );
    assert_eq!(store.request(&p, &[1; 32], 11).await.unwrap(), None);
    // Older than the window: dropped, and the new one holds.
    assert_eq!(
        store.remember_request(&record("c", 20), 15).await.unwrap(),
        record("c", 20)
    );
    store.close().await;
}

async fn meta_and_store_id_hold_the_first_value(f: Fixture) {
    let a = f.open().await;
    let b = f.open().await;
    assert_eq!(a.store_id().await.unwrap(), None);
    assert_eq!(a.init_store_id("one").await.unwrap(), "one");
    assert_eq!(b.init_store_id("two").await.unwrap(), "one");
    assert_eq!(b.store_id().await.unwrap().as_deref(), Some("one"));
    assert_eq!(a.set_meta_if_absent("k", "v1").await.unwrap(), "v1");
    assert_eq!(b.set_meta_if_absent("k", "v2").await.unwrap(), "v1");
    assert_eq!(b.meta_value("k").await.unwrap().as_deref(), Some("v1"));
    for (k, v) in [
        ("kms_master:0000000002", "two"),
        ("kms_master:0000000001", "one"),
        ("kms_masterx", "not under the prefix"),
    ] {
        a.set_meta_if_absent(k, v).await.unwrap();
    }
    assert_eq!(
        b.meta_values("kms_master:").await.unwrap(),
        [
            ("kms_master:0000000001".to_string(), "one".to_string()),
            ("kms_master:0000000002".to_string(), "two".to_string()),
        ]
    );
    assert!(b.meta_values("kms_master_").await.unwrap().is_empty());
    assert!(b.meta_values("kms%").await.unwrap().is_empty());
    assert!(b.delete_meta("kms_master:0000000001").await.unwrap());
    assert!(!a.delete_meta("kms_master:0000000001").await.unwrap());
    assert_eq!(a.meta_values("kms_master:").await.unwrap().len(), 1);
    a.check_health().await.unwrap();
    a.close().await;
    b.close().await;
}

/// The next invalidation of the feed, within 10 seconds.
async fn next(rx: &mut sealgate::keys::store::Invalidations) -> Invalidation {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("an invalidation within 10 s")
        .expect("the feed is open")
}

async fn invalidations_follow_commits(f: Fixture) {
    let writer = f.open().await;
    let reader = f.open().await;
    let Some(mut rx) = reader.invalidations().await.unwrap() else {
        assert!(!f.is_postgres(), "PostgreSQL tells every process");
        return;
    };
    writer.insert_kek(&kek(4, 1)).await.unwrap();
    let (held, erased) = (pseudonym(20), pseudonym(21));
    writer
        .insert_user_key(&user_key(held, 1, 4, 1))
        .await
        .unwrap();
    writer
        .insert_user_key(&user_key(erased, 1, 4, 1))
        .await
        .unwrap();
    // An erasure under a legal hold destroys nothing; it is recorded as
    // pending the hold, which restricts the user: that is told first.
    writer
        .place_hold(&HoldRecord {
            pseudonym: held,
            case_ref: "c".into(),
            placed_at_ms: 1,
            placed_by: "legal".into(),
        })
        .await
        .unwrap();
    assert!(writer.erase_user(&held, 1, "gc-h", "local").await.is_err());
    assert_eq!(next(&mut rx).await, Invalidation::User(held));
    writer
        .erase_user(&erased, 1, "gc-e", "local")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Invalidation::User(erased));
    // A held user's keys are not destroyed (a rewrap's last step is
    // refused under the user's lock): released first.
    assert!(matches!(
        writer.destroy_retiring_user_keys(&held, "local").await,
        Err(StoreError::LegalHold { cases: 1 })
    ));
    assert!(writer.release_hold(&held, "c", "legal").await.unwrap());
    // A rotation, a rewrap's retirement and destruction.
    writer
        .rotate_user_key(&user_key(held, 2, 4, 1), "local")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Invalidation::User(held));
    writer.retire_user_keys_below(&held, 2).await.unwrap();
    assert_eq!(next(&mut rx).await, Invalidation::User(held));
    writer
        .destroy_retiring_user_keys(&held, "local")
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, Invalidation::User(held));
    // A KEK rotation's end: the shard.
    writer
        .create_job(&new_job("k", JOB_KIND_ROTATE_KEK), false)
        .await
        .unwrap();
    writer.claim_job("k", "me", 1, i64::MAX / 2).await.unwrap();
    writer
        .insert_keks(&[kek(4, 2)], "local", &progress("k", "me", 0))
        .await
        .unwrap();
    let keys = writer.user_keys(&held).await.unwrap();
    let rewrap = UserKeyRewrap {
        pseudonym: held,
        version: keys[0].version,
        shard: 4,
        from_kek: 1,
        to_kek: 2,
        wrapped: vec![1],
    };
    writer
        .rewrap_user_keys(&[rewrap], &progress("k", "me", 1))
        .await
        .unwrap();
    assert_eq!(
        writer.destroy_keks_below(&[(4, 2)], "local").await.unwrap(),
        DestroyKeks::Destroyed(vec![(4, 1)])
    );
    assert_eq!(next(&mut rx).await, Invalidation::Shard(4));
    writer.decommission(5, "local").await.unwrap();
    assert_eq!(next(&mut rx).await, Invalidation::All);
    // The listener's connection dies: notices may have been lost meanwhile,
    // so the feed says All; it listens again on a new connection.
    let Kind::Postgres(url) = &f.kind else {
        unreachable!()
    };
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    let listeners = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&admin)
        .await
        .unwrap()
    };
    let old = listeners().await;
    assert_eq!(old.len(), 1, "one listener");
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(old[0])
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(killed);
    assert_eq!(next(&mut rx).await, Invalidation::All);
    crate::support::eventually(
        "the listener listens again on a new connection",
        std::time::Duration::from_secs(10),
        || async { matches!(listeners().await.as_slice(), [pid] if *pid != old[0]) },
    )
    .await;
    admin.close().await;
    let later = pseudonym(22);
    writer.erase_user(&later, 1, "gc-l", "local").await.unwrap();
    assert_eq!(next(&mut rx).await, Invalidation::User(later));
    writer.close().await;
    reader.close().await;
}

/// PostgreSQL's feed while its listener cannot listen (the database
/// unreachable from the reader): it says `Interrupted` at once, not `All`,
/// since nothing is heard until a new listener listens; an erasure
/// meanwhile goes unheard; `All` comes once the listener listens again,
/// and later commits are heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_says_interrupted_until_it_listens_again() {
    let url = pgenv::fresh_database().await;
    let (head, rest) = url.split_once('@').expect("user@host in the URL");
    let (server, db) = rest.split_once('/').expect("/database in the URL");
    let proxy = crate::support::proxy::FaultProxy::start(server.parse().expect("host:port")).await;
    let open = |url: String| async move {
        PostgresKeyStore::open(&PgSettings {
            url,
            max_connections: 4,
            acquire_timeout: std::time::Duration::from_secs(2),
        })
        .await
        .unwrap()
    };
    let reader = open(format!("{head}@{}/{db}", proxy.addr)).await;
    let writer = open(url.clone()).await;
    let mut rx = reader.invalidations().await.unwrap().expect("a feed");
    writer.insert_kek(&kek(4, 1)).await.unwrap();
    let (during, later) = (pseudonym(30), pseudonym(31));
    for p in [during, later] {
        writer.insert_user_key(&user_key(p, 1, 4, 1)).await.unwrap();
    }

    proxy.set_up(false);
    assert_eq!(next(&mut rx).await, Invalidation::Interrupted);
    writer
        .erase_user(&during, 1, "gc-d", "local")
        .await
        .unwrap();
    proxy.set_up(true);
    assert_eq!(next(&mut rx).await, Invalidation::All);
    writer.erase_user(&later, 1, "gc-l", "local").await.unwrap();
    assert_eq!(next(&mut rx).await, Invalidation::User(later));
    writer.close().await;
    reader.close().await;
}

/// A database whose schema migrations are newer than this build is refused
/// with a message that says so, on both backends.
#[tokio::test]
async fn sqlite_newer_migrations_are_refused() {
    let f = Fixture::sqlite().await;
    f.open().await.close().await;
    let Kind::Sqlite(path) = &f.kind else {
        unreachable!()
    };
    let pool = crate::support::keys_db::open_file(path).await;
    add_future_migration(&pool).await;
    pool.close().await;
    let err = SqliteKeyStore::open(path).await.unwrap_err();
    assert_newer_refusal(&err);
}

#[tokio::test]
async fn postgres_newer_migrations_are_refused() {
    let f = Fixture::postgres().await;
    f.open().await.close().await;
    let Kind::Postgres(url) = &f.kind else {
        unreachable!()
    };
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let err = PostgresKeyStore::open(&PgSettings {
        url: url.clone(),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(10),
    })
    .await
    .unwrap_err();
    assert_newer_refusal(&err);
}

async fn add_future_migration(pool: &sqlx::SqlitePool) {
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(pool)
    .await
    .unwrap();
}

fn assert_newer_refusal(err: &StoreError) {
    let StoreError::Backend(m) = err else {
        panic!("refused as not retryable: {err:?}")
    };
    assert!(
        m.contains("schema migration 9999") && m.contains("newer sealgate"),
        "{m}"
    );
}

/// A PostgreSQL database holding another program's tables is refused,
/// untouched; an empty one is initialised.
#[tokio::test]
async fn postgres_foreign_tables_are_refused() {
    let url = pgenv::fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE jobs (id int)")
        .execute(&pool)
        .await
        .unwrap();
    let err = PostgresKeyStore::open(&PgSettings {
        url: url.clone(),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(10),
    })
    .await
    .unwrap_err();
    let StoreError::Backend(m) = &err else {
        panic!("not retryable: {err:?}")
    };
    assert!(
        m.contains("not a sealgate key store") && m.contains("(jobs)"),
        "{m}"
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tables, ["jobs"], "nothing created");
    pool.close().await;
}

/// A wrong password never appears in the error, and an unreachable server
/// is retryable.
#[tokio::test]
async fn postgres_errors_never_show_the_password() {
    let port = crate::support::host::free_port();
    let err = PostgresKeyStore::open(&PgSettings {
        url: format!("postgres://sg:hunter2@127.0.0.1:{port}/keys"),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(10),
    })
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("sg:***@127.0.0.1"), "{err}");
}

/// The schema (every table and index with its SQL) and each table's row
/// count of a SQLite key store.
async fn sqlite_shape(path: &std::path::Path) -> Vec<(String, String, i64)> {
    let pool = crate::support::keys_db::open_file(path).await;
    let objects: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT type, name, COALESCE(sql, '') FROM sqlite_master
         WHERE name NOT LIKE '_sqlx_migrations%' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut shape = Vec::new();
    for (kind, name, sql) in objects {
        let rows = if kind == "table" {
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {name}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        } else {
            -1
        };
        shape.push((name, sql, rows));
    }
    pool.close().await;
    shape
}

/// A keys.db written by the key store as it was before schema migrations
/// (`tests/fixtures/keys-before-migrations.db`: KEKs of 4 shards, 3 users'
/// keys, one of them erased, a legal hold, the deployment id, the audit
/// chain) opens as it is: the same tables, indexes and rows, its keys and
/// tombstone read back, its chain intact; only the migrations table is
/// added, and a second open changes nothing more.
#[tokio::test]
async fn sqlite_a_store_from_before_migrations_is_adopted_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/keys-before-migrations.db"
        ),
        &path,
    )
    .unwrap();
    let before = sqlite_shape(&path).await;
    assert!(before
        .iter()
        .any(|(name, _, rows)| name == "user_keys" && *rows == 2));
    let store = SqliteKeyStore::open(&path).await.unwrap();
    let p = pseudonym;
    assert_eq!(
        store.store_id().await.unwrap().as_deref(),
        Some("fixture-store")
    );
    assert_eq!(store.kek_infos().await.unwrap().len(), 4);
    let keys = store.user_keys(&p(1)).await.unwrap();
    assert_eq!(
        (keys.len(), keys[0].shard, keys[0].wrapped.clone()),
        (1, 1, vec![1; 40])
    );
    assert_eq!(
        store.tombstone(&p(2)).await.unwrap().unwrap().gc_job_id,
        "gc-fixture"
    );
    assert_eq!(
        store
            .insert_user_key(&user_key(p(2), 1, 2, 1))
            .await
            .unwrap(),
        InsertOutcome::Erased
    );
    assert_eq!(store.holds(Some(&p(1)), None, 10).await.unwrap().len(), 1);
    let n = store
        .audit_records(0, None, None, 1000)
        .await
        .unwrap()
        .len();
    assert!(n >= 5, "{n} audit records");
    assert_chain(&store, n).await;
    store.close().await;
    // Refused writes above wrote nothing: the store is as it was, with the
    // migrations table beside it, except that migration 2 laid user_keys
    // out in key order (the same rows, WITHOUT ROWID, indexed by shard),
    // migration 3 gave tombstones a receipt column (the same rows) and
    // migration 4 added the (empty) tables of the deletion workflow.
    let after = sqlite_shape(&path).await;
    let others = |shape: &[(String, String, i64)]| -> Vec<(String, String, i64)> {
        shape
            .iter()
            .filter(|(name, _, _)| {
                !name.starts_with("user_keys")
                    && !name.starts_with("scheduled_erasures")
                    && !name.starts_with("erasure_events")
            })
            .map(|(name, sql, rows)| {
                let sql = match name.as_str() {
                    "tombstones" => sql.replace(", receipt BLOB", ""),
                    _ => sql.clone(),
                };
                (name.clone(), sql, *rows)
            })
            .collect()
    };
    assert_eq!(others(&after), others(&before));
    assert!(
        after
            .iter()
            .any(|(name, sql, _)| name == "tombstones" && sql.contains("receipt BLOB")),
        "{after:?}"
    );
    let user_keys: Vec<_> = after
        .iter()
        .filter(|(name, _, _)| name.starts_with("user_keys"))
        .map(|(name, sql, rows)| (name.as_str(), sql.contains("WITHOUT ROWID"), *rows))
        .collect();
    assert_eq!(
        user_keys,
        [("user_keys", true, 2), ("user_keys_by_shard", false, -1)],
        "{after:?}"
    );
    let pool = crate::support::keys_db::open_file(&path).await;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(applied, [1, 2, 3, 4]);
    for table in ["scheduled_erasures", "erasure_events"] {
        assert!(
            after
                .iter()
                .any(|(name, _, rows)| name == table && *rows == 0),
            "{table}: {after:?}"
        );
    }
    pool.close().await;
    SqliteKeyStore::open(&path).await.unwrap().close().await;
    assert_eq!(sqlite_shape(&path).await, after);
}
