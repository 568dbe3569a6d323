//! Data residency: refusals at startup, and objects bound to their region.

use std::process::Command;

use sealgate::blob::s3::{S3BlobStore, S3StartError};
use tonic::Code;

use crate::support::gateway::TestGateway;
use crate::support::s3env;

/// Runs `sealgate serve` with `env` and returns (success, stderr).
fn serve_with_env(env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .env("AWS_ACCESS_KEY_ID", s3env::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3env::SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn startup_refuses_regions_and_endpoints_outside_china() {
    let (ok, err) = serve_with_env(&[("SEALGATE_BLOB_REGION", "us-east-1")]);
    assert!(!ok);
    assert!(
        err.contains("blob.region \"us-east-1\" is not a mainland China region"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // Before any network call: these hosts do not exist here.
    for (endpoint, region, says) in [
        (
            "https://oss-cn-hongkong.aliyuncs.com",
            "cn-hongkong",
            "cn-hongkong, which is not in mainland China",
        ),
        (
            "https://cos.ap-hongkong.myqcloud.com",
            "ap-hongkong",
            "ap-hongkong, which is not in mainland China",
        ),
        (
            "https://s3.cn-north-1.amazonaws.com.cn",
            "us-east-1",
            "but blob.region is us-east-1",
        ),
        // Issue 24, item 8: Alibaba's dual-stack host form and Tencent's
        // tencentcos.cn domain, in Hong Kong, with a mainland region.
        (
            "https://cn-hongkong.oss.aliyuncs.com",
            "cn-hangzhou",
            "host cn-hongkong.oss.aliyuncs.com is Alibaba Cloud OSS region cn-hongkong, which is not in mainland China",
        ),
        (
            "https://cos.ap-hongkong.tencentcos.cn",
            "ap-beijing",
            "host cos.ap-hongkong.tencentcos.cn is Tencent Cloud COS region ap-hongkong, which is not in mainland China",
        ),
    ] {
        let (ok, err) = serve_with_env(&[
            ("SEALGATE_BLOB_BACKEND", "s3"),
            ("SEALGATE_S3_BUCKET", "photos"),
            ("SEALGATE_S3_ENDPOINT", endpoint),
            ("SEALGATE_BLOB_REGION", region),
        ]);
        assert!(!ok);
        assert!(err.contains(says), "{endpoint}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    for endpoint in [
        "https://s3.us-east-1.amazonaws.com",
        "https://s3.amazonaws.com",
    ] {
        let (ok, err) = serve_with_env(&[
            ("SEALGATE_BLOB_BACKEND", "s3"),
            ("SEALGATE_S3_BUCKET", "photos"),
            ("SEALGATE_S3_ENDPOINT", endpoint),
        ]);
        assert!(!ok);
        assert!(
            err.contains("outside the China partition"),
            "{endpoint}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

/// The S3 store runs the residency check itself, before it builds a
/// client: a caller that skips the configuration's validation still sends
/// nothing to a host outside the mainland. Without the check these connects
/// would fail on the network (`S3StartError::Bucket`), not on residency.
#[tokio::test]
async fn the_s3_store_refuses_hosts_outside_the_mainland_before_connecting() {
    for (endpoint, region, says) in [
        (
            "https://cn-hongkong.oss.aliyuncs.com",
            "cn-hangzhou",
            "region cn-hongkong, which is not in mainland China",
        ),
        (
            "https://cos.ap-hongkong.tencentcos.cn",
            "ap-beijing",
            "region ap-hongkong, which is not in mainland China",
        ),
        (
            "https://oss-accelerate.aliyuncs.com",
            "cn-hangzhou",
            "names no region",
        ),
    ] {
        let mut settings = s3env::settings(endpoint, "photos");
        settings.region = region.into();
        let err = S3BlobStore::connect(&settings).await.unwrap_err();
        assert!(
            matches!(&err, S3StartError::Endpoint(e) if e.contains(says)),
            "{endpoint}: {err:?}"
        );
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_refuses_a_bucket_in_another_region() {
    let moto = s3env::shared();
    let bucket = s3env::bucket_name();
    s3env::create_bucket(&moto.endpoint(), &bucket, "cn-northwest-1", false).await;

    let err = S3BlobStore::connect(&s3env::settings(&moto.endpoint(), &bucket))
        .await
        .unwrap_err();
    assert!(
        matches!(err, S3StartError::WrongBucketRegion { .. }),
        "{err:?}"
    );

    let endpoint = moto.endpoint();
    let (ok, err) = tokio::task::spawn_blocking(move || {
        serve_with_env(&[
            ("SEALGATE_BLOB_BACKEND", "s3"),
            ("SEALGATE_S3_BUCKET", &bucket),
            ("SEALGATE_S3_ENDPOINT", &endpoint),
            ("SEALGATE_S3_FORCE_PATH_STYLE", "true"),
        ])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains("is in region \"cn-northwest-1\", but blob.region is \"cn-north-1\""),
        "{err}"
    );
    // The refusal is one line (log lines such as the descriptor limit's
    // may come before it).
    let errors = err.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(errors, 1, "one error line: {err}");
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("error: residency: "),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_refused_by_a_gateway_of_another_region() {
    let mut gw = TestGateway::start().await;
    let mut client = gw.content().await;
    let body = crate::support::gateway::data(20_000, 5);
    crate::support::gateway::put(&mut client, "u-region", "moments", "photo", &body, 4096)
        .await
        .unwrap();
    gw.stop().await;

    // Same storage and keys, but the gateway now says the data lives in
    // cn-northwest-1: the object's bound identity no longer matches.
    let mut config = crate::support::gateway::config(&gw.data_dir);
    config.blob.region = "cn-northwest-1".into();
    let other = TestGateway::start_config(config).await;
    let mut client = other.content().await;
    let err = crate::support::gateway::get(&mut client, "u-region", "moments", "photo", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    let err = crate::support::gateway::get(
        &mut client,
        "u-region",
        "moments",
        "photo",
        Some((0, Some(10))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
}

/// `master.provider = "aws-kms"` with a KMS key outside the China partition,
/// in a region `residency.allowed_regions` leaves out, or behind an AWS
/// endpoint abroad: refused at startup in one line naming the ARN's
/// partition and region (or the endpoint), before any network call: the
/// KMS endpoint configured, a listener of the test's, is never connected.
#[test]
fn startup_refuses_kms_keys_outside_china_before_any_network_call() {
    let kms = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    kms.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", kms.local_addr().unwrap());
    const KEY: &str = "key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let abroad = format!("arn:aws:kms:us-east-1:123456789012:{KEY}");
    let ningxia = format!("arn:aws-cn:kms:cn-northwest-1:123456789012:{KEY}");
    let beijing = format!("arn:aws-cn:kms:cn-north-1:123456789012:{KEY}");
    for (arn, endpoint, allowed, says) in [
        (
            &abroad,
            endpoint.as_str(),
            None,
            "master.kms_key_arn is in partition aws, region us-east-1; KMS keys must be in the aws-cn partition",
        ),
        (
            &ningxia,
            endpoint.as_str(),
            Some("[\"cn-north-1\"]"),
            "master.kms_key_arn is in partition aws-cn, region cn-northwest-1, which is not in residency.allowed_regions",
        ),
        (
            &beijing,
            "https://kms.us-east-1.amazonaws.com",
            None,
            "master.kms_endpoint host kms.us-east-1.amazonaws.com is AWS outside the China partition",
        ),
    ] {
        let mut env = vec![
            ("SEALGATE_MASTER_PROVIDER", "aws-kms"),
            ("SEALGATE_MASTER_KMS_KEY_ARN", arn.as_str()),
            ("SEALGATE_MASTER_KMS_ENDPOINT", endpoint),
        ];
        if let Some(allowed) = allowed {
            env.push(("SEALGATE_RESIDENCY_ALLOWED_REGIONS", allowed));
        }
        let (ok, err) = serve_with_env(&env);
        assert!(!ok, "{arn}: {err}");
        assert!(err.contains(says), "{arn}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(
        matches!(kms.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection reached the KMS endpoint"
    );
}
