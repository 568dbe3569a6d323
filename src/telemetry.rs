//! Logging and tracing setup. Log fields carry pseudonyms, never raw user
//! ids, keys or content; audit events use the target `sealgate::audit`.

/// Installs the global subscriber: human-readable lines on stderr, filtered
/// by `RUST_LOG` (default `info`).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
