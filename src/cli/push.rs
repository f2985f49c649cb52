//! `push` and `run`: hash and queue the named files (push only), run the
//! engine until nothing is left to do or a stop signal arrives, and print a
//! per-server summary. The exit code says whether every replica is stored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use blossom_replicator::Config;
use blossom_replicator::blob::{LocalBlob, collect_files};
use blossom_replicator::store::{BlobStatus, ReplicaState, Strategy};
use blossom_replicator::{Replicator, Sha256};
use futures_util::StreamExt as _;

use super::progress::Progress;
use super::servers::{RelayArgs, servers_from};
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

    /// Take the servers, in their order, from this user's BUD-03 server
    /// list on the relays (npub1… or hex); the first one gets the upload
    #[arg(long, value_name = "PUBKEY")]
    servers_from: Option<String>,

    #[command(flatten)]
    relays: RelayArgs,

    #[command(flatten)]
    run: RunArgs,
}

/// Arguments shared by the commands that run the engine.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// mirror: upload once, then have the other servers fetch it (the
    /// default); upload: upload to every server [config: replication.strategy]
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,

    /// A blob is safe once this many servers hold it; the exit code says
    /// whether every blob reached it [default: every server]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    min_copies: Option<u32>,

    /// Print the summary as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StrategyArg {
    Mirror,
    Upload,
}

impl RunArgs {
    fn apply(&self, config: &mut Config) {
        if let Some(strategy) = self.strategy {
            config.replication.strategy = match strategy {
                StrategyArg::Mirror => Strategy::Mirror,
                StrategyArg::Upload => Strategy::Upload,
            };
        }
        if let Some(k) = self.min_copies {
            config.replication.min_copies = Some(k);
        }
    }
}

pub(crate) async fn push(
    cli: &Cli,
    args: &PushArgs,
    progress: Progress,
) -> anyhow::Result<ExitCode> {
    let mut config = load_config(cli)?;
    args.run.apply(&mut config);
    let signer = signer(cli)?;
    if let Some(author) = &args.servers_from {
        if !cli.servers.is_empty() {
            bail!("--server and --servers-from both name the servers; pass one of them");
        }
        let servers = servers_from(author, &args.relays, &config).await?;
        config.replace_servers(servers);
    }
    if config.servers.is_empty() {
        return Err(blossom_replicator::engine::Error::NoServers.into());
    }
    let files = collect_files(&args.paths, args.recursive)?;
    let (blobs, empty) = hash_files(files, &progress).await?;
    for path in &empty {
        tracing::warn!(file = %path.display(), "skipping empty file: Blossom servers refuse empty blobs");
    }

    let min_copies = config.min_copies();
    let replicator = Replicator::start(config, Arc::new(signer)).await?;
    let hashes: Vec<Sha256> = blobs.iter().map(|b| b.sha256).collect();
    let events = replicator.subscribe();
    for batch in blobs.chunks(ENQUEUE_BATCH) {
        replicator.enqueue(batch.to_vec()).await?;
    }
    let statuses = replicator.store().blob_statuses(Some(&hashes)).await?;
    progress.track(replicator.servers(), &statuses, events);
    finish(replicator, Some(hashes), progress, args.run.json, min_copies).await
}

/// `run`, or with `repair`, first queue what is missing from the record.
pub(crate) async fn run(
    cli: &Cli,
    args: &RunArgs,
    progress: Progress,
    repair: bool,
) -> anyhow::Result<ExitCode> {
    let mut config = load_config(cli)?;
    args.apply(&mut config);
    let signer = signer(cli)?;
    let min_copies = config.min_copies();
    let replicator = Replicator::start(config, Arc::new(signer)).await?;
    let events = replicator.subscribe();
    let requeued = replicator.retry_gave_up().await?;
    if requeued > 0 {
        tracing::info!(replicas = requeued, "trying again the replicas whose retries ran out");
    }
    if repair {
        let queued = replicator.repair().await?;
        tracing::info!(jobs = queued.jobs, "queued what was missing");
    }
    let statuses = replicator.store().blob_statuses(None).await?;
    progress.track(replicator.servers(), &statuses, events);
    finish(replicator, None, progress, args.json, min_copies).await
}

