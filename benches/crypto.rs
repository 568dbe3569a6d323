//! Seal and open throughput of the C2SP body layer against raw aws-lc-rs
//! AES-256-GCM over the same bytes, in the same run.
//!
//! ```text
//! cargo bench --bench crypto -- --quick
//! cargo test --bench crypto        # smoke run: each benchmark and timing loop once
//! ```
//!
//! After the criterion groups, a short interleaved timing loop prints the
//! throughput ratios `ours / raw` (1.00 = as fast as bare AES-GCM).
//!
//! The `sm4-gcm` groups compare suite 2's SM4-GCM (`crypto::sm4::Sm4Gcm`,
//! the fastest SM4 this CPU has, and the portable one at 64 KiB) with
//! suite 1's AES-256-GCM (`crypto::aead::AesGcm`), one message per call:
//!
//! ```text
//! cargo bench --bench crypto -- sm4-gcm
//! ```
//!
//! The last timing loop runs the whole body layer (C2SP chunking, the
//! HKDF derivation and commitment) in each suite and prints MiB/s and the
//! ratio sm4-gcm / aes-256-gcm.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use sealgate::crypto::aead::AesGcm;
use sealgate::crypto::chunked::{Opener, Sealer, CHUNK_SIZE, ENCRYPTED_CHUNK_LEN, HEADER_LEN};
use sealgate::crypto::sm4::{Implementation, Sm4, Sm4Gcm};
use sealgate::crypto::Suite;

const SIZES: [(&str, usize); 2] = [("4MiB", 4 << 20), ("64KiB", 64 << 10)];
const KEY: [u8; 32] = [7; 32];
const CONTEXT: &[u8] = b"sealgate bench context";

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

/// Our sealer: header, push everything, finish.
fn ours_seal(plaintext: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let (mut sealer, header) = Sealer::new(&KEY, CONTEXT).unwrap();
    out.extend_from_slice(&header);
    sealer.push(plaintext, out).unwrap();
    sealer.finish(out).unwrap();
}

/// Our opener: commitment check, push everything, finish.
fn ours_open(message: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut opener = Opener::new(&KEY, CONTEXT, &message[..HEADER_LEN]).unwrap();
    opener.push(&message[HEADER_LEN..], out).unwrap();
    opener.finish(out).unwrap();
}

fn raw_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &KEY).unwrap())
}

fn nonce(i: usize) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&(i as u64).to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Raw AES-256-GCM: copy each 16 KiB piece to the output, seal it in place,
/// append the tag.
fn raw_seal(key: &LessSafeKey, plaintext: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for (i, piece) in plaintext.chunks(CHUNK_SIZE).enumerate() {
        let start = out.len();
        out.extend_from_slice(piece);
        let tag = key
            .seal_in_place_separate_tag(nonce(i), Aad::empty(), &mut out[start..])
            .unwrap();
        out.extend_from_slice(tag.as_ref());
    }
}

/// Raw AES-256-GCM: copy the sealed pieces to a buffer and open each
/// 16 KiB + tag piece in place.
fn raw_open(key: &LessSafeKey, sealed: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(sealed);
    for (i, piece) in buf.chunks_mut(ENCRYPTED_CHUNK_LEN).enumerate() {
        key.open_in_place(nonce(i), Aad::empty(), piece).unwrap();
    }
}

struct Inputs {
    name: &'static str,
    plaintext: Vec<u8>,
    message: Vec<u8>,
    raw_sealed: Vec<u8>,
}

fn inputs() -> Vec<Inputs> {
    let key = raw_key();
    SIZES
        .iter()
        .map(|&(name, len)| {
            let plaintext = plaintext(len);
            let mut message = Vec::new();
            ours_seal(&plaintext, &mut message);
            let mut raw_sealed = Vec::new();
            raw_seal(&key, &plaintext, &mut raw_sealed);
            // Sanity: both open to the plaintext.
            let mut check = Vec::new();
            ours_open(&message, &mut check);
            assert!(check == plaintext);
            Inputs {
                name,
                plaintext,
                message,
                raw_sealed,
            }
        })
        .collect()
}

