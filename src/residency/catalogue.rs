//! The catalogue: the providers, their mainland China regions (each list
//! with its source and the date it was read), and where each provider's
//! host forms name their region.

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
pub(super) const AWS_CHINA: &[&str] = &["cn-north-1", "cn-northwest-1"];
/// Alibaba Cloud OSS, public cloud, "Asia Pacific - Chinese mainland"
/// (not `cn-hongkong`; Finance and Government Cloud regions left out).
/// Source: <https://www.alibabacloud.com/help/en/oss/user-guide/regions-and-endpoints>,
/// read 2026-12-05 (Nanjing and Fuzhou are listed as closing down; their
/// buckets still live on the mainland).
pub(super) const ALIBABA_OSS: &[&str] = &[
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
pub(super) const TENCENT_COS: &[&str] = &[
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
pub(super) const HUAWEI_OBS: &[&str] = &[
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
pub(super) const DOMAINS: &[(&str, Provider)] = &[
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
pub(super) const AWS_ABROAD: &[&str] = &["amazonaws.com", "api.aws"];

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
    pub(super) fn host_forms(self) -> &'static str {
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
    pub(super) fn named_region(self, labels: &[&str]) -> Option<String> {
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
pub(super) fn region_shaped(label: &str) -> bool {
    label.starts_with(|c: char| c.is_ascii_lowercase())
        && label.contains('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
