//! One async call per Blossom endpoint, against one server, over that
//! server's own pooled HTTP client. Bodies are streamed from disk; the
//! bytes sent are hashed on the way out, so a file that changed after it was
//! hashed is caught before its last byte leaves.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Response, StatusCode};
use tokio::io::AsyncReadExt as _;

use super::auth::{self, Signer, TokenEncoding, TokenRequest, Verb};
use super::descriptor::{BlobDescriptor, Mismatch};
use super::error::{self, Endpoint, Error};
use super::server_url::ServerUrl;
use crate::blob::{LocalBlob, Sha256, StreamHasher};

/// Chunk size of streamed request bodies.
const CHUNK: usize = 64 * 1024;
/// Largest descriptor we read; anything longer is not a descriptor.
const MAX_DESCRIPTOR: usize = 64 * 1024;
/// How much of an error body we keep for the reason shown to people.
const MAX_ERROR_BODY: usize = 4 * 1024;
/// Most `x` tags in one batch token: about 100 bytes of header each, so 32
/// keep the `Authorization` header near 4 KiB, under the 8 KiB that common
/// proxies allow.
pub const MAX_BATCH_HASHES: usize = 32;
/// A prepared token is used only with at least this much validity left.
const MIN_TOKEN_VALIDITY: Duration = Duration::from_secs(60);

/// Timeouts for one server's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// Whole small requests (`HEAD`, `DELETE`).
    pub request: Duration,
    /// An upload that hands no byte to the connection for this long has
    /// stalled (the server stopped reading) and is cut. There is no total
    /// limit: a large upload over a slow link runs as long as it moves.
    pub stall: Duration,
    /// How long the server may think after the last byte of a body before
    /// it answers (storing and hashing a large blob takes time; field case
    /// B08).
    pub response: Duration,
    /// For transfers the server makes (mirror) or that are read whole
    /// (downloads): the slowest rate, in bytes per second, they are allowed
    /// on top of `response`.
    pub min_throughput: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(30),
            stall: Duration::from_secs(30),
            response: Duration::from_secs(120),
            min_throughput: 64 * 1024,
        }
    }
}

impl Timeouts {
    /// Total time allowed for a transfer of `size` bytes that we cannot
    /// watch byte by byte.
    pub fn transfer(&self, size: u64) -> Duration {
        self.response + Duration::from_secs(size / self.min_throughput.max(1))
    }
}

/// Whether a server holds a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// It does; `size` is the `Content-Length` it reported, if any.
    Present {
        /// Reported length.
        size: Option<u64>,
    },
    /// It does not (404).
    Absent,
}

/// A successful upload.
#[derive(Debug, Clone)]
pub struct UploadReceipt {
    /// What the server says it stored (already checked against our bytes).
    pub descriptor: BlobDescriptor,
    /// 201 (newly stored) rather than 200 (it already had it).
    pub created: bool,
}

/// A client for one Blossom server.
#[derive(Clone)]
pub struct ServerClient {
    server: ServerUrl,
    http: reqwest::Client,
    signer: Arc<dyn Signer>,
    timeouts: Timeouts,
    /// Batch tokens signed ahead, shared by the clones.
    prepared: Arc<Mutex<Prepared>>,
}

/// An upload token signed for several blobs at once: one signature whose
/// `x` tags name them all (BUD-11). It has no `server` tag, so one token
/// serves every server that accepts it.
#[derive(Clone)]
pub struct BatchToken {
    event: Arc<nostr::prelude::Event>,
    hashes: Vec<Sha256>,
    expires: SystemTime,
}

impl std::fmt::Debug for BatchToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchToken")
            .field("blobs", &self.hashes.len())
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl BatchToken {
    /// The blobs it covers.
    pub fn hashes(&self) -> &[Sha256] {
        &self.hashes
    }
}

/// Batch tokens held for the next upload or mirror of each blob they name
/// to one server; each blob's entry is taken by its first use.
#[derive(Debug, Default)]
struct Prepared {
    tokens: HashMap<Sha256, BatchToken>,
    /// The server refused a batch token: none are kept for it again.
    refused: bool,
}

/// The token a request carries, and whether it is a shared batch token.
struct Token {
    header: String,
    batch: bool,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient").field("server", &self.server).finish_non_exhaustive()
    }
}

