//! The x86-64 SM4: GFNI for the S-box, AVX-512 for 16 blocks per register
//! set, 64 blocks per call.
//!
//! Each 512-bit register holds one of the four state words of 16 blocks
//! (words byte-swapped to integers, blocks transposed into 32-bit lanes).
//! A round is XORs (`vpternlogd`), the S-box as `vgf2p8affineqb` then
//! `vgf2p8affineinvqb` (see [`super::consts`]) and L as four `vprold`.
//! There is no memory access but the loads and stores of the blocks
//! themselves and no branch on data.
//!
//! This is the library's one module with `unsafe`: the intrinsics need
//! `#[target_feature]`, calling such a function needs `unsafe`, and so do
//! the unaligned vector loads and stores. [`Gfni`] is the proof that the
//! CPU has the features; it can only be made by [`Gfni::detect`].
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, __m512i, _mm512_broadcast_i32x4, _mm512_gf2p8affine_epi64_epi8,
    _mm512_gf2p8affineinv_epi64_epi8, _mm512_loadu_si512, _mm512_rol_epi32, _mm512_set1_epi32,
    _mm512_set1_epi64, _mm512_setzero_si512, _mm512_shuffle_epi8, _mm512_storeu_si512,
    _mm512_ternarylogic_epi32, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi32,
    _mm512_unpacklo_epi64, _mm512_xor_si512, _mm_cvtsi128_si32, _mm_cvtsi32_si128,
    _mm_gf2p8affine_epi64_epi8, _mm_gf2p8affineinv_epi64_epi8, _mm_set1_epi64x, _mm_set_epi8,
};

use cipher::consts::{U16, U64};
use cipher::generic_array::GenericArray;
use cipher::inout::{InOut, InOutBuf};
use cipher::{Block, BlockBackend, BlockSizeUser, ParBlocks, ParBlocksSizeUser};
use zeroize::Zeroize;

use super::consts::{C1, C2, CK, FK, M1, M2};

/// Proof that this CPU (and its OS) has AVX-512F, AVX-512BW and GFNI.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gfni(());

impl Gfni {
    /// The proof, if the features are there (`std` caches the CPUID probe).
    pub(super) fn detect() -> Option<Self> {
        let ok = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("gfni");
        ok.then_some(Self(()))
    }
}

/// The S-box on every byte of a 128-bit register.
#[target_feature(enable = "avx512f,avx512bw,gfni")]
fn sbox128(x: __m128i) -> __m128i {
    let y = _mm_gf2p8affine_epi64_epi8::<{ C1 as i32 }>(x, _mm_set1_epi64x(M1 as i64));
    _mm_gf2p8affineinv_epi64_epi8::<{ C2 as i32 }>(y, _mm_set1_epi64x(M2 as i64))
}

/// The S-box on every byte of a 512-bit register.
#[target_feature(enable = "avx512f,avx512bw,gfni")]
fn sbox512(x: __m512i) -> __m512i {
    let y = _mm512_gf2p8affine_epi64_epi8::<{ C1 as i32 }>(x, _mm512_set1_epi64(M1 as i64));
    _mm512_gf2p8affineinv_epi64_epi8::<{ C2 as i32 }>(y, _mm512_set1_epi64(M2 as i64))
}

#[target_feature(enable = "avx512f,avx512bw,gfni")]
fn expand_key_gfni(key: &[u8; 16]) -> [u32; 32] {
    let mut k = [0u32; 4];
    for (i, w) in k.iter_mut().enumerate() {
        *w = u32::from_be_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]])
            ^ FK[i];
    }
    let mut rk = [0u32; 32];
    for i in 0..32 {
        let t = k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ CK[i];
        let b = _mm_cvtsi128_si32(sbox128(_mm_cvtsi32_si128(t as i32))) as u32;
        k[i % 4] ^= b ^ b.rotate_left(13) ^ b.rotate_left(23);
        rk[i] = k[i % 4];
    }
    k.zeroize();
    rk
}

/// The key schedule, its S-box by GFNI on a register.
pub(super) fn expand_key(_: Gfni, key: &[u8; 16]) -> [u32; 32] {
    // SAFETY: the `Gfni` token proves the target features are present.
    unsafe { expand_key_gfni(key) }
}

