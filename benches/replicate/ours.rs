//! Runs of blossom-replicator itself: the engine inside this process (what
//! a backend embedding the library gets) and the command-line tool as a
//! child process (what a user gets, startup and hashing included).

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blossom_replicator::store::{ReplicaState, Strategy};
use blossom_replicator::{Config, KeySigner, LocalBlob, Replicator, ServerUrl};

/// Blobs queued per call, as the command-line tool batches them.
const ENQUEUE_BATCH: usize = 1000;

/// Per-server limits of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Requests per second.
    pub(crate) rate: f64,
    /// Requests back to back before the rate applies.
    pub(crate) burst: u32,
    /// Requests in flight at once.
    pub(crate) max_in_flight: usize,
    /// One upload token signed per batch of blobs (`batch_tokens`).
    pub(crate) batch_tokens: bool,
}

impl Limits {
    /// No rate limit worth the name: the servers and the CPU set the pace.
    pub(crate) fn unthrottled(max_in_flight: usize) -> Self {
        Self { rate: 1_000_000.0, burst: 10_000, max_in_flight, batch_tokens: false }
    }

    /// Limits of a typical configuration.
    pub(crate) fn typical(rate: f64, burst: u32) -> Self {
        Self { rate, burst, max_in_flight: 8, batch_tokens: false }
    }

    fn toml(&self) -> String {
        format!(
            "[defaults]\nrate = {:.1}\nburst = {}\nmax_in_flight = {}\nbatch_tokens = {}\n\n",
            self.rate, self.burst, self.max_in_flight, self.batch_tokens
        )
    }
}

/// What one engine run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineRun {
    /// From queueing the first blob until nothing is left to do.
    pub(crate) elapsed: Duration,
    /// Replicas stored.
    pub(crate) stored: u64,
    /// Replicas not stored.
    pub(crate) failed: u64,
}

/// Replicates already-hashed blobs to `urls` with the engine in this
/// process and a fresh database, so no connection or record is reused.
pub(crate) async fn engine(
    work: &Path,
    signer: &KeySigner,
    urls: &[String],
    blobs: Vec<LocalBlob>,
    strategy: Strategy,
    limits: Limits,
) -> EngineRun {
    let db_dir = tempfile::tempdir_in(work).expect("db dir");
    let servers = urls.iter().map(|u| ServerUrl::parse(u).expect("server url")).collect();
    let mut config = Config::new(db_dir.path().join("replicator.db"), servers);
    config.replication.strategy = strategy;
    for server in &mut config.servers {
        server.rate = limits.rate;
        server.burst = NonZeroU32::new(limits.burst).expect("burst above zero");
        server.max_in_flight = NonZeroUsize::new(limits.max_in_flight).expect("limit above zero");
        server.batch_tokens = limits.batch_tokens;
    }
    let replicator = Replicator::start(config, Arc::new(signer.clone())).await.expect("start");

    let start = Instant::now();
    for batch in blobs.chunks(ENQUEUE_BATCH) {
        replicator.enqueue(batch.to_vec()).await.expect("enqueue");
    }
    replicator.wait_idle().await.expect("engine");
    let elapsed = start.elapsed();

    let statuses = replicator.store().blob_statuses(None).await.expect("statuses");
    let replicas = statuses.iter().flat_map(|b| &b.replicas);
    let stored = replicas.clone().filter(|r| r.state == ReplicaState::Stored).count() as u64;
    let failed = replicas.count() as u64 - stored;
    replicator.shutdown().await;
    EngineRun { elapsed, stored, failed }
}

/// What one run of the command-line tool measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CliRun {
    /// Wall time of the whole process.
    pub(crate) elapsed: Duration,
    /// Peak resident memory, bytes.
    pub(crate) peak_rss: u64,
}

/// `blossom-replicator push -r PATH` to `urls`, under `/usr/bin/time` for
/// its peak memory. Panics when the push does not store every replica.
pub(crate) async fn cli_push(
    work: &Path,
    secret_hex: &str,
    urls: &[String],
    path: &Path,
    strategy: Strategy,
    limits: Limits,
) -> CliRun {
    let run_dir = tempfile::tempdir_in(work).expect("run dir");
    let config = run_dir.path().join("config.toml");
    let servers: String = urls.iter().map(|u| format!("[[servers]]\nurl = \"{u}\"\n\n")).collect();
    std::fs::write(&config, limits.toml() + &servers).expect("config");
    let rss_file = run_dir.path().join("rss");
    let strategy = match strategy {
        Strategy::Mirror => "mirror",
        Strategy::Upload => "upload",
    };

    let start = Instant::now();
    let output = tokio::process::Command::new("/usr/bin/time")
        .arg("--format=%M")
        .arg("--output")
        .arg(&rss_file)
        .arg(cli_bin())
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(run_dir.path().join("replicator.db"))
        .args(["push", "--recursive", "--strategy", strategy])
        .arg(path)
        .env("BLOSSOM_SECRET_KEY", secret_hex)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run blossom-replicator under /usr/bin/time");
    let elapsed = start.elapsed();
    assert!(
        output.status.success(),
        "push failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let rss = std::fs::read_to_string(&rss_file).expect("rss file");
    let peak_kib: u64 = rss.trim().lines().last().unwrap_or("").parse().expect("peak rss in KiB");
    CliRun { elapsed, peak_rss: peak_kib * 1024 }
}

/// The release binary cargo built beside this benchmark.
pub(crate) fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_blossom-replicator"))
}
