//! Random access with arbitrary ranges over a mutated valid message, in
//! both suites (the message is read as suite 1 and as suite 2), or (flag
//! bit 3) over a mutated whole object, the way the gateway reads a range:
//! the object's layout (either format version: in version 2 the body ends
//! 104 bytes early, before the digest), its header unsealed with the golden
//! user key, the range planned over the body and read at the layout's
//! stored offsets.
//! Input: start (u64 le), end (u64 le), a flags byte, then the message or
//! object. Seeds: ranges over shorter messages of both suites under the
//! C2SP known answers' key, salt and context, and over golden objects of
//! both versions.
//!
//! Invariants: no panic; a plan's ranges lie within the message (the
//! object's body); what `open_range` returns is exactly the pattern at the
//! planned offsets; a message opens whole in place only if it is the valid
//! one, as the pattern; a read bounded by the end of the message succeeds only
//! if the message's final chunk is the valid one (its length is
//! authenticated); in an object, only a golden object's final chunk and
//! body length, and only its digest opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::chunked::{self, RandomAccess, RangePlan};
use sealgate::crypto::{Header, ObjectLayout, Suite};
use sealgate_fuzz::{golden, kat_message, pattern_byte, user_key, KAT_CONTEXT, KAT_KEY};

/// Flag bits.
const RAW_RANGE: u8 = 1;
const TO_THE_END: u8 = 2;
const SWAP_FINAL_CHUNK: u8 = 4;
const OBJECT: u8 = 8;

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let start = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let end = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let flags = data[16];
    if flags & OBJECT != 0 {
        read_object(&data[17..], start, end, flags);
        return;
    }
    let message = &data[17..];
    let len = message.len() as u64;
    let (start, end) = range(
        chunked::plaintext_len(len).unwrap_or(len),
        start,
        end,
        flags,
    );
    let Ok(plan) = RangePlan::new(len, start, end) else {
        return;
    };
    let ct = plan.ciphertext_range();
    assert!(ct.start < ct.end && ct.end <= len);
    assert!(plan.plaintext.start < plan.plaintext.end);
    let final_range = plan.final_chunk_range();
    if let Some(f) = &final_range {
        assert!(f.start < f.end && f.end == len);
    }
    for suite in Suite::ALL {
        read_in(suite, message, &plan, flags);
    }
});

/// Mostly ranges near a plaintext of `plaintext_len` bytes, sometimes raw
/// 64-bit values; to the end, or not.
fn range(plaintext_len: u64, mut start: u64, mut end: u64, flags: u8) -> (u64, Option<u64>) {
    if flags & RAW_RANGE == 0 {
        let bound = plaintext_len + 2;
        start %= bound;
        end %= bound + 1;
    }
    (start, (flags & TO_THE_END == 0).then_some(end))
}

/// Half the time hand over the final chunk the plan does not ask for (or
/// withhold the one it does): that must fail, never read past a slice.
fn final_chunk<'a>(planned: Option<&'a [u8]>, covering: &'a [u8], flags: u8) -> Option<&'a [u8]> {
    if flags & SWAP_FINAL_CHUNK == 0 {
        return planned;
    }
    match planned {
        Some(_) => None,
        None => Some(covering),
    }
}

