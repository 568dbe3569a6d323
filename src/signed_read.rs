//! Signed reads: tokens that let an HTTP client (a CDN pulling for a
//! phone) read one object, or one range of it, until an expiry, without a
//! gRPC identity; and their checking when a URL is requested.
//!
//! [`SignedReads::sign`] reads the object's header (so a link is only made
//! for an object the caller could read now, and binds its etag) and seals
//! a [`ReadGrant`] (FORMAT.md, "Signed read tokens") under the read-token
//! key of the current master version: a secret bound to that version
//! ([`MasterSecrets`], purpose `read_token_key:`), so the keys rotate with
//! the master key, older ones keep opening their tokens, and retiring a
//! master version refuses every token its key made.
//!
//! [`SignedReads::open`] undoes it: a token that does not open (changed,
//! another deployment's, a key gone) is [`Refused::Forged`], one past its
//! expiry [`Refused::Expired`]; otherwise the object it names, read then as
//! any read is (erasure, restriction, deletion, the etag).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::content::{ByteRange, Content, ObjectInfo, ObjectRef};
use crate::crypto::token::{ReadGrant, SealedToken, TokenKey, ETAG_LEN};
use crate::error::{Error, Reason};
use crate::keys::master::secrets::{MasterSecrets, READ_TOKEN_KEYS};
use crate::keys::KeyError;

/// The path of a signed read: `/v1/o/` and the token.
pub const PATH_PREFIX: &str = "/v1/o/";

/// A link made by [`SignedReads::sign`].
#[derive(Debug, Clone)]
pub struct SignedLink {
    /// `/v1/o/{token}`.
    pub path: String,
    /// When the token stops being accepted, Unix seconds.
    pub expires_at_s: u64,
    /// The etag of the object it names.
    pub etag: String,
}

/// Why a token is refused before any object is read (HTTP 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Changed, made by another deployment, malformed, or made by a key
    /// that is gone (its master version retired).
    Forged,
    /// Past its expiry.
    Expired,
}

/// A token opened: the object it names and what it grants.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The object.
    pub object: ObjectRef,
    /// The grant.
    pub grant: ReadGrant,
}

impl Opened {
    /// Whether `info` is the object the token was made for (not replaced
    /// or rewrapped since).
    pub fn names(&self, info: &ObjectInfo) -> bool {
        let mut etag = [0u8; ETAG_LEN];
        hex::decode_to_slice(&info.etag, &mut etag).is_ok() && etag == self.grant.etag
    }
}

/// Makes and checks signed read tokens.
pub struct SignedReads {
    content: Arc<Content>,
    secrets: MasterSecrets,
    /// `http.max_ttl_seconds`.
    max_ttl: Duration,
    /// Unwrapped token keys by master version.
    keys: Mutex<HashMap<u32, Arc<TokenKey>>>,
}

