//! The library's `BlossomClient` and the one-off commands built on it,
//! against real blossom-server instances and, for what those cannot be
//! made to do, the fault server: listing variants (field case B12) and
//! downloads that break off and resume on a server ignoring `Range` (B23).

mod support;

use std::sync::Arc;

use blossom_replicator::blossom::ErrorClass;
use blossom_replicator::client::{BlossomClient, ClientError, ListOptions, UploadSource};
use blossom_replicator::uri::BlossomUri;
use blossom_replicator::{ServerUrl, Sha256};
use support::fault_server::{FaultServer, ListMode, RangeMode, Reply};
use support::{BlossomServer, TestKey, cli, describe, run_async, write_random_file};

fn url(text: &str) -> ServerUrl {
    ServerUrl::parse(text).unwrap()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    write_random_file(&path, len as u64, seed);
    std::fs::read(path).unwrap()
}

/// Batch tokens: one signature for several blobs, used by every server of
/// the client. A real server and a strict one take it for each blob it
/// names; one that takes each token once refuses its second use, gets that
/// upload again with a token of its own, and one per request after that.
#[tokio::test(flavor = "multi_thread")]
async fn batch_tokens_are_shared_and_a_refusal_falls_back() {
    use support::fault_server::AuthMode;
    let key = TestKey::new();
    let real = BlossomServer::start(&key.pubkey_hex);
    let strict = FaultServer::start().await;
    strict.set_auth(AuthMode::Strict);
    let single_use = FaultServer::start().await;
    single_use.set_auth(AuthMode::SingleUse);
    let servers = vec![url(&real.url), url(&strict.url), url(&single_use.url)];
    let client = BlossomClient::new(Arc::new(key.signer.clone()), servers.clone());

    let blobs: Vec<Vec<u8>> = (0..5).map(|i| format!("batch blob {i}\n").into_bytes()).collect();
    let hashes: Vec<(Sha256, u64)> =
        blobs.iter().map(|b| (Sha256::digest(b), b.len() as u64)).collect();
    assert_eq!(client.prepare_upload_tokens(&hashes).await.unwrap(), 1, "one signature");
    for bytes in &blobs {
        let source = UploadSource::Bytes { bytes: bytes.clone().into(), mime: None };
        for (server, result) in client.upload_to_all(&source).await {
            result.unwrap_or_else(|e| panic!("{server}: {e}"));
        }
    }
    for (hash, _) in &hashes {
        assert!(client.has(&servers[0], hash).await.unwrap());
        assert!(strict.blob(&hash.to_hex()).is_some());
        assert!(single_use.blob(&hash.to_hex()).is_some());
    }
    let tokens = |server: &FaultServer| {
        let seen = server.seen();
        let uploads: Vec<_> = seen.iter().filter(|r| r.path == "/upload").collect();
        let distinct: std::collections::HashSet<_> =
            uploads.iter().filter_map(|r| r.header("authorization")).collect();
        (uploads.len(), distinct.len())
    };
    assert_eq!(strict.refused_tokens(), Vec::<String>::new());
    assert_eq!(tokens(&strict), (5, 1), "five uploads, one token");
    assert_eq!(single_use.refused_tokens(), vec!["PUT /upload: token already used".to_owned()]);
    assert_eq!(tokens(&single_use), (6, 5), "the refused upload once more, then its own tokens");
}

