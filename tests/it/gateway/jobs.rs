//! Durable, leased jobs through KeyAdminService: ListJobs and WatchJob of
//! the garbage collection after an erasure, a job whose owner died taken
//! over once its lease ends, and two gateways on one key store (replicas:
//! a data directory each, one PostgreSQL key store) running each job once.

use std::time::Duration;

use sealgate::keys::sqlite::SqliteKeyStore;
use sealgate::keys::store::roles::*;
use tonic::Code;

use super::*;
use crate::support::eventually;
use crate::support::serve::{watch_to_end, watch_until, Served};

backend_tests!(gc_job_is_listed_and_watched_to_its_end);
pg_tests!(gc_job_is_listed_and_watched_to_its_end);

/// Short leases and polls, so takeovers happen within a test.
fn short_leases(c: &mut Config) {
    c.jobs.lease_seconds = 2;
    c.jobs.poll_seconds = 1;
}

async fn put_objects(gw: &TestGateway, user: &str, n: usize) {
    let mut c = gw.content().await;
    for i in 0..n {
        put(&mut c, user, "moments", &format!("o{i}"), b"some bytes", 4)
            .await
            .expect("put");
    }
}

async fn gc_job_is_listed_and_watched_to_its_end() {
    let gw = TestGateway::start().await;
    put_objects(&gw, "watched", 5).await;
    let receipt = try_erase(&gw, "watched").await.expect("erase");
    let updates = watch_all(&gw, &receipt.gc_job_id).await;
    let last = updates.last().expect("at least one update");
    assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
    assert_eq!((last.done, last.total), (5, 5));
    assert_eq!(last.kind, "erasure_gc");
    assert!(
        updates[..updates.len() - 1]
            .iter()
            .all(|u| u.state != pb::JobState::Done as i32),
        "the stream ends at DONE: {updates:?}"
    );
    assert!(
        updates.windows(2).all(|w| w[0].done <= w[1].done),
        "{updates:?}"
    );
    // Watching a finished job gives its end at once.
    assert_eq!(
        watch_all(&gw, &receipt.gc_job_id).await,
        std::slice::from_ref(last)
    );

    let all = list_jobs(&gw, pb::JobState::Unspecified, 0).await;
    let listed = all
        .iter()
        .find(|j| j.job_id == receipt.gc_job_id)
        .expect("ListJobs lists the GC job");
    assert_eq!(listed, last);
    assert!(list_jobs(&gw, pb::JobState::Failed, 0)
        .await
        .iter()
        .all(|j| j.job_id != receipt.gc_job_id));
    assert_eq!(
        list_jobs(&gw, pb::JobState::Done, 1).await,
        std::slice::from_ref(last)
    );

    let mut admin = gw.admin().await;
    expect_reason(
        admin
            .watch_job(pb::WatchJobRequest {
                job_id: "0123456789abcdef0123456789abcdef".into(),
            })
            .await,
        Code::NotFound,
        "JOB_NOT_FOUND",
        "WatchJob of an unknown job",
    );
    expect_reason(
        admin
            .watch_job(pb::WatchJobRequest {
                job_id: "../keys.db".into(),
            })
            .await,
        Code::InvalidArgument,
        "INVALID_REQUEST",
        "WatchJob of a malformed id",
    );
}

/// A process that died holding a job's lease: another gateway leaves the
/// job alone until the lease ends, then finishes it from its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_leased_by_a_dead_process_is_taken_over_when_the_lease_ends() {
    let mut gw = TestGateway::start_with(short_leases).await;
    put_objects(&gw, "orphaned", 4).await;
    let p = pseudonym(&gw, "orphaned").await;
    gw.stop().await;

    // The erasure was committed and its job claimed by a process that then
    // died: its lease runs for another 3 seconds.
    let lease_ends;
    let job_id = sealgate::names::random_id();
    {
        let store = SqliteKeyStore::open(&crate::support::keys_db::file(&gw.data_dir))
            .await
            .unwrap();
        let pseudonym = sealgate::crypto::Pseudonym::from_hex(&p).unwrap();
        store
            .erase_user(&pseudonym, sealgate::keys::unix_ms(), &job_id, "test")
            .await
            .unwrap();
        let now = sealgate::keys::unix_ms();
        lease_ends = now + 3_000;
        store
            .claim_job(&job_id, "dead-process", now, lease_ends)
            .await
            .unwrap()
            .expect("claimed");
        store.close().await;
    }
    let gw = gw.restart_with(short_leases).await;
    let updates = watch_all(&gw, &job_id).await;
    let last = updates.last().unwrap();
    assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
    assert_eq!(last.done, 4);
    assert!(
        last.updated_at_unix_ms >= lease_ends,
        "taken over only after the lease ended: {updates:?}"
    );
    assert!(gw.user_objects(&p).await.is_empty());
}

