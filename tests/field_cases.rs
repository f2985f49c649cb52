//! Field cases from ../shared/cases/FIELD-CASES.md that need a server to
//! misbehave in ways real servers cannot be made to: missing preflight
//! (B02), five servers with five outcomes (B06), size limits in front of a
//! server (B07), a server that crashes mid-run (B15), servers that judge
//! content types (B18); and the forms of `Retry-After`, older descriptor
//! shapes and strictly checked tokens.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use blossom_replicator::engine::Event;
use blossom_replicator::{Config, LocalBlob, Replicator, Sha256};
use support::fault_server::{AuthMode, FaultServer, Reply};
use support::{
    BlossomServer, TestKey, cli, describe, free_port, replica_states, run_async, status_json,
    write_config, write_random_file,
};

const QUICK_RETRIES: &str =
    "[retry]\nmax_attempts = 3\nmin_delay = \"100ms\"\nmax_delay = \"200ms\"\n";

fn hash_of(path: &Path) -> String {
    Sha256::digest(&std::fs::read(path).unwrap()).to_hex()
}

/// `push` of `files` with this config and database.
/// The first blob's replicas in `status --json`, by server.
fn replicas_by_server(status: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    status["blobs"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["server"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn push(key: &TestKey, config: &Path, db: &Path, files: &[&Path]) -> std::process::Command {
    let mut command = cli(Some(key));
    command.arg("--config").arg(config).arg("--db").arg(db).arg("push").args(files);
    command
}

/// Config text that announces every upload with `HEAD /upload`.
fn preflight_all(extra: &str) -> String {
    format!("{QUICK_RETRIES}{extra}")
}

fn config_with_defaults(dir: &Path, servers: &[&str], defaults: &str, extra: &str) -> PathBuf {
    let mut text =
        format!("[defaults]\nrate = 500.0\nburst = 100\nmax_in_flight = 8\n{defaults}\n");
    for server in servers {
        text.push_str(&format!("[[servers]]\nurl = \"{server}\"\n\n"));
    }
    text.push_str(extra);
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// B02: whatever a server answers to `HEAD /upload` when it lacks it (400
/// without a body, 404 with a page, 405 with `Allow`, 501, a reset), the
/// upload goes ahead, and the next job, in another process, does not ask
/// again. A server that implements it and refuses (413, 415, 402) is
/// believed: the body is never sent.
#[tokio::test(flavor = "multi_thread")]
async fn b02_a_missing_preflight_is_skipped_and_remembered() {
    let key = TestKey::new();
    let variants: [(&str, Reply); 5] = [
        ("400", Reply::Status { code: 400, headers: vec![], body: String::new() }),
        ("404 page", Reply::html(404)),
        (
            "405",
            Reply::Status {
                code: 405,
                headers: vec![("Allow".into(), "GET, PUT".into())],
                body: String::new(),
            },
        ),
        ("501", Reply::status(501)),
        ("reset", Reply::ResetAfter(0)),
    ];
    for (name, reply) in variants {
        let work = tempfile::tempdir().unwrap();
        let server = FaultServer::start().await;
        server.rule("HEAD", "/upload", None, reply);
        let config = config_with_defaults(
            work.path(),
            &[&server.url],
            "preflight_min_size = 0",
            &preflight_all(""),
        );
        let db = work.path().join("a.db");
        for i in 0..2 {
            let file = work.path().join(format!("f{i}.bin"));
            write_random_file(&file, 2048, 10 + 2 * i);
            let output = run_async(push(&key, &config, &db, &[&file])).await;
            assert_eq!(output.status.code(), Some(0), "{name}: {}", describe(&output));
            assert_eq!(server.uploads(&hash_of(&file)), 1, "{name}");
        }
        assert_eq!(server.requests("HEAD", "/upload"), 1, "{name}: asked once, then remembered");
        assert_eq!(server.requests("PUT", "/upload"), 2, "{name}");
    }

    // A server that implements BUD-06 and refuses: no body is sent.
    for (name, reply, expect) in [
        ("413", None, "413"),
        ("415", Some(Reply::status(415)), "415"),
        (
            "402",
            Some(Reply::Status {
                code: 402,
                headers: vec![("X-Cashu".into(), "creqA1".into())],
                body: String::new(),
            }),
            "x-cashu creqA1",
        ),
    ] {
        let work = tempfile::tempdir().unwrap();
        let server = FaultServer::start().await;
        match reply {
            None => server.set_max_size(1024 * 1024),
            Some(reply) => server.rule("HEAD", "/upload", None, reply),
        }
        let config = write_config(work.path(), &[&server.url], QUICK_RETRIES);
        let file = work.path().join("big.bin");
        write_random_file(&file, 3 * 1024 * 1024, 20);
        let output = run_async(push(&key, &config, &work.path().join("a.db"), &[&file])).await;
        assert_eq!(output.status.code(), Some(1), "{name}: {}", describe(&output));
        assert!(String::from_utf8_lossy(&output.stdout).contains(expect), "{}", describe(&output));
        assert_eq!(server.requests("HEAD", "/upload"), 1, "{name}");
        assert_eq!(server.requests("PUT", "/upload"), 0, "{name}: the body was never sent");
    }
}

/// B06: one blob, five servers, five outcomes. Each replica records its own
/// class and reason; the refusals (415, 402) are asked once and not again,
/// the payment request is kept with the offered method, the unreachable
/// server is retried and given up on only after its retries; the next
/// `run` asks the paying servers again (prices and mints change) but not
/// the one that refused the type.
#[tokio::test(flavor = "multi_thread")]
async fn b06_five_servers_five_outcomes_each_recorded_with_its_reason() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let good = FaultServer::start().await;
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let wrong_type = FaultServer::start().await;
    wrong_type.rule(
        "PUT",
        "/upload",
        None,
        Reply::Status {
            code: 415,
            headers: vec![("X-Reason".into(), "type not accepted".into())],
            body: String::new(),
        },
    );
    let paying: Vec<FaultServer> = vec![FaultServer::start().await, FaultServer::start().await];
    for server in &paying {
        server.rule(
            "PUT",
            "/upload",
            None,
            Reply::Status {
                code: 402,
                headers: vec![
                    ("X-Cashu".into(), "creqApaymentrequest".into()),
                    ("X-Reason".into(), "payment needed above 1 MiB".into()),
                ],
                body: String::new(),
            },
        );
    }
    let servers = [&good.url, &unreachable, &wrong_type.url, &paying[0].url, &paying[1].url]
        .map(|s| s.as_str());
    let config = write_config(
        work.path(),
        &servers,
        &format!("{QUICK_RETRIES}[replication]\nstrategy = \"upload\"\nmin_copies = 2\n"),
    );
    let file = work.path().join("package.apk");
    write_random_file(&file, 7_000_000, 6);
    let db = work.path().join("a.db");
    let output = run_async(push(&key, &config, &db, &[&file])).await;

    assert_eq!(output.status.code(), Some(1), "below min-copies: {}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "type not accepted",
        "payment needed above 1 MiB",
        "x-cashu creqApayment",
        "gave up after 3 attempts",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing: {}", describe(&output));
    }
    assert_eq!(good.uploads(&hash_of(&file)), 1);
    assert_eq!(wrong_type.requests("PUT", "/upload"), 1, "415 is not retried");
    for server in &paying {
        assert_eq!(server.requests("PUT", "/upload"), 1, "402 is not retried blindly");
    }
    let status = status_json(&db);
    let replicas = replicas_by_server(&status);
    let replica = |url: &str| &replicas[url.trim_end_matches('/')];
    assert_eq!(replica(&good.url)["state"], "stored");
    assert_eq!(replica(&unreachable)["attempts"], 3);
    assert_eq!(replica(&wrong_type.url)["last_status"], 415);
    for server in &paying {
        let reason = replica(&server.url)["reason"].as_str().unwrap().to_owned();
        assert!(reason.starts_with("needs payment"), "{reason}");
        assert!(reason.contains("x-cashu creqApaymentrequest"), "{reason}");
    }

    // The next run asks again where money (or the network) may have
    // changed things, not where the type was refused.
    let mut command = cli(Some(&key));
    command.arg("--config").arg(&config).arg("--db").arg(&db).arg("run");
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    for server in &paying {
        assert_eq!(server.requests("PUT", "/upload"), 2);
    }
    assert_eq!(wrong_type.requests("PUT", "/upload"), 1);
}

/// B07 (a): a proxy's 413 page is shown as a short reason, the blob is not
/// retried, and a larger blob is then not sent to that server at all (also
/// from a later process), while smaller ones are.
#[tokio::test(flavor = "multi_thread")]
async fn b07_a_413_from_a_proxy_sets_a_size_limit() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let server = FaultServer::start().await;
    server.set_max_size(4 * 1024 * 1024);
    // The preflight would catch it before the body; here the PUT meets it.
    let config = config_with_defaults(
        work.path(),
        &[&server.url],
        "preflight_min_size = 1000000000",
        QUICK_RETRIES,
    );
    let db = work.path().join("a.db");
    let files: Vec<PathBuf> = [5, 6, 1]
        .iter()
        .map(|mib| {
            let path = work.path().join(format!("{mib}mib.bin"));
            write_random_file(&path, mib * 1024 * 1024, *mib);
            path
        })
        .collect();

    let output = run_async(push(&key, &config, &db, &[&files[0]])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("413 Payload Too Large"), "{stdout}");
    assert!(!stdout.contains("<html"), "no markup in the reason: {stdout}");
    assert_eq!(server.requests("PUT", "/upload"), 1, "413 is not retried");

    let output = run_async(push(&key, &config, &db, &[&files[1], &files[2]])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("not sent: the server refused"), "{stdout}");
    assert_eq!(server.requests("PUT", "/upload"), 2, "only the small blob was sent");
    assert_eq!(server.uploads(&hash_of(&files[2])), 1);
}

/// B07 (b): an ingress that cuts the connection during large bodies. The
/// cut is retried a few times; when it keeps happening to the large blob
/// while a small one got through, it is called a probable size limit and
/// stops, instead of backing off for hours or calling the server down.
#[tokio::test(flavor = "multi_thread")]
async fn b07_connections_cut_mid_body_on_large_blobs_only_mean_a_size_limit() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let server = FaultServer::start().await;
    server.rule_if(
        "PUT",
        "/upload",
        None,
        |seen| seen.length() > 4 * 1024 * 1024,
        Reply::ResetAfter(2 * 1024 * 1024),
    );
    let config = write_config(
        work.path(),
        &[&server.url],
        "[retry]\nmax_attempts = 12\nmin_delay = \"100ms\"\nmax_delay = \"300ms\"\n",
    );
    let large = work.path().join("large.bin");
    write_random_file(&large, 16 * 1024 * 1024, 7);
    let small = work.path().join("small.bin");
    write_random_file(&small, 1024 * 1024, 8);
    let db = work.path().join("a.db");
    let output = run_async(push(&key, &config, &db, &[&large, &small])).await;

    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("probable size limit"), "{}", describe(&output));
    assert_eq!(server.uploads(&hash_of(&small)), 1);
    let large_puts =
        server.seen().iter().filter(|r| r.method == "PUT" && r.length() > 4 << 20).count();
    assert!((3..=4).contains(&large_puts), "cut a few times, then stopped: {large_puts}");

    // A later, larger blob is not even sent.
    let larger = work.path().join("larger.bin");
    write_random_file(&larger, 20 * 1024 * 1024, 9);
    let output = run_async(push(&key, &config, &db, &[&larger])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let after = server.seen().iter().filter(|r| r.method == "PUT" && r.length() > 4 << 20).count();
    assert_eq!(after, large_puts);
}

/// B15: a server that crashes and refuses connections for a while, next to
/// a fast one and a slow one. Its circuit opens after a few failures (so it
/// is not hammered), half-opens after a pause and closes when it is back;
/// the fast server finishes long before the slow one; nothing is lost or
/// sent twice.
#[tokio::test(flavor = "multi_thread")]
async fn b15_a_crashing_server_is_paused_and_the_others_go_on() {
    const BLOBS: usize = 240;
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let fast = FaultServer::start().await;
    let slow = FaultServer::start().await;
    slow.rule("PUT", "/upload", None, Reply::Think(Duration::from_millis(100)));
    let crashing = Arc::new(FaultServer::start().await);
    let puts = Arc::new(AtomicUsize::new(0));
    let counter = puts.clone();
    crashing.rule_if(
        "PUT",
        "/upload",
        Some(1),
        move |_| counter.fetch_add(1, Ordering::SeqCst) == 60,
        Reply::ResetAfter(100),
    );

    let files: Vec<LocalBlob> = (0..BLOBS)
        .map(|i| {
            let path = work.path().join(format!("b{i}.bin"));
            write_random_file(&path, 1024 + (i as u64 * 211) % 50_000, 100 + i as u64);
            LocalBlob::from_path(&path).unwrap()
        })
        .collect();
    let servers = [fast.url.as_str(), slow.url.as_str(), crashing.url.as_str()];
    let text = format!(
        "[defaults]\nrate = 1000.0\nburst = 100\nmax_in_flight = 4\n\n{}\
         [retry]\nmax_attempts = 30\nmin_delay = \"100ms\"\nmax_delay = \"1s\"\n\
         circuit_failures = 3\ncircuit_cooldown = \"300ms\"\n\
         [replication]\nstrategy = \"upload\"\n",
        servers.iter().map(|s| format!("[[servers]]\nurl = \"{s}\"\n\n")).collect::<String>()
    );
    let config = Config::parse(&text, "test", &work.path().join("a.db")).unwrap();
    let engine = Replicator::start(config, Arc::new(key.signer.clone())).await.unwrap();
    let mut events = engine.subscribe();

    // The crash: after the reset, connections are refused for 2 s.
    let watcher = {
        let crashing = crashing.clone();
        tokio::spawn(async move {
            while crashing.requests("PUT", "/upload") <= 61 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            crashing.go_down(Duration::from_secs(2));
        })
    };

    let started = Instant::now();
    engine.enqueue(files.clone()).await.unwrap();
    let mut stored: HashMap<String, usize> = HashMap::new();
    let mut done_at: HashMap<String, Duration> = HashMap::new();
    let (mut paused, mut resumed, mut crashing_failures) = (0, 0, 0);
    let crashing_url = crashing.url.trim_end_matches('/').to_owned();
    while stored.values().sum::<usize>() < BLOBS * 3 {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("progress within a minute")
            .unwrap();
        match event {
            Event::ReplicaStored { server, .. } => {
                let count = stored.entry(server.as_str().to_owned()).or_default();
                *count += 1;
                if *count == BLOBS {
                    done_at.insert(server.as_str().to_owned(), started.elapsed());
                }
            }
            Event::ReplicaRetrying { server, .. } if server.as_str() == crashing_url => {
                crashing_failures += 1;
            }
            Event::ServerPaused { server, .. } if server.as_str() == crashing_url => paused += 1,
            Event::ServerResumed { server } if server.as_str() == crashing_url => resumed += 1,
            Event::ReplicaFailed { reason, .. } => panic!("a replica failed: {reason}"),
            _ => {}
        }
    }
    engine.shutdown().await;
    watcher.await.unwrap();

    assert!(paused >= 1 && resumed >= 1, "paused {paused}, resumed {resumed}");
    // Without the circuit, four slots failing on refused connections with
    // 100 ms backoff would fail hundreds of times in 2 s.
    assert!(crashing_failures <= 20, "{crashing_failures} failures against the crashed server");
    let fast_done = done_at[fast.url.trim_end_matches('/')];
    let slow_done = done_at[slow.url.trim_end_matches('/')];
    assert!(fast_done * 2 < slow_done, "fast {fast_done:?}, slow {slow_done:?}");
    for blob in &files {
        let hash = blob.sha256.to_hex();
        for server in [&fast, &slow, crashing.as_ref()] {
            assert_eq!(server.uploads(&hash), 1, "{hash} sent once to {}", server.url);
        }
    }
}

/// B18: the declared type follows the bytes. An encrypted file named
/// `.jpg` goes as opaque bytes (a server that sniffs would refuse
/// `image/jpeg`), a PNG without an extension as `image/png`; a descriptor
/// whose type differs from the one sent (the real server reports what it
/// sniffed) is no integrity failure; a 415 is final for that server.
#[tokio::test(flavor = "multi_thread")]
async fn b18_declared_types_follow_the_bytes_and_a_different_echo_is_fine() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let sniffing = FaultServer::start().await;
    sniffing.rule_if(
        "PUT",
        "/upload",
        None,
        |seen| seen.header("content-type") == Some("image/jpeg"),
        Reply::Status {
            code: 415,
            headers: vec![("X-Reason".into(), "content does not match type".into())],
            body: String::new(),
        },
    );
    let real = BlossomServer::start(&key.pubkey_hex);
    let config = write_config(work.path(), &[&sniffing.url, &real.url], QUICK_RETRIES);
    let encrypted = work.path().join("holiday.jpg");
    write_random_file(&encrypted, 64 * 1024, 11);
    let png = work.path().join("picture");
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend(std::iter::repeat_n(7u8, 4000));
    std::fs::write(&png, &bytes).unwrap();
    let text_as_png = work.path().join("notes.png");
    std::fs::write(&text_as_png, "plain words, not an image\n").unwrap();
    let db = work.path().join("a.db");
    let output = run_async(push(&key, &config, &db, &[&encrypted, &png, &text_as_png])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let sent: HashMap<String, String> = sniffing
        .seen()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == "/upload")
        .map(|r| {
            (
                r.header("x-sha-256").unwrap().to_owned(),
                r.header("content-type").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(sent[&hash_of(&encrypted)], "application/octet-stream");
    assert_eq!(sent[&hash_of(&png)], "image/png");
    assert_eq!(sent[&hash_of(&text_as_png)], "application/octet-stream");
    let states = replica_states(&db);
    assert_eq!(states.iter().filter(|r| r.2 == "stored").count(), 6, "{states:?}");

    // A 415 is final for that server: one request, no retry.
    let jpeg = work.path().join("real.jpg");
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0];
    bytes.extend(std::iter::repeat_n(1u8, 2000));
    std::fs::write(&jpeg, &bytes).unwrap();
    let before = sniffing.requests("PUT", "/upload");
    let output = run_async(push(&key, &config, &db, &[&jpeg])).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("content does not match type"));
    assert_eq!(sniffing.requests("PUT", "/upload"), before + 1);
}

/// `Retry-After` in both forms is waited for (and makes the server wait
/// as a whole), though the backoff alone would retry at once.
#[tokio::test(flavor = "multi_thread")]
async fn retry_after_in_seconds_and_as_a_date_is_honoured() {
    let key = TestKey::new();
    for form in ["seconds", "date"] {
        let work = tempfile::tempdir().unwrap();
        let server = FaultServer::start().await;
        let value = match form {
            "seconds" => "2".to_owned(),
            _ => httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3)),
        };
        let code = if form == "seconds" { 429 } else { 503 };
        server.rule("PUT", "/upload", Some(1), Reply::retry_after(code, &value));
        let config = write_config(work.path(), &[&server.url], QUICK_RETRIES);
        let file = work.path().join("f.txt");
        std::fs::write(&file, format!("retry after, {form}\n")).unwrap();
        let output = run_async(push(&key, &config, &work.path().join("a.db"), &[&file])).await;
        assert_eq!(output.status.code(), Some(0), "{form}: {}", describe(&output));
        let puts: Vec<Instant> =
            server.seen().into_iter().filter(|r| r.method == "PUT").map(|r| r.at).collect();
        assert_eq!(puts.len(), 2, "{form}");
        let waited = puts[1] - puts[0];
        assert!(waited >= Duration::from_millis(1900), "{form}: retried after {waited:?}");
        assert!(waited < Duration::from_secs(5), "{form}: retried after {waited:?}");
    }
}

