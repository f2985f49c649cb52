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

/// Creates or updates a replica for new work and returns its state:
/// `pending` when work is needed. Stored replicas stay stored.
const UPSERT_REPLICA_RETRY_FAILED: &str = "INSERT INTO replicas (sha256, server, state, created_at, updated_at)
     SELECT value ->> 'h', ?2, 'pending', ?3, ?3 FROM json_each(?1) WHERE true
     ON CONFLICT (sha256, server) DO UPDATE SET
         state = CASE WHEN state IN ('failed', 'missing', 'corrupt', 'deleted') THEN 'pending' ELSE state END,
         updated_at = ?3
";

/// Blobs per batch of statements in `enqueue`.
const ENQUEUE_BATCH: usize = 500;

/// As [`UPSERT_REPLICA_RETRY_FAILED`], but failed replicas stay failed.
const UPSERT_REPLICA_RETRY_LOST: &str =
    "INSERT INTO replicas (sha256, server, state, created_at, updated_at)
     SELECT value ->> 'h', ?2, 'pending', ?3, ?3 FROM json_each(?1) WHERE true
     ON CONFLICT (sha256, server) DO UPDATE SET
         state = CASE WHEN state IN ('missing', 'corrupt') THEN 'pending' ELSE state END,
         updated_at = ?3";

/// Servers as a JSON array, for `IN (SELECT value FROM json_each(?))`.
pub(crate) fn server_list(servers: &[ServerUrl]) -> String {
    serde_json::to_string(&servers.iter().map(ServerUrl::as_str).collect::<Vec<_>>())
        .unwrap_or_default()
}

/// A path as stored: text when it is valid UTF-8; otherwise a lossy text
/// for people and the exact bytes beside it.
pub(crate) fn path_columns(path: &std::path::Path) -> (Option<String>, Option<Vec<u8>>) {
    if path.as_os_str().is_empty() {
        return (None, None);
    }
    match path.to_str() {
        Some(text) => (Some(text.to_owned()), None),
        None => (Some(path.to_string_lossy().into_owned()), raw_bytes(path)),
    }
}

/// The inverse of [`path_columns`].
pub(crate) fn path_from_columns(text: Option<String>, raw: Option<Vec<u8>>) -> Option<PathBuf> {
    #[cfg(unix)]
    if let Some(raw) = raw {
        use std::os::unix::ffi::OsStringExt as _;
        return Some(PathBuf::from(std::ffi::OsString::from_vec(raw)));
    }
    #[cfg(not(unix))]
    let _ = raw;
    text.map(PathBuf::from)
}

#[cfg(unix)]
fn raw_bytes(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt as _;
    Some(path.as_os_str().as_bytes().to_vec())
}

#[cfg(not(unix))]
fn raw_bytes(_path: &std::path::Path) -> Option<Vec<u8>> {
    None
}

/// The columns `replica_row` reads.
macro_rules! replica_columns {
    () => {
        "sha256, server, state, method, url, reason, last_status, attempts, bytes_sent, updated_at, verified_at"
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
    /// Recorded as stored, but the server no longer has it (found by verify).
    Missing,
    /// Recorded as stored, but the server serves other bytes (found by verify).
    Corrupt,
    /// Deleted from the server on request.
    Deleted,
}

impl ReplicaState {
    /// The name used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Stored => "stored",
            Self::Failed => "failed",
            Self::Missing => "missing",
            Self::Corrupt => "corrupt",
            Self::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Stored, Self::Failed, Self::Missing, Self::Corrupt, Self::Deleted]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// How new work for a blob is ordered across servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Upload to the first server that lacks the blob, then have the others
    /// fetch it from a server that holds it (`PUT /mirror`), falling back to
    /// a direct upload where they cannot.
    #[default]
    Mirror,
    /// Upload to every server directly.
    Upload,
}

/// Which replicas a new round of work covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Every replica not stored, failed ones included (naming a blob again
    /// is asking for another try).
    Failed,
    /// Only replicas never tried, missing or corrupt (what `repair` does).
    Lost,
}

