//! Property tests: round trips with arbitrary push splits, range reads at
//! every chunk boundary, and the length arithmetic, in both suites (the
//! length arithmetic is the same for both); whole objects in both format
//! versions.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use sealgate::crypto::aead::TAG_LEN;
use sealgate::crypto::chunked::{
    self, Opener, RandomAccess, RangePlan, Sealer, CHUNK_SIZE, ENCRYPTED_CHUNK_LEN, HEADER_LEN,
    MAX_CHUNKS,
};
use sealgate::crypto::{
    CryptoError, Header, Metadata, NamingKey, ObjectIdentity, ObjectLayout, Suite, UserKey, Version,
};

use super::{
    body_of, open_object_with_digest, pattern, read_range, seal_message_in, seal_object_in, sha256,
    single_key, unseal_object, visits,
};

const C: usize = CHUNK_SIZE;
const MIB: usize = 1024 * 1024;

/// Sorted cut points in `0..=len`, always including both ends.
fn cut_points(len: usize, cuts: &[Index]) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points
}

fn any_suite() -> impl Strategy<Value = Suite> {
    prop::sample::select(Suite::ALL.to_vec())
}

fn any_version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

/// Seals with pushes at `seal_cuts` and opens with pushes at `open_cuts`.
fn round_trip(
    suite: Suite,
    key: &[u8; 32],
    context: &[u8],
    plaintext: &[u8],
    seal_cuts: &[Index],
    open_cuts: &[Index],
) -> Result<(), TestCaseError> {
    let (mut sealer, header) = Sealer::new_in(suite, key, context).unwrap();
    let mut message = header.to_vec();
    for w in cut_points(plaintext.len(), seal_cuts).windows(2) {
        sealer.push(&plaintext[w[0]..w[1]], &mut message).unwrap();
        prop_assert_eq!(sealer.plaintext_len(), w[1] as u64);
        // Only whole chunks leave the sealer before finish.
        prop_assert_eq!(message.len(), HEADER_LEN + w[1] / C * ENCRYPTED_CHUNK_LEN);
    }
    sealer.finish(&mut message).unwrap();
    prop_assert_eq!(
        message.len() as u64,
        chunked::message_len(plaintext.len() as u64)
    );
    prop_assert_eq!(
        chunked::plaintext_len(message.len() as u64),
        Ok(plaintext.len() as u64)
    );

    let mut opener = Opener::new_in(suite, key, context, &message[..HEADER_LEN]).unwrap();
    let body = &message[HEADER_LEN..];
    let mut out = Vec::new();
    for w in cut_points(body.len(), open_cuts).windows(2) {
        opener.push(&body[w[0]..w[1]], &mut out).unwrap();
        // Plaintext is released for whole authenticated full chunks only.
        prop_assert_eq!(
            out.len(),
            (w[1] / ENCRYPTED_CHUNK_LEN).min(plaintext.len() / C) * C
        );
    }
    opener.finish(&mut out).unwrap();
    prop_assert!(out == plaintext, "round trip changed the plaintext");

    // A random-access opener turned streaming opens the same message (the
    // path of a whole read after `open` checked the commitment).
    let ra = RandomAccess::new_in(suite, key, context, &message[..HEADER_LEN]).unwrap();
    let mut opener = ra.into_opener();
    let mut again = Vec::new();
    for w in cut_points(body.len(), open_cuts).windows(2) {
        opener.push(&body[w[0]..w[1]], &mut again).unwrap();
    }
    opener.finish(&mut again).unwrap();
    prop_assert!(again == plaintext, "into_opener changed the plaintext");

    // A whole body decrypted in place gives it too, at the buffer's front.
    let ra = RandomAccess::new_in(suite, key, context, &message[..HEADER_LEN]).unwrap();
    let mut whole = body.to_vec();
    let n = ra.open_whole_in_place(&mut whole).unwrap();
    prop_assert!(
        whole[..n] == *plaintext,
        "open_whole_in_place changed the plaintext"
    );
    Ok(())
}

