//! The sections of how the running process behaves: `[cache]`,
//! `[limits]`, `[jobs]`, `[log]`, `[server]` (shutdown and health probes),
//! `[metrics]` and `[keys]` (the key schedule), with their defaults and the
//! durations and addresses they mean. Plain settings: this file must never
//! start a timer, a task or a listener.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::choice::LogFormat;

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Lifetime of unwrapped user keys.
    #[serde(deserialize_with = "super::units::seconds")]
    pub ttl_seconds: u64,
    /// Lifetime of unwrapped KEKs.
    #[serde(deserialize_with = "super::units::seconds")]
    pub kek_ttl_seconds: u64,
    /// Bound on cached users.
    pub max_entries: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Self {
            ttl_seconds: 60,
            kek_ttl_seconds: 4 * 3600,
            max_entries: 100_000,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest object PutObject accepts.
    #[serde(deserialize_with = "super::units::bytes")]
    pub max_object_bytes: u64,
    /// Largest item PutItem accepts.
    #[serde(deserialize_with = "super::units::bytes")]
    pub max_item_bytes: u64,
    /// Largest GetItems / BatchGetItems response; items past it fail on
    /// their own (`RESPONSE_BUDGET`). The default is the default gRPC
    /// client's message limit.
    #[serde(deserialize_with = "super::units::bytes")]
    pub max_response_bytes: u64,
    /// Open connections, in total; past it the longest-idle connection is
    /// closed to make room (or, if every one has a call open, the new one).
    /// Unset: derived from the descriptor limit (`server::descriptors`).
    pub max_connections: Option<usize>,
    /// Open connections from one peer address; past it, closed at once.
    pub max_connections_per_peer: usize,
    /// PutObject streams in the process; past it, RESOURCE_EXHAUSTED
    /// (`TOO_MANY_UPLOADS`). Unset: derived from the descriptor limit.
    pub max_concurrent_uploads: Option<usize>,
    /// HTTP/2 streams one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// How long a client has to complete its TLS handshake.
    #[serde(deserialize_with = "super::units::seconds")]
    pub handshake_timeout_seconds: u64,
    /// A connection on which no byte moves either way for this long is
    /// closed.
    #[serde(deserialize_with = "super::units::seconds")]
    pub idle_connection_timeout_seconds: u64,
    /// A PutObject or GetObject stream must move at least
    /// `stream_min_bytes` every this many seconds (or end); one that stalls
    /// or trickles is ended (`STREAM_STALLED`).
    #[serde(deserialize_with = "super::units::seconds")]
    pub stream_timeout_seconds: u64,
    /// See `stream_timeout_seconds`.
    #[serde(deserialize_with = "super::units::bytes")]
    pub stream_min_bytes: u64,
    /// The longest a unary call may run (`CALL_DEADLINE`).
    #[serde(deserialize_with = "super::units::seconds")]
    pub unary_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_object_bytes: 1 << 30,
            max_item_bytes: 64 * 1024,
            max_response_bytes: 4 << 20,
            // Derived at startup from the descriptor limit, so that
            // connections, uploads and the stores fit in it
            // (`server::descriptors`).
            max_connections: None,
            max_connections_per_peer: 256,
            max_concurrent_uploads: None,
            max_streams_per_connection: 128,
            handshake_timeout_seconds: 10,
            idle_connection_timeout_seconds: 120,
            stream_timeout_seconds: 30,
            stream_min_bytes: 64 * 1024,
            unary_timeout_seconds: 60,
        }
    }
}

/// `[jobs]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    /// How long a job's lease lasts unrenewed: how soon another process
    /// takes over the job of one that died.
    #[serde(deserialize_with = "super::units::seconds")]
    pub lease_seconds: u64,
    /// How often the key store is scanned for jobs nobody runs.
    #[serde(deserialize_with = "super::units::seconds")]
    pub poll_seconds: u64,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            lease_seconds: 30,
            poll_seconds: 5,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// On SIGTERM or SIGINT, how long the calls in flight get to finish
    /// before they are ended (uploads aborted).
    #[serde(deserialize_with = "super::units::seconds")]
    pub shutdown_grace_seconds: u64,
    /// How often health probes the key store and the object store.
    #[serde(deserialize_with = "super::units::seconds")]
    pub health_probe_seconds: u64,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            shutdown_grace_seconds: 30,
            health_probe_seconds: 1,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`/metrics`, plain HTTP); empty
    /// turns it off.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl MetricsConfig {
    /// The endpoint's address, `None` when it is off.
    ///
    /// # Errors
    /// A message naming the key if the address does not parse.
    pub fn address(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            format!(
                "metrics.listen: {} is not an address (such as 127.0.0.1:9464), nor empty",
                crate::error::quote(&self.listen)
            )
        })
    }
}