/// A server holding a blob, as a mirror source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The server.
    pub server: String,
    /// Its URL for the blob, if its descriptor gave one.
    pub url: Option<String>,
}

/// What `verify` found for one replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The server has the blob (and, checked deeply, the right bytes).
    Verified,
    /// The server does not have it.
    Missing,
    /// The server serves other bytes under the hash.
    Corrupt(String),
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
    /// When the server last confirmed it holds the blob, unix milliseconds.
    pub verified_at: Option<i64>,
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
    /// Body bytes this machine sent for the blob, over all servers.
    pub bytes_sent: u64,
}

/// Where a blob stands after a replica changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// Records blobs and, for every server that does not hold them yet, a
    /// job, all in one transaction: after a crash either the whole batch is
    /// queued or none of it is.
    ///
    /// With [`Strategy::Mirror`] and no server holding a blob yet, only the
    /// first server lacking it (in the given order) gets a runnable job; the
    /// others wait until some server holds the blob and then mirror it.
    ///
    /// # Errors
    ///
    /// Database failures; nothing is written then.
    pub async fn enqueue(
        &self,
        blobs: &[NewBlob],
        servers: &[ServerUrl],
        strategy: Strategy,
        retry: Retry,
    ) -> Result<Enqueued, Error> {
        let now = to_millis(SystemTime::now());
        let upsert = match retry {
            Retry::Failed => UPSERT_REPLICA_RETRY_FAILED,
            Retry::Lost => UPSERT_REPLICA_RETRY_LOST,
        };
        let mut tx = self.write().await?;
        let mut done = Enqueued::default();
        // A few statements per batch rather than per blob: a statement
        // costs a round trip to SQLite's thread, which would dominate.
        for batch in blobs.chunks(ENQUEUE_BATCH) {
            let rows: Vec<serde_json::Value> = batch
                .iter()
                .map(|blob| {
                    let (source, source_raw) = path_columns(&blob.path);
                    serde_json::json!({
                        "h": blob.sha256.to_hex(),
                        "size": blob.size,
                        "mime": blob.mime,
                        "src": source,
                        "raw": source_raw.map(hex::encode),
                    })
                })
                .collect();
            let rows = serde_json::Value::Array(rows).to_string();
            sqlx::query(
                "INSERT INTO blobs (sha256, size, mime, source, created_at, source_raw)
                 SELECT value ->> 'h', value ->> 'size', value ->> 'mime', value ->> 'src', ?2,
                        unhex(value ->> 'raw')
                 FROM json_each(?1) WHERE true
                 ON CONFLICT (sha256) DO UPDATE SET
                     source_raw = CASE WHEN excluded.source IS NULL THEN source_raw ELSE excluded.source_raw END,
                     source = coalesce(excluded.source, source), deleted_at = NULL",
            )
            .bind(&rows)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;

            // Copies verify found wrong must be replaced, not trusted again.
            let corrupt: std::collections::HashSet<(String, String)> = sqlx::query_as(
                "SELECT r.sha256, r.server FROM json_each(?1) e CROSS JOIN replicas r
                 WHERE r.sha256 = e.value ->> 'h' AND r.state = 'corrupt'",
            )
            .bind(&rows)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?
            .into_iter()
            .collect();
            let job_state = match strategy {
                Strategy::Upload => "queued",
                Strategy::Mirror => "waiting",
            };
            for server in servers {
                // Rows are not read back (a row costs about what a
                // statement does): the counts and the jobs come from
                // statements over the batch.
                sqlx::query(upsert)
                    .bind(&rows)
                    .bind(server.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.sql(e))?;
                let stored: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM json_each(?1) e CROSS JOIN replicas r
                     WHERE r.sha256 = e.value ->> 'h' AND r.server = ?2 AND r.state = 'stored'",
                )
                .bind(&rows)
                .bind(server.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
                done.already_stored += stored as u64;
                let replace: Vec<&str> = corrupt
                    .iter()
                    .filter(|(_, s)| s == server.as_str())
                    .map(|(hash, _)| hash.as_str())
                    .collect();
                let inserted = sqlx::query(
                    "INSERT OR IGNORE INTO jobs (sha256, server, kind, state, run_at, created_at, updated_at)
                     SELECT r.sha256, ?2,
                            CASE WHEN r.sha256 IN (SELECT value FROM json_each(?5)) THEN 'replace' ELSE 'upload' END,
                            ?3, ?4, ?4, ?4
                     FROM json_each(?1) e CROSS JOIN replicas r
                     WHERE r.sha256 = e.value ->> 'h' AND r.server = ?2 AND r.state = 'pending'",
                )
                .bind(&rows)
                .bind(server.as_str())
                .bind(job_state)
                .bind(now)
                .bind(serde_json::to_string(&replace).unwrap_or_default())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
                done.jobs += inserted.rows_affected();
            }
            if strategy == Strategy::Upload {
                // Asked to upload everywhere: nothing waits for a holder.
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', run_at = ?2
                     WHERE id IN (SELECT j.id FROM json_each(?1) e CROSS JOIN jobs j
                                  WHERE j.sha256 = e.value ->> 'h' AND j.state = 'waiting')",
                )
                .bind(&rows)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
            }
            // As `release_waiting`, for every blob of the batch at once. The
            // batch drives the loop (CROSS JOIN keeps that order), so the
            // cost does not grow with the jobs already queued.
            sqlx::query(
                "UPDATE jobs SET state = 'queued', run_at = ?2, updated_at = ?2
                 WHERE id IN (
                     SELECT j.id FROM json_each(?1) e CROSS JOIN jobs j
                     WHERE j.sha256 = e.value ->> 'h' AND j.state = 'waiting'
                       AND (EXISTS (SELECT 1 FROM replicas r WHERE r.sha256 = j.sha256 AND r.state = 'stored')
                            OR (j.id = (SELECT min(k.id) FROM jobs k WHERE k.sha256 = j.sha256 AND k.state = 'waiting')
                                AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.sha256 = j.sha256 AND k.state IN ('queued', 'leased')))))",
            )
            .bind(&rows)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
        }
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(done)
    }

    /// Keeps a blob's waiting jobs moving (returns how many it released):
    /// once some server holds the blob they all become runnable (they will
    /// mirror it); while none does, the first waiting one becomes runnable
    /// (it will upload) when no job of the blob is running, or right after
    /// an attempt failed, so that a failing first server does not hold the
    /// others back while it waits out its backoff.
    pub(crate) async fn release_waiting(
        &self,
        conn: &mut sqlx::SqliteConnection,
        hash: &Sha256,
        now: i64,
        after_failure: bool,
    ) -> Result<u64, Error> {
        let released = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = ?2, updated_at = ?2
             WHERE sha256 = ?1 AND state = 'waiting'
               AND (EXISTS (SELECT 1 FROM replicas WHERE sha256 = ?1 AND state = 'stored')
                    OR (id = (SELECT min(id) FROM jobs WHERE sha256 = ?1 AND state = 'waiting')
                        AND (?3 OR NOT EXISTS (SELECT 1 FROM jobs WHERE sha256 = ?1 AND state IN ('queued', 'leased')))))",
        )
        .bind(hash.to_hex())
        .bind(now)
        .bind(after_failure)
        .execute(&mut *conn)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(released.rows_affected())
    }

    /// Makes sure every blob with work waiting on these servers has a job
    /// that can run here: when the job that was to upload it belongs to a
    /// server no longer configured, the first waiting one here takes over.
    /// Returns how many jobs were released.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn unblock_waiting(&self, servers: &[ServerUrl]) -> Result<u64, Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        let released = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = ?2, updated_at = ?2
             WHERE id IN (
                 SELECT min(j.id) FROM jobs j
                 WHERE j.state = 'waiting' AND j.server IN (SELECT value FROM json_each(?1))
                   AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.sha256 = j.sha256 AND r.state = 'stored')
                   AND NOT EXISTS (SELECT 1 FROM jobs k WHERE k.sha256 = j.sha256 AND k.state IN ('queued', 'leased')
                                   AND k.server IN (SELECT value FROM json_each(?1)))
                 GROUP BY j.sha256)",
        )
        .bind(server_list(servers))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = ?2, updated_at = ?2
             WHERE state = 'waiting' AND server IN (SELECT value FROM json_each(?1))
               AND EXISTS (SELECT 1 FROM replicas r WHERE r.sha256 = jobs.sha256 AND r.state = 'stored')",
        )
        .bind(server_list(servers))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(released.rows_affected())
    }

    /// Every blob not deleted, with where its bytes are (an empty path when
    /// no local copy is known), for `repair`.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn known_blobs(&self) -> Result<Vec<LocalBlob>, Error> {
        let rows = sqlx::query(
            "SELECT sha256, size, mime, source, source_raw FROM blobs WHERE deleted_at IS NULL ORDER BY created_at, sha256",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.sql(e))?;
        rows.iter()
            .map(|row| {
                let status = self.blob_row(row)?;
                Ok(LocalBlob {
                    sha256: status.sha256,
                    size: status.size,
                    mime: status.mime,
                    path: status.source.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Servers that hold a blob, other than `except`, oldest copy first.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn holders(&self, hash: &Sha256, except: &ServerUrl) -> Result<Vec<Holder>, Error> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT server, url FROM replicas WHERE sha256 = ? AND state = 'stored' AND server != ?
             ORDER BY stored_at",
        )
        .bind(hash.to_hex())
        .bind(except.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(rows.into_iter().map(|(server, url)| Holder { server, url }).collect())
    }

    /// Records what `verify` found for one replica.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn record_verification(
        &self,
        hash: &Sha256,
        server: &ServerUrl,
        found: &Verification,
    ) -> Result<(), Error> {
        let now = to_millis(SystemTime::now());
        let (state, reason) = match found {
            Verification::Verified => ("stored", None),
            Verification::Missing => {
                ("missing", Some("not found on the server by verify".to_owned()))
            }
            Verification::Corrupt(detail) => ("corrupt", Some(detail.clone())),
        };
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE replicas SET state = ?3, reason = ?4, verified_at = ?5, updated_at = ?5
             WHERE sha256 = ?1 AND server = ?2",
        )
        .bind(hash.to_hex())
        .bind(server.as_str())
        .bind(state)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))
    }

    /// Records that a blob was deleted from a server (`gone`: a later
    /// `HEAD` confirmed it), and cancels work not yet started for it there.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn record_deletion(
        &self,
        hash: &Sha256,
        server: &ServerUrl,
        reason: Option<&str>,
    ) -> Result<(), Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE replicas SET state = 'deleted', reason = ?3, url = NULL, updated_at = ?4
             WHERE sha256 = ?1 AND server = ?2",
        )
        .bind(hash.to_hex())
        .bind(server.as_str())
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        sqlx::query(
            "UPDATE jobs SET state = 'dead', last_error = 'deleted on request', updated_at = ?3
             WHERE sha256 = ?1 AND server = ?2 AND state IN ('queued', 'waiting')",
        )
        .bind(hash.to_hex())
        .bind(server.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        sqlx::query(
            "UPDATE blobs SET deleted_at = ?2 WHERE sha256 = ?1
               AND NOT EXISTS (SELECT 1 FROM replicas WHERE sha256 = ?1 AND state != 'deleted')",
        )
        .bind(hash.to_hex())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))
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
                    "SELECT sha256, size, mime, source, source_raw FROM blobs ORDER BY created_at, sha256",
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
                        "SELECT sha256, size, mime, source, source_raw FROM blobs WHERE sha256 = ?",
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
                blob.bytes_sent = blob.replicas.iter().map(|r| r.bytes_sent).sum();
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
            blob.bytes_sent = blob.replicas.iter().map(|r| r.bytes_sent).sum();
        }
        Ok(())
    }

    fn blob_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<BlobStatus, Error> {
        let hash: String = row.get("sha256");
        Ok(BlobStatus {
            sha256: hash.parse().map_err(|_| self.corrupt(format!("blob hash {hash:?}")))?,
            size: row.get::<i64, _>("size") as u64,
            mime: row.get("mime"),
            source: path_from_columns(row.get("source"), row.get("source_raw")),
            replicas: Vec::new(),
            bytes_sent: 0,
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
            verified_at: row.get("verified_at"),
        })
    }

    /// Where a blob stands: its replicas on `servers` counted by state.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn progress(
        &self,
        hash: &Sha256,
        servers: &[ServerUrl],
    ) -> Result<BlobProgress, Error> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.sql(e))?;
        self.blob_progress(&mut conn, hash, Some(servers)).await
    }

    /// Counts a blob's replicas by state, on the given servers only (all
    /// servers when `None`): copies elsewhere neither count toward a goal nor
    /// keep it waiting.
    pub(crate) async fn blob_progress(
        &self,
        conn: &mut sqlx::SqliteConnection,
        hash: &Sha256,
        servers: Option<&[ServerUrl]>,
    ) -> Result<BlobProgress, Error> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE state = 'stored')  AS stored,
                    count(*) FILTER (WHERE state = 'pending') AS pending,
                    count(*) FILTER (WHERE state = 'failed')  AS failed
             FROM replicas
             WHERE sha256 = ?1 AND (?2 IS NULL OR server IN (SELECT value FROM json_each(?2)))",
        )
        .bind(hash.to_hex())
        .bind(servers.map(server_list))
        .fetch_one(conn)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(BlobProgress {
            stored: row.get::<i64, _>("stored") as u32,
            pending: row.get::<i64, _>("pending") as u32,
            failed: row.get::<i64, _>("failed") as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use crate::store::{Retry, Strategy};

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
        let first =
            store.enqueue(&blobs, &servers(), Strategy::Upload, Retry::Failed).await.unwrap();
        assert_eq!(first, Enqueued { jobs: 4, already_stored: 0 });
        let again =
            store.enqueue(&blobs, &servers(), Strategy::Upload, Retry::Failed).await.unwrap();
        assert_eq!(again, Enqueued { jobs: 0, already_stored: 0 });

        let statuses = store.blob_statuses(None).await.unwrap();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.iter().all(|b| b.replicas.len() == 2));
        assert!(statuses[0].replicas.iter().all(|r| r.state == ReplicaState::Pending));
    }

    #[tokio::test]
    async fn statuses_for_named_hashes_skip_unknown_ones() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"one")], &servers(), Strategy::Upload, Retry::Failed).await.unwrap();
        let wanted = [Sha256::digest(b"one"), Sha256::digest(b"unknown")];
        let statuses = store.blob_statuses(Some(&wanted)).await.unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].sha256, wanted[0]);
        assert_eq!(statuses[0].replicas[1].server, "http://b.test");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn paths_that_are_not_utf8_come_back_exactly() {
        use std::os::unix::ffi::OsStrExt as _;
        let (store, _dir) = temp_store().await;
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(b"/data/caf\xe9.txt"));
        let mut new = blob(b"latin-1 name");
        new.path = path.clone();
        store.enqueue(&[new], &servers(), Strategy::Upload, Retry::Failed).await.unwrap();
        assert_eq!(store.known_blobs().await.unwrap()[0].path, path);
        let until = SystemTime::now() + std::time::Duration::from_secs(60);
        let jobs = store.claim(&servers()[0], "me", 1, until, 5).await.unwrap();
        assert_eq!(jobs[0].blob.path, path);
    }
}
