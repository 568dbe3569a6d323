//! Sizes and durations with units: the `deserialize_with` helpers of every
//! `..._bytes`, `..._ms`, `..._seconds` and `..._days` key. A key takes a
//! plain number in its own unit, as before, or a string of a whole number
//! and a unit (`512MiB`, `1GB`, `30s`, `15d`), converted into the key's
//! unit; a value that is not a whole number of that unit (`500ms` for a
//! `..._seconds` key) is refused. This file only converts values: it must
//! never read a key's meaning or a default.

use std::fmt;

use serde::de::{Deserializer, Error, Unexpected, Visitor};

/// Size units, case-insensitive: binary (`KiB`) and decimal (`KB`).
const SIZE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Duration units in milliseconds.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// A whole number and a unit of `units` (`"512 MiB"`, `"30s"`): the number
/// times the unit's factor. `None` if it is not of that form or overflows.
fn with_unit(text: &str, units: &[(&str, u64)]) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    if unit.is_empty() {
        return None;
    }
    let (_, factor) = units.iter().find(|(name, _)| *name == unit)?;
    number.checked_mul(*factor)
}

/// Visits a plain non-negative integer (in the key's unit) or a string
/// that `parse` turns into one.
struct Amount<P> {
    expecting: &'static str,
    parse: P,
}

impl<'de, P> Visitor<'de> for Amount<P>
where
    P: Fn(&str) -> Result<u64, String>,
{
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<u64, E> {
        if let Ok(plain) = v.trim().parse::<u64>() {
            return Ok(plain);
        }
        (self.parse)(v).map_err(|why| {
            let expected = if why.is_empty() {
                self.expecting
            } else {
                why.as_str()
            };
            E::invalid_value(Unexpected::Str(v), &expected)
        })
    }
}

const BYTES: &str =
    "a size: a number of bytes, or a whole number and a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB) such as 64KiB or 1GiB";

/// A size in bytes: `65536`, `"64KiB"`, `"1GB"`.
pub(super) fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Amount {
        expecting: BYTES,
        parse: |text: &str| with_unit(text, SIZE_UNITS).ok_or_else(String::new),
    })
}

/// A duration as a whole number of `unit_ms` milliseconds, called `unit`.
fn duration_in(text: &str, unit_ms: u64, unit: &str) -> Result<u64, String> {
    let ms = with_unit(text, DURATION_UNITS).ok_or_else(String::new)?;
    if ms % unit_ms != 0 {
        return Err(format!("a whole number of {unit} (this key's unit)"));
    }
    Ok(ms / unit_ms)
}

const MILLISECONDS: &str =
    "a duration: a number of milliseconds, or a whole number and a unit (ms, s, m, h, d) such as 500ms or 2s";
const SECONDS: &str =
    "a duration: a number of seconds, or a whole number of seconds, minutes, hours or days with its unit (30s, 2m, 1h, 15d)";

/// A duration in whole seconds, as the configuration and the command line
/// write it: `90`, `"30s"`, `"2m"`, `"1h"`, `"15d"`.
///
/// # Errors
/// What a duration looks like, if `text` is not one.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    if let Ok(n) = text.trim().parse::<u64>() {
        return Ok(n);
    }
    duration_in(text, 1_000, "seconds").map_err(|e| {
        if e.is_empty() {
            format!("{:?} is not {SECONDS}", text)
        } else {
            format!("{:?} is not {e}", text)
        }
    })
}

/// A duration in milliseconds: `2000`, `"2s"`, `"500ms"`.
pub(super) fn milliseconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Amount {
        expecting: MILLISECONDS,
        parse: |text: &str| duration_in(text, 1, "milliseconds"),
    })
}

/// A duration in seconds: `30`, `"30s"`, `"2m"`, `"1h"`, `"15d"`.
pub(super) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Amount {
        expecting: SECONDS,
        parse: |text: &str| duration_in(text, 1_000, "seconds"),
    })
}

/// A duration in days, fractions allowed: `30`, `0.5`, `"15d"`, `"12h"`
/// (0.5), `"90m"`.
pub(super) fn days<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Days;
    const DAYS: &str =
        "a duration: a number of days (fractions allowed), or a whole number and a unit (ms, s, m, h, d) such as 15d or 12h";
    impl Visitor<'_> for Days {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(DAYS)
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<f64, E> {
            if let Ok(plain) = v.trim().parse::<f64>() {
                return Ok(plain);
            }
            with_unit(v, DURATION_UNITS)
                .map(|ms| ms as f64 / 86_400_000.0)
                .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(Days)
}

