//! Fixtures shared by the fuzz targets: the golden objects of
//! `tests/golden/` (both format versions, both suites) with the key that
//! opens them, and the Cobblestone-256 and Cobblestone-SM4 known-answer
//! messages with the messages of other lengths sealed under the same key,
//! salt and context.
//!
//! Every plaintext here is the golden pattern (byte `i` is `i mod 251`), so
//! a target can check any released plaintext byte against its offset alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::OnceLock;

use sealgate::crypto::chunked::{self, Sealer};
use sealgate::crypto::{
    Kek, MasterKey, Metadata, NamingKey, ObjectIdentity, Pseudonym, Suite, UserKey, Version,
    Wrapped,
};

/// The largest single allocation any target may make. Inputs are at most
/// tens of KiB and every length the formats read is bounded (a header at
/// most 8340 bytes, metadata 8 KiB, a patch 4 KiB), so an allocation this
/// large could only be sized by an unchecked length from the input.
pub const MAX_ALLOCATION: usize = 16 << 20;

/// The global allocator of every target: the system allocator, aborting
/// (a crash libFuzzer records with its input) on an allocation over
/// [`MAX_ALLOCATION`]. An allocator must not unwind, hence abort, not panic.
pub struct BoundedAllocator;

// SAFETY: every call is passed to the system allocator unchanged; the only
// addition is an abort before an oversized request.
unsafe impl GlobalAlloc for BoundedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: BoundedAllocator = BoundedAllocator;

/// Values of `tests/golden/golden.toml` (`[keys]`); the golden files only
/// change with a new format version, and the suite's `crypto::golden` pins
/// them.
pub const MASTER_KEY: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
pub const KEK_AAD: &[u8] = b"sealgate-golden/kek";
pub const WRAPPED_KEK: &str = "75d45c5e424fc4e326ba1331e4938a412b8628744ad61666601b6a96911160dcc700d2951c28da9ef0244d3e1361d2deba08354b937296b82c4a7ec7";
pub const USER_KEY_AAD: &[u8] = b"sealgate-golden/user-key";
pub const WRAPPED_USER_KEY: &str = "4e6dceaddd59f9a0305fcb13fdd22bf48237551a55010642a69605fe8140129395be24dc97579afa08311ae5793a737c3442cae67fdc2cc704bde210";
pub const NAMING_KEY: [u8; 32] = [0x5a; 32];
pub const USER_ID: &str = "golden-user";

/// The golden plaintext byte at offset `i`.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The golden plaintext of `len` bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern_byte).collect()
}

/// The golden KEK (unwrapped from the master key); `fuzz_targets/key_slot`
/// also fuzzes the wrapped forms.
pub fn master_key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_bytes(&MASTER_KEY).expect("master key"))
}

fn kek() -> &'static Kek {
    static KEY: OnceLock<Kek> = OnceLock::new();
    KEY.get_or_init(|| {
        let wrapped = Wrapped::from_bytes(&unhex(WRAPPED_KEK)).expect("wrapped kek");
        master_key()
            .unwrap_kek(&wrapped, KEK_AAD)
            .expect("golden kek")
    })
}

/// The user key that opens every golden object.
pub fn user_key() -> &'static UserKey {
    static KEY: OnceLock<UserKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let wrapped = Wrapped::from_bytes(&unhex(WRAPPED_USER_KEY)).expect("wrapped user key");
        kek()
            .unwrap_user_key(&wrapped, USER_KEY_AAD)
            .expect("golden user key")
    })
}

/// One golden object: its format version and suite, stored bytes,
/// identity, metadata, plaintext length and the plaintext's SHA-256 (what a
/// version-2 object's digest holds).
pub struct Golden {
    pub version: Version,
    pub suite: Suite,
    pub bytes: &'static [u8],
    pub identity: ObjectIdentity,
    pub metadata: Metadata,
    pub plaintext_len: u64,
    pub plaintext_sha256: [u8; 32],
}

impl Golden {
    /// Where its body ends: its digest (version 2) follows.
    pub fn body_end(&self) -> usize {
        self.bytes.len() - self.version.trailer_len() as usize
    }
}

/// The four shapes of golden object (`[objects.*]` of `golden.toml`):
/// region, space, object id after its format's prefix, content type,
/// attributes, plaintext length and SHA-256.
type Shape = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    u64,
    &'static str,
);

const SHAPES: [Shape; 4] = [
    (
        "cn-north-1",
        "moments",
        "empty",
        "",
        &[],
        0,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ),
    (
        "cn-north-1",
        "moments",
        "one-byte",
        "application/octet-stream",
        &[("k", "v")],
        1,
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    ),
    (
        "eu-west-1",
        "channels",
        "16384",
        "text/plain; charset=utf-8",
        &[("", "empty name"), ("caption", "ünïcödé ✓"), ("z", "")],
        16384,
        "4348e3b98e8a327b34ced39c1da9e67cdb4cd5e48e4d7960607a3ae403d35f0c",
    ),
    (
        "cn-north-1",
        "moments",
        "40000",
        "image/jpeg",
        &[("height", "480"), ("width", "640")],
        40000,
        "8f272ca6d96caedf3d860ff34ed21868f04ce18a2f41686f513c3c989146ca79",
    ),
];

