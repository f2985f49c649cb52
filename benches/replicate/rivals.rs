//! What our figures are measured against: python-blossom (sync and async),
//! a raw-HTTP lower bound (pre-signed `PUT /upload`s from a minimal loop),
//! and curl.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use blossom_replicator::{KeySigner, Sha256, Signer as _};
use futures_util::StreamExt as _;
use nostr::prelude::{EventBuilder, Kind, Tag, Timestamp};
use tokio::process::Command;

/// The python-blossom clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PyClient {
    /// `BlossomClient.upload_to_all`: one server after another.
    Sync,
    /// `AsyncBlossomClient.upload_to_all`: all servers at once.
    Async,
}

/// What one python-blossom run measured.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct PyRun {
    /// Seconds per repeat, uploads only.
    pub(crate) times: Vec<f64>,
    /// Replicas stored with the right hash.
    pub(crate) ok: u64,
    /// Replicas that failed.
    pub(crate) errors: u64,
    /// Peak resident memory of the interpreter, bytes.
    pub(crate) peak_rss: u64,
}

impl PyClient {
    /// How the table names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sync => "python-blossom sync",
            Self::Async => "python-blossom async",
        }
    }
}

impl PyRun {
    /// The fastest repeat.
    pub(crate) fn best(&self) -> Duration {
        Duration::from_secs_f64(self.times.iter().copied().fold(f64::INFINITY, f64::min))
    }
}

/// Runs python-blossom in the benchmark's virtualenv.
#[derive(Debug, Clone)]
pub(crate) struct Python {
    /// The virtualenv's interpreter.
    pub(crate) interpreter: PathBuf,
    /// The secret key, hex.
    pub(crate) secret_hex: String,
}

/// What python-blossom is asked to upload.
#[derive(Debug, Clone)]
pub(crate) enum PyBlobs {
    /// `count` new blobs of `size` bytes each, made before timing.
    Generated {
        /// How many.
        count: usize,
        /// Bytes each.
        size: usize,
    },
    /// One file the client reads itself.
    File {
        /// Where it is.
        path: PathBuf,
        /// Its hash.
        sha256: Sha256,
    },
}

impl Python {
    /// Uploads `blobs` to every server `repeats` times.
    pub(crate) async fn upload(
        &self,
        client: PyClient,
        servers: &[String],
        blobs: &PyBlobs,
        concurrency: usize,
        repeats: usize,
    ) -> PyRun {
        let mut args = serde_json::json!({
            "client": if client == PyClient::Sync { "sync" } else { "async" },
            "servers": servers,
            "secret": self.secret_hex,
            "concurrency": concurrency,
            "repeats": repeats,
        });
        match blobs {
            PyBlobs::Generated { count, size } => {
                args["count"] = (*count).into();
                args["size"] = (*size).into();
            }
            PyBlobs::File { path, sha256 } => {
                args["file"] = path.to_string_lossy().into_owned().into();
                args["sha256"] = sha256.to_hex().into();
            }
        }
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/replicate/drive_python_blossom.py");
        let output = Command::new(&self.interpreter)
            .arg(script)
            .arg(args.to_string())
            .output()
            .await
            .expect("run python-blossom driver");
        assert!(
            output.status.success(),
            "python-blossom driver failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("python-blossom driver output")
    }
}

/// A `PUT /upload` authorization for `hash`, valid on every server for an
/// hour, as the header carries it.
pub(crate) async fn upload_token(signer: &KeySigner, hash: &Sha256) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let tags = [
        Tag::parse(["t", "upload"]).expect("tag"),
        Tag::expiration(Timestamp::from_secs(now + 3600)),
        Tag::parse(["x", &hash.to_hex()]).expect("tag"),
    ];
    let template = EventBuilder::new(Kind::Custom(24242), "Upload blob")
        .tags(tags)
        .custom_created_at(Timestamp::from_secs(now - 10));
    let event = signer.sign(template).await.expect("sign");
    let json = event.as_json();
    format!("Nostr {}", base64::engine::general_purpose::STANDARD.encode(json))
}

/// The lower bound: every (blob, server) pair as one pre-signed `PUT
/// /upload` from a minimal loop, `per_server` requests in flight per
/// server. Returns the time of the uploads alone.
pub(crate) async fn raw_http(
    signer: &KeySigner,
    servers: &[String],
    blobs: Vec<(Sha256, bytes::Bytes)>,
    per_server: usize,
) -> Duration {
    let mut signed = Vec::with_capacity(blobs.len());
    for (hash, body) in blobs {
        signed.push((upload_token(signer, &hash).await, body));
    }
    let clients: Vec<reqwest::Client> = servers.iter().map(|_| reqwest::Client::new()).collect();
    let puts = signed.iter().flat_map(|(token, body)| {
        servers.iter().zip(&clients).map(move |(server, client)| {
            client
                .put(format!("{server}/upload"))
                .header("Authorization", token)
                .header("Content-Type", "application/octet-stream")
                .body(body.clone())
                .send()
        })
    });
    let start = Instant::now();
    let mut responses =
        futures_util::stream::iter(puts).buffer_unordered(per_server * servers.len());
    while let Some(response) = responses.next().await {
        let status = response.expect("raw PUT").status();
        assert!(status.is_success(), "raw PUT answered {status}");
    }
    start.elapsed()
}

/// `curl -T` of one file to one server; the time of the upload alone.
pub(crate) async fn curl_upload(
    signer: &KeySigner,
    server: &str,
    path: &Path,
    hash: &Sha256,
) -> Duration {
    let token = upload_token(signer, hash).await;
    let start = Instant::now();
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--output", "/dev/null"])
        .args(["-H", &format!("Authorization: {token}")])
        .args(["-H", "Content-Type: application/octet-stream", "-H", "Expect:"])
        .arg("-T")
        .arg(path)
        .arg(format!("{server}/upload"))
        .output()
        .await
        .expect("run curl");
    let elapsed = start.elapsed();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    elapsed
}