#[cfg(test)]
mod tests {
    use crate::config::tests::env;
    use crate::config::Config;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::load(None, env(pairs)).map_err(|e| e.to_string())
    }

    #[test]
    fn sizes_take_units() {
        for (value, bytes) in [
            ("1GiB", 1u64 << 30),
            ("512MiB", 512 << 20),
            ("64KiB", 64 << 10),
            ("64 kib", 64 << 10),
            ("1GB", 1_000_000_000),
            ("10MB", 10_000_000),
            ("100B", 100),
            ("1234", 1234),
            ("\"1234\"", 1234),
        ] {
            let c = load(&[("SEALGATE_LIMITS_MAX_OBJECT_BYTES", value)]).unwrap();
            assert_eq!(c.limits.max_object_bytes, bytes, "{value}");
        }
        let c = Config::from_toml(
            "[limits]\nmax_item_bytes = \"32KiB\"\nstream_min_bytes = 4096\nmax_response_bytes = \"8MiB\"\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.limits.max_item_bytes, 32 << 10);
        assert_eq!(c.limits.stream_min_bytes, 4096);
        assert_eq!(c.limits.max_response_bytes, 8 << 20);
    }

    #[test]
    fn durations_take_units_in_whole_numbers_of_the_keys_unit() {
        let c = load(&[
            ("SEALGATE_LIMITS_UNARY_TIMEOUT_SECONDS", "2m"),
            ("SEALGATE_LIMITS_STREAM_TIMEOUT_SECONDS", "30s"),
            ("SEALGATE_LIMITS_IDLE_CONNECTION_TIMEOUT_SECONDS", "1h"),
            ("SEALGATE_CACHE_KEK_TTL_SECONDS", "15d"),
            ("SEALGATE_CACHE_TTL_SECONDS", "2000ms"),
            ("SEALGATE_JOBS_LEASE_SECONDS", "45"),
            ("SEALGATE_KEYSTORE_ACQUIRE_TIMEOUT_MS", "2s"),
            ("SEALGATE_KEYS_KEK_MAX_AGE_DAYS", "12h"),
            ("SEALGATE_SERVER_SHUTDOWN_GRACE_SECONDS", "1m"),
        ])
        .unwrap();
        assert_eq!(c.limits.unary_timeout_seconds, 120);
        assert_eq!(c.limits.stream_timeout_seconds, 30);
        assert_eq!(c.limits.idle_connection_timeout_seconds, 3600);
        assert_eq!(c.cache.kek_ttl_seconds, 15 * 86_400);
        assert_eq!(c.cache.ttl_seconds, 2);
        assert_eq!(c.jobs.lease_seconds, 45);
        assert_eq!(c.keystore.acquire_timeout_ms, 2000);
        assert_eq!(c.keys.kek_max_age_days, 0.5);
        assert_eq!(c.server.shutdown_grace_seconds, 60);
        let c = load(&[("SEALGATE_KEYS_KEK_MAX_AGE_DAYS", "0.25")]).unwrap();
        assert_eq!(c.keys.kek_max_age_days, 0.25);
        let c = Config::from_toml("[keys]\nkek_max_age_days = 7\n", env(&[])).unwrap();
        assert_eq!(c.keys.kek_max_age_days, 7.0);
    }

    #[test]
    fn a_duration_not_a_whole_number_of_the_keys_unit_is_refused() {
        let err = load(&[("SEALGATE_LIMITS_UNARY_TIMEOUT_SECONDS", "500ms")]).unwrap_err();
        assert!(
            err.contains("SEALGATE_LIMITS_UNARY_TIMEOUT_SECONDS=500ms")
                && err.contains("limits.unary_timeout_seconds")
                && err.contains("a whole number of seconds"),
            "{err}"
        );
    }

    #[test]
    fn bad_sizes_and_durations_name_the_key_the_value_and_the_form() {
        let err = load(&[("SEALGATE_LIMITS_MAX_OBJECT_BYTES", "1GiBs")]).unwrap_err();
        assert!(
            err.contains("SEALGATE_LIMITS_MAX_OBJECT_BYTES=1GiBs (limits.max_object_bytes)")
                && err.contains("such as 64KiB or 1GiB"),
            "{err}"
        );
        let err = Config::from_toml("[server]\nhealth_probe_seconds = \"soon\"\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.health_probe_seconds = \"soon\"") && err.contains("(30s, 2m"),
            "{err}"
        );
        let err = load(&[("SEALGATE_LIMITS_MAX_ITEM_BYTES", "-1")]).unwrap_err();
        assert!(err.contains("limits.max_item_bytes"), "{err}");
        let err = load(&[("SEALGATE_LIMITS_MAX_OBJECT_BYTES", "99999999999999999TB")]).unwrap_err();
        assert!(err.contains("limits.max_object_bytes"), "{err}");
    }
}
