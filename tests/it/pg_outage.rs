//! A gateway whose PostgreSQL key store becomes unreachable while it
//! serves (the database's host gone: every connection closes, new ones
//! are refused): health turns NOT_SERVING; calls that need the store are
//! refused `UNAVAILABLE`, retryable, and store nothing; an erasure
//! acknowledged before stays in force; and once the database is back,
//! without a restart, health is SERVING and everything acknowledged is
//! there.

use std::time::Duration;

use sealgate::config::KeyStoreBackend;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use sealgate::api::pb::content_service_client::ContentServiceClient;
use tonic::transport::Channel;

use crate::gateway::{data, get, health, put, reason, try_erase, TestGateway};
use crate::pgenv;
use crate::proxy::FaultProxy;
use crate::support::eventually;

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
    eventually("health turns NOT_SERVING", HEALTH_FOLLOWS, || async {
        health(&gw).await == ServingStatus::NotServing as i32
    })
    .await;
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
    eventually("health turns SERVING again", HEALTH_FOLLOWS, || async {
        health(&gw).await == ServingStatus::Serving as i32
    })
    .await;
    reads_back(&gw, "kept", 1).await;
    refused_as_erased(&gw, "erased").await;
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
