//! A download's pieces between the reading task and the transport, shared
//! by GetObject and the HTTP listener's GET.
//!
//! The reading task reads ahead at most four pieces into an outbox it can
//! take back: when the client takes too little for too long
//! ([`StreamPace`]), the unsent pieces are dropped at once, not when the
//! connection goes, and the download ends with `STREAM_STALLED` in their
//! place. Each piece is checked against the owner's erasure once more just
//! before the transport takes it: a piece read before an erasure but still
//! waiting is dropped, and the download ends with `USER_ERASED`. Dropping
//! the download stops the reading task, which drops the object's key.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::limits::{Progress, StreamPace};
use crate::content::{ByteRange, ErasureGuard, OpenedObject, SEND_PIECE};
use crate::error::Error;

/// A piece of plaintext, or the error the download ends with.
type Piece = Result<Bytes, Error>;

/// The plaintext of `range` (`None`: all) of `opened`, read ahead of the
/// transport, keeping `pace`. An object of one piece read whole is read
/// in the transport's own task instead: no reading task to hand it over
/// (a thumbnail's or a comment's cost is mostly those hand-overs).
pub fn download(
    opened: OpenedObject,
    range: Option<ByteRange>,
    pace: StreamPace,
) -> impl Stream<Item = Piece> + Send + 'static {
    if range.is_none() && opened.info.size <= SEND_PIECE as u64 {
        return futures_util::future::Either::Left(futures_util::stream::once(async move {
            // One piece (`read_into` checks the owner's erasure as it
            // leaves), taken as it is: no copy.
            let mut pieces = Vec::with_capacity(1);
            opened
                .read_into(None, |piece| {
                    pieces.push(piece);
                    async { true }
                })
                .await?;
            let data = match pieces.len() {
                1 => pieces.pop().unwrap_or_default(),
                _ => Bytes::from(pieces.concat()),
            };
            crate::metrics::get().bytes_out(data.len() as u64);
            Ok(data)
        }));
    }
    futures_util::future::Either::Right(read_ahead(opened, range, pace))
}

/// [`download`] by a reading task ahead of the transport.
fn read_ahead(
    opened: OpenedObject,
    range: Option<ByteRange>,
    pace: StreamPace,
) -> impl Stream<Item = Piece> + Send + 'static {
    let guard = opened.erasure_guard();
    let (tx, rx) = mpsc::channel::<Piece>(4);
    let outbox = Arc::new(Outbox(Mutex::new(OutboxState::Open(rx))));
    let pieces = OutboxStream(outbox.clone());
    let progress = Arc::new(Mutex::new(Progress::new(pace)));
    tokio::spawn(async move {
        let (sink_tx, sink_outbox, sink_progress) = (tx.clone(), outbox.clone(), progress.clone());
        let result = opened
            .read_into(range, move |data: Bytes| {
                let (tx, outbox, progress) =
                    (sink_tx.clone(), sink_outbox.clone(), sink_progress.clone());
                async move { send_paced(&tx, &outbox, &progress, Ok(data)).await }
            })
            .await;
        if let Err(e) = result {
            send_paced(&tx, &outbox, &progress, Err(e)).await;
        }
    });
    checked_at_send(pieces, guard)
}

/// The pieces read ahead of the transport, which the reading task can
/// take back.
struct Outbox(Mutex<OutboxState>);

enum OutboxState {
    Open(mpsc::Receiver<Piece>),
    Ended(Option<Error>),
}

impl Outbox {
    /// Drops the unsent pieces; the download ends with `error`.
    fn end(&self, error: Error) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = OutboxState::Ended(Some(error));
    }
}

/// The receiving end of an [`Outbox`], as the transport takes it.
struct OutboxStream(Arc<Outbox>);

impl Stream for OutboxStream {
    type Item = Piece;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Piece>> {
        let mut state = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            OutboxState::Open(rx) => rx.poll_recv(cx),
            OutboxState::Ended(error) => Poll::Ready(error.take().map(Err)),
        }
    }
}

/// Sends `piece` into the outbox once the transport has room for it, or,
/// if the client takes too little for too long, ends the outbox. Whether
/// the reading should go on.
async fn send_paced(
    tx: &mpsc::Sender<Piece>,
    outbox: &Outbox,
    progress: &Mutex<Progress>,
    piece: Piece,
) -> bool {
    let bytes = piece.as_ref().map_or(0, |d| d.len() as u64);
    let deadline = progress
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .deadline();
    match tokio::time::timeout_at(deadline, tx.send(piece)).await {
        Ok(Ok(())) => {
            progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .moved(bytes);
            true
        }
        // The download is gone.
        Ok(Err(_)) => false,
        Err(_) => {
            let pace = progress.lock().unwrap_or_else(|p| p.into_inner()).pace();
            tracing::info!("download ended: the client took too little (limits.stream_min_bytes)");
            outbox.end(pace.stalled("download"));
            false
        }
    }
}

/// The pieces as the transport takes them, each checked against the
/// owner's erasure just before it leaves.
fn checked_at_send(pieces: OutboxStream, guard: ErasureGuard) -> impl Stream<Item = Piece> + Send {
    futures_util::stream::unfold(Some((pieces, guard)), |state| async move {
        let (mut pieces, mut guard) = state?;
        let piece = pieces.next().await?;
        if let Ok(data) = &piece {
            if let Err(e) = guard.check().await {
                return Some((Err(e), None));
            }
            crate::metrics::get().bytes_out(data.len() as u64);
        }
        Some((piece, Some((pieces, guard))))
    })
}
