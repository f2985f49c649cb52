//! Upload once, mirror to the rest, and the record afterwards: mirror
//! between real servers, the fallbacks against the fault server, verify,
//! repair, whereis, delete and min-copies.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::fault_server::{FaultServer, Reply};
use support::{
    BlossomServer, TestKey, cli, copy_real_files, describe, jobs_in_state, replica_states,
    run_async, status_json, write_config, write_random_file,
};

struct Setup {
    key: TestKey,
    work: tempfile::TempDir,
    db: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let db = work.path().join("replicator.db");
        Self { key: TestKey::new(), work, db }
    }

    fn command(&self, servers: &[&str], args: &[&str]) -> Command {
        // Quick retries: the faults here are permanent, waiting proves nothing.
        let retry = "[retry]\nmax_attempts = 3\nmin_delay = \"100ms\"\nmax_delay = \"300ms\"\n";
        let config = write_config(self.work.path(), servers, retry);
        let mut command = cli(Some(&self.key));
        command.arg("--config").arg(config).arg("--db").arg(&self.db).args(args);
        command
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_first_sends_one_copy_to_three_real_servers() {
    let s = Setup::new();
    let servers: Vec<_> = (0..3).map(|_| BlossomServer::start(&s.key.pubkey_hex)).collect();
    let urls: Vec<&str> = servers.iter().map(|x| x.url.as_str()).collect();
    let input = s.work.path().join("input");
    copy_real_files(Path::new("/usr/share/common-licenses"), &input, 100);
    write_random_file(&input.join("large.bin"), 200 * 1024 * 1024, 11);

    let output =
        run_async(s.command(&urls, &["push", "-r", "--json", input.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let status = status_json(&s.db);
    let total: u64 =
        status["blobs"].as_array().unwrap().iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(
        summary["bytes_sent"].as_u64().unwrap(),
        total,
        "one copy of the bytes left this machine"
    );
    for (hash, server, state, method) in replica_states(&s.db) {
        assert_eq!(state, "stored", "{hash} on {server}");
        let want = if server == urls[0] { "uploaded" } else { "mirrored" };
        assert_eq!(method, want, "{hash} on {server}");
    }
    // The servers' own logs: only the first one received upload bodies.
    assert_eq!(servers[0].upload_counts().len(), status["blobs"].as_array().unwrap().len());
    assert!(servers[1].upload_counts().is_empty() && servers[2].upload_counts().is_empty());
    for blob in status["blobs"].as_array().unwrap() {
        let hash = blob["sha256"].as_str().unwrap();
        for server in &servers {
            let (got, _) = server.fetch_hash(hash).await.expect("present");
            assert_eq!(got.to_hex(), hash);
        }
    }
}

/// B05: 404/405/501 on /mirror fall back to an upload, and the server is
/// remembered as unable to mirror, so the next blob goes straight to upload.
#[tokio::test(flavor = "multi_thread")]
async fn b05_mirror_not_implemented_falls_back_and_is_remembered() {
    for code in [404, 405, 501] {
        let s = Setup::new();
        let real = BlossomServer::start(&s.key.pubkey_hex);
        let fault = FaultServer::start().await;
        fault.rule("PUT", "/mirror", None, Reply::status(code));
        let one = s.file("one.txt", b"first blob\n");
        let two = s.file("two.txt", b"second blob\n");
        let urls = [real.url.as_str(), fault.url.as_str()];

        for file in [&one, &two] {
            let output = run_async(s.command(&urls, &["push", file.to_str().unwrap()])).await;
            assert_eq!(output.status.code(), Some(0), "{code}: {}", describe(&output));
        }
        assert_eq!(
            fault.requests("PUT", "/mirror"),
            1,
            "{code}: mirror asked once, then remembered"
        );
        assert_eq!(fault.requests("PUT", "/upload"), 2, "{code}");
        let hash = blossom_replicator::Sha256::digest(b"second blob\n").to_hex();
        assert_eq!(fault.blob(&hash).as_deref(), Some(&b"second blob\n"[..]));
    }
}

/// B05 variant 3, and a descriptor naming other bytes: the fallback upload
/// still gets the blob there.
#[tokio::test(flavor = "multi_thread")]
async fn b05_mirror_502_or_wrong_descriptor_falls_back_to_upload() {
    for reply in [Reply::status(502), Reply::WrongDescriptor] {
        let s = Setup::new();
        let real = BlossomServer::start(&s.key.pubkey_hex);
        let fault = FaultServer::start().await;
        fault.rule("PUT", "/mirror", None, reply.clone());
        let file = s.file("blob.txt", b"mirror me\n");
        let output =
            run_async(s.command(&[&real.url, &fault.url], &["push", file.to_str().unwrap()])).await;
        assert_eq!(output.status.code(), Some(0), "{reply:?}: {}", describe(&output));
        let hash = blossom_replicator::Sha256::digest(b"mirror me\n").to_hex();
        assert_eq!(fault.uploads(&hash), 1, "{reply:?}");
        let methods: Vec<_> = replica_states(&s.db).into_iter().map(|r| r.3).collect();
        assert_eq!(methods, ["uploaded", "uploaded"], "{reply:?}");
    }
}

/// The local file is gone when a server needs a direct upload: the bytes
/// are downloaded from a server that holds them, checked, and uploaded.
#[tokio::test(flavor = "multi_thread")]
async fn local_file_deleted_after_enqueue_is_relayed_from_a_holder() {
    let s = Setup::new();
    let real = BlossomServer::start(&s.key.pubkey_hex);
    let file = s.file("gone.bin", b"bytes that only a server keeps\n");
    let output = run_async(s.command(&[&real.url], &["push", file.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    std::fs::remove_file(&file).unwrap();

    let fault = FaultServer::start().await;
    fault.rule("PUT", "/mirror", None, Reply::status(405));
    let output = run_async(s.command(&[&real.url, &fault.url], &["repair"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let hash = blossom_replicator::Sha256::digest(b"bytes that only a server keeps\n").to_hex();
    assert_eq!(fault.blob(&hash).as_deref(), Some(&b"bytes that only a server keeps\n"[..]));
}

/// A holder that serves other bytes under the hash is never relayed.
#[tokio::test(flavor = "multi_thread")]
async fn wrong_bytes_from_a_holder_are_never_uploaded() {
    let s = Setup::new();
    let liar = FaultServer::start().await;
    let file = s.file("true.bin", b"the true bytes\n");
    let output = run_async(s.command(&[&liar.url], &["push", file.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    std::fs::remove_file(&file).unwrap();
    let hash = blossom_replicator::Sha256::digest(b"the true bytes\n").to_hex();
    liar.rule(
        "GET",
        &format!("/{hash}"),
        None,
        Reply::Status { code: 200, headers: vec![], body: "the fake bytes\n".into() },
    );

    let target = FaultServer::start().await;
    target.rule("PUT", "/mirror", None, Reply::status(405));
    let output = run_async(s.command(&[&liar.url, &target.url], &["repair"])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(target.uploads(&hash), 0);
    assert!(target.blob(&hash).is_none());
    assert!(
        target.blob(&blossom_replicator::Sha256::digest(b"the fake bytes\n").to_hex()).is_none()
    );
}

/// A server added to the config later is filled by repair (by mirror), and
/// a blob removed behind our back is caught by verify and put back.
#[tokio::test(flavor = "multi_thread")]
async fn verify_catches_a_lost_blob_and_repair_fills_a_new_server() {
    let s = Setup::new();
    let servers: Vec<_> = (0..4).map(|_| BlossomServer::start(&s.key.pubkey_hex)).collect();
    let urls: Vec<&str> = servers.iter().map(|x| x.url.as_str()).collect();
    let input = s.work.path().join("input");
    copy_real_files(Path::new("/usr/share/common-licenses"), &input, 6);
    let output = run_async(s.command(&urls[..3], &["push", "-r", input.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    // Someone removes one blob from the second server's storage by hand.
    let victim = replica_states(&s.db)[0].0.clone();
    std::fs::remove_file(servers[1].dir.path().join(format!("blobs/{victim}.blob"))).unwrap();

    let output = run_async(s.command(&urls[..3], &["verify"])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("missing      {victim}  {}", urls[1])), "{stdout}");

    // Repair with a fourth server added: the lost copy comes back and the
    // new server gets everything, by mirror.
    let output = run_async(s.command(&urls, &["repair"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let output = run_async(s.command(&urls, &["verify", "--deep"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    for (hash, server, state, method) in replica_states(&s.db) {
        assert_eq!(state, "stored", "{hash} on {server}");
        if server == urls[3] {
            assert_eq!(method, "mirrored");
        }
    }
    assert!(servers[3].upload_counts().is_empty(), "the new server got nothing by upload");

    // A copy overwritten with other bytes of the same size: HEAD cannot
    // tell, a deep verify can, and repair replaces it.
    let corrupted = servers[2].dir.path().join(format!("blobs/{victim}.blob"));
    let len = std::fs::metadata(&corrupted).unwrap().len();
    write_random_file(&corrupted, len, 99);
    let output = run_async(s.command(&urls, &["verify", "--deep"])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains(&format!("wrong        {victim}  {}", urls[2]))
    );
    let output = run_async(s.command(&urls, &["repair"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let output = run_async(s.command(&urls, &["verify", "--deep"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let output = run_async(s.command(&urls, &["whereis", &victim])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("on 4 of 4 servers"));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_everywhere_and_checks() {
    let s = Setup::new();
    let servers: Vec<_> = (0..2).map(|_| BlossomServer::start(&s.key.pubkey_hex)).collect();
    let urls: Vec<&str> = servers.iter().map(|x| x.url.as_str()).collect();
    let file = s.file("secret.txt", b"to be deleted\n");
    let output = run_async(s.command(&urls, &["push", file.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let hash = blossom_replicator::Sha256::digest(b"to be deleted\n").to_hex();

    let output = run_async(s.command(&urls, &["delete", &hash])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    for server in &servers {
        assert!(server.fetch_hash(&hash).await.is_none(), "{} still serves it", server.url);
    }
    let states: Vec<_> = replica_states(&s.db).into_iter().map(|r| r.2).collect();
    assert_eq!(states, ["deleted", "deleted"]);
    // A deleted blob is not missing work: run and status stay green.
    let output = run_async(s.command(&urls, &["run"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let output = run_async(s.command(&urls, &["status"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
}

/// B06 in small: one server refuses the blob for good; with --min-copies 2
/// of 3 the push succeeds and says which server refused, without it the
/// push fails.
#[tokio::test(flavor = "multi_thread")]
async fn min_copies_decides_the_exit_code() {
    let s = Setup::new();
    let servers: Vec<_> = (0..2).map(|_| BlossomServer::start(&s.key.pubkey_hex)).collect();
    let fault = FaultServer::start().await;
    fault.rule("PUT", "/upload", None, Reply::status(415));
    fault.rule("PUT", "/mirror", None, Reply::status(415));
    let urls = [servers[0].url.as_str(), servers[1].url.as_str(), fault.url.as_str()];
    let file = s.file("app.apk", b"an android package\n");

    let output =
        run_async(s.command(&urls, &["push", "--min-copies", "2", file.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("failed on {}", fault.url)) && stdout.contains("415"),
        "{stdout}"
    );

    let output = run_async(s.command(&urls, &["push", file.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("below 3 copies"));
}

/// With mirror-first, the first server in the list uploads and the others
/// wait for it. When it fails, the next one uploads instead of waiting out
/// the first one's backoff.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_first_server_does_not_hold_the_others_back() {
    let s = Setup::new();
    let down = FaultServer::start().await;
    down.rule("HEAD", "/", None, Reply::status(503));
    down.rule("PUT", "/", None, Reply::status(503));
    let servers: Vec<_> = (0..2).map(|_| BlossomServer::start(&s.key.pubkey_hex)).collect();
    let file = s.file("urgent.txt", b"must not wait for a dead server\n");
    let started = std::time::Instant::now();
    let urls = [down.url.as_str(), servers[0].url.as_str(), servers[1].url.as_str()];
    let output = run_async(s.command(&urls, &["push", file.to_str().unwrap()])).await;
    assert_eq!(output.status.code(), Some(1), "the dead server failed: {}", describe(&output));
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    let states = replica_states(&s.db);
    for (_, server, state, _) in &states {
        let want = if *server == down.url { "failed" } else { "stored" };
        assert_eq!(state, want, "{server}: {states:?}");
    }
    let methods: Vec<_> = states.iter().filter(|r| r.2 == "stored").map(|r| r.3.as_str()).collect();
    assert!(methods.contains(&"uploaded") && methods.contains(&"mirrored"), "{methods:?}");
}

/// Work queued while a server was in the list, then run without it: the
/// blobs still reach the servers that remain.
#[tokio::test(flavor = "multi_thread")]
async fn work_left_waiting_on_a_removed_server_still_runs() {
    let s = Setup::new();
    let slow = FaultServer::start().await;
    slow.rule("PUT", "/upload", None, Reply::Think(std::time::Duration::from_secs(60)));
    let real = BlossomServer::start(&s.key.pubkey_hex);
    let file = s.file("stuck.txt", b"queued behind a server that hangs\n");
    let mut child =
        s.command(&[&slow.url, &real.url], &["push", file.to_str().unwrap()]).spawn().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(jobs_in_state(&s.db, "waiting") > 0, "the second server's job waits for the first");

    let output = run_async(s.command(&[&real.url], &["run"])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stored: Vec<_> =
        replica_states(&s.db).into_iter().filter(|r| r.1 == real.url).map(|r| r.2).collect();
    assert_eq!(stored, ["stored"]);
}
