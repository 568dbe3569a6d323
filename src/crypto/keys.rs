//! Key types of the hierarchy: master key, KEK (shard key), user key, DEK,
//! naming key, and their wrapped forms.
//!
//! Every secret lives in a heap box that is zeroized on drop, has no `Clone`
//! unless rotation needs it, and prints as `Type(..)` in `Debug`. A [`Dek`],
//! [`Kek`] or [`UserKey`] can only be generated or unwrapped (a KEK also by
//! a KMS: [`Kek::unwrapped_by_kms`]): there is no other constructor from
//! bytes, so a key cannot be forged out of a buffer by accident. Master and naming keys are loaded from a keyring and therefore
//! do have one.
//!
//! Every wrapped key is bound to its place by its AAD ([`kek_aad`]: shard
//! and KEK version; [`user_key_aad`]: pseudonym, user-key version, shard
//! and KEK version), so a wrapped key moved to another row does not unwrap.

use std::fmt;
use std::marker::PhantomData;

use zeroize::Zeroize;

use super::aead::{KEY_LEN, NONCE_LEN, TAG_LEN};
use super::suite::Suite;
use super::CryptoError;

/// Length of a wrapped 256-bit key: nonce, ciphertext, tag.
pub const WRAPPED_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Length of a key check value ([`MasterKey::check_value`]).
pub const CHECK_LEN: usize = 16;

/// Domain separation of key check values, apart from every pseudonym's
/// (`sealgate/v1/pseudonym\0`). Do not change: the key store records them.
const CHECK_LABEL: &[u8] = b"sealgate/v1/key-check\0";

/// 256 bits of key material, zeroized on drop.
struct Secret(Box<[u8; KEY_LEN]>);

impl Secret {
    fn generate() -> Result<Self, CryptoError> {
        let mut s = Secret(Box::new([0u8; KEY_LEN]));
        super::random_fill(&mut s.0[..])?;
        Ok(s)
    }

    fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidKeySize);
        }
        let mut s = Secret(Box::new([0u8; KEY_LEN]));
        s.0.copy_from_slice(bytes);
        Ok(s)
    }

    /// Key wrap: `nonce || AEAD(self, nonce, aad, secret)` with a fresh
    /// random 96-bit nonce, in `suite` ([`Suite::wrapping_aead`]).
    fn wrap(
        &self,
        suite: Suite,
        secret: &Secret,
        aad: &[u8],
    ) -> Result<[u8; WRAPPED_LEN], CryptoError> {
        let mut out = [0u8; WRAPPED_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        super::random_fill(&mut nonce)?;
        out[..NONCE_LEN].copy_from_slice(&nonce);
        out[NONCE_LEN..NONCE_LEN + KEY_LEN].copy_from_slice(&secret.0[..]);
        let tag = suite.wrapping_aead(&self.0[..])?.seal_in_place(
            nonce,
            aad,
            &mut out[NONCE_LEN..NONCE_LEN + KEY_LEN],
        )?;
        out[NONCE_LEN + KEY_LEN..].copy_from_slice(&tag);
        Ok(out)
    }

    /// `HMAC-SHA-256(self, CHECK_LABEL || role)`, the first 16 bytes: a
    /// value that tells two keys apart and reveals nothing of either.
    fn check_value(&self, role: &[u8]) -> [u8; CHECK_LEN] {
        use aws_lc_rs::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0[..]);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(CHECK_LABEL);
        ctx.update(role);
        let tag = ctx.sign();
        let mut out = [0u8; CHECK_LEN];
        out.copy_from_slice(&tag.as_ref()[..CHECK_LEN]);
        out
    }

    fn unwrap(
        &self,
        suite: Suite,
        wrapped: &[u8; WRAPPED_LEN],
        aad: &[u8],
    ) -> Result<Secret, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[..NONCE_LEN]);
        let mut buf = [0u8; KEY_LEN + TAG_LEN];
        buf.copy_from_slice(&wrapped[NONCE_LEN..]);
        let result = suite
            .wrapping_aead(&self.0[..])?
            .open_in_place(nonce, aad, &mut buf)
            .and_then(|plain| Secret::from_slice(plain));
        buf.zeroize();
        result
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// A key wrapped under the next key up the hierarchy. `K` names what is
/// inside, so a wrapped DEK cannot be unwrapped as a user key.
pub struct Wrapped<K> {
    bytes: [u8; WRAPPED_LEN],
    _kind: PhantomData<K>,
}

