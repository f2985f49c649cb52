//! The replication engine: a coordinator actor and one worker actor per
//! server, all plain tokio tasks, so it runs inside any tokio runtime a
//! backend already has. [`Replicator`] is the entry point.
//!
//! Shutdown has one path: the stop token makes workers stop claiming;
//! requests in flight get the grace period to finish; then the abort token
//! cuts the rest, whose jobs go back to the queue unattempted.

mod audit;
mod circuit;
mod coordinator;
mod event;
mod worker;

pub(crate) use worker::{rate_limiter, retry_delay};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use audit::{DeleteReport, VerifyReport, delete, verify};
pub use event::{Event, StoreMethod};

use self::coordinator::{CoordinatorHandle, CoordinatorParts};
use self::worker::{WorkerHandle, WorkerParts};
use crate::blob::{LocalBlob, Sha256};
use crate::blossom::{ServerClient, ServerUrl, Signer};
use crate::config::Config;
use crate::store::{self, BlobProgress, Enqueued, Retry, Store};

/// How many events a slow listener may fall behind before it misses some.
const EVENT_BUFFER: usize = 4096;

/// A failure of the engine as a whole.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// No server to replicate to.
    #[error("no servers configured: add [[servers]] to the config file or pass --server <url>")]
    NoServers,
    /// An HTTP client could not be built.
    #[error("cannot create the http client for {server}: {source}")]
    Http {
        /// The server.
        server: ServerUrl,
        /// What failed.
        source: reqwest::Error,
    },
    /// More copies asked for than there are servers.
    #[error("min_copies {min_copies} is more than the {servers} configured servers")]
    MinCopies {
        /// The minimum asked for.
        min_copies: u32,
        /// Servers configured.
        servers: usize,
    },
    /// The engine stopped, after a failure it already reported.
    #[error("the replication engine stopped: {0}")]
    Stopped(String),
}

