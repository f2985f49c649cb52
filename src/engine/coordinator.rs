//! The coordinator actor: the one place where new work and finished work
//! become records. It queues blobs (persisting the jobs before any worker
//! can see them), records each job's outcome with its replica in one
//! transaction, emits events, keeps the leases of this process alive, and
//! knows when no work is left.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use super::event::{Event, StoreMethod};
use crate::blob::LocalBlob;
use crate::blossom::ServerUrl;
use crate::store::{self, ClaimedJob, Enqueued, JobOutcome, Retry, Store, Strategy};

/// How often the count of open jobs is re-read from the database, to see
/// work that other processes finished or added.
const RECOUNT_INTERVAL: Duration = Duration::from_secs(2);

/// Mailbox depth: enough to absorb a burst of finished jobs from every
/// worker without making them wait on each other.
const MAILBOX: usize = 256;

/// Most outcomes recorded in one transaction.
const MAX_BATCH: usize = 128;

/// A finished job waiting to be recorded, and who to tell when it is.
type Finished = (ClaimedJob, ServerUrl, JobOutcome, oneshot::Sender<()>);

pub(crate) enum CoordinatorMsg {
    Enqueue {
        blobs: Vec<LocalBlob>,
        retry: Retry,
        respond_to: oneshot::Sender<Result<Enqueued, store::Error>>,
    },
    /// Jobs were queued behind the coordinator's back: count again, wake
    /// the workers.
    Refresh { respond_to: oneshot::Sender<()> },
    Finished {
        job: Box<ClaimedJob>,
        server: ServerUrl,
        outcome: JobOutcome,
        respond_to: oneshot::Sender<()>,
    },
}

/// What the coordinator is built from.
pub(crate) struct CoordinatorParts {
    pub(crate) store: Store,
    pub(crate) servers: Vec<ServerUrl>,
    /// One wake-up per server worker, in the order of `servers`.
    pub(crate) wakers: Vec<Arc<Notify>>,
    pub(crate) owner: Arc<str>,
    pub(crate) lease: Duration,
    pub(crate) strategy: Strategy,
    /// Copies a blob needs to count as safe.
    pub(crate) min_copies: u32,
    pub(crate) events: broadcast::Sender<Event>,
    /// Set when a record could not be written; the engine stops then.
    pub(crate) fatal: Arc<Mutex<Option<String>>>,
    pub(crate) on_fatal: tokio_util::sync::CancellationToken,
}

/// A cloneable handle to the coordinator. The actor stops when the last
/// handle is dropped and its mailbox is empty.
#[derive(Clone)]
pub(crate) struct CoordinatorHandle {
    tx: mpsc::Sender<CoordinatorMsg>,
}

/// The coordinator has stopped; nothing more can be recorded.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the replication engine has stopped")]
pub(crate) struct Stopped;

impl CoordinatorHandle {
    /// Starts the actor. The watch carries the number of open jobs.
    pub(crate) fn spawn(
        parts: CoordinatorParts,
        tracker: &TaskTracker,
    ) -> (Self, watch::Receiver<u64>) {
        let (tx, rx) = mpsc::channel(MAILBOX);
        let (open_tx, open_rx) = watch::channel(u64::MAX);
        let actor = CoordinatorActor { rx, parts, open: 0, open_tx };
        tracker.spawn(actor.run());
        (Self { tx }, open_rx)
    }

    pub(crate) async fn enqueue(
        &self,
        blobs: Vec<LocalBlob>,
        retry: Retry,
    ) -> Result<Result<Enqueued, store::Error>, Stopped> {
        let (respond_to, response) = oneshot::channel();
        self.tx
            .send(CoordinatorMsg::Enqueue { blobs, retry, respond_to })
            .await
            .map_err(|_| Stopped)?;
        response.await.map_err(|_| Stopped)
    }

    /// Tells the coordinator that jobs were queued directly in the store.
    pub(crate) async fn wake_all(&self) {
        let (respond_to, response) = oneshot::channel();
        if self.tx.send(CoordinatorMsg::Refresh { respond_to }).await.is_ok() {
            let _done = response.await;
        }
    }

    /// Reports a job's outcome and waits until it is recorded (or could not
    /// be: then the lease runs out and the job is done again, which the
    /// existence check makes cheap).
    pub(crate) async fn finished(&self, job: ClaimedJob, server: ServerUrl, outcome: JobOutcome) {
        let (respond_to, response) = oneshot::channel();
        let msg = CoordinatorMsg::Finished { job: Box::new(job), server, outcome, respond_to };
        if self.tx.send(msg).await.is_ok() {
            let _recorded = response.await;
        }
    }
}

struct CoordinatorActor {
    rx: mpsc::Receiver<CoordinatorMsg>,
    parts: CoordinatorParts,
    /// Open jobs as last counted, adjusted by what passed through here.
    open: u64,
    open_tx: watch::Sender<u64>,
}