/// Upload (bytes, file, reader), has, get, list and delete against a real
/// server; `upload_to_all` isolates a server that refuses.
#[tokio::test(flavor = "multi_thread")]
async fn every_call_against_real_servers() {
    let key = TestKey::new();
    let a = BlossomServer::start(&key.pubkey_hex);
    let b = BlossomServer::start(&key.pubkey_hex);
    let refusing = FaultServer::start().await;
    refusing.rule("PUT", "/upload", None, Reply::status(415));
    let servers = vec![url(&a.url), url(&b.url), url(&refusing.url)];
    let client = BlossomClient::new(Arc::new(key.signer.clone()), servers.clone());

    // Bytes to every server: two stored, one refusal, each on its own.
    let bytes = random_bytes(300_000, 1);
    let hash = Sha256::digest(&bytes);
    let source = UploadSource::Bytes { bytes: bytes.clone().into(), mime: None };
    let results = client.upload_to_all(&source).await;
    assert_eq!(results.len(), 3);
    for (server, result) in &results[..2] {
        let descriptor = result.as_ref().unwrap_or_else(|e| panic!("{server}: {e}"));
        assert_eq!(descriptor.sha256.as_deref(), Some(hash.to_hex().as_str()));
    }
    let refused = results[2].1.as_ref().unwrap_err();
    assert_eq!(refused.blossom().unwrap().status(), Some(415));
    assert_eq!(refusing.requests("PUT", "/upload"), 1, "a refusal is not retried");

    assert!(client.has(&servers[0], &hash).await.unwrap());
    assert!(!client.has(&servers[2], &hash).await.unwrap());
    assert_eq!(client.get(&servers[1], &hash).await.unwrap(), bytes);

    // A file, and a reader of known hash and size.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "a file for the client\n").unwrap();
    let from_file = client.upload(&servers[0], &UploadSource::Path(file.clone())).await.unwrap();
    let reader_bytes = random_bytes(70_000, 2);
    let reader_hash = Sha256::digest(&reader_bytes);
    let cursor = std::io::Cursor::new(reader_bytes.clone());
    client
        .upload_reader(
            &servers[0],
            cursor,
            reader_hash,
            reader_bytes.len() as u64,
            "application/octet-stream",
        )
        .await
        .unwrap();
    // A reader whose bytes are not what was announced is cut, not stored.
    let liar = std::io::Cursor::new(random_bytes(70_000, 6));
    let err = client
        .upload_reader(&servers[1], liar, reader_hash, 70_000, "application/octet-stream")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
    assert!(!client.has(&servers[1], &reader_hash).await.unwrap());

    // The real server lists what this key uploaded.
    let listed = client.list(&servers[0], &key.pubkey_hex, ListOptions::default()).await.unwrap();
    let listed: Vec<String> = listed.iter().filter_map(|d| d.sha256.clone()).collect();
    for expected in [hash.to_hex(), reader_hash.to_hex(), from_file.sha256.clone().unwrap()] {
        assert!(listed.contains(&expected), "{expected} not in {listed:?}");
    }

    // Mirror from a to the fault server (which fetches for real).
    let plain = FaultServer::start().await;
    let mirrored = client
        .mirror(&url(&plain.url), &format!("{}/{hash}", a.url), hash, bytes.len() as u64)
        .await
        .unwrap();
    assert_eq!(mirrored.size, Some(bytes.len() as u64));
    assert_eq!(plain.blob(&hash.to_hex()).unwrap(), bytes);

    client.delete(&servers[0], &hash).await.unwrap();
    assert!(!client.has(&servers[0], &hash).await.unwrap());
}

/// B23: a download that breaks off is resumed from the next server with
/// `Range`. From a server that honours it only the rest is sent; from one
/// that ignores it (the real server) or refuses it (416), or that serves
/// another range than asked, the whole blob is fetched and the bytes
/// already written are skipped. Either way the file hashes right.
#[tokio::test(flavor = "multi_thread")]
async fn b23_a_broken_download_resumes_from_the_next_server() {
    let key = TestKey::new();
    let bytes = random_bytes(3 * 1024 * 1024, 4);
    let hash = Sha256::digest(&bytes);
    let broken_at = 1024 * 1024 + 17;
    let breaking = FaultServer::start().await;
    breaking.put(&bytes);
    breaking.rule("GET", &format!("/{hash}"), None, Reply::CutBodyAfter(broken_at));

    let real = BlossomServer::start(&key.pubkey_hex);
    let seed = BlossomClient::new(Arc::new(key.signer.clone()), vec![url(&real.url)]);
    seed.upload(&url(&real.url), &UploadSource::Bytes { bytes: bytes.clone().into(), mime: None })
        .await
        .unwrap();

    let bytes = &bytes;
    let ranged = |mode| async move {
        let server = FaultServer::start().await;
        server.put(bytes);
        server.set_range_mode(mode);
        server
    };
    let honours = ranged(RangeMode::Honour).await;
    let refuses = ranged(RangeMode::Refuse).await;
    let shifts = ranged(RangeMode::WrongOffset).await;
    let nexts = [
        ("honours Range", &honours.url, Some((&honours, 1))),
        ("ignores Range", &real.url, None),
        ("refuses Range with 416", &refuses.url, Some((&refuses, 2))),
        ("serves another range", &shifts.url, Some((&shifts, 2))),
    ];
    for (name, next, fault) in nexts {
        let client = BlossomClient::new(Arc::new(key.signer.clone()), Vec::new());
        let mut out = Vec::new();
        let (server, len) = client
            .get_with_fallback(&hash, &[url(&breaking.url), url(next)], &mut out)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((server, len), (url(next), bytes.len() as u64), "{name}");
        assert_eq!(Sha256::digest(&out), hash, "{name}");
        if let Some((fault, gets)) = fault {
            let asked: Vec<_> = fault.seen().into_iter().filter(|r| r.method == "GET").collect();
            assert_eq!(asked.len(), gets, "{name}: GETs");
            let range = format!("bytes={broken_at}-");
            assert_eq!(asked[0].header("range"), Some(range.as_str()), "{name}: resumed");
        }
    }
}

