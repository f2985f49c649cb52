//! Crash recovery, measured: a push of 1,000 blobs to three real servers is
//! killed with SIGKILL at 20 points and started again each time. At the end
//! every blob is on every server with the right bytes, no job is lost or
//! left leased, and the servers' own logs show no blob uploaded twice.

mod support;

use std::time::{Duration, Instant};

use support::{BlossomServer, TestKey, cli, jobs_in_state, replica_states, write_config_with_rate};

const BLOBS: usize = 1000;
const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sigkills_lose_nothing_and_send_nothing_twice() {
    let key = TestKey::new();
    let servers: Vec<_> = (0..3).map(|_| BlossomServer::start(&key.pubkey_hex)).collect();
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    std::fs::create_dir(&input).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..BLOBS {
        let len = 512 + (next() % 16_384) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        std::fs::write(input.join(format!("blob-{i:04}.bin")), bytes).unwrap();
    }
    // Slow enough that the kills land all through the run.
    let config = write_config_with_rate(work.path(), &urls, 50.0, 10, "");
    let db = work.path().join("replicator.db");
    let push = || {
        let mut command = cli(Some(&key));
        command.arg("--config").arg(&config).arg("--db").arg(&db).args(["push", "-r"]).arg(&input);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        command
    };

    let started = Instant::now();
    let mut kills = 0;
    for _ in 0..KILLS {
        let mut child = push().spawn().unwrap();
        let wait = Duration::from_millis(400 + next() % 1600);
        tokio::time::sleep(wait).await;
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let stored_before_last = replica_states(&db).iter().filter(|r| r.2 == "stored").count();
    let mut last = push();
    last.stdout(std::process::Stdio::piped());
    let output = tokio::task::spawn_blocking(move || last.output().unwrap()).await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
    let elapsed = started.elapsed();

    assert_eq!(kills, KILLS, "the run finished before all kills landed");
    assert!(stored_before_last < BLOBS * 3, "the kills came too late to matter");
    for state in ["leased", "queued", "waiting", "dead"] {
        assert_eq!(jobs_in_state(&db, state), 0, "jobs left {state}");
    }
    let replicas = replica_states(&db);
    assert_eq!(replicas.len(), BLOBS * 3);
    assert!(replicas.iter().all(|r| r.2 == "stored"), "every replica stored");

    let mut needless = 0;
    for server in &servers {
        needless += server.upload_counts().values().filter(|&&n| n > 1).map(|n| n - 1).sum::<u32>();
    }
    for (hash, server, _, _) in &replicas {
        let holder = servers.iter().find(|s| &s.url == server).unwrap();
        let (got, _) =
            holder.fetch_hash(hash).await.unwrap_or_else(|| panic!("{hash} missing on {server}"));
        assert_eq!(&got.to_hex(), hash);
    }
    println!(
        "crash test: {kills} SIGKILLs survived, {} of {} replicas stored before the last run, \
         0 lost, {needless} needless uploads, finished in {:.1} s",
        stored_before_last,
        BLOBS * 3,
        elapsed.as_secs_f64()
    );
    assert_eq!(needless, 0, "blobs uploaded twice to a server that had them");
}
