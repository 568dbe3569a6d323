//! SM4 and SM4-GCM: the GB/T 32907-2016 appendix A examples, the RFC 8998
//! appendix A SM4-GCM vector with tampering, and a differential check
//! against Python `cryptography` (OpenSSL's SM4-GCM) in both directions.
//! Every check runs on each implementation this CPU has (the GFNI one where
//! available, and always the portable one).

use std::io::Write;
use std::process::{Command, Stdio};

use sealgate::crypto::sm4::{Implementation, Sm4, Sm4Gcm, KEY_LEN, NONCE_LEN, TAG_LEN};
use sealgate::crypto::CryptoError;

use super::pattern;

fn implementations() -> Vec<Implementation> {
    let have: Vec<_> = [Implementation::Gfni, Implementation::Portable]
        .into_iter()
        .filter(|i| i.is_available())
        .collect();
    assert_eq!(have[0], Implementation::fastest());
    have
}

fn gcm(key: &[u8], imp: Implementation) -> Sm4Gcm {
    let key: &[u8; KEY_LEN] = key.try_into().unwrap();
    let gcm = Sm4Gcm::from_cipher(Sm4::with_implementation(key, imp).unwrap());
    assert_eq!(gcm.implementation(), imp);
    gcm
}

const EXAMPLE: [u8; 16] = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10";

#[test]
fn gbt_32907_example_1() {
    for imp in implementations() {
        let sm4 = Sm4::with_implementation(&EXAMPLE, imp).unwrap();
        let mut block = EXAMPLE;
        sm4.encrypt_block_in_place(&mut block);
        assert_eq!(
            hex::encode(block),
            "681edf34d206965e86b3e94f536e4246",
            "{imp:?}"
        );
    }
}

/// Encrypts the example's plaintext `n` times under its key.
fn iterate(imp: Implementation, n: u32) -> [u8; 16] {
    let sm4 = Sm4::with_implementation(&EXAMPLE, imp).unwrap();
    let mut block = EXAMPLE;
    for _ in 0..n {
        sm4.encrypt_block_in_place(&mut block);
    }
    block
}

/// Example 2: a million encryptions, on the fastest implementation.
#[test]
fn gbt_32907_example_2_million_fold() {
    let out = iterate(Implementation::fastest(), 1_000_000);
    assert_eq!(hex::encode(out), "595298c7c6fd271f0402f804c33d3f66");
}

/// The portable path is too slow for a million in this unoptimized test
/// build (about a minute), so it chains PORTABLE_ITERATIONS encryptions and must land where
/// the fastest implementation does (which example 2 pins to the standard).
const PORTABLE_ITERATIONS: u32 = 50_000;