fn sizes() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(C - 1),
        Just(C),
        Just(C + 1),
        Just(2 * C - 1),
        Just(2 * C),
        Just(2 * C + 1),
        0usize..4 * C,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_small(
        suite in any_suite(),
        len in sizes(),
        seed in any::<u64>(),
        key in any::<[u8; 32]>(),
        context in vec(any::<u8>(), 0..32),
        seal_cuts in vec(any::<Index>(), 0..8),
        open_cuts in vec(any::<Index>(), 0..8),
    ) {
        round_trip(suite, &key, &context, &pattern(len, seed), &seal_cuts, &open_cuts)?;
    }

    #[test]
    fn plaintext_len_inverts_message_len(n in 0u64..MAX_CHUNKS * C as u64) {
        prop_assert_eq!(chunked::plaintext_len(chunked::message_len(n)), Ok(n));
    }

    /// Every message length is either produced by exactly one plaintext
    /// length or rejected.
    #[test]
    fn plaintext_len_accepts_only_message_lengths(len in 0u64..1 << 40) {
        match chunked::plaintext_len(len) {
            Ok(n) => prop_assert_eq!(chunked::message_len(n), len),
            Err(e) => {
                prop_assert_eq!(e, CryptoError::DecryptionFailed);
                let tail = len.checked_sub(HEADER_LEN as u64).map(|b| b % ENCRYPTED_CHUNK_LEN as u64);
                prop_assert!(tail.is_none_or(|t| t < TAG_LEN as u64));
            }
        }
    }

    /// A whole object of either version and suite opens to its metadata and
    /// plaintext; its layout (from its first bytes and length) gives the
    /// plaintext length and, in version 2, the digest as its last 104
    /// bytes, which opens to the plaintext's SHA-256; a range to the end
    /// reads through the layout's body.
    #[test]
    fn object_round_trip(
        version in any_version(),
        suite in any_suite(),
        len in sizes(),
        seed in any::<u64>(),
        piece in 1usize..3 * C,
        content_type in "[a-z/]{0,20}",
        attributes in proptest::collection::btree_map("[a-z]{0,8}", ".{0,8}", 0..4),
    ) {
        let key = UserKey::generate().unwrap();
        let p = NamingKey::from_bytes(&[5u8; 32]).unwrap().pseudonym("dave");
        let identity = ObjectIdentity::new("r", "s", p, "o").unwrap();
        let metadata = Metadata { content_type, attributes };
        let plaintext = pattern(len, seed);
        let object = seal_object_in(
            (version, suite), &key, 7, &identity, &metadata, &plaintext, piece,
        );
        prop_assert_eq!(object[6], version.byte());
        prop_assert_eq!(object[7], suite.id());
        let (meta, plain, digest) =
            open_object_with_digest(&object, single_key(7, &key), &identity, piece).unwrap();
        prop_assert_eq!(meta, metadata);
        prop_assert!(plain == plaintext);
        prop_assert_eq!(digest, (version == Version::V2).then(|| sha256(&plaintext)));

        let stored = object.len() as u64;
        let layout = ObjectLayout::new(&object, stored).unwrap();
        let header_len = Header::parse(&object).unwrap().len() as u64;
        prop_assert_eq!((layout.version(), layout.suite()), (version, suite));
        prop_assert_eq!(layout.plaintext_len(), len as u64);
        prop_assert_eq!(layout.header_len(), header_len);
        prop_assert_eq!(
            layout.digest(),
            (version == Version::V2).then(|| stored - 104..stored)
        );
        prop_assert_eq!(
            layout.chunks(),
            header_len + HEADER_LEN as u64..stored - version.trailer_len()
        );
        prop_assert_eq!(ObjectLayout::stored_len(version, header_len, len as u64), stored);
        let body = body_of(&object);
        prop_assert_eq!(body.len() as u64, layout.body_len());
        if len > 0 {
            let (unsealed, _) = unseal_object(&object, single_key(7, &key), &identity).unwrap();
            let ra = unsealed.body_random_access(&body[..HEADER_LEN]).unwrap();
            let start = (seed % len as u64).min(len as u64 - 1);
            prop_assert_eq!(
                read_range(&ra, body, start, None).unwrap(),
                plaintext[start as usize..].to_vec()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn round_trip_mebibytes(
        suite in any_suite(),
        len in prop_oneof![Just(5 * MIB), Just(5 * MIB + 1), (3 * MIB..6 * MIB)],
        seed in any::<u64>(),
        key in any::<[u8; 32]>(),
        seal_cuts in vec(any::<Index>(), 0..16),
        open_cuts in vec(any::<Index>(), 0..16),
    ) {
        round_trip(suite, &key, b"big", &pattern(len, seed), &seal_cuts, &open_cuts)?;
    }
}

fn boundary_offsets(n: u64) -> Vec<u64> {
    let c = C as u64;
    let mut v = vec![0, 1, n.saturating_sub(1), n, n + 1];
    for k in 1..=n / c + 1 {
        v.extend([k * c - 1, k * c, k * c + 1]);
    }
    v.retain(|&o| o <= n + 1);
    v.sort_unstable();
    v.dedup();
    v
}

fn expected_range(plaintext: &[u8], start: u64, end: Option<u64>) -> Result<Vec<u8>, CryptoError> {
    let n = plaintext.len() as u64;
    let end = end.unwrap_or(u64::MAX);
    if start >= n || end <= start {
        return Err(CryptoError::RangeOutOfBounds);
    }
    Ok(plaintext[start as usize..end.min(n) as usize].to_vec())
}

fn check_plan(n: u64, message_len: u64, start: u64, end: Option<u64>) {
    let Ok(plan) = RangePlan::new(message_len, start, end) else {
        return;
    };
    let c = C as u64;
    let clamped = end.unwrap_or(u64::MAX).min(n);
    assert_eq!(plan.plaintext, start..clamped);
    assert_eq!(plan.needs_length_check, end.is_none_or(|e| e >= n));
    let (first, last, final_chunk) = (start / c, (clamped - 1) / c, n / c);
    let ct = plan.ciphertext_range();
    assert_eq!(ct.start, chunked::chunk_offset(first));
    assert_eq!(ct.end, chunked::chunk_offset(last + 1).min(message_len));
    let expected_final = (plan.needs_length_check && last != final_chunk)
        .then(|| chunked::chunk_offset(final_chunk)..message_len);
    assert_eq!(plan.final_chunk_range(), expected_final);
}

/// Every pair of boundary offsets, through `RangePlan` + `open_range`.
#[test]
fn range_reads_at_every_boundary() {
    for suite in Suite::ALL {
        range_reads_at_every_boundary_in(suite);
    }
}

fn range_reads_at_every_boundary_in(suite: Suite) {
    let key = [3u8; 32];
    for n in [
        0,
        1,
        2,
        C - 1,
        C,
        C + 1,
        2 * C - 1,
        2 * C,
        2 * C + 1,
        3 * C - 7,
    ] {
        let plaintext = pattern(n, n as u64);
        let message = seal_message_in(suite, &key, b"ranges", &plaintext, 5000);
        let ra = RandomAccess::new_in(suite, &key, b"ranges", &message[..HEADER_LEN]).unwrap();
        let offsets = boundary_offsets(n as u64);
        let mut ends: Vec<Option<u64>> = offsets.iter().copied().map(Some).collect();
        ends.extend([None, Some(u64::MAX)]);
        for &start in &offsets {
            for &end in &ends {
                check_plan(n as u64, message.len() as u64, start, end);
                assert_eq!(
                    read_range(&ra, &message, start, end),
                    expected_range(&plaintext, start, end),
                    "{suite}: n = {n}, range {start}..{end:?}"
                );
            }
        }
        assert_eq!(
            read_range(&ra, &message, u64::MAX, None),
            Err(CryptoError::RangeOutOfBounds)
        );
    }
}

/// Ranges of a multi-MiB message: starts at chunk boundaries, random ranges.
#[test]
fn range_reads_in_a_large_message() {
    for suite in Suite::ALL {
        range_reads_in_a_large_message_in(suite);
    }
}

fn range_reads_in_a_large_message_in(suite: Suite) {
    let key = [8u8; 32];
    let n = 5 * MIB + 123;
    let plaintext = pattern(n, 77);
    let message = seal_message_in(suite, &key, b"", &plaintext, MIB);
    let ra = RandomAccess::new_in(suite, &key, b"", &message[..HEADER_LEN]).unwrap();
    let n = n as u64;
    let c = C as u64;
    let mut state = 1u64;
    let mut next = |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 17) % m
    };
    let mut ranges = vec![(0, None), (n - 1, None), (0, Some(n)), (n - 1, Some(n + 5))];
    for k in 1..=n / c {
        let b = k * c;
        ranges.push((b - 1, Some(b + 1)));
        ranges.push((b, Some((b + 3 * c).min(n))));
    }
    for _ in 0..50 {
        let s = next(n);
        ranges.push((s, Some(s + 1 + next(4 * c))));
    }
    for _ in 0..5 {
        ranges.push((next(n), None));
    }
    for (start, end) in ranges {
        check_plan(n, message.len() as u64, start, end);
        let got = read_range(&ra, &message, start, end).unwrap();
        assert!(
            Ok(got) == expected_range(&plaintext, start, end),
            "{suite}: range {start}..{end:?}"
        );
    }
}