impl ServerClient {
    /// A client with its own connection pool for `server`.
    ///
    /// # Errors
    ///
    /// When the TLS backend cannot be initialised.
    pub fn new(
        server: ServerUrl,
        signer: Arc<dyn Signer>,
        timeouts: Timeouts,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("blossom-replicator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { server, http, signer, timeouts, prepared: Arc::default() })
    }

    /// Signs upload tokens for `blobs` (hash and size): one token per
    /// [`MAX_BATCH_HASHES`] blobs, with an `x` tag for each, valid long
    /// enough for the largest to be sent. Nothing is kept: hand them to
    /// [`Self::add_batch_tokens`] of every server they are for.
    ///
    /// # Errors
    ///
    /// When the signer fails.
    pub async fn sign_batch_tokens(
        &self,
        blobs: &[(Sha256, u64)],
    ) -> Result<Vec<BatchToken>, Error> {
        let mut tokens = Vec::new();
        for batch in blobs.chunks(MAX_BATCH_HASHES) {
            let largest = batch.iter().map(|(_, size)| *size).max().unwrap_or_default();
            let lifetime = self.timeouts.transfer(largest) + MIN_TOKEN_VALIDITY * 2;
            let hashes: Vec<Sha256> = batch.iter().map(|(hash, _)| *hash).collect();
            let request =
                TokenRequest { verb: Verb::Upload, hashes: hashes.clone(), server: None, lifetime };
            let template =
                request.template(SystemTime::now()).map_err(|e| Error::Sign(e.to_string()))?;
            let event = self.signer.sign(template).await.map_err(|e| Error::Sign(e.to_string()))?;
            let expires = SystemTime::now() + lifetime;
            tokens.push(BatchToken { event: Arc::new(event), hashes, expires });
        }
        Ok(tokens)
    }

    /// Keeps `tokens` for the next upload or mirror of each blob they name
    /// to this server, unless the server refuses batch tokens. A blob's
    /// entry is used once; a server that refuses it (some accept one blob
    /// per token, or each token once) gets a token of its own per request
    /// from then on, see [`Self::batch_tokens_refused`].
    pub fn add_batch_tokens(&self, tokens: &[BatchToken]) {
        let mut prepared = self.prepared.lock().expect("token cache poisoned");
        if prepared.refused {
            return;
        }
        let now = SystemTime::now();
        prepared.tokens.retain(|_, token| token.expires > now + MIN_TOKEN_VALIDITY);
        for token in tokens {
            for hash in &token.hashes {
                prepared.tokens.insert(*hash, token.clone());
            }
        }
    }

    /// [`Self::sign_batch_tokens`] and [`Self::add_batch_tokens`] for this
    /// server: the next uploads of `blobs` share a signature per
    /// [`MAX_BATCH_HASHES`] blobs. Signs nothing for fewer than two blobs
    /// or when the server refuses batch tokens. Returns how many tokens
    /// were signed.
    ///
    /// # Errors
    ///
    /// When the signer fails.
    pub async fn prepare_upload_tokens(&self, blobs: &[(Sha256, u64)]) -> Result<usize, Error> {
        if blobs.len() < 2 || self.batch_tokens_refused() {
            return Ok(0);
        }
        let tokens = self.sign_batch_tokens(blobs).await?;
        self.add_batch_tokens(&tokens);
        Ok(tokens.len())
    }

    /// The server refused a batch token (401 or 403) in this process, or
    /// [`Self::refuse_batch_tokens`] said it would: every request signs a
    /// token of its own.
    pub fn batch_tokens_refused(&self) -> bool {
        self.prepared.lock().expect("token cache poisoned").refused
    }

    /// Stops using batch tokens with this server (it refused one in an
    /// earlier run).
    pub fn refuse_batch_tokens(&self) {
        let mut prepared = self.prepared.lock().expect("token cache poisoned");
        prepared.refused = true;
        prepared.tokens.clear();
    }

    /// Whether a batch token waits for the next upload of `hash`.
    pub fn has_batch_token(&self, hash: &Sha256) -> bool {
        let prepared = self.prepared.lock().expect("token cache poisoned");
        let now = SystemTime::now();
        prepared.tokens.get(hash).is_some_and(|token| token.expires > now + MIN_TOKEN_VALIDITY)
    }

    /// The batch token for `hash` in `encoding`, if one with at least a
    /// minute left waits; taken, so each is used once per blob.
    fn take_prepared(&self, hash: &Sha256, encoding: TokenEncoding) -> Option<String> {
        let mut prepared = self.prepared.lock().expect("token cache poisoned");
        let token = prepared.tokens.remove(hash)?;
        let usable = token.expires > SystemTime::now() + MIN_TOKEN_VALIDITY;
        usable.then(|| auth::header_value(&token.event, encoding))
    }

    /// An upload (or mirror) token for `blob`: the prepared batch token
    /// when there is one, else one of its own.
    async fn upload_token(
        &self,
        blob: &LocalBlob,
        encoding: TokenEncoding,
    ) -> Result<Token, Error> {
        if let Some(header) = self.take_prepared(&blob.sha256, encoding) {
            return Ok(Token { header, batch: true });
        }
        let lifetime = self.timeouts.transfer(blob.size) + MIN_TOKEN_VALIDITY;
        let header = self.token(Verb::Upload, blob.sha256, lifetime, encoding).await?;
        Ok(Token { header, batch: false })
    }

    /// Notes a refusal of a batch token: the caller signs one of its own
    /// and tries again, and so does every later request.
    fn check_batch_refusal(&self, token: &Token, status: StatusCode) {
        if token.batch
            && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            && !self.batch_tokens_refused()
        {
            tracing::info!(
                server = %self.server,
                status = status.as_u16(),
                "server refuses tokens that cover several blobs; one token per request from now on"
            );
            self.refuse_batch_tokens();
        }
    }

    /// The server this client talks to.
    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    /// `HEAD /<sha256>`: does the server hold the blob? Asks without a token
    /// first and signs a `get` token only when the server wants one.
    ///
    /// # Errors
    ///
    /// Transport failures and any status but 200 and 404.
    pub async fn has_blob(
        &self,
        hash: &Sha256,
        encoding: TokenEncoding,
    ) -> Result<Presence, Error> {
        let url = self.server.blob(hash);
        let mut response = self.send_head(url.as_str(), None).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let token = self.token(Verb::Get, *hash, Duration::from_secs(300), encoding).await?;
            response = self.send_head(url.as_str(), Some(token)).await?;
        }
        match response.status() {
            status if status.is_success() => {
                Ok(Presence::Present { size: content_length(&response) })
            }
            StatusCode::NOT_FOUND => Ok(Presence::Absent),
            _ => Err(status_error(Endpoint::HasBlob, url.as_str(), response).await),
        }
    }

