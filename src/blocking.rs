//! A blocking [`BlossomClient`](crate::client::BlossomClient), for scripts
//! and programs without an async runtime (feature `blocking`).
//!
//! Like `reqwest::blocking`, each client owns a small runtime of its own
//! and every call blocks the calling thread until it is done. Do not call
//! it from inside an async runtime: that panics; use the async client
//! there.
//!
//! ```no_run
//! use std::sync::Arc;
//! use blossom_replicator::blocking::BlossomClient;
//! use blossom_replicator::{KeySigner, ServerUrl, UploadSource};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ServerUrl::parse("https://cdn.example.com")?;
//! let client = BlossomClient::new(Arc::new(KeySigner::generate()), vec![server.clone()])?;
//! let descriptor = client.upload(&server, &UploadSource::Path("photo.jpg".into()))?;
//! println!("{:?}", descriptor.url);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use bytes::Bytes;

use crate::blob::Sha256;
use crate::blossom::{BlobDescriptor, ServerUrl, Signer};
use crate::client::{self, ClientError, ListOptions, PerServer, UploadSource};
use crate::config::Config;

/// The blocking client; see the [module documentation](self).
#[derive(Debug)]
pub struct BlossomClient {
    inner: client::BlossomClient,
    runtime: tokio::runtime::Runtime,
}

impl BlossomClient {
    /// A client for `servers` with default limits.
    ///
    /// # Errors
    ///
    /// When the runtime cannot be started.
    pub fn new(signer: Arc<dyn Signer>, servers: Vec<ServerUrl>) -> std::io::Result<Self> {
        Self::wrap(client::BlossomClient::new(signer, servers))
    }

    /// A client for the configured servers and policy.
    ///
    /// # Errors
    ///
    /// When the runtime cannot be started.
    pub fn from_config(config: &Config, signer: Arc<dyn Signer>) -> std::io::Result<Self> {
        Self::wrap(client::BlossomClient::from_config(config, signer))
    }

    fn wrap(inner: client::BlossomClient) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Self { inner, runtime })
    }

    /// The servers, in order.
    pub fn servers(&self) -> &[ServerUrl] {
        self.inner.servers()
    }

    /// See [`client::BlossomClient::has`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn has(&self, server: &ServerUrl, hash: &Sha256) -> Result<bool, ClientError> {
        self.runtime.block_on(self.inner.has(server, hash))
    }

    /// See [`client::BlossomClient::get`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn get(&self, server: &ServerUrl, hash: &Sha256) -> Result<Bytes, ClientError> {
        self.runtime.block_on(self.inner.get(server, hash))
    }

    /// See [`client::BlossomClient::get_with_fallback`]; the blob is
    /// written to `path` (created or truncated).
    ///
    /// # Errors
    ///
    /// As the async call; the file cannot be created.
    pub fn get_to_file(
        &self,
        hash: &Sha256,
        servers: &[ServerUrl],
        path: &std::path::Path,
    ) -> Result<(ServerUrl, u64), ClientError> {
        self.runtime.block_on(async {
            let mut file = tokio::fs::File::create(path).await.map_err(ClientError::Write)?;
            self.inner.get_with_fallback(hash, servers, &mut file).await
        })
    }

    /// See [`client::BlossomClient::upload`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn upload(
        &self,
        server: &ServerUrl,
        source: &UploadSource,
    ) -> Result<BlobDescriptor, ClientError> {
        self.runtime.block_on(self.inner.upload(server, source))
    }

    /// See [`client::BlossomClient::upload_to_all`].
    pub fn upload_to_all(&self, source: &UploadSource) -> PerServer<BlobDescriptor> {
        self.runtime.block_on(self.inner.upload_to_all(source))
    }

    /// See [`client::BlossomClient::mirror`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn mirror(
        &self,
        server: &ServerUrl,
        url: &str,
        sha256: Sha256,
        size: u64,
    ) -> Result<BlobDescriptor, ClientError> {
        self.runtime.block_on(self.inner.mirror(server, url, sha256, size))
    }

    /// See [`client::BlossomClient::mirror_to_all`].
    pub fn mirror_to_all(&self, url: &str, sha256: Sha256, size: u64) -> PerServer<BlobDescriptor> {
        self.runtime.block_on(self.inner.mirror_to_all(url, sha256, size))
    }

    /// See [`client::BlossomClient::list`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn list(
        &self,
        server: &ServerUrl,
        pubkey_hex: &str,
        options: ListOptions,
    ) -> Result<Vec<BlobDescriptor>, ClientError> {
        self.runtime.block_on(self.inner.list(server, pubkey_hex, options))
    }

    /// See [`client::BlossomClient::delete`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn delete(&self, server: &ServerUrl, hash: &Sha256) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.delete(server, hash))
    }

    /// See [`client::BlossomClient::upload_media`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn upload_media(
        &self,
        server: &ServerUrl,
        source: &UploadSource,
    ) -> Result<BlobDescriptor, ClientError> {
        self.runtime.block_on(self.inner.upload_media(server, source))
    }

    /// See [`client::BlossomClient::report`].
    ///
    /// # Errors
    ///
    /// As the async call.
    pub fn report(
        &self,
        server: &ServerUrl,
        hash: &Sha256,
        report_type: &str,
        text: &str,
    ) -> Result<(), ClientError> {
        self.runtime.block_on(self.inner.report(server, hash, report_type, text))
    }
}
