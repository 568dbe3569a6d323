//! Key-slot rewrites: the [`Patch`] held in object metadata, overlaid on
//! reads, and the server-side CopyObject that writes it, pinned to the ETag
//! that was read (`CopySourceIfMatch`) so a replaced object is never
//! patched.

use std::collections::HashMap;

use aws_sdk_s3::types::MetadataDirective;

use super::error::{translate, S3Failure};
use super::{object_key, S3BlobStore, CREATED_META, PATCH_META};
use crate::blob::{
    check_slot_fits, BlobError, BlobKey, BlobReader, SlotRewrite, KEY_SLOT_RANGE, MAX_PATCH_END,
};
use crate::crypto::envelope::KeySlot;

impl S3BlobStore {
    /// The body of `rewrite_key_slot`: checks the slot through the current
    /// patch, then rewrites the object's patch metadata with a CopyObject
    /// onto itself, pinned to the ETag that was read (CopySourceIfMatch), so
    /// an object replaced or rewritten since is never clobbered.
    pub(super) async fn copy_with_key_slot(
        &self,
        key: &BlobKey,
        expected: &[u8; KeySlot::LEN],
        new: &[u8; KeySlot::LEN],
    ) -> Result<SlotRewrite, BlobError> {
        let object = object_key(key)?;
        let mut reader = self.open_reader(key).await?;
        check_slot_fits(reader.len)?;
        let old = reader.patch.clone();
        let reader_etag = reader.etag.clone();
        // One patch region per object: the union of the old and the new,
        // read through the old patch and overlaid with the new bytes.
        let (offset, new_end) = (KEY_SLOT_RANGE.start, KEY_SLOT_RANGE.end);
        let (start, end) = match &old {
            Some(p) => (
                p.offset.min(offset),
                (p.offset + p.bytes.len() as u64).max(new_end),
            ),
            None => (offset, new_end),
        };
        let mut region = reader.read(start..end).await?.to_vec();
        let slot = (offset - start) as usize..(new_end - start) as usize;
        if region[slot.clone()] != expected[..] {
            return Ok(SlotRewrite::Changed);
        }
        region[slot].copy_from_slice(new);
        let patch = Patch {
            offset: start,
            bytes: region,
        };
        let mut copy = self
            .inner
            .client
            .copy_object()
            .bucket(&self.inner.bucket)
            .key(&object)
            .copy_source(format!("{}/{}", self.inner.bucket, object))
            .metadata_directive(MetadataDirective::Replace)
            .metadata(PATCH_META, patch.encode());
        // The copy replaces the metadata: the creation time goes along.
        if let Some(created) = reader.created() {
            copy = copy.metadata(CREATED_META, super::created_meta(created));
        }
        if let Some(etag) = reader_etag {
            copy = copy.copy_source_if_match(etag);
        }
        match copy.send().await.map_err(translate) {
            Ok(_) => Ok(SlotRewrite::Rewritten),
            Err(S3Failure::PreconditionFailed) => Ok(SlotRewrite::Changed),
            Err(other) => Err(other.into_blob()),
        }
    }
}

/// A parsed patch from object metadata.
#[derive(Debug, Clone)]
pub(super) struct Patch {
    offset: u64,
    bytes: Vec<u8>,
}

impl Patch {
    pub(super) fn parse(meta: Option<&HashMap<String, String>>) -> Result<Option<Self>, BlobError> {
        let Some(raw) = meta.and_then(|m| m.get(PATCH_META)) else {
            return Ok(None);
        };
        let bad = || BlobError::Io(std::io::Error::other("malformed sealgate-patch metadata"));
        let (offset, hex_bytes) = raw.split_once(':').ok_or_else(bad)?;
        let patch = Self {
            offset: offset.parse().map_err(|_| bad())?,
            bytes: hex::decode(hex_bytes).map_err(|_| bad())?,
        };
        // Anyone with write access to the bucket writes this metadata: hold
        // it to the bounds of a patch we write, so `apply` cannot overflow.
        check_patch(patch.offset, patch.bytes.len()).map_err(|_| bad())?;
        Ok(Some(patch))
    }

    fn encode(&self) -> String {
        format!("{}:{}", self.offset, hex::encode(&self.bytes))
    }

    /// Overlays the patch onto `data`, which holds object bytes from `at`.
    pub(super) fn apply(&self, at: u64, data: &mut [u8]) {
        let end = at + data.len() as u64;
        let p_end = self.offset + self.bytes.len() as u64;
        let (lo, hi) = (self.offset.max(at), p_end.min(end));
        if lo < hi {
            let src = &self.bytes[(lo - self.offset) as usize..(hi - self.offset) as usize];
            data[(lo - at) as usize..(hi - at) as usize].copy_from_slice(src);
        }
    }
}

/// Patches are small and near the start of an object.
fn check_patch(offset: u64, len: usize) -> Result<(), BlobError> {
    // Checked: a patch read back from storage may carry any offset.
    if offset
        .checked_add(len as u64)
        .is_none_or(|end| end > MAX_PATCH_END)
    {
        return Err(BlobError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "patch outside the first 4 KiB of the object",
        )));
    }
    Ok(())
}
