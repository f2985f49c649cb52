//! `push` and `run`: hash and queue the named files (push only), run the
//! engine until nothing is left to do or a stop signal arrives, and print a
//! per-server summary. The exit code says whether every replica is stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use blossom_replicator::blob::{LocalBlob, collect_files};
use blossom_replicator::store::{BlobStatus, ReplicaState};
use blossom_replicator::{Replicator, Sha256};
use futures_util::StreamExt as _;

use super::progress::Progress;
use super::{Cli, load_config, signer};

/// Blobs queued per database transaction.
const ENQUEUE_BATCH: usize = 1000;

/// Arguments of `push`.
#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    /// Files, or directories with --recursive
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Push the files inside directories, following symbolic links
    #[arg(short, long)]
    recursive: bool,

    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) async fn push(
    cli: &Cli,
    args: &PushArgs,
    progress: Progress,
) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let signer = signer(cli)?;
    if config.servers.is_empty() {
        return Err(blossom_replicator::engine::Error::NoServers.into());
    }
    let files = collect_files(&args.paths, args.recursive)?;
    let (blobs, empty) = hash_files(files, &progress).await?;
    for path in &empty {
        tracing::warn!(file = %path.display(), "skipping empty file: Blossom servers refuse empty blobs");
    }

    let replicator = Replicator::start(config, Arc::new(signer)).await?;
    let hashes: Vec<Sha256> = blobs.iter().map(|b| b.sha256).collect();
    let events = replicator.subscribe();
    for batch in blobs.chunks(ENQUEUE_BATCH) {
        replicator.enqueue(batch.to_vec()).await?;
    }
    let statuses = replicator.store().blob_statuses(Some(&hashes)).await?;
    progress.track(replicator.servers(), &statuses, events);
    finish(replicator, Some(hashes), progress, args.json).await
}

pub(crate) async fn run(cli: &Cli, args: &RunArgs, progress: Progress) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?;
    let signer = signer(cli)?;
    let replicator = Replicator::start(config, Arc::new(signer)).await?;
    let statuses = replicator.store().blob_statuses(None).await?;
    progress.track(replicator.servers(), &statuses, replicator.subscribe());
    finish(replicator, None, progress, args.json).await
}