/// Two gateways on one key store (and one object store), both told about
/// every job: each job runs once, so every count of deleted objects is
/// exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_key_store_run_each_job_once() {
    with_pg_key_store(with_backend(
        BackendKind::S3,
        two_replicas_run_each_job_once(),
    ))
    .await;
}

/// Two replicas (a data directory each, one PostgreSQL key store, one
/// bucket), each erasure scheduled on both.
async fn two_replicas_run_each_job_once() {
    const USERS: usize = 6;
    const OBJECTS: usize = 8;
    let a = TestGateway::start_with(short_leases).await;
    let b = a.start_replica(short_leases).await;
    for u in 0..USERS {
        put_objects(&a, &format!("racer-{u}"), OBJECTS).await;
    }
    // Each erasure is scheduled on both gateways at once (EraseUser is
    // idempotent and schedules the job every time).
    let mut jobs = Vec::new();
    for u in 0..USERS {
        let user = format!("racer-{u}");
        let (ra, rb) = tokio::join!(try_erase(&a, &user), try_erase(&b, &user));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra, rb);
        jobs.push(ra.gc_job_id);
    }
    for id in &jobs {
        let updates = watch_all(&b, id).await;
        let last = updates.last().unwrap();
        assert_eq!(last.state, pb::JobState::Done as i32, "{updates:?}");
        assert_eq!(
            last.done, OBJECTS as u64,
            "job {id} counted each object once"
        );
    }
    let store = open_key_store(&a.data_dir).await;
    let audit = store.audit_records(0, None, None, 10_000).await.unwrap();
    for id in &jobs {
        let ends = audit
            .iter()
            .filter(|r| {
                r.entry.action == "erasure_gc_done"
                    && r.entry.detail.starts_with(&format!("job {id}:"))
            })
            .count();
        assert_eq!(ends, 1, "job {id} ended once");
    }
    eventually("no job is unfinished", Duration::from_secs(5), || async {
        store.unfinished_jobs().await.unwrap().is_empty()
    })
    .await;
}

/// The real binary, SIGKILLed while it runs a job: a garbage collection
/// that deleted the user's objects in one space (checkpointed) and is
/// retrying a failing listing of the next. A new process takes the job
/// over when the dead one's lease ends and finishes it from the
/// checkpoint: the count of deleted objects is that of the first process,
/// which a restart from zero could not know (the objects are gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_from_its_checkpoint_after_sigkill() {
    const OBJECTS: usize = 5;
    const ENV: &[(&str, &str)] = &[
        ("SEALGATE_JOBS_LEASE_SECONDS", "2"),
        ("SEALGATE_JOBS_POLL_SECONDS", "1"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path();
    let mut first = Served::start(data_dir, ENV).await;
    let mut c = first.content().await;
    for i in 0..OBJECTS {
        put(&mut c, "killed", "moments", &format!("o{i}"), b"bytes", 5)
            .await
            .expect("put");
    }
    let mut admin = first.admin().await;
    let p = first.pseudonym("killed").await;
    // The user's directory in the second space is a file: listing it fails
    // (a transient error) until it is removed.
    let blocker = data_dir.join("objects").join("channels").join(&p);
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();

    let receipt = ErasureServiceClient::new(first.channel().await)
        .erase_user(pb::EraseUserRequest {
            user_id: "killed".into(),
            after_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let job_id = receipt.gc_job_id;
    let retrying = watch_until(&mut admin, &job_id, |p| {
        p.done == OBJECTS as u64 && !p.last_error.is_empty()
    })
    .await;
    assert_eq!(retrying.state, pb::JobState::Running as i32);
    first.process.child.kill().expect("SIGKILL");
    let status = first.process.child.wait().unwrap();
    assert!(!status.success(), "killed: {status:?}");

    std::fs::remove_file(&blocker).unwrap();
    let second = Served::start(data_dir, ENV).await;
    let last = watch_to_end(&mut second.admin().await, &job_id).await;
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    assert_eq!(last.done, OBJECTS as u64, "resumed from the checkpoint");
    assert!(last.last_error.is_empty(), "{last:?}");
    drop(second);
}
