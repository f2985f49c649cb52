//! The queue's own costs, with no server involved: claiming and completing
//! one job, queueing many file entries, and hashing against `sha256sum`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use blossom_replicator::store::{JobOutcome, Retry, Strategy};
use blossom_replicator::{LocalBlob, ServerUrl, Sha256, Store};

use crate::Bench;
use crate::report::{Row, Verdict, ratio, secs};

pub(crate) async fn run(bench: &mut Bench) {
    claim_and_complete(bench).await;
    claim_and_complete_batched(bench).await;
    enqueue_many(bench).await;
    hashing(bench).await;
}

/// Entries that look like files but are never read.
fn entries(count: usize, tag: &str) -> Vec<LocalBlob> {
    (0..count)
        .map(|i| LocalBlob {
            sha256: Sha256::digest(format!("{tag}-{i}").as_bytes()),
            size: 4096,
            mime: "application/octet-stream".to_owned(),
            path: PathBuf::from(format!("/data/{tag}/file-{i:06}.bin")),
        })
        .collect()
}

fn servers(count: usize) -> Vec<ServerUrl> {
    (0..count)
        .map(|i| ServerUrl::parse(&format!("http://127.0.0.1:{}", 10_000 + i)).expect("url"))
        .collect()
}

/// What a worker does per job: claim one, record it stored.
async fn claim_and_complete(bench: &mut Bench) {
    let jobs = bench.size(5_000, 1_000);
    let dir = tempfile::tempdir_in(bench.work.path()).expect("db dir");
    let store = Store::open(&dir.path().join("queue.db")).await.expect("open store");
    let server = &servers(1)[0];
    let blobs = entries(jobs, "claim");
    for batch in blobs.chunks(1000) {
        store
            .enqueue(batch, std::slice::from_ref(server), Strategy::Upload, Retry::Failed)
            .await
            .expect("enqueue");
    }

    let lease_until = SystemTime::now() + Duration::from_secs(600);
    let start = Instant::now();
    let mut done = 0;
    loop {
        let claimed = store.claim(server, "bench", 1, lease_until, 12).await.expect("claim");
        let Some(job) = claimed.into_iter().next() else { break };
        let outcome = JobOutcome::Stored {
            method: "uploaded",
            url: None,
            status: Some(201),
            bytes_sent: 4096,
        };
        store.finish(&job, server, "bench", &outcome).await.expect("finish");
        done += 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(done, jobs, "every queued job claimed once");
    store.close().await;

    let per_job = elapsed.as_secs_f64() * 1000.0 / jobs as f64;
    bench.report.add(Row {
        scenario: "queue",
        figure: "claim + complete, per job".to_owned(),
        value: format!("{per_job:.3} ms"),
        goal: "< 0.2 ms",
        verdict: Verdict::from_goal(per_job < 0.2),
        detail: format!(
            "{jobs} jobs in {}, one claim and one finish transaction each",
            secs(elapsed)
        ),
    });
}

/// What the engine does under load: a worker claims as many jobs as it has
/// free slots (here 16), and the coordinator records every outcome waiting
/// in its mailbox in one transaction.
async fn claim_and_complete_batched(bench: &mut Bench) {
    const BATCH: u32 = 16;
    let jobs = bench.size(5_000, 1_000);
    let dir = tempfile::tempdir_in(bench.work.path()).expect("db dir");
    let store = Store::open(&dir.path().join("queue.db")).await.expect("open store");
    let server = &servers(1)[0];
    let blobs = entries(jobs, "batched");
    for batch in blobs.chunks(1000) {
        store
            .enqueue(batch, std::slice::from_ref(server), Strategy::Upload, Retry::Failed)
            .await
            .expect("enqueue");
    }

    let lease_until = SystemTime::now() + Duration::from_secs(600);
    let outcome =
        JobOutcome::Stored { method: "uploaded", url: None, status: Some(201), bytes_sent: 4096 };
    let start = Instant::now();
    let mut done = 0;
    loop {
        let claimed = store.claim(server, "bench", BATCH, lease_until, 12).await.expect("claim");
        if claimed.is_empty() {
            break;
        }
        let finished: Vec<_> = claimed.iter().map(|job| (job, server, &outcome)).collect();
        store.finish_many(&finished, "bench", None).await.expect("finish");
        done += claimed.len();
    }
    let elapsed = start.elapsed();
    assert_eq!(done, jobs, "every queued job claimed once");
    store.close().await;

    let per_job = elapsed.as_secs_f64() * 1000.0 / jobs as f64;
    bench.report.add(Row {
        scenario: "queue",
        figure: format!("claim + complete, per job, {BATCH} at a time"),
        value: format!("{per_job:.3} ms"),
        goal: "< 0.2 ms",
        verdict: Verdict::from_goal(per_job < 0.2),
        detail: format!("{jobs} jobs in {}, as the engine does under load", secs(elapsed)),
    });
}

/// `push` of many files, past hashing: the entries go in 1,000 per
/// transaction, for three servers, as the command-line tool queues them.
async fn enqueue_many(bench: &mut Bench) {
    let count = bench.size(100_000, 10_000);
    let dir = tempfile::tempdir_in(bench.work.path()).expect("db dir");
    let store = Store::open(&dir.path().join("queue.db")).await.expect("open store");
    let servers = servers(3);
    let blobs = entries(count, "enqueue");

    let start = Instant::now();
    let mut jobs = 0;
    for batch in blobs.chunks(1000) {
        jobs += store
            .enqueue(batch, &servers, Strategy::Mirror, Retry::Failed)
            .await
            .expect("enqueue")
            .jobs;
    }
    let elapsed = start.elapsed();
    assert_eq!(jobs, 3 * count as u64, "one job per blob and server");
    store.close().await;

    let goal = Duration::from_secs(10).mul_f64(count as f64 / 100_000.0);
    bench.report.add(Row {
        scenario: "queue",
        figure: format!("enqueue {count} file entries (3 servers)"),
        value: secs(elapsed),
        goal: if count == 100_000 { "< 10 s" } else { "< 10 s per 100,000" },
        verdict: Verdict::from_goal(elapsed < goal),
        detail: format!("{:.0} entries/s, {jobs} jobs", count as f64 / elapsed.as_secs_f64()),
    });
}

/// `LocalBlob::from_path` against `sha256sum` on the same file, read from
/// the page cache by both (best of three each).
async fn hashing(bench: &mut Bench) {
    let size: u64 = bench.size(1 << 30, 256 << 20);
    let path = crate::data::write_large_file(&bench.work.path().join("hash-input.bin"), size);
    let expected = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || LocalBlob::from_path(&path).expect("hash"))
            .await
            .expect("task")
    };

    let mut ours = Duration::MAX;
    let mut theirs = Duration::MAX;
    for _ in 0..3 {
        let path_for_task = path.clone();
        let start = Instant::now();
        let blob = tokio::task::spawn_blocking(move || {
            LocalBlob::from_path(&path_for_task).expect("hash")
        })
        .await
        .expect("task");
        ours = ours.min(start.elapsed());
        assert_eq!(blob.sha256, expected.sha256);

        let start = Instant::now();
        let output =
            tokio::process::Command::new("sha256sum").arg(&path).output().await.expect("sha256sum");
        theirs = theirs.min(start.elapsed());
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(printed.starts_with(&expected.sha256.to_hex()), "sha256sum agrees");
    }
    std::fs::remove_file(&path).expect("remove hash input");

    let mib_s = |d: Duration| size as f64 / (1 << 20) as f64 / d.as_secs_f64();
    bench.report.add(Row {
        scenario: "queue",
        figure: "hashing speed / sha256sum".to_owned(),
        value: ratio(theirs.as_secs_f64(), ours.as_secs_f64()),
        goal: ">= 0.9",
        verdict: Verdict::from_goal(theirs.as_secs_f64() / ours.as_secs_f64() >= 0.9),
        detail: format!(
            "{} MiB: ours {:.0} MiB/s, sha256sum {:.0} MiB/s",
            size >> 20,
            mib_s(ours),
            mib_s(theirs)
        ),
    });
}
