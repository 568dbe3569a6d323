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
//!
//! `catalogue.rs` holds the providers and their regions; this file the
//! checks.

mod catalogue;
#[cfg(test)]
mod tests;

pub use catalogue::Provider;
use catalogue::{AWS_ABROAD, AWS_CHINA, DOMAINS};

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