fn criterion_groups(c: &mut Criterion, inputs: &[Inputs]) {
    let key = raw_key();
    for op in ["seal", "open"] {
        let mut group = c.benchmark_group(op);
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for input in inputs {
            group.throughput(Throughput::Bytes(input.plaintext.len() as u64));
            let mut out = Vec::with_capacity(input.message.len());
            if op == "seal" {
                group.bench_function(BenchmarkId::new("sealgate", input.name), |b| {
                    b.iter(|| ours_seal(black_box(&input.plaintext), &mut out))
                });
                group.bench_function(BenchmarkId::new("raw-aes-256-gcm", input.name), |b| {
                    b.iter(|| raw_seal(&key, black_box(&input.plaintext), &mut out))
                });
            } else {
                group.bench_function(BenchmarkId::new("sealgate", input.name), |b| {
                    b.iter(|| ours_open(black_box(&input.message), &mut out))
                });
                group.bench_function(BenchmarkId::new("raw-aes-256-gcm", input.name), |b| {
                    b.iter(|| raw_open(&key, black_box(&input.raw_sealed), &mut out))
                });
            }
        }
        group.finish();
    }
}

/// One AEAD of the comparison: seal in place, open in place.
trait OneShot {
    fn seal(&self, buf: &mut Vec<u8>);
    fn open(&self, buf: &mut [u8]);
}

const AAD: &[u8] = b"sealgate bench aad";
const NONCE: [u8; 12] = [9; 12];

impl OneShot for AesGcm {
    fn seal(&self, buf: &mut Vec<u8>) {
        let tag = self.seal_in_place(NONCE, AAD, buf).unwrap();
        buf.extend_from_slice(&tag);
    }
    fn open(&self, buf: &mut [u8]) {
        self.open_in_place(NONCE, AAD, buf).unwrap();
    }
}

impl OneShot for Sm4Gcm {
    fn seal(&self, buf: &mut Vec<u8>) {
        let tag = self.seal_in_place(NONCE, AAD, buf).unwrap();
        buf.extend_from_slice(&tag);
    }
    fn open(&self, buf: &mut [u8]) {
        self.open_in_place(NONCE, AAD, buf).unwrap();
    }
}

/// SM4-GCM against AES-256-GCM, whole messages of 64 KiB and 4 MiB.
fn sm4_groups(c: &mut Criterion) {
    let aes = AesGcm::new(&KEY).unwrap();
    let sm4 = Sm4Gcm::new(&KEY[..16]).unwrap();
    let key16: [u8; 16] = KEY[..16].try_into().unwrap();
    let portable =
        Sm4Gcm::from_cipher(Sm4::with_implementation(&key16, Implementation::Portable).unwrap());
    let sm4_name = format!("sm4-gcm-{:?}", sm4.implementation()).to_lowercase();
    for op in ["seal", "open"] {
        let mut group = c.benchmark_group(format!("sm4-gcm-vs-aes-256-gcm/{op}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for &(size, len) in SIZES.iter().rev() {
            group.throughput(Throughput::Bytes(len as u64));
            let mut aeads: Vec<(&str, &dyn OneShot)> =
                vec![("aes-256-gcm", &aes), (&sm4_name, &sm4)];
            if len <= 64 << 10 && sm4.implementation() != Implementation::Portable {
                aeads.push(("sm4-gcm-portable", &portable));
            }
            for (name, aead) in aeads {
                let plaintext = plaintext(len);
                let mut sealed = plaintext.clone();
                aead.seal(&mut sealed);
                let id = BenchmarkId::new(name, size);
                if op == "seal" {
                    let mut buf = Vec::with_capacity(len + 16);
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            buf.clear();
                            buf.extend_from_slice(&plaintext);
                            aead.seal(black_box(&mut buf));
                        })
                    });
                } else {
                    group.bench_function(id, |b| {
                        b.iter_batched_ref(
                            || sealed.clone(),
                            |buf| aead.open(black_box(buf)),
                            BatchSize::LargeInput,
                        )
                    });
                }
            }
        }
        group.finish();
    }
}

