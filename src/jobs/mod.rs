//! Durable, leased background jobs: work recorded in the key store that
//! survives crashes and runs in exactly one process at a time.
//!
//! A job is a row in the key store ([`JobRecord`]): kind, parameters, state
//! (PENDING, RUNNING, DONE, FAILED with its last error), progress (done,
//! total) and a cursor from which it resumes. A process runs a job only
//! while it holds the job's lease (an owner id and an expiry in the row),
//! taken with one conditional UPDATE
//! ([`JobStore::claim_job`](crate::keys::store::JobStore::claim_job)), renewed by a
//! heartbeat and by every checkpoint; every progress write is conditional on
//! the lease, so a process that lost it (paused past its expiry) cannot
//! write over its successor. A process killed mid-job leaves its lease to
//! expire; any process polling the store then takes the job over and
//! resumes from its last committed checkpoint.
//!
//! A handler ([`JobHandler`]) does the work of one kind. Its errors say
//! whether trying again can help: a transient error (a store unreachable, a
//! disk full) is recorded as the job's last error and retried with capped
//! exponential backoff while the job stays RUNNING; a permanent one ends the
//! job FAILED.
//!
//! Jobs this process schedules start at once; the store is also polled
//! every `jobs.poll_seconds` for any unfinished job whose lease
//! (`jobs.lease_seconds`) has ended. The heartbeat renews a lease every
//! third of it. Shutdown stops the job tasks and hands their leases back,
//! so a restart need not wait for them to expire.

pub mod gc;
pub mod rotation;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::keys::store::{
    AuditEntry, JobCheckpoint, JobRecord, JobState, KeyStore, LeasedProgress, StoreError,
};
use crate::keys::unix_ms;

/// First retry delay after a transient error.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a job's run stopped short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// May succeed when tried again (a store unreachable, a full disk).
    #[error("{0}")]
    Transient(String),
    /// Cannot succeed however often it is tried (a key that fails to
    /// unwrap, parameters that make no sense): the job ends FAILED.
    #[error("{0}")]
    Permanent(String),
    /// Another process took the job over; this one stops without writing.
    #[error("the job's lease was lost")]
    LeaseLost,
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            // A lost store may be restored by an operator: keep trying.
            StoreError::Unavailable(_) | StoreError::Full(_) | StoreError::Lost(_) => {
                Self::Transient(e.to_string())
            }
            StoreError::Backend(_)
            | StoreError::LegalHold { .. }
            | StoreError::HeldUsers { .. } => Self::Permanent(e.to_string()),
        }
    }
}

/// The work of one kind of job.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Runs (or resumes, from `job.record().cursor`) the job to its end,
    /// checkpointing after every committed batch.
    ///
    /// # Errors
    /// [`JobError`]: transient errors are retried, permanent ones end the
    /// job FAILED.
    async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError>;
}

/// A job whose lease this process holds, as a handler sees it.
pub struct LeasedJob {
    store: Arc<dyn KeyStore>,
    owner: String,
    lease: Duration,
    record: JobRecord,
}

impl LeasedJob {
    /// The job as last read or checkpointed.
    pub fn record(&self) -> &JobRecord {
        &self.record
    }

    /// This process's owner id (for store calls that check the lease
    /// inside their own transaction).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The lease expiry a write made now should set.
    pub fn lease_until(&self) -> i64 {
        lease_until(self.lease)
    }

    /// Records progress (and extends the lease).
    ///
    /// # Errors
    /// [`JobError::LeaseLost`] if another process took the job over; store
    /// failures.
    pub async fn checkpoint(
        &mut self,
        done: u64,
        total: u64,
        cursor: &str,
    ) -> Result<(), JobError> {
        let checkpoint = JobCheckpoint {
            done,
            total,
            cursor: cursor.to_string(),
            last_error: String::new(),
        };
        self.write(checkpoint).await
    }