    /// `HEAD` of a blob URL on any host (a source to mirror from), with
    /// this client's pool and timeouts: the length it gives, if any.
    ///
    /// # Errors
    ///
    /// Transport failures and any status but success.
    pub async fn source_length(&self, url: &str) -> Result<Option<u64>, Error> {
        let response = self.send_head(url, None).await?;
        if !response.status().is_success() {
            return Err(status_error(Endpoint::HasBlob, url, response).await);
        }
        Ok(content_length(&response))
    }

    async fn send_head(&self, url: &str, token: Option<String>) -> Result<Response, Error> {
        let mut request = self.http.head(url).timeout(self.timeouts.request);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, token);
        }
        request.send().await.map_err(|e| Error::transport(Endpoint::HasBlob, url, e))
    }

    /// `HEAD /upload` (BUD-06): asks whether the server would take this
    /// blob, before its body is sent. It is an optimisation only: callers
    /// treat any answer but a definite refusal (402, 413, 415) as "go on".
    ///
    /// # Errors
    ///
    /// Transport failures and any status but success (404, 405 and 501
    /// classify as unsupported).
    pub async fn upload_preflight(
        &self,
        blob: &LocalBlob,
        encoding: TokenEncoding,
    ) -> Result<(), Error> {
        self.preflight(Endpoint::UploadPreflight, "upload", Verb::Upload, blob, encoding).await
    }

    async fn preflight(
        &self,
        endpoint: Endpoint,
        path: &str,
        verb: Verb,
        blob: &LocalBlob,
        encoding: TokenEncoding,
    ) -> Result<(), Error> {
        let url = self.server.endpoint(path);
        let token = self.token(verb, blob.sha256, Duration::from_secs(300), encoding).await?;
        let response = self
            .http
            .head(url.clone())
            .timeout(self.timeouts.request)
            .header(AUTHORIZATION, token)
            .header("X-SHA-256", blob.sha256.to_hex())
            .header("X-Content-Length", blob.size)
            .header("X-Content-Type", &blob.mime)
            .send()
            .await
            .map_err(|e| Error::transport(endpoint, url.as_str(), e))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(status_error(endpoint, url.as_str(), response).await)
    }

    /// `PUT /upload` of any stream of chunks that should make up `blob`
    /// (its hash, size and type; the path is only named in errors). The
    /// bytes are checked on the way out as for a file.
    ///
    /// # Errors
    ///
    /// As [`ServerClient::upload`].
    pub async fn upload_stream(
        &self,
        blob: &LocalBlob,
        chunks: Chunks,
        encoding: TokenEncoding,
        sent: Arc<AtomicU64>,
    ) -> Result<UploadReceipt, Error> {
        let bad = Arc::new(AtomicBool::new(false));
        let result =
            self.put_upload(blob, |p| verified(chunks, blob, sent, bad.clone(), p), encoding).await;
        if bad.load(Ordering::SeqCst) {
            return Err(source_changed(&blob.path, "the bytes do not match the hash given"));
        }
        result
    }

    /// `GET /<sha256>`, from byte `from` on when it is not 0 (`Range`,
    /// to resume). Redirects are followed. The caller checks the bytes.
    ///
    /// # Errors
    ///
    /// Transport failures and any status but success (404 included).
    pub async fn download(
        &self,
        hash: &Sha256,
        from: u64,
        encoding: TokenEncoding,
    ) -> Result<Download, Error> {
        let url = self.server.blob(hash);
        let ranged = match self.get_range(url.as_str(), hash, u64::MAX / 2, from, encoding).await {
            Err(e) if from > 0 && e.status() == Some(416) => None,
            result => Some(result?),
        };
        if let Some(response) = ranged {
            match served_range(&response) {
                None => return Ok(Download::new(response, 0, None)),
                // A range that starts at or before what the caller has is
                // usable: the caller skips the overlap.
                Some((start, total)) if start <= from => {
                    return Ok(Download::new(response, start, total));
                }
                Some(_) => {}
            }
        }
        // A server that refuses the range (416), or serves another one than
        // asked, is asked for the whole blob, and the caller skips what it
        // has (field case B23).
        tracing::debug!(server = %self.server, from, "range not served as asked; fetching the whole blob");
        let response = self.get_range(url.as_str(), hash, u64::MAX / 2, 0, encoding).await?;
        Ok(Download::new(response, 0, None))
    }

    /// One page of `GET /list/<pubkey>` (BUD-12) with these query
    /// parameters, signing a `list` token only when the server asks.
    ///
    /// # Errors
    ///
    /// Transport failures, statuses (404, 405, 501 classify as
    /// unsupported), and a body that is not an array of descriptors.
    pub async fn list_page(
        &self,
        pubkey_hex: &str,
        query: &[(&str, String)],
        encoding: TokenEncoding,
    ) -> Result<Vec<BlobDescriptor>, Error> {
        let mut url = self.server.endpoint(&format!("list/{pubkey_hex}"));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let url = &url;
        let send = |token: Option<String>| {
            let mut request = self.http.get(url.clone()).timeout(self.timeouts.request);
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, token);
            }
            async move {
                request.send().await.map_err(|e| Error::transport(Endpoint::List, url.as_str(), e))
            }
        };
        let mut response = send(None).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let request = TokenRequest {
                verb: Verb::List,
                hashes: Vec::new(),
                server: None,
                lifetime: Duration::from_secs(300),
            };
            response = send(Some(self.sign(request, encoding).await?)).await?;
        }
        if !response.status().is_success() {
            return Err(status_error(Endpoint::List, url.as_str(), response).await);
        }
        let body = read_capped(response, 64 * 1024 * 1024).await;
        let items: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| error::bad_descriptor(Endpoint::List, url.as_str(), &e, &body))?;
        // One odd entry does not hide the others.
        Ok(items.into_iter().filter_map(|item| serde_json::from_value(item).ok()).collect())
    }

    /// `PUT /media` (BUD-05): the server may transform the blob, so the
    /// descriptor names the output, whose hash differs from `blob`'s by
    /// design; only its presence is required.
    ///
    /// # Errors
    ///
    /// Transport and status failures (404, 405, 501 classify as
    /// unsupported); a descriptor without a hash.
    pub async fn media(
        &self,
        blob: &LocalBlob,
        chunks: Chunks,
        encoding: TokenEncoding,
    ) -> Result<UploadReceipt, Error> {
        let url = self.server.endpoint("media");
        let lifetime = self.timeouts.transfer(blob.size) + Duration::from_secs(60);
        let token = self.token(Verb::Media, blob.sha256, lifetime, encoding).await?;
        let bad = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(SendProgress::default());
        let request = self
            .http
            .put(url.clone())
            .header(AUTHORIZATION, token)
            .header(CONTENT_TYPE, &blob.mime)
            .header(CONTENT_LENGTH, blob.size)
            .header("X-SHA-256", blob.sha256.to_hex())
            .body(verified(chunks, blob, sent, bad.clone(), progress.clone()))
            .send();
        let response = tokio::select! {
            response = request => response.map_err(|e| Error::transport(Endpoint::Media, url.as_str(), e))?,
            stalled = watchdog(&progress, self.timeouts) => {
                return Err(Error::Stalled { url: url.to_string(), detail: stalled });
            }
        };
        if bad.load(Ordering::SeqCst) {
            return Err(source_changed(&blob.path, "the bytes do not match the hash given"));
        }
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(Endpoint::Media, url.as_str(), response).await);
        }
        let body = read_capped(response, MAX_DESCRIPTOR).await;
        let descriptor = BlobDescriptor::parse(&body)
            .map_err(|e| error::bad_descriptor(Endpoint::Media, url.as_str(), &e, &body))?;
        if descriptor.sha256.as_deref().and_then(|h| h.parse::<Sha256>().ok()).is_none() {
            let mismatch = Mismatch::MissingHash;
            return Err(Error::Integrity { url: url.to_string(), mismatch });
        }
        Ok(UploadReceipt { descriptor, created: status == StatusCode::CREATED })
    }

    /// `HEAD /media` (BUD-05): would the server take this blob for
    /// processing?
    ///
    /// # Errors
    ///
    /// As [`ServerClient::upload_preflight`].
    pub async fn media_preflight(
        &self,
        blob: &LocalBlob,
        encoding: TokenEncoding,
    ) -> Result<(), Error> {
        self.preflight(Endpoint::MediaPreflight, "media", Verb::Media, blob, encoding).await
    }

    /// `PUT /report` (BUD-09) with a signed report event (kind 1984).
    ///
    /// # Errors
    ///
    /// Transport and status failures.
    pub async fn report(&self, event_json: String) -> Result<(), Error> {
        let url = self.server.endpoint("report");
        let response = self
            .http
            .put(url.clone())
            .timeout(self.timeouts.request)
            .header(CONTENT_TYPE, "application/json")
            .body(event_json)
            .send()
            .await
            .map_err(|e| Error::transport(Endpoint::Report, url.as_str(), e))?;
        if response.status().is_success() {
            return Ok(());
        }
        Err(status_error(Endpoint::Report, url.as_str(), response).await)
    }

    /// `PUT /upload`, streaming the file with an explicit `Content-Length`
    /// (servers refuse chunked bodies with 411). Succeeds only when the
    /// server's descriptor names exactly our hash and size.
    ///
    /// `sent` counts body bytes as they leave, for progress.
    ///
    /// # Errors
    ///
    /// Transport and status failures; [`Error::Integrity`] when the server
    /// describes other bytes; [`Error::SourceChanged`] when the file no
    /// longer hashes to `blob.sha256`.
    pub async fn upload(
        &self,
        blob: &LocalBlob,
        encoding: TokenEncoding,
        sent: Arc<AtomicU64>,
    ) -> Result<UploadReceipt, Error> {
        let body = file_chunks(blob).await?;
        let bad = Arc::new(AtomicBool::new(false));
        let result =
            self.put_upload(blob, |p| verified(body, blob, sent, bad.clone(), p), encoding).await;
        if bad.load(Ordering::SeqCst) {
            return Err(source_changed(&blob.path, "its bytes no longer match the hash"));
        }
        result
    }

    /// Downloads a blob from `source` (another server's URL for it) and
    /// streams it into `PUT /upload` here, hashing on the way: bytes that do
    /// not hash to `blob.sha256` are cut off before their last chunk, so the
    /// server never receives a complete wrong body.
    ///
    /// # Errors
    ///
    /// As [`ServerClient::upload`]; [`Error::WrongBytes`] when the source
    /// served other bytes; failures of the download itself.
    pub async fn upload_from(
        &self,
        source: &str,
        blob: &LocalBlob,
        encoding: TokenEncoding,
        sent: Arc<AtomicU64>,
    ) -> Result<UploadReceipt, Error> {
        let response = self.get(source, &blob.sha256, blob.size, encoding).await?;
        if content_length(&response).is_some_and(|len| len != blob.size) {
            return Err(Error::WrongBytes { url: source.to_owned(), expected: blob.sha256 });
        }
        let chunks =
            response.bytes_stream().map(|chunk| chunk.map_err(std::io::Error::other)).boxed();
        let bad = Arc::new(AtomicBool::new(false));
        let result =
            self.put_upload(blob, |p| verified(chunks, blob, sent, bad.clone(), p), encoding).await;
        if bad.load(Ordering::SeqCst) {
            return Err(Error::WrongBytes { url: source.to_owned(), expected: blob.sha256 });
        }
        result
    }

    /// `PUT /upload` of a streamed body of exactly `blob.size` bytes.
    async fn put_upload(
        &self,
        blob: &LocalBlob,
        body: impl FnOnce(Arc<SendProgress>) -> reqwest::Body,
        encoding: TokenEncoding,
    ) -> Result<UploadReceipt, Error> {
        let url = self.server.endpoint("upload");
        let token = self.upload_token(blob, encoding).await?;
        let progress = Arc::new(SendProgress::default());
        let request = self
            .http
            .put(url.clone())
            .header(AUTHORIZATION, &token.header)
            .header(CONTENT_TYPE, &blob.mime)
            .header(CONTENT_LENGTH, blob.size)
            .header("X-SHA-256", blob.sha256.to_hex())
            .body(body(progress.clone()))
            .send();
        let response = tokio::select! {
            response = request => response.map_err(|e| Error::transport(Endpoint::Upload, url.as_str(), e))?,
            stalled = watchdog(&progress, self.timeouts) => {
                return Err(Error::Stalled { url: url.to_string(), detail: stalled });
            }
        };
        let status = response.status();
        if !status.is_success() {
            self.check_batch_refusal(&token, status);
            return Err(status_error(Endpoint::Upload, url.as_str(), response).await);
        }
        let descriptor =
            self.descriptor(Endpoint::Upload, url.as_str(), response, blob, encoding).await?;
        Ok(UploadReceipt { descriptor, created: status == StatusCode::CREATED })
    }

    /// `PUT /mirror` (BUD-04): asks the server to fetch the blob from
    /// `source` itself. Nothing is sent but the URL.
    ///
    /// # Errors
    ///
    /// Transport and status failures (404, 405 and 501 classify as
    /// unsupported); [`Error::Integrity`] when the server describes other
    /// bytes.
    pub async fn mirror(
        &self,
        source: &str,
        blob: &LocalBlob,
        encoding: TokenEncoding,
    ) -> Result<UploadReceipt, Error> {
        let url = self.server.endpoint("mirror");
        let token = self.upload_token(blob, encoding).await?;
        let body = serde_json::json!({ "url": source }).to_string();
        let response = self
            .http
            .put(url.clone())
            .timeout(self.timeouts.transfer(blob.size))
            .header(AUTHORIZATION, &token.header)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::transport(Endpoint::Mirror, url.as_str(), e))?;
        let status = response.status();
        if !status.is_success() {
            self.check_batch_refusal(&token, status);
            return Err(status_error(Endpoint::Mirror, url.as_str(), response).await);
        }
        let descriptor =
            self.descriptor(Endpoint::Mirror, url.as_str(), response, blob, encoding).await?;
        Ok(UploadReceipt { descriptor, created: status == StatusCode::CREATED })
    }

    /// `DELETE /<sha256>` with a token scoped to this server. A 404 counts
    /// as success: the blob is not there.
    ///
    /// # Errors
    ///
    /// Transport failures and any other status.
    pub async fn delete(&self, hash: &Sha256, encoding: TokenEncoding) -> Result<(), Error> {
        let url = self.server.blob(hash);
        let token = self.token(Verb::Delete, *hash, Duration::from_secs(300), encoding).await?;
        let response = self
            .http
            .delete(url.clone())
            .timeout(self.timeouts.request)
            .header(AUTHORIZATION, token)
            .send()
            .await
            .map_err(|e| Error::transport(Endpoint::Delete, url.as_str(), e))?;
        match response.status() {
            status if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(status_error(Endpoint::Delete, url.as_str(), response).await),
        }
    }

    /// Downloads a blob from this server and hashes it, with constant
    /// memory (`size` is the expected length, which sets the time allowed).
    /// `None` when the server does not have it.
    ///
    /// # Errors
    ///
    /// Transport failures and statuses other than success and 404.
    pub async fn fetch_hash(
        &self,
        hash: &Sha256,
        size: u64,
        encoding: TokenEncoding,
    ) -> Result<Option<(Sha256, u64)>, Error> {
        let url = self.server.blob(hash);
        let response = match self.get(url.as_str(), hash, size, encoding).await {
            Ok(response) => response,
            Err(Error::Status { status: StatusCode::NOT_FOUND, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut hasher = StreamHasher::default();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::transport(Endpoint::GetBlob, url.as_str(), e))?;
            hasher.update(&chunk);
        }
        Ok(Some(hasher.finish()))
    }

    /// `GET` of a blob URL, signing a `get` token only if the server asks.
    async fn get(
        &self,
        url: &str,
        hash: &Sha256,
        size: u64,
        encoding: TokenEncoding,
    ) -> Result<Response, Error> {
        self.get_range(url, hash, size, 0, encoding).await
    }

    /// As [`ServerClient::get`], asking for the bytes from `from` on.
    async fn get_range(
        &self,
        url: &str,
        hash: &Sha256,
        size: u64,
        from: u64,
        encoding: TokenEncoding,
    ) -> Result<Response, Error> {
        let send = |token: Option<String>| {
            let mut request = self.http.get(url).timeout(self.timeouts.transfer(size));
            if from > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
            }
            if let Some(token) = token {
                request = request.header(AUTHORIZATION, token);
            }
            async move { request.send().await.map_err(|e| Error::transport(Endpoint::GetBlob, url, e)) }
        };
        let mut response = send(None).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            response =
                send(Some(self.token(Verb::Get, *hash, Duration::from_secs(300), encoding).await?))
                    .await?;
        }
        if !response.status().is_success() {
            return Err(status_error(Endpoint::GetBlob, url, response).await);
        }
        Ok(response)
    }

    /// Reads and checks the descriptor of a successful upload or mirror.
    async fn descriptor(
        &self,
        endpoint: Endpoint,
        url: &str,
        response: Response,
        blob: &LocalBlob,
        encoding: TokenEncoding,
    ) -> Result<BlobDescriptor, Error> {
        let body = read_capped(response, MAX_DESCRIPTOR).await;
        let descriptor = BlobDescriptor::parse(&body)
            .map_err(|e| error::bad_descriptor(endpoint, url, &e, &body))?;
        self.confirm(&descriptor, blob, encoding, url).await?;
        Ok(descriptor)
    }

    /// Checks a descriptor against our bytes. One without a hash is
    /// accepted only when `HEAD` confirms presence and length (field case
    /// B10).
    async fn confirm(
        &self,
        descriptor: &BlobDescriptor,
        blob: &LocalBlob,
        encoding: TokenEncoding,
        url: &str,
    ) -> Result<(), Error> {
        let mismatch = match descriptor.check(&blob.sha256, blob.size) {
            Ok(()) => return Ok(()),
            Err(Mismatch::MissingHash) => Mismatch::MissingHash,
            Err(mismatch) => return Err(Error::Integrity { url: url.to_owned(), mismatch }),
        };
        match self.has_blob(&blob.sha256, encoding).await? {
            Presence::Present { size } if size.is_none_or(|s| s == blob.size) => Ok(()),
            _ => Err(Error::Integrity { url: url.to_owned(), mismatch }),
        }
    }

    async fn token(
        &self,
        verb: Verb,
        hash: Sha256,
        lifetime: Duration,
        encoding: TokenEncoding,
    ) -> Result<String, Error> {
        // Delete tokens are scoped to this server: an unscoped one, if
        // intercepted, would delete the blob everywhere.
        let server = (verb == Verb::Delete).then(|| self.server.domain().to_owned());
        let request = TokenRequest { verb, hashes: vec![hash], server, lifetime };
        self.sign(request, encoding).await
    }

    async fn sign(&self, request: TokenRequest, encoding: TokenEncoding) -> Result<String, Error> {
        let template =
            request.template(SystemTime::now()).map_err(|e| Error::Sign(e.to_string()))?;
        let event = self.signer.sign(template).await.map_err(|e| Error::Sign(e.to_string()))?;
        Ok(auth::header_value(&event, encoding))
    }
}