impl CoordinatorActor {
    async fn run(mut self) {
        self.recount().await;
        let mut renew = tokio::time::interval(self.parts.lease / 3);
        let mut recount = tokio::time::interval(RECOUNT_INTERVAL);
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(CoordinatorMsg::Finished { job, server, outcome, respond_to }) => {
                        self.record_batch(vec![(*job, server, outcome, respond_to)]).await;
                    }
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                _ = renew.tick() => self.renew_leases().await,
                _ = recount.tick() => self.recount().await,
            }
        }
        tracing::debug!("coordinator stopped");
    }

    async fn handle(&mut self, msg: CoordinatorMsg) {
        match msg {
            CoordinatorMsg::Enqueue { blobs, retry, respond_to } => {
                let result = self
                    .parts
                    .store
                    .enqueue(&blobs, &self.parts.servers, self.parts.strategy, retry)
                    .await;
                if let Ok(enqueued) = &result {
                    self.open += enqueued.jobs;
                    self.publish_open();
                    self.parts.wakers.iter().for_each(|w| w.notify_one());
                }
                let _ = respond_to.send(result);
            }
            CoordinatorMsg::Refresh { respond_to } => {
                self.recount().await;
                self.parts.wakers.iter().for_each(|w| w.notify_one());
                let _ = respond_to.send(());
            }
            CoordinatorMsg::Finished { job, server, outcome, respond_to } => {
                self.record_batch(vec![(*job, server, outcome, respond_to)]).await;
            }
        }
    }

    /// Records `first` and every other outcome already waiting in the
    /// mailbox, in one transaction: under load many jobs finish while one
    /// commit is under way, and each commit costs more than its statements.
    async fn record_batch(&mut self, mut batch: Vec<Finished>) {
        let mut other = None;
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(CoordinatorMsg::Finished { job, server, outcome, respond_to }) => {
                    batch.push((*job, server, outcome, respond_to));
                }
                Ok(msg) => {
                    other = Some(msg);
                    break;
                }
                Err(_) => break,
            }
        }
        let finished: Vec<_> =
            batch.iter().map(|(job, server, outcome, _)| (job, server, outcome)).collect();
        let recorded = self
            .parts
            .store
            .finish_many(&finished, &self.parts.owner, Some(&self.parts.servers))
            .await;
        match recorded {
            Ok(recorded) => {
                if recorded.iter().any(|r| r.released > 0) {
                    // Jobs that waited for a holder can run now.
                    self.parts.wakers.iter().for_each(|w| w.notify_one());
                }
                for ((job, server, outcome, respond_to), recorded) in
                    batch.into_iter().zip(recorded)
                {
                    self.recorded(job, server, outcome, recorded.progress).await;
                    let _ = respond_to.send(());
                }
            }
            Err(e) => self.fail(e),
        }
        if let Some(msg) = other {
            Box::pin(self.handle(msg)).await;
        }
    }

    async fn recorded(
        &mut self,
        job: ClaimedJob,
        server: ServerUrl,
        outcome: JobOutcome,
        progress: store::BlobProgress,
    ) {
        let sha256 = job.blob.sha256;
        let event = match outcome {
            JobOutcome::Stored { method, bytes_sent, .. } => {
                let method = StoreMethod::from_name(method).unwrap_or(StoreMethod::Uploaded);
                tracing::debug!(%server, blob = %sha256, method = method.as_str(), bytes_sent, "replica stored");
                Some(Event::ReplicaStored { sha256, server, method, bytes_sent })
            }
            JobOutcome::Retry { run_at, reason, .. } => {
                let wait = run_at.duration_since(SystemTime::now()).unwrap_or_default();
                tracing::warn!(%server, blob = %sha256, attempt = job.attempt, retry_in = ?wait, %reason, "attempt failed; will retry");
                Some(Event::ReplicaRetrying {
                    sha256,
                    server,
                    attempt: job.attempt,
                    retry_at: run_at,
                    reason,
                })
            }
            JobOutcome::Failed { status, reason, .. }
            | JobOutcome::GaveUp { status, reason, .. } => {
                tracing::error!(%server, blob = %sha256, status, %reason, "giving up on this replica");
                Some(Event::ReplicaFailed { sha256, server, status, reason })
            }
            JobOutcome::Released => None,
        };
        let settles =
            matches!(event, Some(Event::ReplicaStored { .. } | Event::ReplicaFailed { .. }));
        if let Some(event) = event {
            let _no_listeners = self.parts.events.send(event);
        }
        if !settles {
            return;
        }
        if progress.is_settled() {
            // Debug, not info: an archive run settles many thousands of blobs,
            // and the progress bars and summary already tell the story.
            tracing::debug!(blob = %sha256, stored = progress.stored, failed = progress.failed, "blob settled");
            let min_copies = self.parts.min_copies;
            if progress.stored < min_copies {
                tracing::warn!(blob = %sha256, stored = progress.stored, min_copies, "blob has fewer copies than asked for");
                let below =
                    Event::BlobBelowMinCopies { sha256, stored: progress.stored, min_copies };
                let _no_listeners = self.parts.events.send(below);
            }
            let settled =
                Event::BlobSettled { sha256, stored: progress.stored, failed: progress.failed };
            let _no_listeners = self.parts.events.send(settled);
        }
        self.open = self.open.saturating_sub(1);
        if self.open == 0 {
            self.recount().await;
        } else {
            self.publish_open();
        }
    }

    async fn recount(&mut self) {
        match self.parts.store.open_jobs(&self.parts.servers).await {
            Ok(open) => {
                self.open = open;
                self.publish_open();
            }
            Err(e) => tracing::warn!(error = %e, "cannot count open jobs"),
        }
    }

    async fn renew_leases(&mut self) {
        let until = SystemTime::now() + self.parts.lease;
        if let Err(e) = self.parts.store.renew_leases(&self.parts.owner, until).await {
            tracing::warn!(error = %e, "cannot renew leases");
        }
    }

    fn publish_open(&self) {
        self.open_tx.send_replace(self.open);
    }

    /// A record could not be written: stop the engine rather than go on
    /// doing work that cannot be recorded.
    fn fail(&mut self, error: store::Error) {
        tracing::error!(error = %error, "cannot record replication state; stopping");
        let mut fatal = self.parts.fatal.lock().unwrap_or_else(|e| e.into_inner());
        fatal.get_or_insert_with(|| error.to_string());
        self.parts.on_fatal.cancel();
        self.open_tx.send_replace(0);
    }
}
