//! Signed erasure receipts: the canonical encoding of what an erasure
//! destroyed (FORMAT.md, "Erasure receipts"), its Ed25519 signature, and
//! offline verification against the deployment's published public keys.
//!
//! - This file: [`Receipt`] and its encoding, the receipt file
//!   (`encoding || signature`), [`PublicKey`] and its text line, and
//!   [`verify`]. Pure: no I/O, no key store.
//! - [`keys`]: the signing keys, wrapped under the master key provider and
//!   kept in the key store's settings table, one per master version
//!   ([`keys::ReceiptSigner`]).
//!
//! Decoding never panics and refuses anything but the one canonical
//! encoding: bad magic, truncation, trailing bytes, versions out of order,
//! a negative time, text that is not UTF-8 (ASCII for the key id).

pub mod keys;

use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};

/// The first bytes of every receipt encoding.
pub const MAGIC: &[u8; 28] = b"sealgate/v1/erasure-receipt\0";
/// Bytes of an Ed25519 signature, at the end of a receipt file.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a pseudonym.
pub const PSEUDONYM_LEN: usize = 32;
/// Longest length-prefixed text field (deployment id, region, key id).
pub const MAX_TEXT_LEN: usize = u16::MAX as usize;

/// What is wrong with a receipt, a receipt file or a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The bytes do not start with [`MAGIC`].
    #[error("not an erasure receipt: bad magic")]
    BadMagic,
    /// The bytes end inside a field.
    #[error("truncated receipt: ends inside {0}")]
    Truncated(&'static str),
    /// Bytes follow the last field of the encoding.
    #[error("{0} trailing bytes after the receipt")]
    TrailingBytes(usize),
    /// A text field is not UTF-8 (ASCII for the key id), or empty where
    /// it may not be.
    #[error("malformed {0}")]
    BadText(&'static str),
    /// The destroyed versions are not strictly ascending.
    #[error("destroyed key versions are not strictly ascending")]
    VersionsOutOfOrder,
    /// A time field is negative.
    #[error("negative {0}")]
    NegativeTime(&'static str),
    /// A text field is longer than its u16 length prefix can say.
    #[error("{0} is longer than {MAX_TEXT_LEN} bytes")]
    TooLong(&'static str),
    /// The signature does not verify under the key named.
    #[error("bad signature: the receipt was changed or not signed by key {0}")]
    BadSignature(String),
    /// No public key given has the receipt's key id.
    #[error("no public key with the receipt's key id {0}")]
    UnknownKey(String),
    /// A public key line is malformed, or its id is not its key's id.
    #[error("bad public key: {0}")]
    BadPublicKey(String),
}

/// The signed content of an erasure receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The deployment (the key store's id).
    pub deployment_id: String,
    /// The region the gateway runs in (`blob.region`).
    pub region: String,
    /// The erased user's pseudonym, raw.
    pub pseudonym: [u8; PSEUDONYM_LEN],
    /// When the keys were destroyed, Unix milliseconds.
    pub erased_at_ms: i64,
    /// The destroyed user-key versions, strictly ascending.
    pub destroyed_versions: Vec<u32>,
    /// The backup horizon at signing, Unix milliseconds; 0 for none.
    pub backup_horizon_ms: i64,
    /// The id of the signing key ([`key_id`] of its public key).
    pub key_id: String,
}

fn put_text(out: &mut Vec<u8>, field: &'static str, text: &str) -> Result<(), ReceiptError> {
    let len = u16::try_from(text.len()).map_err(|_| ReceiptError::TooLong(field))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// A cursor over bytes being decoded: every read names its field.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ReceiptError> {
        if self.rest.len() < n {
            return Err(ReceiptError::Truncated(field));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ReceiptError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ReceiptError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ReceiptError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn time(&mut self, field: &'static str) -> Result<i64, ReceiptError> {
        let t = self.array(field).map(i64::from_be_bytes)?;
        if t < 0 {
            return Err(ReceiptError::NegativeTime(field));
        }
        Ok(t)
    }

    fn text(&mut self, field: &'static str) -> Result<String, ReceiptError> {
        let len = self.u16(field)?;
        let bytes = self.take(usize::from(len), field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ReceiptError::BadText(field))
    }
}

impl Receipt {
    /// The canonical encoding (FORMAT.md, "Erasure receipts"): the bytes
    /// that are signed.
    ///
    /// # Errors
    /// [`ReceiptError::TooLong`] for a text field past 65535 bytes;
    /// [`ReceiptError::VersionsOutOfOrder`], [`ReceiptError::NegativeTime`]
    /// and [`ReceiptError::BadText`] for what decoding would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, ReceiptError> {
        if !self.destroyed_versions.windows(2).all(|w| w[0] < w[1]) {
            return Err(ReceiptError::VersionsOutOfOrder);
        }
        if self.erased_at_ms < 0 {
            return Err(ReceiptError::NegativeTime("erased_at"));
        }
        if self.backup_horizon_ms < 0 {
            return Err(ReceiptError::NegativeTime("backup_horizon"));
        }
        check_key_id(&self.key_id)?;
        let count = u32::try_from(self.destroyed_versions.len())
            .map_err(|_| ReceiptError::TooLong("destroyed versions"))?;
        let mut out = Vec::with_capacity(
            MAGIC.len() + 64 + self.deployment_id.len() + self.region.len() + self.key_id.len(),
        );
        out.extend_from_slice(MAGIC);
        put_text(&mut out, "deployment id", &self.deployment_id)?;
        put_text(&mut out, "region", &self.region)?;
        out.extend_from_slice(&self.pseudonym);
        out.extend_from_slice(&self.erased_at_ms.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        for v in &self.destroyed_versions {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.backup_horizon_ms.to_be_bytes());
        put_text(&mut out, "key id", &self.key_id)?;
        Ok(out)
    }

    /// Decodes exactly one canonical encoding.
    ///
    /// # Errors
    /// The [`ReceiptError`] naming the first thing wrong.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let mut r = Reader { rest: bytes };
        let magic = r.rest.get(..MAGIC.len());
        if magic != Some(&MAGIC[..]) {
            // A prefix of the magic is a truncation; anything else is not
            // a receipt.
            return Err(if MAGIC.starts_with(bytes) {
                ReceiptError::Truncated("magic")
            } else {
                ReceiptError::BadMagic
            });
        }
        r.take(MAGIC.len(), "magic")?;
        let deployment_id = r.text("deployment id")?;
        let region = r.text("region")?;
        let pseudonym = r.array("pseudonym")?;
        let erased_at_ms = r.time("erased_at")?;
        let count = r.u32("version count")?;
        // Bounded by the bytes present before anything is allocated.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if r.rest.len() / 4 < count {
            return Err(ReceiptError::Truncated("destroyed versions"));
        }
        let mut destroyed_versions = Vec::with_capacity(count);
        for _ in 0..count {
            destroyed_versions.push(r.u32("destroyed versions")?);
        }
        if !destroyed_versions.windows(2).all(|w| w[0] < w[1]) {
            return Err(ReceiptError::VersionsOutOfOrder);
        }
        let backup_horizon_ms = r.time("backup_horizon")?;
        let key_id = r.text("key id")?;
        check_key_id(&key_id)?;
        if !r.rest.is_empty() {
            return Err(ReceiptError::TrailingBytes(r.rest.len()));
        }
        Ok(Self {
            deployment_id,
            region,
            pseudonym,
            erased_at_ms,
            destroyed_versions,
            backup_horizon_ms,
            key_id,
        })
    }

    /// The pseudonym as lowercase hex (as the API reports it).
    pub fn pseudonym_hex(&self) -> String {
        hex::encode(self.pseudonym)
    }
}

fn check_key_id(id: &str) -> Result<(), ReceiptError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ReceiptError::BadText("key id"));
    }
    Ok(())
}