/// B12: listing pages with `cursor` and `limit`; a server that ignores the
/// cursor is paged with `until`; one that ignores every parameter is read
/// in one request; a server with listing off says so; a broken body is an
/// error at once, not a crash or a loop of retries.
#[tokio::test(flavor = "multi_thread")]
async fn b12_listing_survives_every_pagination_and_reports_it_disabled() {
    let key = TestKey::new();
    for (mode, most_pages) in
        [(ListMode::Cursor, 6), (ListMode::IgnoresCursor, 8), (ListMode::IgnoresParams, 1)]
    {
        let server = FaultServer::start().await;
        server.set_list_mode(mode);
        let mut stored: Vec<String> =
            (0..23).map(|i| server.put(format!("blob {i}").as_bytes())).collect();
        stored.reverse();
        let client = BlossomClient::new(Arc::new(key.signer.clone()), Vec::new());
        let listed = client
            .list(
                &url(&server.url),
                &key.pubkey_hex,
                ListOptions { page_size: 5, ..Default::default() },
            )
            .await
            .unwrap();
        let listed: Vec<String> = listed.into_iter().filter_map(|d| d.sha256).collect();
        assert_eq!(listed, stored, "{mode:?}: every blob once, newest first");
        let pages = server.requests("GET", "/list/");
        assert!(pages <= most_pages, "{mode:?}: {pages} pages for 23 blobs of 5");
    }

    // Paged by time after a bulk upload: twelve blobs share each upload
    // second, more than a page holds. Longer pages are asked for; a server
    // that caps them loses some of a second's blobs, but the listing ends,
    // and lists nothing twice.
    for (max_limit, most_pages) in [(None, 10), (Some(5), 12)] {
        let server = FaultServer::start().await;
        server.set_list_mode(ListMode::SameSecond { per_second: 12, max_limit });
        let mut stored: Vec<String> =
            (0..23).map(|i| server.put(format!("blob {i}").as_bytes())).collect();
        stored.reverse();
        let client = BlossomClient::new(Arc::new(key.signer.clone()), Vec::new());
        let options = ListOptions { page_size: 5, ..Default::default() };
        let listed = client.list(&url(&server.url), &key.pubkey_hex, options).await.unwrap();
        let listed: Vec<String> = listed.into_iter().filter_map(|d| d.sha256).collect();
        let unique: std::collections::HashSet<_> = listed.iter().collect();
        assert_eq!(unique.len(), listed.len(), "{max_limit:?}: nothing twice");
        if max_limit.is_none() {
            assert_eq!(listed, stored, "every blob once, newest first");
        } else {
            assert!(listed.iter().all(|h| stored.contains(h)) && listed.len() == 10, "{listed:?}");
        }
        let pages = server.requests("GET", "/list/");
        assert!(pages <= most_pages, "{max_limit:?}: {pages} pages for 23 blobs of 5");
    }

    // A server that makes up new blobs on every page is not read forever.
    let endless = FaultServer::start().await;
    endless.set_list_mode(ListMode::Endless);
    let client = BlossomClient::new(Arc::new(key.signer.clone()), Vec::new());
    let options = ListOptions { page_size: 10, max_items: 50 };
    let err = client.list(&url(&endless.url), &key.pubkey_hex, options).await.unwrap_err();
    assert!(matches!(err, ClientError::ListTooLong { max: 50, .. }), "{err}");
    assert_eq!(endless.requests("GET", "/list/"), 6);

    let off = FaultServer::start().await;
    off.set_list_mode(ListMode::Disabled);
    let err =
        client.list(&url(&off.url), &key.pubkey_hex, ListOptions::default()).await.unwrap_err();
    assert_eq!(err.blossom().unwrap().class(), ErrorClass::Unsupported);

    for mode in [ListMode::Wrapped, ListMode::Html, ListMode::Truncated] {
        let broken = FaultServer::start().await;
        broken.set_list_mode(mode);
        broken.put(b"one blob");
        let started = std::time::Instant::now();
        let err = client
            .list(&url(&broken.url), &key.pubkey_hex, ListOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.blossom().unwrap().class(), ErrorClass::Permanent, "{mode:?}: {err}");
        assert!(err.to_string().contains("unreadable"), "{mode:?}: {err}");
        assert_eq!(broken.requests("GET", "/list/"), 1, "{mode:?}: asked once");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{mode:?}: no backoff");
    }
}

