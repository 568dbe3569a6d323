//! The residency checks, host form by host form and provider by
//! provider.

use super::*;

fn ok(endpoint: &str, region: &str) -> Provider {
    check(Some(endpoint), region, &[]).unwrap_or_else(|e| panic!("{endpoint} {region}: {e}"))
}

fn refused(endpoint: Option<&str>, region: &str, allowed: &[&str]) -> String {
    let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
    let err = check(endpoint, region, &allowed).expect_err("refused");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn mainland_endpoints_of_each_provider_pass() {
    assert_eq!(
        check(None, "cn-northwest-1", &[]).unwrap(),
        Provider::AwsChina
    );
    assert_eq!(
        ok("https://s3.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        Provider::AwsChina
    );
    assert_eq!(
        ok("https://oss-cn-hangzhou.aliyuncs.com", "cn-hangzhou"),
        Provider::AlibabaOss
    );
    assert_eq!(
        ok(
            "https://oss-cn-beijing-internal.aliyuncs.com",
            "oss-cn-beijing"
        ),
        Provider::AlibabaOss
    );
    assert_eq!(
        ok("https://cos.ap-guangzhou.myqcloud.com", "ap-guangzhou"),
        Provider::TencentCos
    );
    assert_eq!(
        ok("https://obs.cn-north-4.myhuaweicloud.com", "cn-north-4"),
        Provider::HuaweiObs
    );
    assert_eq!(
        ok("http://minio.internal:9000", "cn-north-1"),
        Provider::SelfHosted
    );
}

#[test]
fn hong_kong_and_abroad_are_refused_naming_both() {
    let e = refused(
        Some("https://oss-cn-hongkong.aliyuncs.com"),
        "cn-hongkong",
        &[],
    );
    assert!(
        e.contains("oss-cn-hongkong.aliyuncs.com") && e.contains("cn-hongkong"),
        "{e}"
    );
    assert!(e.contains("not in mainland China"), "{e}");
    let e = refused(
        Some("https://cos.ap-hongkong.myqcloud.com"),
        "ap-hongkong",
        &[],
    );
    assert!(e.contains("ap-hongkong") && e.contains("Tencent"), "{e}");
    let e = refused(Some("https://s3.us-east-1.amazonaws.com"), "us-east-1", &[]);
    assert!(e.contains("outside the China partition"), "{e}");
    // Hong Kong's endpoint with a mainland region configured: the host
    // decides.
    let e = refused(
        Some("https://oss-cn-hongkong.aliyuncs.com"),
        "cn-hangzhou",
        &[],
    );
    assert!(e.contains("cn-hongkong"), "{e}");
    // Self-hosted stores in Hong Kong or abroad.
    let e = refused(Some("http://minio.local:9000"), "cn-hongkong", &[]);
    assert!(
        e.contains("cn-hongkong") && e.contains("minio.local"),
        "{e}"
    );
    let e = refused(None, "ap-east-1", &[]);
    assert!(e.contains("ap-east-1") && e.contains("AWS China"), "{e}");
}

#[test]
fn an_allowed_region_with_a_foreign_endpoint_and_the_reverse() {
    let e = refused(
        Some("https://s3.us-east-1.amazonaws.com"),
        "cn-north-1",
        &[],
    );
    assert!(e.contains("outside the China partition"), "{e}");
    let e = refused(
        Some("https://s3.cn-north-1.amazonaws.com.cn"),
        "us-east-1",
        &[],
    );
    assert!(e.contains("cn-north-1") && e.contains("us-east-1"), "{e}");
    // A mainland region of another provider than the host's.
    let e = refused(
        Some("https://cos.ap-beijing.myqcloud.com"),
        "cn-beijing",
        &[],
    );
    assert!(e.contains("ap-beijing") && e.contains("cn-beijing"), "{e}");
    let e = refused(Some("https://s3.amazonaws.com.cn"), "ap-beijing", &[]);
    assert!(e.contains("ap-beijing") && e.contains("AWS China"), "{e}");
}

/// Every documented host form of each provider, with the region it
/// names: passes with that region configured.
#[test]
fn every_host_form_names_its_region() {
    for (host, region, provider) in [
        // AWS China.
        (
            "s3.cn-north-1.amazonaws.com.cn",
            "cn-north-1",
            Provider::AwsChina,
        ),
        (
            "s3.dualstack.cn-northwest-1.amazonaws.com.cn",
            "cn-northwest-1",
            Provider::AwsChina,
        ),
        (
            "photos.s3.cn-north-1.amazonaws.com.cn",
            "cn-north-1",
            Provider::AwsChina,
        ),
        (
            "my.dotted.bucket.s3.cn-northwest-1.amazonaws.com.cn",
            "cn-northwest-1",
            Provider::AwsChina,
        ),
        (
            "photos.s3.dualstack.cn-north-1.amazonaws.com.cn",
            "cn-north-1",
            Provider::AwsChina,
        ),
        (
            "bucket.vpce-0a1b2c3d-4e5f6a7b.s3.cn-north-1.vpce.amazonaws.com.cn",
            "cn-north-1",
            Provider::AwsChina,
        ),
        // Alibaba Cloud OSS: public, internal, dual-stack, each with a
        // bucket in front.
        (
            "oss-cn-hangzhou.aliyuncs.com",
            "cn-hangzhou",
            Provider::AlibabaOss,
        ),
        (
            "oss-cn-beijing-internal.aliyuncs.com",
            "cn-beijing",
            Provider::AlibabaOss,
        ),
        (
            "cn-shanghai.oss.aliyuncs.com",
            "cn-shanghai",
            Provider::AlibabaOss,
        ),
        (
            "photos.oss-cn-shenzhen.aliyuncs.com",
            "cn-shenzhen",
            Provider::AlibabaOss,
        ),
        (
            "photos.oss-cn-wuhan-lr-internal.aliyuncs.com",
            "cn-wuhan-lr",
            Provider::AlibabaOss,
        ),
        (
            "photos.cn-chengdu.oss.aliyuncs.com",
            "cn-chengdu",
            Provider::AlibabaOss,
        ),
        // Tencent Cloud COS, on both domains.
        (
            "cos.ap-guangzhou.myqcloud.com",
            "ap-guangzhou",
            Provider::TencentCos,
        ),
        (
            "photos-1250000000.cos.ap-beijing.myqcloud.com",
            "ap-beijing",
            Provider::TencentCos,
        ),
        (
            "cos.ap-nanjing.tencentcos.cn",
            "ap-nanjing",
            Provider::TencentCos,
        ),
        (
            "photos-1250000000.cos.ap-shanghai-fsi.tencentcos.cn",
            "ap-shanghai-fsi",
            Provider::TencentCos,
        ),
        (
            "photos-1250000000.cos-internal.ap-chengdu.tencentcos.cn",
            "ap-chengdu",
            Provider::TencentCos,
        ),
        // Huawei Cloud OBS.
        (
            "obs.cn-north-4.myhuaweicloud.com",
            "cn-north-4",
            Provider::HuaweiObs,
        ),
        (
            "photos.obs.cn-southwest-2.myhuaweicloud.com",
            "cn-southwest-2",
            Provider::HuaweiObs,
        ),
        // cn-east-4 is East China on Huawei's published OBS list.
        (
            "obs.cn-east-4.myhuaweicloud.com",
            "cn-east-4",
            Provider::HuaweiObs,
        ),
        (
            "photos.obs.cn-east-4.myhuaweicloud.com",
            "cn-east-4",
            Provider::HuaweiObs,
        ),
    ] {
        for scheme in ["https", "http"] {
            let endpoint = format!("{scheme}://{host}");
            assert_eq!(ok(&endpoint, region), provider, "{endpoint}");
        }
        // A port, a path and a trailing dot change nothing.
        assert_eq!(ok(&format!("https://{host}.:443/x"), region), provider);
    }
}

/// The measured escapes: a host outside the mainland in a form the old
/// check did not read, with a mainland region configured.
#[test]
fn the_measured_hosts_outside_the_mainland_are_refused() {
    let e = refused(
        Some("https://cn-hongkong.oss.aliyuncs.com"),
        "cn-hangzhou",
        &[],
    );
    assert!(
        e.contains("host cn-hongkong.oss.aliyuncs.com is Alibaba Cloud OSS region cn-hongkong, which is not in mainland China")
            && e.contains("cn-hangzhou, cn-shanghai"),
        "{e}"
    );
    let e = refused(
        Some("https://cos.ap-hongkong.tencentcos.cn"),
        "ap-beijing",
        &[],
    );
    assert!(
        e.contains("host cos.ap-hongkong.tencentcos.cn is Tencent Cloud COS region ap-hongkong, which is not in mainland China")
            && e.contains("ap-beijing"),
        "{e}"
    );
}

#[test]
fn every_host_form_outside_the_mainland_is_refused_naming_host_and_region() {
    for (host, region, named) in [
        (
            "oss-cn-hongkong-internal.aliyuncs.com",
            "cn-hangzhou",
            "cn-hongkong",
        ),
        (
            "photos.oss-cn-hongkong.aliyuncs.com",
            "cn-hangzhou",
            "cn-hongkong",
        ),
        (
            "photos.cn-hongkong.oss.aliyuncs.com",
            "cn-hangzhou",
            "cn-hongkong",
        ),
        (
            "oss-ap-southeast-1.aliyuncs.com",
            "cn-hangzhou",
            "ap-southeast-1",
        ),
        // A bucket named like a mainland endpoint does not stand in for
        // the host's own region.
        (
            "oss-cn-hangzhou.oss-cn-hongkong.aliyuncs.com",
            "cn-hangzhou",
            "cn-hongkong",
        ),
        (
            "cn-hangzhou.cn-hongkong.oss.aliyuncs.com",
            "cn-hangzhou",
            "cn-hongkong",
        ),
        ("cos.ap-hongkong.myqcloud.com", "ap-beijing", "ap-hongkong"),
        (
            "photos-1250000000.cos.ap-hongkong.myqcloud.com",
            "ap-beijing",
            "ap-hongkong",
        ),
        (
            "photos-1250000000.cos.ap-singapore.tencentcos.cn",
            "ap-beijing",
            "ap-singapore",
        ),
        (
            "cos.ap-beijing.cos.ap-hongkong.myqcloud.com",
            "ap-beijing",
            "ap-hongkong",
        ),
        (
            "obs.ap-southeast-1.myhuaweicloud.com",
            "cn-north-4",
            "ap-southeast-1",
        ),
        (
            "photos.obs.ap-southeast-1.myhuaweicloud.com",
            "cn-north-4",
            "ap-southeast-1",
        ),
        (
            "obs.eu-west-101.myhuaweicloud.eu",
            "cn-north-4",
            "eu-west-101",
        ),
    ] {
        let e = refused(Some(&format!("https://{host}")), region, &[]);
        assert!(
            e.contains(&format!("host {host} is "))
                && e.contains(&format!(
                    "region {named}, which is not in mainland China (allowed: "
                )),
            "{host}: {e}"
        );
    }
}

/// Hosts of a provider's domain that name no region: acceleration and
/// global endpoints, and forms the provider does not document.
#[test]
fn provider_hosts_naming_no_region_are_refused() {
    for (host, region) in [
        ("oss-accelerate.aliyuncs.com", "cn-hangzhou"),
        ("photos.oss-accelerate.aliyuncs.com", "cn-hangzhou"),
        ("photos.oss-accelerate-overseas.aliyuncs.com", "cn-hangzhou"),
        ("oss-rg-china-mainland.aliyuncs.com", "cn-hangzhou"),
        ("oss.aliyuncs.com", "cn-hangzhou"),
        ("aliyuncs.com", "cn-hangzhou"),
        (
            "photos-1250000000.cos.accelerate.myqcloud.com",
            "ap-beijing",
        ),
        ("service.cos.myqcloud.com", "ap-beijing"),
        ("cos.tencentcos.cn", "ap-beijing"),
        ("obs.myhuaweicloud.com", "cn-north-1"),
        ("photos.obs.myhuaweicloud.com", "cn-north-1"),
        ("s3.amazonaws.com.cn", "cn-north-1"),
        ("photos.s3.amazonaws.com.cn", "cn-north-1"),
    ] {
        let e = refused(Some(&format!("https://{host}")), region, &[]);
        assert!(
            e.contains(&format!("host {host} is "))
                && e.contains("names no region")
                && e.contains(&format!("is {region}, allowed: ")),
            "{host}: {e}"
        );
    }
}

/// The host's region and the configured one must agree, in every form.
#[test]
fn the_host_region_must_be_the_configured_one() {
    for (host, region, named) in [
        ("cn-shanghai.oss.aliyuncs.com", "cn-hangzhou", "cn-shanghai"),
        (
            "photos.oss-cn-beijing-internal.aliyuncs.com",
            "cn-hangzhou",
            "cn-beijing",
        ),
        ("cos.ap-shanghai.tencentcos.cn", "ap-beijing", "ap-shanghai"),
        (
            "photos.obs.cn-east-3.myhuaweicloud.com",
            "cn-north-4",
            "cn-east-3",
        ),
        ("obs.cn-east-4.myhuaweicloud.com", "cn-east-3", "cn-east-4"),
        (
            "s3.dualstack.cn-northwest-1.amazonaws.com.cn",
            "cn-north-1",
            "cn-northwest-1",
        ),
        // A bucket named like a region is not the host's region.
        (
            "cn-north-1.s3.cn-northwest-1.amazonaws.com.cn",
            "cn-north-1",
            "cn-northwest-1",
        ),
    ] {
        let e = refused(Some(&format!("https://{host}")), region, &[]);
        assert!(
            e.contains(&format!("host {host} is "))
                && e.contains(&format!("region {named}, but blob.region is {region}")),
            "{host}: {e}"
        );
    }
}

#[test]
fn aws_abroad_is_refused_in_each_domain() {
    for host in [
        "s3.us-east-1.amazonaws.com",
        "kms.us-east-1.api.aws",
        "amazonaws.com",
    ] {
        let e = refused(Some(&format!("https://{host}")), "cn-north-1", &[]);
        assert!(e.contains("outside the China partition"), "{host}: {e}");
    }
}

#[test]
fn the_catalogue_is_the_published_lists() {
    assert!(Provider::HuaweiObs
        .mainland_regions()
        .contains(&"cn-east-4"));
    assert!(Provider::TencentCos
        .mainland_regions()
        .contains(&"ap-beijing-1"));
    for (provider, abroad) in [
        (Provider::AwsChina, "ap-east-1"),
        (Provider::AlibabaOss, "cn-hongkong"),
        (Provider::TencentCos, "ap-hongkong"),
        (Provider::HuaweiObs, "ap-southeast-1"),
    ] {
        let regions = provider.mainland_regions();
        assert!(!regions.contains(&abroad), "{provider}");
        let mut sorted = regions.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), regions.len(), "{provider}: no duplicates");
    }
}

