//! Faults of a gateway's PostgreSQL key store while it serves: the
//! database unreachable (its host gone: every connection closes, new ones
//! are refused), silent (a network dropping packets: nothing answers, no
//! connection closes), turned read-only (a failover), or out of disk. Calls that
//! cannot be recorded are refused, retryably, and store nothing; whatever
//! was acknowledged holds; and once the fault is repaired everything works
//! without a restart. Health follows a blackholed link within two seconds
//! either way; a replica started while PostgreSQL is unreachable waits for
//! it (health NOT_SERVING) instead of exiting, and one given a wrong
//! password exits naming authentication.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use sealgate::config::KeyStoreBackend;
use sealgate::keys::sqlite::RESERVE_BYTES;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use sealgate::api::pb::content_service_client::ContentServiceClient;
use tonic::transport::Channel;

use crate::support::eventually;
use crate::support::gateway::{data, get, health, put, reason, try_erase, TestGateway};
use crate::support::mounts::{fill_disk, root_or_skip, Mount};
use crate::support::pgenv;
use crate::support::proxy::FaultProxy;

/// How long health may take to follow the database (probes every second,
/// each given 5 s).
const HEALTH_FOLLOWS: Duration = Duration::from_secs(30);

/// A gateway whose key store is the PostgreSQL database at `url`, with an
/// object `pic` stored for each `(user, content seed)` of `users`.
async fn gateway_with(url: String, users: &[(&str, u64)]) -> TestGateway {
    let gw = TestGateway::start_with(|c| {
        c.keystore.backend = KeyStoreBackend::Postgres;
        c.keystore.url = Some(url);
        c.keystore.max_connections = 4;
    })
    .await;
    let mut content = gw.content().await;
    for (user, seed) in users {
        store(&mut content, user, *seed).await.expect("put");
    }
    gw
}

/// Stores `user`'s object `pic` with content `seed`.
async fn store(
    content: &mut ContentServiceClient<Channel>,
    user: &str,
    seed: u64,
) -> Result<(), tonic::Status> {
    put(content, user, "moments", "pic", &data(3_000, seed), 1_000)
        .await
        .map(|_| ())
}

/// `user`'s object reads back as stored with `seed`.
async fn reads_back(gw: &TestGateway, user: &str, seed: u64) {
    let (_, got) = get(&mut gw.content().await, user, "moments", "pic", None)
        .await
        .unwrap_or_else(|e| panic!("{user}'s object: {e:?}"));
    assert_eq!(got, data(3_000, seed), "{user}");
}

/// `user` is refused as erased.
async fn refused_as_erased(gw: &TestGateway, user: &str) {
    let err = get(&mut gw.content().await, user, "moments", "pic", None)
        .await
        .expect_err("an erased user's read");
    assert_eq!(reason(&err).as_deref(), Some("USER_ERASED"), "{err:?}");
}

/// With the key store unable to take writes: a new user's first write
/// (which needs the key store for its key) and an erasure of `user` are
/// refused `UNAVAILABLE` saying `why`, and the refused write stored
/// nothing.
async fn writes_refused(gw: &TestGateway, user: &str, why: &str) {
    let stored = gw.stored_keys().await;
    let err = store(&mut gw.content().await, "newcomer", 3)
        .await
        .expect_err("a new user's write");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(why), "{err:?}");
    assert_eq!(
        gw.stored_keys().await,
        stored,
        "the refused write stored nothing"
    );
    let err = try_erase(gw, user).await.expect_err("an erasure");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

/// Waits until health says `status` (probes every second, each given 5 s).
async fn health_becomes(gw: &TestGateway, status: ServingStatus) {
    let what = format!("health turns {}", status.as_str_name());
    eventually(&what, HEALTH_FOLLOWS, || async {
        health(gw).await == status as i32
    })
    .await;
}

