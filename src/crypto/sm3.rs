//! SM3 (GB/T 32905-2016), HMAC-SM3 and HKDF-Expand with HMAC-SM3: the hash
//! side of suite 2, from the RustCrypto `sm3`, `hmac` and `hkdf` crates.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sm3::{Digest, Sm3};

use super::CryptoError;

/// SM3 digest length in bytes.
pub const DIGEST_LEN: usize = 32;

/// SM3 of `parts`, concatenated.
pub fn sm3(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut h = Sm3::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-SM3 of `parts`, concatenated, under `key`.
pub fn hmac_sm3(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    let mut mac = <Hmac<Sm3> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HKDF-Expand (RFC 5869 section 2.3) with HMAC-SM3, `prk` used as the
/// pseudorandom key itself (no Extract step), filling `out`.
///
/// # Errors
/// [`CryptoError::InvalidKeySize`] if `prk` is shorter than 32 bytes or
/// `out` longer than 255 · 32 bytes.
pub fn hkdf_expand_sm3(prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
    let hk = Hkdf::<Sm3>::from_prk(prk).map_err(|_| CryptoError::InvalidKeySize)?;
    hk.expand_multi_info(info, out)
        .map_err(|_| CryptoError::InvalidKeySize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB/T 32905-2016 appendix A, examples 1 and 2.
    #[test]
    fn the_standards_examples() {
        assert_eq!(
            hex::encode(sm3(&[b"abc"])),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        assert_eq!(
            hex::encode(sm3(&[&b"abcd".repeat(16)])),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
    }
}
