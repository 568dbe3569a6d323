//! C2SP chunked encryption (<https://c2sp.org/chunked-encryption>),
//! instantiated per [`Suite`]: "Cobblestone-256" (AEAD_AES_256_GCM,
//! HKDF-Expand-SHA-512) or "Cobblestone-SM4" (AEAD_SM4_GCM,
//! HKDF-Expand-SM3), both with 16 KiB chunks, a 24-byte salt and a 32-byte
//! key commitment. The constructors without a suite (`Sealer::new`, ...)
//! are suite 1's.
//!
//! A message is `salt || commitment || chunk_0 || ... || chunk_n`, where every
//! chunk but the last holds exactly [`CHUNK_SIZE`] plaintext bytes and the last
//! holds fewer (possibly zero). Three ways in:
//!
//! - [`Sealer`]: push plaintext in any split, then [`Sealer::finish`].
//! - [`Opener`]: the commitment is checked in [`Opener::new`], before any
//!   chunk; plaintext is released chunk by chunk, each after authentication;
//!   truncation and trailing data fail in [`Opener::finish`] or earlier.
//! - [`RandomAccess`]: decrypts only the chunks that cover a plaintext range,
//!   and authenticates the message length by decrypting the final chunk
//!   whenever the range is bounded by the end of the message. A
//!   [`RangePlan`] says which stored bytes a plaintext range needs.
//!
//! An [`Opener`] that returned an error is poisoned: every later call fails
//! too, so no plaintext follows a failed check.
//!
//! The layer works on byte slices only; adapters to async streams live at the
//! edge of the crate.

use std::ops::Range;

use zeroize::Zeroizing;

use super::aead::{NONCE_LEN, TAG_LEN};
use super::suite::{Suite, SuiteAead};
use super::CryptoError;

// Format constants of Cobblestone-256. Do not change: they are pinned by the
// Wycheproof vectors and by the golden objects under tests/.
/// Plaintext bytes in every chunk but the last.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// Length of the random salt that starts every message.
pub const SALT_LEN: usize = 24;
/// Length of the key commitment that follows the salt.
pub const COMMITMENT_LEN: usize = 32;
/// Bytes before the first chunk: salt and commitment.
pub const HEADER_LEN: usize = SALT_LEN + COMMITMENT_LEN;
/// Ciphertext bytes of a full chunk.
pub const ENCRYPTED_CHUNK_LEN: usize = CHUNK_SIZE + TAG_LEN;
/// The chunk counter must stay below 2^38.
pub const MAX_CHUNKS: u64 = 1 << 38;
/// Length of the input key (the DEK) in every suite.
pub const INPUT_KEY_LEN: usize = 32;
const INFO_PREFIX: &[u8] = b"c2sp.org/chunked-encryption@v1+";

/// The per-message AEAD key and base nonce derived from the input key.
struct MessageKey {
    aead: SuiteAead,
    base_nonce: [u8; NONCE_LEN],
}

impl MessageKey {
    /// `key || base nonce || commitment = HKDF-Expand(input key, info)`,
    /// with the suite's hash and AEAD key length.
    fn derive(
        suite: Suite,
        input_key: &[u8],
        salt: &[u8; SALT_LEN],
        context: &[u8],
    ) -> Result<(Self, Zeroizing<[u8; COMMITMENT_LEN]>), CryptoError> {
        if input_key.len() != INPUT_KEY_LEN {
            return Err(CryptoError::InvalidKeySize);
        }
        let info: [&[u8]; 5] = [INFO_PREFIX, suite.aead_name(), &[0u8], salt, context];
        let key_len = suite.key_len();
        let mut okm = Zeroizing::new([0u8; 32 + NONCE_LEN + COMMITMENT_LEN]);
        let okm = &mut okm[..key_len + NONCE_LEN + COMMITMENT_LEN];
        suite.hkdf_expand(input_key, &info, okm)?;
        let aead = suite.aead(&okm[..key_len])?;
        let mut base_nonce = [0u8; NONCE_LEN];
        base_nonce.copy_from_slice(&okm[key_len..key_len + NONCE_LEN]);
        let mut commitment = Zeroizing::new([0u8; COMMITMENT_LEN]);
        commitment.copy_from_slice(&okm[key_len + NONCE_LEN..]);
        Ok((Self { aead, base_nonce }, commitment))
    }

