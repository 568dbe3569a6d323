//! A dudect-style constant-time check of SM4 (Reparaz, Balasch, Verbauwhede,
//! "Dude, is my code constant time?", 2017), without new dependencies.
//!
//! ```text
//! cargo bench --bench sm4_timing
//! SM4_TIMING_MEASUREMENTS=2000000 cargo bench --bench sm4_timing
//! ```
//!
//! For each implementation (our GFNI one where the CPU has it, our portable
//! one, and a deliberately leaky table-based SM4 defined below as the
//! control) and each operation (one block under one key: a fixed plaintext
//! against random ones; the key schedule: a fixed key against random ones),
//! it times every call in cycles (`rdtsc` between fences), the two classes
//! interleaved at random, and runs Welch's t-test on the raw samples and on
//! samples cropped at a range of upper percentiles, as dudect does. The
//! verdict is the largest |t|: below 4.5 no leak was detected.
//!
//! Before each call the harness evicts the leaky implementation's tables
//! from the cache (`clflush`), for every implementation alike: the setting
//! of an attacker sharing the cache (flush+reload, prime+probe), which a
//! table lookup indexed by secrets cannot withstand and an implementation
//! that touches no table never notices.

use std::hint::black_box;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_mm_clflush, _mm_lfence, _mm_mfence, _rdtsc};

use sealgate::crypto::sm4::{Implementation, Sm4};

// ---------------------------------------------------------------------
// The control: SM4 with a byte S-box folded into four 1 KiB T-tables per
// linear map, looked up by secret bytes (the classic fast software SM4).

/// The SM4 S-box (GB/T 32907-2016).
const SBOX: [u8; 256] = [
    0xd6, 0x90, 0xe9, 0xfe, 0xcc, 0xe1, 0x3d, 0xb7, 0x16, 0xb6, 0x14, 0xc2, 0x28, 0xfb, 0x2c, 0x05,
    0x2b, 0x67, 0x9a, 0x76, 0x2a, 0xbe, 0x04, 0xc3, 0xaa, 0x44, 0x13, 0x26, 0x49, 0x86, 0x06, 0x99,
    0x9c, 0x42, 0x50, 0xf4, 0x91, 0xef, 0x98, 0x7a, 0x33, 0x54, 0x0b, 0x43, 0xed, 0xcf, 0xac, 0x62,
    0xe4, 0xb3, 0x1c, 0xa9, 0xc9, 0x08, 0xe8, 0x95, 0x80, 0xdf, 0x94, 0xfa, 0x75, 0x8f, 0x3f, 0xa6,
    0x47, 0x07, 0xa7, 0xfc, 0xf3, 0x73, 0x17, 0xba, 0x83, 0x59, 0x3c, 0x19, 0xe6, 0x85, 0x4f, 0xa8,
    0x68, 0x6b, 0x81, 0xb2, 0x71, 0x64, 0xda, 0x8b, 0xf8, 0xeb, 0x0f, 0x4b, 0x70, 0x56, 0x9d, 0x35,
    0x1e, 0x24, 0x0e, 0x5e, 0x63, 0x58, 0xd1, 0xa2, 0x25, 0x22, 0x7c, 0x3b, 0x01, 0x21, 0x78, 0x87,
    0xd4, 0x00, 0x46, 0x57, 0x9f, 0xd3, 0x27, 0x52, 0x4c, 0x36, 0x02, 0xe7, 0xa0, 0xc4, 0xc8, 0x9e,
    0xea, 0xbf, 0x8a, 0xd2, 0x40, 0xc7, 0x38, 0xb5, 0xa3, 0xf7, 0xf2, 0xce, 0xf9, 0x61, 0x15, 0xa1,
    0xe0, 0xae, 0x5d, 0xa4, 0x9b, 0x34, 0x1a, 0x55, 0xad, 0x93, 0x32, 0x30, 0xf5, 0x8c, 0xb1, 0xe3,
    0x1d, 0xf6, 0xe2, 0x2e, 0x82, 0x66, 0xca, 0x60, 0xc0, 0x29, 0x23, 0xab, 0x0d, 0x53, 0x4e, 0x6f,
    0xd5, 0xdb, 0x37, 0x45, 0xde, 0xfd, 0x8e, 0x2f, 0x03, 0xff, 0x6a, 0x72, 0x6d, 0x6c, 0x5b, 0x51,
    0x8d, 0x1b, 0xaf, 0x92, 0xbb, 0xdd, 0xbc, 0x7f, 0x11, 0xd9, 0x5c, 0x41, 0x1f, 0x10, 0x5a, 0xd8,
    0x0a, 0xc1, 0x31, 0x88, 0xa5, 0xcd, 0x7b, 0xbd, 0x2d, 0x74, 0xd0, 0x12, 0xb8, 0xe5, 0xb4, 0xb0,
    0x89, 0x69, 0x97, 0x4a, 0x0c, 0x96, 0x77, 0x7e, 0x65, 0xb9, 0xf1, 0x09, 0xc5, 0x6e, 0xc6, 0x84,
    0x18, 0xf0, 0x7d, 0xec, 0x3a, 0xdc, 0x4d, 0x20, 0x79, 0xee, 0x5f, 0x3e, 0xd7, 0xcb, 0x39, 0x48,
];