/// `[http]`: the listener of signed reads (`SignRead` URLs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener (`GET`/`HEAD /v1/o/{token}`); empty
    /// (the default) turns it off. TLS from `[tls]` when configured;
    /// plaintext on loopback only.
    pub listen: String,
    /// The longest lifetime of a signed read token; a caller may ask for
    /// less.
    #[serde(deserialize_with = "super::units::seconds")]
    pub max_ttl_seconds: u64,
    /// `Cache-Control` of a served object; empty: `private, max-age=N`,
    /// N the token's remaining seconds.
    pub cache_control: String,
    /// What SignRead puts before the path (`https://img.example.cn`, the
    /// CDN's or this listener's public address); empty: the path alone.
    pub public_url: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            max_ttl_seconds: 600,
            cache_control: String::new(),
            public_url: String::new(),
        }
    }
}

impl HttpConfig {
    /// The listener's address, `None` when it is off.
    ///
    /// # Errors
    /// A message naming the key if the address does not parse.
    pub fn address(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            format!(
                "http.listen: {} is not an address (such as 127.0.0.1:8080), nor empty",
                crate::error::quote(&self.listen)
            )
        })
    }
}

/// `[crypto]`: the cipher suite and the object format version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CryptoConfig {
    /// The suite new objects are sealed in: `"aes-256-gcm"` (the default)
    /// or `"sm4-gcm"`. Objects of both stay readable side by side.
    pub suite: crate::crypto::Suite,
    /// The newest object format version new objects are written in: 2
    /// (the default: objects carry their plaintext's sealed SHA-256) or
    /// 1, while replicas of a build that reads only version 1 still serve
    /// (a rolling upgrade). Both stay readable.
    pub object_version: crate::crypto::Version,
}

impl Default for CryptoConfig {
    fn default() -> Self {
        Self {
            suite: crate::crypto::Suite::default(),
            object_version: crate::crypto::Version::V2,
        }
    }
}

/// `[erasure]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErasureConfig {
    /// The longest cooling-off window an erasure may be scheduled with.
    #[serde(deserialize_with = "super::units::days")]
    pub max_cooloff_days: f64,
    /// How long the erasure feed keeps its events (a watcher further
    /// behind is refused, told where to resume).
    #[serde(deserialize_with = "super::units::days")]
    pub feed_retention_days: f64,
    /// How often each process looks for scheduled erasures that are due.
    #[serde(deserialize_with = "super::units::seconds")]
    pub due_check_seconds: u64,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        Self {
            max_cooloff_days: 30.0,
            feed_retention_days: 90.0,
            due_check_seconds: 1,
        }
    }
}

impl ErasureConfig {
    /// The longest cooling-off window.
    pub fn max_cooloff(&self) -> Duration {
        Duration::from_secs_f64(self.max_cooloff_days * 86_400.0)
    }

    /// How long feed events are kept.
    pub fn feed_retention(&self) -> Duration {
        Duration::from_secs_f64(self.feed_retention_days * 86_400.0)
    }
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    /// No KEK version and no master key version outlives this many days
    /// (fractions allowed): the background schedule rotates each shard's
    /// KEK and the master key at half this age and destroys the old
    /// versions. It bounds the erasure horizon: how long a copy of the key
    /// store taken before an erasure can still open the user's keys. 0
    /// turns the schedule off.
    #[serde(deserialize_with = "super::units::days")]
    pub kek_max_age_days: f64,
    /// How often the schedule looks for keys due for rotation.
    #[serde(deserialize_with = "super::units::seconds")]
    pub schedule_check_seconds: u64,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            kek_max_age_days: 30.0,
            schedule_check_seconds: 600,
        }
    }
}

impl Keys {
    /// The maximum KEK age, `None` when the schedule is off.
    pub fn kek_max_age(&self) -> Option<Duration> {
        (self.kek_max_age_days > 0.0)
            .then(|| Duration::from_secs_f64(self.kek_max_age_days * 86_400.0))
    }
}