    /// The lease and progress for a store call that commits a batch of
    /// work and the job's progress in one transaction; after it succeeds,
    /// [`Self::note_progress`].
    pub fn progress(&self, done: u64, total: u64, cursor: &str) -> LeasedProgress<'_> {
        LeasedProgress {
            id: &self.record.id,
            owner: &self.owner,
            until_ms: self.lease_until(),
            checkpoint: JobCheckpoint {
                done,
                total,
                cursor: cursor.to_string(),
                last_error: String::new(),
            },
        }
    }

    /// Notes progress that a store call committed with a batch of work;
    /// `held` is what the call returned (whether the lease was still held).
    ///
    /// # Errors
    /// [`JobError::LeaseLost`] if it was not.
    pub fn note_progress(
        &mut self,
        held: bool,
        done: u64,
        total: u64,
        cursor: &str,
    ) -> Result<(), JobError> {
        if !held {
            return Err(JobError::LeaseLost);
        }
        self.record.done = done;
        self.record.total = total;
        self.record.cursor = cursor.to_string();
        self.record.last_error.clear();
        Ok(())
    }

    async fn write(&mut self, c: JobCheckpoint) -> Result<(), JobError> {
        let held = self
            .store
            .checkpoint_job(&self.record.id, &self.owner, &c, self.lease_until())
            .await?;
        if !held {
            return Err(JobError::LeaseLost);
        }
        self.record.done = c.done;
        self.record.total = c.total;
        self.record.cursor = c.cursor;
        self.record.last_error = c.last_error;
        Ok(())
    }
}

fn lease_until(lease: Duration) -> i64 {
    unix_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// How jobs are leased and found.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// How long a lease lasts without renewal: how long a job of a killed
    /// process waits before another takes it over.
    pub lease: Duration,
    /// How often the store is scanned for jobs nobody holds.
    pub poll: Duration,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    owner: String,
    settings: JobSettings,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    /// Jobs with a task in this process: never two tasks for one job.
    running: Mutex<HashSet<String>>,
    stop: watch::Receiver<bool>,
}

/// Runs the jobs of the key store: those scheduled by this process at once,
/// any other unfinished and unleased one when the poll finds it.
#[derive(Clone)]
pub struct JobRunner {
    inner: Arc<Inner>,
    wake: mpsc::UnboundedSender<String>,
    stop: Arc<watch::Sender<bool>>,
}

/// Collects handlers before the runner starts.
pub struct JobRunnerBuilder {
    store: Arc<dyn KeyStore>,
    settings: JobSettings,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl JobRunnerBuilder {
    /// Runs jobs of `kind` with `handler`.
    #[must_use]
    pub fn handler(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(kind.to_string(), handler);
        self
    }

    /// Starts the runner: every unfinished job nobody holds is taken up at
    /// once, then the store is polled every `settings.poll`.
    pub fn start(self) -> JobRunner {
        let (wake, mut woken) = mpsc::unbounded_channel::<String>();
        let (stop_tx, stop) = watch::channel(false);
        let inner = Arc::new(Inner {
            store: self.store,
            owner: crate::names::random_id(),
            settings: self.settings,
            handlers: self.handlers,
            running: Mutex::new(HashSet::new()),
            stop,
        });
        let runner = JobRunner {
            inner: inner.clone(),
            wake,
            stop: Arc::new(stop_tx),
        };
        let mut stop = inner.stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(inner.settings.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    id = woken.recv() => match id {
                        Some(id) => Inner::start_job(&inner, id),
                        None => return,
                    },
                    _ = tick.tick() => Inner::poll(&inner).await,
                }
            }
        });
        runner
    }
}

impl JobRunner {
    /// A runner over `store`; add handlers, then start it.
    pub fn builder(store: Arc<dyn KeyStore>, settings: JobSettings) -> JobRunnerBuilder {
        JobRunnerBuilder {
            store,
            settings,
            handlers: HashMap::new(),
        }
    }

    /// Becomes true when [`Self::shutdown`] is called: for other
    /// background work that stops with the jobs.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.clone()
    }

    /// Takes up a job recorded in the store now rather than at the next poll.
    pub fn schedule(&self, job_id: &str) {
        let _ = self.wake.send(job_id.to_string());
    }

    /// Stops every job task of this process (they resume from their last
    /// checkpoint in whichever process takes them next) and hands their
    /// leases back, so a restart does not wait for them to expire.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let ids: Vec<String> = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for id in ids {
            let _ = self
                .inner
                .store
                .renew_job_lease(&id, &self.inner.owner, 0)
                .await;
        }
    }
}

