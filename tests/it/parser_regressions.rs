//! Inputs that once crashed a parser of stored bytes, found by the fuzz
//! targets under `fuzz/` or by reading the code. Each stays here so that
//! the ordinary suite keeps them fixed.

use sealgate::blob::s3::overlay_patch;
use sealgate::blob::MAX_PATCH_END;

/// S3 patch metadata with an offset near `u64::MAX` overflowed `offset +
/// len` when overlaid on a read (a panic in debug builds, a wrapped bound in
/// release). A patch is now held to the bounds of the patches the store
/// writes when it is parsed.
#[test]
fn s3_patch_offsets_are_bounded_when_parsed() {
    let mut read = vec![0u8; 100];
    for value in [
        "18446744073709551615:00",
        "18446744073709551615:",
        "18446744073709551000:00112233",
        "9223372036854775808:00",
        // Past the end of the patchable prefix, without overflowing.
        "4095:0000",
        "4097:",
    ] {
        assert!(overlay_patch(value, 0, &mut read).is_err(), "{value}");
        assert!(
            overlay_patch(value, u64::MAX - 200, &mut read).is_err(),
            "{value}"
        );
    }
    assert_eq!(read, vec![0u8; 100], "a refused patch changes nothing");
    // The patches the store writes still apply.
    overlay_patch("8:abcd", 0, &mut read).unwrap();
    assert_eq!(&read[7..11], &[0, 0xab, 0xcd, 0]);
    let end = MAX_PATCH_END - 2;
    overlay_patch(&format!("{end}:ffff"), end, &mut read).unwrap();
    assert_eq!(&read[..3], &[0xff, 0xff, 0]);
}
