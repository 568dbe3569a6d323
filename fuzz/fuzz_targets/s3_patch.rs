//! The S3 patch metadata parser (`x-amz-meta-sealgate-patch`), overlaid on a
//! read as the S3 reader does. Input: the read's offset (u32 le), then the
//! metadata value. Seeds: patches the store writes.
//!
//! Invariants: no panic (no overflow), and a patch never changes a byte at
//! or past `MAX_PATCH_END`: it is bounded like the patches the store writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::blob::s3::overlay_patch;
use sealgate::blob::MAX_PATCH_END;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // Reads start anywhere in an object (objects are below 2^52 bytes).
    let at = u64::from(u32::from_le_bytes(data[..4].try_into().unwrap())) % (2 * MAX_PATCH_END);
    let Ok(value) = std::str::from_utf8(&data[4..]) else {
        return;
    };
    let mut read = vec![0xa5u8; 2 * MAX_PATCH_END as usize];
    if overlay_patch(value, at, &mut read).is_ok() {
        for (i, b) in read.iter().enumerate() {
            if at + i as u64 >= MAX_PATCH_END {
                assert_eq!(*b, 0xa5, "a patch past MAX_PATCH_END was applied");
            }
        }
    }
    // The same patch under a read at the far end of the format's range.
    let _ = overlay_patch(value, (1 << 52) - 1, &mut read[..1]);
});