/// One block with the words in general-purpose registers and the S-box
/// on one word in an XMM register: lower latency than a 16-block group for
/// the odd single block (GCM's H and tag mask, short tails).
#[target_feature(enable = "avx512f,avx512bw,gfni")]
fn encrypt_one(rk: &[u32; 32], block: [u8; 16]) -> [u8; 16] {
    let mut x: [u32; 4] = core::array::from_fn(|i| {
        u32::from_be_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ])
    });
    for (i, &k) in rk.iter().enumerate() {
        let t = x[(i + 1) % 4] ^ x[(i + 2) % 4] ^ x[(i + 3) % 4] ^ k;
        let b = _mm_cvtsi128_si32(sbox128(_mm_cvtsi32_si128(t as i32))) as u32;
        x[i % 4] ^=
            b ^ b.rotate_left(2) ^ b.rotate_left(10) ^ b.rotate_left(18) ^ b.rotate_left(24);
    }
    let mut out = [0u8; 16];
    for i in 0..4 {
        out[4 * i..4 * i + 4].copy_from_slice(&x[3 - i].to_be_bytes());
    }
    x.zeroize();
    out
}

/// The 4×4 transposition of 32-bit words within each 128-bit lane.
#[target_feature(enable = "avx512f,avx512bw,gfni")]
fn transpose(v: [__m512i; 4]) -> [__m512i; 4] {
    let t0 = _mm512_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm512_unpackhi_epi32(v[0], v[1]);
    let t2 = _mm512_unpacklo_epi32(v[2], v[3]);
    let t3 = _mm512_unpackhi_epi32(v[2], v[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

/// One round on G groups: `x[a] ^= T(x[b] ^ x[c] ^ x[d] ^ rk)`.
#[target_feature(enable = "avx512f,avx512bw,gfni")]
fn round<const G: usize>(
    x: &mut [[__m512i; 4]; G],
    rk: u32,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) {
    let k = _mm512_set1_epi32(rk as i32);
    for g in x.iter_mut() {
        let t = _mm512_ternarylogic_epi32::<0x96>(g[b], g[c], g[d]);
        let s = sbox512(_mm512_xor_si512(t, k));
        let y = _mm512_ternarylogic_epi32::<0x96>(g[a], s, _mm512_rol_epi32::<2>(s));
        let y = _mm512_ternarylogic_epi32::<0x96>(
            y,
            _mm512_rol_epi32::<10>(s),
            _mm512_rol_epi32::<18>(s),
        );
        g[a] = _mm512_xor_si512(y, _mm512_rol_epi32::<24>(s));
    }
}

/// Encrypts `16·G` blocks from `inp` to `out`.
///
/// # Safety
/// The CPU has the target features; `inp` is valid for reads and `out` for
/// writes of `256·G` bytes; the two are equal or do not overlap.
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn encrypt_groups<const G: usize>(rk: &[u32; 32], inp: *const u8, out: *mut u8) {
    let bswap = _mm512_broadcast_i32x4(_mm_set_epi8(
        12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3,
    ));
    let mut x = [[_mm512_setzero_si512(); 4]; G];
    for (g, xg) in x.iter_mut().enumerate() {
        let mut v = [_mm512_setzero_si512(); 4];
        for (r, vr) in v.iter_mut().enumerate() {
            // SAFETY: 256·g + 64·r + 64 ≤ 256·G bytes are readable (caller).
            let raw = unsafe { _mm512_loadu_si512(inp.add(256 * g + 64 * r).cast()) };
            *vr = _mm512_shuffle_epi8(raw, bswap);
        }
        *xg = transpose(v);
    }
    for i in (0..32).step_by(4) {
        round(&mut x, rk[i], 0, 1, 2, 3);
        round(&mut x, rk[i + 1], 1, 2, 3, 0);
        round(&mut x, rk[i + 2], 2, 3, 0, 1);
        round(&mut x, rk[i + 3], 3, 0, 1, 2);
    }
    for (g, xg) in x.iter().enumerate() {
        let v = transpose([xg[3], xg[2], xg[1], xg[0]]);
        for (r, vr) in v.iter().enumerate() {
            // SAFETY: as for the loads; every load happened above, so an
            // in-place call reads nothing this writes.
            unsafe {
                _mm512_storeu_si512(
                    out.add(256 * g + 64 * r).cast(),
                    _mm512_shuffle_epi8(*vr, bswap),
                );
            }
        }
    }
}

/// Encrypts any number of blocks.
pub(super) fn encrypt_blocks(
    tok: Gfni,
    rk: &[u32; 32],
    blocks: InOutBuf<'_, '_, GenericArray<u8, U16>>,
) {
    let n = blocks.len();
    let (inp, out) = blocks.into_raw();
    // SAFETY: `InOutBuf` guarantees both pointers are valid for `n` blocks
    // of 16 contiguous bytes and are equal or disjoint.
    unsafe { encrypt_raw(tok, rk, inp.cast(), out.cast(), n) }
}

/// Encrypts `n` blocks from `inp` to `out`.
///
/// # Safety
/// `inp` is valid for reads and `out` for writes of `16·n` bytes; the two
/// are equal or do not overlap.
unsafe fn encrypt_raw(_: Gfni, rk: &[u32; 32], inp: *const u8, out: *mut u8, n: usize) {
    let mut done = 0;
    while n - done >= 64 {
        // SAFETY: the `Gfni` token proves the features; blocks done..done+64
        // are in bounds (caller).
        unsafe { encrypt_groups::<4>(rk, inp.add(16 * done), out.add(16 * done)) };
        done += 64;
    }
    while n - done >= 16 {
        // SAFETY: as above, for blocks done..done+16.
        unsafe { encrypt_groups::<1>(rk, inp.add(16 * done), out.add(16 * done)) };
        done += 16;
    }
    let rest = n - done;
    if rest <= 2 {
        for b in done..n {
            let mut block = [0u8; 16];
            // SAFETY: block b is in bounds of `inp` (caller); `block` is ours.
            unsafe { core::ptr::copy_nonoverlapping(inp.add(16 * b), block.as_mut_ptr(), 16) };
            // SAFETY: the `Gfni` token proves the features.
            let mut out_block = unsafe { encrypt_one(rk, block) };
            // SAFETY: block b is in bounds of `out` (caller).
            unsafe { core::ptr::copy_nonoverlapping(out_block.as_ptr(), out.add(16 * b), 16) };
            block.zeroize();
            out_block.zeroize();
        }
    } else {
        let mut buf = [0u8; 256];
        // SAFETY: blocks done..n are in bounds of `inp` (caller); `buf` is
        // ours and 256 ≥ 16·rest bytes.
        unsafe { core::ptr::copy_nonoverlapping(inp.add(16 * done), buf.as_mut_ptr(), 16 * rest) };
        // SAFETY: the `Gfni` token proves the features; `buf` is 256 bytes.
        unsafe { encrypt_groups::<1>(rk, buf.as_ptr(), buf.as_mut_ptr()) };
        // SAFETY: blocks done..n are in bounds of `out` (caller), which is
        // not `buf`.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), out.add(16 * done), 16 * rest) };
        buf.zeroize();
    }
}

/// The `cipher` backend: 64 blocks per call.
pub(super) struct Backend<'a>(pub(super) Gfni, pub(super) &'a [u32; 32]);

impl BlockSizeUser for Backend<'_> {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for Backend<'_> {
    type ParBlocksSize = U64;
}

impl BlockBackend for Backend<'_> {
    #[inline]
    fn proc_block(&mut self, block: InOut<'_, '_, Block<Self>>) {
        let (inp, out) = block.into_raw();
        // SAFETY: `InOut` guarantees both pointers are valid for one block
        // of 16 bytes and are equal or disjoint.
        unsafe { encrypt_raw(self.0, self.1, inp.cast(), out.cast(), 1) };
    }

    #[inline]
    fn proc_par_blocks(&mut self, blocks: InOut<'_, '_, ParBlocks<Self>>) {
        encrypt_blocks(self.0, self.1, blocks.into_buf());
    }

    #[inline]
    fn proc_tail_blocks(&mut self, blocks: InOutBuf<'_, '_, Block<Self>>) {
        encrypt_blocks(self.0, self.1, blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::super::consts::SBOX;
    use super::*;

    /// The vector S-box on all 256 bytes (four registers' worth) and the
    /// XMM one used by the key schedule and single blocks.
    #[test]
    fn the_gfni_sbox_is_the_table() {
        let Some(_tok) = Gfni::detect() else {
            eprintln!("no GFNI/AVX-512 here: the portable path's tests cover this CPU");
            return;
        };
        let mut all = [0u8; 256];
        for (i, b) in all.iter_mut().enumerate() {
            *b = i as u8;
        }
        for chunk in all.chunks_exact_mut(64) {
            // SAFETY: `_tok` proves the features; `chunk` is 64 bytes.
            unsafe {
                let v = _mm512_loadu_si512(chunk.as_ptr().cast());
                _mm512_storeu_si512(chunk.as_mut_ptr().cast(), sbox512(v));
            }
        }
        assert_eq!(all, SBOX);
        for x in 0..=255u8 {
            // SAFETY: `_tok` proves the features.
            let y = unsafe { _mm_cvtsi128_si32(sbox128(_mm_cvtsi32_si128(i32::from(x)))) } as u8;
            assert_eq!(y, SBOX[usize::from(x)]);
        }
    }
}