fn read_in(suite: Suite, message: &[u8], plan: &RangePlan, flags: u8) {
    let len = message.len() as u64;
    let ct = plan.ciphertext_range();
    let final_range = plan.final_chunk_range();
    let split = message.len().min(chunked::HEADER_LEN);
    let Ok(ra) = RandomAccess::new_in(suite, &KAT_KEY, KAT_CONTEXT, &message[..split]) else {
        return;
    };
    // The whole body decrypted in place, as a whole read of a stored
    // object is: only the valid message opens, and only as the pattern.
    let mut whole = message[split..].to_vec();
    if let Ok(n) = ra.open_whole_in_place(&mut whole) {
        assert_eq!(
            message,
            &kat_message(suite, n as u64)[..],
            "a message that is not the valid one opened in place"
        );
        if let Ok(all) = RangePlan::new(len, 0, None) {
            assert_authentic(&all, &whole[..n]);
        }
    }
    let covering = &message[ct.start as usize..ct.end as usize];
    let planned = final_range.map(|r| &message[r.start as usize..r.end as usize]);
    let Ok(out) = ra.open_range(plan, covering, final_chunk(planned, covering, flags)) else {
        return;
    };
    assert_authentic(plan, &out);
    if plan.needs_length_check {
        let plaintext_len = chunked::plaintext_len(len).expect("planned length");
        let valid = kat_message(suite, plaintext_len);
        let last = chunked::chunk_offset(plaintext_len / chunked::CHUNK_SIZE as u64) as usize;
        assert_eq!(
            &message[last..],
            &valid[last..],
            "an unauthenticated length was accepted"
        );
    }
}

/// What a range read released is exactly the planned bytes of the pattern
/// every golden plaintext follows: nothing forged got through.
fn assert_authentic(plan: &RangePlan, out: &[u8]) {
    assert_eq!(out.len() as u64, plan.plaintext.end - plan.plaintext.start);
    for (i, b) in out.iter().enumerate() {
        assert_eq!(
            *b,
            pattern_byte(plan.plaintext.start + i as u64),
            "forged plaintext"
        );
    }
}

/// A range of a whole object, as the gateway reads one: layout, header,
/// unseal, plan over the body, the covering chunks at their stored offsets.
fn read_object(object: &[u8], start: u64, end: u64, flags: u8) {
    let stored = object.len() as u64;
    let Ok(layout) = ObjectLayout::new(object, stored) else {
        return;
    };
    let head = layout.head();
    assert!(head.end <= layout.chunks().end && layout.chunks().end <= stored);
    let Ok(header) = Header::parse(&object[..head.end as usize]) else {
        return;
    };
    assert_eq!(
        (header.version, header.suite),
        (layout.version(), layout.suite())
    );
    let (start, end) = range(layout.plaintext_len(), start, end, flags);
    let Ok(plan) = RangePlan::new(layout.body_len(), start, end) else {
        return;
    };
    // The planned bytes lie within the body.
    let ct = layout.stored_range(plan.ciphertext_range());
    assert!(head.end <= ct.start && ct.start < ct.end && ct.end <= layout.chunks().end);
    let final_range = plan.final_chunk_range().map(|r| layout.stored_range(r));
    if let Some(f) = &final_range {
        assert!(ct.end <= f.start && f.start < f.end && f.end == layout.chunks().end);
    }
    let covering = &object[ct.start as usize..ct.end as usize];
    let planned = final_range.map(|r| &object[r.start as usize..r.end as usize]);
    for g in golden() {
        let Ok(unsealed) = header.unseal(user_key(), &g.identity) else {
            continue;
        };
        assert_eq!((header.version, header.suite), (g.version, g.suite));
        let body_header = &object[layout.header_len() as usize..head.end as usize];
        if let Ok(ra) = unsealed.body_random_access(body_header) {
            if let Ok(out) = ra.open_range(&plan, covering, final_chunk(planned, covering, flags)) {
                assert_authentic(&plan, &out);
                if plan.needs_length_check {
                    // The body's length and final chunk are the golden's.
                    assert_eq!(layout.plaintext_len(), g.plaintext_len);
                    let last = layout
                        .stored_range(
                            chunked::chunk_offset(g.plaintext_len / chunked::CHUNK_SIZE as u64)
                                ..layout.body_len(),
                        )
                        .start as usize;
                    assert_eq!(
                        &object[last..layout.chunks().end as usize],
                        &g.bytes[last..g.body_end()],
                        "an unauthenticated length was accepted"
                    );
                }
            }
        }
        if let Some(d) = layout.digest() {
            if let Ok(digest) = unsealed.open_digest(&object[d.start as usize..]) {
                assert_eq!(&object[d.start as usize..], &g.bytes[g.body_end()..]);
                assert_eq!(digest, g.plaintext_sha256);
            }
        }
    }
}
