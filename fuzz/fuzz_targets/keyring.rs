//! The keyring file parser (`data_dir/keyring`). Seeds: valid keyrings.
//!
//! Invariants: no panic; a parsed keyring has a naming key and at least one
//! master key, and never more master keys than `master` lines.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((masters, _naming)) = sealgate::keys::keyring::parse(text) {
        assert!(!masters.is_empty());
        assert!(masters.len() <= text.lines().count());
    }
});