const FK: [u32; 4] = [0xa3b1_bac6, 0x56aa_3350, 0x677d_9197, 0xb270_22dc];

fn ck(i: usize) -> u32 {
    (0..4).fold(0, |acc, j| (acc << 8) | (((4 * i + j) * 7) % 256) as u32)
}

/// T-tables: `enc[j][b]` is L(S(b) placed at byte j), `key[j][b]` the same
/// for the key schedule's L'. Cache-line aligned, 8 KiB in all.
#[repr(C, align(64))]
struct Tables {
    enc: [[u32; 256]; 4],
    key: [[u32; 256]; 4],
}

impl Tables {
    fn new() -> Box<Self> {
        let l = |b: u32| {
            b ^ b.rotate_left(2) ^ b.rotate_left(10) ^ b.rotate_left(18) ^ b.rotate_left(24)
        };
        let l_key = |b: u32| b ^ b.rotate_left(13) ^ b.rotate_left(23);
        let mut t = Box::new(Self {
            enc: [[0; 256]; 4],
            key: [[0; 256]; 4],
        });
        for j in 0..4 {
            for (b, &sb) in SBOX.iter().enumerate() {
                let s = u32::from(sb) << (24 - 8 * j);
                t.enc[j][b] = l(s);
                t.key[j][b] = l_key(s);
            }
        }
        t
    }

    fn lookup(table: &[[u32; 256]; 4], x: u32) -> u32 {
        table[0][(x >> 24) as usize]
            ^ table[1][((x >> 16) & 0xff) as usize]
            ^ table[2][((x >> 8) & 0xff) as usize]
            ^ table[3][(x & 0xff) as usize]
    }

    fn expand_key(&self, key: &[u8; 16]) -> [u32; 32] {
        let mut k: [u32; 4] = std::array::from_fn(|i| {
            u32::from_be_bytes(key[4 * i..4 * i + 4].try_into().unwrap()) ^ FK[i]
        });
        let mut rk = [0; 32];
        for (i, r) in rk.iter_mut().enumerate() {
            k[i % 4] ^= Self::lookup(
                &self.key,
                k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ ck(i),
            );
            *r = k[i % 4];
        }
        rk
    }

    fn encrypt(&self, rk: &[u32; 32], block: &mut [u8; 16]) {
        let mut x: [u32; 4] = std::array::from_fn(|i| {
            u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap())
        });
        for (i, &k) in rk.iter().enumerate() {
            x[i % 4] ^= Self::lookup(
                &self.enc,
                x[(i + 1) % 4] ^ x[(i + 2) % 4] ^ x[(i + 3) % 4] ^ k,
            );
        }
        for i in 0..4 {
            block[4 * i..4 * i + 4].copy_from_slice(&x[3 - i].to_be_bytes());
        }
    }

    /// Evicts every line of the tables from every cache level.
    fn flush(&self) {
        let base = (self as *const Self).cast::<u8>();
        for offset in (0..std::mem::size_of::<Self>()).step_by(64) {
            // SAFETY: `base + offset` lies within `self`; clflush only needs
            // a mapped address and SSE2, which x86-64 always has.
            unsafe { _mm_clflush(base.add(offset)) };
        }
        // SAFETY: mfence needs SSE2, part of the x86-64 baseline.
        unsafe { _mm_mfence() };
    }
}

