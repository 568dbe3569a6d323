//! The second independent reader, `tests/format/open_object.py`: Python
//! over OpenSSL (the `cryptography` package), written from `FORMAT.md`
//! alone. It opens the golden set of both suites, objects freshly sealed by
//! this build with random keys, lengths and metadata, and rejects tampered
//! ones for the right reason. Run with `python3`; without it, or without
//! `cryptography`, these tests fail (they never skip).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_lc_rs::digest::{digest, SHA256};
use sealgate::crypto::chunked::CHUNK_SIZE;
use sealgate::crypto::{
    Header, Kek, MasterKey, Metadata, NamingKey, ObjectIdentity, Suite, UserKey,
};

use super::differential::unwrap_key;
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
fn python_reader_opens_the_golden_set_of_both_suites() {
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
        expected.push(format!("ok object {name} ({suite}, "));
    }
    for section in ["c2sp_kat", "c2sp_sm4_kat"] {
        let suite = manifest[section]["suite"].as_str().unwrap();
        expected.push(format!("ok kat {section} ({suite}, "));
    }
    for suite in Suite::ALL {
        assert!(
            expected.iter().filter(|e| e.contains(suite.name())).count() >= 5,
            "{suite}: four objects and a known answer"
        );
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
    expect: Option<(Suite, Metadata, Vec<u8>)>,
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
/// chunks among them) and random metadata, in both suites (mostly suite 2),
/// open in the Python reader to the same metadata and plaintext; the same
/// objects with a byte flipped in the key slot, the sealed metadata or the
/// body, cut short, extended, read under another identity, or with the
/// suite byte changed (2 to 1, 1 to 2, 3) are rejected, each at the part
/// that was changed.
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
    let suites = [
        Suite::Sm4Gcm,
        Suite::Sm4Gcm,
        Suite::Sm4Gcm,
        Suite::Sm4Gcm,
        Suite::Aes256Gcm,
        Suite::Aes256Gcm,
    ];
    for (i, suite) in suites.into_iter().enumerate() {
        let len = match i {
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
        let object = seal_object_in(suite, &user_key, version, &id, &metadata, &plaintext, 4096);
        // This build opens it, of course.
        let (meta, plain) = open_object(&object, single_key(version, &user_key), &id, 9999)
            .unwrap_or_else(|e| panic!("seed {seed:#x}: object {i}: {e:?}"));
        assert!(meta == metadata && plain == plaintext);

        let header_len = Header::parse(&object).unwrap().len();
        let (name, file, identity) = write(format!("{i}-{suite}"), &object, &identity);
        fresh.push(Fresh {
            name,
            file,
            identity: identity.clone(),
            expect: Some((suite, metadata, plaintext)),
            blame: "",
        });
        let mut tampered = |what: &str, blame: &'static str, bytes: Vec<u8>| {
            let (name, file, identity) = write(format!("{i}-{suite}-{what}"), &bytes, &identity);
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
        let with_suite = |id: u8| {
            let mut o = object.clone();
            o[7] = id;
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
            flip(header_len + rng.below(object.len() - header_len)),
        );
        tampered(
            "cut",
            "body: ",
            object[..object.len() - 1 - rng.below(40)].to_vec(),
        );
        tampered("extended", "body: ", [&object[..], &[0]].concat());
        tampered("suite-other", "key slot: ", with_suite(3 - suite.id()));
        tampered("suite-3", "header: unsupported suite 3", with_suite(3));
        tampered("suite-0", "header: unsupported suite 0", with_suite(0));
        // The right bytes under another identity.
        let (name, file, mut other) = write(format!("{i}-{suite}-moved"), &object, &identity);
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
            Some((suite, metadata, plaintext)) => {
                assert_eq!(r["ok"], true, "{ctx}");
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
                assert_eq!(
                    r["plaintext_sha256"],
                    hex::encode(digest(&SHA256, plaintext)),
                    "{ctx}"
                );
            }
            None => {
                assert_eq!(r["ok"], false, "{ctx}: tampered object accepted");
                let error = r["error"].as_str().unwrap();
                assert!(error.starts_with(f.blame), "{ctx}: expected `{}`", f.blame);
            }
        }
    }
    // Every untampered object was checked, and 9 tampered ones each.
    assert_eq!(fresh.iter().filter(|f| f.expect.is_some()).count(), 6);
    assert_eq!(fresh.len(), 6 * 10);
}

/// The reader's one-object command, as FORMAT.md shows it: exit status 0
/// and JSON for a golden SM4 object, 1 and `invalid: ...` for the same
/// bytes with the suite byte set to 1.
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
    let o = manifest["objects"]["sm4-three-chunks"].as_table().unwrap();
    let file = golden.join(o["file"].as_str().unwrap());
    let user_key_hex = hex::encode(user_key);
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
    assert!(out.status.success(), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["suite"], "sm4-gcm");
    assert_eq!(
        r["plaintext_sha256"],
        o["plaintext_sha256"].as_str().unwrap()
    );
    assert_eq!(
        r["user_key_version"],
        keys["user_key_version"].as_integer().unwrap()
    );

    let mut swapped = std::fs::read(&file).unwrap();
    assert_eq!(swapped[7], 2);
    swapped[7] = 1;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("swapped.bin");
    std::fs::write(&bad, &swapped).unwrap();
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "invalid: key slot: does not unwrap\n"
    );
}
