//! Golden objects under `tests/golden/`: objects sealed once by this
//! implementation that every later build must still open, and C2SP known
//! answers that pin the body layer byte for byte, for both suites
//! (suite 1's files `object-*.bin` and `c2sp-kat.bin`, suite 2's
//! `object-sm4-*.bin` and `c2sp-sm4-kat.bin`) and both format versions
//! (version 1's objects `object-*.bin` and `object-sm4-*.bin`, version 2's
//! `object-v2-*.bin` and `object-v2-sm4-*.bin`, with `version = 2` in the
//! manifest).
//!
//! By default the tests only read the files. The writer
//!
//! ```text
//! SEALGATE_WRITE_GOLDEN=1 cargo test --test it crypto::golden
//! ```
//!
//! only adds what is missing: it never rewrites a file that exists, seals
//! new objects under the committed user key (unwrapped from the manifest),
//! and writes the manifest again from all the files (for files that already
//! existed the text comes out as before). That is how a new suite's or a
//! new format version's objects are added without touching the objects
//! already stored: version 2's were added so, beside version 1's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use aws_lc_rs::digest::{digest, SHA256};
use sealgate::crypto::chunked::{self, Sealer, SALT_LEN};
use sealgate::crypto::envelope::SEALED_DIGEST_LEN;
use sealgate::crypto::{
    CryptoError, Header, Kek, MasterKey, Metadata, NamingKey, ObjectIdentity, ObjectLayout, Suite,
    UserKey, Version, Wrapped,
};

use super::differential::{c2sp_open_in, derive_in, open_object_independently, unwrap_key, Ident};
use super::{
    body_of, formats, open_message_in, open_object, open_object_with_digest, read_range,
    seal_object_in, single_key, unseal_object, Stage,
};

const WRITE_ENV: &str = "SEALGATE_WRITE_GOLDEN";
const MANIFEST: &str = "golden.toml";

