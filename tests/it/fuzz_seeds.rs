//! The seed corpus of the fuzz targets (`fuzz/seeds/<target>/`): small valid
//! inputs, so that the fuzzer's mutations start past the magic, the
//! commitment and the syntax, in both suites and both object format
//! versions. The golden objects themselves (`tests/golden/`, both suites,
//! both versions) are the seeds of `object_unseal` and `opener` and are not
//! copied (see `fuzz/run`); `random_access` reads some of them by range.
//!
//! This test checks that the committed seeds are exactly what the
//! generators below produce (and so are valid for this build). After a
//! deliberate change of a format they are rewritten by:
//!
//! ```text
//! SEALGATE_WRITE_SEEDS=1 cargo test --test it fuzz_seeds
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sealgate::blob::s3::overlay_patch;
use sealgate::blob::MAX_PATCH_END;
use sealgate::config::Config;
use sealgate::crypto::chunked::{self, RangePlan, Sealer};
use sealgate::crypto::{Header, Metadata, ObjectLayout, Suite, Version};

const WRITE_ENV: &str = "SEALGATE_WRITE_SEEDS";

/// `[c2sp_kat]` and `[c2sp_sm4_kat]` of `tests/golden/golden.toml`, which
/// the fuzz targets' messages are sealed under.
const KAT_KEY: [u8; 32] = [0x11; 32];
const KAT_SALT: [u8; chunked::SALT_LEN] = *b"sealgate golden kat salt";
const KAT_CONTEXT: &[u8] = b"sealgate/golden\0context";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(file: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/golden").join(file)).expect("golden file")
}

/// The message of `len` golden-pattern bytes in `suite` under the KAT key,
/// salt and context.
fn kat_message(suite: Suite, len: usize) -> Vec<u8> {
    let (mut sealer, header) =
        Sealer::with_salt_in(suite, &KAT_KEY, KAT_CONTEXT, KAT_SALT).unwrap();
    let mut out = header.to_vec();
    let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    sealer.push(&plaintext, &mut out).unwrap();
    sealer.finish(&mut out).unwrap();
    out
}