/// Best per-iteration time of `f` over `rounds` rounds of ~`budget` each.
fn best_time(rounds: usize, budget: Duration, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    f();
    let one = start.elapsed().max(Duration::from_nanos(1));
    let iters = (budget.as_nanos() / one.as_nanos()).clamp(1, 1_000_000) as u32;
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(start.elapsed() / iters);
    }
    best
}

fn gib_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64() / f64::from(1u32 << 30)
}

/// How long the timing loops after the criterion groups run: in a smoke
/// run (`cargo test --benches`) once each, to check they still work.
#[derive(Clone, Copy)]
struct Timing {
    /// Rounds of ours/raw alternation.
    interleave: usize,
    /// Rounds of [`best_time`] per measurement.
    rounds: usize,
    /// Time per round.
    budget: Duration,
}

const FULL: Timing = Timing {
    interleave: 5,
    rounds: 3,
    budget: Duration::from_millis(40),
};

const SMOKE: Timing = Timing {
    interleave: 1,
    rounds: 1,
    budget: Duration::ZERO,
};

/// Interleaved ours/raw timings; prints throughput ratios ours/raw.
fn print_ratios(inputs: &[Inputs], timing: Timing) {
    let key = raw_key();
    let Timing {
        interleave,
        rounds,
        budget,
    } = timing;
    println!();
    println!("throughput ratios, ours / raw AES-256-GCM (best of interleaved rounds):");
    for input in inputs {
        let bytes = input.plaintext.len();
        let mut out = Vec::with_capacity(input.message.len());
        let (mut ours, mut raw) = ([Duration::MAX; 2], [Duration::MAX; 2]);
        // Alternate so that frequency changes hit both sides alike.
        for _ in 0..interleave {
            ours[0] = ours[0].min(best_time(rounds, budget, || {
                ours_seal(black_box(&input.plaintext), &mut out)
            }));
            raw[0] = raw[0].min(best_time(rounds, budget, || {
                raw_seal(&key, black_box(&input.plaintext), &mut out)
            }));
            ours[1] = ours[1].min(best_time(rounds, budget, || {
                ours_open(black_box(&input.message), &mut out)
            }));
            raw[1] = raw[1].min(best_time(rounds, budget, || {
                raw_open(&key, black_box(&input.raw_sealed), &mut out)
            }));
        }
        for (i, op) in ["seal", "open"].iter().enumerate() {
            println!(
                "ratio {op} {}: {:.2}  (ours {:.2} GiB/s, raw {:.2} GiB/s)",
                input.name,
                raw[i].as_secs_f64() / ours[i].as_secs_f64(),
                gib_per_s(bytes, ours[i]),
                gib_per_s(bytes, raw[i]),
            );
        }
    }
}

/// Seals `plaintext` as one body message of `suite`.
fn suite_seal(suite: Suite, plaintext: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let (mut sealer, header) = Sealer::new_in(suite, &KEY, CONTEXT).unwrap();
    out.extend_from_slice(&header);
    sealer.push(plaintext, out).unwrap();
    sealer.finish(out).unwrap();
}

/// Opens one body message of `suite`.
fn suite_open(suite: Suite, message: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut opener = Opener::new_in(suite, &KEY, CONTEXT, &message[..HEADER_LEN]).unwrap();
    opener.push(&message[HEADER_LEN..], out).unwrap();
    opener.finish(out).unwrap();
}

