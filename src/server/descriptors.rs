//! The process's file descriptors: the soft `RLIMIT_NOFILE` raised to the
//! hard limit at startup (by the binary, `main.rs`, which holds the
//! package's `unsafe`; logged by [`log_raise`]), and the connection and
//! upload limits that fit in it when `[limits]` does not set them
//! ([`budget`]).
//!
//! The budget (documented in docs/configuration.md, "Descriptors"):
//!
//! ```text
//! reserve     = 64                      stdio, listeners (gRPC, metrics), the runtime, logs, keyring, DNS
//!             + key store               SQLite: 12 (4 connections × database, WAL, shared memory);
//!                                       PostgreSQL: keystore.max_connections + 1 (the listener)
//!             + 64                      the object store's connections (S3), its other files
//!             + limit / 8               headroom
//! available   = limit − reserve
//! uploads     = min(256, available / 4)            each may hold a descriptor: its temporary file
//! connections = min(16384, available − uploads)    each holds one
//! ```
//!
//! Both are at least 1. A limit set in `[limits]` is used as set; past the
//! budget it is logged as a warning at startup.

use crate::config::{self, KeyStoreBackend};

/// Descriptors kept for the process itself.
const PROCESS_RESERVE: u64 = 64;
/// Descriptors of a SQLite key store: its pool's connections, each with
/// the database, its WAL and its shared memory open.
const SQLITE_RESERVE: u64 = 4 * 3;
/// Descriptors kept for the object store's connections and files.
const OBJECT_STORE_RESERVE: u64 = 64;
/// The most uploads the derived limit allows: each holds buffers, so memory
/// bounds them before descriptors do.
const MAX_DERIVED_UPLOADS: u64 = 256;
/// The most connections the derived limit allows: an idle HTTP/2
/// connection holds tens of KiB, so memory bounds them on a large limit.
const MAX_DERIVED_CONNECTIONS: u64 = 16_384;

/// The descriptor limit of the process: (soft, hard), from
/// `/proc/self/limits` (the library has no `unsafe` for getrlimit).
fn nofile() -> std::io::Result<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| std::io::Error::other("no \"Max open files\" in /proc/self/limits"))?;
    let mut words = line["Max open files".len()..].split_whitespace();
    let mut next = || -> std::io::Result<u64> {
        match words.next() {
            Some("unlimited") => Ok(u64::MAX),
            Some(n) => n.parse().map_err(std::io::Error::other),
            None => Err(std::io::Error::other("a short \"Max open files\" line")),
        }
    };
    Ok((next()?, next()?))
}

/// What the binary's raise of the soft limit did, before logging started:
/// (soft before, hard, why raising failed).
type Raise = std::io::Result<(u64, u64, Option<std::io::Error>)>;

static RAISED: std::sync::Mutex<Option<Raise>> = std::sync::Mutex::new(None);

/// Records what the binary did to the soft limit (`main.rs` raises it
/// before the runtime starts), for [`log_raise`].
pub fn record_raise(raise: Raise) {
    *RAISED.lock().unwrap_or_else(|p| p.into_inner()) = Some(raise);
}

/// Logs the soft and hard descriptor limits and what the raise did.
pub fn log_raise() {
    let raise = RAISED.lock().unwrap_or_else(|p| p.into_inner()).take();
    match raise {
        None => {}
        Some(Err(e)) => tracing::warn!(error = %e, "descriptors: cannot read RLIMIT_NOFILE"),
        Some(Ok((soft, hard, None))) if soft >= hard => {
            tracing::info!("descriptors: soft limit {soft} (the hard limit)");
        }
        Some(Ok((soft, hard, None))) => {
            tracing::info!("descriptors: soft limit raised from {soft} to {hard} (hard limit)");
        }
        Some(Ok((soft, hard, Some(e)))) => tracing::warn!(
            error = %e,
            "descriptors: soft limit {soft} could not be raised to the hard limit {hard}"
        ),
    }
}

