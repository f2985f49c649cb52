//! Progress bars: one per server and one overall, drawn from the engine's
//! events, hidden when stderr is not a terminal. Log lines are written
//! above the bars instead of through them.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::time::Duration;

use blossom_replicator::engine::Event;
use blossom_replicator::store::{BlobStatus, ReplicaState};
use blossom_replicator::{ServerUrl, Sha256};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast;

/// The bars of one run, and the writer logs go through.
#[derive(Clone)]
pub(crate) struct Progress {
    multi: MultiProgress,
}

impl Progress {
    pub(crate) fn new() -> Self {
        // Hidden unless stderr is a terminal.
        Self { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()) }
    }

    /// A writer for log lines that keeps the bars intact.
    pub(crate) fn log_writer(&self) -> LogWriter {
        LogWriter { multi: self.multi.clone() }
    }

    /// A spinner-less bar counting files as they are hashed.
    pub(crate) fn hashing(&self, files: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(files));
        bar.set_style(style("{prefix:>24} [{bar:30}] {pos}/{len} files {msg}"));
        bar.set_prefix("hashing");
        bar
    }

    /// Starts bars for `blobs` on `servers`, advanced by `events` until the
    /// stream ends. Replicas already settled count as done from the start.
    pub(crate) fn track(
        &self,
        servers: &[ServerUrl],
        blobs: &[BlobStatus],
        mut events: broadcast::Receiver<Event>,
    ) {
        let wanted: HashSet<Sha256> = blobs.iter().map(|b| b.sha256).collect();
        let per_server = blobs.len() as u64;
        let overall = self.multi.add(ProgressBar::new(per_server * servers.len() as u64));
        overall.set_style(style(
            "{prefix:>24} [{bar:30}] {pos}/{len} replicas {elapsed_precise} {msg}",
        ));
        overall.set_prefix("all servers");
        overall.enable_steady_tick(Duration::from_millis(250));

        // Replicas already settled, per server. Events can repeat what the
        // initial read saw (they race with it), so progress is the size of
        // a set, never a bare count.
        let mut bars = HashMap::new();
        let mut settled: HashMap<ServerUrl, HashSet<Sha256>> = HashMap::new();
        for server in servers {
            let bar = self.multi.add(ProgressBar::new(per_server));
            bar.set_style(style("{prefix:>24} [{bar:30}] {pos}/{len} {msg}"));
            bar.set_prefix(short(server.as_str()));
            let done: HashSet<Sha256> = blobs
                .iter()
                .filter(|b| {
                    b.replicas
                        .iter()
                        .any(|r| r.server == server.as_str() && r.state != ReplicaState::Pending)
                })
                .map(|b| b.sha256)
                .collect();
            bar.set_position(done.len() as u64);
            overall.inc(done.len() as u64);
            settled.insert(server.clone(), done);
            bars.insert(server.clone(), bar);
        }

        tokio::spawn(async move {
            let mut failed: HashMap<ServerUrl, u64> = HashMap::new();
            loop {
                let (server, sha256, is_failure) = match events.recv().await {
                    Ok(Event::ReplicaStored { server, sha256, .. }) => (server, sha256, false),
                    Ok(Event::ReplicaFailed { server, sha256, .. }) => (server, sha256, true),
                    Ok(Event::ServerPaused { server, until, .. }) => {
                        if let Some(bar) = bars.get(&server) {
                            let wait = until.duration_since(std::time::SystemTime::now());
                            let secs = wait.unwrap_or_default().as_secs_f64().ceil();
                            bar.set_message(format!("paused {secs:.0}s: failing"));
                        }
                        continue;
                    }
                    Ok(Event::ServerResumed { server }) => {
                        if let Some(bar) = bars.get(&server) {
                            let count = failed.get(&server).copied().unwrap_or_default();
                            bar.set_message(if count > 0 {
                                format!("{count} failed")
                            } else {
                                String::new()
                            });
                        }
                        continue;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let newly = wanted.contains(&sha256)
                    && settled.get_mut(&server).is_some_and(|done| done.insert(sha256));
                let Some(bar) = bars.get(&server).filter(|_| newly) else { continue };
                bar.inc(1);
                overall.inc(1);
                if is_failure {
                    let count = failed.entry(server).or_default();
                    *count += 1;
                    bar.set_message(format!("{count} failed"));
                }
            }
            bars.values().for_each(ProgressBar::finish);
            overall.finish();
        });
    }

    /// Removes every bar from the screen.
    pub(crate) fn clear(&self) {
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

/// A server URL short enough for a bar's label.
fn short(url: &str) -> String {
    let url = url.trim_start_matches("https://").trim_start_matches("http://");
    if url.chars().count() <= 24 {
        url.to_owned()
    } else {
        url.chars().take(23).collect::<String>() + "…"
    }
}

/// Writes log lines to stderr with the bars suspended around them.
#[derive(Clone)]
pub(crate) struct LogWriter {
    multi: MultiProgress,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.multi.suspend(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
