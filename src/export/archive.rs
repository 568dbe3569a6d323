//! The archive as it is written ([`Archive`]: the resume offset skipped,
//! pieces of at most [`PIECE`], long plaintext pieces passed through
//! uncopied) and an object streamed into it with its SHA-256: the one a
//! version-2 object stores, read at the end of the same stream, or for a
//! version-1 object computed beside ([`copy_object`]). No I/O of its own:
//! the object comes from the content read path, the pieces go to the
//! caller's sink.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{ArchivePiece, PIECE};
use crate::error::Error;

/// Pieces handed to an object's hashing thread and not yet hashed, at most.
const HASH_AHEAD: usize = 8;
/// Pieces of the read path at least this long go out as they are.
const PASS_THROUGH: usize = 16 * 1024;

/// An object's SHA-256 (hex).
pub(super) enum Digest {
    /// As the object stores it (format version 2).
    Stored(String),
    /// As a thread computes it (version 1).
    Hashing(tokio::task::JoinHandle<String>),
}

/// The SHA-256, once its thread (if any) arrives at it.
pub(super) async fn hashed(d: Digest) -> Result<String, Error> {
    match d {
        Digest::Stored(hex) => Ok(hex),
        Digest::Hashing(h) => h
            .await
            .map_err(|e| Error::Internal(format!("hashing an object: {e}"))),
    }
}

/// Streams an opened object's plaintext into the archive; its SHA-256
/// (for a version-1 object, the thread hashing it, which may still have
/// pieces to hash), or `None` if the receiver went away.
pub(super) async fn copy_object<S, F>(
    opened: crate::content::OpenedObject,
    archive: &mut Archive<S>,
) -> Result<Option<Digest>, Error>
where
    S: FnMut(ArchivePiece) -> F + Send,
    F: Future<Output = bool> + Send,
{
    // The read path pushes authenticated pieces into a channel of four;
    // this side frames them (and for version 1 hands them to the hash).
    // Dropping the receiver stops the read.
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let sink = move |piece| {
        let tx = tx.clone();
        async move { tx.send(piece).await.is_ok() }
    };
    // A version-1 object's SHA-256 runs on a thread of its own, beside the
    // decryption and the sending (the pieces are shared, not copied):
    // hashing inline cost a quarter of the throughput.
    let (hash_tx, hasher) = if opened.stores_digest() {
        (None, None)
    } else {
        let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(HASH_AHEAD);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            while let Some(piece) = hash_rx.blocking_recv() {
                hash.update(&piece);
            }
            hex::encode(hash.finish().as_ref())
        });
        (Some(hash_tx), Some(hasher))
    };
    let read = opened.read_whole_with_digest(sink);
    let copy = async move {
        while let Some(piece) = rx.recv().await {
            if let Some(hash) = &hash_tx {
                if hash.send(piece.clone()).await.is_err() {
                    return false;
                }
            }
            if !archive.write_bytes(piece).await {
                return false;
            }
        }
        true
    };
    let (read, copied) = tokio::join!(read, copy);
    if !copied {
        return Ok(None);
    }
    Ok(match (read?, hasher) {
        (Some(stored), _) => Some(Digest::Stored(hex::encode(stored))),
        (None, hasher) => hasher.map(Digest::Hashing),
    })
}

/// The archive as it is written: its position, the bytes before the
/// resume offset skipped, the rest gathered into pieces of [`PIECE`].
pub(super) struct Archive<S> {
    out: S,
    /// Archive bytes written so far (sent or skipped).
    pub(super) pos: u64,
    /// Bytes before this offset are not sent.
    from: u64,
    buf: Vec<u8>,
    /// Archive bytes sent (from the resume offset).
    pub(super) sent: u64,
    /// Whether a piece was sent: the first carries the snapshot, so one is
    /// sent even when nothing is left after the offset.
    any_sent: bool,
}

