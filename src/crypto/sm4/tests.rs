//! Unit tests: the S-box constants re-derived and checked exhaustively, and
//! the two implementations against the standard and each other.

use cipher::generic_array::GenericArray;
use cipher::inout::InOutBuf;
use cipher::{Block, BlockEncrypt};

use super::consts::{A_ROWS, BETA, C, C1, C2, CK, M1, M2, SBOX};
use super::{soft, Implementation, Sm4};

/// Product in GF(2^8) modulo `poly` (9 bits), the schoolbook way.
fn gmul(mut a: u8, mut b: u8, poly: u16) -> u8 {
    let mut r = 0u8;
    while b != 0 {
        if b & 1 == 1 {
            r ^= a;
        }
        b >>= 1;
        let carry = a & 0x80 != 0;
        a <<= 1;
        if carry {
            a ^= (poly & 0xff) as u8;
        }
    }
    r
}

/// Inverse by search (0 ↦ 0).
fn ginv(a: u8, poly: u16) -> u8 {
    (1..=255u8).find(|&b| gmul(a, b, poly) == 1).unwrap_or(0)
}

const SM4_POLY: u16 = 0x1f5;
const AES_POLY: u16 = 0x11b;

/// A matrix as its rows: output bit i is the parity of `rows[i] & x`.
fn apply(rows: &[u8; 8], x: u8) -> u8 {
    (0..8).fold(0, |acc, i| {
        acc | ((((rows[i] & x).count_ones() & 1) as u8) << i)
    })
}

/// The matrix whose column j is `cols[j]`.
fn from_columns(cols: [u8; 8]) -> [u8; 8] {
    core::array::from_fn(|i| (0..8).fold(0, |acc, j| acc | (((cols[j] >> i) & 1) << j)))
}

fn compose(a: &[u8; 8], b: &[u8; 8]) -> [u8; 8] {
    from_columns(core::array::from_fn(|j| apply(a, apply(b, 1 << j))))
}

fn gfni_format(rows: &[u8; 8]) -> u64 {
    (0..8).fold(0, |acc, i| acc | (u64::from(rows[i]) << (8 * (7 - i))))
}

/// GFNI's `gf2p8affineqb` on one byte, as Intel's pseudocode defines it.
fn gf2p8affine(m: u64, x: u8, b: u8) -> u8 {
    (0..8).fold(0, |acc, i| {
        let row = (m >> (8 * (7 - i))) as u8;
        acc | ((((row & x).count_ones() & 1) as u8) << i)
    }) ^ b
}

#[test]
fn the_standard_decomposition_is_the_table() {
    for x in 0..=255u8 {
        let y = apply(&A_ROWS, ginv(apply(&A_ROWS, x) ^ C, SM4_POLY)) ^ C;
        assert_eq!(y, SBOX[usize::from(x)], "S({x:#04x})");
    }
}

#[test]
fn the_gfni_constants_follow_from_the_isomorphism() {
    // β is a root of the SM4 polynomial in the AES field.
    let mut acc = 0u8;
    for k in (0..=8).rev() {
        acc = gmul(acc, BETA, AES_POLY) ^ ((SM4_POLY >> k) & 1) as u8;
    }
    assert_eq!(acc, 0, "f(β) = 0");
    // T: x^i ↦ β^i, a field isomorphism.
    let mut cols = [0u8; 8];
    let mut p = 1u8;
    for col in &mut cols {
        *col = p;
        p = gmul(p, BETA, AES_POLY);
    }
    let t = from_columns(cols);
    for a in (0..=255u8).step_by(3) {
        for b in (0..=255u8).step_by(5) {
            assert_eq!(
                apply(&t, gmul(a, b, SM4_POLY)),
                gmul(apply(&t, a), apply(&t, b), AES_POLY)
            );
        }
    }
    let mut t_inv_cols = [0u8; 8];
    for (j, col) in t_inv_cols.iter_mut().enumerate() {
        *col = (0..=255u8).find(|&y| apply(&t, y) == 1 << j).unwrap();
    }
    let t_inv = from_columns(t_inv_cols);
    assert_eq!(gfni_format(&compose(&t, &A_ROWS)), M1, "M1 = T·A");
    assert_eq!(apply(&t, C), C1, "C1 = T·C");
    assert_eq!(gfni_format(&compose(&A_ROWS, &t_inv)), M2, "M2 = A·T⁻¹");
    assert_eq!(C2, C);
    // And the composition, in GFNI's semantics, is the table.
    for x in 0..=255u8 {
        let y = gf2p8affine(M2, ginv(gf2p8affine(M1, x, C1), AES_POLY), C2);
        assert_eq!(y, SBOX[usize::from(x)], "S({x:#04x})");
    }
}

#[test]
fn the_portable_sbox_is_the_table() {
    for x in (0..256u64).step_by(8) {
        let packed = (0..8).fold(0u64, |acc, k| acc | ((x + k) << (8 * k)));
        let out = soft::sbox8(packed).to_le_bytes();
        for k in 0..8 {
            assert_eq!(
                out[k],
                SBOX[(x + k as u64) as usize],
                "S({:#04x})",
                x + k as u64
            );
        }
    }
}

