//! TLS on the listener: the server certificate and key and the client CA
//! from `[tls]`, re-read whenever their contents change on disk (SPIFFE
//! certificates live an hour), and the identity of each connection from its
//! client certificate. The files are checked every second; a change that
//! does not load keeps the previous generation in use.
//!
//! The handshake asks for a client certificate without requiring one and
//! checks only that the client holds the certificate's key; the chain is
//! verified against the client CA right after the handshake. So a caller
//! without a certificate, or with an expired one or one from another CA,
//! still reaches health and reflection, and every other call gets a gRPC
//! status saying why it is refused instead of a failed handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::api::auth::PeerIdentity;
use crate::config;

/// How often the files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why the TLS files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("tls: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("tls: {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// One loaded generation of the files.
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    /// The HTTP listener's: the same certificate, no client certificate
    /// asked for (a signed read's token is its authority), HTTP/2 and
    /// HTTP/1.1.
    http: Arc<rustls::ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Which listener a connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// gRPC: HTTP/2, client certificates.
    Grpc,
    /// Signed HTTP reads (`[http]`).
    Http,
}

/// The listener's TLS, reloaded when its files change.
pub struct ServerTls {
    files: config::Tls,
    current: RwLock<Arc<Loaded>>,
    /// SHA-256 of the three files' contents at the last load attempt.
    seen: Mutex<[u8; 32]>,
}

impl ServerTls {
    /// Loads the files of `[tls]`.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that is unreadable or wrong.
    pub fn load(files: &config::Tls) -> Result<Arc<Self>, TlsError> {
        let (bytes, digest) = read_all(files)?;
        let loaded = build(files, &bytes)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(digest),
        }))
    }

    /// Re-reads the files; if their contents changed, loads them. A change
    /// that does not load (a certificate written before its key, a broken
    /// file) is logged once and the previous generation stays in use.
    /// Returns whether a new generation is in use.
    pub fn reload_if_changed(&self) -> bool {
        let (bytes, digest) = match read_all(&self.files) {
            Ok(read) => read,
            Err(e) => {
                // A file being replaced can be missing for a moment.
                tracing::debug!(error = %e, "tls files not readable; keeping the loaded ones");
                return false;
            }
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == digest {
                return false;
            }
            *seen = digest;
        }
        match build(&self.files, &bytes) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
                tracing::info!("tls: certificate, key and client CA reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "tls: changed files do not load; keeping the previous ones");
                false
            }
        }
    }

    /// Checks the files every second, for as long as the server runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let this = self.clone();
            // File reads stay off the async workers.
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }

    /// The TLS handshake on `tcp` with the current generation, and the
    /// identity the client's certificate proves.
    ///
    /// # Errors
    /// The handshake's I/O or TLS error.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        listener: Listener,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<TcpStream>, PeerIdentity)> {
        let loaded = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let config = match listener {
            Listener::Grpc => loaded.config.clone(),
            Listener::Http => loaded.http.clone(),
        };
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let identity = identify(&*loaded.verifier, stream.get_ref().1.peer_certificates());
        Ok((stream, identity))
    }
}

/// What an identity certificate must be, for the messages refusing one.
const V3_REQUIRED: &str =
    "it is an X.509 v1 certificate (no extensions): X.509 v3 with a subjectAltName is required";

/// Why `der` cannot serve as a certificate here: an X.509 v1 certificate
/// (which has no subjectAltName), or one that does not parse.
fn end_entity_problem(der: &CertificateDer<'_>) -> Option<String> {
    match webpki::EndEntityCert::try_from(der) {
        Ok(_) => None,
        Err(webpki::Error::UnsupportedCertVersion) => Some(V3_REQUIRED.into()),
        Err(e) => Some(format!(
            "it does not parse as an X.509 v3 certificate ({e:?})"
        )),
    }
}

/// Checks a client certificate file (PEM) before it is presented: an
/// X.509 v3 certificate with a subjectAltName (URI or DNS) naming the
/// identity.
///
/// # Errors
/// Why it cannot identify a caller, in words.
pub fn check_client_certificate(pem: &[u8]) -> Result<(), String> {
    let first = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no PEM certificate")?
        .map_err(|e| format!("not a PEM certificate ({e})"))?;
    if let Some(problem) = end_entity_problem(&first) {
        return Err(problem);
    }
    let cert = webpki::EndEntityCert::try_from(&first).map_err(|e| format!("{e:?}"))?;
    if cert.valid_uri_names().next().is_none() && cert.valid_dns_names().next().is_none() {
        return Err(
            "it names no identity: a subjectAltName (a URI such as spiffe://..., or a DNS name) is required"
                .into(),
        );
    }
    Ok(())
}

/// The identity of a client certificate chain: its URI SAN, else its DNS
/// SAN, once the chain verifies against the client CA now.
fn identify(
    verifier: &dyn ClientCertVerifier,
    chain: Option<&[CertificateDer<'static>]>,
) -> PeerIdentity {
    let Some((end_entity, intermediates)) = chain.and_then(<[_]>::split_first) else {
        return PeerIdentity::Anonymous("no client certificate was presented".into());
    };
    if let Err(e) = verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
        return PeerIdentity::Anonymous(format!("the client certificate was refused: {e}").into());
    }
    let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
        return PeerIdentity::Anonymous("the client certificate does not parse".into());
    };
    let name = cert
        .valid_uri_names()
        .next()
        .or_else(|| cert.valid_dns_names().next());
    match name {
        Some(name) => PeerIdentity::Certified(name.into()),
        None => {
            PeerIdentity::Anonymous("the client certificate names no URI or DNS identity".into())
        }
    }
}

/// The three files' contents and their SHA-256.
fn read_all(files: &config::Tls) -> Result<([Vec<u8>; 3], [u8; 32]), TlsError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })
    };
    let bytes = [
        read(&files.cert)?,
        read(&files.key)?,
        read(&files.client_ca)?,
    ];
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for b in &bytes {
        ctx.update(&(b.len() as u64).to_le_bytes());
        ctx.update(b);
    }
    let digest = ctx.finish().as_ref().try_into().expect("32 bytes");
    Ok((bytes, digest))
}

/// A server configuration from the files' contents.
fn build(files: &config::Tls, [cert, key, ca]: &[Vec<u8>; 3]) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, e))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert, "no PEM certificate"));
    }
    if let Some(problem) = end_entity_problem(&chain[0]) {
        return Err(invalid(&files.cert, problem));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| invalid(&files.key, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca_cert in CertificateDer::pem_slice_iter(ca) {
        let ca_cert = ca_cert.map_err(|e| invalid(&files.client_ca, e))?;
        roots
            .add(ca_cert)
            .map_err(|e| invalid(&files.client_ca, e))?;
    }
    if roots.is_empty() {
        return Err(invalid(&files.client_ca, "no PEM certificate"));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid(&files.client_ca, e))?;
    let mut http = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&files.cert, e))?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| invalid(&files.key, e))?;
    http.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&files.cert, e))?
        .with_client_cert_verifier(Arc::new(AfterHandshake(verifier.clone())))
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&files.key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        http: Arc::new(http),
        verifier,
    })
}

/// Asks for a client certificate and checks the client's signature with
/// it, but leaves the chain to [`identify`] after the handshake.
#[derive(Debug)]
struct AfterHandshake(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for AfterHandshake {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
