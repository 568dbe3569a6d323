//! Configuration: one TOML file, every key overridable by an environment
//! variable `SEALGATE_<SECTION>_<KEY>` (top-level keys: `SEALGATE_<KEY>`).
//! Defaults are the embedded deployment: filesystem blobs, SQLite keys, a
//! local keyring, plaintext gRPC on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::identity::{Principal, Role};

/// Sections of the file; an environment variable `SEALGATE_<SECTION>_<KEY>`
/// names a key inside one of these, anything else is a top-level key.
const SECTIONS: &[&str] = &[
    "residency",
    "blob",
    "s3",
    "keystore",
    "master",
    "cache",
    "limits",
    "jobs",
    "keys",
    "log",
    "tls",
    "server",
    "metrics",
];

/// Errors loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or an override does not parse or has a wrong type.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Declares a configuration choice: a string in the file, an enum in the
/// code. A value this build lacks is refused when the configuration is
/// parsed, with the list of the values the build has.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident, $key:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value this build has.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The value as written in the configuration.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = String::deserialize(d)?;
                match value.as_str() {
                    $($text => Ok(Self::$variant),)+
                    other => Err(serde::de::Error::custom(format!(
                        "{}: {other:?} is not available in this build, which has: {}",
                        $key,
                        Self::ALL.join(", ")
                    ))),
                }
            }
        }
    };
}

choice!(
    /// `blob.backend`: where objects are stored.
    BlobBackend, "blob.backend" {
        /// Files under `data_dir/objects`.
        Fs = "fs",
        /// An S3-compatible bucket (`[s3]`).
        S3 = "s3",
    }
);

choice!(
    /// `keystore.backend`: where wrapped keys, tombstones and jobs live.
    KeyStoreBackend, "keystore.backend" {
        /// SQLite at `data_dir/keys.db`.
        Sqlite = "sqlite",
        /// PostgreSQL at `keystore.url`, shared by every replica.
        Postgres = "postgres",
    }
);

choice!(
    /// `log.format`: how log lines are written on stderr.
    LogFormat, "log.format" {
        /// Human-readable lines (colour only on a terminal).
        Text = "text",
        /// One JSON object per line, with the current span's fields.
        Json = "json",
    }
);

choice!(
    /// `master.provider`: where master keys live.
    MasterProvider, "master.provider" {
        /// The keyring file `data_dir/keyring`.
        Local = "local",
        /// AWS KMS in the China partition (`master.kms_key_arn`).
        AwsKms = "aws-kms",
    }
);

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address; plaintext is allowed on loopback only.
    pub listen: SocketAddr,
    /// Where the embedded stores live.
    pub data_dir: PathBuf,
    /// Configured namespaces.
    pub spaces: Vec<String>,
    /// Data residency.
    pub residency: Residency,
    /// Object storage.
    pub blob: Blob,
    /// S3 settings (for `blob.backend = "s3"`).
    pub s3: S3,
    /// Key store.
    pub keystore: KeyStoreConfig,
    /// Master key provider.
    pub master: Master,
    /// Caches of unwrapped keys.
    pub cache: Cache,
    /// Size limits.
    pub limits: Limits,
    /// Durable jobs.
    pub jobs: Jobs,
    /// The key schedule.
    pub keys: Keys,
    /// Logging.
    pub log: Log,
    /// Shutdown and health probes.
    pub server: Server,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// TLS with client certificates (required for a non-loopback listen
    /// address).
    pub tls: Option<Tls>,
    /// Who may do what: certificate identities and their roles (`[tls]`
    /// only; on a plaintext loopback listener the local caller holds every
    /// role).
    pub principals: Vec<PrincipalConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("literal address"),
            data_dir: PathBuf::from("./sealgate-data"),
            spaces: vec!["moments".into(), "channels".into()],
            residency: Residency::default(),
            blob: Blob::default(),
            s3: S3::default(),
            keystore: KeyStoreConfig::default(),
            master: Master::default(),
            cache: Cache::default(),
            limits: Limits::default(),
            jobs: Jobs::default(),
            keys: Keys::default(),
            log: Log::default(),
            server: Server::default(),
            metrics: MetricsConfig::default(),
            tls: None,
            principals: Vec::new(),
        }
    }
}

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