/// The connection and upload limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// `limits.max_connections`, set or derived.
    pub connections: usize,
    /// `limits.max_concurrent_uploads`, set or derived.
    pub uploads: usize,
}

/// What the process keeps besides connections and uploads, out of `limit`
/// descriptors.
fn reserve(limit: u64, keystore: &config::KeyStoreConfig) -> u64 {
    let key_store = match keystore.backend {
        KeyStoreBackend::Sqlite => SQLITE_RESERVE,
        KeyStoreBackend::Postgres => u64::from(keystore.max_connections) + 1,
    };
    PROCESS_RESERVE + key_store + OBJECT_STORE_RESERVE + limit / 8
}

/// The limits derived from `limit` descriptors (the module's formula).
pub fn derive(limit: u64, keystore: &config::KeyStoreConfig) -> Budget {
    let available = limit.saturating_sub(reserve(limit, keystore));
    let uploads = (available / 4).clamp(1, MAX_DERIVED_UPLOADS);
    let connections = available
        .saturating_sub(uploads)
        .clamp(1, MAX_DERIVED_CONNECTIONS);
    Budget {
        connections: usize::try_from(connections).unwrap_or(usize::MAX),
        uploads: usize::try_from(uploads).unwrap_or(usize::MAX),
    }
}

/// The connection and upload limits: those `[limits]` sets, the others
/// derived from the soft descriptor limit now in force. Logs them; warns
/// when configured ones do not fit in the descriptors.
pub(super) fn budget(limits: &config::Limits, keystore: &config::KeyStoreConfig) -> Budget {
    let soft = match nofile() {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "descriptors: cannot read RLIMIT_NOFILE; assuming 1024");
            1024
        }
    };
    let derived = derive(soft, keystore);
    let budget = Budget {
        connections: limits.max_connections.unwrap_or(derived.connections),
        uploads: limits.max_concurrent_uploads.unwrap_or(derived.uploads),
    };
    let origin = |set: Option<usize>| {
        if set.is_some() {
            "configured"
        } else {
            "derived"
        }
    };
    tracing::info!(
        max_connections = budget.connections,
        max_connections_from = origin(limits.max_connections),
        max_concurrent_uploads = budget.uploads,
        max_concurrent_uploads_from = origin(limits.max_concurrent_uploads),
        descriptors = soft,
        "limits: max_connections = {}, max_concurrent_uploads = {} for {soft} descriptors",
        budget.connections,
        budget.uploads,
    );
    let needed = (budget.connections as u64)
        .saturating_add(budget.uploads as u64)
        .saturating_add(reserve(0, keystore));
    if (limits.max_connections.is_some() || limits.max_concurrent_uploads.is_some())
        && needed > soft
    {
        tracing::warn!(
            "limits.max_connections ({}) + limits.max_concurrent_uploads ({}) + {} for the \
             process and its stores exceed the {soft} descriptors: when descriptors run \
             short the longest-idle connections are closed, and opening files may fail",
            budget.connections,
            budget.uploads,
            reserve(0, keystore),
        );
    }
    budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_limits_fit_in_the_descriptors() {
        let sqlite = config::KeyStoreConfig::default();
        let postgres = config::KeyStoreConfig {
            backend: KeyStoreBackend::Postgres,
            ..Default::default()
        };
        for ks in [&sqlite, &postgres] {
            for limit in [64, 256, 1024, 4096, 65_536, 524_288, 1 << 20] {
                let b = derive(limit, ks);
                let used = b.connections as u64 + b.uploads as u64 + reserve(limit, ks);
                assert!(used <= limit || limit < 256, "{limit}: {b:?} uses {used}");
                assert!(b.connections >= 1 && b.uploads >= 1, "{limit}: {b:?}");
            }
        }
        // A common default: connections and uploads, with room to spare.
        assert_eq!(
            derive(1024, &sqlite),
            Budget {
                connections: 567,
                uploads: 189
            }
        );
        assert_eq!(
            derive(524_288, &sqlite),
            Budget {
                connections: 16_384,
                uploads: 256
            }
        );
    }
}
