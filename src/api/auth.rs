//! Authorization: who is calling and what it may do.
//!
//! The transport puts a [`Peer`] in every request's extensions: the local
//! caller of a plaintext loopback listener, or the identity of a verified
//! client certificate (its URI SAN, else its DNS SAN), or why there is none.
//! One tower layer, [`Authorize`], sits in front of every service: it finds
//! the role the called service needs ([`access`]), refuses the call
//! (UNAUTHENTICATED `NO_CLIENT_CERTIFICATE`, PERMISSION_DENIED
//! `ROLE_REQUIRED`) or puts the [`Caller`] in the request's extensions.
//! Content adapters then check every space a request names with
//! [`Caller::check_space`] (PERMISSION_DENIED `SPACE_NOT_ALLOWED`), before
//! any other validation, so a caller learns nothing of spaces it may not use.
//!
//! Health and reflection are open. A service this module does not know
//! needs an authenticated caller; every sealgate service is listed in
//! [`access`] (a test checks that against the descriptor set).
//!
//! Every refusal is an audit event on the target `sealgate::audit`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::future::Future;
use std::pin::Pin;

use futures_util::future::Either;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::Status;

use crate::audit::AuditTrail;
use crate::error::{Error, Reason};

// Roles and principals are domain types (`crate::identity`); they are
// named here too, where authorization has always found them.
pub use crate::identity::{Principal, Role};

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health and reflection.
    Open,
    /// A caller holding this role.
    Role(Role),
    /// A caller holding any of these roles; the service decides per call
    /// which one a request needs ([`Caller::require`]).
    AnyRole(&'static [Role]),
    /// Any authenticated caller (a service this module does not know: the
    /// router answers UNIMPLEMENTED).
    Authenticated,
}

/// The access a gRPC method path (`/package.Service/Method`) needs, by its
/// service.
pub fn access(path: &str) -> Access {
    let service = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map_or("", |(service, _)| service);
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Access::Open,
        "sealgate.v1.ContentService" => Access::Role(Role::Content),
        "sealgate.v1.ErasureService" => Access::Role(Role::Erasure),
        "sealgate.v1.LegalHoldService" => Access::Role(Role::Legal),
        "sealgate.v1.KeyAdminService" | "sealgate.v1.AuditService" => Access::Role(Role::Ops),
        // The own copy needs content, a disclosure legal (api::export).
        "sealgate.v1.ExportService" => Access::AnyRole(&[Role::Content, Role::Legal]),
        _ => Access::Authenticated,
    }
}

/// Who is at the other end of a connection, as the transport established
/// it. In every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The remote address.
    pub addr: Option<SocketAddr>,
    /// Its identity.
    pub identity: PeerIdentity,
}

/// The identity of a connection.
#[derive(Debug, Clone)]
pub enum PeerIdentity {
    /// A plaintext loopback connection: the local caller holds every role.
    Local,
    /// A TLS client certificate that chains to the client CA, valid now,
    /// naming this identity (URI SAN, else DNS SAN).
    Certified(Arc<str>),
    /// A TLS connection without a valid client certificate: why.
    Anonymous(Arc<str>),
}

/// The principals by identity.
#[derive(Debug, Default)]
pub struct Policy {
    principals: HashMap<String, Arc<Principal>>,
}

impl Policy {
    /// A policy of these principals (identities unique: the configuration
    /// checks that).
    pub fn new(principals: impl IntoIterator<Item = Principal>) -> Self {
        Self {
            principals: principals
                .into_iter()
                .map(|p| (p.id.clone(), Arc::new(p)))
                .collect(),
        }
    }