/// `[cache]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Lifetime of unwrapped user keys.
    pub ttl_seconds: u64,
    /// Lifetime of unwrapped KEKs.
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
    pub max_object_bytes: u64,
    /// Largest item PutItem accepts.
    pub max_item_bytes: u64,
    /// Largest GetItems / BatchGetItems response; items past it fail on
    /// their own (`RESPONSE_BUDGET`). The default is the default gRPC
    /// client's message limit.
    pub max_response_bytes: u64,
    /// Open connections, in total; a connection past it is closed at once.
    pub max_connections: usize,
    /// Open connections from one peer address; past it, closed at once.
    pub max_connections_per_peer: usize,
    /// PutObject streams in the process; past it, RESOURCE_EXHAUSTED
    /// (`TOO_MANY_UPLOADS`).
    pub max_concurrent_uploads: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// How long a client has to complete its TLS handshake.
    pub handshake_timeout_seconds: u64,
    /// A connection on which no byte moves either way for this long is
    /// closed.
    pub idle_connection_timeout_seconds: u64,
    /// A PutObject or GetObject stream must move at least
    /// `stream_min_bytes` every this many seconds (or end); one that stalls
    /// or trickles is ended (`STREAM_STALLED`).
    pub stream_timeout_seconds: u64,
    /// See `stream_timeout_seconds`.
    pub stream_min_bytes: u64,
    /// The longest a unary call may run (`CALL_DEADLINE`).
    pub unary_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_object_bytes: 1 << 30,
            max_item_bytes: 64 * 1024,
            max_response_bytes: 4 << 20,
            // Within a 1,024-descriptor process: connections, the key
            // store's and object store's own descriptors, and headroom.
            max_connections: 768,
            max_connections_per_peer: 256,
            max_concurrent_uploads: 256,
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
    pub lease_seconds: u64,
    /// How often the key store is scanned for jobs nobody runs.
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
    pub shutdown_grace_seconds: u64,
    /// How often health probes the key store and the object store.
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
    pub kek_max_age_days: f64,
    /// How often the schedule looks for keys due for rotation.
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

/// `[tls]`: the files are re-read when they change on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// The CA certificates (PEM) that sign client certificates; callers
    /// are identified by their certificates.
    pub client_ca: PathBuf,
}

/// `[[principals]]`: a certificate identity (a URI SAN such as
/// `spiffe://app/moments-backend`, or a DNS SAN) and its roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The identity.
    pub id: String,
    /// `content`, `erasure`, `legal`, `ops`.
    pub roles: Vec<Role>,
    /// The spaces the `content` role covers.
    #[serde(default)]
    pub spaces: Vec<String>,
}

