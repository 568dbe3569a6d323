//! Where data may live: the built-in catalogue of mainland China regions of
//! each object-store provider, and the startup check of an endpoint and a
//! region against it.
//!
//! The endpoint's host decides the provider (`*.amazonaws.com.cn`,
//! `*.aliyuncs.com`, `*.myqcloud.com` and `*.tencentcos.cn`,
//! `*.myhuaweicloud.com`); any other host is a self-hosted store (MinIO,
//! Ceph), whose bucket must report an allowed region. A provider's host must
//! name its region in one of the provider's documented forms (service
//! endpoints, internal and dual-stack ones, and virtual-hosted bucket hosts
//! in front of them: see `Provider::named_region`), that region must be in
//! the catalogue and equal the configured region; a host of a provider's
//! domain that names no region (acceleration and global hosts) is refused,
//! as is AWS outside the China partition. Hong Kong, Macau and everything
//! abroad are outside the catalogue, and `residency.allowed_regions` can
//! only narrow it. Each list of the catalogue names its source and the date
//! it was read. Everything here runs before any network call.
//!
//! Master keys in AWS KMS obey the same catalogue ([`check_kms`]): the key
//! ARN ([`KmsArn`]) must be in the `aws-cn` partition and an allowed AWS
//! China region, and a KMS endpoint follows an object store's endpoint
//! rules. The configuration's validation runs these checks, and the S3 store
//! runs [`check`] again before it builds its client, then checks the
//! bucket's own location. This module imports nothing else of the crate.

use std::fmt;

/// An object-store provider, as the endpoint host tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// AWS in the China partition (`*.amazonaws.com.cn`,
    /// `*.api.amazonwebservices.com.cn`), the default when no endpoint is
    /// configured.
    AwsChina,
    /// Alibaba Cloud OSS (`*.aliyuncs.com`).
    AlibabaOss,
    /// Tencent Cloud COS (`*.myqcloud.com`, `*.tencentcos.cn`).
    TencentCos,
    /// Huawei Cloud OBS (`*.myhuaweicloud.com`, `*.myhuaweicloud.eu`).
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

// The catalogue: each provider's published list of its mainland China
// regions (Hong Kong, Macau and Taiwan are not the mainland), with where
// and when it was read. Only the public-cloud regions whose endpoints keep
// the provider's regular host forms are listed.

/// AWS China: Beijing (`cn-north-1`) and Ningxia (`cn-northwest-1`), the
/// two regions of the `aws-cn` partition.
/// Source: <https://docs.amazonaws.cn/en_us/aws/latest/userguide/endpoints-Beijing.html>
/// and `endpoints-Ningxia.html` beside it, read 2026-12-05.
const AWS_CHINA: &[&str] = &["cn-north-1", "cn-northwest-1"];
/// Alibaba Cloud OSS, public cloud, "Asia Pacific - Chinese mainland"
/// (not `cn-hongkong`; Finance and Government Cloud regions left out).
/// Source: <https://www.alibabacloud.com/help/en/oss/user-guide/regions-and-endpoints>,
/// read 2026-12-05 (Nanjing and Fuzhou are listed as closing down; their
/// buckets still live on the mainland).
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
/// Tencent Cloud COS, "Chinese mainland": the public-cloud regions
/// (`ap-beijing-1`, Beijing Zone 1, takes no new buckets) and the
/// financial-cloud `-fsi` regions (not `ap-hongkong`).
/// Source: <https://cloud.tencent.com/document/product/436/6224> (English:
/// <https://www.tencentcloud.com/document/product/436/6224>), 2026-12-05:
/// that page could not be read whole from here; the list is its mainland
/// table as published copies of it give it.
const TENCENT_COS: &[&str] = &[
    "ap-beijing-1",
    "ap-beijing",
    "ap-nanjing",
    "ap-shanghai",
    "ap-guangzhou",
    "ap-chengdu",
    "ap-chongqing",
    "ap-beijing-fsi",
    "ap-shanghai-fsi",
    "ap-shenzhen-fsi",
];
/// Huawei Cloud OBS: every `cn-*` region of Huawei's OBS region list, all
/// on the mainland (Hong Kong is `ap-southeast-1`); `cn-east-4` is East
/// China (华东).
/// Source: <https://developer.huaweicloud.com/endpoint?OBS> and the OBS
/// region table of Huawei's SDK,
/// <https://github.com/huaweicloud/huaweicloud-sdk-python-v3/blob/master/huaweicloud-sdk-obs/huaweicloudsdkobs/v1/region/obs_region.py>,
/// read 2026-12-05.
const HUAWEI_OBS: &[&str] = &[
    "cn-north-1",
    "cn-north-2",
    "cn-north-4",
    "cn-north-9",
    "cn-north-11",
    "cn-north-12",
    "cn-east-2",
    "cn-east-3",
    "cn-east-4",
    "cn-east-5",
    "cn-south-1",
    "cn-south-2",
    "cn-south-4",
    "cn-southwest-2",
    "cn-southwest-3",
];

/// The domains each provider's endpoint hosts end in.
const DOMAINS: &[(&str, Provider)] = &[
    ("amazonaws.com.cn", Provider::AwsChina),
    // AWS China's dual-stack domain for services other than S3.
    ("api.amazonwebservices.com.cn", Provider::AwsChina),
    ("aliyuncs.com", Provider::AlibabaOss),
    ("myqcloud.com", Provider::TencentCos),
    ("tencentcos.cn", Provider::TencentCos),
    ("myhuaweicloud.com", Provider::HuaweiObs),
    // Huawei's European region (`eu-west-101`): never the mainland.
    ("myhuaweicloud.eu", Provider::HuaweiObs),
];

