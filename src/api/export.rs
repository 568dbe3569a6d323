//! ExportService: the gRPC face of [`Export`]. Decides which role a
//! request needs (the own copy: content, in the caller's spaces; a
//! disclosure under `case_ref`: legal), has the export checked and listed
//! before the response starts, so every refusal is a status and never a
//! broken stream, then streams the archive.
//!
//! The transport's own bounds, as GetObject's: the archive is written at
//! most four pieces (of at most 1 MiB) ahead of the transport; a client
//! that takes less than `limits.stream_min_bytes` in
//! `limits.stream_timeout_seconds` is ended `STREAM_STALLED` and its
//! unsent pieces dropped at once; the user's erasure (or, for the own
//! copy, restriction) is checked again as each piece leaves.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::auth::{Caller, Role};
use super::limits::{Progress, StreamPace};
use super::pb;
use crate::content::ErasureGuard;
use crate::error::{Error, Reason};
use crate::export::{ArchivePiece, Export, ExportRequest, Scope};

/// Pieces written ahead of the transport.
const AHEAD: usize = 4;

/// The ExportService implementation.
pub struct ExportApi {
    export: Arc<Export>,
    pace: StreamPace,
}

impl ExportApi {
    /// Wraps the export service; downloads keep `pace`.
    pub fn new(export: Arc<Export>, pace: StreamPace) -> Self {
        Self { export, pace }
    }

    /// The scope of a request, once the caller holds the role it needs.
    async fn scope(&self, caller: &Caller, case_ref: String) -> Result<Scope, Error> {
        if !case_ref.is_empty() {
            caller
                .require(Role::Legal, "ExportUser with case_ref (a disclosure)")
                .await?;
            return Ok(Scope::Disclosure { case_ref });
        }
        caller
            .require(
                Role::Content,
                "ExportUser without case_ref (the user's own copy)",
            )
            .await?;
        let spaces: Vec<String> = self
            .export
            .spaces()
            .iter()
            .filter(|s| caller.may_use_space(s))
            .cloned()
            .collect();
        if spaces.is_empty() {
            return Err(Error::PermissionDenied {
                reason: Reason::SpaceNotAllowed,
                message: format!("{} may use none of the configured spaces", caller.name()),
            });
        }
        Ok(Scope::Own { spaces })
    }
}

type ExportMessage = Result<pb::ExportChunk, Status>;
type ExportStream = Pin<Box<dyn Stream<Item = ExportMessage> + Send>>;

/// The messages written ahead of the transport, which the writing task can
/// replace by an error: a stalled client's unsent pieces go at once.
struct Outbox(Mutex<OutboxState>);

enum OutboxState {
    Open(mpsc::Receiver<ExportMessage>),
    Ended(Option<Status>),
}

impl Outbox {
    fn end(&self, status: Status) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = OutboxState::Ended(Some(status));
    }
}

struct OutboxStream(Arc<Outbox>);

impl Stream for OutboxStream {
    type Item = ExportMessage;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ExportMessage>> {
        let mut state = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            OutboxState::Open(rx) => rx.poll_recv(cx),
            OutboxState::Ended(status) => std::task::Poll::Ready(status.take().map(Err)),
        }
    }
}

/// Sends `msg` once the transport has room, or ends the outbox if the
/// client takes too little for too long. Whether to go on.
async fn send_paced(
    tx: &mpsc::Sender<ExportMessage>,
    outbox: &Outbox,
    progress: &Mutex<Progress>,
    msg: ExportMessage,
) -> bool {
    let bytes = msg.as_ref().map_or(0, |c| c.data.len() as u64);
    let deadline = lock(progress).deadline();
    match tokio::time::timeout_at(deadline, tx.send(msg)).await {
        Ok(Ok(())) => {
            lock(progress).moved(bytes);
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!(
                "ExportUser ended: the client took too little (limits.stream_min_bytes)"
            );
            outbox.end(lock(progress).pace().stalled("export").into());
            false
        }
    }
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

/// Each piece checked against the user's erasure as it leaves.
fn checked_at_send(
    messages: OutboxStream,
    guard: ErasureGuard,
) -> impl Stream<Item = ExportMessage> + Send {
    futures_util::stream::unfold(Some((messages, guard)), |state| async move {
        let (mut messages, mut guard) = state?;
        let msg = messages.next().await?;
        if let Ok(chunk) = &msg {
            if let Err(e) = guard.check().await {
                return Some((Err(e.into()), None));
            }
            crate::metrics::get().bytes_out(chunk.data.len() as u64);
        }
        Some((msg, Some((messages, guard))))
    })
}

#[tonic::async_trait]
impl pb::export_service_server::ExportService for ExportApi {
    type ExportUserStream = ExportStream;

    async fn export_user(
        &self,
        request: Request<pb::ExportUserRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.into_inner();
        let scope = self.scope(&caller, req.case_ref).await?;
        let prepared = self
            .export
            .prepare(ExportRequest {
                principal: caller.name().to_string(),
                user_id: req.user_id,
                scope,
                resume: req.resume.map(|r| (r.snapshot, r.offset)),
            })
            .await?;
        let guard = prepared.erasure_guard();
        let mut snapshot = Some(prepared.snapshot().to_string());
        let (tx, rx) = mpsc::channel::<ExportMessage>(AHEAD);
        let outbox = Arc::new(Outbox(Mutex::new(OutboxState::Open(rx))));
        let messages = OutboxStream(outbox.clone());
        let export = self.export.clone();
        let progress = Arc::new(Mutex::new(Progress::new(self.pace)));
        tokio::spawn(async move {
            // Each piece straight into the outbox, as it is written.
            let sink = {
                let (tx, outbox, progress) = (tx.clone(), outbox.clone(), progress.clone());
                move |piece: ArchivePiece| {
                    let chunk = pb::ExportChunk {
                        data: piece.data,
                        offset: piece.offset,
                        snapshot: snapshot.take().unwrap_or_default(),
                    };
                    let (tx, outbox, progress) = (tx.clone(), outbox.clone(), progress.clone());
                    async move { send_paced(&tx, &outbox, &progress, Ok(chunk)).await }
                }
            };
            // A stopped sink ends the export without error, so an error is
            // one of the export's own: the client is still there for it.
            if let Err(e) = export.run(prepared, sink).await {
                send_paced(&tx, &outbox, &progress, Err(e.into())).await;
            }
        });
        Ok(Response::new(Box::pin(checked_at_send(messages, guard))))
    }
}
