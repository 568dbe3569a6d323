//! Certificates made inside the tests (rcgen): CAs, a server certificate
//! for `localhost` and 127.0.0.1, and client certificates naming an
//! identity (a URI SAN or a DNS SAN), valid or expired.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sealgate::config::Tls;

/// A certificate authority.
pub struct Ca {
    pub pem: String,
    /// Its private key (PEM), for certificates rcgen cannot make.
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, mut params: CertificateParams, eku: ExtendedKeyUsagePurpose) -> Leaf {
        params.extended_key_usages = vec![eku];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        Leaf {
            cert,
            key: key.serialize_pem(),
        }
    }

    /// The gateway's certificate: `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        self.sign(params, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose URI SAN is `uri`.
    pub fn client_uri(&self, uri: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        self.sign(params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose only name is the DNS SAN `name`.
    pub fn client_dns(&self, name: &str) -> Leaf {
        let params = CertificateParams::new(vec![name.to_string()]).unwrap();
        self.sign(params, ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate for `uri` that expired in 2001.
    pub fn expired_client(&self, uri: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
        self.sign(params, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

impl Ca {
    /// An X.509 v1 certificate (no extensions, so no subjectAltName) for
    /// the subject `CN=cn`, signed by this CA, made in `dir` by the
    /// `openssl` command (rcgen always writes v3); `None` without
    /// `openssl`.
    pub fn v1_leaf(&self, dir: &Path, cn: &str) -> Option<Leaf> {
        let run = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .ok()
                .filter(|o| o.status.success())
        };
        run(&["version"])?;
        std::fs::write(dir.join("v1-ca.pem"), &self.pem).unwrap();
        std::fs::write(dir.join("v1-ca.key"), &self.key_pem).unwrap();
        let subject = format!("/CN={cn}");
        run(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "v1.key",
            "-out",
            "v1.csr",
            "-subj",
            &subject,
        ])
        .expect("openssl req");
        // `x509 -req` without an extension file writes a v1 certificate.
        run(&[
            "x509",
            "-req",
            "-in",
            "v1.csr",
            "-CA",
            "v1-ca.pem",
            "-CAkey",
            "v1-ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "v1.pem",
        ])
        .expect("openssl x509");
        let text = run(&["x509", "-in", "v1.pem", "-noout", "-text"]).expect("openssl x509 -text");
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"),
            "openssl made a v1 certificate"
        );
        Some(Leaf {
            cert: std::fs::read_to_string(dir.join("v1.pem")).unwrap(),
            key: std::fs::read_to_string(dir.join("v1.key")).unwrap(),
        })
    }
}

/// Writes the gateway's `[tls]` files into `dir`: `server` as its
/// certificate and `client_ca` as the client CA.
pub fn write_server_files(dir: &Path, server: &Leaf, client_ca: &Ca) -> Tls {
    let tls = Tls {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: dir.join("clients-ca.pem"),
    };
    replace_file(&tls.cert, &server.cert);
    replace_file(&tls.key, &server.key);
    replace_file(&tls.client_ca, &client_ca.pem);
    tls
}

/// Replaces `path` as an operator's tooling does: written beside it, then
/// renamed over it.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp: PathBuf = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
