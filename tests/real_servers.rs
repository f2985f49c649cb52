//! The main job against real third-party servers: real files pushed to
//! three blossom-server instances, checked by fetching every blob back from
//! every server; a second push that finds everything in place; and a
//! SIGKILL in the middle of a push, after which `run` finishes the work
//! without sending any blob twice (counted in the servers' own logs).

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    BlossomServer, TestKey, cli, copy_real_files, describe, jobs_in_state, run, status_json,
    write_config, write_config_with_rate, write_random_file,
};

/// Every blob in the database is stored on every server, and each server
/// serves exactly those bytes. Returns how many blobs were checked.
async fn assert_every_blob_on_every_server(db: &Path, servers: &[BlossomServer]) -> usize {
    let status = status_json(db);
    let blobs = status["blobs"].as_array().unwrap();
    for blob in blobs {
        let hash = blob["sha256"].as_str().unwrap();
        let size = blob["size"].as_u64().unwrap();
        let replicas = blob["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), servers.len(), "{hash}: one replica per server");
        for replica in replicas {
            assert_eq!(replica["state"], "stored", "{hash} on {}: {replica}", replica["server"]);
        }
        for server in servers {
            let (got, len) = server
                .fetch_hash(hash)
                .await
                .unwrap_or_else(|| panic!("{hash} missing on {}", server.url));
            assert_eq!(
                (got.to_hex().as_str(), len),
                (hash, size),
                "bytes of {hash} on {}",
                server.url
            );
        }
    }
    blobs.len()
}

/// These tests count upload bodies on every server, so every server gets
/// direct uploads; mirror-first replication is tested in `mirror.rs`.
const UPLOAD_EVERYWHERE: &str = "[replication]\nstrategy = \"upload\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn push_real_files_to_three_real_servers() {
    let key = TestKey::new();
    let servers: Vec<_> = (0..3).map(|_| BlossomServer::start(&key.pubkey_hex)).collect();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    let docs = copy_real_files(Path::new("/usr/share/doc"), &input.join("doc"), 400);
    let licenses =
        copy_real_files(Path::new("/usr/share/common-licenses"), &input.join("licenses"), 100);
    assert!(docs >= 200, "only {docs} files found under /usr/share/doc");
    write_random_file(&input.join("large.bin"), 200 * 1024 * 1024, 7);
    std::fs::write(input.join("empty"), b"").unwrap();

    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let config = write_config(work.path(), &urls, UPLOAD_EVERYWHERE);
    let db = work.path().join("replicator.db");
    let push = |db: &Path| {
        run(cli(Some(&key))
            .arg("--config")
            .arg(&config)
            .arg("--db")
            .arg(db)
            .args(["push", "-r"])
            .arg(&input))
    };

    let output = push(&db);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let checked = assert_every_blob_on_every_server(&db, &servers).await;
    assert!(checked >= 200, "{checked} blobs checked ({docs} docs, {licenses} licenses)");

    // A second push with a fresh database finds everything on the servers
    // (HEAD) and sends no byte.
    let fresh = work.path().join("fresh.db");
    let output = push(&fresh);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let status = status_json(&fresh);
    for replica in
        status["blobs"].as_array().unwrap().iter().flat_map(|b| b["replicas"].as_array().unwrap())
    {
        assert_eq!(replica["method"], "present", "{replica}");
        assert_eq!(replica["bytes_sent"], 0, "{replica}");
    }
    for server in &servers {
        let counts = server.upload_counts();
        assert_eq!(counts.len(), checked, "{} received each blob", server.url);
        assert!(
            counts.values().all(|&n| n == 1),
            "{} received a blob twice: {counts:?}",
            server.url
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_push_then_run_sends_nothing_twice() {
    let key = TestKey::new();
    let servers: Vec<_> = (0..3).map(|_| BlossomServer::start(&key.pubkey_hex)).collect();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    copy_real_files(Path::new("/usr/share/doc"), &input, 300);
    for i in 0..3 {
        write_random_file(&input.join(format!("big-{i}.bin")), 24 * 1024 * 1024, 100 + i);
    }

    // Slow enough that the kill lands with work done, in flight and queued.
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let config = write_config_with_rate(work.path(), &urls, 20.0, 4, UPLOAD_EVERYWHERE);
    let db = work.path().join("replicator.db");
    let log = work.path().join("push.log");
    let mut child = cli(Some(&key))
        .arg("--config")
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .args(["push", "-r"])
        .arg(&input)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // Kill once every server has received some blobs, without waiting on
    // wall-clock guesses.
    let deadline = Instant::now() + Duration::from_secs(120);
    while servers.iter().any(|s| s.upload_counts().len() < 30) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "push ended ({status}) before it could be killed: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "servers received too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before: Vec<_> = servers.iter().map(|s| s.upload_counts().len()).collect();
    assert!(before.iter().all(|&n| n < 100), "the kill came too late: {before:?}");

    let output = run(cli(Some(&key)).arg("--config").arg(&config).arg("--db").arg(&db).arg("run"));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let checked = assert_every_blob_on_every_server(&db, &servers).await;
    assert!(checked > 100, "{checked} blobs");
    let mut resent = Vec::new();
    for server in &servers {
        let counts = server.upload_counts();
        assert_eq!(counts.len(), checked, "{} has every blob", server.url);
        resent.extend(
            counts
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(h, n)| format!("{h} x{n} on {}", server.url)),
        );
    }
    assert!(resent.is_empty(), "blobs uploaded twice: {resent:?}");
    let leased: HashSet<_> = status_json(&db)["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["replicas"].as_array().unwrap().clone())
        .filter(|r| r["state"] != "stored")
        .map(|r| r.to_string())
        .collect();
    assert!(leased.is_empty(), "replicas not stored: {leased:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_gracefully_and_run_resumes() {
    let key = TestKey::new();
    let servers: Vec<_> = (0..2).map(|_| BlossomServer::start(&key.pubkey_hex)).collect();
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    copy_real_files(Path::new("/usr/share/common-licenses"), &input, 100);
    for i in 0..20 {
        std::fs::write(input.join(format!("note-{i}.txt")), format!("note {i}\n")).unwrap();
    }
    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let slow = write_config_with_rate(work.path(), &urls, 4.0, 1, UPLOAD_EVERYWHERE);
    let db = work.path().join("replicator.db");

    let child = cli(Some(&key))
        .arg("--config")
        .arg(&slow)
        .arg("--db")
        .arg(&db)
        .args(["push", "-r"])
        .arg(&input)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while servers.iter().any(|s| s.upload_counts().len() < 3) {
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?} to stop", started.elapsed());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert_eq!(jobs_in_state(&db, "leased"), 0, "every unfinished job went back to the queue");
    assert!(jobs_in_state(&db, "queued") > 0, "work was left for run");

    let fast = write_config(work.path(), &urls, UPLOAD_EVERYWHERE);
    let output = run(cli(Some(&key)).arg("--config").arg(&fast).arg("--db").arg(&db).arg("run"));
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let checked = assert_every_blob_on_every_server(&db, &servers).await;
    for server in &servers {
        let counts = server.upload_counts();
        assert_eq!(counts.len(), checked);
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    }
}
