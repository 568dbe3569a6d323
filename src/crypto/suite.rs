//! The cipher suites of the object format (FORMAT.md "Suites").
//!
//! A suite fixes every primitive an object uses: the AEAD of its body and
//! metadata messages and of its key slot, and the hash behind their key
//! derivation. The layout is the same for every suite; only the header's
//! suite byte (offset 7) says which primitives fill it.
//!
//! | Suite | Id | AEAD | KDF |
//! | --- | --- | --- | --- |
//! | [`Suite::Aes256Gcm`] | 1 | AES-256-GCM (aws-lc-rs) | HKDF-Expand-SHA-512 |
//! | [`Suite::Sm4Gcm`] | 2 | SM4-GCM ([`super::sm4`]) | HKDF-Expand-SM3 |

use std::fmt;

use aws_lc_rs::hkdf::{KeyType, Prk, HKDF_SHA512};

use super::aead::{self, AesGcm, NONCE_LEN, TAG_LEN};
use super::sm4::{self, Sm4Gcm};
use super::{sm3, CryptoError};

/// The HKDF info that turns a 256-bit wrapping key into an SM4 key.
const SM4_WRAP_INFO: &[u8] = b"sealgate/v1/sm4-wrap";

/// A cipher suite of format version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Suite {
    /// Suite 1, "Cobblestone-256": AES-256-GCM with HKDF-SHA-512.
    #[default]
    Aes256Gcm,
    /// Suite 2, "Cobblestone-SM4": SM4-GCM with HKDF-SM3.
    Sm4Gcm,
}

impl Suite {
    /// Every suite, in id order.
    pub const ALL: [Suite; 2] = [Suite::Aes256Gcm, Suite::Sm4Gcm];

    /// The header's suite byte.
    pub fn id(self) -> u8 {
        match self {
            Suite::Aes256Gcm => 1,
            Suite::Sm4Gcm => 2,
        }
    }

    /// The suite of a header's suite byte.
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedSuite`] for any other byte.
    pub fn from_id(id: u8) -> Result<Self, CryptoError> {
        Self::ALL
            .into_iter()
            .find(|s| s.id() == id)
            .ok_or(CryptoError::UnsupportedSuite(id))
    }

    /// The name in configuration, the API and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Aes256Gcm => "aes-256-gcm",
            Suite::Sm4Gcm => "sm4-gcm",
        }
    }

    /// The suite called `name` ([`Suite::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The AEAD's name in the C2SP derivation's info string.
    pub(crate) fn aead_name(self) -> &'static [u8] {
        match self {
            Suite::Aes256Gcm => b"AEAD_AES_256_GCM",
            Suite::Sm4Gcm => b"AEAD_SM4_GCM",
        }
    }

    /// The AEAD's key length.
    pub(crate) fn key_len(self) -> usize {
        match self {
            Suite::Aes256Gcm => aead::KEY_LEN,
            Suite::Sm4Gcm => sm4::KEY_LEN,
        }
    }

    /// `HKDF-Expand(prk, info, len(out))` with the suite's hash (SHA-512 or
    /// SM3); `prk` is the pseudorandom key itself, with no Extract step.
    pub(crate) fn hkdf_expand(
        self,
        prk: &[u8],
        info: &[&[u8]],
        out: &mut [u8],
    ) -> Result<(), CryptoError> {
        match self {
            Suite::Aes256Gcm => {
                struct Len(usize);
                impl KeyType for Len {
                    fn len(&self) -> usize {
                        self.0
                    }
                }
                Prk::new_less_safe(HKDF_SHA512, prk)
                    .expand(info, Len(out.len()))
                    .and_then(|okm| okm.fill(out))
                    .map_err(|_| CryptoError::InvalidKeySize)
            }
            Suite::Sm4Gcm => sm3::hkdf_expand_sm3(prk, info, out),
        }
    }

    /// The AEAD that wraps a key under the 256-bit key `key` (FORMAT.md "Key
    /// wrapping"): AES-256-GCM under `key` itself, or SM4-GCM under
    /// `HKDF-Expand-SM3(key, "sealgate/v1/sm4-wrap", 16)`.
    pub(crate) fn wrapping_aead(self, key: &[u8]) -> Result<SuiteAead, CryptoError> {
        match self {
            Suite::Aes256Gcm => self.aead(key),
            Suite::Sm4Gcm => {
                let mut k = zeroize::Zeroizing::new([0u8; sm4::KEY_LEN]);
                self.hkdf_expand(key, &[SM4_WRAP_INFO], &mut k[..])?;
                self.aead(&k[..])
            }
        }
    }

    /// The suite's AEAD under `key` ([`Suite::key_len`] bytes).
    pub(crate) fn aead(self, key: &[u8]) -> Result<SuiteAead, CryptoError> {
        Ok(match self {
            Suite::Aes256Gcm => SuiteAead::Aes(AesGcm::new(key)?),
            Suite::Sm4Gcm => SuiteAead::Sm4(Sm4Gcm::new(key)?),
        })
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A suite's AEAD with its key schedule.
pub(crate) enum SuiteAead {
    Aes(AesGcm),
    Sm4(Sm4Gcm),
}

impl SuiteAead {
    /// Encrypts `in_out` in place and returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        match self {
            SuiteAead::Aes(k) => k.seal_in_place(nonce, aad, in_out),
            SuiteAead::Sm4(k) => k.seal_in_place(nonce, aad, in_out),
        }
    }

    /// Decrypts `in_out` (ciphertext and tag) in place; returns the
    /// plaintext part.
    pub(crate) fn open_in_place<'a>(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        match self {
            SuiteAead::Aes(k) => k.open_in_place(nonce, aad, in_out),
            SuiteAead::Sm4(k) => k.open_in_place(nonce, aad, in_out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_id(s.id()), Ok(s));
            assert_eq!(Suite::from_name(s.name()), Some(s));
        }
        assert_eq!(Suite::from_id(0), Err(CryptoError::UnsupportedSuite(0)));
        assert_eq!(Suite::from_id(3), Err(CryptoError::UnsupportedSuite(3)));
        assert_eq!(Suite::from_name("sm4"), None);
    }
}