/// A body as a stream of chunks.
pub type Chunks = futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// A download under way.
#[derive(Debug)]
pub struct Download {
    /// The response; its body starts at byte `offset` of the blob.
    pub response: Response,
    /// Where the body starts: the `Range` start when the server honoured
    /// it (206), else 0 (the server sent everything; field case B23).
    pub offset: u64,
    /// The blob's full length, when the server said.
    pub length: Option<u64>,
}

impl Download {
    fn new(response: Response, offset: u64, total: Option<u64>) -> Self {
        let length = total.or_else(|| content_length(&response).map(|l| l + offset));
        Self { response, offset, length }
    }
}

/// For a 206, where the body starts and the blob's full length, from
/// `Content-Range: bytes START-END/TOTAL`; `None` for any other status (the
/// body is the whole blob). A 206 without a readable range starts nowhere
/// usable.
fn served_range(response: &Response) -> Option<(u64, Option<u64>)> {
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return None;
    }
    let range = response
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_content_range);
    Some(range.unwrap_or((u64::MAX, None)))
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) into its start and total.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse::<u64>().ok().filter(|t| end < *t)?),
    };
    (start <= end).then_some((start, total))
}

/// The file's first `blob.size` bytes as a stream of chunks.
async fn file_chunks(blob: &LocalBlob) -> Result<Chunks, Error> {
    let file = tokio::fs::File::open(&blob.path)
        .await
        .map_err(|source| Error::Source { path: blob.path.clone(), source })?;
    let len = file
        .metadata()
        .await
        .map_err(|source| Error::Source { path: blob.path.clone(), source })?
        .len();
    if len < blob.size {
        return Err(source_changed(&blob.path, &format!("{len} bytes, expected {}", blob.size)));
    }
    Ok(tokio_util::io::ReaderStream::with_capacity(file.take(blob.size), CHUNK).boxed())
}

