//! Validation: what the types alone cannot check, each refusal one line
//! naming the key (a space name, a region outside the allowed ones, an
//! endpoint outside the China partition, plaintext off loopback, a
//! principal without roles, a limit of zero). It reads a parsed [`Config`]
//! and must never change it, nor reach a store, a bucket or KMS to decide:
//! every check here runs before any network call.

use super::{BlobBackend, Config, ConfigError, KeyStoreBackend, MasterProvider};
use crate::identity::Role;

impl Config {
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
            .and_then(|()| self.validate_http())
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
            ("max_connections", l.max_connections.map_or(1, |n| n as u64)),
            (
                "max_connections_per_peer",
                l.max_connections_per_peer as u64,
            ),
            (
                "max_concurrent_uploads",
                l.max_concurrent_uploads.map_or(1, |n| n as u64),
            ),
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
        if !self.erasure.max_cooloff_days.is_finite()
            || !(0.0..=3_650.0).contains(&self.erasure.max_cooloff_days)
        {
            return Err("erasure.max_cooloff_days must be between 0 (no window) and 3650".into());
        }
        if !self.erasure.feed_retention_days.is_finite()
            || !(1.0..=36_500.0).contains(&self.erasure.feed_retention_days)
        {
            return Err("erasure.feed_retention_days must be between 1 and 36500".into());
        }
        if self.erasure.due_check_seconds == 0 {
            return Err("erasure.due_check_seconds must be at least 1".into());
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

    fn validate_http(&self) -> Result<(), String> {
        let http = &self.http;
        if let Some(address) = http.address()? {
            if !address.ip().is_loopback() && self.tls.is_none() {
                return Err(format!(
                    "http.listen: {address} is not a loopback address and [tls] is not configured; plaintext HTTP is only served on loopback"
                ));
            }
        }
        if !(1..=86_400).contains(&http.max_ttl_seconds) {
            return Err(format!(
                "http.max_ttl_seconds: {} is outside 1..=86400 (a signed read lives at most a day; keep it short, see docs/http-reads.md)",
                http.max_ttl_seconds
            ));
        }
        if http
            .cache_control
            .bytes()
            .any(|b| !(0x20..0x7f).contains(&b))
        {
            return Err("http.cache_control: must be printable ASCII (a header value)".into());
        }
        let url = &http.public_url;
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "http.public_url: {} must start with https:// or http://, or be empty",
                crate::error::quote(&http.public_url)
            ));
        }
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

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
                r#"principals[0].roles[0]: "root" is not one of: content, erasure, legal, ops"#,
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
}
