//! The AWS SDK configuration the S3 blob store and the KMS master-key
//! provider share: region, timeouts, retries and optional static
//! credentials (otherwise the standard AWS provider chain).
//!
//! Connect timeout 3 s and 3 attempts for both; each client names its own
//! per-attempt timeout (S3: 60 s, KMS: 10 s). This module imports nothing
//! else of the crate.

use std::time::Duration;

/// Loads the shared SDK configuration for `region`: connect timeout 3 s,
/// each attempt at most `attempt_timeout`, 3 attempts.
pub async fn sdk_config(
    region: &str,
    credentials: Option<&(String, String)>,
    attempt_timeout: Duration,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3));
    if let Some((id, secret)) = credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            id.clone(),
            secret.clone(),
            None,
            None,
            "sealgate-static",
        ));
    }
    loader.load().await
}
