//! Benchmarks side by side: blossom-replicator against python-blossom,
//! blossom-client-sdk and a raw-HTTP lower bound, on the same real
//! blossom-server instances, in the same run. Prints ratios, since absolute
//! times on a shared machine are noise and ratios measured in one run are
//! not.
//!
//! Run it with `scripts/bench.sh` (which installs what it needs) or
//! `cargo bench --bench replicate -- [--quick] [--only SCENARIO,...]`.
//! Scenarios: fanout, bulk, large, queue, rate.

mod bulk;
mod data;
mod fanout;
mod large;
mod ours;
mod proxy;
mod queue;
mod rate;
mod report;
mod rivals;
mod servers;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use blossom_replicator::KeySigner;

use self::report::Report;
use self::rivals::{Node, Python, Rivals};

/// Every scenario, in the order they run.
const SCENARIOS: [&str; 5] = ["queue", "rate", "fanout", "bulk", "large"];

/// Shared by every scenario.
pub(crate) struct Bench {
    /// Smaller sizes and fewer repeats, for a first look.
    pub(crate) quick: bool,
    /// The blossom-server binary.
    pub(crate) server_bin: PathBuf,
    /// python-blossom, and blossom-client-sdk if node is there.
    pub(crate) rivals: Rivals,
    /// The identity every client signs with.
    pub(crate) signer: KeySigner,
    /// Its secret key, hex, for the clients run as child processes.
    pub(crate) secret_hex: String,
    /// Its public key, hex: the servers' whitelist.
    pub(crate) pubkey_hex: String,
    /// Scratch space for input files and databases.
    pub(crate) work: tempfile::TempDir,
    /// The figures so far.
    pub(crate) report: Report,
}

impl Bench {
    /// `full` normally, `quick` with `--quick`.
    pub(crate) fn size<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench targets too, without --bench;
    // the benchmarks take minutes, so that run only checks they build.
    if !args.iter().any(|a| a == "--bench") {
        println!("replicate: run with `cargo bench --bench replicate` or scripts/bench.sh");
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<String> = match args.iter().position(|a| a == "--only") {
        Some(i) => {
            args.get(i + 1).map(|s| s.split(',').map(str::to_owned).collect()).unwrap_or_default()
        }
        None => SCENARIOS.iter().map(|s| (*s).to_owned()).collect(),
    };
    if let Some(unknown) = only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        eprintln!("unknown scenario {unknown:?}; known: {}", SCENARIOS.join(", "));
        return ExitCode::FAILURE;
    }
    let Some(server_bin) = std::env::var_os("BLOSSOM_SERVER_BIN") else {
        eprintln!("BLOSSOM_SERVER_BIN is not set: run scripts/bench.sh, which installs the server");
        return ExitCode::FAILURE;
    };
    let Some(interpreter) = std::env::var_os("BENCH_PYTHON") else {
        eprintln!("BENCH_PYTHON is not set: run scripts/bench.sh, which installs python-blossom");
        return ExitCode::FAILURE;
    };

    let keys = nostr::prelude::Keys::generate();
    let secret_hex = keys.secret_key().to_secret_hex();
    let work = tempfile::Builder::new().prefix("blossom-bench-").tempdir().expect("work dir");
    let node = node(&work.path().join("node-driver"), &secret_hex);
    let mut bench = Bench {
        quick,
        server_bin: server_bin.into(),
        rivals: Rivals {
            python: Python { interpreter: interpreter.into(), secret_hex: secret_hex.clone() },
            node,
        },
        signer: KeySigner::parse(&secret_hex).expect("generated key parses"),
        secret_hex,
        pubkey_hex: keys.public_key().to_hex(),
        work,
        report: Report::default(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        for scenario in SCENARIOS.iter().filter(|s| only.iter().any(|o| o == *s)) {
            println!("== {scenario}");
            match *scenario {
                "queue" => queue::run(&mut bench).await,
                "rate" => rate::run(&mut bench).await,
                "fanout" => fanout::run(&mut bench).await,
                "bulk" => bulk::run(&mut bench).await,
                "large" => large::run(&mut bench).await,
                _ => unreachable!("scenarios were checked above"),
            }
        }
    });
    println!("\n{}", bench.report.table());
    ExitCode::SUCCESS
}

/// blossom-client-sdk under node, when scripts/bench.sh found node and
/// installed the package; its rows are left out otherwise.
fn node(dir: &Path, secret_hex: &str) -> Option<Node> {
    let (Some(program), Some(modules)) =
        (std::env::var_os("BENCH_NODE"), std::env::var_os("BENCH_NODE_MODULES"))
    else {
        println!("blossom-client-sdk: skipped (BENCH_NODE or BENCH_NODE_MODULES is not set)");
        return None;
    };
    match Node::new(program.into(), modules.as_ref(), dir, secret_hex.to_owned()) {
        Ok(node) => Some(node),
        Err(e) => {
            println!("blossom-client-sdk: skipped (cannot set up its driver: {e})");
            None
        }
    }
}

/// The middle of a few measurements.
pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}
