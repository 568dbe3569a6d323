//! Every parser of stored bytes, fed damaged valid input: it never panics,
//! releases no plaintext that is not the original's, and nothing but the
//! original ever opens.
//!
//! Random bytes never get past the `SEALGT` magic or a 32-byte commitment,
//! so these properties damage valid objects instead (flip a byte, truncate,
//! extend, splice bytes in), aimed at each part of the object in turn. Each
//! property counts which branches its cases reached and fails unless every
//! branch it names ran for a good share of them: a property whose
//! assertions never run is a failure, not a pass.
//!
//! The object properties run on an object of each format version: in
//! version 2 the sealed digest after the body is one more part to damage,
//! and "opens" means the body and the digest.

use std::cell::Cell;
use std::ops::Range;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use sealgate::crypto::chunked::{self, RangePlan};
use sealgate::crypto::{
    Header, KeySlot, Metadata, NamingKey, ObjectIdentity, ObjectLayout, Suite, UserKey, Version,
};

use super::{body_end, pattern, read_range, seal_object_in, sha256};

/// Cases per property. The branch counts are random: each property's
/// minimum is far (five standard deviations or more) below the count its
/// distribution gives, so that a property fails only when a branch stops
/// being reached, not by chance.
const CASES: u32 = 1024;

fn runner() -> TestRunner {
    runner_of(CASES)
}