/// Once the key store takes writes again, without a restart: a new user's
/// write goes through and `user` can be erased.
async fn writes_work_again(gw: &TestGateway, user: &str) {
    store(&mut gw.content().await, "newcomer", 3)
        .await
        .expect("a new user's write");
    reads_back(gw, "newcomer", 3).await;
    try_erase(gw, user).await.expect("EraseUser");
    refused_as_erased(gw, user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_unreachable_writes_are_refused_retryably_and_nothing_acknowledged_is_lost() {
    let url = pgenv::fresh_database().await;
    let (head, rest) = url.split_once('@').expect("user@host in the URL");
    let (server, db) = rest.split_once('/').expect("/database in the URL");
    let proxy = FaultProxy::start(server.parse().expect("host:port")).await;
    let gw = gateway_with(
        format!("{head}@{}/{db}", proxy.addr),
        &[("kept", 1), ("erased", 2)],
    )
    .await;
    try_erase(&gw, "erased").await.expect("EraseUser");

    proxy.set_up(false);
    health_becomes(&gw, ServingStatus::NotServing).await;
    writes_refused(&gw, "kept", "retry later").await;
    // The erased user stays refused, whatever this process can reach.
    let err = get(&mut gw.content().await, "erased", "moments", "pic", None)
        .await
        .expect_err("an erased user's read");
    assert!(
        reason(&err).as_deref() == Some("USER_ERASED") || err.code() == Code::Unavailable,
        "{err:?}"
    );

    proxy.set_up(true);
    health_becomes(&gw, ServingStatus::Serving).await;
    reads_back(&gw, "kept", 1).await;
    refused_as_erased(&gw, "erased").await;
    writes_work_again(&gw, "kept").await;
}

/// A silent database (packets dropped, connections left open) fails the
/// calls that need it in `keystore.acquire_timeout_ms` (2 s by default),
/// UNAVAILABLE, "retry later", not in the network's time (which never
/// comes: nothing closes); health follows; and once the link answers again
/// writes go through without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_silent_calls_fail_within_the_acquire_timeout() {
    let url = pgenv::fresh_database().await;
    let (head, rest) = url.split_once('@').expect("user@host in the URL");
    let (server, db) = rest.split_once('/').expect("/database in the URL");
    let proxy = FaultProxy::start(server.parse().expect("host:port")).await;
    let gw = TestGateway::start_with(|c| {
        c.keystore.backend = KeyStoreBackend::Postgres;
        c.keystore.url = Some(format!("{head}@{}/{db}", proxy.addr));
        c.keystore.max_connections = 4;
        c.keystore.acquire_timeout_ms = 2_000;
    })
    .await;
    let mut content = gw.content().await;
    store(&mut content, "kept", 1).await.expect("put");

    proxy.set_frozen(true);
    let mut waited = Vec::new();
    for user in ["silent-1", "silent-2", "silent-3"] {
        let started = Instant::now();
        let err = store(&mut content, user, 2)
            .await
            .expect_err("a new user's write with the key store silent");
        waited.push(started.elapsed());
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("retry later"), "{err:?}");
    }
    println!("store-bound calls with PostgreSQL silent answered after {waited:?}");
    // 2 s to wait for a connection or an answer; the bound leaves a loaded
    // machine room, and is far below the 10 s of a pool's old default (and
    // the network's time, which never comes).
    for took in &waited {
        assert!(*took < Duration::from_secs(6), "waited {waited:?}");
    }
    health_becomes(&gw, ServingStatus::NotServing).await;

    proxy.set_frozen(false);
    health_becomes(&gw, ServingStatus::Serving).await;
    reads_back(&gw, "kept", 1).await;
    writes_work_again(&gw, "kept").await;
}

/// Sets the gateway's database read-only or writable for new sessions and
/// ends its sessions, so every connection the gateway makes from now on
/// has the new setting (a failover to a standby, or an operator's switch).
async fn set_read_only(db: &str, read_only: bool) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&pgenv::shared().url("postgres"))
        .await
        .expect("connect as admin");
    let setting = if read_only { "on" } else { "off" };
    sqlx::query(&format!(
        "ALTER DATABASE {db} SET default_transaction_read_only = {setting}"
    ))
    .execute(&mut admin)
    .await
    .expect("ALTER DATABASE");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .execute(&mut admin)
        .await
        .expect("end the gateway's sessions");
    admin.close().await.ok();
}

/// The database turned read-only under the gateway: writes and erasures
/// are refused `UNAVAILABLE` (retryable) and store nothing, reads go on,
/// and once it is writable again everything works without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_read_only_writes_are_refused_retryably_and_reads_go_on() {
    let url = pgenv::fresh_database().await;
    let db = url.rsplit('/').next().unwrap().to_string();
    let gw = gateway_with(url, &[("kept", 1)]).await;

    set_read_only(&db, true).await;
    writes_refused(&gw, "kept", "read-only").await;
    reads_back(&gw, "kept", 1).await;

    set_read_only(&db, false).await;
    writes_work_again(&gw, "kept").await;
}

/// The size of the erasure reserve of database `db` of `pg`.
async fn reserve_bytes(pg: &pgenv::Postgres, db: &str) -> i64 {
    use sqlx::Connection;
    let url = pg.url(db);
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let size: i64 =
        sqlx::query_scalar("SELECT COALESCE(pg_relation_size(to_regclass('erasure_reserve')), 0)")
            .fetch_one(&mut conn)
            .await
            .expect("reserve size");
    conn.close().await.ok();
    size
}

