//! Metadata decode. Seeds: the golden objects' metadata, encoded.
//!
//! Invariants: no panic; decoding accepts only the canonical encoding, so
//! what decodes (within the format's 8 KiB bound) encodes back to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::envelope::MAX_METADATA_LEN;
use sealgate::crypto::Metadata;

fuzz_target!(|data: &[u8]| {
    let Ok(metadata) = Metadata::decode(data) else {
        return;
    };
    if data.len() <= MAX_METADATA_LEN {
        assert_eq!(metadata.encode().as_deref(), Ok(data));
    }
});
