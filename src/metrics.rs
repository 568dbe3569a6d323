//! The process's Prometheus metrics: one registry per process, counted by
//! every layer through [`get`], exposed by the server on `metrics.listen`
//! (`/metrics`, the OpenMetrics text format).
//!
//! Counted: calls by method and code and their durations, plaintext bytes
//! in and out, key-cache lookups and key unwraps by level, object-store
//! operations and KMS requests by operation and outcome, jobs by kind and
//! state, streams in flight.
//!
//! No label ever holds a user id, a pseudonym or an object id: methods are
//! the gRPC method names of the proto, codes the gRPC code names, and every
//! other label takes one of a fixed handful of values.
//!
//! It imports nothing of the crate, so that the lowest layers can count.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    level: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LevelLabels {
    level: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StorageLabels {
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: &'static str,
}

/// A cache of unwrapped keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLevel {
    /// Unwrapped KEKs.
    Kek,
    /// Per-user key sets.
    User,
}

/// The key that unwrapped another: `Master` a KEK, `Kek` a user key,
/// `User` an object's data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapLevel {
    /// A KEK unwrapped under a master key.
    Master,
    /// A user key unwrapped under a KEK.
    Kek,
    /// An object's data key unwrapped under a user key.
    User,
}

type DurationFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    durations: DurationFamily,
    http_requests: Family<HttpLabels, Counter>,
    http_durations: DurationFamily,
    /// `sealgate_bytes_total` in and out: fixed labels, so the counters
    /// are kept (no lookup per count).
    bytes: [Counter; 2],
    /// `sealgate_key_cache_requests_total`: [kek, user] × [hit, miss].
    key_cache: [[Counter; 2]; 2],
    /// `sealgate_key_unwraps_total`: master, kek, user.
    unwraps: [Counter; 3],
    storage: Family<StorageLabels, Counter>,
    kms: Family<StorageLabels, Counter>,
    jobs: Family<JobLabels, Gauge>,
    inflight_streams: Gauge,
    backup_behind: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "sealgate_requests",
            "gRPC calls ended, by method and status code",
            requests.clone(),
        );
        let durations: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "sealgate_request_duration_seconds",
            "gRPC call duration, from the request to the end of the response",
            durations.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "sealgate_http_requests",
            "Signed HTTP reads answered, by method (GET, HEAD, other) and status",
            http_requests.clone(),
        );
        let http_durations: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "sealgate_http_request_duration_seconds",
            "Signed HTTP read duration, from the request to the end of the response body",
            http_durations.clone(),
        );
        let bytes_family = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "sealgate_bytes",
            "Plaintext bytes of objects and items received (in) and sent (out)",
            bytes_family.clone(),
        );
        let bytes = ["in", "out"].map(|direction| {
            bytes_family
                .get_or_create(&DirectionLabels { direction })
                .clone()
        });
        let cache_family = Family::<CacheLabels, Counter>::default();
        registry.register(
            "sealgate_key_cache_requests",
            "Lookups in the caches of unwrapped keys",
            cache_family.clone(),
        );
        let key_cache = ["kek", "user"].map(|level| {
            ["hit", "miss"].map(|result| {
                cache_family
                    .get_or_create(&CacheLabels { level, result })
                    .clone()
            })
        });
        let unwraps_family = Family::<LevelLabels, Counter>::default();
        registry.register(
            "sealgate_key_unwraps",
            "Keys unwrapped, by the level of the unwrapping key",
            unwraps_family.clone(),
        );
        let unwraps = ["master", "kek", "user"]
            .map(|level| unwraps_family.get_or_create(&LevelLabels { level }).clone());
        let storage = Family::<StorageLabels, Counter>::default();
        registry.register(
            "sealgate_storage_requests",
            "Object store operations, by operation and outcome",
            storage.clone(),
        );
        let kms = Family::<StorageLabels, Counter>::default();
        registry.register(
            "sealgate_kms_requests",
            "Requests sent to the KMS (each attempt, retries included), by operation and outcome",
            kms.clone(),
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        registry.register(
            "sealgate_jobs",
            "Durable jobs in the key store, by kind and state",
            jobs.clone(),
        );
        let inflight_streams = Gauge::default();
        registry.register(
            "sealgate_inflight_streams",
            "Streaming gRPC calls in progress",
            inflight_streams.clone(),
        );
        let backup_behind = Gauge::default();
        registry.register(
            "sealgate_backup_behind_master_keys",
            "1 when no `sealgate backup` was taken since the newest master version was added",
            backup_behind.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            http_requests,
            http_durations,
            bytes,
            key_cache,
            unwraps,
            storage,
            kms,
            jobs,
            inflight_streams,
            backup_behind,
        }
    }

    /// A gRPC call of `method` ended with `code` (a gRPC code name) after
    /// `took`.
    pub fn call_ended(&self, method: &'static str, code: &'static str, took: Duration) {
        self.requests
            .get_or_create(&CallLabels { method, code })
            .inc();
        self.durations
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// A signed HTTP read of `method` (`GET`, `HEAD`, `other`) answered
    /// `status` (its three digits) and ended after `took`.
    pub fn http_ended(&self, method: &'static str, status: &'static str, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels { method, status })
            .inc();
        self.http_durations
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// `n` plaintext bytes received from a client.
    pub fn bytes_in(&self, n: u64) {
        self.bytes[0].inc_by(n);
    }

    /// `n` plaintext bytes sent to a client.
    pub fn bytes_out(&self, n: u64) {
        self.bytes[1].inc_by(n);
    }

    /// A lookup in a key cache.
    pub fn key_cache(&self, level: CacheLevel, hit: bool) {
        let level = match level {
            CacheLevel::Kek => 0,
            CacheLevel::User => 1,
        };
        self.key_cache[level][usize::from(!hit)].inc();
    }

    /// A key unwrapped under a key of `level`.
    pub fn unwrapped(&self, level: UnwrapLevel) {
        let level = match level {
            UnwrapLevel::Master => 0,
            UnwrapLevel::Kek => 1,
            UnwrapLevel::User => 2,
        };
        self.unwraps[level].inc();
    }

    /// An object store operation `op` ended with `outcome`.
    pub fn storage(&self, op: &'static str, outcome: &'static str) {
        self.storage
            .get_or_create(&StorageLabels { op, outcome })
            .inc();
    }

    /// A request of operation `op` (`encrypt`, `decrypt`) was sent to the
    /// KMS and ended with `outcome` (`ok`: a success status; `error`: another
    /// status; `no_response`: none came back).
    pub fn kms(&self, op: &'static str, outcome: &'static str) {
        self.kms.get_or_create(&StorageLabels { op, outcome }).inc();
    }

    /// Sets the number of jobs of `kind` in `state`.
    pub fn set_jobs(&self, kind: &str, state: &'static str, n: u64) {
        self.jobs
            .get_or_create(&JobLabels {
                kind: kind.to_string(),
                state,
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets whether a backup was taken since the master keys last changed.
    pub fn set_backup_behind(&self, behind: bool) {
        self.backup_behind.set(i64::from(behind));
    }

    /// A streaming call started; it counts in `sealgate_inflight_streams`
    /// until the guard drops.
    pub fn stream_started(&'static self) -> StreamGuard {
        self.inflight_streams.inc();
        StreamGuard(self)
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A streaming call in progress (see [`Metrics::stream_started`]).
pub struct StreamGuard(&'static Metrics);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.inflight_streams.dec();
    }
}