    /// The caller of a call to `path` from `peer`, if it may make it.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] without a valid certificate,
    /// [`Error::PermissionDenied`] (`ROLE_REQUIRED`) without the role.
    pub fn authorize(
        &self,
        path: &str,
        peer: Option<&Peer>,
        audit: Option<&Arc<AuditTrail>>,
    ) -> Result<Option<Caller>, Error> {
        let access = access(path);
        if access == Access::Open {
            return Ok(None);
        }
        let kind = match peer.map(|p| &p.identity) {
            Some(PeerIdentity::Local) => CallerKind::Local,
            Some(PeerIdentity::Certified(id)) => match self.principals.get(&**id) {
                Some(p) => CallerKind::Principal(p.clone()),
                None => CallerKind::Unknown(id.clone()),
            },
            Some(PeerIdentity::Anonymous(why)) => {
                return Err(Error::Unauthenticated(format!(
                    "a valid client certificate is required: {why}"
                )))
            }
            None => {
                return Err(Error::Unauthenticated(
                    "a valid client certificate is required".into(),
                ))
            }
        };
        let caller = Caller {
            kind,
            audit: audit.cloned(),
        };
        let needed: &[Role] = match &access {
            Access::Role(role) => std::slice::from_ref(role),
            Access::AnyRole(roles) => roles,
            Access::Open | Access::Authenticated => &[],
        };
        if !needed.is_empty() && !needed.iter().any(|r| caller.has_role(*r)) {
            let role = needed
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ");
            let message = match &caller.kind {
                CallerKind::Unknown(id) => format!(
                    "identity {id} has no [[principals]] entry, so it holds no role (this call needs {role})"
                ),
                _ => format!("{} does not hold the role {role}", caller.name()),
            };
            return Err(Error::PermissionDenied {
                reason: Reason::RoleRequired,
                message,
            });
        }
        Ok(Some(caller))
    }
}

/// The authorized caller of one call; in the request's extensions.
#[derive(Clone)]
pub struct Caller {
    kind: CallerKind,
    /// Where its refusals are recorded.
    audit: Option<Arc<AuditTrail>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Caller").field(&self.kind).finish()
    }
}

#[derive(Debug, Clone)]
enum CallerKind {
    Local,
    Principal(Arc<Principal>),
    /// A verified identity that no principal names: holds no role.
    Unknown(Arc<str>),
}

impl Caller {
    /// The caller's name in logs and audit records: `local` or the
    /// certificate identity.
    pub fn name(&self) -> &str {
        match &self.kind {
            CallerKind::Local => "local",
            CallerKind::Principal(p) => &p.id,
            CallerKind::Unknown(id) => id,
        }
    }

    fn has_role(&self, role: Role) -> bool {
        match &self.kind {
            CallerKind::Local => true,
            CallerKind::Principal(p) => p.roles.contains(&role),
            CallerKind::Unknown(_) => false,
        }
    }

    /// Whether the caller holds `role`.
    pub fn holds(&self, role: Role) -> bool {
        self.has_role(role)
    }

    /// Fails unless the caller holds `role`, for a service that several
    /// roles may call ([`Access::AnyRole`]); `what` names the request in
    /// the refusal.
    ///
    /// # Errors
    /// PERMISSION_DENIED (`ROLE_REQUIRED`), recorded in the audit trail
    /// before it returns.
    pub async fn require(&self, role: Role, what: &str) -> Result<(), Error> {
        if self.has_role(role) {
            return Ok(());
        }
        let e = Error::PermissionDenied {
            reason: Reason::RoleRequired,
            message: format!(
                "{what} needs the role {role}, which {} does not hold",
                self.name()
            ),
        };
        record_denial(self.audit.as_deref(), self.name(), what, &e).await;
        Err(e)
    }

    /// Whether the caller may use `space`, as [`Caller::check_space`]
    /// decides, without recording anything: for a call that covers every
    /// space the caller may use.
    pub fn may_use_space(&self, space: &str) -> bool {
        match &self.kind {
            CallerKind::Local => true,
            CallerKind::Principal(p) => p.spaces.iter().any(|s| s == space),
            CallerKind::Unknown(_) => false,
        }
    }

