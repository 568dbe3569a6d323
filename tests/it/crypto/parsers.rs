//! Every parser of stored bytes, fed arbitrary and mutated input: it never
//! panics, and nothing but the original object ever opens.

use proptest::prelude::*;
use sealgate::crypto::chunked::{self, Opener, RandomAccess, RangePlan};
use sealgate::crypto::{Header, KeySlot, Metadata, NamingKey, ObjectIdentity, Pseudonym, UserKey};

use super::{open_object, pattern, seal_object, single_key};

fn identity() -> ObjectIdentity {
    let p = NamingKey::from_bytes(&[9u8; 32]).unwrap().pseudonym("fuzz");
    ObjectIdentity::new("cn-north-1", "moments", p, "obj").unwrap()
}

/// How to damage an object.
#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Extend(Vec<u8>),
    Splice(prop::sample::Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(i, v)| Mutation::Splice(i, v)),
    ]
}

fn apply(object: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = object.to_vec();
    match m {
        Mutation::Set(i, b) => {
            let i = i.index(out.len());
            out[i] = *b;
        }
        Mutation::Truncate(i) => out.truncate(i.index(out.len())),
        Mutation::Extend(v) => out.extend_from_slice(v),
        Mutation::Splice(i, v) => {
            let i = i.index(out.len());
            out.splice(i..i, v.iter().copied());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Header::total_len(&bytes);
        let _ = Header::parse(&bytes);
        let _ = KeySlot::decode(&bytes);
        let _ = chunked::plaintext_len(bytes.len() as u64);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Pseudonym::from_hex(text);
        }
        // A header that parses still cannot be unsealed by a random key.
        if let Ok(header) = Header::parse(&bytes) {
            prop_assert!(header.unseal(&UserKey::generate().unwrap(), &identity()).is_err());
        }
        // Bodies: any bytes after a random header are rejected, never a panic.
        let key = [3u8; 32];
        let split = bytes.len().min(chunked::HEADER_LEN);
        if let Ok(mut opener) = Opener::new(&key, b"ctx", &bytes[..split]) {
            let mut out = Vec::new();
            let ok = opener.push(&bytes[split..], &mut out).is_ok() && opener.finish(&mut out).is_ok();
            prop_assert!(!ok);
        }
        if let Ok(ra) = RandomAccess::new(&key, b"ctx", &bytes[..split]) {
            prop_assert!(ra.authenticate_length(bytes.len() as u64, &bytes[split..]).is_err());
        }
    }

    #[test]
    fn range_plans_never_panic(len in any::<u64>(), start in any::<u64>(), end in any::<Option<u64>>()) {
        if let Ok(plan) = RangePlan::new(len, start, end) {
            let ct = plan.ciphertext_range();
            prop_assert!(ct.start < ct.end && ct.end <= len);
            prop_assert!(plan.plaintext.start < plan.plaintext.end);
            if let Some(f) = plan.final_chunk_range() {
                prop_assert!(f.start < f.end && f.end == len);
            }
        }
    }

    #[test]
    fn mutated_objects_never_open(m1 in mutation(), m2 in prop::option::of(mutation())) {
        let key = UserKey::generate().unwrap();
        let id = identity();
        let meta = Metadata { content_type: "image/jpeg".into(), ..Default::default() };
        let object = seal_object(&key, 1, &id, &meta, &pattern(20_000, 5), 4096);
        let mut damaged = apply(&object, &m1);
        if let Some(m2) = &m2 {
            damaged = apply(&damaged, m2);
        }
        prop_assume!(damaged != object);
        prop_assert!(open_object(&damaged, single_key(1, &key), &id, 1000).is_err());
    }
}
