//! Where data may live: the built-in catalogue of mainland China regions of
//! each object-store provider, and the startup check of an endpoint and a
//! region against it.
//!
//! The endpoint's host decides the provider (`*.amazonaws.com.cn`,
//! `*.aliyuncs.com`, `*.myqcloud.com`, `*.myhuaweicloud.com`); any other host
//! is a self-hosted store (MinIO, Ceph), whose bucket must report an allowed
//! region. Hong Kong, Macau and everything abroad are outside the catalogue,
//! and `residency.allowed_regions` can only narrow it. Everything here runs
//! before any network call.
//!
//! Master keys in AWS KMS obey the same catalogue ([`check_kms`]): the key
//! ARN ([`KmsArn`]) must be in the `aws-cn` partition and an allowed AWS
//! China region, and a KMS endpoint follows an object store's endpoint
//! rules. The configuration's validation runs these checks; the S3 store
//! checks the bucket's own location when it connects. This module imports
//! nothing else of the crate.

use std::fmt;

/// An object-store provider, as the endpoint host tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// AWS in the China partition (`*.amazonaws.com.cn`), the default when
    /// no endpoint is configured.
    AwsChina,
    /// Alibaba Cloud OSS (`*.aliyuncs.com`).
    AlibabaOss,
    /// Tencent Cloud COS (`*.myqcloud.com`).
    TencentCos,
    /// Huawei Cloud OBS (`*.myhuaweicloud.com`).
    HuaweiObs,
    /// Any other host: MinIO, Ceph and the like in a mainland data centre.
    SelfHosted,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AwsChina => "AWS China",
            Self::AlibabaOss => "Alibaba Cloud OSS",
            Self::TencentCos => "Tencent Cloud COS",
            Self::HuaweiObs => "Huawei Cloud OBS",
            Self::SelfHosted => "a self-hosted store",
        })
    }
}

/// AWS China: Beijing and Ningxia.
const AWS_CHINA: &[&str] = &["cn-north-1", "cn-northwest-1"];
/// Alibaba Cloud OSS in mainland China (not `cn-hongkong`).
const ALIBABA_OSS: &[&str] = &[
    "cn-hangzhou",
    "cn-shanghai",
    "cn-nanjing",
    "cn-fuzhou",
    "cn-wuhan-lr",
    "cn-qingdao",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-wulanchabu",
    "cn-shenzhen",
    "cn-heyuan",
    "cn-guangzhou",
    "cn-chengdu",
];
/// Tencent Cloud COS in mainland China (not `ap-hongkong`).
const TENCENT_COS: &[&str] = &[
    "ap-beijing",
    "ap-shanghai",
    "ap-guangzhou",
    "ap-chengdu",
    "ap-chongqing",
    "ap-nanjing",
    "ap-beijing-fsi",
    "ap-shanghai-fsi",
    "ap-shenzhen-fsi",
];
/// Huawei Cloud OBS in mainland China (Hong Kong is `ap-southeast-1`).
const HUAWEI_OBS: &[&str] = &[
    "cn-north-1",
    "cn-north-4",
    "cn-north-9",
    "cn-east-2",
    "cn-east-3",
    "cn-south-1",
    "cn-south-4",
    "cn-southwest-2",
];

impl Provider {
    /// The provider's mainland regions; for a self-hosted store, every
    /// region of the catalogue.
    pub fn mainland_regions(self) -> Vec<&'static str> {
        match self {
            Self::AwsChina => AWS_CHINA.to_vec(),
            Self::AlibabaOss => ALIBABA_OSS.to_vec(),
            Self::TencentCos => TENCENT_COS.to_vec(),
            Self::HuaweiObs => HUAWEI_OBS.to_vec(),
            Self::SelfHosted => {
                let mut all: Vec<&str> = [AWS_CHINA, ALIBABA_OSS, TENCENT_COS, HUAWEI_OBS]
                    .concat()
                    .into_iter()
                    .collect();
                all.sort_unstable();
                all.dedup();
                all
            }
        }
    }

    /// The region a host of this provider names, if it names one: the
    /// `cn-*` label of AWS, what follows `oss-` on OSS, the label after
    /// `cos` on COS and after `obs` on OBS.
    fn named_region(self, host: &str) -> Option<String> {
        let labels: Vec<&str> = host.split('.').collect();
        let after = |marker: &str| {
            labels
                .windows(2)
                .find(|w| w[0] == marker)
                .map(|w| w[1].to_string())
        };
        match self {
            Self::AwsChina => labels
                .iter()
                .find(|l| l.starts_with("cn-"))
                .map(|l| (*l).to_string()),
            Self::AlibabaOss => labels.iter().find_map(|l| {
                let r = l.strip_prefix("oss-")?;
                Some(r.strip_suffix("-internal").unwrap_or(r).to_string())
            }),
            Self::TencentCos => after("cos"),
            Self::HuaweiObs => after("obs"),
            Self::SelfHosted => None,
        }
    }
}

