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
mod keyed;
mod process;
mod storage;
mod units;
pub use units::parse_seconds;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::identity::Principal;

pub use access::{PrincipalConfig, Tls};
pub use choice::{BlobBackend, KeyStoreBackend, LogFormat, MasterProvider};
pub use process::{
    Cache, CryptoConfig, ErasureConfig, HttpConfig, Jobs, Keys, Limits, Log, MetricsConfig, Server,
};
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
    /// The cipher suite of new objects.
    pub crypto: CryptoConfig,
    /// The deletion service's workflow: cooling-off windows, the feed.
    pub erasure: ErasureConfig,
    /// Logging.
    pub log: Log,
    /// Shutdown and health probes.
    pub server: Server,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// Signed HTTP reads.
    pub http: HttpConfig,
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
            crypto: CryptoConfig::default(),
            erasure: ErasureConfig::default(),
            log: Log::default(),
            server: Server::default(),
            metrics: MetricsConfig::default(),
            http: HttpConfig::default(),
            tls: None,
            principals: Vec::new(),
        }
    }
}

/// Settings the command line gives (`sealgate serve --listen ...
/// --data-dir ...`): they replace the file's and the environment's values
/// before the configuration is validated.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

/// A typing error as one line naming where the key came from: the
/// environment variable that set it, with its value, or the key in the
/// file with its value; then what the key expects.
fn where_from(e: keyed::KeyError, file: Option<&Path>, origins: &[env::Origin]) -> String {
    let Some(path) = &e.path else {
        return match file {
            Some(f) => format!("{}: {}", f.display(), e.message),
            None => e.message,
        };
    };
    let within = |key: &str| {
        path == key || path.starts_with(&format!("{key}.")) || path.starts_with(&format!("{key}["))
    };
    // A key store URL may hold a password: never shown.
    let secret = path == "keystore.url";
    if let Some(o) = origins.iter().rev().find(|o| within(&o.key)) {
        let raw = if secret { "..." } else { o.raw.as_str() };
        return if o.key == *path {
            format!("{}={raw} ({path}): {}", o.variable, e.message)
        } else {
            format!("{}={raw}: {path}: {}", o.variable, e.message)
        };
    }
    let at = match (&e.value, secret) {
        (Some(value), false) => format!("{path} = {value}"),
        _ => path.clone(),
    };
    match file {
        Some(f) => format!("{}: {at}: {}", f.display(), e.message),
        None => format!("{at}: {}", e.message),
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
        Self::load_with(file, env, &Flags::default())
    }

    /// [`Config::load`] with the command line's `flags` replacing the
    /// file's and the environment's values before anything is validated.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_with(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
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
        Self::from_table(table, file, env, flags)
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
        Self::from_table(table, None, env, &Flags::default())
    }

    fn from_table(
        mut table: toml::Table,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Self, ConfigError> {
        let origins = env::apply(&mut table, env)?;
        let mut config: Config = keyed::from_value(&toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid(where_from(e, file, &origins)))?;
        if let Some(listen) = flags.listen {
            config.listen = listen;
        }
        if let Some(data_dir) = &flags.data_dir {
            config.data_dir.clone_from(data_dir);
        }
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
            (None, 256)
        );
        assert_eq!(c.limits.max_concurrent_uploads, None);
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
        assert!(
            err.to_string().contains(
                "SEALGATE_LIMITS_MAX_OBJECTS=1 (limits.max_objects): unknown key; the keys here are: max_object_bytes,"
            ),
            "{err}"
        );
        let err = Config::from_toml("[cache]\nttl = 5\n", env(&[])).unwrap_err();
        assert!(
            err.to_string()
                .contains("cache.ttl = 5: unknown key; the keys here are: ttl_seconds"),
            "{err}"
        );
    }

    /// Every typing error names the key, or the variable that set it, the
    /// value, and what the key expects, on one line.
    #[test]
    fn type_errors_name_the_key_the_value_and_the_expected_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealgate.toml");
        let cases = [
            (
                "[s3]\nforce_path_style = \"yes\"\n",
                vec![],
                "sealgate.toml: s3.force_path_style = \"yes\": expected a boolean, not string \"yes\"",
            ),
            (
                "[keystore]\nshards = -3\n",
                vec![],
                "sealgate.toml: keystore.shards = -3: expected a whole number from 0 (u32)",
            ),
            (
                "listen = \"localhost\"\n",
                vec![],
                "sealgate.toml: listen = \"localhost\": invalid socket address syntax",
            ),
            (
                "[[principals]]\nid = \"spiffe://app/a\"\nroles = [\"contents\"]\n",
                vec![],
                "sealgate.toml: principals[0].roles[0] = \"contents\": \"contents\" is not one of: content, erasure, legal, ops",
            ),
            (
                "[tls]\ncert = \"/s.pem\"\n",
                vec![],
                "sealgate.toml: tls: `key` is required here",
            ),
            (
                "",
                vec![("SEALGATE_LIMITS_MAX_CONNECTIONS", "many")],
                "SEALGATE_LIMITS_MAX_CONNECTIONS=many (limits.max_connections): expected a whole number from 0 (usize), not string \"many\"",
            ),
            (
                "",
                vec![("SEALGATE_LOG_FORMAT", "xml")],
                "SEALGATE_LOG_FORMAT=xml (log.format): \"xml\" is not available in this build, which has: text, json",
            ),
            (
                "",
                vec![("SEALGATE_SPACES", "[1]")],
                "SEALGATE_SPACES=[1]: spaces[0]: expected a string, not integer `1`",
            ),
        ];
        for (file, vars, expected) in cases {
            std::fs::write(&path, file).unwrap();
            let err = Config::load(Some(&path), env(&vars))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{file} {vars:?}:\n{err}\n{expected}"
            );
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    /// `--listen` and `--data-dir` replace the file's and the
    /// environment's values before validation: a public address in the
    /// file does not refuse a loopback `--listen`.
    #[test]
    fn flags_replace_the_files_values_before_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sealgate.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:50051\"\ndata_dir = \"/from-file\"\n",
        )
        .unwrap();
        assert!(Config::load(Some(&path), env(&[])).is_err());
        let flags = Flags {
            listen: Some("127.0.0.1:6000".parse().unwrap()),
            data_dir: Some("/from-flag".into()),
        };
        let c = Config::load_with(
            Some(&path),
            env(&[("SEALGATE_DATA_DIR", "/from-env")]),
            &flags,
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:6000");
        assert_eq!(c.data_dir, PathBuf::from("/from-flag"));
        // And the other way: a public --listen is checked as the file's
        // would be.
        let flags = Flags {
            listen: Some("0.0.0.0:6000".parse().unwrap()),
            data_dir: None,
        };
        let err = Config::load_with(None, env(&[]), &flags).unwrap_err();
        assert!(err.to_string().contains("listen: 0.0.0.0:6000"), "{err}");
    }

    /// A key store URL in an error is never shown: it may hold a password.
    #[test]
    fn a_mistyped_key_store_url_is_not_shown() {
        let err = Config::from_toml("[keystore]\nurl = [\"postgres://u:pw@h/d\"]\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keystore.url:") && !err.contains("pw"),
            "{err}"
        );
    }
}
