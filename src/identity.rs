//! Identity: the roles a caller may hold and the principals that hold them,
//! as `[[principals]]` names them. The configuration parses into these, the
//! gRPC adapters authorize by them, and any domain service may read them.
//!
//! Pure types: this module does no I/O, has no async, knows nothing of
//! gRPC, TLS or SQL, and imports nothing else of the crate.

use serde::Deserialize;

/// A role a principal may hold (`[[principals]].roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// ContentService, in the principal's spaces.
    Content,
    /// ErasureService.
    Erasure,
    /// LegalHoldService.
    Legal,
    /// KeyAdminService and AuditService.
    Ops,
}

impl Role {
    /// The role as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Content => "content",
            Self::Erasure => "erasure",
            Self::Legal => "legal",
            Self::Ops => "ops",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured principal: an identity and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The certificate identity (`spiffe://app/moments-backend`, a DNS name).
    pub id: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// The spaces its `content` role covers.
    pub spaces: Vec<String>,
}
