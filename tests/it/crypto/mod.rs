//! Crypto core tests: Wycheproof vectors, a differential check against an
//! independent reader over RustCrypto's GCM (both suites), a second
//! independent reader in Python (`tests/format/open_object.py`), envelope
//! tampering, properties, key hygiene and the golden objects under
//! `tests/golden/`. The envelope tests run in both format versions
//! ([`formats`]): version 2's sealed digest after the body included.

mod differential;
mod golden;
mod keys;
mod parsers;
mod properties;
mod python_reader;
mod sm4_vectors;
mod tampering;
mod wycheproof_vectors;

use aws_lc_rs::digest::{digest, SHA256};
use sealgate::crypto::chunked::{self, Opener, RandomAccess, RangePlan, Sealer};
use sealgate::crypto::envelope::{SEALED_DIGEST_LEN, SHA256_LEN};
use sealgate::crypto::{
    CryptoError, Header, Metadata, ObjectIdentity, ObjectLayout, ObjectSealer, Suite,
    UnsealedObject, UserKey, Version,
};

/// Every format of an object: each version in each suite.
pub fn formats() -> impl Iterator<Item = (Version, Suite)> {
    Version::ALL
        .into_iter()
        .flat_map(|v| Suite::ALL.into_iter().map(move |s| (v, s)))
}

/// The plaintext's SHA-256 (aws-lc-rs), to compare with a stored digest.
pub fn sha256(bytes: &[u8]) -> [u8; SHA256_LEN] {
    digest(&SHA256, bytes).as_ref().try_into().unwrap()
}

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
    /// `UnsealedObject::open_digest` (version 2, after the whole body).
    Digest,
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

/// Seals a whole object in the format `(format version, suite)` with
/// [`ObjectSealer::new_in`], pushing the body in pieces of `piece` bytes
/// (what [`ObjectSealer::new`] writes is `(Version::V2, suite)`). Checks
/// what the sealer says of the object on the way: its stored length (told
/// before the body), the plaintext's SHA-256, and the object's layout.
pub fn seal_object_in(
    (format, suite): (Version, Suite),
    user_key: &UserKey,
    version: u32,
    identity: &ObjectIdentity,
    metadata: &Metadata,
    plaintext: &[u8],
    piece: usize,
) -> Vec<u8> {
    let (mut sealer, mut out) =
        ObjectSealer::new_in((format, suite), user_key, version, identity, metadata)
            .expect("object sealer");
    let stored_len = sealer.stored_len(plaintext.len() as u64);
    for p in plaintext.chunks(piece.max(1)) {
        sealer.push(p, &mut out).expect("push");
    }
    assert_eq!(sealer.plaintext_len(), plaintext.len() as u64);
    assert_eq!(sealer.plaintext_sha256(), sha256(plaintext));
    sealer.finish(&mut out).expect("finish");
    assert_eq!(out.len() as u64, stored_len, "stored length told up front");
    assert_eq!(out[6], format.byte());
    assert_eq!(out[7], suite.id());
    let layout = ObjectLayout::new(&out, out.len() as u64).expect("layout");
    assert_eq!(
        (layout.version(), layout.suite()),
        (format, suite),
        "layout"
    );
    assert_eq!(layout.plaintext_len(), plaintext.len() as u64);
    out
}

/// Where the body of an object ends: the version's trailer (104 bytes in
/// version 2, none in version 1) before the end, but not before
/// `header_len`. This is
/// [`ObjectLayout`]'s arithmetic, without its checks, so that a damaged
/// object reaches the opener.
pub fn body_end(object_len: usize, header_len: usize, version: Version) -> usize {
    object_len
        .saturating_sub(version.trailer_len() as usize)
        .max(header_len)
}

/// The body message of a well-formed object: after the header, before
/// the digest of version 2.
pub fn body_of(object: &[u8]) -> &[u8] {
    let header = Header::parse(object).expect("header");
    &object[header.len()..body_end(object.len(), header.len(), header.version)]
}

