//! A server worker: one actor per target server. It claims that server's
//! jobs from the queue under a lease, runs each through the server's rate
//! limiter and in-flight limit, asks `HEAD /<sha256>` before sending any
//! bytes, uploads what is missing, and reports every outcome to the
//! coordinator. Transient failures go back to the queue with their next run
//! time, so backoff survives a restart.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::circuit::{Allowance, Circuit};
use super::coordinator::CoordinatorHandle;
use super::event::{Event, StoreMethod};
use crate::blob::{LocalBlob, Sha256};
use crate::blossom::{
    self, Endpoint, ErrorClass, MAX_BATCH_HASHES, Presence, ServerClient, TokenEncoding,
    UploadReceipt,
};
use crate::config::{RetryPolicy, ServerConfig};
use crate::store::{ClaimedJob, JobOutcome, ServerTraits, Store, Strategy};

/// The longest a worker sleeps without looking at the queue, so that jobs
/// queued by other processes are picked up.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// What a worker is built from.
pub(crate) struct WorkerParts {
    pub(crate) config: ServerConfig,
    pub(crate) client: ServerClient,
    pub(crate) store: Store,
    pub(crate) coordinator: CoordinatorHandle,
    pub(crate) owner: Arc<str>,
    pub(crate) retry: RetryPolicy,
    pub(crate) lease: Duration,
    /// What earlier runs learned about the server.
    pub(crate) traits: ServerTraits,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) strategy: Strategy,
    pub(crate) wake: Arc<Notify>,
    /// Stop claiming new jobs.
    pub(crate) stop: CancellationToken,
    /// Cut requests in flight and hand their jobs back.
    pub(crate) abort: CancellationToken,
}

/// Handle to a server worker. The worker wakes up when new jobs are
/// queued and stops when its stop token is cancelled.
pub(crate) struct WorkerHandle;

impl WorkerHandle {
    pub(crate) fn spawn(parts: WorkerParts, tracker: &TaskTracker) -> Self {
        let traits = parts.traits;
        let retry = parts.retry;
        if traits.batch_tokens_refused {
            parts.client.refuse_batch_tokens();
        }
        let shared = Arc::new(Shared {
            encoding: Mutex::new(traits.token_encoding.unwrap_or(parts.config.token_encoding)),
            encoding_confirmed: AtomicBool::new(traits.token_encoding.is_some()),
            strategy: parts.strategy,
            mirror_unsupported: AtomicBool::new(traits.mirror_unsupported),
            preflight_unsupported: AtomicBool::new(traits.preflight_unsupported),
            refused_size: AtomicU64::new(traits.refused_size.unwrap_or(u64::MAX)),
            largest_accepted: AtomicU64::new(0),
            batch_refusal_saved: AtomicBool::new(traits.batch_tokens_refused),
            circuit: Circuit::new(retry.circuit_failures, retry.circuit_cooldown, retry.max_delay),
            events: parts.events,
            limiter: rate_limiter(&parts.config),
            config: parts.config,
            client: parts.client,
            store: parts.store,
            coordinator: parts.coordinator,
            owner: parts.owner,
            retry: parts.retry,
            lease: parts.lease,
            stop: parts.stop.clone(),
            abort: parts.abort,
        });
        let semaphore = Arc::new(Semaphore::new(shared.config.max_in_flight.get()));
        let actor = WorkerActor {
            shared,
            semaphore,
            wake: parts.wake,
            stop: parts.stop,
            tasks: JoinSet::new(),
        };
        let span = tracing::info_span!("worker", server = %actor.shared.config.url);
        tracker.spawn(actor.run().instrument(span));
        Self
    }
}

struct WorkerActor {
    shared: Arc<Shared>,
    semaphore: Arc<Semaphore>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    /// Jobs in flight, one task each.
    tasks: JoinSet<()>,
}