/// The body layer (C2SP, 16 KiB chunks, HKDF and commitment) in suite 2
/// beside suite 1, interleaved: MiB/s of each and the ratio SM4 / AES.
fn print_suite_ratios(timing: Timing) {
    let Timing {
        interleave,
        rounds,
        budget,
    } = timing;
    println!();
    println!(
        "the body layer per suite, best of interleaved rounds (ratio = sm4-gcm / aes-256-gcm):"
    );
    for (name, len) in SIZES {
        let plain = plaintext(len);
        let mut messages = Vec::new();
        for suite in Suite::ALL {
            let mut m = Vec::new();
            suite_seal(suite, &plain, &mut m);
            messages.push(m);
        }
        let mut out = Vec::with_capacity(messages[0].len());
        let mut best = [[Duration::MAX; 2]; 2];
        for _ in 0..interleave {
            for (i, suite) in Suite::ALL.into_iter().enumerate() {
                best[i][0] = best[i][0].min(best_time(rounds, budget, || {
                    suite_seal(suite, black_box(&plain), &mut out)
                }));
                best[i][1] = best[i][1].min(best_time(rounds, budget, || {
                    suite_open(suite, black_box(&messages[i]), &mut out)
                }));
            }
        }
        let mib = |t: Duration| len as f64 / t.as_secs_f64() / f64::from(1u32 << 20);
        for (op, j) in [("seal", 0), ("open", 1)] {
            println!(
                "suite {op} {name}: aes-256-gcm {:.0} MiB/s, sm4-gcm {:.0} MiB/s, ratio {:.3}",
                mib(best[0][j]),
                mib(best[1][j]),
                best[0][j].as_secs_f64() / best[1][j].as_secs_f64(),
            );
        }
    }
}

/// The fixed cost of one message, whatever its size: salt, the specified
/// HKDF-SHA-512 derivation and commitment, AES-GCM key setup, and the empty
/// final chunk. Printed beside the cost of HKDF-Expand alone.
fn print_fixed_costs(timing: Timing) {
    use aws_lc_rs::hkdf::{KeyType, Prk, HKDF_SHA512};
    struct Len;
    impl KeyType for Len {
        fn len(&self) -> usize {
            76
        }
    }
    let (rounds, budget) = (timing.rounds + 2, timing.budget);
    let mut out = Vec::with_capacity(128);
    let empty = best_time(rounds, budget, || ours_seal(black_box(&[]), &mut out));
    let mut okm = [0u8; 76];
    let info: [&[u8]; 5] = [
        b"c2sp.org/chunked-encryption@v1+",
        b"AEAD_AES_256_GCM",
        &[0],
        &[1; 24],
        CONTEXT,
    ];
    let hkdf = best_time(rounds, budget, || {
        Prk::new_less_safe(HKDF_SHA512, black_box(&KEY))
            .expand(&info, Len)
            .unwrap()
            .fill(&mut okm)
            .unwrap()
    });
    let raw_key_setup = best_time(rounds, budget, || {
        black_box(raw_key());
    });
    println!(
        "fixed cost per message: seal of an empty message {:.2} µs; of which HKDF-Expand-SHA-512 (76 bytes) {:.2} µs, AES-256-GCM key setup {:.2} µs",
        empty.as_secs_f64() * 1e6,
        hkdf.as_secs_f64() * 1e6,
        raw_key_setup.as_secs_f64() * 1e6
    );
}

fn main() {
    let inputs = inputs();
    let mut c = Criterion::default().configure_from_args();
    criterion_groups(&mut c, &inputs);
    sm4_groups(&mut c);
    c.final_summary();
    // `cargo bench` passes --bench; `cargo test --benches` (CI, in the dev
    // profile) does not, and then criterion runs each benchmark once and
    // the timing loops run once each: a smoke test that they still work.
    let timing = if std::env::args().any(|a| a == "--bench") {
        FULL
    } else {
        SMOKE
    };
    print_ratios(&inputs, timing);
    print_suite_ratios(timing);
    print_fixed_costs(timing);
}