/// The sealed digest of a well-formed version-2 object: its last 104 bytes.
pub fn sealed_digest_of(object: &[u8]) -> &[u8] {
    assert_eq!(Header::parse(object).unwrap().version, Version::V2);
    &object[object.len() - SEALED_DIGEST_LEN..]
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
/// user key by the slot's version, unseal, then stream the body (up to the
/// digest in version 2) in pieces of `piece` bytes; in version 2, then open
/// the sealed digest, which must be the SHA-256 of the plaintext.
pub fn open_object<'k>(
    object: &[u8],
    keyring: impl Fn(u32) -> Option<&'k UserKey>,
    identity: &ObjectIdentity,
    piece: usize,
) -> Result<(Metadata, Vec<u8>), OpenFailure> {
    open_object_with_digest(object, keyring, identity, piece).map(|(m, p, _)| (m, p))
}

/// An object opened by [`open_object_with_digest`]: its metadata, its
/// plaintext and the digest it stores (version 2).
pub type Opened = (Metadata, Vec<u8>, Option<[u8; SHA256_LEN]>);

/// [`open_object`], also returning the digest a version-2 object stores
/// (`None` in version 1, whose `open_digest` must fail).
pub fn open_object_with_digest<'k>(
    object: &[u8],
    keyring: impl Fn(u32) -> Option<&'k UserKey>,
    identity: &ObjectIdentity,
    piece: usize,
) -> Result<Opened, OpenFailure> {
    let (unsealed, header_len) = unseal_object(object, keyring, identity)?;
    let version = Header::parse(object)
        .expect("parsed by unseal_object")
        .version;
    let body_end = body_end(object.len(), header_len, version);
    let body = &object[header_len..body_end];
    let split = body.len().min(chunked::HEADER_LEN);
    let mut opener = unsealed
        .body_opener(&body[..split])
        .map_err(|e| OpenFailure {
            stage: Stage::BodyOpener,
            error: Some(e),
            released: 0,
        })?;
    // A whole read of a stored body decrypts it in place instead: it must
    // give the same plaintext, or fail too.
    let in_place = unsealed.body_random_access(&body[..split]).and_then(|ra| {
        let mut whole = body[split..].to_vec();
        let n = ra.open_whole_in_place(&mut whole)?;
        whole.truncate(n);
        Ok(whole)
    });
    let mut out = Vec::new();
    let streamed = (|| {
        for p in body[split..].chunks(piece.max(1)) {
            opener.push(p, &mut out).map_err(|e| (Stage::Push, e))?;
        }
        opener.finish(&mut out).map_err(|e| (Stage::Finish, e))
    })();
    match (&streamed, &in_place) {
        (Ok(()), Ok(whole)) => assert!(*whole == out, "in place: another plaintext"),
        (Err(_), Err(e)) => assert_eq!(*e, CryptoError::DecryptionFailed),
        _ => panic!(
            "streamed {streamed:?}, but in place {:?}",
            in_place.as_ref().map(Vec::len)
        ),
    }
    streamed.map_err(|(stage, e)| OpenFailure {
        stage,
        error: Some(e),
        released: out.len(),
    })?;
    let digest = match version {
        Version::V1 => {
            // A version-1 object has no digest, whatever follows its body.
            assert_eq!(
                unsealed.open_digest(&object[object.len().saturating_sub(SEALED_DIGEST_LEN)..]),
                Err(CryptoError::DecryptionFailed),
                "a version-1 object has no digest"
            );
            None
        }
        Version::V2 => {
            let d = unsealed
                .open_digest(&object[body_end..])
                .map_err(|e| OpenFailure {
                    stage: Stage::Digest,
                    error: Some(e),
                    released: out.len(),
                })?;
            // Only the writer, holding the DEK, could have sealed it.
            assert_eq!(d, sha256(&out), "the digest is not the plaintext's SHA-256");
            Some(d)
        }
    };
    Ok((unsealed.metadata.clone(), out, digest))
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