/// A request body of exactly `blob.size` bytes from `chunks`, hashed as
/// they go. When the bytes turn out not to be the blob (wrong hash, too few
/// or too many bytes) the stream fails before its last chunk, so the server
/// never receives a complete wrong body, and `bad` tells the caller why.
fn verified(
    chunks: Chunks,
    blob: &LocalBlob,
    sent: Arc<AtomicU64>,
    bad: Arc<AtomicBool>,
    progress: Arc<SendProgress>,
) -> reqwest::Body {
    let (expected, size) = (blob.sha256, blob.size);
    let stream =
        futures_util::stream::unfold(Some((chunks, StreamHasher::default())), move |state| {
            let (sent, bad, progress) = (sent.clone(), bad.clone(), progress.clone());
            async move {
                let (mut chunks, mut hasher) = state?;
                let outcome = match chunks.next().await {
                    Some(Err(e)) => Err(e),
                    None if hasher.len() < size => {
                        Err(changed_error(&bad, "fewer bytes than expected"))
                    }
                    None => return None,
                    Some(Ok(chunk)) if hasher.len() + chunk.len() as u64 > size => {
                        Err(changed_error(&bad, "more bytes than expected"))
                    }
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        if hasher.len() == size && hasher.clone().finish().0 != expected {
                            Err(changed_error(&bad, "hash differs"))
                        } else {
                            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            progress.moved(hasher.len() == size);
                            Ok(chunk)
                        }
                    }
                };
                let next = outcome.is_ok().then_some((chunks, hasher));
                Some((outcome, next))
            }
        });
    reqwest::Body::wrap_stream(stream)
}