impl Config {
    /// Loads `file` (if any), then applies `SEALGATE_*` overrides from `env`.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable file, bad TOML, unknown keys or
    /// wrong types.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        Self::from_table(table, env)
    }

    /// [`Config::load`] of a file holding `text`: the same parsing, overrides
    /// and validation, without the file. The fuzz target of the config
    /// loader (`fuzz/`) drives the loader through here.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Self::from_table(table, env)
    }

    fn from_table(
        mut table: toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("SEALGATE_") else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let (section, key) = match SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_")))
            {
                Some(s) => (Some(*s), rest[s.len() + 1..].to_string()),
                None => (None, rest),
            };
            let list = LIST_KEYS.contains(&(section, key.as_str()));
            let value = parse_env_value(&value, list);
            let target = match section {
                Some(s) => table
                    .entry(s)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| ConfigError::Invalid(format!("[{s}] is not a table")))?,
                None => &mut table,
            };
            target.insert(key, value);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with a message naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_spaces()
            .and_then(|()| self.validate_storage())
            .and_then(|()| self.validate_listen())
            .and_then(|()| self.validate_principals())
            .and_then(|()| self.validate_limits())
            .and_then(|()| self.metrics.address().map(|_| ()))
            .and_then(|()| {
                if self.server.health_probe_seconds == 0 {
                    Err("server.health_probe_seconds: must be at least 1".to_string())
                } else {
                    Ok(())
                }
            })
            .map_err(ConfigError::Invalid)
    }

    fn validate_limits(&self) -> Result<(), String> {
        let l = &self.limits;
        for (key, value) in [
            ("max_connections", l.max_connections as u64),
            (
                "max_connections_per_peer",
                l.max_connections_per_peer as u64,
            ),
            ("max_concurrent_uploads", l.max_concurrent_uploads as u64),
            (
                "max_streams_per_connection",
                u64::from(l.max_streams_per_connection),
            ),
            ("handshake_timeout_seconds", l.handshake_timeout_seconds),
            (
                "idle_connection_timeout_seconds",
                l.idle_connection_timeout_seconds,
            ),
            ("stream_timeout_seconds", l.stream_timeout_seconds),
            ("unary_timeout_seconds", l.unary_timeout_seconds),
        ] {
            if value == 0 {
                return Err(format!("limits.{key}: must be at least 1"));
            }
        }
        Ok(())
    }

    fn validate_spaces(&self) -> Result<(), String> {
        if self.spaces.is_empty() {
            return Err("spaces: at least one space is required".into());
        }
        for s in &self.spaces {
            if let Err(e) = crate::names::check_name(s) {
                return Err(format!("spaces: {s:?} is not a valid space name: it {e}"));
            }
        }
        Ok(())
    }

    fn validate_storage(&self) -> Result<(), String> {
        match self.blob.backend {
            BlobBackend::Fs => {}
            BlobBackend::S3 => {
                if self.s3.bucket.is_empty() {
                    return Err("s3.bucket: required when blob.backend = \"s3\"".into());
                }
                crate::residency::check(
                    self.s3.endpoint.as_deref(),
                    &self.blob.region,
                    &self.residency.allowed_regions,
                )?;
            }
        }
        if self.keystore.shards == 0 {
            return Err("keystore.shards must be at least 1".into());
        }
        match (self.keystore.backend, self.keystore.url.as_deref()) {
            (KeyStoreBackend::Postgres, None | Some("")) => {
                return Err(
                    "keystore.url: required when keystore.backend = \"postgres\" \
                     (postgres://user:password@host:5432/database, or SEALGATE_KEYSTORE_URL)"
                        .into(),
                );
            }
            (KeyStoreBackend::Postgres, Some(url))
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) =>
            {
                return Err(format!(
                    "keystore.url: {} is not a PostgreSQL URL (postgres://...)",
                    crate::keys::postgres::redact_url(url)
                ));
            }
            (KeyStoreBackend::Sqlite, Some(_)) => {
                return Err(
                    "keystore.url: only used with keystore.backend = \"postgres\" \
                     (SQLite keeps its keys in data_dir/keys.db)"
                        .into(),
                );
            }
            _ => {}
        }
        if self.keystore.backend == KeyStoreBackend::Postgres
            && !(2..=1000).contains(&self.keystore.max_connections)
        {
            return Err("keystore.max_connections must be between 2 and 1000".into());
        }
        if !self.keys.kek_max_age_days.is_finite()
            || !(0.0..=36_500.0).contains(&self.keys.kek_max_age_days)
        {
            return Err("keys.kek_max_age_days must be between 0 (off) and 36500".into());
        }
        if self.keys.schedule_check_seconds == 0 {
            return Err("keys.schedule_check_seconds must be at least 1".into());
        }
        if self.jobs.lease_seconds < 2 {
            return Err("jobs.lease_seconds must be at least 2".into());
        }
        if self.jobs.poll_seconds == 0 {
            return Err("jobs.poll_seconds must be at least 1".into());
        }
        if self.blob.backend == BlobBackend::Fs {
            crate::residency::check_local(&self.blob.region, &self.residency.allowed_regions)?;
        }
        self.validate_master()
    }

    /// The KMS key's ARN and endpoint, checked before any network call.
    fn validate_master(&self) -> Result<(), String> {
        match self.master.provider {
            MasterProvider::Local => {
                for (key, value) in [
                    ("kms_key_arn", &self.master.kms_key_arn),
                    ("kms_endpoint", &self.master.kms_endpoint),
                ] {
                    if value.is_some() {
                        return Err(format!(
                            "master.{key}: set, but master.provider is \"local\"; set master.provider = \"aws-kms\" to use KMS"
                        ));
                    }
                }
                Ok(())
            }
            MasterProvider::AwsKms => {
                let arn = self
                    .master
                    .kms_key_arn
                    .as_deref()
                    .ok_or("master.kms_key_arn: required when master.provider = \"aws-kms\"")?;
                crate::residency::check_kms(
                    arn,
                    self.master.kms_endpoint.as_deref(),
                    &self.residency.allowed_regions,
                )
                .map(drop)
            }
        }
    }

    /// The region of the configured KMS key (`None` for the local keyring).
    pub fn kms_region(&self) -> Option<String> {
        let arn = self.master.kms_key_arn.as_deref()?;
        (self.master.provider == MasterProvider::AwsKms)
            .then(|| crate::residency::KmsArn::parse(arn).ok().map(|a| a.region))
            .flatten()
    }

    fn validate_listen(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.tls.is_none() {
            return Err(format!(
                "listen: {} is not a loopback address and [tls] is not configured; plaintext gRPC is only served on loopback",
                self.listen
            ));
        }
        Ok(())
    }

    fn validate_principals(&self) -> Result<(), String> {
        if self.tls.is_none() && !self.principals.is_empty() {
            return Err(
                "principals: certificate identities need [tls]; without it only the local caller on loopback is served, with every role".into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.principals {
            if p.id.is_empty() {
                return Err("principals: an id is empty".into());
            }
            if !seen.insert(p.id.as_str()) {
                return Err(format!("principals: {:?} is listed twice", p.id));
            }
            if p.roles.is_empty() {
                return Err(format!("principals: {:?} has no roles", p.id));
            }
            let content = p.roles.contains(&Role::Content);
            if content && p.spaces.is_empty() {
                return Err(format!(
                    "principals: {:?} has the role content but no spaces",
                    p.id
                ));
            }
            if !content && !p.spaces.is_empty() {
                return Err(format!(
                    "principals: {:?} has spaces but not the role content",
                    p.id
                ));
            }
            if let Some(s) = p.spaces.iter().find(|s| !self.spaces.contains(s)) {
                return Err(format!(
                    "principals: {:?} names the space {s:?}, which is not in spaces",
                    p.id
                ));
            }
        }
        Ok(())
    }

    /// The configured principals, for the authorization policy.
    pub fn principals(&self) -> Vec<Principal> {
        self.principals
            .iter()
            .map(|p| Principal {
                id: p.id.clone(),
                roles: p.roles.clone(),
                spaces: p.spaces.clone(),
            })
            .collect()
    }
}

/// The keys holding lists of strings that an environment variable can set
/// (section, key): a bare value is a comma-separated list, one item or
/// more.
const LIST_KEYS: &[(Option<&str>, &str)] =
    &[(None, "spaces"), (Some("residency"), "allowed_regions")];

/// An override's value: TOML syntax when it parses (`true`, `42`,
/// `["a", "b"]`); for a `list` key given bare (`a,b` or `a`), the
/// comma-separated items; else a string.
fn parse_env_value(raw: &str, list: bool) -> toml::Value {
    if let Ok(table) = format!("v = {raw}").parse::<toml::Table>() {
        if let Some(v) = table.get("v") {
            if !list || v.is_array() {
                return v.clone();
            }
        }
    }
    if list {
        return toml::Value::Array(
            raw.split(',')
                .map(|s| toml::Value::String(s.trim().to_string()))
                .collect(),
        );
    }
    toml::Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_embedded() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.spaces, ["moments", "channels"]);
        assert_eq!(c.limits.max_object_bytes, 1 << 30);
        assert_eq!(c.blob.backend, BlobBackend::Fs);
        assert_eq!(
            (c.limits.max_connections, c.limits.max_connections_per_peer),
            (768, 256)
        );
        assert_eq!(c.limits.max_concurrent_uploads, 256);
        assert_eq!(
            (
                c.limits.idle_connection_timeout_seconds,
                c.limits.stream_timeout_seconds,
                c.limits.stream_min_bytes,
                c.limits.unary_timeout_seconds
            ),
            (120, 30, 65536, 60)
        );
    }

    #[test]
    fn zero_limits_are_refused() {
        let err = Config::load(
            None,
            env(&[("SEALGATE_LIMITS_STREAM_TIMEOUT_SECONDS", "0")]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("limits.stream_timeout_seconds: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn a_list_key_takes_one_bare_item_or_a_comma_list() {
        let one = Config::load(
            None,
            env(&[
                ("SEALGATE_RESIDENCY_ALLOWED_REGIONS", "cn-north-1"),
                ("SEALGATE_SPACES", "moments"),
            ]),
        )
        .unwrap();
        assert_eq!(one.residency.allowed_regions, ["cn-north-1"]);
        assert_eq!(one.spaces, ["moments"]);
        let two = Config::load(
            None,
            env(&[(
                "SEALGATE_RESIDENCY_ALLOWED_REGIONS",
                "cn-north-1, cn-northwest-1",
            )]),
        )
        .unwrap();
        assert_eq!(
            two.residency.allowed_regions,
            ["cn-north-1", "cn-northwest-1"]
        );
        // Elsewhere a comma is part of a string.
        let c = Config::load(None, env(&[("SEALGATE_S3_BUCKET", "a,b")])).unwrap();
        assert_eq!(c.s3.bucket, "a,b");
    }

    #[test]
    fn env_overrides_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "data_dir = \"/x\"\n[limits]\nmax_item_bytes = 10\n").unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("SEALGATE_LIMITS_MAX_OBJECT_BYTES", "1234"),
                ("SEALGATE_DATA_DIR", "/y"),
                ("SEALGATE_SPACES", "a,b"),
                ("SEALGATE_CACHE_TTL_SECONDS", "5"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.max_object_bytes, 1234);
        assert_eq!(c.limits.max_item_bytes, 10);
        assert_eq!(c.data_dir, PathBuf::from("/y"));
        assert_eq!(c.spaces, ["a", "b"]);
        assert_eq!(c.cache.ttl_seconds, 5);
    }

    #[test]
    fn non_loopback_plaintext_is_refused() {
        let err = Config::load(None, env(&[("SEALGATE_LISTEN", "0.0.0.0:50051")])).unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
    }

    #[test]
    fn region_outside_allowed_list_is_refused() {
        let err = Config::load(None, env(&[("SEALGATE_BLOB_REGION", "us-east-1")])).unwrap_err();
        assert!(
            err.to_string().contains("not a mainland China region"),
            "{err}"
        );
        let err = Config::load(
            None,
            env(&[
                ("SEALGATE_BLOB_REGION", "cn-northwest-1"),
                ("SEALGATE_RESIDENCY_ALLOWED_REGIONS", "[\"cn-north-1\"]"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("not in residency.allowed_regions"),
            "{err}"
        );
    }

    #[test]
    fn s3_backend_needs_a_bucket_and_a_china_endpoint() {
        let err = Config::load(None, env(&[("SEALGATE_BLOB_BACKEND", "s3")])).unwrap_err();
        assert!(err.to_string().contains("s3.bucket"), "{err}");
        let err = Config::load(
            None,
            env(&[
                ("SEALGATE_BLOB_BACKEND", "s3"),
                ("SEALGATE_S3_BUCKET", "photos"),
                ("SEALGATE_S3_ENDPOINT", "https://s3.us-east-1.amazonaws.com"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("outside the China partition"),
            "{err}"
        );
        let ok = Config::load(
            None,
            env(&[
                ("SEALGATE_BLOB_BACKEND", "s3"),
                ("SEALGATE_S3_BUCKET", "photos"),
                ("SEALGATE_S3_FORCE_PATH_STYLE", "true"),
            ]),
        )
        .unwrap();
        assert!(ok.s3.force_path_style);
    }

    #[test]
    fn a_postgres_key_store_needs_its_url_and_never_shows_the_password() {
        let err =
            Config::load(None, env(&[("SEALGATE_KEYSTORE_BACKEND", "postgres")])).unwrap_err();
        assert!(
            err.to_string()
                .contains("keystore.url: required when keystore.backend = \"postgres\""),
            "{err}"
        );
        let err = Config::load(
            None,
            env(&[
                ("SEALGATE_KEYSTORE_BACKEND", "postgres"),
                ("SEALGATE_KEYSTORE_URL", "mysql://sg:hunter2@db/keys"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a PostgreSQL URL"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Config::load(
            None,
            env(&[("SEALGATE_KEYSTORE_URL", "postgres://sg:hunter2@db/keys")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("only used with"), "{err}");
        let ok = Config::load(
            None,
            env(&[
                ("SEALGATE_KEYSTORE_BACKEND", "postgres"),
                (
                    "SEALGATE_KEYSTORE_URL",
                    "postgres://sg:hunter2@db:5432/keys",
                ),
                ("SEALGATE_KEYSTORE_MAX_CONNECTIONS", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.keystore.backend, KeyStoreBackend::Postgres);
        assert_eq!(ok.keystore.max_connections, 8);
        let shown = format!("{ok:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sg:***@db:5432/keys"), "{shown}");
    }

    #[test]
    fn backends_this_build_lacks_are_refused_with_the_list() {
        let err = Config::load(None, env(&[("SEALGATE_KEYSTORE_BACKEND", "mysql")])).unwrap_err();
        assert!(
            err.to_string().contains(
                "keystore.backend: \"mysql\" is not available in this build, which has: sqlite, postgres"
            ),
            "{err}"
        );
        let err = Config::load(None, env(&[("SEALGATE_BLOB_BACKEND", "gcs")])).unwrap_err();
        assert!(err.to_string().contains("which has: fs, s3"), "{err}");
        let err = Config::load(None, env(&[("SEALGATE_MASTER_PROVIDER", "hsm")])).unwrap_err();
        assert!(
            err.to_string().contains("which has: local, aws-kms"),
            "{err}"
        );
        let c = Config::load(
            None,
            env(&[("SEALGATE_BLOB_BACKEND", "s3"), ("SEALGATE_S3_BUCKET", "b")]),
        )
        .unwrap();
        assert_eq!(c.blob.backend, BlobBackend::S3);
    }

    #[test]
    fn aws_kms_needs_a_china_arn_in_an_allowed_region() {
        const ARN: &str =
            "arn:aws-cn:kms:cn-north-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let kms = |extra: &[(&str, &str)]| {
            let mut e = vec![("SEALGATE_MASTER_PROVIDER", "aws-kms")];
            e.extend_from_slice(extra);
            Config::load(None, env(&e))
        };
        let err = kms(&[]).unwrap_err();
        assert!(
            err.to_string().contains("master.kms_key_arn: required"),
            "{err}"
        );
        let c = kms(&[
            ("SEALGATE_MASTER_KMS_KEY_ARN", ARN),
            (
                "SEALGATE_MASTER_KMS_ENDPOINT",
                "https://kms.cn-north-1.amazonaws.com.cn",
            ),
        ])
        .unwrap();
        assert_eq!(c.master.provider, MasterProvider::AwsKms);
        assert_eq!(c.kms_region().as_deref(), Some("cn-north-1"));
        let err = kms(&[(
            "SEALGATE_MASTER_KMS_KEY_ARN",
            "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )])
        .unwrap_err();
        assert!(
            err.to_string().contains("partition aws, region us-east-1"),
            "{err}"
        );
        let err = kms(&[
            ("SEALGATE_MASTER_KMS_KEY_ARN", ARN),
            ("SEALGATE_RESIDENCY_ALLOWED_REGIONS", "[\"cn-northwest-1\"]"),
            ("SEALGATE_BLOB_REGION", "cn-northwest-1"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("not in residency.allowed_regions"),
            "{err}"
        );
        let err = Config::load(None, env(&[("SEALGATE_MASTER_KMS_KEY_ARN", ARN)])).unwrap_err();
        assert!(
            err.to_string().contains("master.provider is \"local\""),
            "{err}"
        );
    }

    #[test]
    fn tls_and_principals() {
        let tls = [
            ("SEALGATE_LISTEN", "0.0.0.0:50051"),
            ("SEALGATE_TLS_CERT", "/s.pem"),
            ("SEALGATE_TLS_KEY", "/s.key"),
            ("SEALGATE_TLS_CLIENT_CA", "/ca.pem"),
        ];
        let with = |principals: &str| {
            let mut e = tls.to_vec();
            e.push(("SEALGATE_PRINCIPALS", principals));
            Config::load(None, env(&e))
        };
        let c = with(
            r#"[{id = "spiffe://app/moments-backend", roles = ["content"], spaces = ["moments"]}, {id = "ops.internal", roles = ["ops", "erasure"]}]"#,
        )
        .expect("non-loopback with TLS");
        assert_eq!(c.principals().len(), 2);
        assert_eq!(c.principals()[1].roles, [Role::Ops, Role::Erasure]);
        for (principals, expected) in [
            (
                r#"[{id = "a", roles = ["root"]}]"#,
                "unknown variant `root`",
            ),
            (r#"[{id = "a", roles = []}]"#, "has no roles"),
            (r#"[{id = "a", roles = ["content"]}]"#, "no spaces"),
            (
                r#"[{id = "a", roles = ["ops"], spaces = ["moments"]}]"#,
                "not the role content",
            ),
            (
                r#"[{id = "a", roles = ["content"], spaces = ["x"]}]"#,
                "not in spaces",
            ),
            (
                r#"[{id = "a", roles = ["ops"]}, {id = "a", roles = ["legal"]}]"#,
                "listed twice",
            ),
        ] {
            let err = with(principals).unwrap_err().to_string();
            assert!(err.contains(expected), "{principals}: {err}");
        }
        let err = Config::load(
            None,
            env(&[("SEALGATE_TLS_CERT", "/s.pem"), ("SEALGATE_TLS_KEY", "/k")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("client_ca"), "{err}");
        let err = Config::load(
            None,
            env(&[("SEALGATE_PRINCIPALS", r#"[{id = "a", roles = ["ops"]}]"#)]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("need [tls]"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::load(None, env(&[("SEALGATE_LIMITS_MAX_OBJECTS", "1")])).unwrap_err();
        assert!(err.to_string().contains("max_objects"), "{err}");
    }
}
