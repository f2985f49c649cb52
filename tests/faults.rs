//! Failures a real server cannot be made to produce, against the fault
//! server: slow answers and stalled uploads (field case B08).

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::fault_server::{FaultServer, Reply};
use support::{TestKey, cli, replica_states, run_async, write_config, write_random_file};

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const FAST_TIMEOUTS: &str = "[timeouts]\nstall = \"1s\"\nresponse = \"6s\"\n\
    [retry]\nmax_attempts = 3\nmin_delay = \"100ms\"\nmax_delay = \"200ms\"\n";

/// B08: a server that thinks after the last byte is waited for (there is no
/// short idle timer after the body), and one that stops reading mid-body is
/// cut by the stall watchdog and retried, without waiting out a total limit.
#[tokio::test(flavor = "multi_thread")]
async fn b08_think_time_is_waited_for_and_a_stalled_upload_is_cut_and_retried() {
    let key = TestKey::new();
    let server = FaultServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &[&server.url], FAST_TIMEOUTS);
    let thinking = work.path().join("thinking.bin");
    write_random_file(&thinking, 4 * 1024 * 1024, 1);
    let stalling = work.path().join("stalling.bin");
    write_random_file(&stalling, 64 * 1024 * 1024, 2);
    let hash = |path: &std::path::Path| {
        blossom_replicator::Sha256::digest(&std::fs::read(path).unwrap()).to_hex()
    };

    // Think for 3 s (longer than the 1 s stall limit) after the body.
    server.rule("PUT", "/upload", Some(1), Reply::Think(Duration::from_secs(3)));
    let mut command = cli(Some(&key));
    command
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(work.path().join("a.db"))
        .arg("push")
        .arg(&thinking);
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(server.uploads(&hash(&thinking)), 1, "succeeded first time");

    // Stop reading after 1 MiB of 64 MiB, once; the retry goes through.
    server.rule("PUT", "/upload", Some(1), Reply::StallAfter(1024 * 1024));
    let started = Instant::now();
    let db = work.path().join("b.db");
    let mut command = cli(Some(&key));
    command.arg("--config").arg(&config).arg("--db").arg(&db).arg("push").arg(&stalling);
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "cut within seconds, took {:?}",
        started.elapsed()
    );
    assert_eq!(server.uploads(&hash(&stalling)), 1);
    assert_eq!(server.requests("PUT", "/upload"), 3, "think, stall, retry");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stalled"), "the retry says why: {stderr}");
    assert_eq!(replica_states(&db)[0].2, "stored");
}

/// A file that changes between hashing and upload is caught from the
/// streamed bytes before its last byte leaves; that blob fails with a
/// clear reason, the other blob of the push goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_after_hashing_fails_alone_with_a_clear_reason() {
    let key = TestKey::new();
    let server = FaultServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &[&server.url], FAST_TIMEOUTS);
    let steady = work.path().join("steady.txt");
    std::fs::write(&steady, "this one stays as it is\n").unwrap();
    let changing = work.path().join("changing.bin");
    write_random_file(&changing, 2 * 1024 * 1024, 3);
    let original = blossom_replicator::Sha256::digest(&std::fs::read(&changing).unwrap()).to_hex();

    // The existence check of the changing blob takes a second: long enough
    // to rewrite the file after it was hashed and before it is sent.
    server.rule("HEAD", &format!("/{original}"), None, Reply::Think(Duration::from_secs(1)));
    let db = work.path().join("replicator.db");
    let mut command = cli(Some(&key));
    command
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .arg("push")
        .arg(&steady)
        .arg(&changing);
    let child = tokio::task::spawn_blocking(move || command.output().unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_random_file(&changing, 2 * 1024 * 1024, 4);
    let output = child.await.unwrap();

    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("changed since it was hashed"), "{stdout}");
    assert!(server.blob(&original).is_none(), "the changed bytes were not stored");
    let states = replica_states(&db);
    let steady_hash = blossom_replicator::Sha256::digest(b"this one stays as it is\n").to_hex();
    assert!(states.iter().any(|r| r.0 == steady_hash && r.2 == "stored"), "{states:?}");
    assert!(states.iter().any(|r| r.0 == original && r.2 == "failed"), "{states:?}");
}
