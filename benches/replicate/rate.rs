//! The per-server rate limit, seen from the server's side: a proxy notes
//! when every request arrives while the engine works through more blobs
//! than the limit lets through at once.

use std::time::Duration;

use blossom_replicator::store::Strategy;

use crate::Bench;
use crate::ours::{self, Limits};
use crate::proxy::Shaping;
use crate::report::{Row, Verdict};
use crate::servers::Cluster;

/// The limit under test, requests per second.
const RATE: f64 = 50.0;

pub(crate) async fn run(bench: &mut Bench) {
    let count = bench.size(300, 100);
    let shaping = Shaping { count_requests: true, ..Shaping::default() };
    let cluster = Cluster::start(&bench.server_bin, &bench.pubkey_hex, 1, shaping).await;
    let dir = bench.work.path().join("rate-input");
    let blobs = crate::data::hash_all(crate::data::write_files(&dir, count, 4096)).await;

    // A burst of one: the limiter must space every request, from the first.
    let limits = Limits::typical(RATE, 1);
    let run = ours::engine(
        bench.work.path(),
        &bench.signer,
        &cluster.urls(),
        blobs,
        Strategy::Upload,
        limits,
    )
    .await;
    assert_eq!(run.failed, 0, "every replica stored");
    let requests = cluster.proxies[0].traffic.requests.lock().expect("not poisoned").clone();

    let span = (requests[requests.len() - 1] - requests[0]).as_secs_f64();
    let achieved = (requests.len() - 1) as f64 / span;
    // The busiest second anywhere in the run, counting requests in every
    // window [t, t + 1 s) that starts at a request.
    let busiest = (0..requests.len())
        .map(|i| {
            requests[i..].iter().take_while(|&&t| t - requests[i] < Duration::from_secs(1)).count()
        })
        .max()
        .unwrap_or(0);
    let within = (RATE * 0.95..=RATE).contains(&achieved);
    bench.report.add(Row {
        scenario: "rate",
        figure: format!("achieved rate / limit ({RATE} req/s, burst 1)"),
        value: format!("{:.3}", achieved / RATE),
        goal: "0.95 to 1.00",
        verdict: Verdict::from_goal(within),
        detail: format!(
            "{} requests for {count} blobs over {span:.2} s: {achieved:.2} req/s",
            requests.len()
        ),
    });
    bench.report.add(Row {
        scenario: "rate",
        figure: "requests in the busiest second / limit".to_owned(),
        value: format!("{busiest} / {RATE}"),
        goal: "<= limit",
        verdict: Verdict::from_goal(busiest as f64 <= RATE),
        detail: "every 1 s window that starts at a request".to_owned(),
    });
}