/// Descriptors in older or looser shapes are read, and the blob counts as
/// stored (the hash and size are what is checked).
#[tokio::test(flavor = "multi_thread")]
async fn older_descriptor_shapes_are_accepted() {
    let key = TestKey::new();
    for shape in ["created", "strings", "nip94-object", "nip94-array"] {
        let work = tempfile::tempdir().unwrap();
        let server = FaultServer::start().await;
        server.rule("PUT", "/upload", None, Reply::OldDescriptor(shape));
        let config = write_config(work.path(), &[&server.url], QUICK_RETRIES);
        let file = work.path().join("f.txt");
        std::fs::write(&file, format!("descriptor shaped {shape}\n")).unwrap();
        let db = work.path().join("a.db");
        let output = run_async(push(&key, &config, &db, &[&file])).await;
        assert_eq!(output.status.code(), Some(0), "{shape}: {}", describe(&output));
        assert_eq!(replica_states(&db)[0].2, "stored", "{shape}");
    }
}

/// Every token we send passes a strict server: valid signature,
/// `created_at` not in the future, an expiration, the right `t`, the blob
/// in `x`, and deletes scoped with `server`.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_pass_a_strict_server() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let server = FaultServer::start().await;
    server.set_auth(AuthMode::Strict);
    let config =
        config_with_defaults(work.path(), &[&server.url], "preflight_min_size = 0", QUICK_RETRIES);
    let file = work.path().join("f.bin");
    write_random_file(&file, 100_000, 12);
    let db = work.path().join("a.db");
    let output = run_async(push(&key, &config, &db, &[&file])).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let mut command = cli(Some(&key));
    command.arg("--config").arg(&config).arg("--db").arg(&db).arg("delete").arg(hash_of(&file));
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(server.refused_tokens(), Vec::<String>::new());
    assert_eq!(server.requests("HEAD", "/upload"), 1);
    assert_eq!(server.requests("DELETE", "/"), 1);
    assert!(server.blob(&hash_of(&file)).is_none());
}

