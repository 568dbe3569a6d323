//! [`ObjectLayout`]: every offset and length of a stored object, from its
//! first bytes and its stored length alone.

use super::{chunked, CryptoError, Header, Suite, Version};

/// Where the parts of a stored object lie, computed from its first bytes and
/// its stored length alone (no key needed). Every offset a reader uses comes
/// from here.
///
/// ```text
/// 0 .. header_len                  envelope header (fixed part + sealed metadata)
/// header_len .. +56                body message header (salt, commitment)
/// header_len + 56 .. body_end      body chunks
/// body_end .. stored_len           version 2: the sealed digest (104 bytes)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    version: Version,
    suite: Suite,
    header_len: u64,
    stored_len: u64,
    plaintext_len: u64,
}

impl ObjectLayout {
    /// Reads the layout from `prefix` (the object's first
    /// [`FIXED_HEADER_LEN`] bytes, or all of it if shorter) and the object's
    /// stored length.
    ///
    /// # Errors
    /// As [`Header::total_len`]; [`CryptoError::Malformed`] if the object is
    /// too short to hold its header, a body and its digest;
    /// [`CryptoError::DecryptionFailed`] if no valid body has the remaining
    /// length.
    pub fn new(prefix: &[u8], stored_len: u64) -> Result<Self, CryptoError> {
        let header_len = Header::total_len(prefix)? as u64;
        let (version, suite) = Header::format_of(prefix)?;
        let body_end = stored_len
            .checked_sub(version.trailer_len())
            .filter(|&end| end >= header_len + chunked::HEADER_LEN as u64)
            .ok_or(CryptoError::Malformed)?;
        let plaintext_len = chunked::plaintext_len(body_end - header_len)?;
        Ok(Self {
            version,
            suite,
            header_len,
            stored_len,
            plaintext_len,
        })
    }

    /// The stored length of an object of `version` whose envelope header
    /// is `header_len` bytes and whose plaintext is `plaintext_len` bytes.
    pub fn stored_len(version: Version, header_len: u64, plaintext_len: u64) -> u64 {
        header_len + chunked::message_len(plaintext_len) + version.trailer_len()
    }

    /// The object's format version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The object's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Length of the envelope header; the body message starts here.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// The envelope header and the body's message header: everything a
    /// reader needs before the first chunk.
    pub fn head(&self) -> std::ops::Range<u64> {
        0..self.header_len + chunked::HEADER_LEN as u64
    }

    /// The body's chunks.
    pub fn chunks(&self) -> std::ops::Range<u64> {
        self.head().end..self.body_end()
    }

    /// The sealed digest of a version-2 object.
    pub fn digest(&self) -> Option<std::ops::Range<u64>> {
        (self.version == Version::V2).then(|| self.body_end()..self.stored_len)
    }

    fn body_end(&self) -> u64 {
        self.stored_len - self.version.trailer_len()
    }

    /// Length of the body message (its header included).
    pub fn body_len(&self) -> u64 {
        self.body_end() - self.header_len
    }

    /// Plaintext length of the body.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Where a range of body-message offsets (as [`chunked::RangePlan`]
    /// gives them) lies in the stored object.
    pub fn stored_range(&self, body: std::ops::Range<u64>) -> std::ops::Range<u64> {
        self.header_len + body.start..self.header_len + body.end
    }
}