#[test]
fn allowed_regions_only_narrow() {
    let e = refused(None, "cn-north-1", &["cn-north-1", "ap-east-1"]);
    assert!(
        e.contains("ap-east-1") && e.contains("can only narrow"),
        "{e}"
    );
    let e = refused(None, "cn-north-1", &["cn-hongkong"]);
    assert!(e.contains("cn-hongkong"), "{e}");
    let e = refused(None, "cn-northwest-1", &["cn-north-1"]);
    assert!(e.contains("not in residency.allowed_regions"), "{e}");
    assert!(check(None, "cn-north-1", &["cn-north-1".into()]).is_ok());
}

fn kms_refused(arn: &str, endpoint: Option<&str>, allowed: &[&str]) -> String {
    let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
    let err = check_kms(arn, endpoint, &allowed).expect_err("refused");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

const CN_ARN: &str =
    "arn:aws-cn:kms:cn-north-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn kms_arns_in_the_china_partition_and_an_allowed_region_pass() {
    let arn = check_kms(CN_ARN, None, &[]).unwrap();
    assert_eq!(
        (arn.partition.as_str(), arn.region.as_str()),
        ("aws-cn", "cn-north-1")
    );
    check_kms(
        "arn:aws-cn:kms:cn-northwest-1:123456789012:alias/sealgate",
        Some("https://kms.cn-northwest-1.amazonaws.com.cn"),
        &["cn-northwest-1".into()],
    )
    .unwrap();
    // A self-hosted KMS-compatible endpoint (a test server).
    check_kms(CN_ARN, Some("http://127.0.0.1:4566"), &[]).unwrap();
}

