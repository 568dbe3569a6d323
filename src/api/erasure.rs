//! ErasureService: the gRPC face of [`Erasure`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{job_progress, pb};
use crate::erasure::{Asked, Erasure, ErasureStatus};
use crate::error::Error;
use crate::keys::store::{
    ErasureEvent, ErasureEventKind, ScheduleState, ScheduledErasure, Tombstone,
};

/// Events one read of the feed fetches at most.
const FEED_PAGE: u32 = 500;

/// How often a watcher asks the key store for events committed by other
/// processes (this process's own wake it at once).
const FEED_POLL: Duration = Duration::from_millis(250);

/// The ErasureService implementation.
pub struct ErasureApi {
    erasure: Arc<Erasure>,
}

impl ErasureApi {
    /// Wraps the erasure service.
    pub fn new(erasure: Arc<Erasure>) -> Self {
        Self { erasure }
    }

    /// The receipt of an erasure, with its signed receipt file and the
    /// fields the file names.
    fn receipt(&self, t: &Tombstone, file: &[u8]) -> Result<pb::EraseReceipt, Status> {
        let (decoded, _, _) = crate::receipt::parse_file(file)
            .map_err(|e| Status::from(Error::Internal(format!("stored erasure receipt: {e}"))))?;
        Ok(pb::EraseReceipt {
            backup_horizon_unix_ms: self.erasure.backup_horizon_ms(t).unwrap_or(0),
            pseudonym: t.pseudonym.to_string(),
            erased_at_unix_ms: t.erased_at_ms,
            destroyed_key_versions: t.destroyed_versions.clone(),
            gc_job_id: t.gc_job_id.clone(),
            state: pb::ErasureState::Erased.into(),
            due_unix_ms: 0,
            holding_cases: 0,
            signed_receipt: file.to_vec().into(),
            signing_key_id: decoded.key_id,
            deployment_id: decoded.deployment_id,
            region: decoded.region,
        })
    }

    fn asked(&self, asked: &Asked) -> Result<pb::EraseReceipt, Status> {
        Ok(match asked {
            Asked::Erased(t, file) => self.receipt(t, file)?,
            Asked::Scheduled(s) => pb::EraseReceipt {
                pseudonym: s.pseudonym.to_string(),
                state: schedule_state(s).into(),
                due_unix_ms: s.due_ms,
                ..Default::default()
            },
            Asked::PendingHold(p, cases) => pb::EraseReceipt {
                pseudonym: p.to_string(),
                state: pb::ErasureState::PendingHold.into(),
                holding_cases: u32::try_from(*cases).unwrap_or(u32::MAX),
                ..Default::default()
            },
        })
    }

    fn status(&self, status: ErasureStatus) -> Result<pb::ErasureStatus, Status> {
        Ok(match status {
            ErasureStatus::Erased {
                tombstone,
                receipt,
                gc,
            } => pb::ErasureStatus {
                receipt: Some(self.receipt(&tombstone, &receipt)?),
                gc: gc.map(|j| job_progress(*j)),
                state: pb::ErasureState::Erased.into(),
                ..Default::default()
            },
            ErasureStatus::Scheduled(s) => pb::ErasureStatus {
                receipt: None,
                gc: None,
                state: schedule_state(&s).into(),
                due_unix_ms: s.due_ms,
                requested_at_unix_ms: s.requested_at_ms,
                cancelled_at_unix_ms: if s.state == ScheduleState::Cancelled {
                    s.updated_at_ms
                } else {
                    0
                },
                holding_cases: 0,
            },
            ErasureStatus::PendingHold(s, cases) => pb::ErasureStatus {
                state: pb::ErasureState::PendingHold.into(),
                due_unix_ms: s.due_ms,
                requested_at_unix_ms: s.requested_at_ms,
                holding_cases: u32::try_from(cases).unwrap_or(u32::MAX),
                ..Default::default()
            },
        })
    }
}

fn schedule_state(s: &ScheduledErasure) -> pb::ErasureState {
    match s.state {
        ScheduleState::Scheduled => pb::ErasureState::Scheduled,
        ScheduleState::Cancelled => pb::ErasureState::Cancelled,
    }
}

