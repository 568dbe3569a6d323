//! What every bench with its own `main` shares: whether this is a smoke
//! run, and sizes from the environment. Included by `#[path]`; not a bench
//! of its own.

/// Whether this is a smoke run: `cargo bench` passes `--bench`, `cargo
/// test --benches` (CI, in the dev profile) does not, and then the bench
/// runs once on small inputs, so that a broken bench fails CI.
pub fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// The environment variable `name` parsed, or `default` if it is unset.
///
/// # Panics
/// If it is set but does not parse: a bench never runs on a size it was not
/// given.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}