impl<S, F> Archive<S>
where
    S: FnMut(ArchivePiece) -> F + Send,
    F: Future<Output = bool> + Send,
{
    pub(super) fn new(out: S, from: u64) -> Self {
        Self {
            out,
            pos: 0,
            from,
            buf: Vec::new(),
            sent: 0,
            any_sent: false,
        }
    }

    /// Appends a piece, sent as it is (not copied) when it is long and all
    /// past the resume offset; false if the receiver went away.
    pub(super) async fn write_bytes(&mut self, data: Bytes) -> bool {
        if self.pos >= self.from && (PASS_THROUGH..=PIECE).contains(&data.len()) {
            // What is gathered (a header) goes first.
            if !self.buf.is_empty() && !self.flush().await {
                return false;
            }
            self.pos += data.len() as u64;
            return self.send(data).await;
        }
        self.write(&data).await
    }

    /// Passes over `n` bytes that all lie before the resume offset: they
    /// are never sent, so they need not be read.
    pub(super) fn skip(&mut self, n: u64) {
        assert!(self.pos + n <= self.from, "skipping bytes that are sent");
        self.pos += n;
    }

    /// Appends bytes; false if the receiver went away.
    pub(super) async fn write(&mut self, mut data: &[u8]) -> bool {
        if self.pos < self.from {
            let skip = usize::try_from(self.from - self.pos)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.pos += skip as u64;
            data = &data[skip..];
        }
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(PIECE);
            }
            let take = (PIECE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            data = &data[take..];
            if self.buf.len() == PIECE && !self.flush().await {
                return false;
            }
        }
        true
    }

    /// Sends what is gathered; false if the receiver went away.
    async fn flush(&mut self) -> bool {
        let data = Bytes::from(std::mem::take(&mut self.buf));
        self.send(data).await
    }

    /// Sends the archive bytes that end at the current position; false if
    /// the receiver went away.
    async fn send(&mut self, data: Bytes) -> bool {
        let len = data.len() as u64;
        let piece = ArchivePiece {
            offset: self.pos - len,
            data,
        };
        self.any_sent = true;
        if !(self.out)(piece).await {
            return false;
        }
        self.sent += len;
        true
    }

    /// Sends the last piece (an empty one if nothing was sent at all).
    pub(super) async fn finish(&mut self) -> bool {
        if !self.buf.is_empty() || !self.any_sent {
            return self.flush().await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces into a channel: false once its receiver is gone.
    fn to(
        tx: mpsc::Sender<ArchivePiece>,
    ) -> impl FnMut(ArchivePiece) -> futures_util::future::BoxFuture<'static, bool> + Send {
        move |piece| {
            let tx = tx.clone();
            Box::pin(async move { tx.send(piece).await.is_ok() })
        }
    }

    #[tokio::test]
    async fn an_archive_skips_to_its_offset_and_cuts_pieces_of_at_most_a_mib() {
        let data: Vec<u8> = (0..3 * PIECE + 17).map(|i| (i % 251) as u8).collect();
        for from in [0, 1, 511, PIECE as u64 + 3, data.len() as u64] {
            let (tx, mut rx) = mpsc::channel(16);
            let mut a = Archive::new(to(tx), from);
            assert!(a.write(&data[..1000]).await);
            assert!(a.write(&data[1000..]).await);
            assert!(a.finish().await);
            drop(a);
            let mut got = Vec::new();
            let mut next = from;
            while let Some(p) = rx.recv().await {
                assert!(p.data.len() <= PIECE);
                assert_eq!(p.offset, next);
                next += p.data.len() as u64;
                got.extend_from_slice(&p.data);
            }
            assert_eq!(got, &data[from as usize..], "from {from}");
        }
    }

    #[tokio::test]
    async fn a_gone_receiver_stops_the_archive() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut a = Archive::new(to(tx), 0);
        assert!(!a.write(&vec![1; PIECE]).await);
    }
}
