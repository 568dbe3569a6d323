//! The sections of where data and keys live: `[residency]`, `[blob]`,
//! `[s3]`, `[keystore]` and `[master]`, with their defaults (the embedded
//! deployment). Plain settings: this file must never reach a store, a
//! bucket or KMS, and never shows a key store URL with its password.

use serde::Deserialize;

use super::choice::{BlobBackend, KeyStoreBackend, MasterProvider};

/// `[residency]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Residency {
    /// Regions data may live in: a subset of the built-in catalogue of
    /// mainland China regions ([`crate::residency`]); empty, the default,
    /// allows the whole catalogue.
    pub allowed_regions: Vec<String>,
}

/// `[blob]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blob {
    /// `fs` (embedded, under `data_dir/objects`) or `s3`.
    pub backend: BlobBackend,
    /// The region the data lives in; bound into every object.
    pub region: String,
}

impl Default for Blob {
    fn default() -> Self {
        Self {
            backend: BlobBackend::Fs,
            region: "cn-north-1".into(),
        }
    }
}

/// `[s3]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3 {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint override (S3-compatible stores).
    pub endpoint: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
}

/// `[keystore]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyStoreConfig {
    /// The key store backend.
    pub backend: KeyStoreBackend,
    /// Connection URL of a PostgreSQL key store (may hold its password:
    /// never shown unredacted).
    pub url: Option<String>,
    /// Connections of a PostgreSQL key store's pool (one more for the
    /// invalidation listener).
    pub max_connections: u32,
    /// How long a PostgreSQL key store call may wait for a connection, or
    /// for one statement's answer, before it is refused UNAVAILABLE
    /// ("retry later"): an unreachable or silent database fails calls in
    /// this time, not in the network's.
    #[serde(deserialize_with = "super::units::milliseconds")]
    pub acquire_timeout_ms: u64,
    /// Number of KEK shards. Fixed once keys exist.
    pub shards: u32,
}

impl std::fmt::Debug for KeyStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStoreConfig")
            .field("backend", &self.backend)
            .field(
                "url",
                &self.url.as_deref().map(crate::keys::postgres::redact_url),
            )
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("shards", &self.shards)
            .finish()
    }
}

impl Default for KeyStoreConfig {
    fn default() -> Self {
        Self {
            backend: KeyStoreBackend::Sqlite,
            url: None,
            max_connections: 16,
            acquire_timeout_ms: 2_000,
            shards: 256,
        }
    }
}

/// `[master]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Master {
    /// The master key provider.
    pub provider: MasterProvider,
    /// For `aws-kms`: the ARN of the KMS key new master versions use
    /// (`arn:aws-cn:kms:REGION:ACCOUNT:key/ID`, in an allowed region).
    pub kms_key_arn: Option<String>,
    /// For `aws-kms`: an endpoint override (KMS-compatible servers), under
    /// the same residency rules as `s3.endpoint`.
    pub kms_endpoint: Option<String>,
}

impl Default for Master {
    fn default() -> Self {
        Self {
            provider: MasterProvider::Local,
            kms_key_arn: None,
            kms_endpoint: None,
        }
    }
}