/// A DEK wrapped under a user key (the core of an object's key slot).
pub type WrappedDek = Wrapped<Dek>;

impl<K> Wrapped<K> {
    /// Parses stored bytes.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] unless `bytes` has [`WRAPPED_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes = bytes.try_into().map_err(|_| CryptoError::Malformed)?;
        Ok(Self {
            bytes,
            _kind: PhantomData,
        })
    }

    /// The stored form.
    pub fn as_bytes(&self) -> &[u8; WRAPPED_LEN] {
        &self.bytes
    }

    fn new(bytes: [u8; WRAPPED_LEN]) -> Self {
        Self {
            bytes,
            _kind: PhantomData,
        }
    }
}

impl<K> Clone for Wrapped<K> {
    fn clone(&self) -> Self {
        Self::new(self.bytes)
    }
}

impl<K> PartialEq for Wrapped<K> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl<K> Eq for Wrapped<K> {}

impl<K> fmt::Debug for Wrapped<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Wrapped keys are not secret, but they are noise in logs.
        write!(
            f,
            "Wrapped<{}>(..)",
            std::any::type_name::<K>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
        )
    }
}

macro_rules! opaque_debug {
    ($ty:ident) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), "(..)"))
            }
        }
    };
}

/// A version of the master key: wraps KEKs. Lives in the local keyring file
/// or behind a KMS.
pub struct MasterKey(Secret);
opaque_debug!(MasterKey);

impl MasterKey {
    /// A new random master key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn generate() -> Result<Self, CryptoError> {
        Secret::generate().map(Self)
    }

    /// Loads a master key from keyring bytes.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless `bytes` is 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Secret::from_slice(bytes).map(Self)
    }

    /// The raw key, for writing the keyring file only.
    pub fn expose_for_keyring(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }

    /// The key's check value: `HMAC-SHA-256(key, "sealgate/v1/key-check\0"
    /// || "master")`, first 16 bytes. The key store records it so that a
    /// keyring holding another key under the same version is refused.
    pub fn check_value(&self) -> [u8; CHECK_LEN] {
        self.0.check_value(b"master")
    }

    /// Wraps a KEK; `aad` binds it to its shard and version.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn wrap_kek(&self, kek: &Kek, aad: &[u8]) -> Result<Wrapped<Kek>, CryptoError> {
        self.wrap_kek_in(Suite::Aes256Gcm, kek, aad)
    }

    /// [`MasterKey::wrap_kek`] in `suite` (the deployment's key suite).
    ///
    /// # Errors
    /// As [`MasterKey::wrap_kek`].
    pub fn wrap_kek_in(
        &self,
        suite: Suite,
        kek: &Kek,
        aad: &[u8],
    ) -> Result<Wrapped<Kek>, CryptoError> {
        self.0.wrap(suite, &kek.0, aad).map(Wrapped::new)
    }

    /// Unwraps a KEK (suite 1).
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for a wrong master key or AAD.
    pub fn unwrap_kek(&self, wrapped: &Wrapped<Kek>, aad: &[u8]) -> Result<Kek, CryptoError> {
        self.unwrap_kek_in(Suite::Aes256Gcm, wrapped, aad)
    }

    /// [`MasterKey::unwrap_kek`] in `suite`.
    ///
    /// # Errors
    /// As [`MasterKey::unwrap_kek`].
    pub fn unwrap_kek_in(
        &self,
        suite: Suite,
        wrapped: &Wrapped<Kek>,
        aad: &[u8],
    ) -> Result<Kek, CryptoError> {
        self.0.unwrap(suite, &wrapped.bytes, aad).map(Kek)
    }
}

/// A key-encryption key: one version of one shard's key. Wraps user keys.
pub struct Kek(Secret);
opaque_debug!(Kek);

