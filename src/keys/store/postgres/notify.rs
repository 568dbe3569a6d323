//! The key store's invalidation feed on PostgreSQL: a commit sends its
//! [`Invalidation`]s by `pg_notify` on [`CHANNEL`] inside its transaction
//! (delivered only if it commits; the engine's `notify`), and
//! [`subscribe`] listens, reconnecting with backoff, telling
//! `Interrupted` while deaf and `All` once it hears again.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::backend;
use crate::crypto::Pseudonym;
use crate::keys::store::{Invalidation, Invalidations, StoreError};

/// The notification channel of invalidations.
pub const CHANNEL: &str = "sealgate_invalidate";

/// The notification payload of an invalidation.
pub(super) fn payload(i: Invalidation) -> String {
    match i {
        Invalidation::User(p) => format!("user:{p}"),
        Invalidation::Shard(s) => format!("shard:{s}"),
        // Never committed; a reader would take it as `all`.
        Invalidation::All | Invalidation::Interrupted => "all".into(),
    }
}

/// An invalidation from a payload; anything unknown (a newer build's
/// notice) drops everything.
fn parse_payload(s: &str) -> Invalidation {
    if let Some(p) = s.strip_prefix("user:") {
        if let Ok(p) = Pseudonym::from_hex(p) {
            return Invalidation::User(p);
        }
    }
    if let Some(shard) = s.strip_prefix("shard:") {
        if let Ok(shard) = shard.parse() {
            return Invalidation::Shard(shard);
        }
    }
    Invalidation::All
}

/// Subscribes to the invalidations every process sharing the database
/// commits from now on.
pub(super) async fn subscribe(pool: &PgPool) -> Result<Invalidations, StoreError> {
    let mut listener = listen(pool).await.map_err(backend)?;
    let pool = pool.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = listener.try_recv() => next,
                () = tx.closed() => return,
            };
            let invalidation = match next {
                Ok(Some(n)) => parse_payload(n.payload()),
                // The connection was lost and is already made again
                // (sqlx reconnects eagerly, or fails): notices may
                // have been missed meanwhile.
                Ok(None) => Invalidation::All,
                Err(sqlx::Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "key store invalidation listener failed; reconnecting");
                    // Deaf until a new listener listens: say so now,
                    // and `All` once it does.
                    if tx.send(Invalidation::Interrupted).await.is_err() {
                        return;
                    }
                    let mut failures = 0u32;
                    listener = loop {
                        failures += 1;
                        // Backoff before reconnecting, capped at 5 s.
                        let wait = Duration::from_millis(100 * u64::from(failures.min(50)));
                        let again = tokio::select! {
                            again = async {
                                tokio::time::sleep(wait).await;
                                listen(&pool).await
                            } => again,
                            () = tx.closed() => return,
                        };
                        match again {
                            Ok(l) => break l,
                            Err(sqlx::Error::PoolClosed) => return,
                            Err(e) => {
                                tracing::warn!(error = %e, "key store invalidation listener could not reconnect");
                            }
                        }
                    };
                    Invalidation::All
                }
            };
            if tx.send(invalidation).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// A listener on [`CHANNEL`], listening when this returns.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let p = Pseudonym::from_hex(&"ab".repeat(32)).unwrap();
        for i in [
            Invalidation::User(p),
            Invalidation::Shard(17),
            Invalidation::All,
        ] {
            assert_eq!(parse_payload(&payload(i)), i);
        }
        assert_eq!(parse_payload("from a newer build"), Invalidation::All);
    }
}
