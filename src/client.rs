//! [`BlossomClient`]: every Blossom operation a client needs, one call
//! each, for one server or a set of them. It is built on the same protocol
//! layer as the engine ([`ServerClient`]) and applies the engine's policy:
//! a rate limiter per server, retries with backoff and `Retry-After` for
//! transient failures, the other token encoding once when a token is
//! refused, and hash checks on every byte received.
//!
//! Use it for one-off work (fetch a blob, list a pubkey's blobs, upload a
//! buffer everywhere now); use [`crate::Replicator`] for work that must
//! survive a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt as _;
use governor::DefaultDirectRateLimiter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::blob::{InputError, LocalBlob, Sha256, StreamHasher};
use crate::blossom::{
    self, BlobDescriptor, Chunks, ErrorClass, Presence, ServerClient, ServerUrl, Signer,
    TokenEncoding,
};
use crate::config::{Config, RetryPolicy, ServerConfig};
use crate::engine::{rate_limiter, retry_delay};

/// The most blobs [`BlossomClient::list`] reads from one server: a server
/// that makes up new entries on every page cannot keep it paging forever.
pub const MAX_LIST_ITEMS: usize = 1_000_000;

/// What can go wrong in a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server failed or refused; see [`blossom::Error::class`].
    #[error(transparent)]
    Blossom(#[from] blossom::Error),
    /// A local file could not be used.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Writing the downloaded bytes failed.
    #[error("cannot write the blob: {0}")]
    Write(#[source] std::io::Error),
    /// No server had the blob with the right bytes.
    #[error("blob {hash} not found on any of {tried} servers{}", last.as_ref().map(|e| format!(" (last: {e})")).unwrap_or_default())]
    NotFound {
        /// The blob.
        hash: Sha256,
        /// Servers asked.
        tried: usize,
        /// The last failure, if one was not a plain 404.
        last: Option<Box<ClientError>>,
    },
    /// A server's list went on past [`ListOptions::max_items`] blobs.
    #[error("{server} lists more than {max} blobs; stopped there")]
    ListTooLong {
        /// The server.
        server: ServerUrl,
        /// The cap.
        max: usize,
    },
    /// The client has no server to ask through.
    #[error("no server configured")]
    NoServers,
    /// A source URL answered `HEAD` without a `Content-Length`.
    #[error("{0} gives no length for the blob")]
    NoLength(String),
    /// The servers together served bytes that do not hash to the blob.
    #[error("the bytes received for {hash} hash to {got}")]
    WrongBytes {
        /// The blob asked for.
        hash: Sha256,
        /// What the bytes hashed to.
        got: Sha256,
    },
}

impl ClientError {
    /// The protocol error inside, if any.
    pub fn blossom(&self) -> Option<&blossom::Error> {
        match self {
            Self::Blossom(e) => Some(e),
            _ => None,
        }
    }
}

/// What to upload.
#[derive(Debug, Clone)]
pub enum UploadSource {
    /// A file, hashed first (off the async threads).
    Path(PathBuf),
    /// Bytes in memory, with a type (`application/octet-stream` if none).
    Bytes {
        /// The bytes.
        bytes: Bytes,
        /// The MIME type to declare.
        mime: Option<String>,
    },
}

/// The result of an operation run on several servers: one entry per
/// server, in the client's order; one failure does not affect the others.
pub type PerServer<T> = Vec<(ServerUrl, Result<T, ClientError>)>;

/// How [`BlossomClient::list`] pages through a server's list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Items per page (`limit`); 0 means 100.
    pub page_size: u32,
    /// The most blobs read before giving up with
    /// [`ClientError::ListTooLong`]; 0 means [`MAX_LIST_ITEMS`].
    pub max_items: usize,
}

/// The largest `limit` asked for when a server that pages by time holds
/// more blobs of one upload second than a page.
const MAX_PAGE: u32 = 5_000;

/// A Blossom client for a set of servers (the first is the preferred one).
#[derive(Clone)]
pub struct BlossomClient {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<ServerUrl>,
    signer: Arc<dyn Signer>,
    config: Config,
    peers: Mutex<HashMap<ServerUrl, Arc<Peer>>>,
}

/// One server: its protocol client, limiter and what we learned of it.
struct Peer {
    client: ServerClient,
    limiter: DefaultDirectRateLimiter,
    encoding: Mutex<TokenEncoding>,
}

impl std::fmt::Debug for BlossomClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlossomClient")
            .field("servers", &self.inner.servers)
            .finish_non_exhaustive()
    }
}

