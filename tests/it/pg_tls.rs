//! The PostgreSQL key store over TLS (sqlx with rustls on aws-lc-rs):
//! `sslmode=verify-full` with `sslrootcert` connects to a server that
//! takes TLS connections only, and a server the CA did not sign, or
//! `sslmode=require` against a server without TLS, is refused as a
//! configuration error, never as "retry later".

use std::path::Path;
use std::sync::OnceLock;

use sealgate::keys::postgres::{PgSettings, PostgresKeyStore};
use sealgate::keys::store::roles::*;
use sealgate::keys::store::StoreError;

use crate::support::pgenv::{self, Postgres};
use crate::support::pki::Ca;

/// A cluster taking TLS connections only, and its CA.
fn tls_cluster() -> &'static (Postgres, Ca) {
    static PG: OnceLock<(Postgres, Ca)> = OnceLock::new();
    PG.get_or_init(|| {
        let ca = Ca::new("sealgate test PostgreSQL CA");
        let server = ca.server();
        (Postgres::start_tls(&server.cert, &server.key), ca)
    })
}

async fn open(url: String) -> Result<PostgresKeyStore, StoreError> {
    PostgresKeyStore::open(&PgSettings {
        url,
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(10),
    })
    .await
}

/// `url` with `sslmode=verify-full` and `ca` written to `dir` as its root.
fn verify_full(url: &str, dir: &Path, ca: &Ca) -> String {
    let root = dir.join("root.pem");
    std::fs::write(&root, &ca.pem).unwrap();
    format!("{url}?sslmode=verify-full&sslrootcert={}", root.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_store_connects_over_tls_verifying_the_server() {
    let (pg, ca) = tls_cluster();
    let url = pg.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(verify_full(&url, dir.path(), ca))
        .await
        .expect("open over TLS");
    assert_eq!(store.init_store_id("over-tls").await.unwrap(), "over-tls");
    store.close().await;
    // The server takes nothing else: the store above spoke TLS.
    let err = open(format!("{url}?sslmode=disable"))
        .await
        .expect_err("a connection without TLS");
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("no encryption")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_of_another_ca_is_refused_not_retried() {
    let (pg, _) = tls_cluster();
    let url = pg.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let err = open(verify_full(&url, dir.path(), &Ca::new("someone else")))
        .await
        .expect_err("a server the CA did not sign");
    assert!(
        matches!(&err, StoreError::Backend(m) if m.contains("certificate")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_against_a_server_without_tls_is_refused_not_retried() {
    let url = pgenv::fresh_database().await;
    let err = open(format!("{url}?sslmode=require"))
        .await
        .expect_err("TLS required of a server without it");
    assert!(matches!(&err, StoreError::Backend(_)), "{err:?}");
}
