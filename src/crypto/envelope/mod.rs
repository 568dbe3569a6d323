//! The object envelope, format versions 1 and 2: header (magic, version,
//! suite, key slot, sealed metadata) followed by the C2SP body, and in
//! version 2 the sealed SHA-256 of the plaintext after it. `FORMAT.md` is
//! the normative description; this module is its only implementation.
//!
//! ```text
//! 0   6  magic "SEALGT"
//! 6   1  format version (1 or 2: see [`Version`])
//! 7   1  suite id (1 = AES-256-GCM, 2 = SM4-GCM: see [`Suite`])
//! 8   4  key slot: user-key version, u32 big-endian
//! 12 60  key slot: wrapped DEK = nonce(12) || AEAD(user key, nonce, identity, DEK)
//! 72  4  M = sealed metadata length, u32 big-endian
//! 76  M  sealed metadata: C2SP message, input key DEK, context identity || lp("metadata")
//! 76+M   body: C2SP message, input key DEK, context identity
//! end-104  version 2 only, the digest: C2SP message of SHA-256(plaintext),
//!          input key DEK, context identity || lp("digest")
//! ```
//!
//! The pieces: [`ObjectIdentity`] (region, space, pseudonym, object id) and
//! its canonical encoding, the C2SP context and the key slot's AAD;
//! [`KeySlot`] (fixed length at a fixed offset, so [`KeySlot::rewrap`]
//! moves an object to another user-key version without touching its body);
//! [`Metadata`] (content type and attributes, sealed); [`Header`] (parsed
//! without a key, unsealed with one into an [`UnsealedObject`]);
//! [`ObjectLayout`] (every offset and length of a stored object from its
//! first bytes and its stored length); and [`ObjectSealer`] (which also
//! tells the stored length of an object to come).

use std::collections::BTreeMap;

mod layout;
mod sealer;

pub use layout::ObjectLayout;
pub use sealer::ObjectSealer;

use super::chunked::{self, Opener, RandomAccess, Sealer};
use super::keys::{Dek, Pseudonym, UserKey, WrappedDek, WRAPPED_LEN};
use super::suite::Suite;
use super::CryptoError;

// Format constants. Do not change: golden objects under tests/ pin them.
/// First bytes of every object.
pub const MAGIC: [u8; 6] = *b"SEALGT";
/// Offset of the version byte.
const VERSION_OFFSET: usize = 6;
/// Offset of the suite byte.
const SUITE_OFFSET: usize = 7;
/// Label that starts every identity encoding.
const IDENTITY_LABEL: &[u8] = b"sealgate/object";
/// Field appended to the identity to form the metadata context.
const METADATA_LABEL: &[u8] = b"metadata";
/// Field appended to the identity to form the digest context.
const DIGEST_LABEL: &[u8] = b"digest";
/// Length of a SHA-256.
pub const SHA256_LEN: usize = 32;
/// Length of a version-2 object's sealed digest: a C2SP message of the 32
/// bytes of a SHA-256 (one final chunk).
pub const SEALED_DIGEST_LEN: usize = chunked::HEADER_LEN + SHA256_LEN + super::aead::TAG_LEN;
/// Objects declared shorter than this are written in version 1 (no
/// digest): an export hashes them in microseconds, and small items keep
/// their overhead (see FORMAT.md, "Sealing an object").
pub const DIGEST_FROM: u64 = 64 * 1024;

/// The object format version: what follows the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `header || body`.
    V1 = 1,
    /// `header || body || digest`: the plaintext's SHA-256, sealed under
    /// the DEK, so a reader of the whole object need not hash it.
    V2 = 2,
}

impl Version {
    /// The versions this build reads.
    pub const ALL: [Version; 2] = [Version::V1, Version::V2];

    /// The version named by a header's byte 6.
    ///
    /// # Errors
    /// [`CryptoError::UnsupportedVersion`] for any other byte.
    pub fn from_byte(b: u8) -> Result<Self, CryptoError> {
        match b {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            v => Err(CryptoError::UnsupportedVersion(v)),
        }
    }

