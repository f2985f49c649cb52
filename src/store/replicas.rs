//! Blobs and their replicas: registering blobs for a set of servers (which
//! creates the jobs in the same transaction), and reading back who holds
//! what.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;
use sqlx::Row as _;

use super::{Error, Store, to_millis};
use crate::blob::{LocalBlob, Sha256};
use crate::blossom::ServerUrl;

/// The columns `replica_row` reads.
macro_rules! replica_columns {
    () => {
        "sha256, server, state, method, url, reason, last_status, attempts, bytes_sent, updated_at"
    };
}

/// The state of one blob on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaState {
    /// Not there yet; a job is queued, running or waiting to retry.
    Pending,
    /// The server holds a copy verified by hash and size.
    Stored,
    /// The server refused it for good, or retries ran out; see the reason.
    Failed,
}

impl ReplicaState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Stored => "stored",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "stored" => Some(Self::Stored),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A blob to register, with where its bytes are.
pub type NewBlob = LocalBlob;

/// What registering a batch of blobs did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    /// Jobs created.
    pub jobs: u64,
    /// Replicas already recorded as stored, so not queued again.
    pub already_stored: u64,
}

/// One replica as the database records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaStatus {
    /// The normalised server URL.
    pub server: String,
    /// Where the blob stands on that server.
    pub state: ReplicaState,
    /// `uploaded` when we sent the bytes, `present` when the server
    /// already had them.
    pub method: Option<String>,
    /// The server's URL for the blob, from its descriptor.
    pub url: Option<String>,
    /// Why it failed or is being retried.
    pub reason: Option<String>,
    /// The last HTTP status seen, if any.
    pub last_status: Option<u16>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Body bytes we sent to this server for this blob, over all attempts.
    pub bytes_sent: u64,
    /// Last change, unix milliseconds.
    pub updated_at: i64,
}

/// A blob and all its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobStatus {
    /// The blob's hash.
    pub sha256: Sha256,
    /// Its size in bytes.
    pub size: u64,
    /// The type declared on upload.
    #[serde(rename = "type")]
    pub mime: String,
    /// The local file it was read from.
    pub source: Option<PathBuf>,
    /// One entry per server, ordered by server URL.
    pub replicas: Vec<ReplicaStatus>,
}

/// Where a blob stands after a replica changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobProgress {
    /// Replicas stored.
    pub stored: u32,
    /// Replicas still pending.
    pub pending: u32,
    /// Replicas failed for good.
    pub failed: u32,
}

impl BlobProgress {
    /// No replica is left pending.
    pub fn is_settled(&self) -> bool {
        self.pending == 0
    }
}

impl Store {
    /// Records blobs and, for every server that does not hold them yet, an
    /// upload job, all in one transaction: after a crash either the whole
    /// batch is queued or none of it is.
    ///
    /// Replicas recorded as failed are set back to pending: naming a blob
    /// again is asking for another try.
    ///
    /// # Errors
    ///
    /// Database failures; nothing is written then.
    pub async fn enqueue(
        &self,
        blobs: &[NewBlob],
        servers: &[ServerUrl],
    ) -> Result<Enqueued, Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        let mut done = Enqueued::default();
        for blob in blobs {
            let source = blob.path.to_str().map(str::to_owned);
            sqlx::query(
                "INSERT INTO blobs (sha256, size, mime, source, created_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (sha256) DO UPDATE SET source = coalesce(excluded.source, source)",
            )
            .bind(blob.sha256.to_hex())
            .bind(blob.size as i64)
            .bind(&blob.mime)
            .bind(source)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;

            for server in servers {
                let state: String = sqlx::query_scalar(
                    "INSERT INTO replicas (sha256, server, state, created_at, updated_at)
                     VALUES (?1, ?2, 'pending', ?3, ?3)
                     ON CONFLICT (sha256, server) DO UPDATE SET
                         state = CASE state WHEN 'failed' THEN 'pending' ELSE state END,
                         updated_at = CASE state WHEN 'failed' THEN ?3 ELSE updated_at END
                     RETURNING state",
                )
                .bind(blob.sha256.to_hex())
                .bind(server.as_str())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
                if state == ReplicaState::Stored.as_str() {
                    done.already_stored += 1;
                    continue;
                }
                let inserted = sqlx::query(
                    "INSERT OR IGNORE INTO jobs (sha256, server, kind, state, run_at, created_at, updated_at)
                     VALUES (?1, ?2, 'upload', 'queued', ?3, ?3, ?3)",
                )
                .bind(blob.sha256.to_hex())
                .bind(server.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
                done.jobs += inserted.rows_affected();
            }
        }
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(done)
    }

