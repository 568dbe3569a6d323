//! The scrub of the WAL after a commit that destroyed key material: every
//! frame checkpointed, the WAL's bytes overwritten in place with zeros
//! under SQLite's write lock (only when no frame came since the checkpoint,
//! so that no reader can still need one), then truncated. Concurrent
//! erasures share one scrub. The WAL index (`keys.db-shm`) is never opened
//! here: closing a descriptor of it would drop this process's SQLite locks.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::Sqlite;
use sqlx::Row;

use super::{backend, wal_path, SqliteEngine};
use crate::keys::store::StoreError;

/// The steps of a scrub ([`SqliteEngine::checkpoint`]), for a test that
/// stops there.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubStep {
    /// Every WAL frame is in the database file; no reader uses the WAL.
    Backfilled,
    /// The WAL's bytes are zeros.
    Zeroed,
    /// The WAL is empty.
    Truncated,
}

/// `PRAGMA wal_checkpoint(mode)` on `conn`.
async fn checkpoint_on(
    conn: &mut PoolConnection<Sqlite>,
    mode: &str,
) -> Result<Checkpointed, StoreError> {
    let row = sqlx::query(&format!("PRAGMA wal_checkpoint({mode})"))
        .fetch_one(&mut **conn)
        .await
        .map_err(backend)?;
    Ok(Checkpointed {
        busy: row.get(0),
        frames: row.get(1),
        backfilled: row.get(2),
    })
}

/// What `PRAGMA wal_checkpoint` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpointed {
    /// 1 if it could not finish (readers or a writer held it).
    busy: i64,
    /// Frames in the WAL.
    frames: i64,
    /// Frames copied into the database.
    backfilled: i64,
}

impl Checkpointed {
    /// Finished, every frame in the database.
    fn complete(&self) -> bool {
        self.busy == 0 && self.frames == self.backfilled
    }
}

/// The WAL's length and first 32 bytes (its header: a writer that
/// restarts the WAL writes it anew, with a new checkpoint sequence and
/// salts).
fn wal_header(wal: &Path) -> Result<(u64, Vec<u8>), StoreError> {
    use std::io::Read;
    let mut header = Vec::with_capacity(32);
    match std::fs::File::open(wal) {
        Ok(f) => f
            .metadata()
            .map(|m| m.len())
            .and_then(|len| f.take(32).read_to_end(&mut header).map(|_| (len, header)))
            .map_err(|e| StoreError::Unavailable(format!("cannot read {}: {e}", wal.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, header)),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot read {}: {e}",
            wal.display()
        ))),
    }
}

