//! Building the services over opened stores and master keys: the key
//! hierarchy (with its caches and the invalidation feed of replicas), the
//! domain services, the durable jobs and the key schedule, gathered in a
//! [`Gateway`]. This file must never open a store or check the deployment
//! (the steps before it have), nor serve.

use std::sync::Arc;
use std::time::Duration;

use super::{Gateway, ServeError, LOG_TARGET};
use crate::audit::AuditTrail;
use crate::blob::BlobStore;
use crate::config;
use crate::content::{Content, Limits, Reseal, RewrapUser};
use crate::crypto::NamingKey;
use crate::erasure::{Erasure, ErasureSettings};
use crate::holds::LegalHolds;
use crate::jobs::gc::ErasureGc;
use crate::jobs::rotation::{RotateKek, RotateMaster};
use crate::jobs::{JobRunner, JobSettings};
use crate::keyadmin::KeyAdmin;
use crate::keys::keyring::MasterKeyProvider;
use crate::keys::master::secrets::MasterSecrets;
use crate::keys::store::{
    KeyStore, JOB_KIND_ERASURE_GC, JOB_KIND_RESEAL, JOB_KIND_REWRAP_USER, JOB_KIND_ROTATE_KEK,
    JOB_KIND_ROTATE_MASTER,
};
use crate::keys::{CachePolicy, KeyHierarchy};
use crate::receipt::keys::ReceiptSigner;
use crate::signed_read::SignedReads;

/// The parts of the configuration the services are built from.
pub(super) struct ServiceSettings<'a> {
    /// Lifetimes and bounds of the key caches.
    pub cache: &'a config::Cache,
    /// Number of KEK shards (`keystore.shards`).
    pub shards: u32,
    /// The key schedule.
    pub keys: &'a config::Keys,
    /// Cooling-off windows and the erasure feed.
    pub erasure: &'a config::ErasureConfig,
    /// Leases and polling of the durable jobs.
    pub jobs: &'a config::Jobs,
    /// The region bound into every object (`blob.region`).
    pub region: &'a str,
    /// The configured spaces.
    pub spaces: &'a [String],
    /// Size limits of objects, items and responses.
    pub limits: &'a config::Limits,
    /// Signed HTTP reads (the tokens' longest lifetime).
    pub http: &'a config::HttpConfig,
    /// The suite and format version of new objects (`[crypto]`).
    pub crypto: &'a config::CryptoConfig,
}

impl ServiceSettings<'_> {
    /// Builds the key hierarchy over `store` and `master`, the domain
    /// services over it and `blob`, and starts the jobs (resuming the
    /// unfinished ones) and the key schedule.
    ///
    /// # Errors
    /// [`ServeError::KeyStore`] if the key store's invalidation feed cannot
    /// be followed; the key store is closed first.
    pub(super) async fn build(
        self,
        store: Arc<dyn KeyStore>,
        master: Arc<dyn MasterKeyProvider>,
        naming: NamingKey,
        blob: Arc<dyn BlobStore>,
    ) -> Result<Gateway, ServeError> {
        let policy = CachePolicy {
            user_ttl: Duration::from_secs(self.cache.ttl_seconds),
            kek_ttl: Duration::from_secs(self.cache.kek_ttl_seconds),
            max_users: self.cache.max_entries,
        };
        let keys = Arc::new(
            KeyHierarchy::new(store.clone(), master, naming, self.shards, &policy)
                .with_kek_max_age(self.keys.kek_max_age()),
        );
        // Replicas sharing the key store tell each other which cached keys
        // to drop; without a feed (SQLite) the cache lifetimes bound it.
        match store.invalidations().await {
            Ok(Some(feed)) => {
                keys.follow(feed);
            }
            Ok(None) => {}
            Err(e) => {
                store.close().await;
                return Err(e.into());
            }
        }
        let content = Arc::new(
            Content::new(
                keys.clone(),
                store.clone(),
                blob.clone(),
                self.region.to_string(),
                self.spaces.to_vec(),
                Limits {
                    max_object_bytes: self.limits.max_object_bytes,
                    max_item_bytes: self.limits.max_item_bytes,
                    max_response_bytes: self.limits.max_response_bytes,
                },
            )
            .with_suite(self.crypto.suite)
            .with_object_version(self.crypto.object_version),
        );
        let jobs = JobRunner::builder(
            store.clone(),
            JobSettings {
                lease: Duration::from_secs(self.jobs.lease_seconds),
                poll: Duration::from_secs(self.jobs.poll_seconds),
            },
        )
        .handler(
            JOB_KIND_ERASURE_GC,
            Arc::new(ErasureGc::new(
                blob.clone(),
                self.spaces.to_vec(),
                store.clone(),
            )),
        )
        .handler(
            JOB_KIND_ROTATE_MASTER,
            Arc::new(RotateMaster::new(keys.clone())),
        )
        .handler(JOB_KIND_ROTATE_KEK, Arc::new(RotateKek::new(keys.clone())))
        .handler(
            JOB_KIND_REWRAP_USER,
            Arc::new(RewrapUser::new(content.clone())),
        )
        .handler(JOB_KIND_RESEAL, Arc::new(Reseal::new(content.clone())))
        .start();
        let admin = Arc::new(
            KeyAdmin::new(keys.clone(), store.clone(), jobs.clone())
                .with_spaces(self.spaces.to_vec()),
        );
        let erasure = Arc::new(
            Erasure::new(
                keys.clone(),
                store.clone(),
                jobs.clone(),
                ErasureSettings {
                    max_cooloff: self.erasure.max_cooloff(),
                    feed_retention: self.erasure.feed_retention(),
                },
            )
            .with_receipts(Arc::new(ReceiptSigner::new(
                keys.master().clone(),
                store.clone(),
                self.region,
            ))),
        );
        // Scheduled erasures that are due ([`Erasure::run_due`]); at once
        // at start too: a deadline passed while every process was down
        // runs now.
        let due = erasure.clone();
        tokio::spawn(run_every(
            "scheduled erasures",
            jobs.stop_signal(),
            Duration::from_secs(self.erasure.due_check_seconds),
            move || {
                let due = due.clone();
                async move { due.run_due().await.map(drop) }
            },
        ));
        // The key schedule ([`KeyAdmin::schedule_pass`]).
        if keys.kek_max_age().is_some() {
            let schedule = admin.clone();
            tokio::spawn(run_every(
                "key schedule",
                jobs.stop_signal(),
                Duration::from_secs(self.keys.schedule_check_seconds),
                move || {
                    let schedule = schedule.clone();
                    async move { schedule.schedule_pass().await }
                },
            ));
        }
        let reads = Arc::new(SignedReads::new(
            content.clone(),
            MasterSecrets::new(keys.master().clone(), store.clone(), SignedReads::purpose()),
            Duration::from_secs(self.http.max_ttl_seconds),
        ));
        Ok(Gateway {
            content,
            reads,
            erasure,
            admin,
            holds: Arc::new(LegalHolds::new(keys.clone(), store.clone())),
            audit: Arc::new(AuditTrail::new(keys, store.clone())),
            store,
            jobs,
            // Set by the caller, which took it before opening the stores.
            data_dir_lock: None,
        })
    }
}

/// Runs `pass` every `every`, the first at once, until the jobs stop; a
/// failed pass is logged as `what` and tried again at the next.
async fn run_every<F, Fut>(
    what: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    every: Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::error::Error>>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {
                if let Err(e) = pass().await {
                    tracing::warn!(target: LOG_TARGET, error = %e, "{what} pass failed; trying again at the next");
                }
            }
        }
    }
}