impl Kek {
    /// A new random KEK.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn generate() -> Result<Self, CryptoError> {
        Secret::generate().map(Self)
    }

    /// The raw key, to hand to a KMS that wraps it (KMS Encrypt): the only
    /// way a KEK leaves the process's memory, and only over TLS to the KMS.
    pub fn expose_for_kms(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }

    /// A KEK a KMS unwrapped (KMS Decrypt's plaintext): the KMS did the
    /// authenticated decryption, so this is an unwrap, not a constructor
    /// from arbitrary bytes. The caller zeroizes `plaintext` afterwards.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless `plaintext` is 32 bytes.
    pub fn unwrapped_by_kms(plaintext: &[u8]) -> Result<Self, CryptoError> {
        Secret::from_slice(plaintext).map(Self)
    }

    /// Wraps a user key; `aad` binds it to its pseudonym and version.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn wrap_user_key(
        &self,
        key: &UserKey,
        aad: &[u8],
    ) -> Result<Wrapped<UserKey>, CryptoError> {
        self.wrap_user_key_in(Suite::Aes256Gcm, key, aad)
    }

    /// [`Kek::wrap_user_key`] in `suite` (the deployment's key suite).
    ///
    /// # Errors
    /// As [`Kek::wrap_user_key`].
    pub fn wrap_user_key_in(
        &self,
        suite: Suite,
        key: &UserKey,
        aad: &[u8],
    ) -> Result<Wrapped<UserKey>, CryptoError> {
        self.0.wrap(suite, &key.0, aad).map(Wrapped::new)
    }

    /// Unwraps a user key (suite 1).
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for a wrong KEK or AAD.
    pub fn unwrap_user_key(
        &self,
        wrapped: &Wrapped<UserKey>,
        aad: &[u8],
    ) -> Result<UserKey, CryptoError> {
        self.unwrap_user_key_in(Suite::Aes256Gcm, wrapped, aad)
    }

    /// [`Kek::unwrap_user_key`] in `suite`.
    ///
    /// # Errors
    /// As [`Kek::unwrap_user_key`].
    pub fn unwrap_user_key_in(
        &self,
        suite: Suite,
        wrapped: &Wrapped<UserKey>,
        aad: &[u8],
    ) -> Result<UserKey, CryptoError> {
        self.0.unwrap(suite, &wrapped.bytes, aad).map(UserKey)
    }
}

/// One version of a user's key. Wraps the DEKs of that user's objects.
pub struct UserKey(Secret);
opaque_debug!(UserKey);

impl UserKey {
    /// A new random user key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn generate() -> Result<Self, CryptoError> {
        Secret::generate().map(Self)
    }

    /// Wraps a DEK in the key slot of an object of `suite`; `identity` is
    /// the object's canonical identity encoding.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn wrap_dek(
        &self,
        suite: Suite,
        dek: &Dek,
        identity: &[u8],
    ) -> Result<WrappedDek, CryptoError> {
        self.0.wrap(suite, &dek.0, identity).map(Wrapped::new)
    }

    /// Unwraps the DEK of an object of `suite`.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for a wrong user key, suite or
    /// identity.
    pub fn unwrap_dek(
        &self,
        suite: Suite,
        wrapped: &WrappedDek,
        identity: &[u8],
    ) -> Result<Dek, CryptoError> {
        self.0.unwrap(suite, &wrapped.bytes, identity).map(Dek)
    }
}

/// A per-object data key: the C2SP input key of the object's body.
pub struct Dek(Secret);
opaque_debug!(Dek);

impl Dek {
    /// A new random DEK.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn generate() -> Result<Self, CryptoError> {
        Secret::generate().map(Self)
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0 .0[..]
    }
}

/// The stable key behind user pseudonyms. Never rotated: rotating it would
/// move every object. It carries the deployment's key suite, which picks
/// the pseudonym's MAC (HMAC-SHA-256 or HMAC-SM3) and is fixed for the
/// deployment's life for the same reason.
pub struct NamingKey(Secret, Suite);
opaque_debug!(NamingKey);

/// Domain separation for pseudonyms. Do not change: it names every object.
const PSEUDONYM_LABEL: &[u8] = b"sealgate/v1/pseudonym\0";

impl NamingKey {
    /// A new random naming key.
    ///
    /// # Errors
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn generate() -> Result<Self, CryptoError> {
        Secret::generate().map(|s| Self(s, Suite::Aes256Gcm))
    }

