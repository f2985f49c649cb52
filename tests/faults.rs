//! Failures a real server cannot be made to produce, against the fault
//! server: slow answers and stalled uploads (field case B08).

mod support;

use std::time::{Duration, Instant};

use support::fault_server::{FaultServer, Reply};
use support::{TestKey, cli, describe, replica_states, run_async, write_config, write_random_file};

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
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(server.uploads(&hash(&thinking)), 1, "succeeded first time");

    // Stop reading after 1 MiB of 64 MiB, once; the retry goes through.
    server.rule("PUT", "/upload", Some(1), Reply::StallAfter(1024 * 1024));
    let started = Instant::now();
    let db = work.path().join("b.db");
    let mut command = cli(Some(&key));
    command.arg("--config").arg(&config).arg("--db").arg(&db).arg("push").arg(&stalling);
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
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

    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("changed since it was hashed"), "{stdout}");
    assert!(server.blob(&original).is_none(), "the changed bytes were not stored");
    let states = replica_states(&db);
    let steady_hash = blossom_replicator::Sha256::digest(b"this one stays as it is\n").to_hex();
    assert!(states.iter().any(|r| r.0 == steady_hash && r.2 == "stored"), "{states:?}");
    assert!(states.iter().any(|r| r.0 == original && r.2 == "failed"), "{states:?}");
}

fn push_to(
    server: &FaultServer,
    key: &TestKey,
    work: &std::path::Path,
    db: &str,
    file: &std::path::Path,
) -> std::process::Command {
    let config = write_config(work, &[&server.url], FAST_TIMEOUTS);
    let mut command = cli(Some(key));
    command.arg("--config").arg(config).arg("--db").arg(work.join(db)).arg("push").arg(file);
    command
}

/// B03: a strict server that takes only one token encoding costs at most
/// one extra attempt on the first blob, and none after: the encoding that
/// worked is remembered, across processes too. A server taking only the
/// default encoding never sees a second attempt.
#[tokio::test(flavor = "multi_thread")]
async fn b03_token_encoding_is_learned_once() {
    use support::fault_server::AuthMode;
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..3)
        .map(|i| {
            let path = work.path().join(format!("f{i}.txt"));
            std::fs::write(&path, format!("blob number {i} {}\n", "x".repeat(i))).unwrap();
            path
        })
        .collect();

    let strict_std = FaultServer::start().await;
    strict_std.set_auth(AuthMode::StandardOnly);
    for file in &files {
        let output = run_async(push_to(&strict_std, &key, work.path(), "std.db", file)).await;
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    }
    assert_eq!(strict_std.requests("PUT", "/upload"), 3, "no extra attempt");

    let url_only = FaultServer::start().await;
    url_only.set_auth(AuthMode::UrlSafeOnly);
    for file in &files {
        let output = run_async(push_to(&url_only, &key, work.path(), "url.db", file)).await;
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    }
    assert_eq!(url_only.requests("PUT", "/upload"), 4, "one extra attempt on the first blob only");
}

/// B14: a 403 is a refusal. The body goes out once more only to try the
/// other token encoding on a server that never accepted a token of ours.
#[tokio::test(flavor = "multi_thread")]
async fn b14_a_refusal_does_not_resend_the_body_again_and_again() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let server = FaultServer::start().await;
    server.rule(
        "PUT",
        "/upload",
        None,
        Reply::Status { code: 403, headers: vec![], body: "forbidden".into() },
    );
    let file = work.path().join("big.bin");
    write_random_file(&file, 8 * 1024 * 1024, 5);
    let output = run_async(push_to(&server, &key, work.path(), "a.db", &file)).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert_eq!(server.requests("PUT", "/upload"), 2);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("403") && stdout.contains("forbidden"), "{stdout}");
}

/// A server down for longer than the retries last: the replicas end as
/// given up, and the next `run` finishes them once the server is back.
#[tokio::test(flavor = "multi_thread")]
async fn run_finishes_what_ran_out_of_retries_during_an_outage() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let server = FaultServer::start().await;
    server.rule("HEAD", "/", None, Reply::status(503));
    server.rule("PUT", "/upload", None, Reply::status(503));
    let file = work.path().join("note.txt");
    std::fs::write(&file, "outage\n").unwrap();
    let output = run_async(push_to(&server, &key, work.path(), "a.db", &file)).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("gave up after 3 attempts"));

    server.clear_rules();
    let config = write_config(work.path(), &[&server.url], FAST_TIMEOUTS);
    let mut command = cli(Some(&key));
    command.arg("--config").arg(config).arg("--db").arg(work.path().join("a.db")).arg("run");
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(replica_states(&work.path().join("a.db"))[0].2, "stored");
}