/// `open_range` insists on the planned inputs, and on authenticating the
/// length whenever the range reaches the end of the message.
#[test]
fn range_reads_reject_wrong_inputs_and_unauthenticated_lengths() {
    for suite in Suite::ALL {
        range_reads_reject_wrong_inputs_and_unauthenticated_lengths_in(suite);
    }
}

fn range_reads_reject_wrong_inputs_and_unauthenticated_lengths_in(suite: Suite) {
    let key = [6u8; 32];
    let plaintext = pattern(40_000, 6);
    let message = seal_message_in(suite, &key, b"ctx", &plaintext, 40_000);
    let ra = RandomAccess::new_in(suite, &key, b"ctx", &message[..HEADER_LEN]).unwrap();
    let len = message.len() as u64;
    let slice = |r: std::ops::Range<u64>| &message[r.start as usize..r.end as usize];

    // A range bounded by the end of the message authenticates the final
    // chunk: inside the covering chunks, or separately when the message ends
    // on a chunk boundary and the final chunk is the empty one.
    let plan = RangePlan::new(len, 10, None).unwrap();
    assert!(plan.needs_length_check && plan.final_chunk_range().is_none());
    let mut cov = slice(plan.ciphertext_range()).to_vec();
    assert_eq!(cov.len(), message.len() - HEADER_LEN);
    assert_eq!(ra.open_range(&plan, &cov, None).unwrap(), plaintext[10..]);
    let last = cov.len() - 1;
    cov[last] ^= 1;
    assert!(
        ra.open_range(&plan, &cov, None).is_err(),
        "forged final chunk"
    );

    let even = pattern(2 * C, 2);
    let even_message = seal_message_in(suite, &key, b"ctx", &even, 1000);
    let even_len = even_message.len() as u64;
    let even_slice = |r: std::ops::Range<u64>| &even_message[r.start as usize..r.end as usize];
    let ra_even = RandomAccess::new_in(suite, &key, b"ctx", &even_message[..HEADER_LEN]).unwrap();
    for (start, end) in [
        (10, None),
        (10, Some(2 * C as u64)),
        (C as u64, Some(u64::MAX)),
    ] {
        let plan = RangePlan::new(even_len, start, end).unwrap();
        let fin = plan
            .final_chunk_range()
            .expect("the empty final chunk is needed");
        assert_eq!(fin, chunked::chunk_offset(2)..even_len);
        let cov = even_slice(plan.ciphertext_range());
        let fin_bytes = even_slice(fin.clone());
        let expected = &even[start as usize..];
        assert_eq!(
            ra_even.open_range(&plan, cov, Some(fin_bytes)).unwrap(),
            expected
        );
        assert!(
            ra_even.open_range(&plan, cov, None).is_err(),
            "final chunk omitted"
        );
        assert!(ra_even
            .open_range(&plan, &cov[..cov.len() - 1], Some(fin_bytes))
            .is_err());
        let mut bad_final = fin_bytes.to_vec();
        bad_final[3] ^= 1;
        assert!(
            ra_even.open_range(&plan, cov, Some(&bad_final)).is_err(),
            "forged final chunk"
        );
        let mut bad_cov = cov.to_vec();
        bad_cov[5] ^= 1;
        assert!(
            ra_even
                .open_range(&plan, &bad_cov, Some(fin_bytes))
                .is_err(),
            "forged chunk"
        );
        // The message without its empty final chunk has an impossible length.
        assert!(RangePlan::new(fin.start, start, end).is_err());
    }

    // A bounded range needs no final chunk and refuses one.
    let plan = RangePlan::new(len, 10, Some(20)).unwrap();
    assert!(!plan.needs_length_check && plan.final_chunk_range().is_none());
    let cov = slice(plan.ciphertext_range());
    assert_eq!(ra.open_range(&plan, cov, None).unwrap(), plaintext[10..20]);
    assert!(ra
        .open_range(&plan, cov, Some(&message[message.len() - 10..]))
        .is_err());

    // The wrong chunk at the right place.
    let plan = RangePlan::new(len, C as u64 + 1, Some(C as u64 + 2)).unwrap();
    let chunk0 = slice(chunked::chunk_offset(0)..chunked::chunk_offset(1));
    assert!(
        ra.open_range(&plan, chunk0, None).is_err(),
        "chunk 0 read as chunk 1"
    );

    // A truncated or extended message: every read bounded by its (claimed)
    // end must fail, whatever the starting chunk.
    let mut lying_lengths = Vec::new();
    // Every claimed length in suite 1; in suite 2 those near a chunk
    // boundary or the true length, and a sample ([`visits`]).
    let anchors: Vec<usize> = (0..6)
        .map(|k| chunked::chunk_offset(k) as usize)
        .chain([len as usize])
        .collect();
    for l in (HEADER_LEN as u64..len).chain(len + 1..len + 2 * ENCRYPTED_CHUNK_LEN as u64) {
        if chunked::plaintext_len(l).is_ok() && visits(suite, l as usize, &anchors, 12) {
            lying_lengths.push(l);
        }
    }
    let extended = [&message[..], &message[HEADER_LEN..]].concat();
    for l in lying_lengths {
        let n = chunked::plaintext_len(l).unwrap();
        let bytes = &extended[..l as usize];
        for start in [0, n / 2, n.saturating_sub(1)] {
            if start < n {
                assert!(
                    read_range(&ra, bytes, start, None).is_err(),
                    "length {l} (true {len}) accepted for {start}.."
                );
                assert!(read_range(&ra, bytes, start, Some(n)).is_err());
            }
        }
        let final_index = n / C as u64;
        let tail = &bytes[chunked::chunk_offset(final_index) as usize..];
        assert!(ra.authenticate_length(l, tail).is_err(), "length {l}");
    }
    assert!(ra
        .authenticate_length(len, slice(chunked::chunk_offset(2)..len))
        .is_ok());
    // The genuine final chunk does not authenticate a different length that
    // puts the final chunk at the same index.
    let genuine_final = slice(chunked::chunk_offset(2)..len);
    for lie in [len - 1, len + 1, len - 100, len + 100] {
        assert_eq!(chunked::plaintext_len(lie).map(|n| n / C as u64), Ok(2));
        assert!(
            ra.authenticate_length(lie, genuine_final).is_err(),
            "length {lie}"
        );
        let plan = RangePlan::new(lie, 0, Some(10)).unwrap();
        let cov = slice(plan.ciphertext_range());
        assert!(
            ra.open_range(&plan, cov, None).is_ok(),
            "bounded reads ignore the length"
        );
    }
    // Same for the empty final chunk of a message ending on a boundary.
    let even_final = even_slice(chunked::chunk_offset(2)..even_len);
    assert!(ra_even.authenticate_length(even_len, even_final).is_ok());
    for lie in [even_len + 1, even_len + 5] {
        assert_eq!(chunked::plaintext_len(lie).map(|n| n / C as u64), Ok(2));
        assert!(
            ra_even.authenticate_length(lie, even_final).is_err(),
            "length {lie}"
        );
    }
    assert!(ra
        .authenticate_length(len, slice(chunked::chunk_offset(1)..len))
        .is_err());
}