impl BlossomClient {
    /// A client for `servers` with the default limits, timeouts and retries.
    pub fn new(signer: Arc<dyn Signer>, servers: Vec<ServerUrl>) -> Self {
        let config = Config::new(PathBuf::new(), servers);
        Self::from_config(&config, signer)
    }

    /// A client for the configured servers, with their limits, timeouts and
    /// retry policy.
    pub fn from_config(config: &Config, signer: Arc<dyn Signer>) -> Self {
        let servers = config.servers.iter().map(|s| s.url.clone()).collect();
        let inner = Inner { servers, signer, config: config.clone(), peers: Mutex::default() };
        Self { inner: Arc::new(inner) }
    }

    /// The servers, in order.
    pub fn servers(&self) -> &[ServerUrl] {
        &self.inner.servers
    }

    fn retry(&self) -> RetryPolicy {
        self.inner.config.retry
    }

    /// The peer for a server, made on first use (with the configured limits
    /// when the server is configured, the defaults otherwise).
    fn peer(&self, server: &ServerUrl) -> Result<Arc<Peer>, ClientError> {
        let mut peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.get(server) {
            return Ok(peer.clone());
        }
        let config = self.inner.config.servers.iter().find(|s| &s.url == server).cloned();
        let config = config.unwrap_or_else(|| default_server(server.clone()));
        let client = ServerClient::new(
            server.clone(),
            self.inner.signer.clone(),
            self.inner.config.timeouts,
        )
        .map_err(|e| blossom::Error::transport(blossom::Endpoint::HasBlob, server.as_str(), e))?;
        let peer = Arc::new(Peer {
            client,
            limiter: rate_limiter(&config),
            encoding: Mutex::new(config.token_encoding),
        });
        peers.insert(server.clone(), peer.clone());
        Ok(peer)
    }

    /// Runs one request with the engine's policy: rate limit, then on a
    /// refused token once more with the other encoding (remembered when it
    /// works), on transient failures backoff and retry.
    async fn call<T, F, Fut>(&self, server: &ServerUrl, mut request: F) -> Result<T, ClientError>
    where
        F: FnMut(ServerClient, TokenEncoding) -> Fut,
        Fut: Future<Output = Result<T, blossom::Error>>,
    {
        let peer = self.peer(server)?;
        let policy = self.retry();
        let mut attempt = 0;
        let mut switched = false;
        let mut batch_retried = false;
        loop {
            attempt += 1;
            peer.limiter.until_ready().await;
            let encoding = *peer.encoding.lock().unwrap_or_else(|e| e.into_inner());
            let batch_refused_before = peer.client.batch_tokens_refused();
            let error = match request(peer.client.clone(), encoding).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !batch_retried && !batch_refused_before && peer.client.batch_tokens_refused() {
                // The server refused a batch token: again with one of its own.
                batch_retried = true;
                continue;
            }
            match error.class() {
                ErrorClass::Reauth if !switched => {
                    switched = true;
                    *peer.encoding.lock().unwrap_or_else(|e| e.into_inner()) = encoding.other();
                }
                ErrorClass::Transient if attempt < policy.max_attempts => {
                    tokio::time::sleep(retry_delay(&policy, attempt, error.retry_after())).await;
                }
                _ => return Err(error.into()),
            }
        }
    }

    /// `HEAD /<sha256>`: does the server hold the blob?
    ///
    /// # Errors
    ///
    /// The server failed (after retries) or refused.
    pub async fn has(&self, server: &ServerUrl, hash: &Sha256) -> Result<bool, ClientError> {
        let presence = self.call(server, |c, e| async move { c.has_blob(hash, e).await }).await?;
        Ok(matches!(presence, Presence::Present { .. }))
    }

    /// Downloads a blob from one server into memory and checks its hash.
    ///
    /// # Errors
    ///
    /// The server failed or refused; [`ClientError::WrongBytes`].
    pub async fn get(&self, server: &ServerUrl, hash: &Sha256) -> Result<Bytes, ClientError> {
        let mut buffer = Vec::new();
        self.get_with_fallback(hash, std::slice::from_ref(server), &mut buffer).await?;
        Ok(buffer.into())
    }