/// The gateway's database in a tablespace on a small tmpfs, then that disk
/// filled. WAL stays on the cluster's own disk, so the server keeps
/// running and a table that must grow fails `53100` (disk full). A new
/// user's write is stored for good or refused `RESOURCE_EXHAUSTED` /
/// `STORAGE_FULL`, leaving nothing; an erasure goes through on the key
/// store's reserve; with space freed, writes work again without a restart
/// and the reserve is made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_disk_full_writes_are_refused_and_erasure_uses_the_reserve() {
    use sqlx::Connection;
    if !root_or_skip("with_postgres_disk_full_writes_are_refused_and_erasure_uses_the_reserve") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The server runs as postgres: it must reach the mount point.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let _mount = Mount::tmpfs(&disk, "32m");
    let space = disk.join("tablespace");
    std::fs::create_dir(&space).unwrap();
    pgenv::give_to_postgres(&space);
    // A cluster of its own: once the tablespace is full, any backend that
    // must flush one of its database's dirty buffers fails, whichever
    // database that backend serves, so on the shared cluster the other
    // tests' gateways would meet this test's full disk.
    let pg = pgenv::Postgres::start();
    let name = format!("full_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("connect as admin");
    for sql in [
        format!("CREATE TABLESPACE {name} LOCATION '{}'", space.display()),
        format!("CREATE DATABASE {name} TABLESPACE {name}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
    }
    let mut gw = gateway_with(pg.url(&name), &[("kept", 1), ("doomed", 2), ("gone", 3)]).await;
    // An erasure before: the tables an erasure writes have a page each.
    try_erase(&gw, "gone").await.expect("EraseUser");

    let filler = disk.join("filler");
    fill_disk(&filler);
    // New users until the key store cannot grow.
    let mut content = gw.content().await;
    let mut stored = Vec::new();
    let refused = loop {
        let n = stored.len() as u64;
        assert!(n < 2_000, "the key store never ran out of room");
        match store(&mut content, &format!("crowd-{n}"), 100 + n).await {
            Ok(()) => stored.push(n),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert_eq!(reason(&e).as_deref(), Some("STORAGE_FULL"), "{e:?}");
                break n;
            }
        }
    };
    // An erasure on the full disk goes through, on the reserve the key
    // store gives up for it.
    assert!(reserve_bytes(&pg, &name).await >= RESERVE_BYTES as i64);
    try_erase(&gw, "doomed")
        .await
        .expect("an erasure on a full disk");
    assert_eq!(reserve_bytes(&pg, &name).await, 0, "reserve given up");

    std::fs::remove_file(&filler).unwrap();
    reads_back(&gw, "kept", 1).await;
    for n in &stored {
        reads_back(&gw, &format!("crowd-{n}"), 100 + n).await;
    }
    let err = get(
        &mut content,
        &format!("crowd-{refused}"),
        "moments",
        "pic",
        None,
    )
    .await
    .expect_err("the refused write left no object");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    refused_as_erased(&gw, "doomed").await;
    refused_as_erased(&gw, "gone").await;
    writes_work_again(&gw, "kept").await;
    // The erasure there made the reserve again, now that there is room.
    assert!(reserve_bytes(&pg, &name).await >= RESERVE_BYTES as i64);

    gw.stop().await;
    for sql in [
        format!("DROP DATABASE {name} WITH (FORCE)"),
        format!("DROP TABLESPACE {name}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
    }
}

/// How soon health must follow PostgreSQL going silent and coming back:
/// probes a second apart, each given 500 ms.
const HEALTH_WITHIN: Duration = Duration::from_secs(2);

/// Waits (up to [`HEALTH_WITHIN`] after `since`) until health says
/// `status`; how long it took since `since`.
async fn health_within(gw: &TestGateway, status: ServingStatus, since: Instant) -> Duration {
    eventually(
        &format!(
            "health turns {} within {HEALTH_WITHIN:?}",
            status.as_str_name()
        ),
        HEALTH_WITHIN.saturating_sub(since.elapsed()),
        || async { health(gw).await == status as i32 },
    )
    .await;
    since.elapsed()
}

/// A gateway whose key store, the database at `url`, it reaches through a
/// [`FaultProxy`], with the default `keystore.acquire_timeout_ms`; the
/// proxy is `frozen` (blackholed) before the gateway starts if asked.
async fn behind_proxy(url: &str, frozen: bool) -> (FaultProxy, TestGateway) {
    let (head, rest) = url.split_once('@').expect("user@host in the URL");
    let (server, db) = rest.split_once('/').expect("/database in the URL");
    let proxy = FaultProxy::start(server.parse().expect("host:port")).await;
    proxy.set_frozen(frozen);
    let gw = TestGateway::start_with(|c| {
        c.keystore.backend = KeyStoreBackend::Postgres;
        c.keystore.url = Some(format!("{head}@{}/{db}", proxy.addr));
        c.keystore.max_connections = 4;
        c.keystore.acquire_timeout_ms = 2_000;
    })
    .await;
    (proxy, gw)
}

/// PostgreSQL's link blackholed (nothing delivered, nothing closed):
/// health turns NOT_SERVING within two seconds, and SERVING within two
/// seconds of the link coming back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_a_blackholed_postgres_within_two_seconds() {
    let url = pgenv::fresh_database().await;
    let (proxy, gw) = behind_proxy(&url, false).await;
    store(&mut gw.content().await, "kept", 1)
        .await
        .expect("put");
    assert_eq!(health(&gw).await, ServingStatus::Serving as i32);

    proxy.set_frozen(true);
    let took = health_within(&gw, ServingStatus::NotServing, Instant::now()).await;
    println!("NOT_SERVING {took:?} after PostgreSQL was blackholed");

    proxy.set_frozen(false);
    let took = health_within(&gw, ServingStatus::Serving, Instant::now()).await;
    println!("SERVING {took:?} after PostgreSQL came back");
    reads_back(&gw, "kept", 1).await;
    writes_work_again(&gw, "kept").await;
}