// ---------------------------------------------------------------------
// The measurement.

/// xorshift64*: the class choice and the random inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn block(&mut self) -> [u8; 16] {
        let (a, b) = (self.next(), self.next());
        let mut out = [0; 16];
        out[..8].copy_from_slice(&a.to_le_bytes());
        out[8..].copy_from_slice(&b.to_le_bytes());
        out
    }
}

/// Cycles taken by `f`, between fences.
#[inline(always)]
fn cycles(f: impl FnOnce()) -> u64 {
    // SAFETY: the fences need SSE2 and rdtsc nothing beyond the x86-64
    // baseline.
    let start = unsafe {
        _mm_mfence();
        _mm_lfence();
        let t = _rdtsc();
        _mm_lfence();
        t
    };
    f();
    // SAFETY: as above.
    let end = unsafe {
        _mm_lfence();
        _rdtsc()
    };
    end.wrapping_sub(start)
}

/// Welch's t statistic, accumulated online.
#[derive(Default, Clone, Copy)]
struct Welch {
    n: [f64; 2],
    mean: [f64; 2],
    m2: [f64; 2],
}

impl Welch {
    fn push(&mut self, class: usize, x: f64) {
        self.n[class] += 1.0;
        let delta = x - self.mean[class];
        self.mean[class] += delta / self.n[class];
        self.m2[class] += delta * (x - self.mean[class]);
    }

    fn t(&self) -> f64 {
        if self.n[0] < 2.0 || self.n[1] < 2.0 {
            return 0.0;
        }
        let var = |c: usize| self.m2[c] / (self.n[c] - 1.0);
        let se = (var(0) / self.n[0] + var(1) / self.n[1]).sqrt();
        if se == 0.0 {
            0.0
        } else {
            (self.mean[0] - self.mean[1]) / se
        }
    }
}

/// Largest |t| over the raw samples and the samples under each of
/// dudect's cropping percentiles (1 − 0.5^(10·(k+1)/PERCENTILES)).
fn max_t(samples: &[(usize, u64)]) -> (f64, usize) {
    const PERCENTILES: usize = 20;
    let mut sorted: Vec<u64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_unstable();
    let thresholds: Vec<u64> = (0..PERCENTILES)
        .map(|k| {
            let p = 1.0 - 0.5f64.powf(10.0 * (k as f64 + 1.0) / PERCENTILES as f64);
            sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)]
        })
        .collect();
    let mut tests = vec![Welch::default(); PERCENTILES + 1];
    for &(class, c) in samples {
        tests[0].push(class, c as f64);
        for (test, &limit) in tests[1..].iter_mut().zip(&thresholds) {
            if c < limit {
                test.push(class, c as f64);
            }
        }
    }
    let mut best = (0.0, 0);
    for (i, test) in tests.iter().enumerate() {
        if test.t().abs() > best.0 {
            best = (test.t().abs(), i);
        }
    }
    best
}

/// An implementation under test.
trait Target {
    type Key;
    fn name(&self) -> String;
    fn key(&self, key: &[u8; 16]) -> Self::Key;
    fn encrypt(&self, key: &Self::Key, block: &mut [u8; 16]);
}

struct Ours(Implementation);

impl Target for Ours {
    type Key = Sm4;
    fn name(&self) -> String {
        format!("sealgate {:?}", self.0)
    }
    fn key(&self, key: &[u8; 16]) -> Sm4 {
        Sm4::with_implementation(key, self.0).expect("available")
    }
    fn encrypt(&self, key: &Sm4, block: &mut [u8; 16]) {
        key.encrypt_block_in_place(block);
    }
}

struct Leaky<'t>(&'t Tables);

impl Target for Leaky<'_> {
    type Key = [u32; 32];
    fn name(&self) -> String {
        "leaky T-table SM4 (control)".into()
    }
    fn key(&self, key: &[u8; 16]) -> [u32; 32] {
        self.0.expand_key(key)
    }
    fn encrypt(&self, key: &[u32; 32], block: &mut [u8; 16]) {
        self.0.encrypt(key, block);
    }
}

const FIXED: [u8; 16] = [0; 16];
const THRESHOLD: f64 = 4.5;

