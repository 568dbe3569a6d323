//! Random access with arbitrary ranges over a mutated valid message, in
//! both suites (the message is read as suite 1 and as suite 2).
//! Input: start (u64 le), end (u64 le), a flags byte, then the message.
//! Seeds: ranges over shorter messages of both suites under the C2SP known
//! answers' key, salt and context.
//!
//! Invariants: no panic; a plan's ranges lie within the message; what
//! `open_range` returns is exactly the pattern at the planned offsets; a read
//! bounded by the end of the message succeeds only if the message's final
//! chunk is the valid one (its length is authenticated).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::chunked::{self, RandomAccess, RangePlan};
use sealgate::crypto::Suite;
use sealgate_fuzz::{kat_message, pattern_byte, KAT_CONTEXT, KAT_KEY};

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let mut start = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let mut end = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let flags = data[16];
    let message = &data[17..];
    let len = message.len() as u64;
    // Mostly ranges near the message, sometimes raw 64-bit values.
    if flags & 1 == 0 {
        let bound = chunked::plaintext_len(len).unwrap_or(len) + 2;
        start %= bound;
        end %= bound + 1;
    }
    let end = (flags & 2 == 0).then_some(end);
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

fn read_in(suite: Suite, message: &[u8], plan: &RangePlan, flags: u8) {
    let len = message.len() as u64;
    let ct = plan.ciphertext_range();
    let final_range = plan.final_chunk_range();
    let split = message.len().min(chunked::HEADER_LEN);
    let Ok(ra) = RandomAccess::new_in(suite, &KAT_KEY, KAT_CONTEXT, &message[..split]) else {
        return;
    };
    let covering = &message[ct.start as usize..ct.end as usize];
    let final_chunk = final_range.map(|r| &message[r.start as usize..r.end as usize]);
    // Half the time hand over the final chunk the plan does not ask for (or
    // withhold the one it does): that must fail, never read past a slice.
    let final_chunk = if flags & 4 != 0 {
        match final_chunk {
            Some(_) => None,
            None => Some(&message[ct.start as usize..ct.end as usize]),
        }
    } else {
        final_chunk
    };
    let Ok(out) = ra.open_range(plan, covering, final_chunk) else {
        return;
    };
    assert_eq!(out.len() as u64, plan.plaintext.end - plan.plaintext.start);
    for (i, b) in out.iter().enumerate() {
        assert_eq!(
            *b,
            pattern_byte(plan.plaintext.start + i as u64),
            "forged plaintext"
        );
    }
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