/// What the worker's job tasks share.
struct Shared {
    config: ServerConfig,
    client: ServerClient,
    store: Store,
    coordinator: CoordinatorHandle,
    owner: Arc<str>,
    retry: RetryPolicy,
    lease: Duration,
    limiter: DefaultDirectRateLimiter,
    /// The token encoding the server accepts, as far as we know.
    encoding: Mutex<TokenEncoding>,
    /// The server accepted a token of ours in `encoding` (now or earlier).
    encoding_confirmed: AtomicBool,
    strategy: Strategy,
    /// The server answered `/mirror` as not implemented.
    mirror_unsupported: AtomicBool,
    /// The server answered `HEAD /upload` as not implemented (B02).
    preflight_unsupported: AtomicBool,
    /// The smallest body it refused as too large, or `u64::MAX` (B07).
    refused_size: AtomicU64,
    /// The largest body it took in this run.
    largest_accepted: AtomicU64,
    /// Its refusal of batch tokens is in the store.
    batch_refusal_saved: AtomicBool,
    circuit: Circuit,
    events: broadcast::Sender<Event>,
    stop: CancellationToken,
    abort: CancellationToken,
}

impl WorkerActor {
    async fn run(mut self) {
        loop {
            if self.stop.is_cancelled() {
                if self.tasks.join_next().await.is_none() {
                    break;
                }
                continue;
            }
            let wait = self.fill().await;
            tokio::select! {
                _ = self.stop.cancelled() => {}
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "job task failed");
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::debug!("worker stopped");
    }

    /// Claims as many due jobs as there are free slots and starts them.
    /// Returns how long to wait before looking again if nothing happens.
    async fn fill(&mut self) -> Duration {
        let mut free = self.semaphore.available_permits();
        if free == 0 {
            return POLL_INTERVAL;
        }
        let shared = self.shared.clone();
        let now = tokio::time::Instant::now();
        let probe = match shared.circuit.allowance(now) {
            Allowance::All => false,
            Allowance::Probe => {
                free = 1;
                true
            }
            Allowance::Paused(until) => return until - now,
        };
        let lease_until = SystemTime::now() + shared.lease;
        let limit = u32::try_from(free).unwrap_or(u32::MAX);
        let claimed = shared
            .store
            .claim(&shared.config.url, &shared.owner, limit, lease_until, shared.retry.max_attempts)
            .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "cannot claim jobs");
                if probe {
                    shared.circuit.probe_inconclusive();
                }
                return Duration::from_secs(1);
            }
        };
        if probe && jobs.is_empty() {
            shared.circuit.probe_inconclusive();
        }
        shared.prepare_tokens(&jobs).await;
        if jobs.len() == free && !probe {
            self.start_all(jobs, false);
            return Duration::ZERO;
        }
        let claimed_any = !jobs.is_empty();
        self.start_all(jobs, probe);
        if claimed_any {
            return POLL_INTERVAL;
        }
        match shared.store.next_due(&shared.config.url).await {
            Ok(Some(due)) => {
                due.duration_since(SystemTime::now()).unwrap_or_default().min(POLL_INTERVAL)
            }
            Ok(None) => POLL_INTERVAL,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the queue");
                Duration::from_secs(1)
            }
        }
    }

    fn start_all(&mut self, jobs: Vec<ClaimedJob>, probe: bool) {
        for job in jobs {
            let permit = self
                .semaphore
                .clone()
                .try_acquire_owned()
                .expect("claimed no more than free slots");
            self.tasks.spawn(self.shared.clone().process(job, permit, probe));
        }
    }
}

impl Shared {
    /// With `batch_tokens`: when a claimed job has no token signed ahead,
    /// signs one upload token for it, the other claimed jobs without one,
    /// and the jobs due next, up to [`MAX_BATCH_HASHES`] blobs. Each job's
    /// upload or mirror takes it instead of signing its own, so a bulk run
    /// signs once per batch, however few jobs each claim returns.
    async fn prepare_tokens(&self, jobs: &[ClaimedJob]) {
        if !self.config.batch_tokens || self.client.batch_tokens_refused() {
            return;
        }
        let mut blobs: Vec<(Sha256, u64)> = jobs
            .iter()
            .filter(|job| !self.client.has_batch_token(&job.blob.sha256))
            .map(|job| (job.blob.sha256, job.blob.size))
            .collect();
        if blobs.is_empty() {
            return;
        }
        let room = u32::try_from(MAX_BATCH_HASHES.saturating_sub(blobs.len())).unwrap_or(0);
        match self.store.upcoming(&self.config.url, room).await {
            Ok(next) => blobs
                .extend(next.into_iter().filter(|(hash, _)| !self.client.has_batch_token(hash))),
            Err(e) => tracing::debug!(error = %e, "cannot read the jobs due next"),
        }
        match self.client.prepare_upload_tokens(&blobs).await {
            Ok(tokens) => tracing::debug!(tokens, blobs = blobs.len(), "signed batch tokens"),
            Err(e) => tracing::warn!(error = %e, "cannot sign a batch token; signing per request"),
        }
    }

