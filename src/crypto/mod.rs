//! The cryptographic core: key types, the C2SP chunked-encryption body layer
//! and the object envelope (format versions 1 and 2, see `FORMAT.md`).
//!
//! This module owns every byte layout that reaches storage and every use of a
//! cryptographic primitive. It must never do I/O, never be async and never
//! know about S3, gRPC or SQL: the rest of the crate hands it byte slices and
//! gets byte slices back.
//!
//! The primitives of suite 1 come from aws-lc-rs (AES-256-GCM,
//! HKDF-SHA-512, HMAC-SHA-256, the system CSPRNG); suite 2's SM3, HMAC and
//! HKDF from RustCrypto (`sm3`, `hmac`, `hkdf`), and its SM4-GCM is
//! RustCrypto's GCM over the one primitive written here, a constant-time
//! SM4 block cipher (`sm4/`, because no maintained crate offers one).
//! Nothing else is home-made beyond the composition the C2SP specification
//! and `FORMAT.md` describe.

pub mod aead;
pub mod chunked;
pub mod envelope;
pub mod keys;
pub mod sm3;
pub mod sm4;
pub mod suite;
pub mod token;

pub use envelope::{
    Header, KeySlot, Metadata, ObjectIdentity, ObjectLayout, ObjectSealer, UnsealedObject, Version,
};
pub use keys::{Dek, Kek, MasterKey, NamingKey, Pseudonym, UserKey, Wrapped, WrappedDek};
pub use suite::Suite;

/// Errors of the cryptographic core.
///
/// Integrity failures are deliberately collapsed into one opaque
/// [`CryptoError::DecryptionFailed`]: a wrong key, a wrong context, a failed
/// commitment, a forged tag, a truncated or extended message all look the
/// same to a caller, so none of them can serve as an oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: wrong key, wrong identity, or modified,
    /// truncated or extended ciphertext.
    #[error("decryption failed")]
    DecryptionFailed,
    /// An input key does not have the AEAD's key length.
    #[error("invalid key size")]
    InvalidKeySize,
    /// The bytes are not a sealgate object header (bad magic, bad lengths).
    #[error("malformed object header")]
    Malformed,
    /// The header names a format version this build cannot read.
    #[error("unsupported object format version {0}")]
    UnsupportedVersion(u8),
    /// The header names a cipher suite this build cannot read.
    #[error("unsupported cipher suite {0}")]
    UnsupportedSuite(u8),
    /// A requested plaintext range is empty or lies outside the message.
    #[error("byte range outside the object")]
    RangeOutOfBounds,
    /// The message would exceed the chunk counter limit of the format.
    #[error("message too long")]
    MessageTooLong,
    /// The metadata does not fit the format's limit.
    #[error("object metadata too large")]
    MetadataTooLarge,
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Rng,
}

/// Fills `buf` from the system CSPRNG.
pub(crate) fn random_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Rng)
}
