//! Logging and tracing setup. Log fields carry pseudonyms, never raw user
//! ids, keys or content; audit events use the target `sealgate::audit`.

/// Installs the global subscriber on stderr, filtered by `RUST_LOG`
/// (default `info`): human-readable lines, in colour only when stderr is a
/// terminal (a log file gets no escape codes), or one JSON object per line
/// with the fields of the current span (`json`: `log.format = "json"`).
pub fn init(json: bool) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
