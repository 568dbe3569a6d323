//! The keyring file parser (`data_dir/keyring`). Seeds: valid keyrings.
//!
//! Invariants: no panic; a parsed keyring holds exactly the keys its text
//! writes (each `master VERSION HEX` line's version with the bytes of its
//! hex, the `naming HEX` line's bytes); and written back in the keyring's
//! format it parses to the same keys.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

/// Hex digits to bytes; `None` if they are not an even number of hex
/// digits.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((masters, naming)) = sealgate::keys::keyring::parse(text) else {
        return;
    };
    let parsed: BTreeMap<u32, Vec<u8>> = masters
        .iter()
        .map(|(v, k)| (*v, k.expose_for_keyring().to_vec()))
        .collect();
    let naming = naming.expose_for_keyring().to_vec();

    // The keys the text writes, read line by line.
    let mut written = BTreeMap::new();
    let mut written_naming = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["master", version, key] => {
                let version: u32 = version.parse().expect("parsed, so a version");
                written.insert(version, unhex(key).expect("parsed, so hex"));
            }
            ["naming", key] => written_naming = Some(unhex(key).expect("parsed, so hex")),
            _ => {}
        }
    }
    assert_eq!(parsed, written, "the master keys are those of the text");
    assert_eq!(Some(&naming), written_naming.as_ref(), "the naming key");

    // Written back as the keyring writes itself: the same keys.
    let mut back = format!("# written back\nnaming {}\n", hex(&naming));
    for (version, key) in &parsed {
        back.push_str(&format!("master {version} {}\n", hex(key)));
    }
    let (masters, again) =
        sealgate::keys::keyring::parse(&back).expect("a keyring written back parses");
    let reparsed: BTreeMap<u32, Vec<u8>> = masters
        .iter()
        .map(|(v, k)| (*v, k.expose_for_keyring().to_vec()))
        .collect();
    assert_eq!(reparsed, parsed, "written back, the same master keys");
    assert_eq!(again.expose_for_keyring().to_vec(), naming, "the naming key");
});