    /// Downloads a blob into `out` with constant memory, trying `servers`
    /// in order (pass [`BlossomClient::servers`] for the configured ones;
    /// BUD-03 order for an author's list). A download that breaks off is
    /// resumed from the next server with `Range`; a server that ignores
    /// `Range` has the bytes already written skipped (field case B23). The
    /// hash of everything written is checked at the end; returns the
    /// server that delivered the last byte and the length.
    ///
    /// # Errors
    ///
    /// [`ClientError::NotFound`] when no server could deliver;
    /// [`ClientError::WrongBytes`] when the bytes written are not the blob
    /// (discard what was written then); [`ClientError::Write`].
    pub async fn get_with_fallback<W: AsyncWrite + Unpin>(
        &self,
        hash: &Sha256,
        servers: &[ServerUrl],
        out: &mut W,
    ) -> Result<(ServerUrl, u64), ClientError> {
        let mut hasher = StreamHasher::default();
        let mut last = None;
        // The blob's length as the first server to answer gave it.
        let mut expected = None;
        for server in servers {
            let written = hasher.len();
            let download =
                self.call(server, |c, e| async move { c.download(hash, written, e).await }).await;
            let download = match download {
                Ok(download) => download,
                Err(error) => {
                    let not_found = error.blossom().and_then(blossom::Error::status) == Some(404);
                    if !not_found {
                        last = Some(Box::new(error));
                    }
                    continue;
                }
            };
            if let Some(length) = download.length
                && *expected.get_or_insert(length) != length
            {
                tracing::warn!(%server, length, "server gives the blob another length; trying the next");
                continue;
            }
            let mut skip = written - download.offset;
            let mut body = download.response.bytes_stream();
            let mut broken = false;
            while let Some(chunk) = body.next().await {
                let Ok(mut chunk) = chunk else {
                    broken = true;
                    break;
                };
                if skip > 0 {
                    let drop = skip.min(chunk.len() as u64);
                    chunk = chunk.slice(drop as usize..);
                    skip -= drop;
                }
                hasher.update(&chunk);
                out.write_all(&chunk).await.map_err(ClientError::Write)?;
            }
            if broken || skip > 0 {
                tracing::warn!(%server, received = hasher.len(), "download broke off; resuming from the next server");
                continue;
            }
            out.flush().await.map_err(ClientError::Write)?;
            let (got, len) = hasher.finish();
            if got != *hash {
                return Err(ClientError::WrongBytes { hash: *hash, got });
            }
            return Ok((server.clone(), len));
        }
        Err(ClientError::NotFound { hash: *hash, tried: servers.len(), last })
    }

    /// Uploads to one server (`PUT /upload`); the descriptor is checked
    /// against our hash and size.
    ///
    /// # Errors
    ///
    /// The server failed or refused; the file is unusable.
    pub async fn upload(
        &self,
        server: &ServerUrl,
        source: &UploadSource,
    ) -> Result<BlobDescriptor, ClientError> {
        let blob = prepare(source).await?;
        self.upload_prepared(server, source, &blob).await
    }

    async fn upload_prepared(
        &self,
        server: &ServerUrl,
        source: &UploadSource,
        blob: &LocalBlob,
    ) -> Result<BlobDescriptor, ClientError> {
        let receipt = self
            .call(server, |c, e| async move {
                let sent = Arc::new(AtomicU64::new(0));
                match source {
                    UploadSource::Path(_) => c.upload(blob, e, sent).await,
                    UploadSource::Bytes { bytes, .. } => {
                        c.upload_stream(blob, chunks_of(bytes.clone()), e, sent).await
                    }
                }
            })
            .await?;
        Ok(receipt.descriptor)
    }

    /// Uploads a stream of known hash, size and type to one server. A
    /// reader cannot be read twice, so this makes one attempt.
    ///
    /// # Errors
    ///
    /// The server failed or refused; the bytes do not match `sha256`.
    pub async fn upload_reader(
        &self,
        server: &ServerUrl,
        reader: impl AsyncRead + Send + 'static,
        sha256: Sha256,
        size: u64,
        mime: &str,
    ) -> Result<BlobDescriptor, ClientError> {
        let peer = self.peer(server)?;
        peer.limiter.until_ready().await;
        let blob = LocalBlob { sha256, size, mime: mime.to_owned(), path: PathBuf::new() };
        let chunks: Chunks = tokio_util::io::ReaderStream::new(Box::pin(reader)).boxed();
        let encoding = *peer.encoding.lock().unwrap_or_else(|e| e.into_inner());
        let sent = Arc::new(AtomicU64::new(0));
        Ok(peer.client.upload_stream(&blob, chunks, encoding, sent).await?.descriptor)
    }