    /// Every blob with its replicas, or only the named ones (unknown hashes
    /// are skipped), in the order blobs were first recorded.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn blob_statuses(&self, only: Option<&[Sha256]>) -> Result<Vec<BlobStatus>, Error> {
        let mut blobs = match only {
            None => {
                let rows = sqlx::query(
                    "SELECT sha256, size, mime, source FROM blobs ORDER BY created_at, sha256",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.sql(e))?;
                rows.iter().map(|row| self.blob_row(row)).collect::<Result<Vec<_>, _>>()?
            }
            Some(hashes) => {
                let mut blobs = Vec::with_capacity(hashes.len());
                for hash in hashes {
                    let row = sqlx::query(
                        "SELECT sha256, size, mime, source FROM blobs WHERE sha256 = ?",
                    )
                    .bind(hash.to_hex())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| self.sql(e))?;
                    if let Some(row) = row {
                        blobs.push(self.blob_row(&row)?);
                    }
                }
                blobs
            }
        };
        self.attach_replicas(&mut blobs, only.is_none()).await?;
        Ok(blobs)
    }

    async fn attach_replicas(&self, blobs: &mut [BlobStatus], all: bool) -> Result<(), Error> {
        if all {
            let rows = sqlx::query(concat!(
                "SELECT ",
                replica_columns!(),
                " FROM replicas ORDER BY sha256, server"
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.sql(e))?;
            let mut by_hash = std::collections::HashMap::<String, Vec<ReplicaStatus>>::new();
            for row in &rows {
                by_hash.entry(row.get("sha256")).or_default().push(self.replica_row(row)?);
            }
            for blob in blobs {
                blob.replicas = by_hash.remove(&blob.sha256.to_hex()).unwrap_or_default();
            }
            return Ok(());
        }
        for blob in blobs {
            let rows = sqlx::query(concat!(
                "SELECT ",
                replica_columns!(),
                " FROM replicas WHERE sha256 = ? ORDER BY server"
            ))
            .bind(blob.sha256.to_hex())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.sql(e))?;
            blob.replicas =
                rows.iter().map(|row| self.replica_row(row)).collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    fn blob_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<BlobStatus, Error> {
        let hash: String = row.get("sha256");
        Ok(BlobStatus {
            sha256: hash.parse().map_err(|_| self.corrupt(format!("blob hash {hash:?}")))?,
            size: row.get::<i64, _>("size") as u64,
            mime: row.get("mime"),
            source: row.get::<Option<String>, _>("source").map(PathBuf::from),
            replicas: Vec::new(),
        })
    }

    fn replica_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<ReplicaStatus, Error> {
        let state: String = row.get("state");
        Ok(ReplicaStatus {
            server: row.get("server"),
            state: ReplicaState::parse(&state)
                .ok_or_else(|| self.corrupt(format!("replica state {state:?}")))?,
            method: row.get("method"),
            url: row.get("url"),
            reason: row.get("reason"),
            last_status: row.get::<Option<i64>, _>("last_status").map(|s| s as u16),
            attempts: row.get::<i64, _>("attempts") as u32,
            bytes_sent: row.get::<i64, _>("bytes_sent") as u64,
            updated_at: row.get("updated_at"),
        })
    }

    /// Counts a blob's replicas by state.
    pub(crate) async fn blob_progress(
        &self,
        conn: &mut sqlx::SqliteConnection,
        hash: &Sha256,
    ) -> Result<BlobProgress, Error> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE state = 'stored')  AS stored,
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'failed')  AS failed
             FROM replicas WHERE sha256 = ?",
        )
        .bind(hash.to_hex())
        .fetch_one(conn)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(BlobProgress {
            stored: row.get::<i64, _>("stored") as u32,
            pending: row.get::<i64, _>("pending") as u32,
            failed: row.get::<i64, _>("failed") as u32,
        })
    }

    /// The token encoding a server last accepted, if we learned one.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn token_encoding(
        &self,
        server: &ServerUrl,
    ) -> Result<Option<crate::blossom::TokenEncoding>, Error> {
        let name: Option<Option<String>> =
            sqlx::query_scalar("SELECT token_encoding FROM servers WHERE url = ?")
                .bind(server.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.sql(e))?;
        Ok(name.flatten().as_deref().and_then(crate::blossom::TokenEncoding::from_name))
    }

    /// Remembers the token encoding a server accepted.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn set_token_encoding(
        &self,
        server: &ServerUrl,
        encoding: crate::blossom::TokenEncoding,
    ) -> Result<(), Error> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO servers (url, token_encoding, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (url) DO UPDATE SET token_encoding = ?2, updated_at = ?3",
        )
        .bind(server.as_str())
        .bind(encoding.as_str())
        .bind(to_millis(SystemTime::now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    pub(crate) fn blob(content: &[u8]) -> NewBlob {
        NewBlob {
            sha256: Sha256::digest(content),
            size: content.len() as u64,
            mime: "text/plain".into(),
            path: PathBuf::from("/data/a.txt"),
        }
    }

    fn servers() -> Vec<ServerUrl> {
        ["http://a.test", "http://b.test"].iter().map(|s| ServerUrl::parse(s).unwrap()).collect()
    }

    #[tokio::test]
    async fn enqueue_creates_one_job_per_server_once() {
        let (store, _dir) = temp_store().await;
        let blobs = [blob(b"one"), blob(b"two")];
        let first = store.enqueue(&blobs, &servers()).await.unwrap();
        assert_eq!(first, Enqueued { jobs: 4, already_stored: 0 });
        let again = store.enqueue(&blobs, &servers()).await.unwrap();
        assert_eq!(again, Enqueued { jobs: 0, already_stored: 0 });

        let statuses = store.blob_statuses(None).await.unwrap();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.iter().all(|b| b.replicas.len() == 2));
        assert!(statuses[0].replicas.iter().all(|r| r.state == ReplicaState::Pending));
    }

    #[tokio::test]
    async fn statuses_for_named_hashes_skip_unknown_ones() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"one")], &servers()).await.unwrap();
        let wanted = [Sha256::digest(b"one"), Sha256::digest(b"unknown")];
        let statuses = store.blob_statuses(Some(&wanted)).await.unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].sha256, wanted[0]);
        assert_eq!(statuses[0].replicas[1].server, "http://b.test");
    }

    #[tokio::test]
    async fn token_encoding_is_remembered() {
        let (store, _dir) = temp_store().await;
        let server = &servers()[0];
        assert_eq!(store.token_encoding(server).await.unwrap(), None);
        store.set_token_encoding(server, crate::blossom::TokenEncoding::Base64Url).await.unwrap();
        assert_eq!(
            store.token_encoding(server).await.unwrap(),
            Some(crate::blossom::TokenEncoding::Base64Url)
        );
    }
}
