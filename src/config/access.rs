//! The sections of who may call: `[tls]` (the server's certificate and the
//! CA of client certificates) and `[[principals]]` (certificate identities
//! and their roles). They name files and identities only: this file must
//! never read a certificate or decide a call (`api::auth` authorizes by the
//! principals these become).

use std::path::PathBuf;

use serde::Deserialize;

use crate::identity::Role;

/// `[tls]`: the files are re-read when they change on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// The CA certificates (PEM) that sign client certificates; callers
    /// are identified by their certificates.
    pub client_ca: PathBuf,
}

/// `[[principals]]`: a certificate identity (a URI SAN such as
/// `spiffe://app/moments-backend`, or a DNS SAN) and its roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The identity.
    pub id: String,
    /// `content`, `erasure`, `legal`, `ops`.
    pub roles: Vec<Role>,
    /// The spaces the `content` role covers.
    #[serde(default)]
    pub spaces: Vec<String>,
}