/// How far a streamed body has got, for the stall watchdog.
#[derive(Debug)]
struct SendProgress {
    start: std::time::Instant,
    /// Milliseconds after `start` when the last chunk was handed over.
    last_ms: AtomicU64,
    /// Milliseconds after `start` when the last byte was handed over, or 0.
    done_ms: AtomicU64,
}

impl Default for SendProgress {
    fn default() -> Self {
        Self {
            start: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            done_ms: AtomicU64::new(0),
        }
    }
}

impl SendProgress {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    fn moved(&self, finished: bool) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if finished {
            self.done_ms.store(now, Ordering::Relaxed);
        }
    }
}

/// Resolves when an upload has stopped moving: no byte handed to the
/// connection for `stall`, or no answer `response` after the last byte.
/// While bytes flow it never fires, however long the upload takes.
async fn watchdog(progress: &SendProgress, timeouts: Timeouts) -> String {
    let tick = (timeouts.stall / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let now = progress.now_ms();
        let done = progress.done_ms.load(Ordering::Relaxed);
        if done > 0 {
            if now - done > timeouts.response.as_millis() as u64 {
                return format!("no answer {:?} after the last byte", timeouts.response);
            }
        } else if now - progress.last_ms.load(Ordering::Relaxed) > timeouts.stall.as_millis() as u64
        {
            return format!("the server took no data for {:?}", timeouts.stall);
        }
    }
}

fn changed_error(changed: &AtomicBool, detail: &str) -> std::io::Error {
    changed.store(true, Ordering::SeqCst);
    std::io::Error::other(format!("source changed: {detail}"))
}

fn source_changed(path: &Path, detail: &str) -> Error {
    Error::SourceChanged { path: path.to_owned(), detail: detail.to_owned() }
}

fn content_length(response: &Response) -> Option<u64> {
    response.headers().get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

async fn status_error(endpoint: Endpoint, url: &str, response: Response) -> Error {
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_capped(response, MAX_ERROR_BODY).await;
    Error::from_response(endpoint, url, status, &headers, &body)
}

/// Reads at most `max` bytes of a body; the rest is dropped with the
/// connection. A body that breaks off reads as what arrived.
async fn read_capped(response: Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    /// Field case B23: only a well-formed range is trusted.
    #[test]
    fn content_ranges() {
        assert_eq!(
            parse_content_range("bytes 125829120-209715199/209715200"),
            Some((125_829_120, Some(209_715_200)))
        );
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, None)));
        for bad in ["bytes 20-10/30", "bytes 0-30/30", "items 0-1/2", "bytes -5/10", "bytes 1-2"] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }
}