impl Inner {
    async fn poll(inner: &Arc<Self>) {
        let jobs = match inner.store.unfinished_jobs().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list unfinished jobs");
                return;
            }
        };
        let now = unix_ms();
        for job in jobs {
            let free = match &job.owner {
                None => true,
                Some(o) => *o == inner.owner || job.lease_until_ms < now,
            };
            if free {
                Self::start_job(inner, job.id);
            }
        }
    }

    fn start_job(inner: &Arc<Self>, id: String) {
        if !inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            return;
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let mut stop = inner.stop.clone();
            if !*stop.borrow_and_update() {
                tokio::select! {
                    _ = stop.changed() => {}
                    () = Self::run_job(&inner, &id) => {}
                }
            }
            inner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    /// Claims the job and runs it until it ends or the lease is lost.
    async fn run_job(inner: &Arc<Self>, id: &str) {
        let lease = inner.settings.lease;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let now = unix_ms();
            let record = match inner
                .store
                .claim_job(id, &inner.owner, now, lease_until(lease))
                .await
            {
                Ok(Some(record)) => record,
                // Finished, unknown, or leased by another process.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(job = id, error = %e, "cannot claim job; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let Some(handler) = inner.handlers.get(&record.kind).cloned() else {
                let message = format!("no handler for job kind {:?}", record.kind);
                inner.finish(&record, JobState::Failed, &message).await;
                return;
            };
            let mut job = LeasedJob {
                store: inner.store.clone(),
                owner: inner.owner.clone(),
                lease,
                record,
            };
            if job.record.last_error.is_empty() {
                tracing::info!(job = id, kind = %job.record.kind, done = job.record.done, "job running");
            }
            let result = tokio::select! {
                r = handler.run(&mut job) => r,
                () = Self::heartbeat(inner, id) => Err(JobError::LeaseLost),
            };
            match result {
                Ok(()) => {
                    inner.finish(&job.record, JobState::Done, "").await;
                    return;
                }
                Err(JobError::Permanent(message)) => {
                    inner.finish(&job.record, JobState::Failed, &message).await;
                    return;
                }
                Err(JobError::LeaseLost) => {
                    tracing::warn!(job = id, "job lease lost to another process; stopping here");
                    return;
                }
                Err(JobError::Transient(message)) => {
                    tracing::warn!(job = id, error = %message, retry_in = ?backoff, "job failed; retrying");
                    let checkpoint = JobCheckpoint {
                        done: job.record.done,
                        total: job.record.total,
                        cursor: job.record.cursor.clone(),
                        last_error: message,
                    };
                    if let Err(JobError::LeaseLost) = job.write(checkpoint).await {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Renews the lease every third of its length; returns when it is lost.
    async fn heartbeat(inner: &Arc<Self>, id: &str) {
        let every = inner.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match inner
                .store
                .renew_job_lease(id, &inner.owner, lease_until(inner.settings.lease))
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                // The store is away; the job's own writes will fail too.
                Err(e) => tracing::warn!(job = id, error = %e, "cannot renew job lease"),
            }
        }
    }

    /// Ends a job: its audit record first (a job whose end cannot be
    /// recorded is not ended, so it runs again), then its state; each write
    /// is retried while the store cannot take it.
    async fn finish(&self, job: &JobRecord, state: JobState, message: &str) {
        let done = state == JobState::Done;
        let detail = if message.is_empty() {
            format!("job {}: {} of {}", job.id, job.done, job.total)
        } else {
            format!("job {}: {message}", job.id)
        };
        let entry = AuditEntry {
            at_ms: crate::keys::unix_ms(),
            principal: "gateway".into(),
            action: format!("{}_{}", job.kind, if done { "done" } else { "failed" }),
            pseudonym: job.pseudonym,
            outcome: if done { "ok" } else { "failed" }.into(),
            detail,
        };
        let mut backoff = FIRST_BACKOFF;
        while let Err(e) = self.store.audit(&entry).await {
            tracing::warn!(job = %job.id, error = %e, "cannot record job end in the audit trail; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self
                .store
                .finish_job(&job.id, &self.owner, state, message)
                .await
            {
                Ok(true) => break,
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(job = %job.id, error = %e, "cannot record job end; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if done {
            tracing::info!(target: "sealgate::audit", job = %job.id, kind = %job.kind, done = job.done, "job done");
        } else {
            tracing::error!(target: "sealgate::audit", job = %job.id, kind = %job.kind, error = %message, "job failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::keys::sqlite::SqliteKeyStore;
    use crate::keys::store::NewJob;

    const KIND: &str = "test_job";

    fn settings() -> JobSettings {
        JobSettings {
            lease: Duration::from_secs(2),
            poll: Duration::from_millis(100),
        }
    }

    async fn store(dir: &std::path::Path) -> Arc<dyn KeyStore> {
        Arc::new(
            SqliteKeyStore::open(&dir.join(crate::keys::sqlite::FILE_NAME))
                .await
                .unwrap(),
        )
    }

    async fn new_job(store: &dyn KeyStore) -> String {
        let id = crate::names::random_id();
        store
            .create_job(
                &NewJob {
                    id: id.clone(),
                    kind: KIND.into(),
                    pseudonym: None,
                    params: "p".into(),
                },
                false,
            )
            .await
            .unwrap();
        id
    }

    async fn ended(store: &dyn KeyStore, id: &str) -> JobRecord {
        for _ in 0..500 {
            let job = store.job(id).await.unwrap().unwrap();
            if matches!(job.state, JobState::Done | JobState::Failed) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {id} did not end");
    }

    /// Fails `transient` times from 4 on, then counts to 10 in checkpoints of 2,
    /// resuming from the cursor.
    struct Counting {
        transient: AtomicUsize,
        runs: AtomicUsize,
        permanent: bool,
    }

    #[async_trait]
    impl JobHandler for Counting {
        async fn run(&self, job: &mut LeasedJob) -> Result<(), JobError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if self.permanent {
                return Err(JobError::Permanent("bad parameters".into()));
            }
            let mut at: u64 = job.record().cursor.parse().unwrap_or(0);
            while at < 10 {
                at += 2;
                job.checkpoint(at, 10, &at.to_string()).await?;
                if at >= 4
                    && self
                        .transient
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    return Err(JobError::Transient("store away".into()));
                }
            }
            Ok(())
        }
    }

    fn counting(transient: usize, permanent: bool) -> Arc<Counting> {
        Arc::new(Counting {
            transient: AtomicUsize::new(transient),
            runs: AtomicUsize::new(0),
            permanent,
        })
    }

    #[tokio::test]
    async fn transient_errors_retry_from_the_checkpoint_and_permanent_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let handler = counting(2, false);
        let runner = JobRunner::builder(store.clone(), settings())
            .handler(KIND, handler.clone())
            .start();
        let id = new_job(&*store).await;
        runner.schedule(&id);
        let job = ended(&*store, &id).await;
        assert_eq!(job.state, JobState::Done, "{job:?}");
        assert_eq!((job.done, job.total), (10, 10));
        assert_eq!(job.owner, None, "the lease is released at the end");
        assert_eq!(handler.runs.load(Ordering::SeqCst), 3, "two retries");

        let failing = counting(0, true);
        let runner = JobRunner::builder(store.clone(), settings())
            .handler(KIND, failing.clone())
            .start();
        let id = new_job(&*store).await;
        runner.schedule(&id);
        let job = ended(&*store, &id).await;
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.last_error, "bad parameters");
        assert_eq!(failing.runs.load(Ordering::SeqCst), 1, "never retried");
    }

    #[tokio::test]
    async fn an_unknown_kind_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let runner = JobRunner::builder(store.clone(), settings()).start();
        let id = new_job(&*store).await;
        runner.schedule(&id);
        let job = ended(&*store, &id).await;
        assert_eq!(job.state, JobState::Failed);
        assert!(job.last_error.contains("no handler"), "{job:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_lease_among_racing_owners_and_takeover_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let id = new_job(&*store).await;
        let now = unix_ms();
        let claims: Vec<_> = (0..8)
            .map(|i| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    store
                        .claim_job(&id, &format!("owner-{i}"), now, now + 60_000)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut winners = Vec::new();
        for c in claims {
            if let Some(job) = c.await.unwrap() {
                winners.push(job.owner.unwrap());
            }
        }
        assert_eq!(winners.len(), 1, "exactly one owner: {winners:?}");
        let winner = &winners[0];
        let progress = JobCheckpoint {
            done: 1,
            total: 2,
            cursor: "c".into(),
            last_error: String::new(),
        };
        assert!(!store
            .checkpoint_job(&id, "intruder", &progress, now + 60_000)
            .await
            .unwrap());
        assert!(store
            .checkpoint_job(&id, winner, &progress, now + 60_000)
            .await
            .unwrap());
        // Before the lease ends nobody else gets it; after, another does, and
        // the first owner's writes are refused from then on.
        assert!(store
            .claim_job(&id, "late", now + 1, now + 2)
            .await
            .unwrap()
            .is_none());
        let taken = store
            .claim_job(&id, "successor", now + 60_001, now + 120_000)
            .await
            .unwrap()
            .expect("an expired lease is taken over");
        assert_eq!((taken.done, taken.cursor.as_str()), (1, "c"));
        assert!(!store
            .finish_job(&id, winner, JobState::Done, "")
            .await
            .unwrap());
        assert!(store
            .finish_job(&id, "successor", JobState::Done, "")
            .await
            .unwrap());
    }
}