/// The configuration keys a check names in its messages.
#[derive(Clone, Copy)]
struct Keys {
    /// The endpoint's key, such as `s3.endpoint`.
    endpoint: &'static str,
    /// What names the region, such as `blob.region`.
    region: &'static str,
}

/// The object store's keys.
const S3_KEYS: Keys = Keys {
    endpoint: "s3.endpoint",
    region: "blob.region",
};

/// The provider of an endpoint host.
///
/// # Errors
/// AWS outside the China partition.
fn provider_of(keys: Keys, host: &str) -> Result<Provider, String> {
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    Ok(if under("amazonaws.com.cn") {
        Provider::AwsChina
    } else if under("amazonaws.com") {
        return Err(format!(
            "residency: {} host {host} is AWS outside the China partition; China endpoints end in amazonaws.com.cn",
            keys.endpoint
        ));
    } else if under("aliyuncs.com") {
        Provider::AlibabaOss
    } else if under("myqcloud.com") {
        Provider::TencentCos
    } else if under("myhuaweicloud.com") {
        Provider::HuaweiObs
    } else {
        Provider::SelfHosted
    })
}

/// The host of an endpoint URL, lower-cased.
fn host_of(keys: Keys, endpoint: &str) -> Result<String, String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "residency: {} {endpoint:?} must start with https:// or http://",
                keys.endpoint
            )
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .split(':')
        .next()
        .unwrap_or("")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!(
            "residency: {} {endpoint:?} has no host",
            keys.endpoint
        ));
    }
    Ok(host)
}

/// A region as stores spell it: OSS's S3 API says `oss-cn-hangzhou` where
/// its console says `cn-hangzhou`.
pub fn normalize(region: &str) -> &str {
    region.strip_prefix("oss-").unwrap_or(region)
}

/// Checks `allowed` (from `residency.allowed_regions`; empty: the whole
/// catalogue), the endpoint (`None`: AWS China's own) and the region the
/// bucket must be in; returns the provider.
///
/// # Errors
/// One line naming the endpoint, the region and what is expected.
pub fn check(endpoint: Option<&str>, region: &str, allowed: &[String]) -> Result<Provider, String> {
    check_with(S3_KEYS, endpoint, region, allowed)
}

/// [`check`], naming `keys` in its messages.
fn check_with(
    keys: Keys,
    endpoint: Option<&str>,
    region: &str,
    allowed: &[String],
) -> Result<Provider, String> {
    let catalogue = Provider::SelfHosted.mainland_regions();
    if let Some(foreign) = allowed.iter().find(|a| !catalogue.contains(&normalize(a))) {
        return Err(format!(
            "residency: residency.allowed_regions names {foreign:?}, which is not a mainland China region; the list can only narrow the built-in catalogue ({})",
            catalogue.join(", ")
        ));
    }
    let (provider, host) = match endpoint {
        Some(e) => {
            let host = host_of(keys, e)?;
            (provider_of(keys, &host)?, Some(host))
        }
        None => (Provider::AwsChina, None),
    };
    let region = normalize(region);
    let mainland = provider.mainland_regions();
    if let Some(host) = &host {
        if let Some(named) = provider.named_region(host) {
            if !mainland.contains(&named.as_str()) {
                return Err(format!(
                    "residency: {} host {host} is {provider} region {named}, which is not in mainland China (allowed: {})",
                    keys.endpoint,
                    mainland.join(", ")
                ));
            }
            if named != region {
                return Err(format!(
                    "residency: {} host {host} is {provider} region {named}, but {} is {region}",
                    keys.endpoint, keys.region
                ));
            }
        }
    }
    if !mainland.contains(&region) {
        let at = host
            .clone()
            .unwrap_or_else(|| format!("AWS China (no {})", keys.endpoint));
        return Err(format!(
            "residency: {} {region:?} is not a mainland China region of {provider} (endpoint {at}); allowed: {}",
            keys.region,
            mainland.join(", ")
        ));
    }
    if !allowed.is_empty() && !allowed.iter().any(|a| normalize(a) == region) {
        return Err(format!(
            "residency: {} {region:?} is not in residency.allowed_regions {allowed:?}",
            keys.region
        ));
    }
    Ok(provider)
}