/// B10 through the engine: a server whose upload answer describes other
/// bytes does not count as holding the blob, its URL is not recorded, the
/// body is not sent to it again and again, and the other server is not
/// held back. The local hash stays the only truth.
#[tokio::test(flavor = "multi_thread")]
async fn b10_an_upload_answered_for_other_bytes_is_failed_not_stored() {
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let good = FaultServer::start().await;
    let altering = FaultServer::start().await;
    altering.rule("PUT", "/upload", None, Reply::WrongDescriptor);
    let config = write_config(
        work.path(),
        &[&good.url, &altering.url],
        &format!("{QUICK_RETRIES}[replication]\nstrategy = \"upload\"\n"),
    );
    let file = work.path().join("photo.jpg");
    write_random_file(&file, 300_000, 10);
    let db = work.path().join("a.db");
    let output = run_async(push(&key, &config, &db, &[&file])).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "one server lacks a good copy: {}",
        describe(&output)
    );

    let hash = hash_of(&file);
    let status = status_json(&db);
    assert_eq!(status["blobs"][0]["sha256"], hash.as_str(), "our hash is kept");
    let replicas = replicas_by_server(&status);
    let replica = |url: &str| &replicas[url.trim_end_matches('/')];
    assert_eq!(replica(&good.url)["state"], "stored");
    let bad = replica(&altering.url);
    assert_eq!(bad["state"], "failed", "{bad}");
    assert!(bad["url"].is_null(), "the server's URL is not recorded: {bad}");
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains("does not match") && reason.contains(&hash), "{reason}");
    assert_eq!(
        altering.requests("PUT", "/upload"),
        1,
        "an altering server is not sent the body again"
    );
}
