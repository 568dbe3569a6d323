//! Configuration: one TOML file, every key overridable by an environment
//! variable `SEALGATE_<SECTION>_<KEY>` (top-level keys: `SEALGATE_<KEY>`).
//! Defaults are the embedded deployment: filesystem blobs, SQLite keys, a
//! local keyring, plaintext gRPC on loopback.
//!
//! This file owns the [`Config`] type, its defaults and its loading (the
//! file, then the overrides, then validation). Beside it: the sections, one
//! file per group (`storage`, `process`, `access`); the backend choices
//! (`choice`); the environment overrides (`env`); the checks the types
//! alone cannot make (`validate`). Configuration only describes: it must
//! never open a store, a socket or a key, and it imports nothing of the
//! gRPC adapters (`api`) or the server.

mod access;
mod choice;
mod env;
mod process;
mod storage;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::Principal;

pub use access::{PrincipalConfig, Tls};
pub use choice::{BlobBackend, KeyStoreBackend, LogFormat, MasterProvider};
pub use process::{Cache, Jobs, Keys, Limits, Log, MetricsConfig, Server};
pub use storage::{Blob, KeyStoreConfig, Master, Residency, S3};

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
        env::apply(&mut table, env)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The region of the configured KMS key (`None` for the local keyring).
    pub fn kms_region(&self) -> Option<String> {
        let arn = self.master.kms_key_arn.as_deref()?;
        (self.master.provider == MasterProvider::AwsKms)
            .then(|| crate::residency::KmsArn::parse(arn).ok().map(|a| a.region))
            .flatten()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of exactly these variables.
    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
    fn unknown_keys_are_refused() {
        let err = Config::load(None, env(&[("SEALGATE_LIMITS_MAX_OBJECTS", "1")])).unwrap_err();
        assert!(err.to_string().contains("max_objects"), "{err}");
    }
}
