//! Logging and tracing setup. Log fields carry pseudonyms, never raw user
//! ids, keys or content; audit events use the target `sealgate::audit`.
//!
//! Lines are text, or JSON per `log.format`. The AWS SDK's trace-level
//! dumps of requests and responses are always filtered out: they would
//! carry KMS ciphertexts of keys, or the keys KMS unwrapped.

/// Installs the global subscriber on stderr, filtered by `RUST_LOG`
/// (default `info`): human-readable lines, in colour only when stderr is a
/// terminal (a log file gets no escape codes), or one JSON object per line
/// with the fields of the current span (`json`: `log.format = "json"`).
///
/// The AWS SDK's trace-level dumps of requests, responses and outputs
/// (target `aws_smithy_runtime`) are never logged, whatever `RUST_LOG`
/// says: they hold KMS ciphertexts of keys and, with the SDK's
/// `LOG_SENSITIVE_BODIES=true`, the keys KMS unwrapped.
pub fn init(json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_sdk_dumps = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("aws_smithy_runtime"))
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(
                fmt.json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(no_sdk_dumps),
            )
            .try_init()
    } else {
        registry
            .with(
                fmt.with_ansi(std::io::stderr().is_terminal())
                    .with_filter(no_sdk_dumps),
            )
            .try_init()
    };
}