#[test]
fn ck_is_the_standards() {
    assert_eq!(CK[0], 0x0007_0e15);
    assert_eq!(CK[1], 0x1c23_2a31);
    assert_eq!(CK[31], 0x646b_7279);
}

fn implementations() -> Vec<Implementation> {
    let all = [Implementation::Gfni, Implementation::Portable];
    let have: Vec<_> = all.into_iter().filter(|i| i.is_available()).collect();
    assert!(have.contains(&Implementation::Portable));
    have
}

const EXAMPLE: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10,
];
const EXAMPLE_CIPHERTEXT: [u8; 16] = [
    0x68, 0x1e, 0xdf, 0x34, 0xd2, 0x06, 0x96, 0x5e, 0x86, 0xb3, 0xe9, 0x4f, 0x53, 0x6e, 0x42, 0x46,
];

#[test]
fn the_standards_example_on_each_implementation() {
    for imp in implementations() {
        let sm4 = Sm4::with_implementation(&EXAMPLE, imp).unwrap();
        assert_eq!(sm4.implementation(), imp);
        let mut block = EXAMPLE;
        sm4.encrypt_block_in_place(&mut block);
        assert_eq!(block, EXAMPLE_CIPHERTEXT, "{imp:?}");
    }
}

/// A reference SM4 with the table, independent of both implementations.
fn reference(key: &[u8; 16], block: &[u8; 16]) -> [u8; 16] {
    let tau = |a: u32| u32::from_be_bytes(a.to_be_bytes().map(|b| SBOX[usize::from(b)]));
    let word = |b: &[u8; 16], i: usize| u32::from_be_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    let fk = [0xa3b1_bac6, 0x56aa_3350, 0x677d_9197, 0xb270_22dc];
    let mut k: [u32; 4] = core::array::from_fn(|i| word(key, i) ^ fk[i]);
    let mut x: [u32; 4] = core::array::from_fn(|i| word(block, i));
    for i in 0..32 {
        let b = tau(k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ CK[i]);
        k[i % 4] ^= b ^ b.rotate_left(13) ^ b.rotate_left(23);
        let b = tau(x[(i + 1) % 4] ^ x[(i + 2) % 4] ^ x[(i + 3) % 4] ^ k[i % 4]);
        x[i % 4] ^=
            b ^ b.rotate_left(2) ^ b.rotate_left(10) ^ b.rotate_left(18) ^ b.rotate_left(24);
    }
    let mut out = [0u8; 16];
    for i in 0..4 {
        out[4 * i..4 * i + 4].copy_from_slice(&x[3 - i].to_be_bytes());
    }
    out
}

/// xorshift64*, enough for test inputs.
fn pseudo_random(state: &mut u64) -> u8 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
}

#[test]
fn the_reference_agrees_with_the_standard() {
    assert_eq!(reference(&EXAMPLE, &EXAMPLE), EXAMPLE_CIPHERTEXT);
}

/// Every count of blocks from 0 to 200 (the 64-, 16-block and tail paths),
/// in place and out of place, against the reference.
#[test]
fn many_blocks_match_the_reference() {
    let mut state = 0x5eed_u64;
    for imp in implementations() {
        for n in 0..=200usize {
            let key: [u8; 16] = core::array::from_fn(|_| pseudo_random(&mut state));
            let sm4 = Sm4::with_implementation(&key, imp).unwrap();
            let input: Vec<Block<Sm4>> = (0..n)
                .map(|_| {
                    GenericArray::from(core::array::from_fn::<u8, 16, _>(|_| {
                        pseudo_random(&mut state)
                    }))
                })
                .collect();
            let expected: Vec<[u8; 16]> = input
                .iter()
                .map(|b| reference(&key, &(*b).into()))
                .collect();

            let mut in_place = input.clone();
            sm4.encrypt_blocks(&mut in_place);
            let got: Vec<[u8; 16]> = in_place.iter().map(|b| (*b).into()).collect();
            assert_eq!(got, expected, "{imp:?} in place, {n} blocks");

            let mut out = vec![Block::<Sm4>::default(); n];
            sm4.encrypt_blocks_inout(InOutBuf::new(&input, &mut out).unwrap());
            let got: Vec<[u8; 16]> = out.iter().map(|b| (*b).into()).collect();
            assert_eq!(got, expected, "{imp:?} out of place, {n} blocks");
        }
    }
}

#[test]
fn the_fastest_is_gfni_where_the_cpu_has_it() {
    let sm4 = Sm4::from_key(&EXAMPLE);
    assert_eq!(sm4.implementation(), Implementation::fastest());
    #[cfg(target_arch = "x86_64")]
    {
        let has = std::arch::is_x86_feature_detected!("gfni")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw");
        assert_eq!(Implementation::Gfni.is_available(), has);
    }
}