/// Checks a region for a store without an endpoint (the filesystem store):
/// any region of the catalogue, narrowed by `allowed`.
///
/// # Errors
/// One line naming the region and what is allowed.
pub fn check_local(region: &str, allowed: &[String]) -> Result<(), String> {
    let catalogue = Provider::SelfHosted.mainland_regions();
    if !catalogue.contains(&normalize(region)) {
        return Err(format!(
            "residency: blob.region {region:?} is not a mainland China region; the catalogue has: {}",
            catalogue.join(", ")
        ));
    }
    // The same rules for the list as with an endpoint.
    check(Some("http://local"), region, allowed).map(drop)
}

/// A KMS key ARN, parsed: `arn:PARTITION:kms:REGION:ACCOUNT:key/ID` (or
/// `alias/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsArn {
    /// The partition: `aws-cn` is the only one accepted.
    pub partition: String,
    /// The region the key lives in.
    pub region: String,
}

impl KmsArn {
    /// Parses a KMS key (or alias) ARN.
    ///
    /// # Errors
    /// One line naming the ARN and the expected form.
    pub fn parse(arn: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "master.kms_key_arn {arn:?} is not a KMS key ARN (arn:aws-cn:kms:REGION:ACCOUNT:key/KEY-ID)"
            )
        };
        let fields: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = fields[..] else {
            return Err(bad());
        };
        let resource_ok = ["key/", "alias/"].iter().any(|t| {
            resource.strip_prefix(t).is_some_and(|id| {
                !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_/".contains(&b))
            })
        });
        let label = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if prefix != "arn"
            || service != "kms"
            || !label(partition)
            || !label(region)
            || account.len() != 12
            || !account.bytes().all(|b| b.is_ascii_digit())
            || !resource_ok
        {
            return Err(bad());
        }
        Ok(Self {
            partition: partition.into(),
            region: region.into(),
        })
    }
}

/// Checks a KMS key ARN and optional KMS endpoint before any network
/// call: the ARN in the `aws-cn` partition and an AWS China region that
/// `allowed` (narrowing the catalogue) lets through; an endpoint under the
/// same rules as an object store's (an AWS host in the China partition
/// naming the ARN's region; a self-hosted KMS-compatible host, such as a
/// test server on loopback, any host).
///
/// # Errors
/// One line naming the ARN's partition and region, or the endpoint.
pub fn check_kms(arn: &str, endpoint: Option<&str>, allowed: &[String]) -> Result<KmsArn, String> {
    let parsed = KmsArn::parse(arn).map_err(|e| format!("residency: {e}"))?;
    let KmsArn { partition, region } = &parsed;
    if partition != "aws-cn" {
        return Err(format!(
            "residency: master.kms_key_arn is in partition {partition}, region {region}; KMS keys must be in the aws-cn partition (arn:aws-cn:kms:...) in an AWS China region ({})",
            AWS_CHINA.join(", ")
        ));
    }
    if !AWS_CHINA.contains(&region.as_str()) {
        return Err(format!(
            "residency: master.kms_key_arn is in partition aws-cn, region {region}, which is not an AWS China region ({})",
            AWS_CHINA.join(", ")
        ));
    }
    if !allowed.is_empty() && !allowed.iter().any(|a| normalize(a) == region) {
        return Err(format!(
            "residency: master.kms_key_arn is in partition aws-cn, region {region}, which is not in residency.allowed_regions {allowed:?}"
        ));
    }
    let keys = Keys {
        endpoint: "master.kms_endpoint",
        region: "the region of master.kms_key_arn",
    };
    check_with(keys, endpoint, region, allowed)?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
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
}
