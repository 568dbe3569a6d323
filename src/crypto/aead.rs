//! A thin wrapper over aws-lc-rs AES-256-GCM with 96-bit nonces.
//!
//! Every AEAD operation of the crate goes through [`AesGcm`], so that the
//! Wycheproof AES-GCM vectors exercise exactly the code path that seals
//! objects and wraps keys. One use takes AES-256-GCM-SIV instead
//! ([`AesGcm::new_siv`]): signed read tokens, sealed under random nonces
//! by the billion, where a repeated nonce must not cost the key.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, AES_256_GCM_SIV};

use super::CryptoError;

/// AES-256-GCM key length in bytes.
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length in bytes (the only nonce size this crate uses).
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// An AES-256-GCM key ready for use.
pub struct AesGcm {
    key: LessSafeKey,
}

impl AesGcm {
    /// Builds the key schedule.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless `key` is 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::InvalidKeySize)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// As [`AesGcm::new`], for AES-256-GCM-SIV (RFC 8452): the same
    /// interface, nonce-misuse resistant.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless `key` is 32 bytes.
    pub fn new_siv(key: &[u8]) -> Result<Self, CryptoError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM_SIV, key).map_err(|_| CryptoError::InvalidKeySize)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `in_out` in place and returns the tag.
    ///
    /// # Errors
    /// Only if aws-lc refuses the input (longer than GCM allows).
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::MessageTooLong)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place and
    /// returns the plaintext part. On failure the buffer's contents are
    /// unspecified and must not be used.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the tag does not authenticate.
    pub fn open_in_place<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::DecryptionFailed)
    }
}