fn event(e: &ErasureEvent) -> pb::ErasureEvent {
    let kind = match e.kind {
        ErasureEventKind::Scheduled => pb::ErasureEventKind::Scheduled,
        ErasureEventKind::Cancelled => pb::ErasureEventKind::Cancelled,
        ErasureEventKind::Erased => pb::ErasureEventKind::Erased,
        ErasureEventKind::Collected => pb::ErasureEventKind::Collected,
        ErasureEventKind::PendingHold => pb::ErasureEventKind::PendingHold,
    };
    pb::ErasureEvent {
        cursor: e.cursor,
        kind: kind.into(),
        pseudonym: e.pseudonym.to_string(),
        at_unix_ms: e.at_ms,
        due_unix_ms: e.due_ms,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ErasureEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::erasure_service_server::ErasureService for ErasureApi {
    async fn erase_user(
        &self,
        request: Request<pb::EraseUserRequest>,
    ) -> Result<Response<pb::EraseReceipt>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let r = request.into_inner();
        let asked = self
            .erasure
            .erase(
                caller.name(),
                &r.user_id,
                Duration::from_secs(r.after_seconds),
            )
            .await?;
        Ok(Response::new(self.asked(&asked)?))
    }

    async fn get_erasure(
        &self,
        request: Request<pb::GetErasureRequest>,
    ) -> Result<Response<pb::ErasureStatus>, Status> {
        let status = self.erasure.status(&request.into_inner().user_id).await?;
        Ok(Response::new(self.status(status)?))
    }

    async fn cancel_erasure(
        &self,
        request: Request<pb::CancelErasureRequest>,
    ) -> Result<Response<pb::ErasureStatus>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let status = self
            .erasure
            .cancel(caller.name(), &request.into_inner().user_id)
            .await?;
        Ok(Response::new(self.status(status)?))
    }

    async fn erase_users(
        &self,
        request: Request<pb::EraseUsersRequest>,
    ) -> Result<Response<pb::EraseUsersResponse>, Status> {
        let caller = super::auth::Caller::of(&request)?;
        let r = request.into_inner();
        let results = self
            .erasure
            .erase_many(
                caller.name(),
                &r.user_ids,
                Duration::from_secs(r.after_seconds),
                &r.request_id,
            )
            .await?;
        let results = r
            .user_ids
            .into_iter()
            .zip(results)
            .map(|(user_id, result)| {
                Ok(pb::EraseUsersResult {
                    user_id,
                    result: Some(match result {
                        Ok(asked) => pb::erase_users_result::Result::Receipt(self.asked(&asked)?),
                        Err(e) => pb::erase_users_result::Result::Error(super::rpc_status(e)),
                    }),
                })
            })
            .collect::<Result<_, Status>>()?;
        Ok(Response::new(pb::EraseUsersResponse { results }))
    }

    async fn receipt_public_keys(
        &self,
        request: Request<pb::ReceiptPublicKeysRequest>,
    ) -> Result<Response<pb::ReceiptPublicKeysResponse>, Status> {
        let want = request.into_inner().key_id;
        let keys = self
            .erasure
            .receipt_public_keys()
            .await?
            .into_iter()
            .filter(|k| want.is_empty() || k.key_id == want)
            .map(|k| pb::ReceiptPublicKey {
                key_id: k.key_id,
                public_key: k.key.to_vec().into(),
            })
            .collect();
        Ok(Response::new(pb::ReceiptPublicKeysResponse { keys }))
    }

    type WatchErasuresStream = EventStream;

    async fn watch_erasures(
        &self,
        request: Request<pb::WatchErasuresRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let mut cursor = request.into_inner().from_cursor;
        // A cursor past the retained history is refused before streaming.
        let first = self.erasure.events(cursor, FEED_PAGE).await?;
        let erasure = self.erasure.clone();
        let mut changes = erasure.changes();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut page = first;
            loop {
                let full = page.len() == FEED_PAGE as usize;
                for e in &page {
                    cursor = e.cursor;
                    if tx.send(Ok(event(e))).await.is_err() {
                        return; // the watcher went away
                    }
                }
                if !full {
                    // Woken by this process's commits; others' are polled.
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::timeout(FEED_POLL, changes.changed()) => {}
                    }
                }
                page = match erasure.events(cursor, FEED_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream) as EventStream))
    }
}