/// The commands: `get` of a blossom: URI writes the verified blob, `has`
/// and `list` answer per server in JSON.
#[tokio::test(flavor = "multi_thread")]
async fn get_has_and_list_commands() {
    let key = TestKey::new();
    let real = BlossomServer::start(&key.pubkey_hex);
    let work = tempfile::tempdir().unwrap();
    let bytes = random_bytes(200_000, 5);
    let hash = Sha256::digest(&bytes);
    let client = BlossomClient::new(Arc::new(key.signer.clone()), vec![url(&real.url)]);
    client
        .upload(&url(&real.url), &UploadSource::Bytes { bytes: bytes.clone().into(), mime: None })
        .await
        .unwrap();

    let uri =
        BlossomUri::new(hash, "application/octet-stream", bytes.len() as u64, &[url(&real.url)]);
    let out = work.path().join("fetched.bin");
    let mut command = cli(None);
    command.arg("get").arg(uri.to_string()).arg("-o").arg(&out).arg("--json");
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["size"], bytes.len());

    let missing = FaultServer::start().await;
    let mut command = cli(None);
    command
        .args(["--server", &real.url, "--server", &missing.url, "has", "--json"])
        .arg(hash.to_hex());
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(1), "absent on one: {}", describe(&output));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["servers"][0]["present"], true);
    assert_eq!(printed["servers"][1]["present"], false);

    let mut command = cli(Some(&key));
    command.args(["--server", &real.url, "list", "--json"]);
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let blobs = printed["servers"][0]["blobs"].as_array().unwrap();
    assert!(blobs.iter().any(|b| b["sha256"] == hash.to_hex()), "{printed}");

    // A bad URI is one line naming it, exit 2.
    let output = run_async({
        let mut c = cli(None);
        c.args(["--server", &real.url, "get", "blossom:nothex.pdf"]);
        c
    })
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("blossom:nothex.pdf"));

    // A blob no server has is a result, as for `has`: exit 1, no file.
    let absent = Sha256::digest(b"on no server at all").to_hex();
    let out = work.path().join("absent.bin");
    let output = run_async({
        let mut c = cli(None);
        c.args(["--server", &real.url, "get", &absent, "-o"]).arg(&out);
        c
    })
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not found") && stderr.contains(&absent), "{stderr}");
    assert!(!out.exists() && !out.with_extension("part").exists());
}

/// The blocking client, from a plain thread with no runtime.
#[test]
fn the_blocking_client_works_without_a_runtime() {
    use blossom_replicator::blocking::BlossomClient as Blocking;
    let key = TestKey::new();
    let real = BlossomServer::start(&key.pubkey_hex);
    let server = url(&real.url);
    let client = Blocking::new(Arc::new(key.signer.clone()), vec![server.clone()]).unwrap();
    let bytes = random_bytes(100_000, 8);
    let hash = Sha256::digest(&bytes);
    let source = UploadSource::Bytes { bytes: bytes.clone().into(), mime: None };
    let descriptor = client.upload(&server, &source).unwrap();
    assert_eq!(descriptor.size, Some(100_000));
    assert!(client.has(&server, &hash).unwrap());
    assert_eq!(client.get(&server, &hash).unwrap(), bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    client.get_to_file(&hash, std::slice::from_ref(&server), &path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    client.delete(&server, &hash).unwrap();
    assert!(!client.has(&server, &hash).unwrap());
}

/// Media (BUD-05) and reports (BUD-09): the fault server implements them
/// (the output of media differs from the input by design); the real
/// server does not, which reads as unsupported, not as a failure to retry.
#[tokio::test(flavor = "multi_thread")]
async fn media_and_report() {
    use support::fault_server::AuthMode;
    let key = TestKey::new();
    let fault = FaultServer::start().await;
    fault.set_auth(AuthMode::Strict);
    let real = BlossomServer::start(&key.pubkey_hex);
    let client = BlossomClient::new(Arc::new(key.signer.clone()), Vec::new());
    let bytes = random_bytes(50_000, 10);
    let input = Sha256::digest(&bytes);
    let source =
        UploadSource::Bytes { bytes: bytes.clone().into(), mime: Some("image/png".into()) };

    client.media_preflight(&url(&fault.url), input, 50_000, "image/png").await.unwrap();
    let output = client.upload_media(&url(&fault.url), &source).await.unwrap();
    let output_hash: Sha256 = output.sha256.unwrap().parse().unwrap();
    assert_ne!(output_hash, input, "the server's output is another blob");
    assert!(client.has(&url(&fault.url), &output_hash).await.unwrap());
    assert_eq!(fault.refused_tokens(), Vec::<String>::new(), "t=media, x = input hash");

    client.report(&url(&fault.url), &output_hash, "spam", "not what it says").await.unwrap();
    let reports = fault.reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["tags"][0], serde_json::json!(["x", output_hash.to_hex(), "spam"]));
    assert_eq!(reports[0]["content"], "not what it says");

    for (name, error) in [
        ("media", client.upload_media(&url(&real.url), &source).await.unwrap_err()),
        ("report", client.report(&url(&real.url), &input, "spam", "").await.unwrap_err()),
    ] {
        let class = error.blossom().map(blossom_replicator::blossom::Error::class);
        assert_eq!(class, Some(ErrorClass::Unsupported), "{name}: {error}");
    }
}
