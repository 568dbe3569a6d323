//! A real S3-protocol server on loopback for the tests: moto's standalone
//! server (from PyPI), installed on first use into a virtualenv under
//! cargo's target directory and started once per test binary (the
//! launcher's guard shell, [`super::launch`], stops it when the test
//! process exits). A loopback TCP proxy in front of it
//! ([`super::proxy::FaultProxy`]) simulates S3 going away and coming back.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use sealgate::blob::s3::{S3BlobStore, S3Settings};

use super::host::free_port;
use super::launch::{ChildServer, Launch};

/// moto version the tests run against.
const MOTO: &str = "moto[server]==5.2.5";
/// Region of every test bucket.
pub const REGION: &str = "cn-north-1";
pub const ACCESS_KEY: &str = "sealgate-test";
pub const SECRET_KEY: &str = "sealgate-test-secret";

/// A running moto server.
pub struct Moto {
    pub addr: SocketAddr,
    server: ChildServer,
}

fn moto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SEALGATE_MOTO_SERVER") {
        return bin.into();
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("moto-venv");
    let bin = venv.join("bin/moto_server");
    if bin.exists() {
        return bin;
    }
    let run = |cmd: &mut Command| {
        let status = cmd.status().expect("run python3");
        assert!(
            status.success(),
            "{cmd:?} failed: moto is needed for the S3 tests"
        );
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        MOTO,
    ]));
    assert!(bin.exists(), "moto_server missing after install");
    bin
}

impl Moto {
    /// Starts a new moto server on a free loopback port.
    pub fn start() -> Self {
        let port = free_port();
        let server = Launch::new("moto_server", moto_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .start(format!("127.0.0.1:{port}").parse().unwrap());
        Self {
            addr: server.addr,
            server,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server now (it stops anyway when the process exits).
    #[allow(dead_code)] // used by benches/s3.rs, which includes this file
    pub fn stop(self) {
        self.server.stop();
    }
}

/// The moto server shared by the whole test binary.
pub fn shared() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// A unique bucket name.
pub fn bucket_name() -> String {
    let mut b = [0u8; 6];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    format!("sg-{}", hex::encode(b))
}

/// Settings for `bucket` behind `endpoint`, with the test credentials.
pub fn settings(endpoint: &str, bucket: &str) -> S3Settings {
    S3Settings {
        bucket: bucket.to_string(),
        region: REGION.to_string(),
        endpoint: Some(endpoint.to_string()),
        force_path_style: true,
        credentials: Some((ACCESS_KEY.to_string(), SECRET_KEY.to_string())),
    }
}

/// A plain SDK client for `endpoint`, to set up and inspect buckets
/// independently of the store under test.
pub fn client(endpoint: &str, region: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates a bucket in `region`, optionally versioned.
pub async fn create_bucket(endpoint: &str, bucket: &str, region: &str, versioned: bool) {
    use aws_sdk_s3::types::{
        BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
        VersioningConfiguration,
    };
    let c = client(endpoint, region);
    c.create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        )
        .send()
        .await
        .expect("create bucket");
    if versioned {
        c.put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("enable versioning");
    }
}

/// A fresh bucket in the shared server and a store on it.
pub async fn fresh_store(versioned: bool) -> (S3BlobStore, String) {
    let moto = shared();
    let bucket = bucket_name();
    create_bucket(&moto.endpoint(), &bucket, REGION, versioned).await;
    let store = S3BlobStore::connect(&settings(&moto.endpoint(), &bucket))
        .await
        .expect("connect");
    (store, bucket)
}

/// Every object in a bucket with its bytes (for at-rest scans).
pub async fn all_objects(endpoint: &str, bucket: &str) -> Vec<(String, Vec<u8>)> {
    let c = client(endpoint, REGION);
    let mut out = Vec::new();
    for key in all_keys(endpoint, bucket).await {
        let body = c
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap()
            .body;
        out.push((key, body.collect().await.unwrap().into_bytes().to_vec()));
    }
    out
}

/// Every object key in a bucket.
pub async fn all_keys(endpoint: &str, bucket: &str) -> Vec<String> {
    let c = client(endpoint, REGION);
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        match page.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}

/// Incomplete multipart uploads in a bucket.
pub async fn incomplete_uploads(endpoint: &str, bucket: &str) -> usize {
    let c = client(endpoint, REGION);
    c.list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}