/// Waits for the work to finish (or a signal), shuts down, summarises.
async fn finish(
    replicator: Replicator,
    hashes: Option<Vec<Sha256>>,
    progress: Progress,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let stop = replicator.stop_token();
    let interrupted = tokio::select! {
        result = replicator.wait_idle() => { result?; false }
        () = shutdown_signal() => {
            tracing::warn!("stopping: letting requests in flight finish, returning the rest to the queue");
            stop.cancel();
            true
        }
    };
    let servers: Vec<String> = replicator.servers().iter().map(|s| s.as_str().to_owned()).collect();
    let store = replicator.store().clone();
    replicator.shutdown().await;
    progress.clear();

    let store = blossom_replicator::Store::open(store.path()).await?;
    let statuses = store.blob_statuses(hashes.as_deref()).await?;
    store.close().await;
    let summary = Summary::new(&servers, &statuses, started.elapsed());
    if json {
        println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    } else {
        summary.print(interrupted);
    }
    Ok(if summary.all_stored() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Hashes files a few at a time off the async threads, in order, dropping
/// files whose content was already seen. Empty files are returned apart:
/// there is nothing to replicate in them and servers refuse them.
async fn hash_files(
    files: Vec<PathBuf>,
    progress: &Progress,
) -> anyhow::Result<(Vec<LocalBlob>, Vec<PathBuf>)> {
    let bar = progress.hashing(files.len() as u64);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut results = futures_util::stream::iter(files)
        .map(|path| tokio::task::spawn_blocking(move || LocalBlob::from_path(&path)))
        .buffered(workers);
    let mut blobs: Vec<LocalBlob> = Vec::new();
    let mut empty = Vec::new();
    let mut seen = std::collections::HashSet::new();
    while let Some(result) = results.next().await {
        let blob = result.context("hashing task failed")??;
        bar.inc(1);
        if blob.size == 0 {
            empty.push(blob.path);
        } else if seen.insert(blob.sha256) {
            blobs.push(blob);
        }
    }
    bar.finish_and_clear();
    Ok((blobs, empty))
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Per-server counts over a set of blobs.
#[derive(Debug, Default, serde::Serialize)]
struct ServerSummary {
    uploaded: u64,
    already_present: u64,
    failed: u64,
    pending: u64,
    bytes_sent: u64,
    /// Failure reasons with how many blobs each hit, most common first.
    reasons: Vec<(String, u64)>,
}

struct Summary {
    blobs: usize,
    elapsed: std::time::Duration,
    servers: BTreeMap<String, ServerSummary>,
    order: Vec<String>,
}

impl Summary {
    fn new(servers: &[String], statuses: &[BlobStatus], elapsed: std::time::Duration) -> Self {
        let mut by_server: BTreeMap<String, ServerSummary> =
            servers.iter().map(|s| (s.clone(), ServerSummary::default())).collect();
        let mut reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for replica in statuses.iter().flat_map(|b| &b.replicas) {
            let Some(entry) = by_server.get_mut(&replica.server) else { continue };
            entry.bytes_sent += replica.bytes_sent;
            match replica.state {
                ReplicaState::Stored if replica.method.as_deref() == Some("present") => {
                    entry.already_present += 1
                }
                ReplicaState::Stored => entry.uploaded += 1,
                ReplicaState::Pending => entry.pending += 1,
                ReplicaState::Failed => {
                    entry.failed += 1;
                    let reason = replica.reason.clone().unwrap_or_else(|| "unknown".into());
                    *reasons
                        .entry(replica.server.clone())
                        .or_default()
                        .entry(reason)
                        .or_default() += 1;
                }
            }
        }
        for (server, counts) in reasons {
            let mut list: Vec<_> = counts.into_iter().collect();
            list.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
            if let Some(entry) = by_server.get_mut(&server) {
                entry.reasons = list;
            }
        }
        Self { blobs: statuses.len(), elapsed, servers: by_server, order: servers.to_vec() }
    }

    fn all_stored(&self) -> bool {
        self.servers.values().all(|s| s.failed == 0 && s.pending == 0)
    }

    fn print(&self, interrupted: bool) {
        let width = self.order.iter().map(String::len).max().unwrap_or(6).max(6);
        println!(
            "{} blobs on {} servers in {:.1} s",
            self.blobs,
            self.order.len(),
            self.elapsed.as_secs_f64()
        );
        println!(
            "{:<width$}  {:>9}  {:>9}  {:>7}  {:>7}  {:>12}",
            "server", "uploaded", "present", "failed", "pending", "bytes sent"
        );
        for name in &self.order {
            let s = &self.servers[name];
            println!(
                "{name:<width$}  {:>9}  {:>9}  {:>7}  {:>7}  {:>12}",
                s.uploaded, s.already_present, s.failed, s.pending, s.bytes_sent
            );
        }
        for name in &self.order {
            for (reason, count) in self.servers[name].reasons.iter().take(5) {
                println!("failed on {name}: {count} blob(s): {reason}");
            }
        }
        if interrupted {
            println!("interrupted: pending work stays queued; `blossom-replicator run` resumes it");
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let servers: Vec<_> = self
            .order
            .iter()
            .map(|name| {
                let s = &self.servers[name];
                let reasons: Vec<_> = s
                    .reasons
                    .iter()
                    .map(|(r, n)| serde_json::json!({"reason": r, "blobs": n}))
                    .collect();
                serde_json::json!({
                    "server": name,
                    "uploaded": s.uploaded,
                    "already_present": s.already_present,
                    "failed": s.failed,
                    "pending": s.pending,
                    "bytes_sent": s.bytes_sent,
                    "failures": reasons,
                })
            })
            .collect();
        serde_json::json!({
            "blobs": self.blobs,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "all_stored": self.all_stored(),
            "servers": servers,
        })
    }
}
