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
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::{Caller, Role};
use super::download::ahead;
use super::limits::StreamPace;
use super::pb;
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

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

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
        let mut snapshot = Some(prepared.snapshot().to_string());
        let (ahead, chunks) = ahead(
            AHEAD,
            self.pace,
            "export",
            |c: &pb::ExportChunk| c.data.len() as u64,
            prepared.erasure_guard(),
        );
        let export = self.export.clone();
        tokio::spawn(async move {
            // Each piece straight into the outbox, as it is written.
            let sink = {
                let ahead = ahead.clone();
                move |piece: ArchivePiece| {
                    let chunk = pb::ExportChunk {
                        data: piece.data,
                        offset: piece.offset,
                        snapshot: snapshot.take().unwrap_or_default(),
                    };
                    let ahead = ahead.clone();
                    async move { ahead.send(Ok(chunk)).await }
                }
            };
            // A stopped sink ends the export without error, so an error is
            // one of the export's own: the client is still there for it.
            if let Err(e) = export.run(prepared, sink).await {
                ahead.send(Err(e)).await;
            }
        });
        Ok(Response::new(Box::pin(
            chunks.map(|chunk| chunk.map_err(Status::from)),
        )))
    }
}