/// The known answers: suite, manifest section, file, parameter set.
const KATS: [(Suite, &str, &str, &str); 2] = [
    (
        Suite::Aes256Gcm,
        "c2sp_kat",
        "c2sp-kat.bin",
        "Cobblestone-256",
    ),
    (
        Suite::Sm4Gcm,
        "c2sp_sm4_kat",
        "c2sp-sm4-kat.bin",
        "Cobblestone-SM4",
    ),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn writing() -> bool {
    std::env::var(WRITE_ENV).is_ok_and(|v| v == "1")
}

/// The golden plaintexts: byte `i` is `i mod 251`.
fn golden_plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

struct GoldenObject {
    name: &'static str,
    len: usize,
    region: &'static str,
    space: &'static str,
    object_id: &'static str,
    content_type: &'static str,
    attributes: &'static [(&'static str, &'static str)],
}

const OBJECTS: &[GoldenObject] = &[
    GoldenObject {
        name: "empty",
        len: 0,
        region: "cn-north-1",
        space: "moments",
        object_id: "golden/empty",
        content_type: "",
        attributes: &[],
    },
    GoldenObject {
        name: "one-byte",
        len: 1,
        region: "cn-north-1",
        space: "moments",
        object_id: "golden/one-byte",
        content_type: "application/octet-stream",
        attributes: &[("k", "v")],
    },
    GoldenObject {
        name: "one-chunk",
        len: chunked::CHUNK_SIZE,
        region: "eu-west-1",
        space: "channels",
        object_id: "golden/16384",
        content_type: "text/plain; charset=utf-8",
        attributes: &[("", "empty name"), ("caption", "ünïcödé ✓"), ("z", "")],
    },
    GoldenObject {
        name: "three-chunks",
        len: 40_000,
        region: "cn-north-1",
        space: "moments",
        object_id: "golden/40000",
        content_type: "image/jpeg",
        attributes: &[("height", "480"), ("width", "640")],
    },
];

// Fixed test secrets. The KEK and the user key cannot be built from bytes,
// so they are generated once and stored wrapped.
const MASTER_KEY: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
const NAMING_KEY: [u8; 32] = [0x5a; 32];
const USER_ID: &str = "golden-user";
const USER_KEY_VERSION: u32 = 3;
// Test AADs only: the key store chooses the real ones.
const KEK_AAD: &str = "sealgate-golden/kek";
const USER_KEY_AAD: &str = "sealgate-golden/user-key";

// The C2SP known answers (both suites).
const KAT_KEY: [u8; 32] = [0x11; 32];
const KAT_SALT: [u8; SALT_LEN] = *b"sealgate golden kat salt";
const KAT_CONTEXT: &[u8] = b"sealgate/golden\0context";
const KAT_LEN: usize = 40_000;

fn sha256_hex(bytes: &[u8]) -> String {
    ::hex::encode(digest(&SHA256, bytes))
}

fn metadata_of(o: &GoldenObject) -> Metadata {
    Metadata {
        content_type: o.content_type.to_owned(),
        attributes: o
            .attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// A golden object's name in the manifest: the shape's name in suite 1,
/// `sm4-` and the shape's name in suite 2; in format version 2 either
/// after `v2-`. Its file is `object-NAME.bin`.
fn golden_name((version, suite): (Version, Suite), o: &GoldenObject) -> String {
    let name = match suite {
        Suite::Aes256Gcm => o.name.to_owned(),
        Suite::Sm4Gcm => format!("sm4-{}", o.name),
    };
    match version {
        Version::V1 => name,
        Version::V2 => format!("v2-{name}"),
    }
}

/// A golden object's object id: suite 2's are under `golden/sm4/`;
/// version 2's under `golden/v2/` (and `golden/v2/sm4/`).
fn golden_object_id((version, suite): (Version, Suite), o: &GoldenObject) -> String {
    let prefix = match (version, suite) {
        (Version::V1, Suite::Aes256Gcm) => "golden/",
        (Version::V1, Suite::Sm4Gcm) => "golden/sm4/",
        (Version::V2, Suite::Aes256Gcm) => "golden/v2/",
        (Version::V2, Suite::Sm4Gcm) => "golden/v2/sm4/",
    };
    o.object_id.replacen("golden/", prefix, 1)
}

fn kat_message(suite: Suite) -> Vec<u8> {
    let (mut sealer, header) =
        Sealer::with_salt_in(suite, &KAT_KEY, KAT_CONTEXT, KAT_SALT).unwrap();
    let mut out = header.to_vec();
    sealer.push(&golden_plaintext(KAT_LEN), &mut out).unwrap();
    sealer.finish(&mut out).unwrap();
    out
}

/// The file's bytes if it exists, else `make()`'s, written to it: the
/// writer never rewrites a golden file.
fn existing_or_write(file: &str, make: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let path = dir().join(file);
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make();
            std::fs::write(&path, &bytes).unwrap();
            bytes
        }
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Completes the golden set: writes the files that are missing (never one
/// that exists) and the manifest of all of them.
fn write_golden() {
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let master = MasterKey::from_bytes(&MASTER_KEY).unwrap();
    // The committed keys if there is a manifest, so that new objects are
    // sealed under the user key of the objects already there.
    let (wrapped_kek, wrapped_user_key, user_key) =
        match std::fs::read_to_string(dir.join(MANIFEST)) {
            Ok(text) => {
                let m: toml::Table = text.parse().expect("golden manifest is TOML");
                let keys = table(&m, "keys");
                assert_eq!(s(keys, "kek_aad"), KEK_AAD);
                assert_eq!(s(keys, "user_key_aad"), USER_KEY_AAD);
                let wrapped_kek = Wrapped::<Kek>::from_bytes(&h(keys, "wrapped_kek")).unwrap();
                let kek = master
                    .unwrap_kek(&wrapped_kek, KEK_AAD.as_bytes())
                    .expect("committed KEK unwraps");
                let wrapped_user_key =
                    Wrapped::<UserKey>::from_bytes(&h(keys, "wrapped_user_key")).unwrap();
                let user_key = kek
                    .unwrap_user_key(&wrapped_user_key, USER_KEY_AAD.as_bytes())
                    .expect("committed user key unwraps");
                (wrapped_kek, wrapped_user_key, user_key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let kek = Kek::generate().unwrap();
                let wrapped_kek = master.wrap_kek(&kek, KEK_AAD.as_bytes()).unwrap();
                let user_key = UserKey::generate().unwrap();
                let wrapped_user_key = kek
                    .wrap_user_key(&user_key, USER_KEY_AAD.as_bytes())
                    .unwrap();
                (wrapped_kek, wrapped_user_key, user_key)
            }
            Err(e) => panic!("{MANIFEST}: {e}"),
        };
    let naming = NamingKey::from_bytes(&NAMING_KEY).unwrap();
    let pseudonym = naming.pseudonym(USER_ID);

    let mut m = String::new();
    writeln!(
        m,
        "# Golden objects of the sealgate object format, versions 1 and 2 (see FORMAT.md)."
    )
    .unwrap();
    writeln!(
        m,
        "# Written by tests/it/crypto/golden.rs with {WRITE_ENV}=1; read by every test run."
    )
    .unwrap();
    writeln!(
        m,
        "# Binary values are lower-case hex. Plaintext byte i is (i mod 251)."
    )
    .unwrap();
    writeln!(
        m,
        "# suite is the object's or message's suite (FORMAT.md \"Suites\"): objects sm4-* are suite 2."
    )
    .unwrap();
    writeln!(
        m,
        "# version is an object's format version (FORMAT.md \"Envelope\"): 2 for objects v2-*, 1 where absent."
    )
    .unwrap();
    writeln!(
        m,
        "# kek_aad and user_key_aad are test values, not the key store's AADs."
    )
    .unwrap();
    writeln!(m).unwrap();
    writeln!(m, "[keys]").unwrap();
    writeln!(m, "master_key = \"{}\"", ::hex::encode(MASTER_KEY)).unwrap();
    writeln!(m, "kek_aad = {}", toml_string(KEK_AAD)).unwrap();
    writeln!(
        m,
        "wrapped_kek = \"{}\"",
        ::hex::encode(wrapped_kek.as_bytes())
    )
    .unwrap();
    writeln!(m, "user_key_aad = {}", toml_string(USER_KEY_AAD)).unwrap();
    writeln!(
        m,
        "wrapped_user_key = \"{}\"",
        ::hex::encode(wrapped_user_key.as_bytes())
    )
    .unwrap();
    writeln!(m, "user_key_version = {USER_KEY_VERSION}").unwrap();
    writeln!(m, "naming_key = \"{}\"", ::hex::encode(NAMING_KEY)).unwrap();
    writeln!(m, "user_id = {}", toml_string(USER_ID)).unwrap();
    writeln!(m, "pseudonym = \"{pseudonym}\"").unwrap();

    // Version 1's objects first (their entries read as they always did),
    // then version 2's.
    for (version, suite) in formats() {
        for o in OBJECTS {
            let name = golden_name((version, suite), o);
            let object_id = golden_object_id((version, suite), o);
            let identity = ObjectIdentity::new(o.region, o.space, pseudonym, &object_id).unwrap();
            let plaintext = golden_plaintext(o.len);
            let file = format!("object-{name}.bin");
            let object = existing_or_write(&file, || {
                seal_object_in(
                    (version, suite),
                    &user_key,
                    USER_KEY_VERSION,
                    &identity,
                    &metadata_of(o),
                    &plaintext,
                    1000,
                )
            });
            writeln!(m).unwrap();
            writeln!(m, "[objects.{name}]").unwrap();
            writeln!(m, "file = {}", toml_string(&file)).unwrap();
            writeln!(m, "suite = {}", toml_string(suite.name())).unwrap();
            if version != Version::V1 {
                writeln!(m, "version = {}", version.byte()).unwrap();
            }
            writeln!(m, "region = {}", toml_string(o.region)).unwrap();
            writeln!(m, "space = {}", toml_string(o.space)).unwrap();
            writeln!(m, "object_id = {}", toml_string(&object_id)).unwrap();
            writeln!(
                m,
                "identity_encoding = \"{}\"",
                ::hex::encode(identity.encode(version))
            )
            .unwrap();
            writeln!(m, "content_type = {}", toml_string(o.content_type)).unwrap();
            let attrs: Vec<String> = o
                .attributes
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
                .collect();
            writeln!(m, "attributes = {{ {} }}", attrs.join(", ")).unwrap();
            writeln!(m, "plaintext_len = {}", o.len).unwrap();
            writeln!(m, "plaintext_sha256 = \"{}\"", sha256_hex(&plaintext)).unwrap();
            writeln!(m, "object_sha256 = \"{}\"", sha256_hex(&object)).unwrap();
        }
    }

    for (suite, section, file, title) in KATS {
        let kat = existing_or_write(file, || kat_message(suite));
        // The derivation, by the independent reader's code (the
        // implementation does not expose the AEAD key and base nonce).
        let (aead_key, base_nonce, commitment) =
            derive_in(suite.id(), &KAT_KEY, &KAT_SALT, KAT_CONTEXT);
        writeln!(m).unwrap();
        if suite == Suite::Aes256Gcm {
            writeln!(
                m,
                "# {title} known answer: Sealer::with_salt(key, context, salt)"
            )
            .unwrap();
        } else {
            writeln!(
                m,
                "# {title} known answer: Sealer::with_salt_in({}, key, context, salt)",
                suite.name()
            )
            .unwrap();
        }
        writeln!(
            m,
            "# over plaintext_len bytes of (i mod 251), pushed at once."
        )
        .unwrap();
        writeln!(m, "[{section}]").unwrap();
        writeln!(m, "file = {}", toml_string(file)).unwrap();
        writeln!(m, "suite = {}", toml_string(suite.name())).unwrap();
        writeln!(m, "key = \"{}\"", ::hex::encode(KAT_KEY)).unwrap();
        writeln!(m, "salt = \"{}\"", ::hex::encode(KAT_SALT)).unwrap();
        writeln!(m, "context = \"{}\"", ::hex::encode(KAT_CONTEXT)).unwrap();
        writeln!(m, "plaintext_len = {KAT_LEN}").unwrap();
        writeln!(m, "message_sha256 = \"{}\"", sha256_hex(&kat)).unwrap();
        writeln!(
            m,
            "# The derivation (FORMAT.md \"Derivation\"): AEAD key, base nonce, commitment."
        )
        .unwrap();
        writeln!(m, "aead_key = \"{}\"", ::hex::encode(aead_key)).unwrap();
        writeln!(m, "base_nonce = \"{}\"", ::hex::encode(base_nonce)).unwrap();
        writeln!(m, "commitment = \"{}\"", ::hex::encode(commitment)).unwrap();
    }
    std::fs::write(dir.join(MANIFEST), m).unwrap();
}

fn manifest() -> toml::Table {
    if writing() {
        // Both tests may run at once: write under a lock.
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(write_golden);
    }
    let path = dir().join(MANIFEST);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; golden files are committed (regenerate only with {WRITE_ENV}=1)",
            path.display()
        )
    });
    text.parse().expect("golden manifest is TOML")
}

fn s<'a>(t: &'a toml::Table, k: &str) -> &'a str {
    t.get(k)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("golden manifest: missing string {k}"))
}