/// The id of a public key: the first 8 bytes of its SHA-256, lowercase hex.
pub fn key_id(public_key: &[u8; PUBLIC_KEY_LEN]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_key);
    hex::encode(&digest.as_ref()[..8])
}

/// A receipt-signing public key and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// [`key_id`] of `key`.
    pub key_id: String,
    /// The raw Ed25519 public key.
    pub key: [u8; PUBLIC_KEY_LEN],
}

impl PublicKey {
    /// The key with its id.
    pub fn new(key: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self {
            key_id: key_id(&key),
            key,
        }
    }

    /// The key from its id and its bytes; the id must be the key's.
    ///
    /// # Errors
    /// [`ReceiptError::BadPublicKey`] for a key not 32 bytes or an id not
    /// its own.
    pub fn from_parts(id: &str, key: &[u8]) -> Result<Self, ReceiptError> {
        let key: [u8; PUBLIC_KEY_LEN] = key.try_into().map_err(|_| {
            ReceiptError::BadPublicKey(format!("{} bytes, not {PUBLIC_KEY_LEN}", key.len()))
        })?;
        let k = Self::new(key);
        if k.key_id != id {
            return Err(ReceiptError::BadPublicKey(format!(
                "key id {id:?} is not the key's id {}",
                k.key_id
            )));
        }
        Ok(k)
    }