    /// Its byte.
    pub fn byte(self) -> u8 {
        self as u8
    }

    /// The version sealgate writes for an object of `declared` plaintext
    /// bytes (`None`: not declared), allowed versions up to `self`:
    /// version 2 unless it is declared shorter than [`DIGEST_FROM`].
    pub fn to_write(self, declared: Option<u64>) -> Self {
        match (self, declared) {
            (Self::V1, _) => Self::V1,
            (_, Some(n)) if n < DIGEST_FROM => Self::V1,
            _ => Self::V2,
        }
    }

    /// Bytes stored after the body: the sealed digest of version 2.
    pub fn trailer_len(self) -> u64 {
        match self {
            Self::V1 => 0,
            Self::V2 => SEALED_DIGEST_LEN as u64,
        }
    }
}

/// A whole small C2SP message (metadata, digest): sealed with a random salt.
fn seal_message(
    suite: Suite,
    key: &[u8],
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let (mut sealer, header) = Sealer::new_in(suite, key, context)?;
    let mut out = header.to_vec();
    sealer.push(plaintext, &mut out)?;
    sealer.finish(&mut out)?;
    Ok(out)
}

/// Opens a whole small C2SP message.
fn open_message(
    suite: Suite,
    key: &[u8],
    context: &[u8],
    message: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let header = message
        .get(..chunked::HEADER_LEN)
        .ok_or(CryptoError::DecryptionFailed)?;
    let mut opener = Opener::new_in(suite, key, context, header)?;
    let mut plain = Vec::new();
    opener.push(&message[chunked::HEADER_LEN..], &mut plain)?;
    opener.finish(&mut plain)?;
    Ok(plain)
}
/// Largest encoded metadata plaintext.
pub const MAX_METADATA_LEN: usize = 8 * 1024;
/// Length of the fixed part of the header, up to and including `M`.
pub const FIXED_HEADER_LEN: usize = 6 + 1 + 1 + KeySlot::LEN + 4;
const KEY_SLOT_OFFSET: usize = 8;

/// Appends `u16 big-endian length || bytes`.
fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), CryptoError> {
    let len = u16::try_from(bytes.len()).map_err(|_| CryptoError::MetadataTooLarge)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Reads a `u16 length || bytes` field from the front of `input`.
fn take_lp<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], CryptoError> {
    if input.len() < 2 {
        return Err(CryptoError::DecryptionFailed);
    }
    let len = usize::from(u16::from_be_bytes([input[0], input[1]]));
    let rest = &input[2..];
    if rest.len() < len {
        return Err(CryptoError::DecryptionFailed);
    }
    let (field, tail) = rest.split_at(len);
    *input = tail;
    Ok(field)
}

/// Where an object belongs: the identity that its key slot and body are
/// cryptographically bound to. Copying ciphertext to any other identity
/// makes it fail before a single plaintext byte is released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectIdentity {
    region: String,
    space: String,
    pseudonym: Pseudonym,
    object_id: String,
}

/// Longest region, space or object id the identity encoding accepts.
pub const MAX_IDENTITY_FIELD_LEN: usize = 1024;

impl ObjectIdentity {
    /// Builds an identity.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] if a field exceeds [`MAX_IDENTITY_FIELD_LEN`].
    pub fn new(
        region: &str,
        space: &str,
        pseudonym: Pseudonym,
        object_id: &str,
    ) -> Result<Self, CryptoError> {
        if [region, space, object_id]
            .iter()
            .any(|f| f.len() > MAX_IDENTITY_FIELD_LEN)
        {
            return Err(CryptoError::Malformed);
        }
        Ok(Self {
            region: region.to_owned(),
            space: space.to_owned(),
            pseudonym,
            object_id: object_id.to_owned(),
        })
    }

