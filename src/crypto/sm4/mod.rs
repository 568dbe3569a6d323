//! SM4-GCM (GB/T 32907-2016 SM4 in GCM, as RFC 8998 uses it) for suite 2.
//!
//! PLACEHOLDER: backed by the RustCrypto `sm4` crate, whose S-box is a
//! table lookup (not constant-time). To be replaced by a constant-time
//! block cipher with the same interface.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{AesGcm, Nonce, Tag};
use cipher::consts::U12;

use super::CryptoError;

/// SM4 key length in bytes.
pub const KEY_LEN: usize = 16;
/// GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// An SM4-GCM key ready for use.
pub struct Sm4Gcm {
    aead: AesGcm<::sm4::Sm4, U12>,
}

impl Sm4Gcm {
    /// Builds the key schedule.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless `key` is 16 bytes.
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let aead = AesGcm::new_from_slice(key).map_err(|_| CryptoError::InvalidKeySize)?;
        Ok(Self { aead })
    }

    /// Encrypts `in_out` in place and returns the tag.
    ///
    /// # Errors
    /// [`CryptoError::MessageTooLong`] beyond GCM's limit.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, in_out)
            .map_err(|_| CryptoError::MessageTooLong)?;
        Ok(tag.into())
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place and
    /// returns the plaintext part.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the tag does not authenticate.
    pub fn open_in_place<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        let Some(split) = in_out.len().checked_sub(TAG_LEN) else {
            return Err(CryptoError::DecryptionFailed);
        };
        let (body, tag) = in_out.split_at_mut(split);
        let tag = Tag::clone_from_slice(tag);
        self.aead
            .decrypt_in_place_detached(Nonce::from_slice(&nonce), aad, body, &tag)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(&mut in_out[..split])
    }
}
