//! Logging and tracing setup. Log fields carry pseudonyms, never raw user
//! ids, keys or content; audit events use the target `sealgate::audit`.

/// Installs the global subscriber: human-readable lines on stderr, filtered
/// by `RUST_LOG` (default `info`), in colour only when stderr is a
/// terminal (a log file gets no escape codes).
pub fn init() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
