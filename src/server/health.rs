//! Health: the gRPC health service kept in step with the stores. The key
//! store must take writes and the object store must answer with the store
//! id it first had; while either cannot, the server and each service are
//! NOT_SERVING. The key store's probe writes (SQLite) or asks the database
//! whether it takes writes on a connection of its own (PostgreSQL, within
//! 500 ms), so a read-only or failing disk and a silent database are seen.
//! The stores are probed every `server.health_probe_seconds` (1 s): health
//! follows a fault and its repair within about two seconds. Until the
//! stores are open (a key store still unreachable at start) every service
//! is NOT_SERVING.
//! This file probes and reports: it must never repair a store nor end a
//! call.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::pb::health_server::{Health as HealthService, HealthServer};
use tonic_health::server::HealthReporter;

use super::LOG_TARGET;
use crate::api::admin::KeyAdminApi;
use crate::api::audit::AuditApi;
use crate::api::content::ContentApi;
use crate::api::erasure::ErasureApi;
use crate::api::export::ExportApi;
use crate::api::holds::LegalHoldApi;
use crate::api::pb;
use crate::blob::BlobStore;
use crate::keys::store::KeyStore;

/// What keeps a server's health: the handle that sets what every service
/// reports, and the task that probes the stores once they are open.
pub(super) struct Health {
    reporter: HealthReporter,
    probe: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The `grpc.health.v1.Health` service to serve, every service NOT_SERVING
/// until [`Health::follow`] is given the opened stores: a gateway that is
/// still opening them (a key store it cannot reach yet) answers health.
pub(super) async fn start() -> (Health, HealthServer<impl HealthService>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    set_health(&reporter, tonic_health::ServingStatus::NotServing).await;
    let health = Health {
        reporter,
        probe: std::sync::Mutex::new(None),
    };
    (health, service)
}

impl Health {
    /// Reports health once from the stores as they are now, then probes
    /// them every `every` and keeps health in step.
    pub(super) async fn follow(
        &self,
        store: Arc<dyn KeyStore>,
        blob: Arc<dyn BlobStore>,
        every: Duration,
    ) {
        let probes = Probes {
            store,
            blob,
            blob_id: std::sync::Mutex::new(None),
        };
        let status = report_health(&self.reporter, &probes, None).await;
        let probe = tokio::spawn(watch_health(self.reporter.clone(), probes, status, every));
        if let Some(old) = self.probing().replace(probe) {
            old.abort();
        }
    }

    fn probing(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops probing: health stays as it was last set.
    pub(super) fn stop_probing(&self) {
        if let Some(probe) = self.probing().take() {
            probe.abort();
        }
    }

    /// Stops probing and sets every service NOT_SERVING.
    pub(super) async fn not_serving(&self) {
        self.stop_probing();
        set_health(&self.reporter, tonic_health::ServingStatus::NotServing).await;
    }
}

/// The longest one probe of a store may take before health counts it as
/// unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What health probes: the key store (can it take writes) and the object
/// store (a read of its store id: a file read, or one S3 GET), which must
/// still hold the store id it had (an emptied or replaced data directory
/// or bucket is not the store this gateway's keys belong to).
struct Probes {
    store: Arc<dyn KeyStore>,
    blob: Arc<dyn BlobStore>,
    /// The object store's id, as first read.
    blob_id: std::sync::Mutex<Option<String>>,
}

impl Probes {
    /// Why the gateway cannot serve, if it cannot.
    async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, self.store.check_health()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("key store: {e}")),
            Err(_) => return Err(format!("key store: no answer in {PROBE_TIMEOUT:?}")),
        }
        let id = match tokio::time::timeout(PROBE_TIMEOUT, self.blob.store_id()).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => return Err(format!("object store: {e}")),
            Err(_) => return Err(format!("object store: no answer in {PROBE_TIMEOUT:?}")),
        };
        let mut known = self.blob_id.lock().unwrap_or_else(|p| p.into_inner());
        match (&*known, id) {
            (None, id) => {
                *known = id;
                Ok(())
            }
            (Some(k), Some(id)) if *k == id => Ok(()),
            (Some(k), Some(id)) => Err(format!(
                "object store: its store id is now {id}, not {k}: another store is mounted"
            )),
            (Some(_), None) => Err(format!(
                "object store: its store id is gone from {}",
                self.blob.location()
            )),
        }
    }
}

/// Sets health (the whole server and each service) to `status`.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    use tonic::server::NamedService;
    for service in [
        "",
        pb::content_service_server::ContentServiceServer::<ContentApi>::NAME,
        pb::erasure_service_server::ErasureServiceServer::<ErasureApi>::NAME,
        pb::key_admin_service_server::KeyAdminServiceServer::<KeyAdminApi>::NAME,
        pb::legal_hold_service_server::LegalHoldServiceServer::<LegalHoldApi>::NAME,
        pb::audit_service_server::AuditServiceServer::<AuditApi>::NAME,
        pb::export_service_server::ExportServiceServer::<ExportApi>::NAME,
    ] {
        reporter.set_service_status(service, status).await;
    }
}

/// Sets health SERVING while the key store can take writes and the object
/// store answers, NOT_SERVING while either cannot (a key store file
/// deleted or replaced, its disk unreachable; S3 down). Returns the status
/// set.
async fn report_health(
    reporter: &tonic_health::server::HealthReporter,
    probes: &Probes,
    last: Option<tonic_health::ServingStatus>,
) -> tonic_health::ServingStatus {
    use tonic_health::ServingStatus;
    let status = match probes.check().await {
        Ok(()) => ServingStatus::Serving,
        Err(e) => {
            if last != Some(ServingStatus::NotServing) {
                tracing::error!(target: LOG_TARGET, error = %e, "store unhealthy: NOT_SERVING");
            }
            ServingStatus::NotServing
        }
    };
    if last != Some(status) {
        if last.is_some() && status == ServingStatus::Serving {
            tracing::info!(target: LOG_TARGET, "stores healthy again: SERVING");
        }
        set_health(reporter, status).await;
    }
    status
}

/// Probes the stores every `every` and keeps health in step.
async fn watch_health(
    reporter: tonic_health::server::HealthReporter,
    probes: Probes,
    mut last: tonic_health::ServingStatus,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        last = report_health(&reporter, &probes, Some(last)).await;
    }
}
