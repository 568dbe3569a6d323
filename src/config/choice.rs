//! The configuration's choices: a backend or a format named by a string in
//! the file and held as an enum in the code (`choice!`), so that a value
//! this build lacks is refused when the file is parsed, with the list of
//! the values it has. This file only names the choices: it must never
//! decide what a choice opens or starts.

use serde::Deserialize;

/// Declares a configuration choice: a string in the file, an enum in the
/// code. A value this build lacks is refused when the configuration is
/// parsed, with the list of the values the build has (the loader names
/// the key).
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
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
                        "{other:?} is not available in this build, which has: {}",
                        Self::ALL.join(", ")
                    ))),
                }
            }
        }
    };
}

choice!(
    /// `blob.backend`: where objects are stored.
    BlobBackend {
        /// Files under `data_dir/objects`.
        Fs = "fs",
        /// An S3-compatible bucket (`[s3]`).
        S3 = "s3",
    }
);

choice!(
    /// `keystore.backend`: where wrapped keys, tombstones and jobs live.
    KeyStoreBackend {
        /// SQLite at `data_dir/keys.db`.
        Sqlite = "sqlite",
        /// PostgreSQL at `keystore.url`, shared by every replica.
        Postgres = "postgres",
    }
);

choice!(
    /// `log.format`: how log lines are written on stderr.
    LogFormat {
        /// Human-readable lines (colour only on a terminal).
        Text = "text",
        /// One JSON object per line, with the current span's fields.
        Json = "json",
    }
);

choice!(
    /// `master.provider`: where master keys live.
    MasterProvider {
        /// The keyring file `data_dir/keyring`.
        Local = "local",
        /// AWS KMS in the China partition (`master.kms_key_arn`).
        AwsKms = "aws-kms",
    }
);

/// `crypto.suite`: the suite new objects are sealed in, by the name the
/// crypto module gives it (`crate::crypto::Suite::name`).
impl<'de> Deserialize<'de> for crate::crypto::Suite {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::crypto::Suite;
        let value = String::deserialize(d)?;
        Suite::from_name(&value).ok_or_else(|| {
            let names: Vec<_> = Suite::ALL.iter().map(|s| s.name()).collect();
            serde::de::Error::custom(format!(
                "{value:?} is not a suite of this build, which has: {}",
                names.join(", ")
            ))
        })
    }
}

/// `crypto.object_version`: 1 or 2.
impl<'de> Deserialize<'de> for crate::crypto::Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(d)?;
        u8::try_from(value)
            .ok()
            .and_then(|v| crate::crypto::Version::from_byte(v).ok())
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{value} is not an object format version of this build, which writes 1 and 2"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;
    use crate::config::Config;

    #[test]
    fn backends_this_build_lacks_are_refused_with_the_list() {
        let err = Config::load(None, env(&[("SEALGATE_KEYSTORE_BACKEND", "mysql")])).unwrap_err();
        assert!(
            err.to_string().contains(
                "SEALGATE_KEYSTORE_BACKEND=mysql (keystore.backend): \"mysql\" is not available in this build, which has: sqlite, postgres"
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
    fn the_object_version_is_2_unless_set_to_1_and_nothing_else() {
        use crate::crypto::Version;
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.crypto.object_version, Version::V2);
        let c = Config::load(None, env(&[("SEALGATE_CRYPTO_OBJECT_VERSION", "1")])).unwrap();
        assert_eq!(c.crypto.object_version, Version::V1);
        for bad in ["3", "0", "two"] {
            let err = Config::load(None, env(&[("SEALGATE_CRYPTO_OBJECT_VERSION", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("SEALGATE_CRYPTO_OBJECT_VERSION")
                    && err.contains("crypto.object_version"),
                "{err}"
            );
            if bad != "two" {
                assert!(err.contains("which writes 1 and 2"), "{err}");
            }
        }
    }
}
