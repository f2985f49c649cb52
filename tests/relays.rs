//! BUD-03 server lists against a real Nostr relay (nostr-relay from PyPI)
//! on loopback: publish and fetch, replacement, dead and silent relays,
//! forged events, and `push --servers-from` deciding which real Blossom
//! server gets the upload.

mod support;

use std::time::Duration;

use blossom_replicator::relay::{self, Error, fetch_server_list, publish_server_list};
use blossom_replicator::{KeySigner, ServerUrl, Signer as _};
use nostr::prelude::{EventBuilder, FinalizeEvent as _, Keys, Kind, Tag, Timestamp};
use support::forged_relay::ForgedRelay;
use support::{BlossomServer, NostrRelay, TestKey, cli, describe, replica_states, run_async};
use url::Url;

const TIMEOUT: Duration = Duration::from_secs(10);

fn urls(relays: &[&str]) -> Vec<Url> {
    relays.iter().map(|r| relay::parse_relay_url(r).unwrap()).collect()
}

fn servers(list: &[&str]) -> Vec<ServerUrl> {
    list.iter().map(|s| ServerUrl::parse(s).unwrap()).collect()
}

fn names(servers: &[ServerUrl]) -> Vec<&str> {
    servers.iter().map(ServerUrl::as_str).collect()
}

/// An address where nothing listens: connecting fails at once.
fn dead_relay() -> String {
    format!("ws://127.0.0.1:{}", support::free_port())
}

#[tokio::test(flavor = "multi_thread")]
async fn published_list_is_fetched_back_in_order() {
    let relay = NostrRelay::start();
    let relays = urls(&[&relay.url]);
    let signer = KeySigner::generate();
    let list = servers(&["https://c.example", "http://127.0.0.1:3000", "https://a.example"]);

    let publication = publish_server_list(&relays, &signer, &list, TIMEOUT).await.unwrap();
    assert_eq!(publication.accepted(), 1, "{:?}\n{}", publication.relays, relay.log());

    let fetched = fetch_server_list(&relays, signer.public_key(), TIMEOUT).await.unwrap();
    let fetched = fetched.expect("the list is on the relay");
    assert_eq!(names(&fetched.servers), names(&list));
    assert_eq!(fetched.event_id, publication.event_id);
    assert_eq!(fetched.created_at, publication.created_at);

    let stranger = Keys::generate().public_key();
    assert_eq!(fetch_server_list(&relays, stranger, TIMEOUT).await.unwrap(), None);
}

/// Two publications within the same second: the second is still dated
/// after the first, so the relay keeps it.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_list_replaces_the_older() {
    let relay = NostrRelay::start();
    let relays = urls(&[&relay.url]);
    let signer = KeySigner::generate();

    let old = servers(&["https://old-a.example", "https://old-b.example"]);
    let first = publish_server_list(&relays, &signer, &old, TIMEOUT).await.unwrap();
    let new = servers(&["https://new.example", "https://old-a.example"]);
    let second = publish_server_list(&relays, &signer, &new, TIMEOUT).await.unwrap();
    assert_eq!((first.accepted(), second.accepted()), (1, 1), "{}", relay.log());
    assert!(second.created_at > first.created_at);

    let fetched = fetch_server_list(&relays, signer.public_key(), TIMEOUT).await.unwrap().unwrap();
    assert_eq!(names(&fetched.servers), names(&new));
    assert_eq!(fetched.event_id, second.event_id);
}

/// A relay that refuses connections and one that accepts them but never
/// answers sit beside a live one: the fetch still returns the list, and
/// within the timeout. With only the broken ones, the error names both.
#[tokio::test(flavor = "multi_thread")]
async fn dead_and_silent_relays_beside_a_live_one_do_not_fail_the_fetch() {
    let relay = NostrRelay::start();
    let signer = KeySigner::generate();
    let list = servers(&["https://a.example", "https://b.example"]);
    publish_server_list(&urls(&[&relay.url]), &signer, &list, TIMEOUT).await.unwrap();

    // The kernel completes the TCP handshake from the backlog; nobody
    // ever answers the websocket upgrade.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("ws://{}", silent.local_addr().unwrap());
    let dead_url = dead_relay();
    let timeout = Duration::from_secs(2);

    let started = std::time::Instant::now();
    let relays = urls(&[&dead_url, &silent_url, &relay.url]);
    let fetched = fetch_server_list(&relays, signer.public_key(), timeout).await.unwrap();
    assert_eq!(names(&fetched.unwrap().servers), names(&list));
    assert!(started.elapsed() < timeout + Duration::from_secs(2), "{:?}", started.elapsed());

    let broken = urls(&[&dead_url, &silent_url]);
    let err = fetch_server_list(&broken, signer.public_key(), timeout).await.unwrap_err();
    assert!(matches!(err, Error::AllFailed(ref all) if all.len() == 2), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&dead_url) && text.contains(&silent_url), "{text}");

    // Publishing reports each relay on its own.
    let relays = urls(&[&dead_url, &relay.url]);
    let publication = publish_server_list(&relays, &signer, &list, timeout).await.unwrap();
    assert!(publication.relays[0].result.is_err() && publication.relays[1].result.is_ok());
}