    /// Loads the naming key from keyring bytes (key suite 1 until
    /// [`NamingKey::for_suite`] says otherwise).
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless `bytes` is 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Secret::from_slice(bytes).map(|s| Self(s, Suite::Aes256Gcm))
    }

    /// The same key in the deployment's key suite `suite`.
    #[must_use]
    pub fn for_suite(self, suite: Suite) -> Self {
        Self(self.0, suite)
    }

    /// The deployment's key suite: of pseudonyms and of the key store's
    /// wraps.
    pub fn suite(&self) -> Suite {
        self.1
    }

    /// The raw key, for writing the keyring file only.
    pub fn expose_for_keyring(&self) -> &[u8; KEY_LEN] {
        &self.0 .0
    }

    /// The key's check value: `HMAC-SHA-256(key,
    /// "sealgate/v1/key-check\0" || "naming")`, first 16 bytes.
    pub fn check_value(&self) -> [u8; CHECK_LEN] {
        self.0.check_value(b"naming")
    }

    /// `HMAC-SHA-256(naming key, "sealgate/v1/pseudonym\0" || user id)`, or
    /// HMAC-SM3 of the same in key suite 2.
    pub fn pseudonym(&self, user_id: &str) -> Pseudonym {
        match self.1 {
            Suite::Aes256Gcm => {
                use aws_lc_rs::hmac;
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0 .0[..]);
                let mut ctx = hmac::Context::with_key(&key);
                ctx.update(PSEUDONYM_LABEL);
                ctx.update(user_id.as_bytes());
                let tag = ctx.sign();
                let mut out = [0u8; 32];
                out.copy_from_slice(tag.as_ref());
                Pseudonym(out)
            }
            Suite::Sm4Gcm => Pseudonym(super::sm3::hmac_sm3(
                &self.0 .0[..],
                &[PSEUDONYM_LABEL, user_id.as_bytes()],
            )),
        }
    }
}

/// A keyed pseudonym of a user id: what storage, the key store and logs see.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym([u8; 32]);

impl Pseudonym {
    /// A pseudonym from its 32 bytes (as a token or receipt carries it; a
    /// pseudonym is not secret).
    pub fn from_raw(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the HMAC.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the 64-character lower-case hex form.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for anything else.
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(CryptoError::Malformed);
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| CryptoError::Malformed)?;
        Ok(Self(out))
    }

    /// The shard of the KEK layer this pseudonym belongs to:
    /// the first 8 bytes as a big-endian integer, modulo `shards`.
    pub fn shard(&self, shards: u32) -> u32 {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        (u64::from_be_bytes(head) % u64::from(shards.max(1))) as u32
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonym({self})")
    }
}

/// AAD of a KEK wrapped by a master key:
/// `"sealgate/v1/kek" || u32be(shard) || u32be(kek version)`.
/// Do not change: every stored wrapped KEK is bound to these bytes.
pub fn kek_aad(shard: u32, version: u32) -> Vec<u8> {
    let mut aad = b"sealgate/v1/kek".to_vec();
    aad.extend_from_slice(&shard.to_be_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// AAD of a user key wrapped by a KEK: `"sealgate/v1/user-key" ||
/// pseudonym (32 raw bytes, not hex) || u32be(user-key version) ||
/// u32be(shard) || u32be(kek version)`.
/// Do not change: every stored wrapped user key is bound to these bytes.
pub fn user_key_aad(p: &Pseudonym, version: u32, shard: u32, kek_version: u32) -> Vec<u8> {
    let mut aad = b"sealgate/v1/user-key".to_vec();
    aad.extend_from_slice(p.as_bytes());
    for n in [version, shard, kek_version] {
        aad.extend_from_slice(&n.to_be_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FORMAT.md's check values, against Python's `hmac` (an independent
    /// HMAC-SHA-256): key bytes 0x00..0x1f.
    #[test]
    fn check_values_match_an_independent_hmac() {
        let key: Vec<u8> = (0u8..32).collect();
        assert_eq!(
            hex::encode(MasterKey::from_bytes(&key).unwrap().check_value()),
            "9146a0f309562c4145a4bf18a4ccd908"
        );
        assert_eq!(
            hex::encode(NamingKey::from_bytes(&key).unwrap().check_value()),
            "998b4d9f853b592c893336e40ed6d828"
        );
    }
}