/// The domains of AWS outside the China partition.
const AWS_ABROAD: &[&str] = &["amazonaws.com", "api.aws"];

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

    /// The host forms of this provider that name a region, for messages.
    fn host_forms(self) -> &'static str {
        match self {
            Self::AwsChina => {
                "s3.REGION.amazonaws.com.cn, s3.dualstack.REGION.amazonaws.com.cn, BUCKET.s3.REGION.amazonaws.com.cn, SERVICE.REGION.amazonaws.com.cn"
            }
            Self::AlibabaOss => {
                "oss-REGION.aliyuncs.com, oss-REGION-internal.aliyuncs.com, REGION.oss.aliyuncs.com, each also after BUCKET."
            }
            Self::TencentCos => {
                "cos.REGION.myqcloud.com, cos.REGION.tencentcos.cn, cos-internal.REGION.tencentcos.cn, each also after BUCKET-APPID."
            }
            Self::HuaweiObs => "obs.REGION.myhuaweicloud.com, BUCKET.obs.REGION.myhuaweicloud.com",
            Self::SelfHosted => "any",
        }
    }

    /// The region named by the labels of a host of this provider before
    /// its domain (`labels`: `["bucket", "s3", "cn-north-1"]` for
    /// `bucket.s3.cn-north-1.amazonaws.com.cn`), if they are in one of the
    /// provider's documented forms:
    ///
    /// - AWS China: the label right before the domain, after at least one
    ///   service label (`s3.R`, `s3.dualstack.R`, `BUCKET.s3.R`, `kms.R`),
    ///   or before a trailing `vpce` (interface endpoints).
    /// - Alibaba OSS: the last label `oss-R` or `oss-R-internal` (also
    ///   after `BUCKET.`), or the label before a last `oss` (`R.oss`, the
    ///   dual-stack form). Acceleration (`oss-accelerate`,
    ///   `oss-accelerate-overseas`) and region-group (`oss-rg-*`) hosts name
    ///   none.
    /// - Tencent COS: the label after a second-to-last `cos` or
    ///   `cos-internal` (`cos.R`, `BUCKET-APPID.cos.R`); the global
    ///   acceleration host `cos.accelerate` names none.
    /// - Huawei OBS: the label after a second-to-last `obs` (`obs.R`,
    ///   `BUCKET.obs.R`).
    ///
    /// The region is only ever read at that one place, so a bucket whose
    /// name looks like a region cannot stand in for the host's.
    fn named_region(self, labels: &[&str]) -> Option<String> {
        let region = |l: &str| region_shaped(l).then(|| l.to_string());
        match self {
            Self::AwsChina => {
                let labels = labels.strip_suffix(&["vpce"][..]).unwrap_or(labels);
                match labels {
                    [_, .., r] => region(r),
                    _ => None,
                }
            }
            Self::AlibabaOss => match labels {
                [.., r, "oss"] => region(r),
                [.., last] => {
                    let r = last.strip_prefix("oss-")?;
                    let r = r.strip_suffix("-internal").unwrap_or(r);
                    if r.starts_with("accelerate") || r.starts_with("rg-") {
                        return None;
                    }
                    region(r)
                }
                [] => None,
            },
            Self::TencentCos => match labels {
                [.., "cos" | "cos-internal", r] => region(r),
                _ => None,
            },
            Self::HuaweiObs => match labels {
                [.., "obs", r] => region(r),
                _ => None,
            },
            Self::SelfHosted => None,
        }
    }
}

/// Whether a host label can be a region id: lower-case letters, digits and
/// inner hyphens, starting with a letter, with at least one hyphen
/// (`cn-north-1`, `ap-beijing`; not `s3`, `accelerate`).
fn region_shaped(label: &str) -> bool {
    label.starts_with(|c: char| c.is_ascii_lowercase())
        && label.contains('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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

/// The provider of an endpoint host, and the labels of the host before the
/// provider's domain (empty for a self-hosted store).
///
/// # Errors
/// AWS outside the China partition.
fn provider_of<'h>(keys: Keys, host: &'h str) -> Result<(Provider, Vec<&'h str>), String> {
    let before = |domain: &str| -> Option<Vec<&'h str>> {
        if host == domain {
            return Some(Vec::new());
        }
        let prefix = host.strip_suffix(domain)?.strip_suffix('.')?;
        Some(prefix.split('.').collect())
    };
    for (domain, provider) in DOMAINS {
        if let Some(labels) = before(domain) {
            return Ok((*provider, labels));
        }
    }
    if AWS_ABROAD.iter().any(|d| before(d).is_some()) {
        return Err(format!(
            "residency: {} host {host} is AWS outside the China partition; China endpoints end in amazonaws.com.cn",
            keys.endpoint
        ));
    }
    Ok((Provider::SelfHosted, Vec::new()))
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
    let host = endpoint.map(|e| host_of(keys, e)).transpose()?;
    let (provider, labels) = match &host {
        Some(host) => provider_of(keys, host)?,
        None => (Provider::AwsChina, Vec::new()),
    };
    let region = normalize(region);
    let mainland = provider.mainland_regions();
    if let (Some(host), true) = (&host, provider != Provider::SelfHosted) {
        let Some(named) = provider.named_region(&labels) else {
            return Err(format!(
                "residency: {} host {host} is {provider} but names no region (its forms: {}); {} is {region}, allowed: {}",
                keys.endpoint,
                provider.host_forms(),
                keys.region,
                mainland.join(", ")
            ));
        };
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
}
