//! The second independent reader, `tests/format/open_object.py`: Python
//! over OpenSSL (the `cryptography` package), written from `FORMAT.md`
//! alone. It opens the golden set of both suites and both format versions,
//! objects freshly sealed by this build with random keys, lengths and
//! metadata, and rejects tampered ones for the right reason. Run with `python3`; without it, or without
//! `cryptography`, these tests fail (they never skip).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_lc_rs::digest::{digest, SHA256};
use sealgate::crypto::chunked::CHUNK_SIZE;
use sealgate::crypto::envelope::SEALED_DIGEST_LEN;
use sealgate::crypto::{
    Header, Kek, MasterKey, Metadata, NamingKey, ObjectIdentity, Suite, UserKey, Version,
};

use super::differential::{c2sp_seal_in, identity_encoding, lp, unwrap_key, unwrap_key_in};
use super::{open_object, pattern, seal_object_in, single_key};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the reader with `args`.
fn python_reader(args: &[&str]) -> Output {
    let script = root().join("tests/format/open_object.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3 (the independent reader needs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "the Python reader needs the `cryptography` package (Debian: python3-cryptography; \
         scripts/test installs it): {stderr}"
    );
    assert!(stderr.is_empty(), "python reader: {stderr}");
    out
}

#[test]
fn python_reader_opens_the_golden_set_of_both_suites_and_versions() {
    let golden = root().join("tests/golden");
    let out = python_reader(&["golden", golden.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "python reader:\n{stdout}");
    // Every object and known answer of the manifest, each of its suite.
    let manifest: toml::Table = std::fs::read_to_string(golden.join("golden.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut expected = Vec::new();
    for (name, o) in manifest["objects"].as_table().unwrap() {
        let suite = o["suite"].as_str().unwrap();
        // Version 1's entries have no `version`.
        let version = o.get("version").map_or(1, |v| v.as_integer().unwrap());
        assert_eq!(version == 2, name.starts_with("v2-"), "{name}");
        expected.push(format!("ok object {name} ({suite}, version {version}, "));
    }
    for section in ["c2sp_kat", "c2sp_sm4_kat"] {
        let suite = manifest[section]["suite"].as_str().unwrap();
        expected.push(format!("ok kat {section} ({suite}, "));
    }
    for suite in Suite::ALL {
        assert!(
            expected.iter().filter(|e| e.contains(suite.name())).count() >= 9,
            "{suite}: four objects of each version and a known answer"
        );
        for version in Version::ALL {
            let of = format!("{}, version {}, ", suite.name(), version.byte());
            assert_eq!(
                expected.iter().filter(|e| e.contains(&of)).count(),
                4,
                "{suite}, version {}: four objects",
                version.byte()
            );
        }
    }
    let ok_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ok ")).collect();
    assert_eq!(ok_lines.len(), expected.len(), "{stdout}");
    for e in &expected {
        assert!(
            ok_lines.iter().any(|l| l.starts_with(e)),
            "missing `{e}`:\n{stdout}"
        );
    }
    assert!(stdout.ends_with("all ok\n"), "{stdout}");
}

/// xorshift64*, seeded from the system RNG (the seed is in every message).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        aws_lc_rs::rand::fill(&mut seed).unwrap();
        Self(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn text(&mut self, max: usize) -> String {
        const CHARS: &[char] = &[
            'a',
            'z',
            '0',
            ' ',
            '/',
            '=',
            'é',
            'ü',
            '✓',
            '猫',
            '\u{1f600}',
        ];
        (0..self.below(max + 1))
            .map(|_| CHARS[self.below(CHARS.len())])
            .collect()
    }
}

struct Fresh {
    name: String,
    file: PathBuf,
    identity: (String, String, String),
    expect: Option<(Version, Suite, Metadata, Vec<u8>)>,
    /// The part of the object the reader must blame, for a tampered one.
    blame: &'static str,
}

fn job(f: &Fresh, user_key: &[u8; 32], pseudonym: &[u8; 32]) -> serde_json::Value {
    serde_json::json!({
        "name": f.name,
        "file": f.file.to_str().unwrap(),
        "user_key": hex::encode(user_key),
        "region": f.identity.0,
        "space": f.identity.1,
        "pseudonym": hex::encode(pseudonym),
        "object_id": f.identity.2,
    })
}

/// Objects sealed now by this build, with random lengths (several
/// chunks among them) and random metadata, in both format versions and
/// both suites, open in the Python reader to the same metadata and
/// plaintext (and, in version 2, the stored digest, which it checks against
/// the plaintext); the same objects with a byte flipped in the key slot,
/// the sealed metadata, the body or the digest, a digest of another hash
/// (sealed under the object's DEK), cut short, extended, read
/// under another identity, with the suite byte changed (2 to 1, 1 to 2, 3,
/// 0) or the version byte changed (2 to 1 with or without the digest, 1 to
/// 2 with or without 104 bytes appended, 3), or without the digest, are
/// rejected, each at the part that was changed.
#[test]
fn python_reader_opens_fresh_objects_and_rejects_tampered_ones() {
    let mut rng = Rng::new();
    let seed = rng.0;
    // A user key whose bytes the test knows: generated, wrapped under a KEK
    // under a known master key, and unwrapped independently.
    let master_bytes = [0x37u8; 32];
    let master = MasterKey::from_bytes(&master_bytes).unwrap();
    let kek = Kek::generate().unwrap();
    let kek_bytes = unwrap_key(
        &master_bytes,
        master.wrap_kek(&kek, b"py").unwrap().as_bytes(),
        b"py",
    )
    .unwrap();
    let user_key = UserKey::generate().unwrap();
    let uk_bytes = unwrap_key(
        &kek_bytes,
        kek.wrap_user_key(&user_key, b"py").unwrap().as_bytes(),
        b"py",
    )
    .unwrap();
    let pseudonym = NamingKey::from_bytes(&[0x44; 32])
        .unwrap()
        .pseudonym("python");

    let dir = tempfile::tempdir().unwrap();
    let mut fresh: Vec<Fresh> = Vec::new();
    let write = |name: String, bytes: &[u8], identity: &(String, String, String)| {
        let file = dir.path().join(&name);
        std::fs::write(&file, bytes).unwrap();
        (name, file, identity.clone())
    };
    use Suite::{Aes256Gcm as Aes, Sm4Gcm as Sm4};
    use Version::{V1, V2};
    let formats = [
        (V2, Sm4),
        (V2, Sm4),
        (V1, Sm4),
        (V1, Sm4),
        (V2, Aes),
        (V2, Aes),
        (V1, Aes),
        (V1, Aes),
    ];
    for (i, (format, suite)) in formats.into_iter().enumerate() {
        let len = match i % 4 {
            0 => 2 * CHUNK_SIZE + rng.below(CHUNK_SIZE),
            1 => CHUNK_SIZE * (1 + rng.below(3)),
            _ => rng.below(4 * CHUNK_SIZE + 100),
        };
        let mut metadata = Metadata {
            content_type: rng.text(30),
            ..Metadata::default()
        };
        for _ in 0..rng.below(6) {
            metadata.attributes.insert(rng.text(8), rng.text(40));
        }
        let plaintext = pattern(len, rng.next());
        let version = rng.below(1000) as u32;
        let identity = (
            rng.text(12),
            rng.text(12),
            format!("obj/{i}/{}", rng.text(20)),
        );
        let id = ObjectIdentity::new(&identity.0, &identity.1, pseudonym, &identity.2).unwrap();
        let object = seal_object_in(
            (format, suite),
            &user_key,
            version,
            &id,
            &metadata,
            &plaintext,
            4096,
        );
        // This build opens it, of course.
        let (meta, plain) = open_object(&object, single_key(version, &user_key), &id, 9999)
            .unwrap_or_else(|e| panic!("seed {seed:#x}: object {i}: {e:?}"));
        assert!(meta == metadata && plain == plaintext);

        let header_len = Header::parse(&object).unwrap().len();
        let body_end = object.len() - format.trailer_len() as usize;
        let plaintext_sha256: [u8; 32] = digest(&SHA256, &plaintext).as_ref().try_into().unwrap();
        let prefix = format!("{i}-v{}-{suite}", format.byte());
        let (name, file, identity) = write(prefix.clone(), &object, &identity);
        fresh.push(Fresh {
            name,
            file,
            identity: identity.clone(),
            expect: Some((format, suite, metadata, plaintext)),
            blame: "",
        });
        let mut tampered = |what: &str, blame: &'static str, bytes: Vec<u8>| {
            let (name, file, identity) = write(format!("{prefix}-{what}"), &bytes, &identity);
            fresh.push(Fresh {
                name,
                file,
                identity,
                expect: None,
                blame,
            });
        };
        let flip = |pos: usize| {
            let mut o = object.clone();
            o[pos] ^= 1 << (pos % 8);
            o
        };
        let with = |at: usize, byte: u8, bytes: &[u8]| {
            let mut o = bytes.to_vec();
            o[at] = byte;
            o
        };
        tampered("slot", "key slot: ", flip(12 + rng.below(60)));
        tampered(
            "metadata",
            "metadata: ",
            flip(76 + rng.below(header_len - 76)),
        );
        tampered(
            "body",
            "body: ",
            flip(header_len + rng.below(body_end - header_len)),
        );
        tampered(
            "cut",
            "body: ",
            object[..object.len() - 1 - rng.below(40)].to_vec(),
        );
        tampered("extended", "body: ", [&object[..], &[0]].concat());
        tampered(
            "suite-other",
            "key slot: ",
            with(7, 3 - suite.id(), &object),
        );
        tampered(
            "suite-3",
            "header: unsupported suite 3",
            with(7, 3, &object),
        );
        tampered(
            "suite-0",
            "header: unsupported suite 0",
            with(7, 0, &object),
        );
        tampered(
            "version-other",
            "key slot: ",
            with(6, 3 - format.byte(), &object),
        );
        tampered(
            "version-3",
            "header: unsupported format version 3",
            with(6, 3, &object),
        );
        match format {
            V2 => {
                tampered(
                    "digest",
                    "digest: ",
                    flip(body_end + rng.below(SEALED_DIGEST_LEN)),
                );
                tampered("digest-cut", "body: ", object[..body_end].to_vec());
                // A digest that opens, of another hash: sealed here under
                // the object's DEK (unwrapped independently).
                let encoding = identity_encoding(
                    2,
                    &identity.0,
                    &identity.1,
                    pseudonym.as_bytes(),
                    &identity.2,
                );
                let dek = unwrap_key_in(suite.id(), &uk_bytes, &object[12..72], &encoding).unwrap();
                let mut context = encoding;
                lp(&mut context, b"digest");
                let mut lie = plaintext_sha256;
                lie[31] ^= 0x80;
                let sealed = c2sp_seal_in(suite.id(), &dek, &context, &[7; 24], &lie);
                tampered(
                    "digest-lie",
                    "digest: not the SHA-256 of the plaintext",
                    [&object[..body_end], &sealed[..]].concat(),
                );
                tampered(
                    "version-1-digest-cut",
                    "key slot: ",
                    with(6, 1, &object[..body_end]),
                );
            }
            V1 => {
                let appended = [&object[..], &[0x5a; SEALED_DIGEST_LEN][..]].concat();
                tampered("version-2-appended", "key slot: ", with(6, 2, &appended));
            }
        }
        // The right bytes under another identity.
        let (name, file, mut other) = write(format!("{prefix}-moved"), &object, &identity);
        other.2.push('!');
        fresh.push(Fresh {
            name,
            file,
            identity: other,
            expect: None,
            blame: "key slot: ",
        });
    }

    let jobs: Vec<serde_json::Value> = fresh
        .iter()
        .map(|f| job(f, &uk_bytes, pseudonym.as_bytes()))
        .collect();
    let jobs_file = dir.path().join("jobs.json");
    std::fs::write(&jobs_file, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let out = python_reader(&["batch", jobs_file.to_str().unwrap()]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "seed {seed:#x}: {stdout}");
    let results: BTreeMap<String, serde_json::Value> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["name"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    assert_eq!(results.len(), fresh.len(), "seed {seed:#x}: {stdout}");
    for f in &fresh {
        let r = &results[&f.name];
        let ctx = format!("seed {seed:#x}: {}: {r}", f.name);
        match &f.expect {
            Some((format, suite, metadata, plaintext)) => {
                assert_eq!(r["ok"], true, "{ctx}");
                assert_eq!(r["version"], format.byte(), "{ctx}");
                assert_eq!(r["suite"], suite.name(), "{ctx}");
                assert_eq!(r["content_type"], metadata.content_type.as_str(), "{ctx}");
                let attributes: Vec<(String, String)> =
                    serde_json::from_value(r["attributes"].clone()).unwrap();
                assert_eq!(
                    attributes,
                    metadata.attributes.clone().into_iter().collect::<Vec<_>>(),
                    "{ctx}"
                );
                assert_eq!(r["plaintext_len"], plaintext.len(), "{ctx}");
                let sha = hex::encode(digest(&SHA256, plaintext));
                assert_eq!(r["plaintext_sha256"], sha.as_str(), "{ctx}");
                // The digest a version-2 object stores (the reader checked
                // it against the plaintext); none in version 1.
                match format {
                    Version::V1 => assert_eq!(r["stored_sha256"], serde_json::Value::Null, "{ctx}"),
                    Version::V2 => assert_eq!(r["stored_sha256"], sha.as_str(), "{ctx}"),
                }
            }
            None => {
                assert_eq!(r["ok"], false, "{ctx}: tampered object accepted");
                let error = r["error"].as_str().unwrap();
                assert!(error.starts_with(f.blame), "{ctx}: expected `{}`", f.blame);
            }
        }
    }
    // Every untampered object was checked; 15 tampered ones each of
    // version 2, 12 of version 1.
    assert_eq!(fresh.iter().filter(|f| f.expect.is_some()).count(), 8);
    assert_eq!(fresh.len(), 4 * 16 + 4 * 13);
    for blame in [
        "digest: ",
        "digest: not the SHA-256 of the plaintext",
        "header: unsupported format version 3",
    ] {
        assert!(fresh.iter().any(|f| f.blame == blame));
    }
}

/// The reader's one-object command, as FORMAT.md shows it: exit status 0
/// and JSON for a golden SM4 object of each version, 1 and `invalid: ...`
/// for the same bytes with the suite byte set to 1, or (version 2) with the
/// last byte of the digest changed.
#[test]
fn python_reader_open_command() {
    let golden = root().join("tests/golden");
    let manifest: toml::Table = std::fs::read_to_string(golden.join("golden.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let keys = manifest["keys"].as_table().unwrap();
    let h = |v: &toml::Value| hex::decode(v.as_str().unwrap()).unwrap();
    let kek = unwrap_key(
        &h(&keys["master_key"]),
        &h(&keys["wrapped_kek"]),
        keys["kek_aad"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    let user_key = unwrap_key(
        &kek,
        &h(&keys["wrapped_user_key"]),
        keys["user_key_aad"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    let user_key_hex = hex::encode(user_key);
    let dir = tempfile::tempdir().unwrap();
    for (entry, version) in [("sm4-three-chunks", 1), ("v2-sm4-three-chunks", 2)] {
        let o = manifest["objects"][entry].as_table().unwrap();
        let file = golden.join(o["file"].as_str().unwrap());
        let run = |file: &Path| {
            python_reader(&[
                "open",
                &user_key_hex,
                o["region"].as_str().unwrap(),
                o["space"].as_str().unwrap(),
                keys["pseudonym"].as_str().unwrap(),
                o["object_id"].as_str().unwrap(),
                file.to_str().unwrap(),
            ])
        };
        let out = run(&file);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{entry}: {stdout}");
        let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(r["suite"], "sm4-gcm");
        assert_eq!(r["version"], version, "{entry}");
        let sha = o["plaintext_sha256"].as_str().unwrap();
        assert_eq!(r["plaintext_sha256"], sha);
        if version == 2 {
            assert_eq!(r["stored_sha256"], sha, "{entry}");
        } else {
            assert_eq!(r["stored_sha256"], serde_json::Value::Null, "{entry}");
        }
        assert_eq!(
            r["user_key_version"],
            keys["user_key_version"].as_integer().unwrap()
        );

        let original = std::fs::read(&file).unwrap();
        let mut swapped = original.clone();
        assert_eq!(swapped[7], 2);
        swapped[7] = 1;
        let bad = dir.path().join(format!("{entry}-swapped.bin"));
        std::fs::write(&bad, &swapped).unwrap();
        let out = run(&bad);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "invalid: key slot: does not unwrap\n"
        );
        if version == 2 {
            let mut forged = original;
            *forged.last_mut().unwrap() ^= 1;
            let bad = dir.path().join(format!("{entry}-digest.bin"));
            std::fs::write(&bad, &forged).unwrap();
            let out = run(&bad);
            assert_eq!(out.status.code(), Some(1));
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                "invalid: digest: chunk 0 does not authenticate\n"
            );
        }
    }
}
