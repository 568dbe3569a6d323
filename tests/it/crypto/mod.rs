//! Crypto core tests: Wycheproof vectors, a differential check against an
//! independent reader over RustCrypto's GCM (both suites), a second
//! independent reader in Python (`tests/format/open_object.py`), envelope
//! tampering, properties, key hygiene and the golden objects under
//! `tests/golden/`.

mod differential;
mod golden;
mod keys;
mod parsers;
mod properties;
mod python_reader;
mod sm4_vectors;
mod tampering;
mod wycheproof_vectors;

use sealgate::crypto::chunked::{self, Opener, RandomAccess, RangePlan, Sealer};
use sealgate::crypto::{
    CryptoError, Header, Metadata, ObjectIdentity, ObjectSealer, Suite, UnsealedObject, UserKey,
};

/// Whether a test that tries every byte position (flips, truncations,
/// claimed lengths) tries `pos` in `suite`. Suite 1 (aws-lc-rs) tries
/// every one. Suite 2's SM4-GCM is generic code (RustCrypto's GCM over the
/// SM4 block cipher) instantiated in sealgate itself, which the dev profile
/// leaves unoptimized: a few MB/s, so trying all of them in a 40000-byte
/// object would take minutes. In suite 2 such a test tries every position
/// within `window` bytes of an anchor (chunk boundaries, the end) and every
/// 61st position in between.
pub fn visits(suite: Suite, pos: usize, anchors: &[usize], window: usize) -> bool {
    suite == Suite::Aes256Gcm
        || pos.is_multiple_of(61)
        || anchors.iter().any(|a| pos.abs_diff(*a) <= window)
}

/// Deterministic pseudo-random bytes (xorshift64*), fast even unoptimized.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Seals `plaintext` as one C2SP message of `suite` (header included),
/// pushing it in pieces of `piece` bytes.
pub fn seal_message_in(
    suite: Suite,
    key: &[u8],
    context: &[u8],
    plaintext: &[u8],
    piece: usize,
) -> Vec<u8> {
    let (mut sealer, header) = Sealer::new_in(suite, key, context).expect("sealer");
    let mut out = header.to_vec();
    for p in plaintext.chunks(piece.max(1)) {
        sealer.push(p, &mut out).expect("push");
    }
    assert_eq!(sealer.plaintext_len(), plaintext.len() as u64);
    sealer.finish(&mut out).expect("finish");
    assert_eq!(
        out.len() as u64,
        chunked::message_len(plaintext.len() as u64)
    );
    out
}

/// Opens a whole C2SP message, pushing the ciphertext after the header in
/// pieces of `piece` bytes.
pub fn open_message(
    key: &[u8],
    context: &[u8],
    message: &[u8],
    piece: usize,
) -> Result<Vec<u8>, CryptoError> {
    open_message_in(Suite::Aes256Gcm, key, context, message, piece)
}

/// [`open_message`] in `suite`.
pub fn open_message_in(
    suite: Suite,
    key: &[u8],
    context: &[u8],
    message: &[u8],
    piece: usize,
) -> Result<Vec<u8>, CryptoError> {
    let split = message.len().min(chunked::HEADER_LEN);
    let mut opener = Opener::new_in(suite, key, context, &message[..split])?;
    let mut out = Vec::new();
    for p in message[split..].chunks(piece.max(1)) {
        opener.push(p, &mut out)?;
    }
    opener.finish(&mut out)?;
    Ok(out)
}

/// Where opening an object stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `Header::parse` (no key involved).
    Parse,
    /// No user key with the slot's version.
    KeyLookup,
    /// `Header::unseal`: DEK unwrap and metadata.
    Unseal,
    /// `UnsealedObject::body_opener`: the body commitment.
    BodyOpener,
    /// `Opener::push`.
    Push,
    /// `Opener::finish`.
    Finish,
}

/// A failed open: where, why, and how many plaintext bytes had already been
/// released by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFailure {
    pub stage: Stage,
    pub error: Option<CryptoError>,
    pub released: usize,
}

impl OpenFailure {
    /// True if the failure happened before any body chunk was decrypted.
    pub fn before_plaintext(&self) -> bool {
        matches!(
            self.stage,
            Stage::Parse | Stage::KeyLookup | Stage::Unseal | Stage::BodyOpener
        ) && self.released == 0
    }
}