/// A replica started while PostgreSQL is unreachable does not exit: it
/// answers health NOT_SERVING (and other calls UNAVAILABLE, retryable)
/// while it keeps trying, and serves once PostgreSQL answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_with_postgres_blackholed_answers_not_serving_then_serves() {
    let url = pgenv::fresh_database().await;
    let (proxy, gw) = behind_proxy(&url, true).await;
    // The first attempt gives up after acquire_timeout_ms; health answers
    // from then on.
    eventually(
        "health answers NOT_SERVING while PostgreSQL is unreachable",
        Duration::from_secs(30),
        || async { health(&gw).await == ServingStatus::NotServing as i32 },
    )
    .await;
    let err = store(&mut gw.content().await, "early", 1)
        .await
        .expect_err("a write before the key store is reached");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry later"), "{err:?}");
    // Still trying, still answering.
    assert_eq!(health(&gw).await, ServingStatus::NotServing as i32);

    proxy.set_frozen(false);
    // Health's server hands over to the full one: a call caught in the
    // handover fails UNAVAILABLE, and is tried again.
    eventually(
        "health turns SERVING once PostgreSQL answers",
        HEALTH_FOLLOWS,
        || async { health_now(&gw).await == Ok(ServingStatus::Serving as i32) },
    )
    .await;
    store(&mut gw.content().await, "late", 2)
        .await
        .expect("a write once PostgreSQL answers");
    reads_back(&gw, "late", 2).await;
}

/// The health the gateway reports now, or the code of a failed call.
async fn health_now(gw: &TestGateway) -> Result<i32, Code> {
    let channel = tonic::transport::Channel::from_shared(gw.endpoint())
        .unwrap()
        .connect()
        .await
        .map_err(|_| Code::Unavailable)?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    match answer {
        Ok(r) => Ok(r.into_inner().status),
        Err(s) => {
            assert_eq!(s.code(), Code::Unavailable, "health Check: {s:?}");
            Err(s.code())
        }
    }
}

/// A wrong password is not retried: `serve` exits with one line naming
/// authentication (and not the password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_wrong_postgres_password_exits_naming_authentication() {
    let pg = pgenv::shared();
    let url = pg.fresh_database().await;
    let db = url.rsplit('/').next().unwrap();
    let role = pg.password_role("right-password").await;
    let wrong = format!(
        "postgres://{role}:wrong-password@127.0.0.1:{}/{db}",
        pg.port
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut serve = crate::support::serve::Serve::new(tmp.path())
        .envs(&[
            ("SEALGATE_KEYSTORE_BACKEND", "postgres"),
            ("SEALGATE_KEYSTORE_URL", &wrong),
        ])
        .spawn();
    let log = serve
        .ready_within(Duration::from_secs(60))
        .await
        .expect_err("serve exits with a wrong password");
    let status = serve.child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one line:\n{log}");
    assert!(
        errors[0].contains("password authentication failed"),
        "{}",
        errors[0]
    );
    assert!(!log.contains("wrong-password"), "{log}");
    println!("{}", errors[0]);
}