/// Waits for the work to finish (or a signal), shuts down, summarises.
async fn finish(
    replicator: Replicator,
    hashes: Option<Vec<Sha256>>,
    progress: Progress,
    json: bool,
    min_copies: u32,
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let stop = replicator.stop_token();
    let done = async {
        match &hashes {
            Some(hashes) => replicator.wait_settled(hashes).await,
            None => replicator.wait_idle().await,
        }
    };
    let interrupted = tokio::select! {
        result = done => { result?; false }
        () = shutdown_signal() => {
            tracing::warn!("stopping: letting requests in flight finish, returning the rest to the queue (again to stop at once)");
            stop.cancel();
            // A second signal stops at once; leases of the work in flight
            // are taken back by the next run on this machine.
            tokio::spawn(async {
                shutdown_signal().await;
                eprintln!("stopped at once; `blossom-replicator run` resumes");
                std::process::exit(130);
            });
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
    let summary = Summary::new(&servers, &statuses, started.elapsed(), min_copies);
    if json {
        out!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    } else {
        summary.print(interrupted);
    }
    Ok(if summary.is_safe() && !interrupted { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A failure reason with blob hashes blanked, so that one cause shared by
/// many blobs is shown once with its count.
fn group_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut run = String::new();
    for c in reason.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() == 64 { "<sha256>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
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
    mirrored: u64,
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
    min_copies: u32,
    /// Blobs held by fewer than `min_copies` servers, with how many hold them.
    below: Vec<(Sha256, u32)>,
    servers: BTreeMap<String, ServerSummary>,
    order: Vec<String>,
}

impl Summary {
    fn new(
        servers: &[String],
        statuses: &[BlobStatus],
        elapsed: std::time::Duration,
        min_copies: u32,
    ) -> Self {
        let mut by_server: BTreeMap<String, ServerSummary> =
            servers.iter().map(|s| (s.clone(), ServerSummary::default())).collect();
        let mut reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for replica in statuses.iter().flat_map(|b| &b.replicas) {
            let Some(entry) = by_server.get_mut(&replica.server) else { continue };
            entry.bytes_sent += replica.bytes_sent;
            match replica.state {
                ReplicaState::Stored => match replica.method.as_deref() {
                    Some("present") => entry.already_present += 1,
                    Some("mirrored") => entry.mirrored += 1,
                    _ => entry.uploaded += 1,
                },
                ReplicaState::Pending => entry.pending += 1,
                ReplicaState::Deleted => {}
                ReplicaState::Failed | ReplicaState::Missing | ReplicaState::Corrupt => {
                    entry.failed += 1;
                    let reason = group_reason(replica.reason.as_deref().unwrap_or("unknown"));
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
        // Only copies on the servers of this run count, and blobs deleted on
        // request are not expected anywhere.
        let below = statuses
            .iter()
            .filter(|b| !b.replicas.iter().all(|r| r.state == ReplicaState::Deleted))
            .map(|b| {
                let stored = b
                    .replicas
                    .iter()
                    .filter(|r| r.state == ReplicaState::Stored && servers.contains(&r.server))
                    .count() as u32;
                (b.sha256, stored)
            })
            .filter(|(_, stored)| *stored < min_copies)
            .collect();
        Self {
            blobs: statuses.len(),
            elapsed,
            min_copies,
            below,
            servers: by_server,
            order: servers.to_vec(),
        }
    }

    /// Every blob is held by at least `min_copies` servers.
    fn is_safe(&self) -> bool {
        self.below.is_empty()
    }

    /// Bytes this run's record says were sent, over all servers.
    fn bytes_sent(&self) -> u64 {
        self.servers.values().map(|s| s.bytes_sent).sum()
    }

    fn print(&self, interrupted: bool) {
        let width = self.order.iter().map(String::len).max().unwrap_or(6).max(6);
        // The counts are the record of these blobs over every run: a blob
        // uploaded by an earlier run shows as uploaded, though this run
        // sent nothing for it.
        out!(
            "{} {} on {} servers, as recorded over every run (this one took {:.1} s)",
            self.blobs,
            if self.blobs == 1 { "blob" } else { "blobs" },
            self.order.len(),
            self.elapsed.as_secs_f64()
        );
        out!(
            "{:<width$}  {:>9}  {:>9}  {:>9}  {:>7}  {:>7}  {:>12}",
            "server",
            "uploaded",
            "mirrored",
            "present",
            "failed",
            "pending",
            "bytes sent"
        );
        for name in &self.order {
            let s = &self.servers[name];
            out!(
                "{name:<width$}  {:>9}  {:>9}  {:>9}  {:>7}  {:>7}  {:>12}",
                s.uploaded,
                s.mirrored,
                s.already_present,
                s.failed,
                s.pending,
                s.bytes_sent
            );
        }
        out!("bytes sent for these blobs over every run: {}", self.bytes_sent());
        for name in &self.order {
            let reasons = &self.servers[name].reasons;
            for (reason, count) in reasons.iter().take(5) {
                out!("failed on {name}: {count} blob(s): {reason}");
            }
            if reasons.len() > 5 {
                let more: u64 = reasons[5..].iter().map(|(_, n)| n).sum();
                out!(
                    "failed on {name}: {more} more blob(s) for {} other reasons (see status)",
                    reasons.len() - 5
                );
            }
        }
        for (hash, stored) in self.below.iter().take(20) {
            out!("below {} copies: {hash} is on {stored} server(s)", self.min_copies);
        }
        if self.below.len() > 20 {
            out!("below {} copies: {} more blobs", self.min_copies, self.below.len() - 20);
        }
        if interrupted {
            out!("interrupted: pending work stays queued; `blossom-replicator run` resumes it");
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
                    "mirrored": s.mirrored,
                    "already_present": s.already_present,
                    "failed": s.failed,
                    "pending": s.pending,
                    "bytes_sent": s.bytes_sent,
                    "failures": reasons,
                })
            })
            .collect();
        let below: Vec<_> = self
            .below
            .iter()
            .map(|(hash, stored)| serde_json::json!({"sha256": hash, "stored": stored}))
            .collect();
        serde_json::json!({
            "blobs": self.blobs,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "min_copies": self.min_copies,
            "safe": self.is_safe(),
            "below_min_copies": below,
            "bytes_sent": self.bytes_sent(),
            "servers": servers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_across_blobs() {
        let a = format!("HEAD http://h/{}: connection refused", "a".repeat(64));
        let b = format!("HEAD http://h/{}: connection refused", "b".repeat(64));
        assert_eq!(group_reason(&a), group_reason(&b));
        assert_eq!(group_reason(&a), "HEAD http://h/<sha256>: connection refused");
        assert_eq!(group_reason("413 Payload Too Large"), "413 Payload Too Large");
    }
}