    async fn process(self: Arc<Self>, job: ClaimedJob, _permit: OwnedSemaphorePermit, probe: bool) {
        let span = tracing::debug_span!("job", blob = %job.blob.sha256, job = job.id, attempt = job.attempt);
        async move {
            let sent = Arc::new(AtomicU64::new(0));
            let uploading = AtomicBool::new(false);
            // At a stop, a job that has not begun sending its body is
            // handed back at once; an upload under way gets the grace
            // period, after which `abort` cuts it too.
            let stopped_before_upload = async {
                self.stop.cancelled().await;
                if uploading.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
            };
            let outcome = tokio::select! {
                result = self.replicate(&job, &sent, &uploading) => {
                    self.watch_health(&result, probe);
                    self.outcome(&job, result, sent.load(Ordering::Relaxed)).await
                }
                () = stopped_before_upload => JobOutcome::Released,
                () = self.abort.cancelled() => {
                    if uploading.load(Ordering::SeqCst) {
                        // The server may have the whole body: count the
                        // attempt, so the next one asks HEAD first.
                        JobOutcome::Retry {
                            run_at: SystemTime::now(),
                            status: None,
                            reason: "cut by the shutdown while sending".to_owned(),
                            bytes_sent: sent.load(Ordering::Relaxed),
                        }
                    } else {
                        JobOutcome::Released
                    }
                }
            };
            if probe && matches!(outcome, JobOutcome::Released) {
                self.circuit.probe_inconclusive();
            }
            self.coordinator.finished(job, self.config.url.clone(), outcome).await;
        }
        .instrument(span)
        .await
    }

    /// One attempt: skip when the server has the blob; else, with the
    /// mirror strategy and a server that holds it, ask for a mirror; else
    /// upload it, from the local file or relayed from a holder.
    async fn replicate(
        &self,
        job: &ClaimedJob,
        sent: &Arc<AtomicU64>,
        uploading: &AtomicBool,
    ) -> Attempt {
        let blob = &job.blob;
        if job.replace {
            // The server serves wrong bytes under this hash, and servers keep
            // what they have when the same hash is uploaded again: remove it
            // first, and do not take its word that it has the blob.
            self.limiter.until_ready().await;
            let encoding = self.encoding();
            self.client.delete(&blob.sha256, encoding).await?;
            tracing::info!("deleted a wrong copy; sending the blob again");
        }
        // Holders are looked up only when they are needed: to mirror from,
        // to know whether the blob will be uploaded here, or when the local
        // copy is unusable.
        let mirroring =
            self.strategy == Strategy::Mirror && !self.mirror_unsupported.load(Ordering::Relaxed);
        let wants_preflight = !job.replace && self.wants_preflight(blob);
        let mut holders =
            if mirroring && wants_preflight { Some(self.holders(blob).await) } else { None };
        // A blob that will be uploaded here, not mirrored, is announced
        // (`HEAD /upload`) together with the existence check: one round
        // trip instead of two. Wasted only when the server has the blob.
        let early_preflight = wants_preflight && holders.as_ref().is_none_or(Vec::is_empty);

        // Asked on every attempt, the first included: the blob may be there
        // from another run, another machine or another tool, and a HEAD is
        // cheaper than a body the server already has.
        let (presence, preflight) = if job.replace {
            (Ok(Presence::Absent), None)
        } else if early_preflight {
            self.limiter.until_ready().await;
            self.limiter.until_ready().await;
            let encoding = self.encoding();
            let (presence, preflight) = tokio::join!(
                self.client.has_blob(&blob.sha256, encoding),
                self.client.upload_preflight(blob, encoding)
            );
            (presence, Some(preflight))
        } else {
            self.limiter.until_ready().await;
            (self.client.has_blob(&blob.sha256, self.encoding()).await, None)
        };
        match presence {
            Ok(Presence::Present { size }) if size.is_none_or(|s| s == blob.size) => {
                tracing::debug!("server already holds the blob; nothing sent");
                let url = format!("{}/{}", self.client.server(), blob.sha256);
                return Ok(Stored {
                    method: StoreMethod::AlreadyPresent,
                    url: Some(url),
                    status: 200,
                });
            }
            Ok(Presence::Present { size }) => {
                tracing::warn!(
                    reported = size,
                    expected = blob.size,
                    "server reports another size for this hash; sending it again"
                );
            }
            Ok(Presence::Absent) => {}
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "existence check refused; going on"),
        }