/// A running replication engine over one database and a set of servers.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use blossom_replicator::{Config, KeySigner, LocalBlob, Replicator, ServerUrl};
///
/// let servers = vec![ServerUrl::parse("https://a.example")?, ServerUrl::parse("https://b.example")?];
/// let config = Config::new("replicator.db".into(), servers);
/// let signer = Arc::new(KeySigner::parse(&std::env::var("BLOSSOM_SECRET_KEY")?)?);
/// let replicator = Replicator::start(config, signer).await?;
///
/// let blob = tokio::task::spawn_blocking(|| LocalBlob::from_path("photo.jpg".as_ref())).await??;
/// replicator.enqueue(vec![blob]).await?;
/// replicator.wait_idle().await?;
/// replicator.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct Replicator {
    store: Store,
    servers: Vec<ServerUrl>,
    coordinator: CoordinatorHandle,
    events: broadcast::Sender<Event>,
    open_jobs: watch::Receiver<u64>,
    stop: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    owner: Arc<str>,
    grace: Duration,
    fatal: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("store", &self.store)
            .field("servers", &self.servers)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// Opens the database, takes back jobs of processes on this host that
    /// died, and starts the coordinator and one worker per server. Work
    /// already queued for these servers starts at once.
    ///
    /// # Errors
    ///
    /// No servers, a database that cannot be opened, or an HTTP client that
    /// cannot be built.
    pub async fn start(config: Config, signer: Arc<dyn Signer>) -> Result<Self, Error> {
        if config.servers.is_empty() {
            return Err(Error::NoServers);
        }
        if config.min_copies() as usize > config.servers.len() {
            return Err(Error::MinCopies {
                min_copies: config.min_copies(),
                servers: config.servers.len(),
            });
        }
        let store = Store::open(&config.database).await?;
        let owner: Arc<str> = runner_id().into();
        let reclaimed =
            store.register_runner(&owner, &host_name(), std::process::id(), pid_is_alive).await?;
        if reclaimed > 0 {
            tracing::info!(
                jobs = reclaimed,
                "took back jobs of a process that stopped without finishing them"
            );
        }
        let urls: Vec<ServerUrl> = config.servers.iter().map(|s| s.url.clone()).collect();
        let unblocked = store.unblock_waiting(&urls).await?;
        if unblocked > 0 {
            tracing::info!(
                jobs = unblocked,
                "blobs whose uploader is not configured now upload to another server"
            );
        }

        let servers: Vec<ServerUrl> = config.servers.iter().map(|s| s.url.clone()).collect();
        let wakers: Vec<Arc<Notify>> = servers.iter().map(|_| Arc::new(Notify::new())).collect();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        let fatal = Arc::new(Mutex::new(None));

        let parts = CoordinatorParts {
            store: store.clone(),
            servers: servers.clone(),
            wakers: wakers.clone(),
            owner: owner.clone(),
            lease: config.queue.lease,
            strategy: config.replication.strategy,
            min_copies: config.min_copies(),
            events: events.clone(),
            fatal: fatal.clone(),
            on_fatal: stop.clone(),
        };
        let (coordinator, open_jobs) = CoordinatorHandle::spawn(parts, &tracker);

        for (server, wake) in config.servers.iter().zip(wakers) {
            let client = ServerClient::new(server.url.clone(), signer.clone(), config.timeouts)
                .map_err(|source| Error::Http { server: server.url.clone(), source })?;
            let parts = WorkerParts {
                config: server.clone(),
                client,
                store: store.clone(),
                coordinator: coordinator.clone(),
                owner: owner.clone(),
                retry: config.retry,
                lease: config.queue.lease,
                traits: store.server_traits(&server.url).await?,
                events: events.clone(),
                strategy: config.replication.strategy,
                wake,
                stop: stop.clone(),
                abort: abort.clone(),
            };
            WorkerHandle::spawn(parts, &tracker);
        }
        tracker.close();
        tracing::debug!(servers = servers.len(), %owner, "engine started");

        Ok(Self {
            store,
            servers,
            coordinator,
            events,
            open_jobs,
            stop,
            abort,
            tracker,
            owner,
            grace: config.queue.shutdown_grace,
            fatal,
        })
    }

    /// The target servers, in priority order.
    pub fn servers(&self) -> &[ServerUrl] {
        &self.servers
    }

    /// The database, for reading state.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Events from now on. A listener that falls more than a few thousand
    /// events behind gets `Lagged` and should re-read state from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Queues blobs for every server that does not hold them yet. The jobs
    /// are in the database when this returns.
    ///
    /// # Errors
    ///
    /// Database failures (nothing of the batch is queued then), or the
    /// engine has stopped.
    pub async fn enqueue(&self, blobs: Vec<LocalBlob>) -> Result<Enqueued, Error> {
        match self.coordinator.enqueue(blobs, Retry::Failed).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Queues what is missing from the record: replicas `verify` found
    /// missing or corrupt, and every known blob on servers that have no
    /// replica of it yet (a server newly added to the config). Replicas
    /// that failed for good are left alone; push the blob again to retry
    /// them.
    ///
    /// # Errors
    ///
    /// Database failures, or the engine has stopped.
    pub async fn repair(&self) -> Result<Enqueued, Error> {
        let blobs = self.store.known_blobs().await?;
        let mut total = Enqueued::default();
        for batch in blobs.chunks(1000) {
            let done = match self.coordinator.enqueue(batch.to_vec(), Retry::Lost).await {
                Ok(result) => result?,
                Err(_) => return Err(self.stopped()),
            };
            total.jobs += done.jobs;
            total.already_stored += done.already_stored;
        }
        Ok(total)
    }

    /// Queues again the replicas whose retries ran out on transient
    /// failures (a server that was down for a long time), so that `run`
    /// finishes them once the server is back. Returns how many.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn retry_gave_up(&self) -> Result<u64, Error> {
        let requeued = self.store.requeue_gave_up(&self.servers).await?;
        if requeued > 0 {
            self.coordinator.wake_all().await;
        }
        Ok(requeued)
    }

    /// Waits until no replica of `hash` is pending, and returns where it
    /// stands. Returns at once for a blob already settled.
    ///
    /// # Errors
    ///
    /// Database failures, or the engine stopped before the blob settled.
    pub async fn wait_until_replicated(&self, hash: &Sha256) -> Result<BlobProgress, Error> {
        let mut events = self.events.subscribe();
        loop {
            let progress = self.store.progress(hash, &self.servers).await?;
            if progress.is_settled() {
                return Ok(progress);
            }
            loop {
                match events.recv().await {
                    Ok(Event::BlobSettled { sha256, .. }) if sha256 == *hash => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return Err(self.stopped()),
                }
            }
        }
    }

    /// Waits until no job for these servers is queued or in flight: every
    /// replica is stored or has failed for good. Returns at once when the
    /// engine is stopping.
    ///
    /// # Errors
    ///
    /// When the engine stopped because it could not record state.
    pub async fn wait_idle(&self) -> Result<(), Error> {
        let mut open = self.open_jobs.clone();
        loop {
            if let Some(fatal) = self.fatal_error() {
                return Err(Error::Stopped(fatal));
            }
            if *open.borrow_and_update() == 0 || self.stop.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                changed = open.changed() => if changed.is_err() { return Err(self.stopped()) },
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// Waits until no replica of any of `hashes` is pending, ignoring other
    /// work in the queue. Returns at once when the engine is stopping.
    ///
    /// # Errors
    ///
    /// Database failures, or the engine stopped because it could not
    /// record state.
    pub async fn wait_settled(&self, hashes: &[Sha256]) -> Result<(), Error> {
        const RECHECK: Duration = Duration::from_secs(10);
        let mut events = self.events.subscribe();
        let mut pending = std::collections::HashSet::new();
        for hash in hashes {
            if !self.store.progress(hash, &self.servers).await?.is_settled() {
                pending.insert(*hash);
            }
        }
        while !pending.is_empty() {
            if let Some(fatal) = self.fatal_error() {
                return Err(Error::Stopped(fatal));
            }
            let recheck_all = tokio::select! {
                event = events.recv() => match event {
                    Ok(Event::BlobSettled { sha256, .. }) => {
                        pending.remove(&sha256);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return Err(self.stopped()),
                },
                // Blobs can settle without an event here: another process
                // finished them, or they ran out of attempts in a claim.
                () = tokio::time::sleep(RECHECK) => false,
                () = self.stop.cancelled() => return Ok(()),
            };
            let limit = if recheck_all { usize::MAX } else { 500 };
            let sample: Vec<Sha256> = pending.iter().take(limit).copied().collect();
            for hash in sample {
                if self.store.progress(&hash, &self.servers).await?.is_settled() {
                    pending.remove(&hash);
                }
            }
        }
        Ok(())
    }

    /// A token that, when cancelled, begins a graceful stop (as
    /// [`Replicator::shutdown`] does); for wiring to signals.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops claiming work, lets requests in flight finish within the
    /// grace period, cuts the rest (their jobs go back to the queue), and
    /// closes the database.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let Self { store, coordinator, tracker, abort, grace, owner, .. } = self;
        drop(coordinator);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "requests still running after the grace period; cutting them");
            abort.cancel();
            tracker.wait().await;
        }
        if let Err(e) = store.unregister_runner(&owner).await {
            tracing::warn!(error = %e, "cannot unregister this process");
        }
        store.close().await;
        tracing::debug!("engine stopped");
    }

    fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stopped(&self) -> Error {
        Error::Stopped(self.fatal_error().unwrap_or_else(|| "shut down".to_owned()))
    }
}

/// A unique id for this process's leases.
fn runner_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether a process of this host is still running. Where that cannot be
/// told (no `/proc`), every process counts as alive and leases are left to
/// run out.
fn pid_is_alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    if pid == std::process::id() {
        return true;
    }
    // A killed process that nobody has reaped yet is a zombie: dead.
    match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}
