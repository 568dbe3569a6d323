//! The SM4 block cipher type and its `cipher` trait implementations.

use core::fmt;

use cipher::consts::U16;
use cipher::generic_array::GenericArray;
use cipher::{BlockCipher, BlockClosure, BlockEncrypt, BlockSizeUser, Key, KeyInit, KeySizeUser};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::soft;
#[cfg(target_arch = "x86_64")]
use super::x86;

/// Which SM4 implementation a key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// x86-64 GFNI with AVX-512F/BW: 64 blocks per call.
    Gfni,
    /// Portable arithmetic S-box, two blocks per call; slow.
    Portable,
}

impl Implementation {
    /// The fastest implementation this CPU supports (the CPUID probe is
    /// cached by `std`).
    pub fn fastest() -> Self {
        if Self::Gfni.is_available() {
            Self::Gfni
        } else {
            Self::Portable
        }
    }

    /// Whether this CPU can run it.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Gfni => x86::Gfni::detect().is_some(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Gfni => false,
            Self::Portable => true,
        }
    }
}

#[derive(Clone, Copy)]
enum Path {
    #[cfg(target_arch = "x86_64")]
    Gfni(x86::Gfni),
    Portable,
}

/// The SM4 block cipher (GB/T 32907-2016), constant-time: no table
/// lookups, no secret-dependent branches (see the [module docs](super)).
///
/// Encryption only, which is all CTR and GCM need. The round keys are
/// zeroized on drop.
#[derive(Clone)]
pub struct Sm4 {
    rk: [u32; 32],
    path: Path,
}

impl Sm4 {
    /// The key schedule with the fastest implementation.
    pub fn from_key(key: &[u8; 16]) -> Self {
        Self::with_implementation(key, Implementation::fastest())
            .expect("the fastest implementation is available")
    }

    /// The key schedule with a chosen implementation (tests and benchmarks
    /// compare them); `None` if this CPU cannot run it.
    pub fn with_implementation(key: &[u8; 16], imp: Implementation) -> Option<Self> {
        match imp {
            #[cfg(target_arch = "x86_64")]
            Implementation::Gfni => {
                let tok = x86::Gfni::detect()?;
                Some(Self {
                    rk: x86::expand_key(tok, key),
                    path: Path::Gfni(tok),
                })
            }
            #[cfg(not(target_arch = "x86_64"))]
            Implementation::Gfni => None,
            Implementation::Portable => Some(Self {
                rk: soft::expand_key(key),
                path: Path::Portable,
            }),
        }
    }

    /// The implementation this key uses.
    pub fn implementation(&self) -> Implementation {
        match self.path {
            #[cfg(target_arch = "x86_64")]
            Path::Gfni(_) => Implementation::Gfni,
            Path::Portable => Implementation::Portable,
        }
    }

    /// Encrypts one block in place.
    pub fn encrypt_block_in_place(&self, block: &mut [u8; 16]) {
        BlockEncrypt::encrypt_block(self, GenericArray::from_mut_slice(block));
    }
}

impl fmt::Debug for Sm4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm4")
            .field("implementation", &self.implementation())
            .finish_non_exhaustive()
    }
}

impl Drop for Sm4 {
    fn drop(&mut self) {
        self.rk.zeroize();
    }
}

impl ZeroizeOnDrop for Sm4 {}

impl BlockCipher for Sm4 {}

impl KeySizeUser for Sm4 {
    type KeySize = U16;
}

impl BlockSizeUser for Sm4 {
    type BlockSize = U16;
}

impl KeyInit for Sm4 {
    fn new(key: &Key<Self>) -> Self {
        Self::from_key(&(*key).into())
    }
}

impl BlockEncrypt for Sm4 {
    fn encrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U16>) {
        match self.path {
            #[cfg(target_arch = "x86_64")]
            Path::Gfni(tok) => f.call(&mut x86::Backend(tok, &self.rk)),
            Path::Portable => f.call(&mut soft::Backend(&self.rk)),
        }
    }
}
