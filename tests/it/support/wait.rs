//! Waiting for what only another process or a background task can make
//! true.

use std::future::Future;
use std::time::Duration;

/// Polls `cond` every 20 ms until it holds, failing the test after
/// `timeout`. For conditions that only an outside process or a background
/// task can make true (S3 aborting an upload, a job finishing): every use
/// names what it waits for.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_explained(what, timeout, cond, || async { String::new() }).await;
}

/// [`eventually`], whose timeout also says what `explain` finds then (what
/// the store holds, say), for a wait that can fail for several reasons.
pub async fn eventually_explained<F, Fut, E, EFut>(
    what: &str,
    timeout: Duration,
    mut cond: F,
    explain: E,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
    E: FnOnce() -> EFut,
    EFut: Future<Output = String>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting until {what}{}",
                explain().await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
