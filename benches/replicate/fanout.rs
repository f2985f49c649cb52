//! Fan-out: one 1 MiB blob to N servers, each behind 100 ms of delay each
//! way (200 ms round trip). Replicating to all N should take as long as to
//! the slowest one alone, not the sum.

use std::time::Duration;

use blossom_replicator::store::Strategy;

use crate::ours::{self, Limits};
use crate::proxy::Shaping;
use crate::report::{Row, Verdict, ratio, secs};
use crate::rivals::{Rival, RivalBlobs, RivalRun};
use crate::servers::Cluster;
use crate::{Bench, median};

const BLOB_SIZE: usize = 1 << 20;

pub(crate) async fn run(bench: &mut Bench) {
    let shaping = Shaping { one_way_delay: Duration::from_millis(100), ..Shaping::default() };
    for servers in [3, 10] {
        let cluster = Cluster::start(&bench.server_bin, &bench.pubkey_hex, servers, shaping).await;
        let urls = cluster.urls();

        let mut slowest = Duration::ZERO;
        for url in &urls {
            slowest =
                slowest.max(ours_once(bench, std::slice::from_ref(url), Strategy::Upload).await);
        }
        for (strategy, name) in
            [(Strategy::Upload, "--strategy upload"), (Strategy::Mirror, "mirror, the default")]
        {
            let all = ours_once(bench, &urls, strategy).await;
            bench.report.add(Row {
                scenario: "fan-out",
                figure: format!("ours, {name}: N={servers} / slowest single"),
                value: ratio(all.as_secs_f64(), slowest.as_secs_f64()),
                goal: "<= 1.05",
                verdict: Verdict::from_goal(all.as_secs_f64() <= 1.05 * slowest.as_secs_f64()),
                detail: format!("{} to all, {} slowest alone", secs(all), secs(slowest)),
            });
        }

        for rival in bench.rivals.available() {
            let (all, slowest) = rival_times(bench, &urls, rival).await;
            bench.report.add(Row {
                scenario: "fan-out",
                figure: format!("{}: N={servers} / slowest single", rival.name()),
                value: ratio(all.as_secs_f64(), slowest.as_secs_f64()),
                goal: "",
                verdict: Verdict::Info,
                detail: format!("{} to all, {} slowest alone", secs(all), secs(slowest)),
            });
        }
    }
}

/// Our median time, over the repeats, to store a new blob on `urls`.
async fn ours_once(bench: &Bench, urls: &[String], strategy: Strategy) -> Duration {
    let mut times = Vec::new();
    for _ in 0..bench.size(3, 1) {
        let dir = tempfile::tempdir_in(bench.work.path()).expect("input dir");
        let paths = crate::data::write_files(dir.path(), 1, BLOB_SIZE);
        let blobs = crate::data::hash_all(paths).await;
        let limits = Limits::typical(20.0, 20);
        let run =
            ours::engine(bench.work.path(), &bench.signer, urls, blobs, strategy, limits).await;
        assert_eq!(run.stored, urls.len() as u64, "every replica stored");
        times.push(run.elapsed);
    }
    median(times)
}

/// A rival's median time to all of `urls`, and to the slowest alone.
async fn rival_times(bench: &Bench, urls: &[String], rival: Rival) -> (Duration, Duration) {
    let repeats = bench.size(3, 1);
    let blobs = RivalBlobs::Generated { count: 1, size: BLOB_SIZE };
    let timed = |run: RivalRun| {
        assert_eq!(run.errors, 0, "{} stored every replica", rival.name());
        median(run.times.iter().map(|&t| Duration::from_secs_f64(t)).collect())
    };
    let mut slowest = Duration::ZERO;
    for url in urls {
        let run = bench.rivals.upload(rival, std::slice::from_ref(url), &blobs, 1, repeats).await;
        slowest = slowest.max(timed(run));
    }
    let all = timed(bench.rivals.upload(rival, urls, &blobs, 1, repeats).await);
    (all, slowest)
}