    /// `HEAD /upload` (BUD-06): would the server take this blob?
    ///
    /// # Errors
    ///
    /// The server's refusal (402 with the payment offered, 413, 415, …), or
    /// [`ErrorClass::Unsupported`] when it has no preflight.
    pub async fn upload_preflight(
        &self,
        server: &ServerUrl,
        sha256: Sha256,
        size: u64,
        mime: &str,
    ) -> Result<(), ClientError> {
        let blob = LocalBlob { sha256, size, mime: mime.to_owned(), path: PathBuf::new() };
        let blob = &blob;
        self.call(server, |c, e| async move { c.upload_preflight(blob, e).await }).await
    }

    /// Signs upload tokens ahead for blobs about to be uploaded or mirrored
    /// (hash and size): one signature per [`MAX_BATCH_HASHES`] blobs (a
    /// token with an `x` tag for each, BUD-11), shared by every server of
    /// this client. Each later [`upload`](Self::upload),
    /// [`upload_to_all`](Self::upload_to_all) or [`mirror`](Self::mirror)
    /// of one of them uses it instead of signing. A server that refuses it
    /// (some take one blob per token, or each token once) gets the request
    /// again with a token of its own, and so does every later request to
    /// it. Returns how many tokens were signed.
    ///
    /// [`MAX_BATCH_HASHES`]: crate::blossom::MAX_BATCH_HASHES
    ///
    /// # Errors
    ///
    /// When the signer fails.
    pub async fn prepare_upload_tokens(
        &self,
        blobs: &[(Sha256, u64)],
    ) -> Result<usize, ClientError> {
        let peers = self.servers().iter().map(|s| self.peer(s)).collect::<Result<Vec<_>, _>>()?;
        let Some(first) = peers.first() else { return Ok(0) };
        if blobs.len() < 2 {
            return Ok(0);
        }
        let tokens = first.client.sign_batch_tokens(blobs).await?;
        for peer in &peers {
            peer.client.add_batch_tokens(&tokens);
        }
        Ok(tokens.len())
    }

    /// Uploads to every server at once; each server's result on its own.
    pub async fn upload_to_all(&self, source: &UploadSource) -> PerServer<BlobDescriptor> {
        let blob = match prepare(source).await {
            Ok(blob) => blob,
            Err(error) => {
                let message = error.to_string();
                return self
                    .servers()
                    .iter()
                    .map(|s| (s.clone(), Err(copy_input_error(&message, source))))
                    .collect();
            }
        };
        let blob = &blob;
        let uploads = self.servers().iter().map(|server| async move {
            (server.clone(), self.upload_prepared(server, source, blob).await)
        });
        futures_util::future::join_all(uploads).await
    }

    /// `PUT /mirror` (BUD-04): asks the server to fetch the blob from `url`.
    ///
    /// # Errors
    ///
    /// The server failed or refused, or described other bytes.
    pub async fn mirror(
        &self,
        server: &ServerUrl,
        url: &str,
        sha256: Sha256,
        size: u64,
    ) -> Result<BlobDescriptor, ClientError> {
        let blob = LocalBlob {
            sha256,
            size,
            mime: "application/octet-stream".into(),
            path: PathBuf::new(),
        };
        let blob = &blob;
        let receipt = self.call(server, |c, e| async move { c.mirror(url, blob, e).await }).await?;
        Ok(receipt.descriptor)
    }

    /// The length `url` (a blob on any host, to mirror from) gives with
    /// `HEAD`: asked once, through the first server's connection pool and
    /// timeouts, so a source that never answers is given up on.
    ///
    /// # Errors
    ///
    /// No server is configured, the source failed or refused, or it gives
    /// no length.
    pub async fn source_size(&self, url: &str) -> Result<u64, ClientError> {
        let Some(first) = self.servers().first() else {
            return Err(ClientError::NoServers);
        };
        let peer = self.peer(first)?;
        peer.client.source_length(url).await?.ok_or_else(|| ClientError::NoLength(url.to_owned()))
    }

    /// Asks every server that does not hold the blob yet to mirror it from
    /// `url`; servers that hold it answer with their descriptor too.
    pub async fn mirror_to_all(
        &self,
        url: &str,
        sha256: Sha256,
        size: u64,
    ) -> PerServer<BlobDescriptor> {
        let mirrors = self.servers().iter().map(|server| async move {
            (server.clone(), self.mirror(server, url, sha256, size).await)
        });
        futures_util::future::join_all(mirrors).await
    }

