//! The portable SM4: the S-box computed arithmetically, eight bytes at a
//! time in a `u64` (SWAR), with no table and no secret-dependent branch.
//!
//! The S-box is M2·I_aes(M1·x ⊕ C1) ⊕ C2 (see [`super::consts`]): the
//! affine maps are bit-matrix products built from masks, and the inversion
//! is x^254 by an addition chain of branch-free shift-and-add
//! multiplications. Slow (a few hundred cycles per byte) but constant-time
//! on any CPU whose shifts, ANDs, XORs and multiplications by a constant
//! take data-independent time.

use cipher::consts::{U16, U2};
use cipher::inout::InOut;
use cipher::{Block, BlockBackend, BlockSizeUser, ParBlocks, ParBlocksSizeUser};

use super::consts::{C1, C2, CK, FK, M1, M2};

/// The low bit of each byte.
const LSB: u64 = 0x0101_0101_0101_0101;

/// The columns of a GFNI-format matrix: column j is the image of bit j.
const fn columns(m: u64) -> [u64; 8] {
    let mut cols = [0u64; 8];
    let mut j = 0;
    while j < 8 {
        let mut col = 0u64;
        let mut i = 0;
        while i < 8 {
            let row = (m >> (8 * (7 - i))) & 0xff;
            col |= ((row >> j) & 1) << i;
            i += 1;
        }
        // Broadcast to all eight bytes.
        cols[j] = col * LSB;
        j += 1;
    }
    cols
}

const M1_COLUMNS: [u64; 8] = columns(M1);
const M2_COLUMNS: [u64; 8] = columns(M2);

/// All-ones in each byte whose bit `j` is set, zero elsewhere.
#[inline(always)]
fn byte_mask(x: u64, j: u32) -> u64 {
    ((x >> j) & LSB).wrapping_mul(0xff)
}

/// The affine map `cols·x ⊕ c` on each byte of `x`.
#[inline(always)]
fn affine(x: u64, cols: &[u64; 8], c: u8) -> u64 {
    let mut out = u64::from(c) * LSB;
    for (j, col) in (0u32..).zip(cols) {
        out ^= byte_mask(x, j) & col;
    }
    out
}

/// Each byte times x in the AES field.
#[inline(always)]
fn xtime(a: u64) -> u64 {
    ((a & 0x7f7f_7f7f_7f7f_7f7f) << 1) ^ ((a >> 7) & LSB).wrapping_mul(0x1b)
}

/// Bytewise product in the AES field.
#[inline(always)]
fn mul(mut a: u64, b: u64) -> u64 {
    let mut r = 0;
    for j in 0..8 {
        r ^= a & byte_mask(b, j);
        a = xtime(a);
    }
    r
}

/// Bytewise inverse in the AES field (0 ↦ 0): x^254.
#[inline(always)]
fn inv(x: u64) -> u64 {
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x6 = mul(x3, x3);
    let x12 = mul(x6, x6);
    let x15 = mul(x12, x3);
    let x30 = mul(x15, x15);
    let x60 = mul(x30, x30);
    let x120 = mul(x60, x60);
    let x240 = mul(x120, x120);
    let x252 = mul(x240, x12);
    mul(x252, x2)
}

/// The SM4 S-box on each of the eight bytes.
#[inline]
pub(super) fn sbox8(x: u64) -> u64 {
    affine(inv(affine(x, &M1_COLUMNS, C1)), &M2_COLUMNS, C2)
}

/// A 32-bit rotation in each half of a `u64`.
#[inline(always)]
fn rotl2(v: u64, n: u32) -> u64 {
    let lo = (v as u32).rotate_left(n);
    let hi = ((v >> 32) as u32).rotate_left(n);
    u64::from(lo) | (u64::from(hi) << 32)
}

/// The round function's T = L∘τ on two words, one per half.
#[inline(always)]
fn t2(v: u64) -> u64 {
    let b = sbox8(v);
    b ^ rotl2(b, 2) ^ rotl2(b, 10) ^ rotl2(b, 18) ^ rotl2(b, 24)
}

/// The key schedule.
pub(super) fn expand_key(key: &[u8; 16]) -> [u32; 32] {
    let mut k = [0u32; 4];
    for (i, w) in k.iter_mut().enumerate() {
        *w = u32::from_be_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]])
            ^ FK[i];
    }
    let mut rk = [0u32; 32];
    for i in 0..32 {
        let b = sbox8(u64::from(
            k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ CK[i],
        )) as u32;
        k[i % 4] ^= b ^ b.rotate_left(13) ^ b.rotate_left(23);
        rk[i] = k[i % 4];
    }
    k.fill(0);
    rk
}

/// Encrypts two blocks at once, one in each half of the state words.
pub(super) fn encrypt2(rk: &[u32; 32], a: &[u8; 16], b: &[u8; 16]) -> ([u8; 16], [u8; 16]) {
    let word = |blk: &[u8; 16], i: usize| {
        u32::from_be_bytes([blk[4 * i], blk[4 * i + 1], blk[4 * i + 2], blk[4 * i + 3]])
    };
    let mut x = [0u64; 4];
    for (i, w) in x.iter_mut().enumerate() {
        *w = u64::from(word(a, i)) | (u64::from(word(b, i)) << 32);
    }
    for (i, &k) in rk.iter().enumerate() {
        let k = u64::from(k) * 0x1_0000_0001;
        x[i % 4] ^= t2(x[(i + 1) % 4] ^ x[(i + 2) % 4] ^ x[(i + 3) % 4] ^ k);
    }
    let mut out_a = [0u8; 16];
    let mut out_b = [0u8; 16];
    for i in 0..4 {
        let w = x[3 - i];
        out_a[4 * i..4 * i + 4].copy_from_slice(&(w as u32).to_be_bytes());
        out_b[4 * i..4 * i + 4].copy_from_slice(&((w >> 32) as u32).to_be_bytes());
    }
    x.fill(0);
    (out_a, out_b)
}

/// The `cipher` backend: two blocks per call.
pub(super) struct Backend<'a>(pub(super) &'a [u32; 32]);

impl BlockSizeUser for Backend<'_> {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for Backend<'_> {
    type ParBlocksSize = U2;
}

impl BlockBackend for Backend<'_> {
    #[inline]
    fn proc_block(&mut self, mut block: InOut<'_, '_, Block<Self>>) {
        let input: [u8; 16] = (*block.get_in()).into();
        let (out, _) = encrypt2(self.0, &input, &[0; 16]);
        block.get_out().copy_from_slice(&out);
    }

    #[inline]
    fn proc_par_blocks(&mut self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
        let a: [u8; 16] = blocks.get_in()[0].into();
        let b: [u8; 16] = blocks.get_in()[1].into();
        let (a, b) = encrypt2(self.0, &a, &b);
        let out = blocks.get_out();
        out[0].copy_from_slice(&a);
        out[1].copy_from_slice(&b);
    }
}
