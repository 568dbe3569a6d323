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

use crate::gateway::{config, data, get, health, put, reason, try_erase, TestGateway};
use crate::pgenv;
use crate::proxy::FaultProxy;
use crate::support::eventually;

/// How long health may take to follow the database (probes every second,
/// each given 5 s).
const HEALTH_FOLLOWS: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_unreachable_writes_are_refused_retryably_and_nothing_acknowledged_is_lost() {
    let url = pgenv::fresh_database().await;
    let (head, rest) = url.split_once('@').expect("user@host in the URL");
    let (server, db) = rest.split_once('/').expect("/database in the URL");
    let proxy = FaultProxy::start(server.parse().expect("host:port")).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.keystore.backend = KeyStoreBackend::Postgres;
    c.keystore.url = Some(format!("{head}@{}/{db}", proxy.addr));
    c.keystore.max_connections = 4;
    let gw = TestGateway::start_config(c).await;
    let mut content = gw.content().await;
    put(
        &mut content,
        "kept",
        "moments",
        "pic",
        &data(3_000, 1),
        1_000,
    )
    .await
    .expect("put");
    put(
        &mut content,
        "erased",
        "moments",
        "pic",
        &data(3_000, 2),
        1_000,
    )
    .await
    .expect("put");
    try_erase(&gw, "erased").await.expect("EraseUser");

    proxy.set_up(false);
    eventually("health turns NOT_SERVING", HEALTH_FOLLOWS, || async {
        health(&gw).await == ServingStatus::NotServing as i32
    })
    .await;
    let stored = gw.stored_keys().await;
    // A new user's first write needs the key store for its key.
    let err = put(
        &mut content,
        "newcomer",
        "moments",
        "pic",
        &data(3_000, 3),
        1_000,
    )
    .await
    .expect_err("a write with the key store unreachable");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("retry"), "{err:?}");
    assert_eq!(
        gw.stored_keys().await,
        stored,
        "the refused write stored nothing"
    );
    // An erasure is not acknowledged while it cannot be recorded.
    let err = try_erase(&gw, "kept")
        .await
        .expect_err("an erasure with the key store unreachable");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // The erased user stays refused, whatever this process can reach.
    let err = get(&mut content, "erased", "moments", "pic", None)
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
    let (_, got) = get(&mut content, "kept", "moments", "pic", None)
        .await
        .expect("an acknowledged write reads back");
    assert_eq!(got, data(3_000, 1));
    let err = get(&mut content, "erased", "moments", "pic", None)
        .await
        .expect_err("an acknowledged erasure holds");
    assert_eq!(reason(&err).as_deref(), Some("USER_ERASED"), "{err:?}");
    put(
        &mut content,
        "newcomer",
        "moments",
        "pic",
        &data(3_000, 3),
        1_000,
    )
    .await
    .expect("a write once the database is back");
    let (_, got) = get(&mut content, "newcomer", "moments", "pic", None)
        .await
        .expect("read back");
    assert_eq!(got, data(3_000, 3));
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
    let tmp = tempfile::tempdir().unwrap();
    let mut c = config(tmp.path());
    c.keystore.backend = KeyStoreBackend::Postgres;
    c.keystore.url = Some(url);
    c.keystore.max_connections = 4;
    let gw = TestGateway::start_config(c).await;
    let mut content = gw.content().await;
    put(
        &mut content,
        "kept",
        "moments",
        "pic",
        &data(3_000, 1),
        1_000,
    )
    .await
    .expect("put");

    set_read_only(&db, true).await;
    let stored = gw.stored_keys().await;
    let err = put(
        &mut content,
        "newcomer",
        "moments",
        "pic",
        &data(3_000, 3),
        1_000,
    )
    .await
    .expect_err("a new user's write on a read-only key store");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("read-only"), "{err:?}");
    assert_eq!(
        gw.stored_keys().await,
        stored,
        "the refused write stored nothing"
    );
    let err = try_erase(&gw, "kept")
        .await
        .expect_err("an erasure on a read-only key store");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let (_, got) = get(&mut content, "kept", "moments", "pic", None)
        .await
        .expect("reads go on");
    assert_eq!(got, data(3_000, 1));

    set_read_only(&db, false).await;
    put(
        &mut content,
        "newcomer",
        "moments",
        "pic",
        &data(3_000, 3),
        1_000,
    )
    .await
    .expect("a write once the key store is writable");
    try_erase(&gw, "kept").await.expect("EraseUser");
    let err = get(&mut content, "kept", "moments", "pic", None)
        .await
        .expect_err("erased");
    assert_eq!(reason(&err).as_deref(), Some("USER_ERASED"), "{err:?}");
}