    /// `PUT /media` (BUD-05): the server may optimise the blob; the
    /// descriptor names the result, whose hash differs from the input's.
    ///
    /// # Errors
    ///
    /// The server failed or refused (422: cannot process).
    pub async fn upload_media(
        &self,
        server: &ServerUrl,
        source: &UploadSource,
    ) -> Result<BlobDescriptor, ClientError> {
        let blob = prepare(source).await?;
        let blob = &blob;
        let receipt = self
            .call(server, |c, e| async move {
                let chunks = match source {
                    UploadSource::Path(path) => file_chunks(path).await?,
                    UploadSource::Bytes { bytes, .. } => chunks_of(bytes.clone()),
                };
                c.media(blob, chunks, e).await
            })
            .await?;
        Ok(receipt.descriptor)
    }

    /// `HEAD /media` (BUD-05).
    ///
    /// # Errors
    ///
    /// As [`BlossomClient::upload_preflight`].
    pub async fn media_preflight(
        &self,
        server: &ServerUrl,
        sha256: Sha256,
        size: u64,
        mime: &str,
    ) -> Result<(), ClientError> {
        let blob = LocalBlob { sha256, size, mime: mime.to_owned(), path: PathBuf::new() };
        let blob = &blob;
        self.call(server, |c, e| async move { c.media_preflight(blob, e).await }).await
    }

    /// Every blob a pubkey (hex) uploaded to a server (BUD-12), newest
    /// first, page by page with `cursor` and `limit`. A server that ignores
    /// the cursor (its page repeats what was seen) is paged with the older
    /// `until` instead; paging stops on a page with nothing new.
    ///
    /// # Errors
    ///
    /// The server failed or refused; [`ErrorClass::Unsupported`] when
    /// listing is disabled.
    pub async fn list(
        &self,
        server: &ServerUrl,
        pubkey_hex: &str,
        options: ListOptions,
    ) -> Result<Vec<BlobDescriptor>, ClientError> {
        let limit = if options.page_size == 0 { 100 } else { options.page_size };
        let max_items = if options.max_items == 0 { MAX_LIST_ITEMS } else { options.max_items };
        let mut all: Vec<BlobDescriptor> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cursor_works = true;
        // Paging by time (a server that ignores the cursor): the `until`
        // asked, the `limit` asked, the page length when the limit was
        // last raised, and the longest page the server gives if it caps
        // the limit.
        let mut until: Option<u64> = None;
        let mut page_limit = limit;
        let mut raised_at: Option<usize> = None;
        let mut server_cap: Option<usize> = None;
        loop {
            let mut query = vec![("limit", page_limit.to_string())];
            if let Some(last) = all.last() {
                if cursor_works {
                    query.push(("cursor", last.sha256.clone().unwrap_or_default()));
                } else {
                    query.push(("until", until.unwrap_or(0).to_string()));
                }
            }
            let query = &query;
            let page = self
                .call(server, |c, e| async move { c.list_page(pubkey_hex, query, e).await })
                .await?;
            if page.is_empty() {
                return Ok(all);
            }
            // A page longer than asked for, or one short of the limit that
            // holds the cursor item, comes from a server that ignores
            // paging: it is the whole list (field case B12). A full page
            // holding the cursor item honours `limit` alone, and is paged
            // by time below.
            let cursor = all.last().and_then(|d| d.sha256.as_deref());
            let has_cursor = cursor.is_some() && page.iter().any(|d| d.sha256.as_deref() == cursor);
            let page_len = page.len();
            let whole = page_len > page_limit as usize || (has_cursor && page_len < limit as usize);
            let oldest = page.iter().filter_map(|d| d.uploaded).min();
            let fresh: Vec<BlobDescriptor> = page
                .into_iter()
                .filter(|d| seen.insert(d.sha256.clone().unwrap_or_default()))
                .collect();
            if whole {
                tracing::debug!(%server, "the server ignores list paging; its page is the whole list");
                all.extend(fresh);
                return Ok(all);
            }
            if all.len() + fresh.len() > max_items {
                return Err(ClientError::ListTooLong { server: server.clone(), max: max_items });
            }
            if !fresh.is_empty() {
                all.extend(fresh);
                if !cursor_works {
                    until = match (until, oldest) {
                        (Some(u), Some(o)) => Some(u.min(o)),
                        (u, o) => u.or(o),
                    };
                }
                continue;
            }
            if cursor_works {
                if all.is_empty() {
                    return Ok(all);
                }
                tracing::debug!(%server, "the server ignores the list cursor; paging by time");
                cursor_works = false;
                until = all.iter().filter_map(|d| d.uploaded).min();
                continue;
            }
            // Paging by time and nothing new: the end of the list, or a
            // full page of blobs that share their upload seconds with ones
            // already listed (a bulk upload), which `until` cannot step
            // past. Ask for longer pages, as long as the server gives them.
            // A longer limit that brought no longer page: the server caps it.
            if server_cap.is_none() && raised_at.is_some_and(|before| page_len <= before) {
                server_cap = Some(page_len);
            }
            if page_len < server_cap.unwrap_or(page_limit as usize) {
                return Ok(all);
            }
            if server_cap.is_none() && page_limit < MAX_PAGE {
                raised_at = Some(page_len);
                page_limit = page_limit.saturating_mul(4).min(MAX_PAGE);
                continue;
            }
            // The rest of that second cannot be reached: step past it, and
            // say that the list may lack some of its blobs.
            let Some(second) = oldest.filter(|t| *t > 0) else { return Ok(all) };
            if until.is_some_and(|u| second > u) {
                // The server ignores `until` too: nothing more to read.
                return Ok(all);
            }
            tracing::warn!(
                %server,
                uploaded = second,
                "the server pages by time only and returns fewer blobs at once than it holds for \
                 one upload second; the list may lack some blobs of that second"
            );
            until = Some(second - 1);
        }
    }

