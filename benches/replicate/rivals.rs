//! What our figures are measured against: python-blossom (sync and async),
//! blossom-client-sdk on node (its multi-server helper, and `uploadBlob` to
//! every server at once), a raw-HTTP lower bound (pre-signed `PUT
//! /upload`s from a minimal loop), and curl.

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

impl PyClient {
    /// How the table names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Sync => "python-blossom sync",
            Self::Async => "python-blossom async",
        }
    }
}

/// The ways blossom-client-sdk uploads one blob to several servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SdkApi {
    /// `multiServerUpload`, its helper for this: upload to the first
    /// server, then `PUT /mirror` to the others one after another.
    MultiServer,
    /// `uploadBlob` to every server under `Promise.all`, one token for all.
    PromiseAll,
}

impl SdkApi {
    /// Both, in the order the table shows them.
    pub(crate) const ALL: [Self; 2] = [Self::MultiServer, Self::PromiseAll];

    /// How the table names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::MultiServer => "blossom-client-sdk multiServerUpload",
            Self::PromiseAll => "blossom-client-sdk uploadBlob, Promise.all",
        }
    }
}

/// A competing client, run as a child process through its driver script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rival {
    /// python-blossom.
    Python(PyClient),
    /// blossom-client-sdk.
    Sdk(SdkApi),
}

impl Rival {
    /// How the table names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Python(client) => client.name(),
            Self::Sdk(api) => api.name(),
        }
    }
}

/// What one run of a rival's driver measured.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct RivalRun {
    /// Seconds per repeat, uploads only.
    pub(crate) times: Vec<f64>,
    /// Replicas stored with the right hash.
    pub(crate) ok: u64,
    /// Replicas that failed.
    pub(crate) errors: u64,
    /// Peak resident memory of the interpreter, bytes.
    pub(crate) peak_rss: u64,
}

impl RivalRun {
    /// The fastest repeat.
    pub(crate) fn best(&self) -> Duration {
        Duration::from_secs_f64(self.times.iter().copied().fold(f64::INFINITY, f64::min))
    }
}

/// What a rival is asked to upload.
#[derive(Debug, Clone)]
pub(crate) enum RivalBlobs {
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

/// The rivals this run has: python-blossom always, blossom-client-sdk when
/// node and the package are there.
#[derive(Debug, Clone)]
pub(crate) struct Rivals {
    /// python-blossom in its virtualenv.
    pub(crate) python: Python,
    /// blossom-client-sdk, if node is installed.
    pub(crate) node: Option<Node>,
}

impl Rivals {
    /// Every rival client this run can drive, python-blossom's first.
    pub(crate) fn available(&self) -> Vec<Rival> {
        let python = [PyClient::Sync, PyClient::Async].map(Rival::Python);
        let sdk = self.node.iter().flat_map(|_| SdkApi::ALL.map(Rival::Sdk));
        python.into_iter().chain(sdk).collect()
    }

    /// Uploads `blobs` to every server `repeats` times with `rival`.
    pub(crate) async fn upload(
        &self,
        rival: Rival,
        servers: &[String],
        blobs: &RivalBlobs,
        concurrency: usize,
        repeats: usize,
    ) -> RivalRun {
        match rival {
            Rival::Python(client) => {
                self.python.upload(client, servers, blobs, concurrency, repeats).await
            }
            Rival::Sdk(api) => {
                let node =
                    self.node.as_ref().expect("blossom-client-sdk is only offered with node");
                node.upload(api, servers, blobs, concurrency, repeats).await
            }
        }
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

impl Python {
    /// Uploads `blobs` to every server `repeats` times.
    pub(crate) async fn upload(
        &self,
        client: PyClient,
        servers: &[String],
        blobs: &RivalBlobs,
        concurrency: usize,
        repeats: usize,
    ) -> RivalRun {
        let client = if client == PyClient::Sync { "sync" } else { "async" };
        let args = driver_args(client, servers, &self.secret_hex, blobs, concurrency, repeats);
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/replicate/drive_python_blossom.py");
        run_driver("python-blossom", &self.interpreter, &script, &args).await
    }
}

/// Runs blossom-client-sdk under node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The node binary.
    pub(crate) program: PathBuf,
    /// The driver script, next to a `node_modules` that holds the SDK.
    pub(crate) script: PathBuf,
    /// The secret key, hex.
    pub(crate) secret_hex: String,
}

impl Node {
    /// Copies the driver into `dir`, beside a link to `modules` (the
    /// `node_modules` scripts/bench.sh installed): node resolves an ES
    /// module's imports from the script's own folder, not from a path
    /// variable.
    pub(crate) fn new(
        program: PathBuf,
        modules: &Path,
        dir: &Path,
        secret_hex: String,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::os::unix::fs::symlink(modules, dir.join("node_modules"))?;
        let script = dir.join("drive_blossom_client_sdk.mjs");
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/replicate/drive_blossom_client_sdk.mjs");
        std::fs::copy(source, &script)?;
        Ok(Self { program, script, secret_hex })
    }

    /// Uploads `blobs` to every server `repeats` times.
    pub(crate) async fn upload(
        &self,
        api: SdkApi,
        servers: &[String],
        blobs: &RivalBlobs,
        concurrency: usize,
        repeats: usize,
    ) -> RivalRun {
        let api = if api == SdkApi::MultiServer { "multi" } else { "all" };
        let args = driver_args(api, servers, &self.secret_hex, blobs, concurrency, repeats);
        run_driver("blossom-client-sdk", &self.program, &self.script, &args).await
    }
}

/// The one argument every driver takes, as JSON.
fn driver_args(
    client: &str,
    servers: &[String],
    secret_hex: &str,
    blobs: &RivalBlobs,
    concurrency: usize,
    repeats: usize,
) -> serde_json::Value {
    let mut args = serde_json::json!({
        "client": client,
        "servers": servers,
        "secret": secret_hex,
        "concurrency": concurrency,
        "repeats": repeats,
    });
    match blobs {
        RivalBlobs::Generated { count, size } => {
            args["count"] = (*count).into();
            args["size"] = (*size).into();
        }
        RivalBlobs::File { path, sha256 } => {
            args["file"] = path.to_string_lossy().into_owned().into();
            args["sha256"] = sha256.to_hex().into();
        }
    }
    args
}

/// Runs `script` under `program` and reads the one JSON line it prints.
async fn run_driver(
    rival: &str,
    program: &Path,
    script: &Path,
    args: &serde_json::Value,
) -> RivalRun {
    let output = Command::new(program)
        .arg(script)
        .arg(args.to_string())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {rival} driver: {e}"));
    assert!(
        output.status.success(),
        "{rival} driver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{rival} driver output: {e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
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
