//! What a task produces ahead of the transport ([`ahead`]: GetObject's and
//! the HTTP listener's downloads, [`download`], and ExportUser's chunks).
//!
//! The task writes at most a few items ahead into an outbox it can take
//! back: when the client takes too little for too long ([`StreamPace`]),
//! the unsent items are dropped at once, not when the connection goes, and
//! the stream ends with `STREAM_STALLED` in their place. Each item is
//! checked against the owner's erasure once more just before the transport
//! takes it: one produced before an erasure but still waiting is dropped,
//! and the stream ends with `USER_ERASED`. Dropping the stream stops the
//! task, which drops the object's key.

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
    let (ahead, pieces) = ahead(
        AHEAD,
        pace,
        "download",
        |b: &Bytes| b.len() as u64,
        opened.erasure_guard(),
    );
    tokio::spawn(async move {
        let sink = ahead.clone();
        let result = opened
            .read_into(range, move |data: Bytes| {
                let sink = sink.clone();
                async move { sink.send(Ok(data)).await }
            })
            .await;
        if let Err(e) = result {
            ahead.send(Err(e)).await;
        }
    });
    pieces
}

/// Pieces a download reads ahead of the transport.
const AHEAD: usize = 4;

/// The writing end of what a task produces ahead of the transport (a
/// download's pieces, an export's chunks): at most `depth` items wait,
/// the client must keep the pace, and the task can take the unsent items
/// back.
pub struct Ahead<T> {
    tx: mpsc::Sender<Result<T, Error>>,
    outbox: Arc<Outbox<T>>,
    progress: Arc<Mutex<Progress>>,
    /// What is produced, for the messages ("download", "export").
    what: &'static str,
    /// The bytes an item moves.
    size: fn(&T) -> u64,
}

impl<T> Clone for Ahead<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            outbox: self.outbox.clone(),
            progress: self.progress.clone(),
            what: self.what,
            size: self.size,
        }
    }
}

/// A new outbox of `depth` items of `what`, each moving `size` bytes, at
/// `pace`: its writing end, and the items as the transport takes them,
/// each checked against the owner's erasure (`guard`) as it leaves.
pub fn ahead<T: Send + 'static>(
    depth: usize,
    pace: StreamPace,
    what: &'static str,
    size: fn(&T) -> u64,
    guard: ErasureGuard,
) -> (
    Ahead<T>,
    impl Stream<Item = Result<T, Error>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(depth);
    let outbox = Arc::new(Outbox(Mutex::new(OutboxState::Open(rx))));
    let items = OutboxStream(outbox.clone());
    let ahead = Ahead {
        tx,
        outbox,
        progress: Arc::new(Mutex::new(Progress::new(pace))),
        what,
        size,
    };
    (ahead, checked_at_send(items, guard, size))
}

impl<T> Ahead<T> {
    /// Sends `item` once the transport has room for it, or, if the client
    /// takes too little for too long, ends the outbox (its unsent items
    /// dropped, `STREAM_STALLED` in their place). Whether to go on.
    pub async fn send(&self, item: Result<T, Error>) -> bool {
        let bytes = item.as_ref().map_or(0, self.size);
        let deadline = self.lock_progress().deadline();
        match tokio::time::timeout_at(deadline, self.tx.send(item)).await {
            Ok(Ok(())) => {
                self.lock_progress().moved(bytes);
                true
            }
            // The transport's end is gone.
            Ok(Err(_)) => false,
            Err(_) => {
                let what = self.what;
                tracing::info!(
                    "{what} ended: the client took too little (limits.stream_min_bytes)"
                );
                let stalled = self.lock_progress().pace().stalled(what);
                self.outbox.end(stalled);
                false
            }
        }
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The items waiting for the transport, which the writing task can take
/// back.
struct Outbox<T>(Mutex<OutboxState<T>>);

enum OutboxState<T> {
    Open(mpsc::Receiver<Result<T, Error>>),
    Ended(Option<Error>),
}

impl<T> Outbox<T> {
    /// Drops the unsent items; the stream ends with `error`.
    fn end(&self, error: Error) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = OutboxState::Ended(Some(error));
    }
}

/// The receiving end of an [`Outbox`], as the transport takes it.
struct OutboxStream<T>(Arc<Outbox<T>>);

impl<T> Stream for OutboxStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            OutboxState::Open(rx) => rx.poll_recv(cx),
            OutboxState::Ended(error) => Poll::Ready(error.take().map(Err)),
        }
    }
}

/// The items as the transport takes them, each checked against the
/// owner's erasure just before it leaves.
fn checked_at_send<T: Send + 'static>(
    items: OutboxStream<T>,
    guard: ErasureGuard,
    size: fn(&T) -> u64,
) -> impl Stream<Item = Result<T, Error>> + Send {
    futures_util::stream::unfold(Some((items, guard)), move |state| async move {
        let (mut items, mut guard) = state?;
        let item = items.next().await?;
        if let Some(bytes) = item.as_ref().ok().map(size) {
            if let Err(e) = guard.check().await {
                return Some((Err(e), None));
            }
            crate::metrics::get().bytes_out(bytes);
        }
        Some((item, Some((items, guard))))
    })
}