    /// Derives the keys from a message header and checks its commitment in
    /// constant time.
    fn open_header(
        suite: Suite,
        input_key: &[u8],
        context: &[u8],
        header: &[u8],
    ) -> Result<Self, CryptoError> {
        if header.len() != HEADER_LEN {
            return Err(CryptoError::DecryptionFailed);
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&header[..SALT_LEN]);
        let (key, expected) = Self::derive(suite, input_key, &salt, context)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected[..], &header[SALT_LEN..])
            .map_err(|_| CryptoError::DecryptionFailed)?;
        Ok(key)
    }

    /// The nonce of chunk `index`: base nonce XOR the big-endian counter.
    fn nonce(&self, index: u64) -> Result<[u8; NONCE_LEN], CryptoError> {
        if index >= MAX_CHUNKS {
            return Err(CryptoError::MessageTooLong);
        }
        let mut nonce = self.base_nonce;
        for (n, c) in nonce[NONCE_LEN - 8..].iter_mut().zip(index.to_be_bytes()) {
            *n ^= c;
        }
        Ok(nonce)
    }

    /// Appends the encryption of `plaintext` as chunk `index` to `out`.
    fn seal_chunk(
        &self,
        index: u64,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let nonce = self.nonce(index)?;
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self.aead.seal_in_place(nonce, &[], &mut out[start..])?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Appends the decryption of chunk `index` to `out`; on failure `out` is
    /// left as it was, so no unauthenticated byte is ever released.
    fn open_chunk(
        &self,
        index: u64,
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        if ciphertext.len() < TAG_LEN || ciphertext.len() > ENCRYPTED_CHUNK_LEN {
            return Err(CryptoError::DecryptionFailed);
        }
        let start = out.len();
        out.extend_from_slice(ciphertext);
        match self.open_chunk_in_place(index, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Decrypts chunk `index` (ciphertext and tag) in place and returns its
    /// plaintext length: the plaintext is `chunk[..n]`. On failure `chunk`
    /// holds bytes that must not be released.
    fn open_chunk_in_place(&self, index: u64, chunk: &mut [u8]) -> Result<usize, CryptoError> {
        if chunk.len() < TAG_LEN || chunk.len() > ENCRYPTED_CHUNK_LEN {
            return Err(CryptoError::DecryptionFailed);
        }
        let nonce = self.nonce(index)?;
        self.aead
            .open_in_place(nonce, &[], chunk)
            .map(|plain| plain.len())
    }
}

/// Streaming encryption of one message.
///
/// Push plaintext with [`Sealer::push`] in any split; the message is only
/// complete after [`Sealer::finish`], which writes the mandatory short final
/// chunk. Dropping a sealer without finishing it leaves a truncated message
/// that every opener rejects.
pub struct Sealer {
    key: MessageKey,
    pending: Vec<u8>,
    next_chunk: u64,
}

impl Sealer {
    /// Starts a message under `input_key` bound to `context`, with a fresh
    /// random salt, and returns the sealer with the 56-byte message header
    /// (salt and commitment) that must precede the chunks.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless the key is 32 bytes;
    /// [`CryptoError::Rng`] if the system RNG fails.
    pub fn new(input_key: &[u8], context: &[u8]) -> Result<(Self, [u8; HEADER_LEN]), CryptoError> {
        Self::new_in(Suite::Aes256Gcm, input_key, context)
    }

    /// [`Sealer::new`] in `suite`.
    ///
    /// # Errors
    /// As [`Sealer::new`].
    pub fn new_in(
        suite: Suite,
        input_key: &[u8],
        context: &[u8],
    ) -> Result<(Self, [u8; HEADER_LEN]), CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        super::random_fill(&mut salt)?;
        Self::with_salt_in(suite, input_key, context, salt)
    }

    /// Like [`Sealer::new`] with a caller-chosen salt. The salt MUST NOT
    /// repeat for the same input key; this exists for known-answer tests.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] unless the key is 32 bytes.
    pub fn with_salt(
        input_key: &[u8],
        context: &[u8],
        salt: [u8; SALT_LEN],
    ) -> Result<(Self, [u8; HEADER_LEN]), CryptoError> {
        Self::with_salt_in(Suite::Aes256Gcm, input_key, context, salt)
    }

    /// [`Sealer::with_salt`] in `suite`.
    ///
    /// # Errors
    /// As [`Sealer::with_salt`].
    pub fn with_salt_in(
        suite: Suite,
        input_key: &[u8],
        context: &[u8],
        salt: [u8; SALT_LEN],
    ) -> Result<(Self, [u8; HEADER_LEN]), CryptoError> {
        let (key, commitment) = MessageKey::derive(suite, input_key, &salt, context)?;
        let mut header = [0u8; HEADER_LEN];
        header[..SALT_LEN].copy_from_slice(&salt);
        header[SALT_LEN..].copy_from_slice(&commitment[..]);
        // `pending` allocates only if a push leaves a partial chunk.
        let sealer = Self {
            key,
            pending: Vec::new(),
            next_chunk: 0,
        };
        Ok((sealer, header))
    }

    /// Encrypts as many full chunks as `input` completes and appends them to
    /// `out`; a partial chunk stays buffered (at most 16 KiB).
    ///
    /// # Errors
    /// [`CryptoError::MessageTooLong`] past 2^38 chunks.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if !self.pending.is_empty() {
            let take = (CHUNK_SIZE - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < CHUNK_SIZE {
                return Ok(());
            }
            // A full chunk is never the final one, so it can go out now.
            self.key.seal_chunk(self.next_chunk, &self.pending, out)?;
            self.next_chunk += 1;
            self.pending.clear();
        }
        out.reserve(input.len() / CHUNK_SIZE * ENCRYPTED_CHUNK_LEN);
        let mut full = input.chunks_exact(CHUNK_SIZE);
        for chunk in &mut full {
            self.key.seal_chunk(self.next_chunk, chunk, out)?;
            self.next_chunk += 1;
        }
        self.pending.extend_from_slice(full.remainder());
        Ok(())
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_len(&self) -> u64 {
        self.next_chunk * CHUNK_SIZE as u64 + self.pending.len() as u64
    }

    /// Writes the final short (possibly empty) chunk and completes the message.
    ///
    /// # Errors
    /// [`CryptoError::MessageTooLong`] past 2^38 chunks.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.key.seal_chunk(self.next_chunk, &self.pending, out)
    }
}

