//! Object header parse and unseal with the golden user key, then the body
//! streamed through the opener, in the header's suite. Seeds: the golden
//! objects of both suites (a suite-2 header mutated to suite 1, or back,
//! must not unseal).
//!
//! Invariants: no panic; the parsed header never holds more than the
//! format's bound of sealed metadata; a header that unseals is a golden
//! object's header (only the unauthenticated user-key version may differ)
//! with its metadata; every released body byte is the golden plaintext at
//! its offset; a body that opens completely is the golden body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::chunked;
use sealgate::crypto::envelope::{FIXED_HEADER_LEN, MAX_METADATA_LEN};
use sealgate::crypto::{Header, ObjectLayout};
use sealgate_fuzz::{golden, pattern_byte, user_key};

/// The user-key version of the key slot: not authenticated by itself.
const VERSION: std::ops::Range<usize> = 8..12;

fuzz_target!(|data: &[u8]| {
    let total = Header::total_len(data);
    let _ = ObjectLayout::new(data, data.len() as u64);
    let Ok(header) = Header::parse(data) else {
        return;
    };
    let max_header = FIXED_HEADER_LEN + chunked::message_len(MAX_METADATA_LEN as u64) as usize;
    assert_eq!(Ok(header.len()), total);
    assert!(header.len() <= max_header);
    for g in golden() {
        let Ok(unsealed) = header.unseal(user_key(), &g.identity) else {
            continue;
        };
        let len = header.len();
        let mut mine = data[..len].to_vec();
        mine[VERSION].copy_from_slice(&g.bytes[VERSION]);
        assert_eq!(&mine[..], &g.bytes[..len], "a mutated header unsealed");
        assert_eq!(header.suite, g.suite);
        assert_eq!(unsealed.metadata, g.metadata);

        let body = &data[len..];
        let split = body.len().min(chunked::HEADER_LEN);
        let Ok(mut opener) = unsealed.body_opener(&body[..split]) else {
            continue;
        };
        let mut out = Vec::new();
        let pushed = opener.push(&body[split..], &mut out);
        let finished = pushed.is_ok() && opener.finish(&mut out).is_ok();
        for (i, b) in out.iter().enumerate() {
            assert_eq!(
                *b,
                pattern_byte(i as u64),
                "plaintext released from a mutated body"
            );
        }
        if finished {
            assert_eq!(body, &g.bytes[len..], "a mutated body opened");
            assert_eq!(out.len() as u64, g.plaintext_len);
        }
    }
});