fn h(t: &toml::Table, k: &str) -> Vec<u8> {
    ::hex::decode(s(t, k)).unwrap_or_else(|e| panic!("golden manifest: {k}: {e}"))
}

fn n(t: &toml::Table, k: &str) -> u64 {
    t.get(k)
        .and_then(toml::Value::as_integer)
        .and_then(|i| u64::try_from(i).ok())
        .unwrap_or_else(|| panic!("golden manifest: missing integer {k}"))
}

fn table<'a>(t: &'a toml::Table, k: &str) -> &'a toml::Table {
    t.get(k)
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("golden manifest: missing table {k}"))
}

fn read(file: &str) -> Vec<u8> {
    let path = dir().join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn golden_objects_open() {
    let m = manifest();
    let keys = table(&m, "keys");
    assert_eq!(h(keys, "master_key"), MASTER_KEY);
    assert_eq!(h(keys, "naming_key"), NAMING_KEY);
    assert_eq!(s(keys, "user_id"), USER_ID);

    // Unwrap the chain: master key -> KEK -> user key.
    let master = MasterKey::from_bytes(&h(keys, "master_key")).unwrap();
    let wrapped_kek = Wrapped::<Kek>::from_bytes(&h(keys, "wrapped_kek")).unwrap();
    let kek = master
        .unwrap_kek(&wrapped_kek, s(keys, "kek_aad").as_bytes())
        .expect("golden KEK unwraps");
    let wrapped_user_key = Wrapped::<UserKey>::from_bytes(&h(keys, "wrapped_user_key")).unwrap();
    let user_key = kek
        .unwrap_user_key(&wrapped_user_key, s(keys, "user_key_aad").as_bytes())
        .expect("golden user key unwraps");
    let version_of_key = u32::try_from(n(keys, "user_key_version")).unwrap();
    assert_eq!(version_of_key, USER_KEY_VERSION);

    // The pseudonym derivation is pinned.
    let naming = NamingKey::from_bytes(&h(keys, "naming_key")).unwrap();
    let pseudonym = naming.pseudonym(s(keys, "user_id"));
    assert_eq!(
        pseudonym.to_string(),
        s(keys, "pseudonym"),
        "pseudonym changed"
    );

    // The same chain, unwrapped independently, for the independent reader.
    let kek_bytes = unwrap_key(
        &MASTER_KEY,
        &h(keys, "wrapped_kek"),
        s(keys, "kek_aad").as_bytes(),
    )
    .expect("independent KEK unwrap");
    let uk_bytes = unwrap_key(
        &kek_bytes,
        &h(keys, "wrapped_user_key"),
        s(keys, "user_key_aad").as_bytes(),
    )
    .expect("independent user key unwrap");

    let objects = table(&m, "objects");
    assert_eq!(
        objects.len(),
        Version::ALL.len() * Suite::ALL.len() * OBJECTS.len()
    );
    for ((version, suite), expected) in formats().flat_map(|f| OBJECTS.iter().map(move |o| (f, o)))
    {
        let name = &golden_name((version, suite), expected)[..];
        let o = table(objects, name);
        assert_eq!(s(o, "file"), format!("object-{name}.bin"));
        assert_eq!(s(o, "suite"), suite.name(), "{name}");
        // The format version: absent (or 1) for version 1's entries.
        let manifest_version = o.get("version").map_or(1, |_| n(o, "version"));
        assert_eq!(
            manifest_version,
            u64::from(version.byte()),
            "{name}: version"
        );
        let object = read(s(o, "file"));
        assert_eq!(
            sha256_hex(&object),
            s(o, "object_sha256"),
            "{name}: file changed"
        );
        let len = usize::try_from(n(o, "plaintext_len")).unwrap();
        assert_eq!(len, expected.len);
        let plaintext = golden_plaintext(len);
        assert_eq!(sha256_hex(&plaintext), s(o, "plaintext_sha256"), "{name}");
        let plaintext_sha256: [u8; 32] = h(o, "plaintext_sha256").try_into().unwrap();

        assert_eq!(
            s(o, "object_id"),
            golden_object_id((version, suite), expected)
        );
        let identity =
            ObjectIdentity::new(s(o, "region"), s(o, "space"), pseudonym, s(o, "object_id"))
                .unwrap();
        assert_eq!(
            identity.encode(version),
            h(o, "identity_encoding"),
            "{name}: identity encoding"
        );
        let ident = Ident::new(
            s(o, "region"),
            s(o, "space"),
            pseudonym.as_bytes(),
            s(o, "object_id"),
        );
        assert_eq!(ident.encoding(version.byte()), identity.encode(version));
        let attributes: BTreeMap<String, String> = table(o, "attributes")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let metadata = Metadata {
            content_type: s(o, "content_type").to_owned(),
            attributes,
        };
        assert_eq!(metadata, metadata_of(expected));

        // Layout.
        let header = Header::parse(&object).expect("golden header parses");
        assert_eq!(&object[..6], b"SEALGT", "{name}");
        assert_eq!(object[6], version.byte(), "{name}: version byte");
        assert_eq!(object[7], suite.id(), "{name}: suite byte");
        assert_eq!((header.version, header.suite), (version, suite), "{name}");
        assert_eq!(Header::suite_of(&object), Ok(suite), "{name}");
        assert_eq!(Header::format_of(&object), Ok((version, suite)), "{name}");
        let stored = object.len() as u64;
        let layout = ObjectLayout::new(&object, stored).unwrap();
        assert_eq!(
            (layout.version(), layout.suite()),
            (version, suite),
            "{name}"
        );
        assert_eq!(layout.plaintext_len(), len as u64, "{name}");
        assert_eq!(
            layout.digest(),
            (version == Version::V2).then(|| stored - SEALED_DIGEST_LEN as u64..stored),
            "{name}: digest"
        );
        assert_eq!(header.key_slot.user_key_version, version_of_key);
        assert_eq!(
            object.len(),
            header.len()
                + chunked::message_len(len as u64) as usize
                + version.trailer_len() as usize,
            "{name}: object length"
        );
        assert_eq!(
            header.len() - 76,
            chunked::message_len(metadata.encode().unwrap().len() as u64) as usize,
            "{name}: metadata length"
        );

        // Our reader, streaming in several splits; the digest of version 2
        // is the plaintext's SHA-256 of the manifest.
        for piece in [usize::MAX, 1000, 1] {
            if piece == 1 && len > 20_000 {
                continue;
            }
            let (meta, plain, digest) = open_object_with_digest(
                &object,
                single_key(version_of_key, &user_key),
                &identity,
                piece,
            )
            .unwrap_or_else(|e| panic!("{name}: golden object does not open: {e:?}"));
            assert_eq!(meta, metadata, "{name}");
            assert!(plain == plaintext, "{name}: plaintext");
            assert_eq!(
                digest,
                (version == Version::V2).then_some(plaintext_sha256),
                "{name}: digest"
            );
        }
        // Our reader, by range.
        if len > 0 {
            let (unsealed, _) =
                unseal_object(&object, single_key(version_of_key, &user_key), &identity).unwrap();
            let body = body_of(&object);
            assert_eq!(body.len() as u64, layout.body_len());
            let ra = unsealed
                .body_random_access(&body[..chunked::HEADER_LEN])
                .unwrap();
            for (a, b) in [
                (0, None),
                (len as u64 - 1, None),
                (0, Some(1)),
                (len as u64 / 2, Some(len as u64)),
            ] {
                let got = read_range(&ra, body, a, b).unwrap();
                assert!(
                    got == plaintext[a as usize..b.unwrap_or(len as u64) as usize],
                    "{name}"
                );
            }
        }
        // Read as the other suite, it does not open (the key slot's AEAD
        // differs), and neither does a suite this build does not know;
        // likewise as the other format version (the identity encoding
        // differs) and a version this build does not know.
        for (at, byte, stage, error) in [
            (
                7,
                3 - suite.id(),
                Stage::Unseal,
                Some(CryptoError::DecryptionFailed),
            ),
            (7, 3, Stage::Parse, Some(CryptoError::UnsupportedSuite(3))),
            (
                6,
                3 - version.byte(),
                Stage::Unseal,
                Some(CryptoError::DecryptionFailed),
            ),
            (6, 3, Stage::Parse, Some(CryptoError::UnsupportedVersion(3))),
        ] {
            let mut other = object.clone();
            other[at] = byte;
            let failure = open_object(
                &other,
                single_key(version_of_key, &user_key),
                &identity,
                1000,
            )
            .expect_err(name);
            assert_eq!((failure.stage, failure.error), (stage, error), "{name}");
            assert!(
                open_object_independently(&other, &uk_bytes, &ident).is_none(),
                "{name}"
            );
        }
        if version == Version::V2 {
            // Relabelled version 1 with its digest cut off: the key slot.
            let mut cut = object[..object.len() - SEALED_DIGEST_LEN].to_vec();
            cut[6] = 1;
            let failure = open_object(&cut, single_key(version_of_key, &user_key), &identity, 1000)
                .expect_err(name);
            assert_eq!(
                (failure.stage, failure.error),
                (Stage::Unseal, Some(CryptoError::DecryptionFailed)),
                "{name}"
            );
            assert!(
                open_object_independently(&cut, &uk_bytes, &ident).is_none(),
                "{name}"
            );
            // A byte of the digest changed: the body opens, the digest not.
            let mut bad = object.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let failure = open_object(&bad, single_key(version_of_key, &user_key), &identity, 1000)
                .expect_err(name);
            assert_eq!(
                (failure.stage, failure.error, failure.released),
                (Stage::Digest, Some(CryptoError::DecryptionFailed), len),
                "{name}"
            );
            assert!(
                open_object_independently(&bad, &uk_bytes, &ident).is_none(),
                "{name}"
            );
        }
        // The independent reader.
        let opened = open_object_independently(&object, &uk_bytes, &ident)
            .unwrap_or_else(|| panic!("{name}: independent reader rejects the golden object"));
        assert_eq!(opened.version, version.byte());
        assert_eq!(opened.suite, suite.id());
        assert_eq!(opened.user_key_version, version_of_key);
        assert_eq!(opened.content_type, metadata.content_type);
        assert_eq!(
            opened.attributes,
            metadata.attributes.clone().into_iter().collect::<Vec<_>>()
        );
        assert!(opened.body == plaintext);
        assert_eq!(
            opened.digest,
            (version == Version::V2).then_some(plaintext_sha256),
            "{name}"
        );
    }
}

#[test]
fn c2sp_known_answer() {
    let m = manifest();
    let plaintext = golden_plaintext(KAT_LEN);
    let mut messages = Vec::new();
    for (suite, section, file, title) in KATS {
        let kat = table(&m, section);
        assert_eq!(s(kat, "file"), file);
        assert_eq!(s(kat, "suite"), suite.name(), "{section}");
        assert_eq!(h(kat, "key"), KAT_KEY);
        assert_eq!(h(kat, "salt"), KAT_SALT);
        assert_eq!(h(kat, "context"), KAT_CONTEXT);
        assert_eq!(n(kat, "plaintext_len"), KAT_LEN as u64);
        let stored = read(s(kat, "file"));
        assert_eq!(sha256_hex(&stored), s(kat, "message_sha256"), "{file}");
        let fresh = kat_message(suite);
        assert_eq!(fresh.len(), stored.len());
        assert!(
            fresh == stored,
            "{title}: Sealer::with_salt_in output changed: the body layer is pinned"
        );
        assert_eq!(
            open_message_in(suite, &KAT_KEY, KAT_CONTEXT, &stored, 333).unwrap(),
            plaintext
        );
        // The derivation, recorded for readers checking by hand and
        // recomputed independently; the commitment is also the message's.
        let (aead_key, base_nonce, commitment) =
            derive_in(suite.id(), &KAT_KEY, &KAT_SALT, KAT_CONTEXT);
        assert_eq!(h(kat, "aead_key"), aead_key, "{section}");
        assert_eq!(aead_key.len(), if suite == Suite::Sm4Gcm { 16 } else { 32 });
        assert_eq!(h(kat, "base_nonce"), base_nonce, "{section}");
        assert_eq!(h(kat, "commitment"), commitment, "{section}");
        assert_eq!(stored[..SALT_LEN], KAT_SALT);
        assert_eq!(stored[SALT_LEN..chunked::HEADER_LEN], commitment);
        assert_eq!(
            c2sp_open_in(suite.id(), &KAT_KEY, KAT_CONTEXT, &stored),
            Some(plaintext.clone()),
            "{title}: independent reader"
        );
        messages.push(stored);
    }
    // Same inputs, different suites: nothing in common past the salt.
    assert_eq!(messages[0].len(), messages[1].len());
    assert_ne!(messages[0][SALT_LEN..], messages[1][SALT_LEN..]);
}