/// Streaming decryption of one message.
///
/// The commitment is verified when the opener is built, before any chunk is
/// touched. [`Opener::push`] releases plaintext only for whole chunks that
/// have authenticated; [`Opener::finish`] authenticates the short final chunk,
/// which is what proves the message was not truncated. After any error the
/// opener is poisoned and keeps failing.
pub struct Opener {
    key: MessageKey,
    pending: Vec<u8>,
    next_chunk: u64,
    poisoned: bool,
}

impl Opener {
    /// Checks the 56-byte message header against `input_key` and `context`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidKeySize`] for a key that is not 32 bytes;
    /// [`CryptoError::DecryptionFailed`] if the header is short or the
    /// commitment does not match (wrong key, wrong context, modified salt).
    pub fn new(input_key: &[u8], context: &[u8], header: &[u8]) -> Result<Self, CryptoError> {
        Self::new_in(Suite::Aes256Gcm, input_key, context, header)
    }

    /// [`Opener::new`] in `suite`.
    ///
    /// # Errors
    /// As [`Opener::new`].
    pub fn new_in(
        suite: Suite,
        input_key: &[u8],
        context: &[u8],
        header: &[u8],
    ) -> Result<Self, CryptoError> {
        let key = MessageKey::open_header(suite, input_key, context, header)?;
        Ok(Self {
            key,
            pending: Vec::new(),
            next_chunk: 0,
            poisoned: false,
        })
    }

    /// Feeds ciphertext (the bytes after the 56-byte header) and appends the
    /// plaintext of every chunk completed by it to `out`.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if a chunk does not authenticate.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.check_poison()?;
        let result = (|| {
            if !self.pending.is_empty() {
                let take = (ENCRYPTED_CHUNK_LEN - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() < ENCRYPTED_CHUNK_LEN {
                    return Ok(());
                }
                // A full-length encrypted chunk can never be the final one.
                self.key.open_chunk(self.next_chunk, &self.pending, out)?;
                self.next_chunk += 1;
                self.pending.clear();
            }
            let mut full = input.chunks_exact(ENCRYPTED_CHUNK_LEN);
            for chunk in &mut full {
                self.key.open_chunk(self.next_chunk, chunk, out)?;
                self.next_chunk += 1;
            }
            self.pending.extend_from_slice(full.remainder());
            Ok(())
        })();
        self.poisoned = result.is_err();
        result
    }

