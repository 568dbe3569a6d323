//! Signed read tokens (FORMAT.md, "Signed read tokens"): what a URL of the
//! HTTP listener carries to name one object (or one range of it) until an
//! expiry, sealed so that it can neither be forged nor read.
//!
//! A token is `base64url(header || AES-256-GCM-SIV(key, nonce, grant,
//! aad))` without padding: the header is the format version, the master
//! version whose token key sealed it, and a random 96-bit nonce; the AAD
//! binds the deployment and the header. The grant (expiry, range, etag,
//! pseudonym, space, object id) is encrypted, so many URLs say nothing of
//! whose objects they name, and GCM-SIV keeps a repeated random nonce
//! from costing the key. Opening never panics and fails one opaque way
//! ([`CryptoError::DecryptionFailed`]) for a foreign, changed or malformed
//! token.

use super::aead::{AesGcm, NONCE_LEN, TAG_LEN};
use super::{CryptoError, Kek, Pseudonym};

/// The token format this build writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// Bytes of an object's etag in a grant.
pub const ETAG_LEN: usize = 16;
/// Longest token text accepted (base64url characters): a space of 255
/// bytes and an object id of 1,024 fit with room to spare.
pub const MAX_TOKEN_CHARS: usize = 2048;
/// Bytes before the sealed grant: version, key version, nonce.
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Bytes of a grant before its space and object id.
const GRANT_FIXED_LEN: usize = 8 + 1 + 8 + 8 + ETAG_LEN + 32 + 1;
/// The AAD's label.
const AAD_LABEL: &[u8] = b"sealgate/v1/read-token\0";

/// What a token grants: a read of one object, as it was when the token
/// was made (its etag), whole or one range, until an expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadGrant {
    /// Unix seconds after which the token is refused.
    pub expires_at_s: u64,
    /// Plaintext bytes `start..end` of the object; `None`: all of it.
    pub range: Option<(u64, u64)>,
    /// The object's etag when the token was made (16 bytes).
    pub etag: [u8; ETAG_LEN],
    /// The owner's pseudonym.
    pub pseudonym: Pseudonym,
    /// The object's space.
    pub space: String,
    /// The object's id.
    pub object_id: String,
}

/// A token key: AES-256-GCM-SIV under one master version's token secret.
pub struct TokenKey(AesGcm);

impl TokenKey {
    /// The key of a token secret.
    ///
    /// # Errors
    /// Never for a 32-byte secret (every [`Kek`] is one).
    pub fn new(secret: &Kek) -> Result<Self, CryptoError> {
        AesGcm::new_siv(secret.expose_for_kms()).map(Self)
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

fn aad(deployment: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + deployment.len() + 1 + header.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(deployment.as_bytes());
    aad.push(0);
    aad.extend_from_slice(header);
    aad
}

impl ReadGrant {
    /// The grant's plaintext encoding.
    fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let space = u8::try_from(self.space.len()).map_err(|_| CryptoError::Malformed)?;
        let mut out = Vec::with_capacity(GRANT_FIXED_LEN + self.space.len() + self.object_id.len());
        out.extend_from_slice(&self.expires_at_s.to_be_bytes());
        let (flag, (start, end)) = match self.range {
            Some(r) => (1u8, r),
            None => (0u8, (0, 0)),
        };
        out.push(flag);
        out.extend_from_slice(&start.to_be_bytes());
        out.extend_from_slice(&end.to_be_bytes());
        out.extend_from_slice(&self.etag);
        out.extend_from_slice(self.pseudonym.as_bytes());
        out.push(space);
        out.extend_from_slice(self.space.as_bytes());
        out.extend_from_slice(self.object_id.as_bytes());
        Ok(out)
    }

    /// Parses a grant's plaintext.
    fn decode(b: &[u8]) -> Result<Self, CryptoError> {
        if b.len() < GRANT_FIXED_LEN {
            return Err(CryptoError::Malformed);
        }
        let u64_at = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_be_bytes(x)
        };
        let expires_at_s = u64_at(0);
        let range = match b[8] {
            0 if u64_at(9) == 0 && u64_at(17) == 0 => None,
            1 if u64_at(9) < u64_at(17) => Some((u64_at(9), u64_at(17))),
            _ => return Err(CryptoError::Malformed),
        };
        let mut etag = [0u8; ETAG_LEN];
        etag.copy_from_slice(&b[25..25 + ETAG_LEN]);
        let mut pseudonym = [0u8; 32];
        pseudonym.copy_from_slice(&b[41..73]);
        let space_len = usize::from(b[73]);
        let rest = &b[GRANT_FIXED_LEN..];
        if rest.len() < space_len {
            return Err(CryptoError::Malformed);
        }
        let (space, object_id) = rest.split_at(space_len);
        let text = |t: &[u8]| {
            std::str::from_utf8(t)
                .map(str::to_owned)
                .map_err(|_| CryptoError::Malformed)
        };
        Ok(Self {
            expires_at_s,
            range,
            etag,
            pseudonym: Pseudonym::from_raw(pseudonym),
            space: text(space)?,
            object_id: text(object_id)?,
        })
    }