#[test]
fn kms_arns_elsewhere_are_refused_naming_partition_and_region() {
    let e = kms_refused(
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        None,
        &[],
    );
    assert!(
        e.contains("partition aws,") && e.contains("us-east-1") && e.contains("aws-cn"),
        "{e}"
    );
    let e = kms_refused(
        "arn:aws-cn:kms:cn-northwest-1:123456789012:key/k",
        None,
        &["cn-north-1"],
    );
    assert!(
        e.contains("aws-cn") && e.contains("cn-northwest-1") && e.contains("allowed_regions"),
        "{e}"
    );
    let e = kms_refused("arn:aws-cn:kms:cn-beijing:123456789012:key/k", None, &[]);
    assert!(
        e.contains("cn-beijing") && e.contains("not an AWS China region"),
        "{e}"
    );
    for bad in [
        "",
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "arn:aws-cn:s3:cn-north-1:123456789012:key/k",
        "arn:aws-cn:kms:cn-north-1:1234:key/k",
        "arn:aws-cn:kms:cn-north-1:123456789012:key/",
        "arn:aws-cn:kms:cn-north-1:123456789012:grant/k",
    ] {
        let e = kms_refused(bad, None, &[]);
        assert!(e.contains("is not a KMS key ARN"), "{bad}: {e}");
    }
}

#[test]
fn kms_endpoints_follow_the_object_store_rules() {
    let e = kms_refused(CN_ARN, Some("https://kms.us-east-1.amazonaws.com"), &[]);
    assert!(
        e.contains("master.kms_endpoint") && e.contains("outside the China partition"),
        "{e}"
    );
    let e = kms_refused(
        CN_ARN,
        Some("https://kms.cn-northwest-1.amazonaws.com.cn"),
        &[],
    );
    assert!(
        e.contains("cn-northwest-1")
            && e.contains("cn-north-1")
            && e.contains("master.kms_key_arn"),
        "{e}"
    );
    let e = kms_refused(CN_ARN, Some("kms.cn-north-1.amazonaws.com.cn"), &[]);
    assert!(e.contains("master.kms_endpoint"), "{e}");
}
