//! Waiting for what only another process or a background task can make
//! true.

use std::future::Future;
use std::time::Duration;

/// Polls `cond` every 20 ms until it holds, failing the test after
/// `timeout`. For conditions that only an outside process or a background
/// task can make true (S3 aborting an upload, a job finishing): every use
/// names what it waits for.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
