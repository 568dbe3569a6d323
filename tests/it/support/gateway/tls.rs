//! A gateway serving TLS with client certificates, and the principals of
//! the tests: a content backend limited to `moments`, a deletion service,
//! a legal console and an ops tool.

use sealgate::api::auth::Role;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient;
use sealgate::config::{PrincipalConfig, Tls};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::server::TestGateway;
use crate::support::pki::{write_server_files, Ca, Leaf};

pub const MOMENTS: &str = "spiffe://app/moments-backend";
pub const DELETION: &str = "spiffe://app/deletion-service";
pub const LEGAL: &str = "spiffe://app/legal-console";
pub const OPS: &str = "ops.internal";
/// A load generator: content in `moments`, and the erasure of the users it
/// made (`sealgate bench` erases them when it ends).
pub const BENCH: &str = "spiffe://app/bench";
/// A valid certificate identity that no principal names.
pub const STRANGER: &str = "spiffe://app/stranger";

/// The principals of these tests: a content backend limited to `moments`,
/// a deletion service, a legal console, an ops tool named by a DNS SAN and
/// a load generator.
pub fn principals() -> Vec<PrincipalConfig> {
    let p = |id: &str, roles: &[Role], spaces: &[&str]| PrincipalConfig {
        id: id.into(),
        roles: roles.to_vec(),
        spaces: spaces.iter().map(|s| s.to_string()).collect(),
    };
    vec![
        p(MOMENTS, &[Role::Content], &["moments"]),
        p(DELETION, &[Role::Erasure], &[]),
        p(LEGAL, &[Role::Legal], &[]),
        p(OPS, &[Role::Ops], &[]),
        p(BENCH, &[Role::Content, Role::Erasure], &["moments"]),
    ]
}

/// A gateway serving TLS with client certificates from `ca`.
pub struct TlsGateway {
    pub gw: TestGateway,
    pub ca: Ca,
    pub tls: Tls,
    _dir: tempfile::TempDir,
}

/// PEM files in `dir` for the CLI's `--ca`, `--cert` and `--key`.
pub struct ClientFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl TlsGateway {
    /// Writes the CA certificate and a fresh client certificate and key
    /// for `principal` (a URI) into `dir`.
    pub fn client_files(&self, dir: &std::path::Path, principal: &str) -> ClientFiles {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };
        let client = self.ca.client_uri(principal);
        ClientFiles {
            ca: write("ca.pem", &self.ca.pem),
            cert: write("client.pem", &client.cert),
            key: write("client.key", &client.key),
        }
    }

    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`Self::start`], after `tweak`ing the configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut sealgate::config::Config)) -> Self {
        let ca = Ca::new("sealgate test CA");
        let dir = tempfile::tempdir().unwrap();
        let tls = write_server_files(dir.path(), &ca.server(), &ca);
        let config_tls = tls.clone();
        let gw = TestGateway::start_with(move |c| {
            c.tls = Some(config_tls);
            c.principals = principals();
            tweak(c);
        })
        .await;
        Self {
            gw,
            ca,
            tls,
            _dir: dir,
        }
    }

    /// A channel trusting `server_ca`, presenting `client` if given.
    pub async fn channel_with(
        &self,
        server_ca: &Ca,
        client: Option<&Leaf>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&server_ca.pem))
            .domain_name("localhost");
        if let Some(c) = client {
            config = config.identity(Identity::from_pem(&c.cert, &c.key));
        }
        Channel::from_shared(format!("https://{}", self.gw.addr))
            .unwrap()
            .tls_config(config)?
            .connect()
            .await
    }

    /// A channel presenting `client` (or none) to this gateway.
    pub async fn channel(&self, client: Option<&Leaf>) -> Channel {
        self.channel_with(&self.ca, client).await.expect("connect")
    }

    pub async fn content(&self, client: Option<&Leaf>) -> ContentServiceClient<Channel> {
        ContentServiceClient::new(self.channel(client).await)
    }

    pub async fn erasure(&self, client: Option<&Leaf>) -> ErasureServiceClient<Channel> {
        ErasureServiceClient::new(self.channel(client).await)
    }

    pub async fn admin(&self, client: Option<&Leaf>) -> KeyAdminServiceClient<Channel> {
        KeyAdminServiceClient::new(self.channel(client).await)
    }

    pub async fn holds(&self, client: Option<&Leaf>) -> LegalHoldServiceClient<Channel> {
        LegalHoldServiceClient::new(self.channel(client).await)
    }
}