/// Events a relay should never have sent: a newer list with a signature
/// that is not the author's, one whose servers were changed after signing,
/// and a list by someone else. The real relay refuses the first outright;
/// a relay that serves them anyway is not believed.
#[tokio::test(flavor = "multi_thread")]
async fn forged_events_are_ignored() {
    let relay = NostrRelay::start();
    let author = Keys::generate();
    let signer = KeySigner::parse(&author.secret_key().to_secret_hex()).unwrap();
    let genuine = servers(&["https://genuine.example"]);
    publish_server_list(&urls(&[&relay.url]), &signer, &genuine, TIMEOUT).await.unwrap();

    let later = Timestamp::now() + 3600;
    let evil_list = |keys: &Keys| {
        EventBuilder::new(Kind::BlossomServerList, "")
            .tag(Tag::custom("server", ["https://evil.example"]))
            .custom_created_at(later)
            .finalize(keys)
            .unwrap()
    };
    let mallory = Keys::generate();
    let mut bad_signature = serde_json::to_value(evil_list(&author)).unwrap();
    bad_signature["sig"] = serde_json::to_value(evil_list(&mallory)).unwrap()["sig"].clone();
    let mut tampered = serde_json::to_value(evil_list(&author)).unwrap();
    tampered["tags"] = serde_json::json!([["server", "https://other-evil.example"]]);
    let foreign = serde_json::to_value(evil_list(&mallory)).unwrap();

    let answer = raw_publish(&relay.url, &bad_signature).await;
    assert_eq!(answer[2], false, "the real relay refuses a bad signature: {answer}");

    let forged = ForgedRelay::start(vec![bad_signature, tampered, foreign]).await;
    let relays = urls(&[&forged.url, &relay.url]);
    let fetched = fetch_server_list(&relays, author.public_key(), TIMEOUT).await.unwrap();
    assert_eq!(names(&fetched.unwrap().servers), names(&genuine));

    let alone = fetch_server_list(&urls(&[&forged.url]), author.public_key(), TIMEOUT).await;
    assert_eq!(alone.unwrap(), None, "nothing genuine on the forging relay");
}

/// Sends raw event JSON to a relay and returns its `OK` message.
async fn raw_publish(relay: &str, event: &serde_json::Value) -> serde_json::Value {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let (mut socket, _) = tokio_tungstenite::connect_async(relay).await.unwrap();
    let message = serde_json::json!(["EVENT", event]).to_string();
    socket.send(Message::text(message)).await.unwrap();
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame.unwrap() {
            let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if value[0] == "OK" {
                return value;
            }
        }
    }
    panic!("the relay closed without an OK");
}

/// The commands end to end: publish the configured order, list it back as
/// text and JSON, from the npub as well as the hex key.
#[tokio::test(flavor = "multi_thread")]
async fn servers_publish_and_list_through_the_cli() {
    let relay = NostrRelay::start();
    let key = TestKey::new();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    let text = format!(
        "relays = [\"{}\"]\n\n[[servers]]\nurl = \"https://second.example\"\n\n\
         [[servers]]\nurl = \"https://first.example\"\n",
        relay.url
    );
    std::fs::write(&config, text).unwrap();

    let mut publish = cli(Some(&key));
    publish.arg("--config").arg(&config).args(["servers", "publish"]);
    let output = run_async(publish).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("to 1 of 1 relays"));

    let mut list = cli(None);
    list.args(["servers", "list", &key.pubkey_hex, "--relay", &relay.url]);
    let output = run_async(list).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "https://second.example\nhttps://first.example\n"
    );

    // --server replaces the configured list; --json reports per relay.
    let mut publish = cli(Some(&key));
    publish.arg("--config").arg(&config).args([
        "servers",
        "publish",
        "--json",
        "--server",
        "https://only.example",
    ]);
    let output = run_async(publish).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["relays"][0]["accepted"], true, "{report}");

    let npub = {
        use nostr::nips::nip19::ToBech32 as _;
        key.signer.public_key().to_bech32().unwrap()
    };
    let mut list = cli(None);
    list.args(["servers", "list", &npub, "--json", "--relay", &relay.url]);
    let output = run_async(list).await;
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["servers"], serde_json::json!(["https://only.example"]), "{listed}");
    assert_eq!(listed["event_id"], report["event_id"]);

    // Nobody's list: exit 1, nothing on stdout.
    let mut list = cli(None);
    list.args(["servers", "list", &TestKey::new().pubkey_hex, "--relay", &relay.url]);
    let output = run_async(list).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(output.stdout.is_empty());
}

