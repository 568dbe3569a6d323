//! SM4-GCM (GB/T 32907-2016 SM4 in GCM, as RFC 8998 uses it) for suite 2,
//! over a constant-time SM4 block cipher of our own.
//!
//! # Construction
//!
//! The mode is RustCrypto's `aes_gcm::AesGcm<Sm4, U12>`: its CTR is the
//! `ctr` crate's and its GHASH the `ghash` crate's over `polyval`, which
//! multiplies with PCLMULQDQ when the CPU has it (detected at run time) and
//! otherwise with its constant-time software multiply. Nothing of the mode
//! is home-made. The one primitive written here is the block cipher
//! [`Sm4`], because no maintained Rust crate offers a constant-time one: the
//! RustCrypto `sm4` crate, like most, looks its S-box up in a table indexed
//! by secret bytes, which leaks through the cache.
//!
//! Our S-box is arithmetic instead. It decomposes as
//! S(x) = M2·I(M1·x ⊕ C1) ⊕ C2 with I the inversion in the AES field (the
//! derivation of M1, C1, M2 through the field isomorphism is in
//! `consts.rs`, and unit tests re-derive the constants and check all 256
//! values against the standard's table). Two implementations, chosen once
//! per key, give the same results:
//!
//! - x86-64 with GFNI, AVX-512F and AVX-512BW (`x86.rs`): the S-box is
//!   `vgf2p8affineqb` then `vgf2p8affineinvqb`, 16 blocks per register set
//!   transposed into 32-bit lanes, L by `vprold`, 64 blocks per call so CTR
//!   keeps the vector units busy. The key schedule uses the same S-box on
//!   one word in an XMM register. This is the library's only `unsafe`
//!   (intrinsics, unaligned loads and stores), confined to that file.
//! - everything else (`soft.rs`): the same decomposition in plain integer
//!   arithmetic, eight bytes at a time, the inversion as x^254 by
//!   branch-free shift-and-XOR multiplications. Correct and constant-time,
//!   but slow (roughly a hundred times slower than the GFNI path).
//!
//! Both are constant-time in the sense that matters here: no memory address
//! and no branch depends on the key or the data. `benches/sm4_timing.rs` is
//! a dudect-style check of that on the machine at hand.
//!
//! # Limits
//!
//! - Constant-time rests on the CPU executing these instructions in
//!   data-independent time (true of the XOR, shift, rotate, multiply and
//!   GFNI instructions used on current x86-64 and 64-bit ARM cores) and on
//!   the compiler not introducing branches or tables, which the timing bench
//!   checks empirically, not formally.
//! - No protection against power or electromagnetic analysis or fault
//!   injection.
//! - CPUs with GFNI but no AVX-512 (some client cores) take the slow
//!   portable path.
//! - Encryption only: GCM never decrypts a block.

mod block;
mod consts;
mod soft;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{AesGcm, Nonce, Tag};
use cipher::consts::U12;

pub use block::{Implementation, Sm4};

use super::CryptoError;

/// SM4 key length in bytes.
pub const KEY_LEN: usize = 16;
/// GCM nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// GCM tag length in bytes.
pub const TAG_LEN: usize = 16;

/// An SM4-GCM key ready for use.
pub struct Sm4Gcm {
    aead: AesGcm<Sm4, U12>,
    implementation: Implementation,
}

impl Sm4Gcm {
    /// Builds the key schedule.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless `key` is 16 bytes.
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let key: &[u8; KEY_LEN] = key.try_into().map_err(|_| CryptoError::InvalidKeySize)?;
        Ok(Self::from_cipher(Sm4::from_key(key)))
    }

    /// SM4-GCM over an already keyed block cipher, e.g. one with a chosen
    /// [`Implementation`].
    pub fn from_cipher(cipher: Sm4) -> Self {
        let implementation = cipher.implementation();
        Self {
            aead: AesGcm::from(cipher),
            implementation,
        }
    }

    /// The SM4 implementation in use.
    pub fn implementation(&self) -> Implementation {
        self.implementation
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

impl std::fmt::Debug for Sm4Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sm4Gcm")
            .field("implementation", &self.implementation)
            .finish_non_exhaustive()
    }
}
