//! Checking and removing what servers hold, outside the queue: `verify`
//! asks every server whether it still holds what the record says it holds,
//! and `delete` removes blobs everywhere and then checks they are gone
//! (servers may report success and go on serving a blob).

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::Error;
use super::worker::rate_limiter;
use crate::blob::Sha256;
use crate::blossom::{Presence, ServerClient, ServerUrl, Signer, TokenEncoding};
use crate::config::{Config, ServerConfig};
use crate::store::{ReplicaState, Store, Verification};

/// What `verify` found for one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The blob.
    pub sha256: Sha256,
    /// The server asked.
    pub server: ServerUrl,
    /// What the server showed, or why it could not be asked.
    pub result: Result<Verification, String>,
}

/// What `delete` did on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteReport {
    /// The blob.
    pub sha256: Sha256,
    /// The server.
    pub server: ServerUrl,
    /// `Ok(true)`: deleted and gone; `Ok(false)`: the server accepted the
    /// delete but still serves the blob; `Err`: the delete failed.
    pub result: Result<bool, String>,
}

/// Asks every configured server about every replica the database records
/// for it (stored, or found missing or corrupt before), with `HEAD`, or
/// with `deep`, by downloading and hashing the bytes. Each answer is
/// recorded with the time; servers that cannot be reached are reported and
/// leave the record as it was.
///
/// # Errors
///
/// Database failures, or an HTTP client that cannot be built.
pub async fn verify(
    config: &Config,
    signer: Arc<dyn Signer>,
    hashes: Option<&[Sha256]>,
    deep: bool,
) -> Result<Vec<VerifyReport>, Error> {
    let store = Store::open(&config.database).await?;
    let blobs = store.blob_statuses(hashes).await?;
    let mut checks = Vec::new();
    for server in &config.servers {
        let client = client(config, server, signer.clone())?;
        let encoding =
            store.server_traits(&server.url).await?.token_encoding.unwrap_or(server.token_encoding);
        let wanted: Vec<(Sha256, u64)> = blobs
            .iter()
            .filter(|b| {
                b.replicas.iter().any(|r| {
                    r.server == server.url.as_str()
                        && matches!(
                            r.state,
                            ReplicaState::Stored | ReplicaState::Missing | ReplicaState::Corrupt
                        )
                })
            })
            .map(|b| (b.sha256, b.size))
            .collect();
        checks.push(verify_server(store.clone(), client, server.clone(), encoding, wanted, deep));
    }
    let reports = futures_util::future::join_all(checks).await.into_iter().flatten().collect();
    store.close().await;
    Ok(reports)
}

async fn verify_server(
    store: Store,
    client: ServerClient,
    config: ServerConfig,
    encoding: TokenEncoding,
    wanted: Vec<(Sha256, u64)>,
    deep: bool,
) -> Vec<VerifyReport> {
    let limiter = rate_limiter(&config);
    let checks = wanted.into_iter().map(|(sha256, size)| {
        let (client, limiter, store, server) = (&client, &limiter, &store, &config.url);
        async move {
            limiter.until_ready().await;
            let result = check(client, &sha256, size, encoding, deep).await;
            if let Ok(found) = &result
                && let Err(e) = store.record_verification(&sha256, server, found).await
            {
                tracing::warn!(error = %e, "cannot record the verification");
            }
            VerifyReport { sha256, server: server.clone(), result }
        }
    });
    futures_util::stream::iter(checks).buffer_unordered(config.max_in_flight.get()).collect().await
}

async fn check(
    client: &ServerClient,
    hash: &Sha256,
    size: u64,
    encoding: TokenEncoding,
    deep: bool,
) -> Result<Verification, String> {
    if deep {
        return match client.fetch_hash(hash, size, encoding).await.map_err(|e| e.to_string())? {
            None => Ok(Verification::Missing),
            Some((got, len)) if got == *hash && len == size => Ok(Verification::Verified),
            Some((got, len)) => {
                Ok(Verification::Corrupt(format!("serves {len} bytes hashing to {got}")))
            }
        };
    }
    match client.has_blob(hash, encoding).await.map_err(|e| e.to_string())? {
        Presence::Absent => Ok(Verification::Missing),
        Presence::Present { size: Some(len) } if len != size => {
            Ok(Verification::Corrupt(format!("reports {len} bytes, expected {size}")))
        }
        Presence::Present { .. } => Ok(Verification::Verified),
    }
}

/// Deletes blobs from every configured server with tokens scoped to each
/// server, then asks each with `HEAD` whether the blob is really gone. The
/// database keeps the blobs and records the replicas as deleted.
///
/// # Errors
///
/// Database failures, or an HTTP client that cannot be built.
pub async fn delete(
    config: &Config,
    signer: Arc<dyn Signer>,
    hashes: &[Sha256],
) -> Result<Vec<DeleteReport>, Error> {
    let store = Store::open(&config.database).await?;
    let mut reports = Vec::new();
    for server in &config.servers {
        let client = client(config, server, signer.clone())?;
        let encoding =
            store.server_traits(&server.url).await?.token_encoding.unwrap_or(server.token_encoding);
        for hash in hashes {
            let result = delete_one(&client, hash, encoding).await;
            match &result {
                Ok(true) => store.record_deletion(hash, &server.url, None).await?,
                Ok(false) => {
                    tracing::warn!(server = %server.url, blob = %hash, "delete accepted but the blob is still served")
                }
                Err(e) => {
                    tracing::warn!(server = %server.url, blob = %hash, error = %e, "delete failed")
                }
            }
            reports.push(DeleteReport { sha256: *hash, server: server.url.clone(), result });
        }
    }
    store.close().await;
    Ok(reports)
}

async fn delete_one(
    client: &ServerClient,
    hash: &Sha256,
    encoding: TokenEncoding,
) -> Result<bool, String> {
    client.delete(hash, encoding).await.map_err(|e| e.to_string())?;
    match client.has_blob(hash, encoding).await.map_err(|e| e.to_string())? {
        Presence::Absent => Ok(true),
        Presence::Present { .. } => Ok(false),
    }
}

fn client(
    config: &Config,
    server: &ServerConfig,
    signer: Arc<dyn Signer>,
) -> Result<ServerClient, Error> {
    ServerClient::new(server.url.clone(), signer, config.timeouts)
        .map_err(|source| Error::Http { server: server.url.clone(), source })
}
