//! Calls of the other services as the tests make them: erasures and
//! their garbage collection, key status, jobs, the audit trail, health.

use sealgate::api::pb;
use sealgate::api::pb::audit_service_client::AuditServiceClient;
use tonic::transport::Channel;
use tonic::Status;

use super::server::TestGateway;
use crate::support::eventually;

/// The gateway's overall health status (`ServingStatus` as i32).
pub async fn health(gw: &TestGateway) -> i32 {
    let channel = tonic::transport::Channel::from_shared(gw.endpoint())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health Check")
        .into_inner()
        .status
}

/// The hex pseudonym of `user`, as KeyStatus reports it.
pub async fn pseudonym(gw: &TestGateway, user: &str) -> String {
    key_status(gw, user).await.pseudonym
}

/// How long an erasure's garbage collection may take in tests.
pub const GC_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// GetErasure.
pub async fn erasure_status(gw: &TestGateway, user: &str) -> pb::ErasureStatus {
    try_erasure_status(gw, user).await.expect("GetErasure")
}

/// Erases `user`.
pub async fn try_erase(gw: &TestGateway, user: &str) -> Result<pb::EraseReceipt, Status> {
    gw.erasure()
        .await
        .erase_user(pb::EraseUserRequest {
            user_id: user.into(),
            after_seconds: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// GetErasure of `user`.
pub async fn try_erasure_status(gw: &TestGateway, user: &str) -> Result<pb::ErasureStatus, Status> {
    gw.erasure()
        .await
        .get_erasure(pb::GetErasureRequest {
            user_id: user.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// KeyStatus of `user`.
pub async fn key_status(gw: &TestGateway, user: &str) -> pb::KeyStatusResponse {
    gw.admin()
        .await
        .key_status(pb::KeyStatusRequest {
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .expect("KeyStatus")
        .into_inner()
}

/// Waits until the user is erased (an erasure pending a hold runs once it
/// is released) and its GC job is DONE (failing at once if it FAILED);
/// returns the final status.
pub async fn wait_gc_done(gw: &TestGateway, user: &str) -> pb::ErasureStatus {
    let last = std::cell::RefCell::new(None);
    eventually("the GC job is DONE", GC_DEADLINE, || async {
        let s = erasure_status(gw, user).await;
        if s.state() != pb::ErasureState::Erased {
            return false;
        }
        let gc = s.gc.clone().expect("GetErasure reports the GC job");
        assert_ne!(gc.state, pb::JobState::Failed as i32, "GC failed: {gc:?}");
        let done = gc.state == pb::JobState::Done as i32;
        *last.borrow_mut() = Some(s);
        done
    })
    .await;
    last.into_inner().expect("polled at least once")
}

/// Every progress message of a job until its stream ends.
pub async fn watch_all(gw: &TestGateway, id: &str) -> Vec<pb::JobProgress> {
    let mut stream = gw
        .admin()
        .await
        .watch_job(pb::WatchJobRequest { job_id: id.into() })
        .await
        .expect("WatchJob")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(p) = stream.message().await.expect("WatchJob stream") {
        seen.push(p);
    }
    seen
}

/// ListJobs.
pub async fn list_jobs(gw: &TestGateway, state: pb::JobState, limit: u32) -> Vec<pb::JobProgress> {
    gw.admin()
        .await
        .list_jobs(pb::ListJobsRequest {
            limit,
            state: state as i32,
        })
        .await
        .expect("ListJobs")
        .into_inner()
        .jobs
}

/// Every audit record (of `user`, or all when empty; since `since` if
/// given), following page tokens two records at a time.
pub async fn audit_records(
    c: &mut AuditServiceClient<Channel>,
    user: &str,
    since: Option<i64>,
) -> Vec<pb::AuditRecord> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_audit(pb::ListAuditRequest {
                user_id: user.into(),
                since_unix_ms: since,
                page_size: 2,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.records);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// The key hierarchy as KeyStatus without a user reports it.
pub async fn hierarchy(gw: &TestGateway) -> pb::HierarchyStatus {
    gw.admin()
        .await
        .key_status(pb::KeyStatusRequest::default())
        .await
        .expect("KeyStatus")
        .into_inner()
        .hierarchy
        .expect("the hierarchy")
}

/// Starts a master rotation and follows its job to the end: the target
/// version and every progress update.
pub async fn rotate_master(gw: &TestGateway) -> (u32, Vec<pb::JobProgress>) {
    let started = gw
        .admin()
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest {})
        .await
        .expect("RotateMasterKey")
        .into_inner();
    (started.master_version, watch_all(gw, &started.job_id).await)
}
