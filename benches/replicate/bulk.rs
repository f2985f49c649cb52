//! Bulk: many 4 KiB blobs to three servers on loopback, no added delay.
//! Here per-request costs decide: signatures, database writes, the
//! existence check, and the servers' own work, all on the same two cores.

use std::time::Duration;

use blossom_replicator::store::Strategy;

use crate::Bench;
use crate::ours::{self, Limits};
use crate::proxy::Shaping;
use crate::report::{Row, Verdict, ratio};
use crate::rivals::{PyClient, Rival, RivalBlobs, SdkApi};
use crate::servers::Cluster;

const BLOB_SIZE: usize = 4096;
const SERVERS: usize = 3;

pub(crate) async fn run(bench: &mut Bench) {
    let count = bench.size(10_000, 1_000);
    // python-blossom and blossom-client-sdk are slower by far; fewer blobs
    // measure their rates as well.
    let py_count = bench.size(2_000, 300);
    let dir = bench.work.path().join("bulk-input");
    let paths = crate::data::write_files(&dir, count, BLOB_SIZE);
    let blobs = crate::data::hash_all(paths.clone()).await;
    let replicas = (count * SERVERS) as f64;
    let rate = |d: Duration, replicas: f64| replicas / d.as_secs_f64();

    // The default configuration's runs compete for "ours"; batch tokens
    // (opt-in) are reported beside them.
    let mut ours_best = (0.0, String::new());
    let mut batched = (0.0, 0.0);
    for (strategy, in_flight, batch_tokens) in [
        (Strategy::Upload, 8, false),
        (Strategy::Upload, 32, false),
        (Strategy::Mirror, 32, false),
        (Strategy::Upload, 32, true),
    ] {
        let cluster = fresh(bench).await;
        let run = ours::engine(
            bench.work.path(),
            &bench.signer,
            &cluster.direct_urls(),
            blobs.clone(),
            strategy,
            Limits { batch_tokens, ..Limits::unthrottled(in_flight) },
        )
        .await;
        assert_eq!(run.failed, 0, "every replica stored");
        let per_s = rate(run.elapsed, replicas);
        let mut name = format!("{strategy:?}, {in_flight} in flight").to_lowercase();
        if batch_tokens {
            name.push_str(", batch tokens");
            batched.0 = per_s;
        } else if strategy == Strategy::Upload && in_flight == 32 {
            batched.1 = per_s;
        }
        println!("    ours ({name}): {per_s:.0} replicas/s");
        if per_s > ours_best.0 && !batch_tokens {
            ours_best = (per_s, name);
        }
    }

    let mut raw_best = (0.0, 0);
    for per_server in [8, 32] {
        let cluster = fresh(bench).await;
        let bodies = blobs
            .iter()
            .map(|b| (b.sha256, bytes::Bytes::from(std::fs::read(&b.path).expect("read input"))))
            .collect();
        let elapsed =
            crate::rivals::raw_http(&bench.signer, &cluster.direct_urls(), bodies, per_server)
                .await;
        let per_s = rate(elapsed, replicas);
        println!("    raw http ({per_server} in flight per server): {per_s:.0} replicas/s");
        if per_s > raw_best.0 {
            raw_best = (per_s, per_server);
        }
    }

    let mut py_best = (0.0, 0);
    for concurrency in [16, 64] {
        let per_s = rival_rate(bench, Rival::Python(PyClient::Async), py_count, concurrency).await;
        println!("    python-blossom async ({concurrency} blobs in flight): {per_s:.0} replicas/s");
        if per_s > py_best.0 {
            py_best = (per_s, concurrency);
        }
    }
    let py_sync = rival_rate(bench, Rival::Python(PyClient::Sync), py_count / 2, 1).await;
    println!("    python-blossom sync: {py_sync:.0} replicas/s");

    // Per API, its best rate and the blobs in flight it took.
    let mut sdk_best = Vec::new();
    if bench.rivals.node.is_some() {
        for api in SdkApi::ALL {
            let mut best = (0.0, 0);
            for concurrency in [8, 16, 32] {
                let per_s = rival_rate(bench, Rival::Sdk(api), py_count, concurrency).await;
                println!(
                    "    {} ({concurrency} blobs in flight): {per_s:.0} replicas/s",
                    api.name()
                );
                if per_s > best.0 {
                    best = (per_s, concurrency);
                }
            }
            sdk_best.push((api, best));
        }
    } else {
        println!("    blossom-client-sdk: skipped (no node)");
    }

    let cluster = fresh(bench).await;
    let cli = ours::cli_push(
        bench.work.path(),
        &bench.secret_hex,
        &cluster.direct_urls(),
        &dir,
        Strategy::Upload,
        Limits::unthrottled(32),
    )
    .await;
    let cli_per_s = rate(cli.elapsed, replicas);

    bench.report.add(Row {
        scenario: "bulk",
        figure: format!("ours, replicas/s ({count} x 4 KiB, 3 servers)"),
        value: format!("{:.0}", ours_best.0),
        goal: "",
        verdict: Verdict::Info,
        detail: format!("engine in process, {}", ours_best.1),
    });
    bench.report.add(Row {
        scenario: "bulk",
        figure: "ours, batch tokens / one token per request".to_owned(),
        value: ratio(batched.0, batched.1),
        goal: "",
        verdict: Verdict::Info,
        detail: format!(
            "upload, 32 in flight: {:.0} against {:.0} replicas/s; one signature per 32 uploads",
            batched.0, batched.1
        ),
    });
    bench.report.add(Row {
        scenario: "bulk",
        figure: "ours / python-blossom async (best concurrency)".to_owned(),
        value: ratio(ours_best.0, py_best.0),
        goal: ">= 5x",
        verdict: Verdict::from_goal(ours_best.0 >= 5.0 * py_best.0),
        detail: format!(
            "python-blossom async {:.0}/s at {} blobs in flight ({py_count} blobs), sync {py_sync:.0}/s",
            py_best.0, py_best.1
        ),
    });
    if let Some((_, sdk_top)) = sdk_best.iter().max_by(|a, b| a.1.0.total_cmp(&b.1.0)) {
        let each: Vec<String> = sdk_best
            .iter()
            .map(|(api, (per_s, concurrency))| {
                format!("{} {per_s:.0}/s at {concurrency} blobs in flight", api.name())
            })
            .collect();
        bench.report.add(Row {
            scenario: "bulk",
            figure: "ours / blossom-client-sdk (best API and concurrency)".to_owned(),
            value: ratio(ours_best.0, sdk_top.0),
            goal: "",
            verdict: Verdict::Info,
            detail: format!("{} ({py_count} blobs)", each.join(", ")),
        });
    }
    bench.report.add(Row {
        scenario: "bulk",
        figure: "ours / raw HTTP lower bound".to_owned(),
        value: ratio(ours_best.0, raw_best.0),
        goal: ">= 0.8",
        verdict: Verdict::from_goal(ours_best.0 >= 0.8 * raw_best.0),
        detail: format!(
            "raw pre-signed PUTs {:.0}/s at {} in flight per server",
            raw_best.0, raw_best.1
        ),
    });
    bench.report.add(Row {
        scenario: "bulk",
        figure: "ours, command line, replicas/s".to_owned(),
        value: format!("{cli_per_s:.0}"),
        goal: "",
        verdict: Verdict::Info,
        detail: format!(
            "push -r --strategy upload, hashing and startup included: {:.2} s",
            cli.elapsed.as_secs_f64()
        ),
    });
}

/// Three empty servers: every run starts from the same state.
async fn fresh(bench: &Bench) -> Cluster {
    Cluster::start(&bench.server_bin, &bench.pubkey_hex, SERVERS, Shaping::default()).await
}

/// A rival's replicas per second over `count` new blobs.
async fn rival_rate(bench: &Bench, rival: Rival, count: usize, concurrency: usize) -> f64 {
    let cluster = fresh(bench).await;
    let blobs = RivalBlobs::Generated { count, size: BLOB_SIZE };
    let run = bench.rivals.upload(rival, &cluster.direct_urls(), &blobs, concurrency, 1).await;
    let name = rival.name();
    assert_eq!((run.ok, run.errors), ((count * SERVERS) as u64, 0), "{name} stored all");
    (count * SERVERS) as f64 / run.best().as_secs_f64()
}