    /// Storage region the object lives in (for example `cn-north-1`).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Configured namespace (`moments`, `channels`, ...).
    pub fn space(&self) -> &str {
        &self.space
    }

    /// The owner's pseudonym.
    pub fn pseudonym(&self) -> Pseudonym {
        self.pseudonym
    }

    /// The object id within the user's space.
    pub fn object_id(&self) -> &str {
        &self.object_id
    }

    /// The canonical encoding for an object of format `version`, used
    /// both as C2SP context and key-slot AAD:
    ///
    /// `lp("sealgate/object") || lp(u8 format version) || lp(region) || lp(space)
    ///  || lp(pseudonym: 32 bytes) || lp(object id)` with `lp(x) = u16be(len(x)) || x`.
    ///
    /// The version in it binds the header's byte 6: a version-2 object
    /// relabelled version 1 (its digest cut off) fails at the key slot.
    pub fn encode(&self, version: Version) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(64 + self.region.len() + self.space.len() + self.object_id.len());
        for field in [
            IDENTITY_LABEL,
            &[version.byte()][..],
            self.region.as_bytes(),
            self.space.as_bytes(),
            self.pseudonym.as_bytes(),
            self.object_id.as_bytes(),
        ] {
            // Lengths are bounded by `new`, so the u16 prefix always fits.
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

/// The identity encoding followed by `lp(label)`: the context of the
/// metadata or the digest message.
fn labelled(identity: &[u8], label: &[u8]) -> Vec<u8> {
    let mut out = identity.to_vec();
    out.extend_from_slice(&(label.len() as u16).to_be_bytes());
    out.extend_from_slice(label);
    out
}

/// Object metadata, stored encrypted in the header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// MIME type given by the caller.
    pub content_type: String,
    /// Caller attributes, sorted by name.
    pub attributes: BTreeMap<String, String>,
}

impl Metadata {
    /// `lp(content type) || u16be(count) || (lp(name) || lp(value))*`, names
    /// in ascending byte order.
    ///
    /// # Errors
    /// [`CryptoError::MetadataTooLarge`] past [`MAX_METADATA_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        put_lp(&mut out, self.content_type.as_bytes())?;
        let count =
            u16::try_from(self.attributes.len()).map_err(|_| CryptoError::MetadataTooLarge)?;
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in &self.attributes {
            put_lp(&mut out, name.as_bytes())?;
            put_lp(&mut out, value.as_bytes())?;
        }
        if out.len() > MAX_METADATA_LEN {
            return Err(CryptoError::MetadataTooLarge);
        }
        Ok(out)
    }

    /// Decodes the canonical encoding [`Metadata::encode`] produces, as
    /// [`Header::unseal`] does after opening the sealed metadata.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] for anything but a canonical
    /// encoding: invalid UTF-8, names out of order or repeated, a count that
    /// does not match, a field past the end, trailing bytes.
    pub fn decode(mut input: &[u8]) -> Result<Self, CryptoError> {
        let text =
            |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| CryptoError::DecryptionFailed);
        let content_type = text(take_lp(&mut input)?)?;
        if input.len() < 2 {
            return Err(CryptoError::DecryptionFailed);
        }
        let count = u16::from_be_bytes([input[0], input[1]]);
        input = &input[2..];
        let mut attributes = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..count {
            let name = text(take_lp(&mut input)?)?;
            let value = text(take_lp(&mut input)?)?;
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(CryptoError::DecryptionFailed);
            }
            last = Some(name.clone());
            attributes.insert(name, value);
        }
        if !input.is_empty() {
            return Err(CryptoError::DecryptionFailed);
        }
        Ok(Self {
            content_type,
            attributes,
        })
    }
}

/// The key slot: which user-key version wraps the DEK, and the wrapped DEK.
/// Fixed-size and at a fixed offset, so it can be rewritten in place without
/// touching the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySlot {
    /// Version of the owner's user key that wraps the DEK.
    pub user_key_version: u32,
    /// The DEK wrapped in the object's suite (AES-256-GCM or SM4-GCM),
    /// AAD = identity encoding.
    pub wrapped_dek: WrappedDek,
}