/// The golden files of each format, in the order of [`SHAPES`], with the
/// prefix of their object ids.
const FORMATS: [(Version, Suite, &str, [&[u8]; 4]); 4] = [
    (
        Version::V1,
        Suite::Aes256Gcm,
        "golden/",
        [
            include_bytes!("../../tests/golden/object-empty.bin"),
            include_bytes!("../../tests/golden/object-one-byte.bin"),
            include_bytes!("../../tests/golden/object-one-chunk.bin"),
            include_bytes!("../../tests/golden/object-three-chunks.bin"),
        ],
    ),
    (
        Version::V1,
        Suite::Sm4Gcm,
        "golden/sm4/",
        [
            include_bytes!("../../tests/golden/object-sm4-empty.bin"),
            include_bytes!("../../tests/golden/object-sm4-one-byte.bin"),
            include_bytes!("../../tests/golden/object-sm4-one-chunk.bin"),
            include_bytes!("../../tests/golden/object-sm4-three-chunks.bin"),
        ],
    ),
    (
        Version::V2,
        Suite::Aes256Gcm,
        "golden/v2/",
        [
            include_bytes!("../../tests/golden/object-v2-empty.bin"),
            include_bytes!("../../tests/golden/object-v2-one-byte.bin"),
            include_bytes!("../../tests/golden/object-v2-one-chunk.bin"),
            include_bytes!("../../tests/golden/object-v2-three-chunks.bin"),
        ],
    ),
    (
        Version::V2,
        Suite::Sm4Gcm,
        "golden/v2/sm4/",
        [
            include_bytes!("../../tests/golden/object-v2-sm4-empty.bin"),
            include_bytes!("../../tests/golden/object-v2-sm4-one-byte.bin"),
            include_bytes!("../../tests/golden/object-v2-sm4-one-chunk.bin"),
            include_bytes!("../../tests/golden/object-v2-sm4-three-chunks.bin"),
        ],
    ),
];

/// The golden objects of `tests/golden/`: the same four shapes in each
/// format version and suite (object ids under `golden/`, `golden/sm4/`,
/// `golden/v2/` and `golden/v2/sm4/`).
pub fn golden() -> &'static [Golden] {
    static GOLDEN: OnceLock<Vec<Golden>> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let pseudonym: Pseudonym = NamingKey::from_bytes(&NAMING_KEY)
            .expect("naming key")
            .pseudonym(USER_ID);
        FORMATS
            .iter()
            .flat_map(|(version, suite, prefix, files)| {
                SHAPES.iter().zip(files).map(
                    move |((region, space, id, content_type, attributes, len, sha256), bytes)| {
                        Golden {
                            version: *version,
                            suite: *suite,
                            bytes,
                            identity: ObjectIdentity::new(
                                region,
                                space,
                                pseudonym,
                                &format!("{prefix}{id}"),
                            )
                            .expect("identity"),
                            metadata: Metadata {
                                content_type: (*content_type).into(),
                                attributes: attributes
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_string()))
                                    .collect::<BTreeMap<_, _>>(),
                            },
                            plaintext_len: *len,
                            plaintext_sha256: unhex(sha256).try_into().expect("SHA-256"),
                        }
                    },
                )
            })
            .collect()
    })
}

/// `[c2sp_kat]` and `[c2sp_sm4_kat]` of `golden.toml`: key, salt and
/// context of the known-answer messages `tests/golden/c2sp-kat.bin` and
/// `tests/golden/c2sp-sm4-kat.bin` (40000 bytes of the pattern each).
pub const KAT_KEY: [u8; 32] = [0x11; 32];
pub const KAT_SALT: [u8; chunked::SALT_LEN] = *b"sealgate golden kat salt";
pub const KAT_CONTEXT: &[u8] = b"sealgate/golden\0context";
pub const KAT_MESSAGE: &[u8] = include_bytes!("../../tests/golden/c2sp-kat.bin");
pub const KAT_SM4_MESSAGE: &[u8] = include_bytes!("../../tests/golden/c2sp-sm4-kat.bin");

/// The one valid message of `plaintext_len` pattern bytes in `suite` under
/// the KAT key, salt and context: what any input that opens under them in
/// that suite must be.
pub fn kat_message(suite: Suite, plaintext_len: u64) -> Vec<u8> {
    let (mut sealer, header) =
        Sealer::with_salt_in(suite, &KAT_KEY, KAT_CONTEXT, KAT_SALT).expect("kat sealer");
    let mut out = header.to_vec();
    sealer
        .push(&pattern(plaintext_len as usize), &mut out)
        .expect("push");
    sealer.finish(&mut out).expect("finish");
    out
}

/// Decodes lower-case hex.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