fn runner_of(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn identity() -> ObjectIdentity {
    let p = NamingKey::from_bytes(&[9u8; 32]).unwrap().pseudonym("fuzz");
    ObjectIdentity::new("cn-north-1", "moments", p, "obj").unwrap()
}

fn metadata() -> Metadata {
    Metadata {
        content_type: "image/jpeg".into(),
        attributes: [("caption", "ünïcödé"), ("height", "480"), ("width", "640")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A sealed suite-1 object of three body chunks (40000 bytes) in a format
/// version, its plaintext and its header length.
struct Sample {
    version: Version,
    key: UserKey,
    identity: ObjectIdentity,
    plaintext: Vec<u8>,
    object: Vec<u8>,
    header_len: usize,
}

fn sample(version: Version) -> Sample {
    let key = UserKey::generate().unwrap();
    let identity = identity();
    let plaintext = pattern(40_000, 11);
    let object = seal_object_in(
        (version, Suite::Aes256Gcm),
        &key,
        1,
        &identity,
        &metadata(),
        &plaintext,
        4096,
    );
    let header_len = Header::parse(&object).unwrap().len();
    Sample {
        version,
        key,
        identity,
        plaintext,
        object,
        header_len,
    }
}

impl Sample {
    /// Where the body ends (the digest starts, in version 2).
    fn body_end(&self) -> usize {
        self.object.len() - self.version.trailer_len() as usize
    }

    /// The parts of the object an edit is aimed at: magic, version and
    /// suite; the key slot's user-key version; its wrapped DEK; the metadata
    /// length and sealed metadata; the body's message header; its chunks;
    /// in version 2 the sealed digest.
    fn regions(&self) -> Vec<Range<usize>> {
        let h = self.header_len;
        let mut regions = vec![
            0..8,
            8..12,
            12..72,
            72..h,
            h..h + chunked::HEADER_LEN,
            h + chunked::HEADER_LEN..self.body_end(),
        ];
        if self.version == Version::V2 {
            regions.push(self.body_end()..self.object.len());
        }
        regions
    }
}

/// How to damage bytes.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Cut everything from a position on.
    Truncate(Index),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Replace `n` bytes at a position with others.
    Splice(Index, usize, Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Edit::Flip(i, m)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Edit::Extend),
        1 => (any::<Index>(), 0..8usize, prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(i, n, v)| Edit::Splice(i, n, v)),
    ]
}

/// Applies `edit` within `region` of `bytes`.
fn apply(bytes: &[u8], region: &Range<usize>, edit: &Edit) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = |i: &Index| region.start + i.index(region.len().max(1)).min(region.len());
    match edit {
        Edit::Flip(i, mask) => {
            if !region.is_empty() {
                out[at(i)] ^= mask;
            }
        }
        Edit::Truncate(i) => out.truncate(at(i)),
        Edit::Extend(v) => out.extend_from_slice(v),
        Edit::Splice(i, n, v) => {
            let start = at(i);
            let end = (start + n).min(out.len());
            out.splice(start..end, v.iter().copied());
        }
    }
    out
}

/// One or two edits, each aimed at a region chosen by index.
fn damage() -> impl Strategy<Value = Vec<(Index, Edit)>> {
    prop::collection::vec((any::<Index>(), edit()), 1..=2)
}

fn damaged(original: &[u8], regions: &[Range<usize>], edits: &[(Index, Edit)]) -> Vec<u8> {
    let mut out = original.to_vec();
    for (region, e) in edits {
        // Regions of the original, clamped to what is left after earlier edits.
        let r = &regions[region.index(regions.len())];
        let r = r.start.min(out.len())..r.end.min(out.len());
        out = apply(&out, &r, e);
    }
    out
}

/// Branch counters of one property.
struct Reached(Vec<(&'static str, Cell<u32>)>);

impl Reached {
    fn new(names: &[&'static str]) -> Self {
        Self(names.iter().map(|n| (*n, Cell::new(0))).collect())
    }

    fn hit(&self, name: &str) {
        let c = &self.0.iter().find(|(n, _)| *n == name).expect("branch").1;
        c.set(c.get() + 1);
    }

    /// Every branch ran in at least `min` cases.
    fn assert_each_at_least(&self, min: u32) {
        let counts: Vec<(&str, u32)> = self.0.iter().map(|(n, c)| (*n, c.get())).collect();
        for (name, count) in &counts {
            assert!(
                *count >= min,
                "branch {name:?} ran in {count} cases (want {min}): {counts:?}"
            );
        }
    }
}

/// The gateway's streaming read of a damaged object, stage by stage: parse,
/// key lookup by the slot's version, unseal (DEK unwrap and metadata),
/// the body commitment, `Opener::push` in 4 KiB pieces, `Opener::finish`,
/// and in version 2 the sealed digest after the body.
/// Whatever the damage, plaintext released is the original's prefix, and
/// only the original opens.
#[test]
fn damaged_objects_stream_only_authentic_plaintext() {
    for version in Version::ALL {
        damaged_objects_stream_only_authentic_plaintext_in(version);
    }
}

fn damaged_objects_stream_only_authentic_plaintext_in(version: Version) {
    let s = sample(version);
    let regions = s.regions();
    let mut branches = vec![
        "parse rejected",
        "no key for the slot's version",
        "unseal rejected",
        "unseal opened",
        "body commitment rejected",
        "push rejected",
        "push released plaintext, then a failure",
        "finish rejected",
    ];
    if version == Version::V2 {
        branches.push("body opened, digest rejected");
    }
    let reached = Reached::new(&branches);
    runner()
        .run(&damage(), |edits| {
            let bad = damaged(&s.object, &regions, &edits);
            if bad == s.object {
                return Ok(());
            }
            let Ok(header) = Header::parse(&bad) else {
                reached.hit("parse rejected");
                return Ok(());
            };
            if header.key_slot.user_key_version != 1 {
                reached.hit("no key for the slot's version");
                return Ok(());
            }
            let Ok(unsealed) = header.unseal(&s.key, &s.identity) else {
                reached.hit("unseal rejected");
                return Ok(());
            };
            reached.hit("unseal opened");
            prop_assert_eq!(&bad[..header.len()], &s.object[..s.header_len]);
            prop_assert_eq!(header.version, version);
            prop_assert_eq!(&unsealed.metadata, &metadata());
            let end = body_end(bad.len(), header.len(), header.version);
            let body = &bad[header.len()..end];
            let split = body.len().min(chunked::HEADER_LEN);
            let Ok(mut opener) = unsealed.body_opener(&body[..split]) else {
                reached.hit("body commitment rejected");
                return Ok(());
            };
            let mut out = Vec::new();
            let mut pushed = Ok(());
            for piece in body[split..].chunks(4096) {
                pushed = opener.push(piece, &mut out);
                if pushed.is_err() {
                    reached.hit("push rejected");
                    break;
                }
            }
            let finished = pushed.is_ok() && {
                let r = opener.finish(&mut out);
                if r.is_err() {
                    reached.hit("finish rejected");
                }
                r.is_ok()
            };
            prop_assert!(out.len() <= s.plaintext.len());
            prop_assert_eq!(&out[..], &s.plaintext[..out.len()]);
            if finished {
                // Only the original body opens; then only the digest can
                // be damaged, and it must not open.
                prop_assert_eq!(version, Version::V2, "a damaged object opened");
                prop_assert_eq!(&bad[..end], &s.object[..s.body_end()]);
                prop_assert!(out == s.plaintext);
                let digest = unsealed.open_digest(&bad[end..]);
                prop_assert!(digest.is_err(), "a damaged digest opened");
                reached.hit("body opened, digest rejected");
                prop_assert_eq!(
                    unsealed.open_digest(&s.object[s.body_end()..]),
                    Ok(sha256(&s.plaintext))
                );
            } else if !out.is_empty() {
                reached.hit("push released plaintext, then a failure");
            }
            Ok(())
        })
        .unwrap();
    reached.assert_each_at_least(10);
}

/// Random access to a damaged object: `RandomAccess::open_range` over any
/// range returns only the original's plaintext at those offsets, and a read
/// to the end succeeds only if the body has its original length. The body
/// is where [`ObjectLayout`] puts it: in version 2, 104 bytes before the
/// end of the (damaged) object.
#[test]
fn damaged_objects_by_range_return_only_authentic_plaintext() {
    for version in Version::ALL {
        damaged_objects_by_range_return_only_authentic_plaintext_in(version);
    }
}

fn damaged_objects_by_range_return_only_authentic_plaintext_in(version: Version) {
    let s = sample(version);
    // Damage only the body (and the digest): the header path is the
    // property above's.
    let h = s.header_len;
    let regions: Vec<Range<usize>> = s.regions().into_iter().skip(4).collect();
    assert_eq!(regions[0], h..h + chunked::HEADER_LEN);
    let reached = Reached::new(&[
        "range refused by the plan",
        "body commitment rejected",
        "open_range rejected",
        "open_range returned a range",
        "open_range returned a range to the end",
    ]);
    let unsealed = Header::parse(&s.object)
        .unwrap()
        .unseal(&s.key, &s.identity)
        .unwrap();
    let start = prop_oneof![0..42_000u64, 32_000..42_000u64];
    let strategy = (damage(), start, prop::option::of(0..42_000u64));
    // Twice the cases: a read to the end succeeds only when the damage
    // spares the chunks it covers and the length (about 2% of cases).
    runner_of(2 * CASES)
        .run(&strategy, |(edits, start, end)| {
            let bad = damaged(&s.object, &regions, &edits);
            let body = &bad[h..body_end(bad.len(), h, version)];
            let Ok(plan) = RangePlan::new(body.len() as u64, start, end) else {
                reached.hit("range refused by the plan");
                return Ok(());
            };
            // The gateway's layout finds the same body.
            let layout = ObjectLayout::new(&bad, bad.len() as u64).unwrap();
            prop_assert_eq!(layout.body_len(), body.len() as u64);
            prop_assert_eq!(layout.chunks().end, (h + body.len()) as u64);
            prop_assert_eq!(
                layout.stored_range(plan.ciphertext_range()),
                h as u64 + plan.ciphertext_range().start..h as u64 + plan.ciphertext_range().end
            );
            let split = body.len().min(chunked::HEADER_LEN);
            let Ok(ra) = unsealed.body_random_access(&body[..split]) else {
                reached.hit("body commitment rejected");
                return Ok(());
            };
            let Ok(out) = read_range(&ra, body, start, end) else {
                reached.hit("open_range rejected");
                return Ok(());
            };
            reached.hit("open_range returned a range");
            let start = start as usize;
            prop_assert!(start + out.len() <= s.plaintext.len());
            prop_assert_eq!(&out[..], &s.plaintext[start..start + out.len()]);
            if plan.needs_length_check {
                reached.hit("open_range returned a range to the end");
                prop_assert_eq!(body.len(), s.body_end() - h, "length not authenticated");
                prop_assert_eq!(start + out.len(), s.plaintext.len());
            }
            Ok(())
        })
        .unwrap();
    reached.assert_each_at_least(10);
}

/// A damaged key slot: `KeySlot::decode` takes exactly 64 bytes, and the
/// DEK unwrap accepts only the original wrapped DEK (the version in front
/// is not part of the wrap), and only under the identity encoding of the
/// object's format version.
#[test]
fn damaged_key_slots_never_unwrap() {
    for version in Version::ALL {
        damaged_key_slots_never_unwrap_in(version);
    }
}

fn damaged_key_slots_never_unwrap_in(version: Version) {
    let s = sample(version);
    let slot = s.object[Header::KEY_SLOT_RANGE].to_vec();
    let regions = vec![0..4, 4..KeySlot::LEN];
    assert_eq!(Header::format_of(&s.object).unwrap().0, version);
    let encoded = s.identity.encode(version);
    let other_version = Version::ALL.into_iter().find(|v| *v != version).unwrap();
    let other_encoding = s.identity.encode(other_version);
    assert_ne!(encoded, other_encoding);
    let original = KeySlot::decode(&slot).unwrap();
    assert!(s
        .key
        .unwrap_dek(Suite::Aes256Gcm, &original.wrapped_dek, &encoded)
        .is_ok());
    let reached = Reached::new(&[
        "decode rejected",
        "unwrap rejected",
        "unwrap of a new version",
    ]);
    runner()
        .run(&damage(), |edits| {
            let bad = damaged(&slot, &regions, &edits);
            let Ok(decoded) = KeySlot::decode(&bad) else {
                reached.hit("decode rejected");
                prop_assert_ne!(bad.len(), KeySlot::LEN);
                return Ok(());
            };
            prop_assert_eq!(&decoded.encode()[..], &bad[..]);
            // Never under the other version's identity encoding.
            prop_assert!(s
                .key
                .unwrap_dek(Suite::Aes256Gcm, &decoded.wrapped_dek, &other_encoding)
                .is_err());
            match s
                .key
                .unwrap_dek(Suite::Aes256Gcm, &decoded.wrapped_dek, &encoded)
            {
                Ok(_) => {
                    prop_assert_eq!(&bad[4..], &slot[4..], "a damaged DEK unwrapped");
                    if bad != slot {
                        reached.hit("unwrap of a new version");
                    }
                }
                Err(_) => reached.hit("unwrap rejected"),
            }
            Ok(())
        })
        .unwrap();
    reached.assert_each_at_least(10);
}

/// Damaged metadata encodings: `Metadata::decode` accepts only the
/// canonical encoding, so whatever decodes encodes back to the same bytes.
#[test]
fn damaged_metadata_decodes_only_canonically() {
    let encoded = metadata().encode().unwrap();
    // The content type's length prefix, and everything after it.
    let regions = [0..2, 2..encoded.len()];
    let reached = Reached::new(&["decode rejected", "decode accepted a changed encoding"]);
    runner()
        .run(&damage(), |edits| {
            let bad = damaged(&encoded, &regions, &edits);
            match Metadata::decode(&bad) {
                Ok(m) => {
                    prop_assert_eq!(m.encode().unwrap(), bad.clone());
                    if bad != encoded {
                        reached.hit("decode accepted a changed encoding");
                    }
                }
                Err(_) => reached.hit("decode rejected"),
            }
            Ok(())
        })
        .unwrap();
    reached.assert_each_at_least(10);
}

/// Range plans over message lengths near valid ones, with ranges near the
/// plaintext: the ciphertext ranges stay inside the message.
#[test]
fn range_plans_stay_inside_the_message() {
    let reached = Reached::new(&[
        "impossible length",
        "range out of bounds",
        "planned",
        "planned with a separate final chunk",
    ]);
    // Plaintext lengths of whole chunks (an empty final chunk) and near
    // them; message lengths off by a few bytes; ranges as thousandths of
    // the plaintext length, past its end too.
    let plaintext = (
        0..7u64,
        prop_oneof![Just(0u64), Just(1), Just(16383), 0..16384u64],
    )
        .prop_map(|(n, r)| n * chunked::CHUNK_SIZE as u64 + r);
    let skew = prop_oneof![3 => Just(0i64), 1 => -20i64..20];
    let strategy = (plaintext, skew, 0..1100u64, prop::option::of(0..1100u64));
    runner()
        .run(&strategy, |(plaintext, skew, start, end)| {
            let len = chunked::message_len(plaintext).saturating_add_signed(skew);
            let start = plaintext * start / 1000;
            let end = end.map(|e| plaintext * e / 1000);
            match RangePlan::new(len, start, end) {
                Ok(plan) => {
                    reached.hit("planned");
                    let ct = plan.ciphertext_range();
                    prop_assert!(ct.start < ct.end && ct.end <= len);
                    prop_assert!(plan.plaintext.start < plan.plaintext.end);
                    if let Some(f) = plan.final_chunk_range() {
                        reached.hit("planned with a separate final chunk");
                        prop_assert!(f.start >= ct.end && f.start < f.end && f.end == len);
                    }
                }
                Err(sealgate::crypto::CryptoError::RangeOutOfBounds) => {
                    reached.hit("range out of bounds");
                }
                Err(_) => {
                    reached.hit("impossible length");
                    prop_assert!(chunked::plaintext_len(len).is_err());
                }
            }
            Ok(())
        })
        .unwrap();
    reached.assert_each_at_least(10);
}