impl KeySlot {
    /// Encoded length.
    pub const LEN: usize = 4 + WRAPPED_LEN;

    fn seal(
        suite: Suite,
        user_key: &UserKey,
        version: u32,
        dek: &Dek,
        identity: &[u8],
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            user_key_version: version,
            wrapped_dek: user_key.wrap_dek(suite, dek, identity)?,
        })
    }

    /// `u32be(version) || wrapped DEK`.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&self.user_key_version.to_be_bytes());
        out[4..].copy_from_slice(self.wrapped_dek.as_bytes());
        out
    }

    /// Parses an encoded key slot.
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for a wrong length.
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != Self::LEN {
            return Err(CryptoError::Malformed);
        }
        Ok(Self {
            user_key_version: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            wrapped_dek: WrappedDek::from_bytes(&bytes[4..])?,
        })
    }

    /// Re-wraps the DEK of an object of format `(version, suite)` under
    /// another user key (rotation). The body, metadata and digest stay
    /// valid: they depend on the DEK, not on the slot.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if `old` does not unwrap this slot.
    pub fn rewrap(
        &self,
        (version, suite): (Version, Suite),
        old: &UserKey,
        new: &UserKey,
        new_version: u32,
        identity: &ObjectIdentity,
    ) -> Result<Self, CryptoError> {
        let encoded = identity.encode(version);
        let dek = old.unwrap_dek(suite, &self.wrapped_dek, &encoded)?;
        Self::seal(suite, new, new_version, &dek, &encoded)
    }
}

/// A parsed object header. Parsing needs no key; [`Header::unseal`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// What follows the body.
    pub version: Version,
    /// The suite of every primitive below.
    pub suite: Suite,
    /// The key slot.
    pub key_slot: KeySlot,
    sealed_metadata: Vec<u8>,
}

impl Header {
    /// The total header length announced by its fixed part, so that a reader
    /// knows how many bytes to fetch before calling [`Header::parse`].
    ///
    /// # Errors
    /// [`CryptoError::Malformed`] for a short prefix or bad magic or lengths;
    /// [`CryptoError::UnsupportedVersion`] / [`CryptoError::UnsupportedSuite`].
    pub fn total_len(prefix: &[u8]) -> Result<usize, CryptoError> {
        if prefix.len() < FIXED_HEADER_LEN || prefix[..6] != MAGIC {
            return Err(CryptoError::Malformed);
        }
        Version::from_byte(prefix[VERSION_OFFSET])?;
        Suite::from_id(prefix[SUITE_OFFSET])?;
        let m = &prefix[FIXED_HEADER_LEN - 4..FIXED_HEADER_LEN];
        let m = u32::from_be_bytes([m[0], m[1], m[2], m[3]]) as usize;
        let max = chunked::message_len(MAX_METADATA_LEN as u64) as usize;
        if m < chunked::message_len(0) as usize || m > max {
            return Err(CryptoError::Malformed);
        }
        Ok(FIXED_HEADER_LEN + m)
    }

    /// The suite named by a header's fixed part.
    ///
    /// # Errors
    /// As [`Header::total_len`].
    pub fn suite_of(prefix: &[u8]) -> Result<Suite, CryptoError> {
        Ok(Self::format_of(prefix)?.1)
    }

    /// The version and suite named by a header's fixed part.
    ///
    /// # Errors
    /// As [`Header::total_len`].
    pub fn format_of(prefix: &[u8]) -> Result<(Version, Suite), CryptoError> {
        Self::total_len(prefix)?;
        Ok((
            Version::from_byte(prefix[VERSION_OFFSET])?,
            Suite::from_id(prefix[SUITE_OFFSET])?,
        ))
    }