#[test]
fn gbt_32907_example_2_portable_agrees() {
    let portable = iterate(Implementation::Portable, PORTABLE_ITERATIONS);
    assert_eq!(
        portable,
        iterate(Implementation::fastest(), PORTABLE_ITERATIONS)
    );
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// RFC 8998 appendix A.1 (SM4-GCM); OpenSSL's SM4-GCM gives the same bytes.
struct Rfc8998;

impl Rfc8998 {
    const KEY: &'static str = "0123456789ABCDEFFEDCBA9876543210";
    const IV: &'static str = "00001234567800000000ABCD";
    const AAD: &'static str = "FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2";
    const PLAINTEXT: &'static str = "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD\
                                     EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA";
    const CIPHERTEXT: &'static str = "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735\
                                      D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D";
    const TAG: &'static str = "83DE3541E4C2B58177E065A9BF7B62EC";

    fn nonce() -> [u8; NONCE_LEN] {
        unhex(Self::IV).try_into().unwrap()
    }

    /// Ciphertext followed by the tag.
    fn sealed() -> Vec<u8> {
        [unhex(Self::CIPHERTEXT), unhex(Self::TAG)].concat()
    }
}

#[test]
fn rfc_8998_seal_and_open() {
    for imp in implementations() {
        let aead = gcm(&unhex(Rfc8998::KEY), imp);
        let aad = unhex(Rfc8998::AAD);
        let mut data = unhex(Rfc8998::PLAINTEXT);
        let tag = aead
            .seal_in_place(Rfc8998::nonce(), &aad, &mut data)
            .unwrap();
        assert_eq!(hex::encode_upper(&data), Rfc8998::CIPHERTEXT, "{imp:?}");
        assert_eq!(hex::encode_upper(tag), Rfc8998::TAG, "{imp:?}");

        let mut sealed = Rfc8998::sealed();
        let opened = aead
            .open_in_place(Rfc8998::nonce(), &aad, &mut sealed)
            .unwrap();
        assert_eq!(hex::encode_upper(opened), Rfc8998::PLAINTEXT, "{imp:?}");
    }
}

#[test]
fn rfc_8998_tampering_fails() {
    for imp in implementations() {
        let aead = gcm(&unhex(Rfc8998::KEY), imp);
        let aad = unhex(Rfc8998::AAD);
        let open = |nonce: [u8; NONCE_LEN], aad: &[u8], mut sealed: Vec<u8>| {
            aead.open_in_place(nonce, aad, &mut sealed)
                .map(|p| p.to_vec())
        };
        let failed = Err(CryptoError::DecryptionFailed);
        // Untouched, it opens (so the failures below are the tampering's).
        assert!(open(Rfc8998::nonce(), &aad, Rfc8998::sealed()).is_ok());
        let len = Rfc8998::sealed().len();
        for bit in [0, 7, 8 * 31 + 3, 8 * (len - TAG_LEN) - 1] {
            let mut sealed = Rfc8998::sealed();
            sealed[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                open(Rfc8998::nonce(), &aad, sealed),
                failed,
                "{imp:?} ciphertext bit {bit}"
            );
        }
        for bit in [0, 64, 127] {
            let mut sealed = Rfc8998::sealed();
            sealed[len - TAG_LEN + bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                open(Rfc8998::nonce(), &aad, sealed),
                failed,
                "{imp:?} tag bit {bit}"
            );
        }
        let mut changed = aad.clone();
        changed[0] ^= 1;
        assert_eq!(
            open(Rfc8998::nonce(), &changed, Rfc8998::sealed()),
            failed,
            "{imp:?} AAD"
        );
        assert_eq!(
            open(Rfc8998::nonce(), &aad[1..], Rfc8998::sealed()),
            failed,
            "{imp:?} AAD"
        );
        assert_eq!(
            open(Rfc8998::nonce(), b"", Rfc8998::sealed()),
            failed,
            "{imp:?} AAD"
        );
        for byte in [0, NONCE_LEN - 1] {
            let mut nonce = Rfc8998::nonce();
            nonce[byte] ^= 0x80;
            assert_eq!(
                open(nonce, &aad, Rfc8998::sealed()),
                failed,
                "{imp:?} nonce"
            );
        }
        let mut truncated = Rfc8998::sealed();
        truncated.pop();
        assert_eq!(
            open(Rfc8998::nonce(), &aad, truncated),
            failed,
            "{imp:?} truncated"
        );
        assert_eq!(
            open(Rfc8998::nonce(), &aad, vec![0; TAG_LEN - 1]),
            failed,
            "{imp:?} short"
        );
        let mut wrong_key = unhex(Rfc8998::KEY);
        wrong_key[15] ^= 1;
        let mut sealed = Rfc8998::sealed();
        assert_eq!(
            gcm(&wrong_key, imp)
                .open_in_place(Rfc8998::nonce(), &aad, &mut sealed)
                .map(|p| p.to_vec()),
            failed,
            "{imp:?} key"
        );
    }
}

#[test]
fn keys_other_than_16_bytes_are_refused() {
    for len in [0, 15, 17, 24, 32] {
        assert_eq!(
            Sm4Gcm::new(&vec![7; len]).map(|_| ()),
            Err(CryptoError::InvalidKeySize),
            "{len} bytes"
        );
    }
    let gcm = Sm4Gcm::new(&EXAMPLE).unwrap();
    assert_eq!(gcm.implementation(), Implementation::fastest());
}

/// Python `cryptography`'s SM4-GCM (OpenSSL): one request per input line,
/// `seal|open KEY NONCE AAD DATA` in hex (`-` for empty), one line out each:
/// the sealed or opened bytes in hex (`-` for empty), or `FAIL`.
const PYTHON_SM4_GCM: &str = r#"
import sys
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
h = lambda s: b"" if s == "-" else bytes.fromhex(s)
out = []
for line in sys.stdin:
    op, key, nonce, aad, data = line.split()
    key, nonce, aad, data = h(key), h(nonce), h(aad), h(data)
    if op == "seal":
        e = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        e.authenticate_additional_data(aad)
        res = e.update(data) + e.finalize() + e.tag
    else:
        body, tag = data[:-16], data[-16:]
        d = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        d.authenticate_additional_data(aad)
        try:
            res = d.update(body) + d.finalize()
        except InvalidTag:
            out.append("FAIL")
            continue
    out.append(res.hex() or "-")
print("\n".join(out))
"#;

fn python_sm4_gcm(requests: &[String]) -> Vec<String> {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_SM4_GCM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let input = requests.join("\n") + "\n";
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python3 finishes");
    writer.join().unwrap().expect("write to python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the differential check needs python3 with the `cryptography` package (48 or later \
         for SM4-GCM; Debian: python3-cryptography; scripts/test installs it): {stderr}"
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines.len(),
        requests.len(),
        "one answer per request: {stderr}"
    );
    lines
}

fn hex_or_dash(b: &[u8]) -> String {
    if b.is_empty() {
        "-".into()
    } else {
        hex::encode(b)
    }
}

struct Case {
    key: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    aad: Vec<u8>,
    plaintext: Vec<u8>,
}

impl Case {
    fn request(&self, op: &str, data: &[u8]) -> String {
        format!(
            "{op} {} {} {} {}",
            hex::encode(&self.key),
            hex::encode(self.nonce),
            hex_or_dash(&self.aad),
            hex_or_dash(data)
        )
    }
}

const LENGTHS: [usize; 20] = [
    0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 1023, 1024, 1025, 4103, 16_400, 65_536,
    65_549,
];
const AAD_LENGTHS: [usize; 5] = [0, 1, 13, 16, 47];

/// Many keys, nonces, AAD and lengths: Python opens what we seal, we open
/// what Python seals, and the two seal to the same bytes; a flipped tag bit
/// fails on both sides.
#[test]
fn differential_against_python_cryptography() {
    for imp in implementations() {
        let mut cases = Vec::new();
        let mut seed = 1u64;
        for &len in &LENGTHS {
            for &aad_len in &AAD_LENGTHS[..if len > 4103 { 2 } else { 5 }] {
                seed += 1;
                cases.push(Case {
                    key: pattern(KEY_LEN, seed * 3),
                    nonce: pattern(NONCE_LEN, seed * 3 + 1).try_into().unwrap(),
                    aad: pattern(aad_len, seed * 3 + 2),
                    plaintext: pattern(len, seed * 7),
                });
            }
        }
        let ours: Vec<Vec<u8>> = cases
            .iter()
            .map(|c| {
                let mut data = c.plaintext.clone();
                let tag = gcm(&c.key, imp)
                    .seal_in_place(c.nonce, &c.aad, &mut data)
                    .unwrap();
                data.extend_from_slice(&tag);
                data
            })
            .collect();

        let mut requests = Vec::new();
        for (case, sealed) in cases.iter().zip(&ours) {
            requests.push(case.request("seal", &case.plaintext));
            requests.push(case.request("open", sealed));
            let mut forged = sealed.clone();
            *forged.last_mut().unwrap() ^= 0x40;
            requests.push(case.request("open", &forged));
        }
        let answers = python_sm4_gcm(&requests);

        for ((case, sealed), answer) in cases.iter().zip(&ours).zip(answers.chunks(3)) {
            let what = format!(
                "{imp:?}, {} bytes, {} AAD bytes",
                case.plaintext.len(),
                case.aad.len()
            );
            // Python seals; we open that.
            let theirs = if answer[0] == "-" {
                Vec::new()
            } else {
                unhex(&answer[0])
            };
            assert_eq!(&theirs, sealed, "same ciphertext and tag, {what}");
            let mut theirs = theirs;
            let opened = gcm(&case.key, imp)
                .open_in_place(case.nonce, &case.aad, &mut theirs)
                .unwrap_or_else(|e| panic!("we open Python's, {what}: {e}"));
            assert_eq!(opened, &case.plaintext[..], "{what}");
            // We seal; Python opens that, and refuses it forged.
            assert_eq!(
                answer[1],
                hex_or_dash(&case.plaintext),
                "Python opens ours, {what}"
            );
            assert_eq!(answer[2], "FAIL", "Python refuses a forged tag, {what}");
            let mut forged = sealed.clone();
            *forged.last_mut().unwrap() ^= 0x40;
            assert!(
                gcm(&case.key, imp)
                    .open_in_place(case.nonce, &case.aad, &mut forged)
                    .is_err(),
                "we refuse a forged tag, {what}"
            );
        }
    }
}