fn metadata(content_type: &str, attributes: &[(&str, &str)]) -> Vec<u8> {
    Metadata {
        content_type: content_type.into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
    .encode()
    .unwrap()
}

/// A random-access input: start, end, flags (bit 0: raw 64-bit range,
/// bit 1: to the end, bit 3: a whole object, not a message), then the
/// message or object.
fn range_input(start: u64, end: u64, flags: u8, message: &[u8]) -> Vec<u8> {
    let mut out = start.to_le_bytes().to_vec();
    out.extend_from_slice(&end.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(message);
    out
}

/// A patch input: the read's offset (u32 le), then the metadata value.
fn patch_input(at: u32, value: &str) -> Vec<u8> {
    let mut out = at.to_le_bytes().to_vec();
    out.extend_from_slice(value.as_bytes());
    out
}

/// A binary patch input: the read's offset with the top bit set (u32 le),
/// the patch's offset (u64 le), then its bytes.
fn binary_patch_input(at: u32, offset: u64, bytes: &[u8]) -> Vec<u8> {
    let mut out = (at | 1 << 31).to_le_bytes().to_vec();
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The metadata value the s3_patch target makes of a seed (see
/// `fuzz/fuzz_targets/s3_patch.rs`), and the read's offset.
fn patch_value(seed: &[u8]) -> (u64, String) {
    let word = u32::from_le_bytes(seed[..4].try_into().unwrap());
    let at = u64::from(word & !(1 << 31));
    if word & 1 << 31 == 0 {
        (at, std::str::from_utf8(&seed[4..]).unwrap().to_string())
    } else {
        let offset = u64::from_le_bytes(seed[4..12].try_into().unwrap());
        (at, format!("{offset}:{}", hex::encode(&seed[12..])))
    }
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use Suite::{Aes256Gcm as Aes, Sm4Gcm as Sm4};
    let manifest: toml::Table = String::from_utf8(golden("golden.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let keys = manifest["keys"].as_table().unwrap();
    let wrapped = |k: &str| hex::decode(keys[k].as_str().unwrap()).unwrap();
    let slot = |file: &str| golden(file)[Header::KEY_SLOT_RANGE].to_vec();
    let keyring = "# sealgate keyring\n\
        naming 5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\n\
        master 1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n\
        \n\
        master 2\t1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100\n";
    let config = "listen = \"127.0.0.1:50051\"\n\
        data_dir = \"./sealgate-data\"\n\
        spaces = [\"moments\", \"channels\"]\n\
        \n\
        [residency]\n\
        allowed_regions = [\"cn-north-1\", \"cn-northwest-1\"]\n\
        \n\
        [blob]\n\
        backend = \"s3\"\n\
        region = \"cn-north-1\"\n\
        \n\
        [s3]\n\
        bucket = \"moments-photos-prod\"\n\
        endpoint = \"https://s3.cn-north-1.amazonaws.com.cn\"\n\
        force_path_style = false\n\
        \n\
        [keystore]\n\
        backend = \"sqlite\"\n\
        shards = 256\n\
        \n\
        [master]\n\
        provider = \"local\"\n\
        \n\
        [cache]\n\
        ttl_seconds = 60\n\
        kek_ttl_seconds = 14400\n\
        max_entries = 100000\n\
        \n\
        [limits]\n\
        max_object_bytes = 1073741824\n\
        max_item_bytes = 65536\n\
        max_response_bytes = 4194304\n";
    let config_env = "spaces = [\"moments\"]\n\
        \n\
        %%env\n\
        SEALGATE_LIMITS_MAX_OBJECT_BYTES=10485760\n\
        SEALGATE_SPACES=moments,channels\n\
        SEALGATE_BLOB_REGION=cn-northwest-1\n\
        SEALGATE_KEYSTORE_SHARDS=16\n";
    vec![
        ("key_slot", "slot-empty", slot("object-empty.bin")),
        ("key_slot", "slot-one-byte", slot("object-one-byte.bin")),
        ("key_slot", "slot-one-chunk", slot("object-one-chunk.bin")),
        (
            "key_slot",
            "slot-three-chunks",
            slot("object-three-chunks.bin"),
        ),
        ("key_slot", "slot-sm4-empty", slot("object-sm4-empty.bin")),
        (
            "key_slot",
            "slot-sm4-one-byte",
            slot("object-sm4-one-byte.bin"),
        ),
        (
            "key_slot",
            "slot-sm4-one-chunk",
            slot("object-sm4-one-chunk.bin"),
        ),
        (
            "key_slot",
            "slot-sm4-three-chunks",
            slot("object-sm4-three-chunks.bin"),
        ),
        ("key_slot", "slot-v2-empty", slot("object-v2-empty.bin")),
        (
            "key_slot",
            "slot-v2-one-byte",
            slot("object-v2-one-byte.bin"),
        ),
        (
            "key_slot",
            "slot-v2-one-chunk",
            slot("object-v2-one-chunk.bin"),
        ),
        (
            "key_slot",
            "slot-v2-three-chunks",
            slot("object-v2-three-chunks.bin"),
        ),
        (
            "key_slot",
            "slot-v2-sm4-empty",
            slot("object-v2-sm4-empty.bin"),
        ),
        (
            "key_slot",
            "slot-v2-sm4-one-byte",
            slot("object-v2-sm4-one-byte.bin"),
        ),
        (
            "key_slot",
            "slot-v2-sm4-one-chunk",
            slot("object-v2-sm4-one-chunk.bin"),
        ),
        (
            "key_slot",
            "slot-v2-sm4-three-chunks",
            slot("object-v2-sm4-three-chunks.bin"),
        ),
        ("key_slot", "wrapped-kek", wrapped("wrapped_kek")),
        ("key_slot", "wrapped-user-key", wrapped("wrapped_user_key")),
        ("metadata", "empty", metadata("", &[])),
        (
            "metadata",
            "one-byte",
            metadata("application/octet-stream", &[("k", "v")]),
        ),
        (
            "metadata",
            "one-chunk",
            metadata(
                "text/plain; charset=utf-8",
                &[("", "empty name"), ("caption", "ünïcödé ✓"), ("z", "")],
            ),
        ),
        (
            "metadata",
            "three-chunks",
            metadata("image/jpeg", &[("height", "480"), ("width", "640")]),
        ),
        ("opener", "len-0", kat_message(Aes, 0)),
        ("opener", "len-1", kat_message(Aes, 1)),
        ("opener", "len-100", kat_message(Aes, 100)),
        ("opener", "len-16384", kat_message(Aes, 16384)),
        // The shape of a version-2 object's digest: 32 bytes, one chunk.
        ("opener", "len-32", kat_message(Aes, 32)),
        ("opener", "sm4-len-32", kat_message(Sm4, 32)),
        ("opener", "sm4-len-0", kat_message(Sm4, 0)),
        ("opener", "sm4-len-1", kat_message(Sm4, 1)),
        ("opener", "sm4-len-100", kat_message(Sm4, 100)),
        ("opener", "sm4-len-16384", kat_message(Sm4, 16384)),
        (
            "random_access",
            "len-100-3-50",
            range_input(3, 50, 0, &kat_message(Aes, 100)),
        ),
        (
            "random_access",
            "len-16384-10-to-end",
            range_input(10, 0, 2, &kat_message(Aes, 16384)),
        ),
        (
            "random_access",
            "len-20000-16000-16500",
            range_input(16000, 16500, 0, &kat_message(Aes, 20000)),
        ),
        (
            "random_access",
            "sm4-len-100-3-50",
            range_input(3, 50, 0, &kat_message(Sm4, 100)),
        ),
        (
            "random_access",
            "sm4-len-16384-10-to-end",
            range_input(10, 0, 2, &kat_message(Sm4, 16384)),
        ),
        (
            "random_access",
            "sm4-len-20000-16000-16500",
            range_input(16000, 16500, 0, &kat_message(Sm4, 20000)),
        ),
        // Golden objects read by range (flag 8), in both versions.
        (
            "random_access",
            "object-three-chunks-16380-to-end",
            range_input(16380, 0, 8 | 2, &golden("object-three-chunks.bin")),
        ),
        (
            "random_access",
            "object-v2-one-byte-0-to-end",
            range_input(0, 0, 8 | 2, &golden("object-v2-one-byte.bin")),
        ),
        (
            "random_access",
            "object-v2-three-chunks-100-20000",
            range_input(100, 20000, 8, &golden("object-v2-three-chunks.bin")),
        ),
        (
            "random_access",
            "object-v2-sm4-one-chunk-10-to-end",
            range_input(10, 0, 8 | 2, &golden("object-v2-sm4-one-chunk.bin")),
        ),
        (
            "s3_patch",
            "slot",
            patch_input(0, &format!("8:{}", hex::encode([0xab; 64]))),
        ),
        (
            "s3_patch",
            "union-at-100",
            patch_input(100, &format!("0:{}", hex::encode([0x5a; 300]))),
        ),
        (
            "s3_patch",
            "binary-slot",
            binary_patch_input(0, 8, &[0xab; 64]),
        ),
        (
            "s3_patch",
            "last-byte",
            patch_input(4000, &format!("{}:ab", MAX_PATCH_END - 1)),
        ),
        // Patches the parser must refuse, at the top of the offset's range
        // (`offset + len` overflows once a digit or a byte more changes).
        (
            "s3_patch",
            "refused-max-offset",
            patch_input(0, &format!("{}:", u64::MAX)),
        ),
        (
            "s3_patch",
            "refused-high-offset",
            patch_input(
                0,
                &format!("{}:{}", u64::MAX - 1000, hex::encode([0xab; 16])),
            ),
        ),
        ("keyring", "two-masters", keyring.as_bytes().to_vec()),
        ("config", "full", config.as_bytes().to_vec()),
        ("config", "env", config_env.as_bytes().to_vec()),
    ]
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn committed_seeds_are_the_generated_ones() {
    let base = root().join("fuzz/seeds");
    let seeds = seeds();
    if std::env::var(WRITE_ENV).is_ok_and(|v| v == "1") {
        let _ = std::fs::remove_dir_all(&base);
        for (target, name, bytes) in &seeds {
            std::fs::create_dir_all(base.join(target)).unwrap();
            std::fs::write(base.join(target).join(name), bytes).unwrap();
        }
    }
    let mut targets: Vec<&str> = seeds.iter().map(|(t, _, _)| *t).collect();
    targets.dedup();
    assert_eq!(listing(&base), {
        let mut t: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        t.sort();
        t
    });
    for target in targets {
        let mut expected: Vec<String> = seeds
            .iter()
            .filter(|(t, _, _)| *t == target)
            .map(|(_, n, _)| n.to_string())
            .collect();
        expected.sort();
        assert_eq!(listing(&base.join(target)), expected, "{target}");
    }
    for (target, name, bytes) in &seeds {
        let committed = std::fs::read(base.join(target).join(name)).unwrap();
        assert!(
            committed == *bytes,
            "fuzz/seeds/{target}/{name} differs from its generator (rewrite with {WRITE_ENV}=1)"
        );
    }
}

/// The seeds that are not sealed messages are valid inputs of their
/// parsers (the sealed ones are valid by construction), except the patch
/// seeds named `refused-*`, which the patch parser must refuse.
#[test]
fn seeds_are_valid_inputs() {
    let seeds = seeds();
    let of = |target: &'static str| {
        seeds
            .iter()
            .filter(move |(t, _, _)| *t == target)
            .map(|(_, name, bytes)| (*name, bytes))
    };
    for (name, bytes) in of("metadata") {
        assert!(Metadata::decode(bytes).is_ok(), "{name}");
    }
    // Ranges that plan, over a message or (flag 8) a whole object's body;
    // the objects of both versions.
    let mut versions = Vec::new();
    for (name, bytes) in of("random_access") {
        let start = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let end = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let (flags, data) = (bytes[16], &bytes[17..]);
        let end = (flags & 2 == 0).then_some(end);
        let body_len = if flags & 8 != 0 {
            let layout = ObjectLayout::new(data, data.len() as u64)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            versions.push(layout.version());
            layout.body_len()
        } else {
            data.len() as u64
        };
        RangePlan::new(body_len, start, end).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(Version::ALL.iter().all(|v| versions.contains(v)));
    for (name, bytes) in of("keyring") {
        let (masters, _) = sealgate::keys::keyring::parse(std::str::from_utf8(bytes).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(masters.len(), 2, "{name}");
    }
    for (name, bytes) in of("config") {
        let text = std::str::from_utf8(bytes).unwrap();
        let (toml, env) = text.split_once("\n%%env\n").unwrap_or((text, ""));
        let env = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(toml, env).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in of("s3_patch") {
        let (at, value) = patch_value(bytes);
        let mut read = vec![0u8; 8192];
        let applied = overlay_patch(&value, at, &mut read);
        if name.starts_with("refused-") {
            assert!(applied.is_err(), "{name} is refused");
            assert!(read.iter().all(|b| *b == 0), "{name} patches nothing");
        } else {
            applied.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(read.iter().any(|b| *b != 0), "{name} patches the read");
        }
    }
}