impl SignedReads {
    /// Links to `content`'s objects, keys from `secrets`, lifetimes up to
    /// `max_ttl`.
    pub fn new(content: Arc<Content>, secrets: MasterSecrets, max_ttl: Duration) -> Self {
        Self {
            content,
            secrets,
            max_ttl,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The purpose of the secrets [`SignedReads`] takes.
    pub fn purpose() -> &'static crate::keys::master::secrets::Purpose {
        &READ_TOKEN_KEYS
    }

    /// The longest lifetime of a token.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// A link reading `obj` (`range`: only those bytes) for `ttl`
    /// (`None`: the longest allowed).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a ttl past `http.max_ttl_seconds` or
    /// a bad range; [`Error::OutOfRange`] for a range starting past the
    /// end; as [`Content::head`] (not found, erased, restricted).
    pub async fn sign(
        &self,
        obj: &ObjectRef,
        range: Option<ByteRange>,
        ttl: Option<Duration>,
        now_s: u64,
    ) -> Result<SignedLink, Error> {
        let ttl = ttl.unwrap_or(self.max_ttl);
        if ttl > self.max_ttl {
            return Err(Error::invalid(
                Reason::InvalidRequest,
                "ttl_seconds",
                format!(
                    "ttl_seconds {} is longer than http.max_ttl_seconds ({})",
                    ttl.as_secs(),
                    self.max_ttl.as_secs()
                ),
            ));
        }
        if let Some(r) = range {
            r.check()?;
        }
        let info = self.content.head(obj).await?;
        let range = match range {
            None => None,
            Some(r) => {
                r.check_start(info.size)?;
                Some((r.start, r.end.map_or(info.size, |e| e.min(info.size))))
            }
        };
        let mut etag = [0u8; ETAG_LEN];
        hex::decode_to_slice(&info.etag, &mut etag)
            .map_err(|_| Error::Internal("an etag that is not 16 hex bytes".into()))?;
        let expires_at_s = now_s + ttl.as_secs();
        let grant = ReadGrant {
            expires_at_s,
            range,
            etag,
            pseudonym: *obj.pseudonym(),
            space: info.space.clone(),
            object_id: info.object_id.clone(),
        };
        let (version, key) = self.current_key().await?;
        let deployment = self.deployment_id().await?;
        let token = grant
            .seal(&key, version, deployment)
            .map_err(|e| Error::Internal(format!("read token: {e}")))?;
        Ok(SignedLink {
            path: format!("{PATH_PREFIX}{token}"),
            expires_at_s,
            etag: info.etag,
        })
    }

    /// Opens `token` (the path's last segment) at `now_s`.
    ///
    /// # Errors
    /// `Ok(Err(refused))` for a token refused; `Err` for a failure to
    /// check it (the key store or KMS down: not the token's fault).
    pub async fn open(&self, token: &str, now_s: u64) -> Result<Result<Opened, Refused>, Error> {
        let Ok(sealed) = SealedToken::parse(token) else {
            return Ok(Err(Refused::Forged));
        };
        let version = sealed.key_version();
        let Some(key) = self.key(version).await? else {
            return Ok(Err(Refused::Forged));
        };
        let deployment = self.deployment_id().await?;
        let Ok(grant) = sealed.open(&key, deployment) else {
            return Ok(Err(Refused::Forged));
        };
        if now_s >= grant.expires_at_s {
            return Ok(Err(Refused::Expired));
        }
        // A token for a space no longer configured, or an id the naming
        // rules refuse now, cannot be read: as forged (it names nothing).
        let Ok(object) =
            self.content
                .object_ref_for(&grant.pseudonym, &grant.space, &grant.object_id)
        else {
            return Ok(Err(Refused::Forged));
        };
        Ok(Ok(Opened { object, grant }))
    }

    /// The token key of the current master version (made on first use).
    async fn current_key(&self) -> Result<(u32, Arc<TokenKey>), Error> {
        let version = self.secrets.current_version();
        if let Some(key) = self.lock_keys().get(&version) {
            return Ok((version, key.clone()));
        }
        let secret = self.secrets.current(&|_| Ok((String::new(), None))).await?;
        Ok((secret.version, self.key_of(secret.version, &secret.secret)?))
    }

    /// The token key of master `version`; `None` if the version is retired
    /// (or never had one).
    async fn key(&self, version: u32) -> Result<Option<Arc<TokenKey>>, Error> {
        if !self.secrets.holds_version(version) {
            self.lock_keys().remove(&version);
            return Ok(None);
        }
        if let Some(key) = self.lock_keys().get(&version) {
            return Ok(Some(key.clone()));
        }
        match self.secrets.get(version).await {
            Ok(Some(secret)) => Ok(Some(self.key_of(version, &secret.secret)?)),
            Ok(None) => Ok(None),
            // The version went between the check and the unwrap.
            Err(KeyError::KeyRetired(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn key_of(&self, version: u32, secret: &crate::crypto::Kek) -> Result<Arc<TokenKey>, Error> {
        let mut keys = self.lock_keys();
        if let Some(key) = keys.get(&version) {
            return Ok(key.clone());
        }
        let key = Arc::new(
            TokenKey::new(secret).map_err(|e| Error::Internal(format!("token key: {e}")))?,
        );
        keys.insert(version, key.clone());
        Ok(key)
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<TokenKey>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn deployment_id(&self) -> Result<&str, Error> {
        Ok(self.secrets.deployment_id().await?)
    }
}
