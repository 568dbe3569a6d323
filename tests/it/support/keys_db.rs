//! Plain SQL on a gateway's SQLite key store (`<data dir>/keys.db`), for
//! tests that read what the API does not show or change what only someone
//! holding the file could. These connections do nothing else: opening the
//! store as the gateway does (`SqliteKeyStore::open`) migrates, checks and
//! may vacuum it, which a test looking at a live gateway's store must not.

use std::path::{Path, PathBuf};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

/// The key store file in `data_dir`.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join(sealgate::keys::sqlite::FILE_NAME)
}

/// A connection pool that may write to the key store in `data_dir`, which
/// must exist.
pub async fn open(data_dir: &Path) -> SqlitePool {
    open_file(&file(data_dir)).await
}

/// A connection pool that may write to the SQLite file `db`, which must
/// exist.
pub async fn open_file(db: &Path) -> SqlitePool {
    connect(SqliteConnectOptions::new().filename(db), db).await
}

/// A read-only connection pool on the key store in `data_dir`.
pub async fn open_read_only(data_dir: &Path) -> SqlitePool {
    let db = file(data_dir);
    connect(
        SqliteConnectOptions::new().filename(&db).read_only(true),
        &db,
    )
    .await
}

async fn connect(options: SqliteConnectOptions, db: &Path) -> SqlitePool {
    SqlitePool::connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()))
}

/// Runs one statement on the key store in `data_dir`; returns the rows it
/// changed.
pub async fn execute(data_dir: &Path, sql: &str) -> u64 {
    let pool = open(data_dir).await;
    let done = sqlx::query(sql)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    done.rows_affected()
}