        if mirroring && holders.is_none() {
            holders = Some(self.holders(blob).await);
        }
        if let Some(found) = holders.as_deref()
            && let Some(stored) = self.mirror(blob, found).await?
        {
            return Ok(stored);
        }

        self.check_size(blob)?;
        self.preflight(blob, preflight).await?;
        self.limiter.until_ready().await;
        uploading.store(true, Ordering::SeqCst);
        if !blob.path.as_os_str().is_empty() {
            match self
                .with_reauth(|encoding| self.client.upload(blob, encoding, sent.clone()))
                .await
            {
                Ok(receipt) => return Ok(self.accepted(blob, &receipt)),
                Err(e) if e.is_source_error() => {
                    let found = match holders.take() {
                        Some(found) => found,
                        None => self.holders(blob).await,
                    };
                    if found.is_empty() {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "local copy unusable; relaying from a server that holds the blob");
                    holders = Some(found);
                }
                Err(e) => return Err(self.refused(blob, e).await),
            }
        }
        let holders = match holders {
            Some(found) => found,
            None => self.holders(blob).await,
        };
        match self.relay(blob, &holders, sent).await {
            Ok(stored) => Ok(stored),
            Err(e) => Err(self.refused(blob, e).await),
        }
    }

    /// A stored upload; notes its size as one the server takes.
    fn accepted(&self, blob: &LocalBlob, receipt: &UploadReceipt) -> Stored {
        self.largest_accepted.fetch_max(blob.size, Ordering::Relaxed);
        Stored::uploaded(receipt)
    }

    /// Learns from a failed upload: a 413 sets the size limit.
    async fn refused(&self, blob: &LocalBlob, error: blossom::Error) -> blossom::Error {
        if error.status() == Some(413) {
            self.learn_refused_size(blob.size).await;
        }
        error
    }

    async fn learn_refused_size(&self, size: u64) {
        if self.refused_size.fetch_min(size, Ordering::Relaxed) > size {
            tracing::info!(
                size,
                "server refuses bodies this large; larger blobs will not be sent to it"
            );
            if let Err(e) = self.store.set_refused_size(&self.config.url, size).await {
                tracing::warn!(error = %e, "cannot remember the size limit");
            }
        }
    }

    /// Refuses to send a blob at least as large as one the server refused
    /// as too large before (field case B07).
    fn check_size(&self, blob: &LocalBlob) -> Result<(), blossom::Error> {
        let refused = self.refused_size.load(Ordering::Relaxed);
        if blob.size < refused {
            return Ok(());
        }
        let url = self.client.server().endpoint("upload").to_string();
        Err(blossom::Error::TooLarge { url, size: blob.size, refused })
    }

    /// `HEAD /upload` before a large body (BUD-06, field case B02). Only a
    /// definite refusal (payment, size, type) stops the upload; a server
    /// that does not implement it, or answers it badly, is remembered and
    /// not asked again.
    ///
    /// `asked` is the answer when the preflight already went out beside the
    /// existence check.
    async fn preflight(
        &self,
        blob: &LocalBlob,
        asked: Option<Result<(), blossom::Error>>,
    ) -> Result<(), blossom::Error> {
        let answer = match asked {
            Some(answer) => answer,
            None if !self.wants_preflight(blob) => return Ok(()),
            None => {
                self.limiter.until_ready().await;
                self.client.upload_preflight(blob, self.encoding()).await
            }
        };
        let Err(error) = answer else {
            return Ok(());
        };
        let unsupported = error.class() == ErrorClass::Unsupported
            || error.status() == Some(400)
            || matches!(error, blossom::Error::Transport { .. });
        match error.status() {
            Some(402 | 415) => Err(error),
            Some(413) => {
                self.learn_refused_size(blob.size).await;
                Err(error)
            }
            // Auth is sorted out by the upload itself, and a busy server
            // will say so again there.
            _ if !unsupported => Ok(()),
            _ => {
                tracing::info!(error = %error, "server does not implement HEAD /upload; uploading without asking first from now on");
                self.preflight_unsupported.store(true, Ordering::Relaxed);
                if let Err(e) = self.store.set_preflight_unsupported(&self.config.url).await {
                    tracing::warn!(error = %e, "cannot remember that HEAD /upload is unsupported");
                }
                Ok(())
            }
        }
    }

    /// Whether an upload of `blob` is announced first: large enough, to a
    /// server that has the preflight and has not refused this size.
    fn wants_preflight(&self, blob: &LocalBlob) -> bool {
        blob.size >= self.config.preflight_min_size
            && blob.size < self.refused_size.load(Ordering::Relaxed)
            && !self.preflight_unsupported.load(Ordering::Relaxed)
    }

    /// Feeds the circuit breaker: successes close it, transient failures of
    /// the server (not of our file, not refusals) count towards opening it.
    fn watch_health(&self, result: &Attempt, probe: bool) {
        match result {
            Ok(_) => {
                if self.circuit.success() {
                    tracing::info!("server answers again; resuming");
                    let _ =
                        self.events.send(Event::ServerResumed { server: self.config.url.clone() });
                }
            }
            Err(error) if error.is_transient() => {
                let now = tokio::time::Instant::now();
                let Some(opened) = self.circuit.failure(now, error.retry_after()) else {
                    return;
                };
                tracing::warn!(
                    pause = ?opened.pause,
                    failures = opened.failures,
                    error = %error,
                    "pausing this server; the others go on"
                );
                let _ = self.events.send(Event::ServerPaused {
                    server: self.config.url.clone(),
                    until: SystemTime::now() + opened.pause,
                    failures: opened.failures,
                    reason: error.to_string(),
                });
            }
            Err(_) if probe => self.circuit.probe_inconclusive(),
            Err(_) => {}
        }
    }

    /// Asks the server to fetch the blob from each holder in turn. `None`
    /// means: upload instead (mirror not implemented, refused in a way an
    /// upload may not be, or every holder failed). Refusals that an upload
    /// would meet too (payment, size, type) and transient failures end the
    /// attempt.
    async fn mirror(
        &self,
        blob: &LocalBlob,
        holders: &[Source],
    ) -> Result<Option<Stored>, blossom::Error> {
        for holder in holders {
            self.limiter.until_ready().await;
            let result =
                self.with_reauth(|encoding| self.client.mirror(&holder.url, blob, encoding)).await;
            let error = match result {
                Ok(receipt) => {
                    let status = if receipt.created { 201 } else { 200 };
                    return Ok(Some(Stored {
                        method: StoreMethod::Mirrored,
                        url: receipt.descriptor.url,
                        status,
                    }));
                }
                Err(error) => error,
            };
            match (error.class(), error.status()) {
                (ErrorClass::Unsupported, _) => {
                    self.learn_no_mirror().await;
                    return Ok(None);
                }
                (ErrorClass::Transient, Some(502)) => {
                    tracing::debug!(source = %holder.url, error = %error, "server could not fetch from this holder");
                }
                (ErrorClass::Transient, _) => return Err(error),
                (ErrorClass::Permanent, Some(402 | 413 | 415)) => return Err(error),
                _ => {
                    tracing::debug!(error = %error, "mirror refused; uploading instead");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Downloads the blob from a holder and uploads it here, verifying the
    /// hash while streaming; a holder serving wrong bytes is skipped.
    async fn relay(&self, blob: &LocalBlob, holders: &[Source], sent: &Arc<AtomicU64>) -> Attempt {
        let mut last = None;
        for holder in holders {
            let result = self
                .with_reauth(|encoding| {
                    self.client.upload_from(&holder.url, blob, encoding, sent.clone())
                })
                .await;
            match result {
                Ok(receipt) => return Ok(self.accepted(blob, &receipt)),
                // The holder failed us, not this server: try the next one.
                Err(e)
                    if matches!(e, blossom::Error::WrongBytes { .. })
                        || e.endpoint() == Some(Endpoint::GetBlob) =>
                {
                    tracing::warn!(source = %holder.url, error = %e, "cannot relay from this holder");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            let source = std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no local copy, and no server holds the blob",
            );
            blossom::Error::Source { path: blob.path.clone(), source }
        }))
    }

    /// Servers recorded as holding the blob, with a URL to fetch it from.
    async fn holders(&self, blob: &LocalBlob) -> Vec<Source> {
        match self.store.holders(&blob.sha256, &self.config.url).await {
            Ok(holders) => holders
                .into_iter()
                .map(|h| Source {
                    url: h.url.unwrap_or_else(|| format!("{}/{}", h.server, blob.sha256)),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read which servers hold the blob");
                Vec::new()
            }
        }
    }

    /// Runs a request, signing a fresh token when the server refuses one.
    /// On 401: once more with a fresh token and once with the other token
    /// encoding (the other encoding first while the server has never
    /// accepted one of our tokens, field case B03). On 403 or 400 from a
    /// server that never accepted our tokens: once with the other encoding.
    /// Otherwise a refusal is final, so a large body is not sent again for
    /// nothing (field case B14). The encoding that works is remembered.
    async fn with_reauth<T, F, Fut>(&self, mut call: F) -> Result<T, blossom::Error>
    where
        F: FnMut(TokenEncoding) -> Fut,
        Fut: std::future::Future<Output = Result<T, blossom::Error>>,
    {
        let confirmed = self.encoding_confirmed.load(Ordering::Relaxed);
        let first = self.encoding();
        let plan = if confirmed { [first, first.other()] } else { [first.other(), first] };
        let mut encoding = first;
        let mut retries = 0;
        let mut batch_retried = false;
        loop {
            let batch_refused_before = self.client.batch_tokens_refused();
            let error = match call(encoding).await {
                Ok(value) => {
                    if encoding != first || !confirmed {
                        self.learn(encoding).await;
                    }
                    return Ok(value);
                }
                Err(error) => error,
            };
            if !batch_retried && !batch_refused_before && self.client.batch_tokens_refused() {
                // The server refused a token shared by several blobs: this
                // request signs one of its own, and so do all later ones.
                batch_retried = true;
                self.save_batch_refusal().await;
                self.limiter.until_ready().await;
                continue;
            }
            let next = match error.status() {
                Some(401) if retries < plan.len() => plan[retries],
                Some(400 | 403) if !confirmed && retries == 0 => first.other(),
                _ => return Err(error),
            };
            retries += 1;
            encoding = next;
            tracing::debug!(
                status = error.status(),
                encoding = encoding.as_str(),
                "token refused; signing again"
            );
            self.limiter.until_ready().await;
        }
    }

    async fn outcome(&self, job: &ClaimedJob, result: Attempt, bytes_sent: u64) -> JobOutcome {
        let error = match result {
            Ok(Stored { method, url, status }) => {
                return JobOutcome::Stored {
                    method: method.as_str(),
                    url,
                    status: Some(status),
                    bytes_sent,
                };
            }
            Err(error) => error,
        };
        let status = error.status();
        if status == Some(402) {
            // BUD-07: parked with the payment details, never retried
            // blindly; the next `run` asks again, as prices and accepted
            // mints change.
            return JobOutcome::GaveUp {
                status,
                reason: format!("needs payment: {error}"),
                bytes_sent,
            };
        }
        if error.class() != ErrorClass::Transient {
            return JobOutcome::Failed { status, reason: error.to_string(), bytes_sent };
        }
        if let Some(reason) = self.probable_size_limit(job, &error, bytes_sent) {
            self.learn_refused_size(job.blob.size).await;
            return JobOutcome::Failed { status, reason, bytes_sent };
        }
        if job.attempt >= self.retry.max_attempts {
            let reason = format!("gave up after {} attempts: {error}", job.attempt);
            return JobOutcome::GaveUp { status, reason, bytes_sent };
        }
        let delay = retry_delay(&self.retry, job.attempt, error.retry_after());
        JobOutcome::Retry {
            run_at: SystemTime::now() + delay,
            status,
            reason: error.to_string(),
            bytes_sent,
        }
    }

    /// Field case B07: a proxy in front of the server that cuts the
    /// connection during large bodies looks like a network fault, but when
    /// it happens again and again to one large blob while smaller ones get
    /// through, it is a size limit, and retrying for hours will not help.
    fn probable_size_limit(
        &self,
        job: &ClaimedJob,
        error: &blossom::Error,
        bytes_sent: u64,
    ) -> Option<String> {
        const CUTS: u32 = 3;
        let cut_mid_body = bytes_sent > 0
            && matches!(error, blossom::Error::Transport { endpoint: Endpoint::Upload, .. });
        let smaller_got_through = self.largest_accepted.load(Ordering::Relaxed) > 0
            && self.largest_accepted.load(Ordering::Relaxed) < job.blob.size;
        (cut_mid_body && smaller_got_through && job.attempt >= CUTS).then(|| {
            format!(
                "probable size limit: the connection was cut during the body on attempt {} \
                 (after {bytes_sent} of {} bytes) while smaller blobs got through: {error}",
                job.attempt, job.blob.size
            )
        })
    }

    fn encoding(&self) -> TokenEncoding {
        *self.encoding.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn learn_no_mirror(&self) {
        if !self.mirror_unsupported.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "server does not implement mirror; uploading to it directly from now on"
            );
            if let Err(e) = self.store.set_mirror_unsupported(&self.config.url).await {
                tracing::warn!(error = %e, "cannot remember that mirror is unsupported");
            }
        }
    }

    /// Records the encoding a server accepted (in memory and in the
    /// database), the first time and whenever it changes.
    async fn save_batch_refusal(&self) {
        if self.batch_refusal_saved.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.store.set_batch_tokens_refused(&self.config.url).await {
            tracing::warn!(error = %e, "cannot remember that the server refuses batch tokens");
        }
    }

    async fn learn(&self, encoding: TokenEncoding) {
        let previous = std::mem::replace(
            &mut *self.encoding.lock().unwrap_or_else(|e| e.into_inner()),
            encoding,
        );
        self.encoding_confirmed.store(true, Ordering::Relaxed);
        if previous != encoding {
            tracing::info!(
                encoding = encoding.as_str(),
                "server accepts the other token encoding; remembering it"
            );
        }
        if let Err(e) = self.store.set_token_encoding(&self.config.url, encoding).await {
            tracing::warn!(error = %e, "cannot remember the token encoding");
        }
    }
}

/// The request rate limiter of one server.
pub(crate) fn rate_limiter(config: &ServerConfig) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(config.burst);
    RateLimiter::direct(quota)
}

/// The result of one attempt.
type Attempt = Result<Stored, blossom::Error>;

/// A replica now on the server.
struct Stored {
    method: StoreMethod,
    url: Option<String>,
    status: u16,
}

impl Stored {
    fn uploaded(receipt: &UploadReceipt) -> Self {
        let status = if receipt.created { 201 } else { 200 };
        Self { method: StoreMethod::Uploaded, url: receipt.descriptor.url.clone(), status }
    }
}

/// Where another server holds the blob.
struct Source {
    url: String,
}

/// The wait before attempt `attempt + 1`: exponential backoff with jitter,
/// or what the server asked for in `Retry-After` (capped) when that is
/// longer.
pub(crate) fn retry_delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let backoff = ExponentialBuilder::new()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(policy.max_delay);
    let asked = retry_after.map_or(Duration::ZERO, |d| d.min(policy.max_retry_after));
    backoff.max(asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 1..=12 {
            let base = Duration::from_secs(1 << (attempt - 1).min(6)).min(Duration::from_secs(60));
            let delay = retry_delay(&policy(), attempt, None);
            assert!(delay >= base, "attempt {attempt}: {delay:?} < {base:?}");
            assert!(delay <= base * 2, "attempt {attempt}: {delay:?} > 2 x {base:?}");
        }
    }

    /// Jitter spreads the retries of jobs that failed together, in one
    /// process and across processes (a fixed seed would not).
    #[test]
    fn jitter_differs_between_jobs() {
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| retry_delay(&policy(), 4, None)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        assert_eq!(
            retry_delay(&policy(), 1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_delay(&policy(), 1, Some(Duration::from_secs(99_999))),
            Duration::from_secs(300)
        );
        assert!(retry_delay(&policy(), 1, Some(Duration::ZERO)) >= Duration::from_secs(1));
    }
}