    /// The caller of a request, as [`Authorize`] put it there.
    ///
    /// # Errors
    /// PERMISSION_DENIED (`ROLE_REQUIRED`) if none is there: a service
    /// served without the layer refuses every call.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, Error> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Error::PermissionDenied {
                reason: Reason::RoleRequired,
                message: "no authorized caller".into(),
            })
    }

    /// Whether the caller may use `space` (its content role covers it).
    ///
    /// # Errors
    /// PERMISSION_DENIED (`SPACE_NOT_ALLOWED`), recorded in the audit trail
    /// before it returns.
    pub async fn check_space(&self, space: &str) -> Result<(), Error> {
        let allowed = match &self.kind {
            CallerKind::Local => true,
            CallerKind::Principal(p) => p.spaces.iter().any(|s| s == space),
            CallerKind::Unknown(_) => false,
        };
        if allowed {
            return Ok(());
        }
        let e = Error::PermissionDenied {
            reason: Reason::SpaceNotAllowed,
            message: format!(
                "{} may not use the space {}",
                self.name(),
                crate::error::quote(space)
            ),
        };
        record_denial(
            self.audit.as_deref(),
            self.name(),
            &format!("space {}", crate::error::quote(space)),
            &e,
        )
        .await;
        Err(e)
    }
}

/// Records a refusal in the audit trail. The call is refused whether or
/// not the record could be written; a record that could not is logged.
async fn record_denial(audit: Option<&AuditTrail>, principal: &str, what: &str, e: &Error) {
    let Some(audit) = audit else { return };
    if let Err(err) = audit.denied(principal, what, e.reason()).await {
        tracing::error!(error = %err, principal, what, "cannot record a refused call in the audit trail");
    }
}

/// The layer that authorizes every call (see the module docs).
#[derive(Clone)]
pub struct AuthorizeLayer {
    policy: Arc<Policy>,
    audit: Arc<AuditTrail>,
}

impl AuthorizeLayer {
    /// Authorizes by `policy`, recording refusals in `audit`.
    pub fn new(policy: Arc<Policy>, audit: Arc<AuditTrail>) -> Self {
        Self { policy, audit }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: self.policy.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// The service [`AuthorizeLayer`] builds.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Arc<Policy>,
    audit: Arc<AuditTrail>,
}

impl<S, B> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let peer = request.extensions().get::<Peer>();
        match self.policy.authorize(path, peer, Some(&self.audit)) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Either::Left(self.inner.call(request))
            }
            Err(e) => {
                let principal = match peer.map(|p| &p.identity) {
                    Some(PeerIdentity::Certified(id)) => id.to_string(),
                    Some(PeerIdentity::Local) => "local".into(),
                    _ => "anonymous".into(),
                };
                let (audit, path) = (self.audit.clone(), path.to_string());
                Either::Right(Box::pin(async move {
                    record_denial(Some(&audit), &principal, &path, &e).await;
                    Ok(Status::from(e).into_http())
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts of `google.protobuf.FileDescriptorSet` this test reads.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileSet {
        #[prost(message, repeated, tag = "1")]
        file: Vec<File>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct File {
        #[prost(string, optional, tag = "2")]
        package: Option<String>,
        #[prost(message, repeated, tag = "6")]
        service: Vec<Service>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Service {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
    }

    #[test]
    fn every_sealgate_service_needs_a_role() {
        use prost::Message;
        let set = FileSet::decode(super::super::pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut seen = 0;
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let path = format!("/{package}.{}/X", service.name.unwrap_or_default());
                assert!(
                    matches!(access(&path), Access::Role(_) | Access::AnyRole(_)),
                    "{path} has no role in auth::access"
                );
                seen += 1;
            }
        }
        assert!(seen >= 3);
    }

    #[test]
    fn health_and_reflection_are_open() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            access("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
        assert_eq!(access("/other.Service/Method"), Access::Authenticated);
        assert_eq!(access("garbage"), Access::Authenticated);
    }
}