    /// Authenticates the final short chunk and appends its plaintext.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the message is truncated, has
    /// trailing data, or its final chunk does not authenticate.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.check_poison()?;
        // `pending` is shorter than a full encrypted chunk by construction;
        // open_chunk rejects anything shorter than a tag.
        self.key.open_chunk(self.next_chunk, &self.pending, out)
    }

    fn check_poison(&mut self) -> Result<(), CryptoError> {
        if self.poisoned {
            Err(CryptoError::DecryptionFailed)
        } else {
            Ok(())
        }
    }
}

/// The plaintext length of a message of `message_len` bytes (header
/// included), or an error if no valid message has that length.
///
/// # Errors
/// [`CryptoError::DecryptionFailed`] for impossible lengths: shorter than the
/// header plus one tag, or a final chunk shorter than a tag or full-length.
pub fn plaintext_len(message_len: u64) -> Result<u64, CryptoError> {
    let body = message_len
        .checked_sub(HEADER_LEN as u64)
        .ok_or(CryptoError::DecryptionFailed)?;
    let full = body / ENCRYPTED_CHUNK_LEN as u64;
    let last = body % ENCRYPTED_CHUNK_LEN as u64;
    if last < TAG_LEN as u64 {
        return Err(CryptoError::DecryptionFailed);
    }
    if full >= MAX_CHUNKS {
        return Err(CryptoError::MessageTooLong);
    }
    Ok(full * CHUNK_SIZE as u64 + (last - TAG_LEN as u64))
}

/// The message length produced by sealing `plaintext_len` bytes.
pub fn message_len(plaintext_len: u64) -> u64 {
    let chunks = plaintext_len / CHUNK_SIZE as u64 + 1;
    HEADER_LEN as u64 + plaintext_len + chunks * TAG_LEN as u64
}

/// Byte offset of chunk `index` within a message.
pub fn chunk_offset(index: u64) -> u64 {
    HEADER_LEN as u64 + index * ENCRYPTED_CHUNK_LEN as u64
}

/// Which ciphertext bytes a plaintext range needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePlan {
    /// The requested plaintext range, clamped to the message.
    pub plaintext: Range<u64>,
    first_chunk: u64,
    last_chunk: u64,
    final_chunk: u64,
    message_len: u64,
    /// Whether the range was bounded by the end of the message, so that the
    /// message length must be authenticated.
    pub needs_length_check: bool,
}

impl RangePlan {
    /// Plans the read of plaintext bytes `start..end` (`end` exclusive; `None`
    /// means to the end of the message) from a message of `message_len`
    /// bytes. An `end` past the end of the message is clamped to it.
    ///
    /// # Errors
    /// [`CryptoError::RangeOutOfBounds`] if `start` is at or past the end, or
    /// the range is empty; [`CryptoError::DecryptionFailed`] if `message_len`
    /// is impossible.
    pub fn new(message_len: u64, start: u64, end: Option<u64>) -> Result<Self, CryptoError> {
        let len = plaintext_len(message_len)?;
        let requested_end = end.unwrap_or(u64::MAX);
        if start >= len || requested_end <= start {
            return Err(CryptoError::RangeOutOfBounds);
        }
        let end = requested_end.min(len);
        let chunk = CHUNK_SIZE as u64;
        Ok(Self {
            plaintext: start..end,
            first_chunk: start / chunk,
            last_chunk: (end - 1) / chunk,
            final_chunk: len / chunk,
            message_len,
            needs_length_check: requested_end >= len,
        })
    }

    /// The ciphertext bytes (message offsets) of the chunks covering the range.
    pub fn ciphertext_range(&self) -> Range<u64> {
        let end = chunk_offset(self.last_chunk + 1).min(self.message_len);
        chunk_offset(self.first_chunk)..end
    }

    /// The ciphertext bytes of the final chunk, if the length must be
    /// authenticated and the covering chunks do not already include it.
    pub fn final_chunk_range(&self) -> Option<Range<u64>> {
        (self.needs_length_check && self.last_chunk != self.final_chunk)
            .then(|| chunk_offset(self.final_chunk)..self.message_len)
    }
}

/// Random-access decryption of a message whose length is known.
pub struct RandomAccess {
    key: MessageKey,
}

impl RandomAccess {
    /// Checks the message header's commitment, like [`Opener::new`].
    ///
    /// # Errors
    /// As [`Opener::new`].
    pub fn new(input_key: &[u8], context: &[u8], header: &[u8]) -> Result<Self, CryptoError> {
        Self::new_in(Suite::Aes256Gcm, input_key, context, header)
    }