    /// Seals the grant under `key`, master version `key_version`'s token
    /// key, for `deployment`: the token text.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for a space over 255 bytes;
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn seal(
        &self,
        key: &TokenKey,
        key_version: u32,
        deployment: &str,
    ) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        super::random_fill(&mut nonce)?;
        self.seal_with_nonce(key, key_version, deployment, nonce)
    }

    /// As [`ReadGrant::seal`] with a given nonce (FORMAT.md's vectors).
    ///
    /// # Errors
    /// As [`ReadGrant::seal`].
    pub fn seal_with_nonce(
        &self,
        key: &TokenKey,
        key_version: u32,
        deployment: &str,
        nonce: [u8; NONCE_LEN],
    ) -> Result<String, CryptoError> {
        let mut token = Vec::with_capacity(HEADER_LEN + GRANT_FIXED_LEN + 64 + TAG_LEN);
        token.push(TOKEN_VERSION);
        token.extend_from_slice(&key_version.to_be_bytes());
        token.extend_from_slice(&nonce);
        let aad = aad(deployment, &token);
        let mut body = self.encode()?;
        let tag = key.0.seal_in_place(nonce, &aad, &mut body)?;
        token.extend_from_slice(&body);
        token.extend_from_slice(&tag);
        Ok(base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token,
        ))
    }
}

/// A token's bytes, decoded from its text, not yet opened.
#[derive(Debug)]
pub struct SealedToken {
    bytes: Vec<u8>,
}

impl SealedToken {
    /// Decodes token text: base64url without padding, a known version, long
    /// enough to hold a grant.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for anything else (one opaque
    /// failure, as for a forged token).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        if text.len() > MAX_TOKEN_CHARS {
            return Err(CryptoError::DecryptionFailed);
        }
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        if bytes.len() < HEADER_LEN + GRANT_FIXED_LEN + TAG_LEN || bytes[0] != TOKEN_VERSION {
            return Err(CryptoError::DecryptionFailed);
        }
        Ok(Self { bytes })
    }

    /// The master version whose token key sealed it (not authenticated
    /// until [`SealedToken::open`] succeeds).
    pub fn key_version(&self) -> u32 {
        let mut v = [0u8; 4];
        v.copy_from_slice(&self.bytes[1..5]);
        u32::from_be_bytes(v)
    }

    /// Opens the token with its key version's `key`, for `deployment`.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for a token changed, made by
    /// another key or deployment, or holding a malformed grant.
    pub fn open(mut self, key: &TokenKey, deployment: &str) -> Result<ReadGrant, CryptoError> {
        let (header, sealed) = self.bytes.split_at_mut(HEADER_LEN);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[5..]);
        let aad = aad(deployment, header);
        let plain = key.0.open_in_place(nonce, &aad, sealed)?;
        ReadGrant::decode(plain).map_err(|_| CryptoError::DecryptionFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> ReadGrant {
        ReadGrant {
            expires_at_s: 1_780_000_000,
            range: Some((100, 2_000)),
            etag: [7; ETAG_LEN],
            pseudonym: Pseudonym::from_raw([9; 32]),
            space: "moments".into(),
            object_id: "photos/2026/cat.jpg".into(),
        }
    }

    fn key() -> TokenKey {
        TokenKey::new(&Kek::generate().unwrap()).unwrap()
    }

    #[test]
    fn a_token_opens_to_its_grant_and_only_under_its_key_and_deployment() {
        let k = key();
        let token = grant().seal(&k, 3, "dep-1").unwrap();
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let sealed = SealedToken::parse(&token).unwrap();
        assert_eq!(sealed.key_version(), 3);
        assert_eq!(sealed.open(&k, "dep-1").unwrap(), grant());
        let other = SealedToken::parse(&token).unwrap().open(&key(), "dep-1");
        assert_eq!(other.unwrap_err(), CryptoError::DecryptionFailed);
        let foreign = SealedToken::parse(&token).unwrap().open(&k, "dep-2");
        assert_eq!(foreign.unwrap_err(), CryptoError::DecryptionFailed);
        let whole = ReadGrant {
            range: None,
            ..grant()
        };
        let t = whole.seal(&k, 3, "dep-1").unwrap();
        assert_eq!(
            SealedToken::parse(&t).unwrap().open(&k, "dep-1").unwrap(),
            whole
        );
    }

    #[test]
    fn every_changed_character_is_refused() {
        let k = key();
        let token = grant().seal(&k, 1, "d").unwrap();
        for i in 0..token.len() {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            let opened = SealedToken::parse(&t).and_then(|s| s.open(&k, "d"));
            assert!(opened.is_err(), "changed at {i}");
        }
        for bad in ["", "AAAA", "%%%", &"A".repeat(MAX_TOKEN_CHARS + 1)] {
            assert!(SealedToken::parse(bad).is_err());
        }
    }

    #[test]
    fn two_tokens_of_one_grant_share_nothing_but_their_version() {
        let k = key();
        let a = grant().seal(&k, 1, "d").unwrap();
        let b = grant().seal(&k, 1, "d").unwrap();
        assert_ne!(a, b);
        // Version and key version (5 bytes: the first 6 characters hold
        // them and two bits of the nonce).
        assert_eq!(a[..6], b[..6]);
    }
}