    /// `DELETE /<sha256>` with a token scoped to the server.
    ///
    /// # Errors
    ///
    /// The server failed or refused.
    pub async fn delete(&self, server: &ServerUrl, hash: &Sha256) -> Result<(), ClientError> {
        self.call(server, |c, e| async move { c.delete(hash, e).await }).await
    }

    /// `PUT /report` (BUD-09): reports a blob with a signed NIP-56 event
    /// (kind 1984) of `report_type` (`nudity`, `malware`, `illegal`, `spam`,
    /// `impersonation`, `other`) and a text for the operators.
    ///
    /// # Errors
    ///
    /// The event cannot be signed; the server failed or refused.
    pub async fn report(
        &self,
        server: &ServerUrl,
        hash: &Sha256,
        report_type: &str,
        text: &str,
    ) -> Result<(), ClientError> {
        let event = crate::blossom::report_event(&*self.inner.signer, hash, report_type, text)
            .await
            .map_err(|e| blossom::Error::Sign(e.to_string()))?;
        let event = &event;
        self.call(server, |c, _| async move { c.report(event.clone()).await }).await
    }
}

/// Hashes what is to be uploaded.
async fn prepare(source: &UploadSource) -> Result<LocalBlob, ClientError> {
    match source {
        UploadSource::Path(path) => {
            let path = path.clone();
            let blob = tokio::task::spawn_blocking(move || LocalBlob::from_path(&path))
                .await
                .map_err(|e| ClientError::Write(std::io::Error::other(e)))??;
            Ok(blob)
        }
        UploadSource::Bytes { bytes, mime } => {
            let mime = mime.clone().unwrap_or_else(|| {
                crate::blob::declared_type(Path::new(""), &bytes[..bytes.len().min(8192)])
            });
            Ok(LocalBlob {
                sha256: Sha256::digest(bytes),
                size: bytes.len() as u64,
                mime,
                path: PathBuf::new(),
            })
        }
    }
}

fn copy_input_error(message: &str, source: &UploadSource) -> ClientError {
    let path = match source {
        UploadSource::Path(path) => path.clone(),
        UploadSource::Bytes { .. } => PathBuf::new(),
    };
    ClientError::Input(InputError::Unreadable {
        path,
        source: std::io::Error::other(message.to_owned()),
    })
}

fn chunks_of(bytes: Bytes) -> Chunks {
    const CHUNK: usize = 64 * 1024;
    let pieces: Vec<std::io::Result<Bytes>> = (0..bytes.len())
        .step_by(CHUNK)
        .map(|start| Ok(bytes.slice(start..(start + CHUNK).min(bytes.len()))))
        .collect();
    futures_util::stream::iter(pieces).boxed()
}

async fn file_chunks(path: &Path) -> Result<Chunks, blossom::Error> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| blossom::Error::Source { path: path.to_owned(), source })?;
    Ok(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024).boxed())
}

/// The server configuration a [`BlossomClient`] uses for a server it was
/// not configured with.
fn default_server(url: ServerUrl) -> ServerConfig {
    Config::new(PathBuf::new(), vec![url]).servers.remove(0)
}