/// B17: 3 blobs x 3 servers, killed with SIGKILL while one upload is half
/// sent and while another server holds a blob whose answer never came (a
/// crash between the server's 201 and our commit). `run` finishes: the
/// half-sent blob goes again from byte 0, the one the server already holds
/// is found by HEAD and not sent again, and nothing is reported done early.
#[tokio::test(flavor = "multi_thread")]
async fn b17_a_kill_mid_body_and_after_the_servers_answer_loses_and_repeats_nothing() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let servers =
        [FaultServer::start().await, FaultServer::start().await, FaultServer::start().await];
    let files: Vec<_> = (0..3)
        .map(|i| {
            let path = work.path().join(format!("f{i}.bin"));
            write_random_file(&path, 2 * 1024 * 1024, 40 + 2 * i);
            path
        })
        .collect();
    let hashes: Vec<String> = files
        .iter()
        .map(|f| blossom_replicator::Sha256::digest(&std::fs::read(f).unwrap()).to_hex())
        .collect();
    let for_blob = |hash: &str| {
        let hash = hash.to_owned();
        move |seen: &support::fault_server::Seen| seen.header("x-sha-256") == Some(hash.as_str())
    };
    servers[0].rule_if("PUT", "/upload", Some(1), for_blob(&hashes[1]), Reply::StallAfter(1 << 20));
    servers[1].rule_if("PUT", "/upload", Some(1), for_blob(&hashes[2]), Reply::StoreThenHang);

    let urls: Vec<&str> = servers.iter().map(|s| s.url.as_str()).collect();
    let config = write_config(
        work.path(),
        &urls,
        "[timeouts]\nstall = \"60s\"\nresponse = \"60s\"\n[replication]\nstrategy = \"upload\"\n",
    );
    let db = work.path().join("a.db");
    let mut command = cli(Some(&key));
    command.arg("--config").arg(&config).arg("--db").arg(&db).arg("push").args(&files);
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    let hung = |server: &FaultServer, hash: &str| {
        server.seen().iter().any(|r| r.method == "PUT" && r.header("x-sha-256") == Some(hash))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(hung(&servers[0], &hashes[1]) && servers[1].blob(&hashes[2]).is_some()) {
        assert!(Instant::now() < deadline, "the two stuck requests never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(servers[0].blob(&hashes[1]).is_none(), "half a body is not a blob");
    let not_done = replica_states(&db).iter().filter(|r| r.2 != "stored").count();
    assert!(not_done >= 2, "the two stuck replicas are not recorded as stored");

    let mut command = cli(Some(&key));
    command.arg("--config").arg(&config).arg("--db").arg(&db).arg("run");
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let states = replica_states(&db);
    assert_eq!(states.iter().filter(|r| r.2 == "stored").count(), 9, "{states:?}");
    for server in &servers {
        for hash in &hashes {
            assert_eq!(server.uploads(hash), 1, "{hash} on {}: one complete upload", server.url);
        }
    }
    let puts = |server: &FaultServer, hash: &str| {
        server
            .seen()
            .iter()
            .filter(|r| r.method == "PUT" && r.header("x-sha-256") == Some(hash))
            .count()
    };
    assert_eq!(puts(&servers[0], &hashes[1]), 2, "the half-sent blob went again");
    assert_eq!(puts(&servers[1], &hashes[2]), 1, "the blob the server held was not sent again");
    let present =
        states.iter().find(|r| r.0 == hashes[2] && r.1 == servers[1].url.trim_end_matches('/'));
    assert_eq!(present.unwrap().3, "present");
}

/// Batch tokens (`batch_tokens = true`): a bulk push signs one upload
/// token for many blobs (one `x` tag each) instead of one per upload, and
/// a strict server takes it for every blob it names. A server that takes
/// each token only once refuses its second use: that upload is sent again
/// with a token of its own, every later one signs its own, and the next
/// run does not offer that server a batch token again.
#[tokio::test(flavor = "multi_thread")]
async fn batch_tokens_cut_signatures_and_a_server_refusing_them_is_remembered() {
    use support::fault_server::AuthMode;
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let write_blobs = |dir: &str, count: usize| {
        let dir = work.path().join(dir);
        std::fs::create_dir(&dir).unwrap();
        for i in 0..count {
            std::fs::write(dir.join(format!("{i}.txt")), format!("{dir:?} blob {i}\n")).unwrap();
        }
        dir
    };
    let strict = FaultServer::start().await;
    strict.set_auth(AuthMode::Strict);
    let single_use = FaultServer::start().await;
    single_use.set_auth(AuthMode::SingleUse);
    let config = work.path().join("batch.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nrate = 500.0\nburst = 100\nmax_in_flight = 8\nbatch_tokens = true\n\n\
             [[servers]]\nurl = \"{}\"\n\n[[servers]]\nurl = \"{}\"\n\n{FAST_TIMEOUTS}",
            strict.url, single_use.url
        ),
    )
    .unwrap();
    let db = work.path().join("a.db");
    let push = |dir: &std::path::Path| {
        let mut command = cli(Some(&key));
        command.arg("--config").arg(&config).arg("--db").arg(&db);
        command.args(["push", "-r", "--strategy", "upload"]).arg(dir);
        command
    };
    let tokens = |server: &FaultServer| {
        let seen = server.seen();
        let uploads: Vec<_> =
            seen.iter().filter(|r| r.method == "PUT" && r.path == "/upload").collect();
        let distinct: std::collections::HashSet<_> =
            uploads.iter().filter_map(|r| r.header("authorization")).collect();
        (uploads.len(), distinct.len())
    };

    let output = run_async(push(&write_blobs("first", 64))).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let states = replica_states(&db);
    assert_eq!(states.iter().filter(|r| r.2 == "stored").count(), 128, "{states:?}");

    assert_eq!(strict.refused_tokens(), Vec::<String>::new());
    let (uploads, distinct) = tokens(&strict);
    assert_eq!(uploads, 64, "each blob sent once");
    assert!(distinct <= 8, "{distinct} tokens signed for 64 uploads");

    let refused = single_use.refused_tokens();
    assert!(!refused.is_empty(), "the single-use server saw a token twice");
    assert!(refused.iter().all(|r| r.ends_with("token already used")), "{refused:?}");
    assert!(refused.len() <= 8, "only uploads already under way repeat: {refused:?}");
    let (uploads, _) = tokens(&single_use);
    assert_eq!(uploads, 64 + refused.len(), "one more upload per refused token");

    // The next run remembers: one token per upload, none refused.
    let before = tokens(&single_use);
    let output = run_async(push(&write_blobs("second", 16))).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(single_use.refused_tokens().len(), refused.len(), "no batch token offered");
    let after = tokens(&single_use);
    assert_eq!(after.0 - before.0, 16);
    assert_eq!(after.1 - before.1, 16, "a token of its own per upload");
    let (uploads, distinct) = tokens(&strict);
    assert_eq!(uploads, 80);
    assert!(distinct <= 12, "{distinct} tokens for 80 uploads");
}

/// B14 as its case tells it: a DELETE answered 400 with the reason only in
/// a JSON body. The line shown names the reason from the body, the 400 is
/// not repeated, and the replica stays recorded as stored.
#[tokio::test(flavor = "multi_thread")]
async fn b14_a_delete_refused_with_400_and_a_json_reason() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let server = FaultServer::start().await;
    let file = work.path().join("keep.txt");
    std::fs::write(&file, "not to be deleted\n").unwrap();
    let output = run_async(push_to(&server, &key, work.path(), "a.db", &file)).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    server.rule(
        "DELETE",
        "/",
        None,
        Reply::Status {
            code: 400,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: r#"{"message":"unauthorized"}"#.into(),
        },
    );
    let hash = blossom_replicator::Sha256::digest(b"not to be deleted\n").to_hex();
    let config = write_config(work.path(), &[&server.url], FAST_TIMEOUTS);
    let mut command = cli(Some(&key));
    command.arg("--config").arg(config).arg("--db").arg(work.path().join("a.db"));
    command.args(["delete", &hash]);
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(shown.contains("400") && shown.contains("unauthorized"), "{shown}");
    assert!(server.requests("DELETE", "/") <= 2, "400 is not repeated: {shown}");
    assert_eq!(replica_states(&work.path().join("a.db"))[0].2, "stored");
}
