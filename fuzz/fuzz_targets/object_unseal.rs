//! Object layout, header parse and unseal with the golden user key, then
//! the body streamed through the opener, in the header's format version and
//! suite, and in version 2 the sealed digest after the body. Seeds: the
//! golden objects of both versions and both suites (a suite-2 header mutated
//! to suite 1, a version-2 header to version 1, or back, must not unseal).
//!
//! Invariants: no panic; a layout lies within the object, its body ends
//! where the version says (104 bytes early in version 2, where its digest
//! lies) and has a message's length; the parsed header never holds more
//! than the format's bound of sealed metadata; a header that unseals is a
//! golden object's header (only the unauthenticated user-key version may
//! differ), of its version and suite, with its metadata; every released
//! body byte is the golden plaintext at its offset; a body that opens
//! completely is the golden body; a digest that opens is the golden
//! object's, of version 2, and holds the golden plaintext's SHA-256.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::chunked;
use sealgate::crypto::envelope::{FIXED_HEADER_LEN, MAX_METADATA_LEN, SEALED_DIGEST_LEN};
use sealgate::crypto::{Header, ObjectLayout, Version};
use sealgate_fuzz::{golden, pattern_byte, user_key};

/// The user-key version of the key slot: not authenticated by itself.
const VERSION: std::ops::Range<usize> = 8..12;

fuzz_target!(|data: &[u8]| {
    let total = Header::total_len(data);
    let stored = data.len() as u64;
    if let Ok(layout) = ObjectLayout::new(data, stored) {
        let version = layout.version();
        assert_eq!(Ok(layout.header_len() as usize), total);
        assert_eq!(Header::format_of(data), Ok((version, layout.suite())));
        assert_eq!(layout.head().end, layout.chunks().start);
        assert_eq!(layout.chunks().end + version.trailer_len(), stored);
        assert_eq!(layout.header_len() + layout.body_len(), layout.chunks().end);
        assert_eq!(
            chunked::plaintext_len(layout.body_len()),
            Ok(layout.plaintext_len())
        );
        assert_eq!(
            layout.digest(),
            (version == Version::V2).then(|| stored - SEALED_DIGEST_LEN as u64..stored)
        );
        assert_eq!(
            ObjectLayout::stored_len(version, layout.header_len(), layout.plaintext_len()),
            stored
        );
    }
    let Ok(header) = Header::parse(data) else {
        return;
    };
    let max_header = FIXED_HEADER_LEN + chunked::message_len(MAX_METADATA_LEN as u64) as usize;
    assert_eq!(Ok(header.len()), total);
    assert!(header.len() <= max_header);
    assert_eq!(Header::format_of(data), Ok((header.version, header.suite)));
    for g in golden() {
        let Ok(unsealed) = header.unseal(user_key(), &g.identity) else {
            continue;
        };
        let len = header.len();
        let mut mine = data[..len].to_vec();
        mine[VERSION].copy_from_slice(&g.bytes[VERSION]);
        assert_eq!(&mine[..], &g.bytes[..len], "a mutated header unsealed");
        assert_eq!((header.version, header.suite), (g.version, g.suite));
        assert_eq!(unsealed.metadata, g.metadata);

        // The body ends where the header's version says.
        let body_end = data
            .len()
            .saturating_sub(header.version.trailer_len() as usize)
            .max(len);
        let body = &data[len..body_end];
        let split = body.len().min(chunked::HEADER_LEN);
        if let Ok(mut opener) = unsealed.body_opener(&body[..split]) {
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
                assert_eq!(body, &g.bytes[len..g.body_end()], "a mutated body opened");
                assert_eq!(out.len() as u64, g.plaintext_len);
            }
        }
        // The digest, whatever became of the body.
        if let Ok(digest) = unsealed.open_digest(&data[body_end..]) {
            assert_eq!(
                header.version,
                Version::V2,
                "a version-1 object has a digest"
            );
            assert_eq!(
                &data[body_end..],
                &g.bytes[g.body_end()..],
                "a mutated digest opened"
            );
            assert_eq!(digest, g.plaintext_sha256);
        }
    }
});
