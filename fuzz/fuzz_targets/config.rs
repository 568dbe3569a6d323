//! The config loader: TOML text, then `SEALGATE_*` overrides. Input: the
//! TOML text, then optionally a line `%%env` followed by `NAME=VALUE` lines.
//! Seeds: README's example config and overrides.
//!
//! Invariants: no panic; loading is a function of its input (the same
//! input loads to the same config, or fails with the same error); and an
//! override wins: a loaded config with one more override,
//! `SEALGATE_DATA_DIR`, loads too, with that data directory and nothing
//! else changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::config::Config;

/// A data directory no input names (`data_dir` takes any path).
const OVERRIDE: &str = "/fuzz/override/data";

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
    let load = |env: Vec<(String, String)>| {
        Config::from_toml(toml, env)
            .map(|c| format!("{c:?}"))
            .map_err(|e| e.to_string())
    };
    let first = load(env.clone());
    assert_eq!(first, load(env.clone()), "the same input loaded twice");
    let Ok(config) = Config::from_toml(toml, env.clone()) else {
        return;
    };
    let mut overridden_env = env;
    overridden_env.push(("SEALGATE_DATA_DIR".into(), OVERRIDE.into()));
    let mut overridden = Config::from_toml(toml, overridden_env)
        .unwrap_or_else(|e| panic!("a loaded config with SEALGATE_DATA_DIR fails: {e}"));
    assert_eq!(overridden.data_dir, std::path::Path::new(OVERRIDE));
    overridden.data_dir = config.data_dir.clone();
    assert_eq!(
        format!("{overridden:?}"),
        format!("{config:?}"),
        "SEALGATE_DATA_DIR changed more than the data directory"
    );
});