#[test]
fn length_limits() {
    let c = C as u64;
    // 2^38 chunks: the last valid message has 2^38 - 1 full chunks and a
    // short final chunk.
    let largest = MAX_CHUNKS * c - 1;
    assert_eq!(
        chunked::plaintext_len(chunked::message_len(largest)),
        Ok(largest)
    );
    assert_eq!(
        chunked::plaintext_len(chunked::message_len(largest + 1)),
        Err(CryptoError::MessageTooLong)
    );
    assert_eq!(
        chunked::plaintext_len(chunked::chunk_offset(MAX_CHUNKS) + TAG_LEN as u64),
        Err(CryptoError::MessageTooLong)
    );
    for bad in [0, 1, HEADER_LEN as u64, HEADER_LEN as u64 + 15] {
        assert_eq!(
            chunked::plaintext_len(bad),
            Err(CryptoError::DecryptionFailed)
        );
        assert_eq!(
            RangePlan::new(bad, 0, None).err(),
            Some(CryptoError::DecryptionFailed)
        );
    }
    assert_eq!(chunked::message_len(0), 72);
    assert_eq!(
        chunked::message_len(c),
        HEADER_LEN as u64 + c + 2 * TAG_LEN as u64
    );
    assert_eq!(
        chunked::chunk_offset(1),
        (HEADER_LEN + ENCRYPTED_CHUNK_LEN) as u64
    );
    // Planning a read in a huge message is pure arithmetic.
    let huge = chunked::message_len(largest);
    assert_eq!(
        RangePlan::new(huge, largest, None).err(),
        Some(CryptoError::RangeOutOfBounds)
    );
    let plan = RangePlan::new(huge, largest - 1, None).unwrap();
    assert_eq!(plan.plaintext, largest - 1..largest);
    assert_eq!(plan.final_chunk_range(), None);
    assert_eq!(
        plan.ciphertext_range(),
        chunked::chunk_offset(MAX_CHUNKS - 1)..huge
    );
}
