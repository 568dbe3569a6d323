//! Key-slot decode and DEK unwrap with the golden user key under each
//! golden identity's encoding in both format versions and both suites, and
//! the wrapped KEK and user key of the golden keys unwrapped from the same
//! bytes. Seeds: the golden objects' key slots (both versions, both
//! suites) and the golden wrapped keys.
//!
//! Invariants: no panic; a slot re-encodes to its bytes; only a golden
//! object's own wrapped DEK unwraps under its identity, and only in the
//! object's format version (the identity encoding has it) and suite; only
//! the golden wrapped KEK under the master key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::{Header, KeySlot, Suite, Version, Wrapped};
use sealgate_fuzz::{golden, master_key, KEK_AAD, WRAPPED_KEK};

fuzz_target!(|data: &[u8]| {
    if let Ok(slot) = KeySlot::decode(data) {
        assert_eq!(&slot.encode()[..], data);
        for g in golden() {
            for version in Version::ALL {
                let encoded = g.identity.encode(version);
                for suite in Suite::ALL {
                    if sealgate_fuzz::user_key()
                        .unwrap_dek(suite, &slot.wrapped_dek, &encoded)
                        .is_ok()
                    {
                        assert_eq!(suite, g.suite, "a DEK unwrapped in another suite");
                        assert_eq!(version, g.version, "a DEK unwrapped in another version");
                        let original = &g.bytes[Header::KEY_SLOT_RANGE][4..];
                        assert_eq!(
                            slot.wrapped_dek.as_bytes(),
                            original,
                            "a forged DEK unwrapped"
                        );
                    }
                }
            }
        }
    }
    if let Ok(wrapped) = Wrapped::from_bytes(data) {
        assert_eq!(&wrapped.as_bytes()[..], data);
        if master_key().unwrap_kek(&wrapped, KEK_AAD).is_ok() {
            assert_eq!(
                data,
                &sealgate_fuzz::unhex(WRAPPED_KEK)[..],
                "a forged KEK unwrapped"
            );
        }
    }
});
