//! [`ObjectSealer`]: a new object's header, its streamed body and (version
//! 2) its sealed digest.

use super::chunked::Sealer;
use super::{
    labelled, seal_message, CryptoError, Dek, Header, KeySlot, Metadata, ObjectIdentity,
    ObjectLayout, Suite, UserKey, Version, DIGEST_LABEL, METADATA_LABEL, SHA256_LEN,
};

/// Seals a new object: header first, then the streamed body, then (version
/// 2) the plaintext's SHA-256, which it computes as the body passes.
pub struct ObjectSealer {
    version: Version,
    suite: Suite,
    body: Sealer,
    header_len: u64,
    /// Kept for the digest, sealed last.
    dek: Dek,
    context: Vec<u8>,
    sha256: aws_lc_rs::digest::Context,
}

impl ObjectSealer {
    /// As [`ObjectSealer::new_in`], in the latest version (2).
    ///
    /// # Errors
    /// As [`ObjectSealer::new_in`].
    pub fn new(
        suite: Suite,
        user_key: &UserKey,
        user_key_version: u32,
        identity: &ObjectIdentity,
        metadata: &Metadata,
    ) -> Result<(Self, Vec<u8>), CryptoError> {
        Self::new_in(
            (Version::V2, suite),
            user_key,
            user_key_version,
            identity,
            metadata,
        )
    }

    /// Generates a DEK, wraps it under `user_key` (version `user_key_version`)
    /// and seals the metadata, all in the format `(version, suite)`. Returns
    /// the sealer and the bytes that start the object: the envelope header
    /// and the body's 56-byte message header.
    ///
    /// # Errors
    /// [`CryptoError::MetadataTooLarge`] or [`CryptoError::Rng`].
    pub fn new_in(
        (version, suite): (Version, Suite),
        user_key: &UserKey,
        user_key_version: u32,
        identity: &ObjectIdentity,
        metadata: &Metadata,
    ) -> Result<(Self, Vec<u8>), CryptoError> {
        let context = identity.encode(version);
        let dek = Dek::generate()?;
        let key_slot = KeySlot::seal(suite, user_key, user_key_version, &dek, &context)?;
        let sealed_metadata = seal_message(
            suite,
            dek.expose(),
            &labelled(&context, METADATA_LABEL),
            &metadata.encode()?,
        )?;
        let header = Header {
            version,
            suite,
            key_slot,
            sealed_metadata,
        };
        let (body, body_header) = Sealer::new_in(suite, dek.expose(), &context)?;
        let mut prefix = header.encode();
        let header_len = prefix.len() as u64;
        prefix.extend_from_slice(&body_header);
        let sealer = Self {
            version,
            suite,
            body,
            header_len,
            dek,
            context,
            sha256: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        };
        Ok((sealer, prefix))
    }

    /// Encrypts body bytes; see [`Sealer::push`].
    ///
    /// # Errors
    /// [`CryptoError::MessageTooLong`] past the format's limit.
    pub fn push(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.body.push(plaintext, out)?;
        self.sha256.update(plaintext);
        Ok(())
    }

    /// Body bytes accepted so far.
    pub fn plaintext_len(&self) -> u64 {
        self.body.plaintext_len()
    }

    /// The SHA-256 of the body bytes accepted so far.
    pub fn plaintext_sha256(&self) -> [u8; SHA256_LEN] {
        let mut out = [0; SHA256_LEN];
        out.copy_from_slice(self.sha256.clone().finish().as_ref());
        out
    }

    /// The stored length of this object once `plaintext_len` body bytes are
    /// sealed, so a store can be told the exact length up front.
    pub fn stored_len(&self, plaintext_len: u64) -> u64 {
        ObjectLayout::stored_len(self.version, self.header_len, plaintext_len)
    }

    /// Completes the object (the body's final chunk and, in version 2, the
    /// sealed digest); it is invalid without this call.
    ///
    /// # Errors
    /// [`CryptoError::MessageTooLong`] past the format's limit.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let sha256 = self.plaintext_sha256();
        self.body.finish(out)?;
        if self.version == Version::V2 {
            out.extend_from_slice(&seal_message(
                self.suite,
                self.dek.expose(),
                &labelled(&self.context, DIGEST_LABEL),
                &sha256,
            )?);
        }
        Ok(())
    }
}