    /// Parses a complete header; `bytes` may continue with the body.
    ///
    /// # Errors
    /// As [`Header::total_len`], or [`CryptoError::Malformed`] if `bytes` is
    /// shorter than the header.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let total = Self::total_len(bytes)?;
        if bytes.len() < total {
            return Err(CryptoError::Malformed);
        }
        let (version, suite) = Self::format_of(bytes)?;
        Ok(Self {
            version,
            suite,
            key_slot: KeySlot::decode(&bytes[KEY_SLOT_OFFSET..KEY_SLOT_OFFSET + KeySlot::LEN])?,
            sealed_metadata: bytes[FIXED_HEADER_LEN..total].to_vec(),
        })
    }

    /// Encoded length of this header.
    pub fn len(&self) -> usize {
        FIXED_HEADER_LEN + self.sealed_metadata.len()
    }

    /// Never true: a header always has its fixed part.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&MAGIC);
        out.push(self.version.byte());
        out.push(self.suite.id());
        out.extend_from_slice(&self.key_slot.encode());
        out.extend_from_slice(&(self.sealed_metadata.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.sealed_metadata);
        out
    }

    /// Byte range of the key slot within an encoded object, for in-place
    /// rewrites.
    pub const KEY_SLOT_RANGE: std::ops::Range<usize> =
        KEY_SLOT_OFFSET..KEY_SLOT_OFFSET + KeySlot::LEN;

    /// Unwraps the DEK with `user_key` and decrypts the metadata.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the key or identity is wrong or
    /// the header was modified.
    pub fn unseal(
        &self,
        user_key: &UserKey,
        identity: &ObjectIdentity,
    ) -> Result<UnsealedObject, CryptoError> {
        let context = identity.encode(self.version);
        let suite = self.suite;
        let dek = user_key.unwrap_dek(suite, &self.key_slot.wrapped_dek, &context)?;
        let plain = open_message(
            suite,
            dek.expose(),
            &labelled(&context, METADATA_LABEL),
            &self.sealed_metadata,
        )?;
        let metadata = Metadata::decode(&plain)?;
        Ok(UnsealedObject {
            version: self.version,
            suite,
            dek,
            context,
            metadata,
        })
    }
}

/// An object whose key slot has been opened: holds the DEK, ready to open the
/// body as a stream or by range.
pub struct UnsealedObject {
    version: Version,
    suite: Suite,
    dek: Dek,
    context: Vec<u8>,
    /// The decrypted metadata.
    pub metadata: Metadata,
}

impl UnsealedObject {
    /// A streaming opener for the body, given its 56-byte message header.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the commitment does not match.
    pub fn body_opener(&self, body_header: &[u8]) -> Result<Opener, CryptoError> {
        Opener::new_in(self.suite, self.dek.expose(), &self.context, body_header)
    }

    /// A random-access opener for the body, given its 56-byte message header.
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the commitment does not match.
    pub fn body_random_access(&self, body_header: &[u8]) -> Result<RandomAccess, CryptoError> {
        RandomAccess::new_in(self.suite, self.dek.expose(), &self.context, body_header)
    }

    /// The plaintext's SHA-256 that a version-2 object stores, from its
    /// sealed digest (the object's last [`SEALED_DIGEST_LEN`] bytes).
    ///
    /// # Errors
    /// [`CryptoError::DecryptionFailed`] if the digest does not open, or
    /// the object is of version 1 (it has none).
    pub fn open_digest(&self, sealed: &[u8]) -> Result<[u8; SHA256_LEN], CryptoError> {
        if self.version != Version::V2 || sealed.len() != SEALED_DIGEST_LEN {
            return Err(CryptoError::DecryptionFailed);
        }
        let plain = open_message(
            self.suite,
            self.dek.expose(),
            &labelled(&self.context, DIGEST_LABEL),
            sealed,
        )?;
        plain.try_into().map_err(|_| CryptoError::DecryptionFailed)
    }
}
