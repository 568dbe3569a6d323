//! KMS for the tests: moto's KMS, served by the same moto server as S3
//! (`s3env`), on loopback. Keys made there in `cn-north-1` have ARNs in the
//! `aws-cn` partition (`arn:aws-cn:kms:cn-north-1:123456789012:key/…`), the
//! form the gateway requires.
//!
//! moto 5.2.5 does not enforce a key's state: Encrypt and Decrypt keep
//! working under a disabled key or one pending deletion. It does refuse a
//! key that does not exist (NotFoundException) and a ciphertext of another
//! key than the KeyId given (AccessDeniedException), which is what the
//! tests of unusable keys use.

use sealgate::config::Config;
use sealgate::keys::kms::{KmsClient, KmsSettings};

use super::s3env;

/// The region of every test key.
pub const REGION: &str = "cn-north-1";

/// A plain SDK client for the shared moto server, independent of the
/// gateway's.
pub fn sdk() -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .region(aws_sdk_kms::config::Region::new(REGION))
        .endpoint_url(s3env::shared().endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            s3env::ACCESS_KEY,
            s3env::SECRET_KEY,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// A new symmetric KMS key on the shared server; its ARN.
pub async fn create_key() -> String {
    let out = sdk().create_key().send().await.expect("CreateKey");
    let arn = out
        .key_metadata()
        .expect("key metadata")
        .arn()
        .expect("arn");
    assert!(
        arn.starts_with("arn:aws-cn:kms:cn-north-1:"),
        "moto makes China-partition ARNs in cn-north-1: {arn}"
    );
    arn.to_string()
}

/// An ARN of the same form naming no key.
pub fn missing_key_arn() -> String {
    format!(
        "arn:aws-cn:kms:{REGION}:123456789012:key/{}",
        "00000000-0000-4000-8000-000000000000"
    )
}

/// Points `config` at KMS key `arn` on the shared moto server.
pub fn configure(config: &mut Config, arn: &str) {
    config.master.provider = sealgate::config::MasterProvider::AwsKms;
    config.master.kms_key_arn = Some(arn.to_string());
    config.master.kms_endpoint = Some(s3env::shared().endpoint());
}

/// The environment that points the real binary at KMS key `arn` on the
/// shared moto server (`endpoint`), with the test credentials: as
/// [`configure`] does for a configuration.
pub fn serve_env<'a>(arn: &'a str, endpoint: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("SEALGATE_MASTER_PROVIDER", "aws-kms"),
        ("SEALGATE_MASTER_KMS_KEY_ARN", arn),
        ("SEALGATE_MASTER_KMS_ENDPOINT", endpoint),
        ("AWS_ACCESS_KEY_ID", s3env::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", s3env::SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// The gateway's KMS client for `config`, with the test credentials.
pub async fn client_for(config: &Config) -> KmsClient {
    KmsClient::connect(&KmsSettings {
        region: config.kms_region().expect("a KMS key ARN"),
        endpoint: config.master.kms_endpoint.clone(),
        credentials: Some((s3env::ACCESS_KEY.into(), s3env::SECRET_KEY.into())),
    })
    .await
}