    /// [`RandomAccess::new`] in `suite`.
    ///
    /// # Errors
    /// As [`Opener::new`].
    pub fn new_in(
        suite: Suite,
        input_key: &[u8],
        context: &[u8],
        header: &[u8],
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            key: MessageKey::open_header(suite, input_key, context, header)?,
        })
    }

    /// A streaming opener of the same message from its first chunk, without
    /// checking the header and deriving the key again (the same as
    /// [`Opener::new`] with this one's arguments).
    pub fn into_opener(self) -> Opener {
        Opener {
            key: self.key,
            pending: Vec::new(),
            next_chunk: 0,
            poisoned: false,
        }
    }

    /// Authenticates the message length: decrypts the final chunk of a message
    /// of `message_len` bytes, given its ciphertext, and discards the result.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the length is impossible or the
    /// final chunk does not authenticate at its index.
    pub fn authenticate_length(
        &self,
        message_len: u64,
        final_chunk: &[u8],
    ) -> Result<(), CryptoError> {
        let len = plaintext_len(message_len)?;
        let index = len / CHUNK_SIZE as u64;
        if final_chunk.len() as u64 != message_len - chunk_offset(index) {
            return Err(CryptoError::DecryptionFailed);
        }
        let mut scratch = Vec::with_capacity(final_chunk.len());
        self.key.open_chunk(index, final_chunk, &mut scratch)
    }

    /// Decrypts a whole message body (every chunk: the message without its
    /// header) in place, leaving the plaintext at the front: returns its
    /// length `n`, the plaintext being `body[..n]`. Each chunk's plaintext
    /// moves down over the tags before it right after it authenticates,
    /// while it is still in the cache: no buffer and one short move per
    /// chunk, where [`Opener`] copies every byte into its output.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the length is impossible or a
    /// chunk does not authenticate. `body` then holds bytes that must not
    /// be released: drop it.
    pub fn open_whole_in_place(&self, body: &mut [u8]) -> Result<usize, CryptoError> {
        // Checks that every chunk but the last is full and the last short.
        plaintext_len(HEADER_LEN as u64 + body.len() as u64)?;
        let mut plain = 0;
        let mut at = 0;
        let mut index = 0;
        while at < body.len() {
            let end = (at + ENCRYPTED_CHUNK_LEN).min(body.len());
            let n = self.key.open_chunk_in_place(index, &mut body[at..end])?;
            if plain != at {
                body.copy_within(at..at + n, plain);
            }
            plain += n;
            at = end;
            index += 1;
        }
        Ok(plain)
    }

    /// Decrypts the range planned by `plan`. `covering` holds the bytes of
    /// [`RangePlan::ciphertext_range`]; `final_chunk` holds those of
    /// [`RangePlan::final_chunk_range`] when that is `Some`.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if a chunk does not authenticate, or
    /// the inputs do not have the planned lengths.
    pub fn open_range(
        &self,
        plan: &RangePlan,
        covering: &[u8],
        final_chunk: Option<&[u8]>,
    ) -> Result<Vec<u8>, CryptoError> {
        let expected = plan.ciphertext_range();
        if covering.len() as u64 != expected.end - expected.start {
            return Err(CryptoError::DecryptionFailed);
        }
        match (plan.final_chunk_range(), final_chunk) {
            (Some(_), Some(ct)) => self.authenticate_length(plan.message_len, ct)?,
            (None, None) => {}
            _ => return Err(CryptoError::DecryptionFailed),
        }
        let mut out = Vec::with_capacity(covering.len());
        for (i, chunk) in covering.chunks(ENCRYPTED_CHUNK_LEN).enumerate() {
            let index = plan.first_chunk + i as u64;
            // Every chunk before the final one must be full length; the
            // chunk at the final index must be short.
            let is_final = index == plan.final_chunk;
            if (chunk.len() == ENCRYPTED_CHUNK_LEN) == is_final {
                return Err(CryptoError::DecryptionFailed);
            }
            self.key.open_chunk(index, chunk, &mut out)?;
        }
        let skip = (plan.plaintext.start - plan.first_chunk * CHUNK_SIZE as u64) as usize;
        let take = (plan.plaintext.end - plan.plaintext.start) as usize;
        out.drain(..skip);
        out.truncate(take);
        Ok(out)
    }
}
