//! The `sealgate` binary: see [`sealgate::cli`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sealgate::cli::main().await
}