    /// The text line `<key_id> <64 hex digits>` (without newline).
    pub fn to_line(&self) -> String {
        format!("{} {}", self.key_id, hex::encode(self.key))
    }

    /// Parses one text line `<key_id> <64 hex digits>`.
    ///
    /// # Errors
    /// [`ReceiptError::BadPublicKey`].
    pub fn parse_line(line: &str) -> Result<Self, ReceiptError> {
        let mut parts = line.split_whitespace();
        let (Some(id), Some(hex_key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ReceiptError::BadPublicKey(
                "expected a line `<key_id> <hex public key>`".into(),
            ));
        };
        let key = hex::decode(hex_key)
            .map_err(|e| ReceiptError::BadPublicKey(format!("public key not hex: {e}")))?;
        Self::from_parts(id, &key)
    }

    /// Parses a file of such lines (blank lines and `#` comments skipped).
    ///
    /// # Errors
    /// [`ReceiptError::BadPublicKey`] naming the line.
    pub fn parse_lines(text: &str) -> Result<Vec<Self>, ReceiptError> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|(n, l)| {
                Self::parse_line(l).map_err(|e| match e {
                    ReceiptError::BadPublicKey(m) => {
                        ReceiptError::BadPublicKey(format!("line {}: {m}", n + 1))
                    }
                    other => other,
                })
            })
            .collect()
    }
}

/// Splits a receipt file into its encoding and signature, decoding the
/// encoding.
///
/// # Errors
/// [`ReceiptError::Truncated`] for a file shorter than a signature; the
/// encoding's decoding errors.
pub fn parse_file(file: &[u8]) -> Result<(Receipt, &[u8], &[u8]), ReceiptError> {
    let Some(split) = file.len().checked_sub(SIGNATURE_LEN) else {
        return Err(ReceiptError::Truncated("signature"));
    };
    let (encoding, signature) = file.split_at(split);
    Ok((Receipt::decode(encoding)?, encoding, signature))
}

/// Verifies a receipt file (`encoding || signature`) against the public
/// key among `keys` whose id the receipt names; returns the receipt.
///
/// # Errors
/// Decoding errors; [`ReceiptError::UnknownKey`] if no key has the
/// receipt's id; [`ReceiptError::BadSignature`].
pub fn verify(file: &[u8], keys: &[PublicKey]) -> Result<Receipt, ReceiptError> {
    let (receipt, encoding, signature) = parse_file(file)?;
    let key = keys
        .iter()
        .find(|k| k.key_id == receipt.key_id)
        .ok_or_else(|| ReceiptError::UnknownKey(receipt.key_id.clone()))?;
    UnparsedPublicKey::new(&ED25519, &key.key)
        .verify(encoding, signature)
        .map_err(|_| ReceiptError::BadSignature(key.key_id.clone()))?;
    Ok(receipt)
}

#[cfg(test)]
mod tests;