/// Seals a whole suite-1 object with [`ObjectSealer`], pushing the body in
/// pieces.
pub fn seal_object(
    user_key: &UserKey,
    version: u32,
    identity: &ObjectIdentity,
    metadata: &Metadata,
    plaintext: &[u8],
    piece: usize,
) -> Vec<u8> {
    seal_object_in(
        Suite::Aes256Gcm,
        user_key,
        version,
        identity,
        metadata,
        plaintext,
        piece,
    )
}

/// [`seal_object`] in `suite`.
pub fn seal_object_in(
    suite: Suite,
    user_key: &UserKey,
    version: u32,
    identity: &ObjectIdentity,
    metadata: &Metadata,
    plaintext: &[u8],
    piece: usize,
) -> Vec<u8> {
    let (mut sealer, mut out) =
        ObjectSealer::new(suite, user_key, version, identity, metadata).expect("object sealer");
    for p in plaintext.chunks(piece.max(1)) {
        sealer.push(p, &mut out).expect("push");
    }
    assert_eq!(sealer.plaintext_len(), plaintext.len() as u64);
    sealer.finish(&mut out).expect("finish");
    out
}

/// Parses and unseals an object's header, returning the unsealed object and
/// the header length.
pub fn unseal_object<'k>(
    object: &[u8],
    keyring: impl Fn(u32) -> Option<&'k UserKey>,
    identity: &ObjectIdentity,
) -> Result<(UnsealedObject, usize), OpenFailure> {
    let fail = |stage, error| OpenFailure {
        stage,
        error,
        released: 0,
    };
    let header = Header::parse(object).map_err(|e| fail(Stage::Parse, Some(e)))?;
    let user_key = keyring(header.key_slot.user_key_version).ok_or(fail(Stage::KeyLookup, None))?;
    let unsealed = header
        .unseal(user_key, identity)
        .map_err(|e| fail(Stage::Unseal, Some(e)))?;
    Ok((unsealed, header.len()))
}

/// Opens a whole object the way the gateway streams one: parse, select the
/// user key by the slot's version, unseal, then stream the body in pieces of
/// `piece` bytes.
pub fn open_object<'k>(
    object: &[u8],
    keyring: impl Fn(u32) -> Option<&'k UserKey>,
    identity: &ObjectIdentity,
    piece: usize,
) -> Result<(Metadata, Vec<u8>), OpenFailure> {
    let (unsealed, header_len) = unseal_object(object, keyring, identity)?;
    let body = &object[header_len..];
    let split = body.len().min(chunked::HEADER_LEN);
    let mut opener = unsealed
        .body_opener(&body[..split])
        .map_err(|e| OpenFailure {
            stage: Stage::BodyOpener,
            error: Some(e),
            released: 0,
        })?;
    let mut out = Vec::new();
    for p in body[split..].chunks(piece.max(1)) {
        opener.push(p, &mut out).map_err(|e| OpenFailure {
            stage: Stage::Push,
            error: Some(e),
            released: out.len(),
        })?;
    }
    opener.finish(&mut out).map_err(|e| OpenFailure {
        stage: Stage::Finish,
        error: Some(e),
        released: out.len(),
    })?;
    Ok((unsealed.metadata.clone(), out))
}

/// A keyring holding exactly one user key.
pub fn single_key<'k>(version: u32, key: &'k UserKey) -> impl Fn(u32) -> Option<&'k UserKey> + 'k {
    move |v| (v == version).then_some(key)
}

/// Reads plaintext bytes `start..end` of a whole message through
/// [`RangePlan`] and [`RandomAccess::open_range`], handing it exactly the
/// ciphertext bytes the plan asks for.
pub fn read_range(
    ra: &RandomAccess,
    message: &[u8],
    start: u64,
    end: Option<u64>,
) -> Result<Vec<u8>, CryptoError> {
    let plan = RangePlan::new(message.len() as u64, start, end)?;
    let covering = plan.ciphertext_range();
    let covering = &message[covering.start as usize..covering.end as usize];
    let final_chunk = plan
        .final_chunk_range()
        .map(|r| &message[r.start as usize..r.end as usize]);
    ra.open_range(&plan, covering, final_chunk)
}