/// The user's list names three real Blossom servers in an order unlike
/// any configuration: the first one listed receives the one upload and the
/// other two mirror from it.
#[tokio::test(flavor = "multi_thread")]
async fn push_servers_from_uploads_to_the_first_listed_server() {
    let relay = NostrRelay::start();
    let key = TestKey::new();
    let blossoms: Vec<_> = (0..3).map(|_| BlossomServer::start(&key.pubkey_hex)).collect();
    let order = [&blossoms[2], &blossoms[0], &blossoms[1]];
    let list: Vec<ServerUrl> = order.iter().map(|b| ServerUrl::parse(&b.url).unwrap()).collect();
    let relays = urls(&[&dead_relay(), &relay.url]);
    publish_server_list(&relays[1..], &key.signer, &list, TIMEOUT).await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("replicator.db");
    let file = work.path().join("photo.bin");
    support::write_random_file(&file, 3 * 1024 * 1024, 7);
    let config = support::write_config(work.path(), &[], "");

    let mut push = cli(Some(&key));
    push.arg("--config").arg(&config).arg("--db").arg(&db).args([
        "push",
        "--servers-from",
        &key.pubkey_hex,
        "--relay",
        relays[0].as_str(),
        "--relay",
        relays[1].as_str(),
        "--json",
    ]);
    push.arg(&file);
    let output = run_async(push).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let summary_order: Vec<&str> = summary["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["server"].as_str().unwrap())
        .collect();
    assert_eq!(summary_order, names(&list), "the summary follows the list's order");

    let hash = blossom_replicator::Sha256::digest(&std::fs::read(&file).unwrap()).to_hex();
    for (blob, server, state, method) in replica_states(&db) {
        assert_eq!((blob.as_str(), state.as_str()), (hash.as_str(), "stored"), "{server}");
        let want = if server == order[0].url { "uploaded" } else { "mirrored" };
        assert_eq!(method, want, "{server}");
    }
    assert_eq!(order[0].upload_counts().get(&hash), Some(&1), "one upload, to the first");
    assert!(order[1].upload_counts().is_empty() && order[2].upload_counts().is_empty());
    for server in order {
        assert_eq!(server.fetch_hash(&hash).await.expect("present").0.to_hex(), hash);
    }
}

/// BUD-10 resolution: a `blossom:` URI with no server hint but an author
/// (`as=`) is fetched from the servers on the author's BUD-03 list.
#[tokio::test(flavor = "multi_thread")]
async fn get_finds_a_blob_through_the_authors_server_list() {
    let relay = NostrRelay::start();
    let key = TestKey::new();
    let holder = BlossomServer::start(&key.pubkey_hex);
    let empty = BlossomServer::start(&key.pubkey_hex);
    let bytes = b"found through the author's list\n".to_vec();
    let hash = blossom_replicator::Sha256::digest(&bytes);
    let client = blossom_replicator::BlossomClient::new(
        std::sync::Arc::new(key.signer.clone()),
        servers(&[&holder.url]),
    );
    let source =
        blossom_replicator::UploadSource::Bytes { bytes: bytes.clone().into(), mime: None };
    client.upload(&servers(&[&holder.url])[0], &source).await.unwrap();
    let list = servers(&[&empty.url, &holder.url]);
    publish_server_list(&urls(&[&relay.url]), &key.signer, &list, TIMEOUT).await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.toml");
    std::fs::write(&config, format!("relays = [\"{}\"]\n", relay.url)).unwrap();
    let out = work.path().join("blob.txt");
    let uri = format!("blossom:{hash}.txt?as={}", key.pubkey_hex);
    let mut command = cli(None);
    command.arg("--config").arg(&config).arg("get").arg(&uri).arg("-o").arg(&out);
    let output = run_async(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    assert!(String::from_utf8_lossy(&output.stdout).contains(&holder.url), "{}", describe(&output));
}