/// Fixed against random plaintexts under one random key.
fn block_test<T: Target>(
    target: &T,
    tables: &Tables,
    n: usize,
    rng: &mut Rng,
) -> Vec<(usize, u64)> {
    let key = target.key(&rng.block());
    let inputs: Vec<(usize, [u8; 16])> = (0..n)
        .map(|_| {
            let class = (rng.next() >> 63) as usize;
            (class, if class == 0 { FIXED } else { rng.block() })
        })
        .collect();
    inputs
        .into_iter()
        .map(|(class, mut block)| {
            tables.flush();
            let c = cycles(|| target.encrypt(black_box(&key), black_box(&mut block)));
            black_box(block);
            (class, c)
        })
        .collect()
}

/// Fixed against random keys through the key schedule.
fn key_test<T: Target>(target: &T, tables: &Tables, n: usize, rng: &mut Rng) -> Vec<(usize, u64)> {
    let fixed = rng.block();
    let inputs: Vec<(usize, [u8; 16])> = (0..n)
        .map(|_| {
            let class = (rng.next() >> 63) as usize;
            (class, if class == 0 { fixed } else { rng.block() })
        })
        .collect();
    inputs
        .into_iter()
        .map(|(class, key)| {
            tables.flush();
            let mut out = None;
            let c = cycles(|| out = Some(target.key(black_box(&key))));
            drop(black_box(out));
            (class, c)
        })
        .collect()
}

fn report(name: &str, what: &str, samples: &[(usize, u64)]) -> f64 {
    let (t, crop) = max_t(samples);
    let mut sorted: Vec<u64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let verdict = if t < THRESHOLD {
        "no leak detected"
    } else {
        "LEAK"
    };
    println!(
        "{name:<30} {what:<24} n={:<9} median {median:>6} cycles  max|t| = {t:>8.2} (crop #{crop:>2})  {verdict}",
        samples.len()
    );
    t
}

fn run<T: Target>(target: &T, tables: &Tables, n: usize, rng: &mut Rng) -> [f64; 2] {
    let name = target.name();
    // A short warm-up, discarded.
    block_test(target, tables, n / 100 + 10, rng);
    let block = report(
        &name,
        "block: fixed vs random",
        &block_test(target, tables, n, rng),
    );
    key_test(target, tables, n / 100 + 10, rng);
    let key = report(
        &name,
        "key: fixed vs random",
        &key_test(target, tables, n, rng),
    );
    [block, key]
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: keep it short.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("SM4_TIMING_MEASUREMENTS")
        .ok()
        .map(|v| v.parse().expect("SM4_TIMING_MEASUREMENTS is a number"))
        .unwrap_or(if smoke { 2_000 } else { 800_000 });
    let tables = Tables::new();
    // The control is a correct SM4 (GB/T 32907 example 1).
    let mut example = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10";
    let rk = tables.expand_key(&example);
    tables.encrypt(&rk, &mut example);
    assert_eq!(
        example,
        *b"\x68\x1e\xdf\x34\xd2\x06\x96\x5e\x86\xb3\xe9\x4f\x53\x6e\x42\x46"
    );

    // SAFETY: rdtsc needs nothing beyond the x86-64 baseline.
    let mut rng = Rng(0x5eed_1234_5678_9abc ^ unsafe { _rdtsc() });
    println!("dudect-style SM4 timing, {n} measurements per test, threshold |t| < {THRESHOLD}");
    let mut ours_max: f64 = 0.0;
    for imp in [Implementation::Gfni, Implementation::Portable] {
        if imp.is_available() {
            let [b, k] = run(&Ours(imp), &tables, n, &mut rng);
            ours_max = ours_max.max(b).max(k);
        } else {
            println!("sealgate {imp:?}: not available on this CPU");
        }
    }
    let [b, k] = run(&Leaky(&tables), &tables, n, &mut rng);
    println!(
        "ours: max|t| = {ours_max:.2} ({}); leaky control: max|t| = {:.2} ({})",
        if ours_max < THRESHOLD {
            "no leak detected"
        } else {
            "LEAK"
        },
        b.max(k),
        if b.max(k) >= THRESHOLD {
            "leak detected, as it must be"
        } else {
            "not detected: too few measurements"
        }
    );
}