/// Overwrites the file at `path` (if any) with zeros in place, synced.
fn zero_file(path: &Path) -> Result<(), StoreError> {
    let err = |e: std::io::Error| {
        StoreError::Unavailable(format!("cannot scrub {}: {e}", path.display()))
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(mut f) => crate::disk::overwrite_with_zeros(&mut f).map_err(err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// What one store's scrubs share: tickets taken after commits that
/// destroyed key material, the highest ticket a finished scrub covers, and
/// the lock under which the erasure reserve is made again.
#[derive(Debug, Default)]
pub(super) struct Scrubs {
    /// Held while the erasure reserve is made again.
    pub(super) reserve: tokio::sync::Mutex<()>,
    tickets: std::sync::atomic::AtomicU64,
    covered: tokio::sync::Mutex<u64>,
}

impl SqliteEngine {
    /// Moves every WAL frame into the database, overwrites the WAL in place
    /// with zeros and truncates it to zero bytes, so that no older page
    /// version survives in it, nor in the disk blocks it gives back.
    pub(super) async fn checkpoint(&self) -> Result<(), StoreError> {
        self.checkpoint_steps(&mut |_| {}).await
    }

    /// [`Self::checkpoint`], calling `at` after each step (a test copies the
    /// files there: what a crash at that step would leave).
    ///
    /// 1. `wal_checkpoint(RESTART)`: every frame is in the database file
    ///    (synced) and no reader uses the WAL any more; readers from now on
    ///    read the database file alone (the WAL is wholly backfilled).
    /// 2. `BEGIN IMMEDIATE` on a connection of its own: SQLite's write lock,
    ///    so no frame can be written. If a writer came between 1 and 2 (a
    ///    PASSIVE checkpoint reports another frame count, or frames not
    ///    backfilled, or the WAL's header changed), a reader may be using
    ///    the WAL: nothing is zeroed, and the scrub starts again from 1.
    /// 3. The WAL's bytes, header included, overwritten with zeros and
    ///    synced. A process opening the store now finds no valid WAL header
    ///    and ignores the file, which is right: everything in it is in the
    ///    database. The next writer starts the WAL afresh.
    /// 4. The lock released; `wal_checkpoint(TRUNCATE)` gives the (zeroed)
    ///    blocks back.
    pub(super) async fn checkpoint_steps(
        &self,
        at: &mut (dyn FnMut(ScrubStep) + Send),
    ) -> Result<(), StoreError> {
        let wal = wal_path(&self.path);
        for _ in 0..50 {
            let restarted = self.wal_checkpoint("RESTART").await?;
            if !restarted.complete() {
                // Readers held old frames past the busy timeout.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            at(ScrubStep::Backfilled);
            let before = wal_header(&wal)?;
            // Both connections taken before the write lock: writers waiting
            // for the lock may hold the pool's others.
            let mut conn = self.pool.acquire().await.map_err(backend)?;
            let mut probe = self.pool.acquire().await.map_err(backend)?;
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .map_err(backend)?;
            // Under the write lock no frame can be added. Zeroed only if no
            // frame was added since the RESTART either: the same frame
            // count, wholly backfilled (a PASSIVE checkpoint reports both),
            // and the same WAL header (a writer that restarted the WAL
            // rewrote it). Then no reader has used the WAL since, nor can
            // one now. (The WAL index, `keys.db-shm`, is never opened
            // here: closing a descriptor of it would drop this process's
            // SQLite locks on it.)
            let zeroed = async {
                let now = checkpoint_on(&mut probe, "PASSIVE").await?;
                if now == restarted && now.complete() && wal_header(&wal)? == before {
                    zero_file(&wal).map(|()| true)
                } else {
                    Ok(false)
                }
            }
            .await;
            if zeroed.as_ref().is_ok_and(|z| *z) {
                at(ScrubStep::Zeroed);
            }
            let ended = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            if ended.is_err() || zeroed.is_err() {
                // Never back in the pool with its transaction state unknown.
                conn.detach();
            }
            ended.map_err(backend)?;
            if !zeroed? {
                continue;
            }
            if !self.wal_checkpoint("TRUNCATE").await?.complete() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            at(ScrubStep::Truncated);
            return Ok(());
        }
        Err(StoreError::Unavailable(
            "the key store's WAL could not be scrubbed: readers hold it".into(),
        ))
    }

    /// `PRAGMA wal_checkpoint(mode)` on a connection of the pool.
    async fn wal_checkpoint(&self, mode: &str) -> Result<Checkpointed, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        checkpoint_on(&mut conn, mode).await
    }

    /// Whether a commit that destroyed key material is not covered by a
    /// finished scrub (its scrub failed, or runs now).
    pub(super) async fn scrub_pending(&self) -> bool {
        use std::sync::atomic::Ordering;
        let covered = *self.scrubs.covered.lock().await;
        self.scrubs.tickets.load(Ordering::SeqCst) > covered
    }

    /// The scrub after a commit that destroyed key material (`Engine::scrub`).
    pub(super) async fn scrub_shared(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        // Taken after this caller's commit: a scrub that starts later
        // covers it. Concurrent erasures share one scrub instead of each
        // checkpointing (and holding a connection) in turn.
        let ticket = self.scrubs.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.scrubs.covered.lock().await;
        if *covered >= ticket {
            return Ok(());
        }
        let covers = self.scrubs.tickets.load(Ordering::SeqCst);
        self.checkpoint().await?;
        *covered = covers;
        Ok(())
    }
}
