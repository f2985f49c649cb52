//! Large blobs: one 1 GiB file to three servers through counting proxies
//! (no delay). Memory must stay flat whatever the size; the mirror
//! strategy should send the bytes once, not once per server.

use blossom_replicator::LocalBlob;
use blossom_replicator::store::Strategy;

use crate::Bench;
use crate::ours::{self, Limits};
use crate::proxy::Shaping;
use crate::report::{Row, Verdict, mib, ratio, secs};
use crate::rivals::RivalBlobs;
use crate::servers::Cluster;

const SERVERS: usize = 3;

/// The most memory our process may take, whatever the size.
const RSS_GOAL: u64 = 64 << 20;

pub(crate) async fn run(bench: &mut Bench) {
    let size: u64 = bench.size(1 << 30, 128 << 20);
    let dir = bench.work.path().join("large-input");
    std::fs::create_dir_all(&dir).expect("input dir");
    let path = crate::data::write_large_file(&dir.join("large.bin"), size);
    let hashed = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || LocalBlob::from_path(&path).expect("hash"))
            .await
            .expect("task")
    };

    let curl = {
        let cluster = fresh(bench, 1).await;
        crate::rivals::curl_upload(&bench.signer, &cluster.urls()[0], &path, &hashed.sha256).await
    };

    let mut peak = 0;
    for (strategy, name) in
        [(Strategy::Mirror, "mirror, the default"), (Strategy::Upload, "--strategy upload")]
    {
        let cluster = fresh(bench, SERVERS).await;
        let run = ours::cli_push(
            bench.work.path(),
            &bench.secret_hex,
            &cluster.urls(),
            &dir,
            strategy,
            Limits::typical(20.0, 20),
        )
        .await;
        peak = peak.max(run.peak_rss);
        let uplink = cluster.uplink();
        bench.report.add(Row {
            scenario: "large",
            figure: format!("ours, {name}: uplink bytes / size"),
            value: format!("{:.3}", uplink as f64 / size as f64),
            goal: "",
            verdict: Verdict::Info,
            detail: format!("{} sent for {} to {SERVERS} servers", mib(uplink), mib(size)),
        });
        bench.report.add(Row {
            scenario: "large",
            figure: format!("ours, {name}: throughput / curl to one server"),
            value: ratio(curl.as_secs_f64(), run.elapsed.as_secs_f64()),
            goal: "",
            verdict: Verdict::Info,
            detail: format!(
                "{} to {SERVERS} servers (whole process), curl {} to one; peak RSS {}",
                secs(run.elapsed),
                secs(curl),
                mib(run.peak_rss)
            ),
        });
    }
    bench.report.add(Row {
        scenario: "large",
        figure: format!("ours, peak RSS for {} to {SERVERS} servers", mib(size)),
        value: mib(peak),
        goal: "<= 64 MiB",
        verdict: Verdict::from_goal(peak <= RSS_GOAL),
        detail: "command line, either strategy, /usr/bin/time".to_owned(),
    });
    std::fs::remove_file(&path).expect("remove large input");

    rivals_memory(bench).await;
}

/// python-blossom reads the whole file into memory, and blossom-client-sdk
/// reads it whole to hash it; how much each takes for a smaller file than
/// ours, to keep the run short.
async fn rivals_memory(bench: &mut Bench) {
    let size: u64 = bench.size(256 << 20, 64 << 20);
    let dir = bench.work.path().join("rivals-large-input");
    std::fs::create_dir_all(&dir).expect("input dir");
    let path = crate::data::write_large_file(&dir.join("large.bin"), size);
    let sha256 = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || LocalBlob::from_path(&path).expect("hash").sha256)
            .await
            .expect("task")
    };
    for rival in bench.rivals.available() {
        let cluster = fresh(bench, SERVERS).await;
        let blobs = RivalBlobs::File { path: path.clone(), sha256 };
        let run = bench.rivals.upload(rival, &cluster.direct_urls(), &blobs, 1, 1).await;
        assert_eq!((run.ok, run.errors), (SERVERS as u64, 0), "{} stored all", rival.name());
        bench.report.add(Row {
            scenario: "large",
            figure: format!("{}, peak RSS for {} to {SERVERS}", rival.name(), mib(size)),
            value: mib(run.peak_rss),
            goal: "",
            verdict: Verdict::Info,
            detail: format!(
                "{:.2}x the file; {}",
                run.peak_rss as f64 / size as f64,
                secs(run.best())
            ),
        });
    }
    std::fs::remove_dir_all(&dir).expect("remove rivals' input");
}

async fn fresh(bench: &Bench, servers: usize) -> Cluster {
    Cluster::start(&bench.server_bin, &bench.pubkey_hex, servers, Shaping::default()).await
}
