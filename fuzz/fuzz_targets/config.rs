//! The config loader: TOML text, then `SEALGATE_*` overrides. Input: the
//! TOML text, then optionally a line `%%env` followed by `NAME=VALUE` lines.
//! Seeds: README's example config and overrides.
//!
//! Invariants: no panic; a loaded config validates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, env) = text.split_once("\n%%env\n").unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(config) = Config::from_toml(toml, env) {
        assert!(config.validate().is_ok());
    }
});
