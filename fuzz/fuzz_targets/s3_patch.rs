//! The S3 patch metadata parser (`x-amz-meta-sealgate-patch`), overlaid on a
//! read as the S3 reader does. Input: a word (u32 le), then either the
//! metadata value as text (the word's top bit clear), or (top bit set) the
//! patch's offset as a u64 le and its bytes, which the target writes as the
//! metadata value `<offset>:<hex bytes>`: binary offsets reach the whole u64
//! range in a few mutations (a negated small offset is near `u64::MAX`),
//! where decimal text rarely leaves the small numbers. The word's low bits
//! are the read's offset. Seeds: patches the store writes, in both forms,
//! and offsets the parser must refuse.
//!
//! Invariants: no panic (no overflow), and a patch never changes a byte at
//! or past `MAX_PATCH_END`: it is bounded like the patches the store writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::blob::s3::overlay_patch;
use sealgate::blob::MAX_PATCH_END;

/// The top bit of the first word: the patch is binary, not text.
const BINARY: u32 = 1 << 31;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let word = u32::from_le_bytes(data[..4].try_into().unwrap());
    // Reads start anywhere in an object (objects are below 2^52 bytes).
    let at = u64::from(word & !BINARY) % (2 * MAX_PATCH_END);
    let rest = &data[4..];
    let value = if word & BINARY == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        text.to_string()
    } else {
        if rest.len() < 8 {
            return;
        }
        let offset = u64::from_le_bytes(rest[..8].try_into().unwrap());
        let hex: String = rest[8..].iter().map(|b| format!("{b:02x}")).collect();
        format!("{offset}:{hex}")
    };
    let mut read = vec![0xa5u8; 2 * MAX_PATCH_END as usize];
    if overlay_patch(&value, at, &mut read).is_ok() {
        for (i, b) in read.iter().enumerate() {
            if at + i as u64 >= MAX_PATCH_END {
                assert_eq!(*b, 0xa5, "a patch past MAX_PATCH_END was applied");
            }
        }
    }
    // The same patch under a read at the far end of the format's range.
    let _ = overlay_patch(&value, (1 << 52) - 1, &mut read[..1]);
});
