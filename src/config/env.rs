//! Environment overrides: a variable `SEALGATE_<SECTION>_<KEY>` (top-level
//! keys: `SEALGATE_<KEY>`) sets that key in the file's table before the
//! table is typed, so an override is parsed and validated exactly as the
//! file's own key would be. Other variables are ignored, and so are the
//! client commands' own `SEALGATE_*` variables ([`CLIENT_VARIABLES`]): a
//! shell set up for the CLI can still run `serve`. This file must never
//! read the process environment itself: the caller passes it in.

use super::ConfigError;

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
    "crypto",
    "log",
    "tls",
    "server",
    "metrics",
    "erasure",
    "http",
];

/// Variables of the client commands (`--ca`, `--cert`, `--key`) and of the
/// test suite (`SEALGATE_PG_BIN`), never configuration of the server.
pub const CLIENT_VARIABLES: &[&str] = &[
    "SEALGATE_CA",
    "SEALGATE_CERT",
    "SEALGATE_KEY",
    "SEALGATE_PG_BIN",
];

/// A key an environment variable set.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// The dotted key (`limits.max_object_bytes`).
    pub(super) key: String,
    /// The variable (`SEALGATE_LIMITS_MAX_OBJECT_BYTES`).
    pub(super) variable: String,
    /// Its value as given.
    pub(super) raw: String,
}

/// Applies the `SEALGATE_*` overrides of `env` to `table`; the keys they
/// set, with their variables.
///
/// # Errors
/// [`ConfigError::Invalid`] if an override names a section the file holds
/// as something other than a table.
pub(super) fn apply(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Origin>, ConfigError> {
    let mut origins = Vec::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("SEALGATE_") else {
            continue;
        };
        if CLIENT_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let (section, key) = match SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) {
            Some(s) => (Some(*s), rest[s.len() + 1..].to_string()),
            None => (None, rest),
        };
        let list = LIST_KEYS.contains(&(section, key.as_str()));
        let value = parse_env_value(&raw, list);
        origins.push(Origin {
            key: section.map_or_else(|| key.clone(), |s| format!("{s}.{key}")),
            variable: name.clone(),
            raw,
        });
        let target = match section {
            Some(s) => table
                .entry(s)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "{name}: sets a key of [{s}], but {s} is not a table in the file"
                    ))
                })?,
            None => &mut *table,
        };
        target.insert(key, value);
    }
    Ok(origins)
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
    use std::path::PathBuf;

    use crate::config::tests::env;
    use crate::config::Config;

    /// A shell set up for the client commands (and the tests) can run
    /// `serve`: their variables are not configuration.
    #[test]
    fn the_client_commands_variables_are_not_configuration() {
        let config = Config::load(
            None,
            env(&[
                ("SEALGATE_CA", "/etc/sealgate/ca.pem"),
                ("SEALGATE_CERT", "/etc/sealgate/client.pem"),
                ("SEALGATE_KEY", "/etc/sealgate/client.key"),
                ("SEALGATE_PG_BIN", "/usr/lib/postgresql/15/bin"),
            ]),
        )
        .unwrap();
        let plain = Config::load(None, env(&[])).unwrap();
        assert_eq!(format!("{config:?}"), format!("{plain:?}"));
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
}
