//! The job queue: claiming jobs under a lease, recording how they ended, and
//! taking back the leases of processes that died.
//!
//! A job's `attempts` counts claims, not failures: a job that kills its
//! worker every time still runs out of attempts and ends up dead with a
//! reason, instead of crashing the process forever. A job handed back
//! unstarted at shutdown gives its attempt back.

use std::time::SystemTime;

use sqlx::Row as _;

use super::replicas::BlobProgress;
use super::{Error, Store, to_millis};
use crate::blob::{LocalBlob, Sha256};
use crate::blossom::ServerUrl;

/// A job this process holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Row id.
    pub id: i64,
    /// The blob to replicate; `path` is empty when no local copy is known.
    pub blob: LocalBlob,
    /// This claim's attempt number, from 1.
    pub attempt: u32,
    /// The server's copy was found wrong: delete it and send the blob
    /// again, without trusting the server's word that it has it.
    pub replace: bool,
}

/// What recording a job's outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// Where the blob now stands.
    pub progress: BlobProgress,
    /// Waiting jobs of the blob that became runnable.
    pub released: u64,
}

/// How a job ended, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The server holds a verified copy.
    Stored {
        /// `uploaded` or `present`.
        method: &'static str,
        /// The server's URL for the blob.
        url: Option<String>,
        /// Status of the final answer.
        status: Option<u16>,
        /// Body bytes sent in this attempt.
        bytes_sent: u64,
    },
    /// A failure worth another try at `run_at`.
    Retry {
        /// When to try again.
        run_at: SystemTime,
        /// Status of the failed answer, if there was one.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
        /// Body bytes sent in this attempt.
        bytes_sent: u64,
    },
    /// The server will not take this blob; stop trying.
    Failed {
        /// Status of the failed answer, if there was one.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
        /// Body bytes sent in this attempt.
        bytes_sent: u64,
    },
    /// Transient failures went on until the attempts ran out; `run` tries
    /// such replicas again.
    GaveUp {
        /// Status of the last failed answer, if there was one.
        status: Option<u16>,
        /// What went wrong, last.
        reason: String,
        /// Body bytes sent in this attempt.
        bytes_sent: u64,
    },
    /// Not attempted (shutdown): back to the queue, attempt given back.
    Released,
}

impl Store {
    /// Leases up to `limit` due jobs of one server to `owner` until
    /// `lease_until`: queued jobs whose time has come, and leased jobs
    /// whose lease ran out (their owner died or hung). Jobs past
    /// `max_attempts` are marked dead instead of returned.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn claim(
        &self,
        server: &ServerUrl,
        owner: &str,
        limit: u32,
        lease_until: SystemTime,
        max_attempts: u32,
    ) -> Result<Vec<ClaimedJob>, Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        // One branch per state, so that each walks the claim index in
        // order: a single OR over both states scans every job the server
        // ever had, done ones included, and sorts them on every claim.
        let rows = sqlx::query(
            "SELECT j.id, j.sha256, j.kind, j.attempts, j.last_error, b.size, b.mime, b.source, b.source_raw
             FROM (
                 SELECT * FROM (
                     SELECT id, run_at FROM jobs
                     WHERE server = ?1 AND state = 'queued' AND run_at <= ?2 AND kind IN ('upload', 'replace')
                     ORDER BY run_at, id LIMIT ?3)
                 UNION ALL
                 SELECT * FROM (
                     SELECT id, run_at FROM jobs
                     WHERE server = ?1 AND state = 'leased' AND lease_until <= ?2 AND kind IN ('upload', 'replace')
                     ORDER BY run_at, id LIMIT ?3)
             ) due
             JOIN jobs j ON j.id = due.id
             JOIN blobs b ON b.sha256 = j.sha256
             ORDER BY due.run_at, due.id
             LIMIT ?3",
        )
        .bind(server.as_str())
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;

        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.get("id");
            let hash: String = row.get("sha256");
            let sha256: Sha256 =
                hash.parse().map_err(|_| self.corrupt(format!("job hash {hash:?}")))?;
            let attempts = row.get::<i64, _>("attempts") as u32;
            if attempts >= max_attempts {
                let last: Option<String> = row.get("last_error");
                let reason = format!(
                    "gave up after {attempts} attempts; last error: {}",
                    last.as_deref()
                        .unwrap_or("none recorded (the process died during the attempt)")
                );
                self.settle(
                    &mut tx,
                    id,
                    &sha256,
                    server,
                    None,
                    &Settle::dead(None, &reason, 0),
                    now,
                )
                .await?;
                self.release_waiting(&mut tx, &sha256, now, true).await?;
                continue;
            }
            let path = super::replicas::path_from_columns(row.get("source"), row.get("source_raw"))
                .unwrap_or_default();
            let blob = LocalBlob {
                sha256,
                size: row.get::<i64, _>("size") as u64,
                mime: row.get("mime"),
                path,
            };
            let replace = row.get::<String, _>("kind") == "replace";
            jobs.push(ClaimedJob { id, blob, attempt: attempts + 1, replace });
        }
        if !jobs.is_empty() {
            // One statement for the whole batch: each is a round trip to
            // the connection's thread.
            let ids = jobs.iter().map(|j| j.id.to_string()).collect::<Vec<_>>().join(",");
            let ids = format!("[{ids}]");
            sqlx::query(
                "UPDATE jobs SET state = 'leased', lease_owner = ?2, lease_until = ?3,
                     attempts = attempts + 1, updated_at = ?4
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(ids)
            .bind(owner)
            .bind(to_millis(lease_until))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
        }
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(jobs)
    }

    /// Records how a leased job ended, with the replica it is about, in
    /// one transaction, and returns where the blob now stands.
    ///
    /// A stored replica is a fact about the server and is recorded even if
    /// this process lost the lease meanwhile; the job row is only changed
    /// while we still own it.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn finish(
        &self,
        job: &ClaimedJob,
        server: &ServerUrl,
        owner: &str,
        outcome: &JobOutcome,
    ) -> Result<Recorded, Error> {
        self.finish_for(job, server, owner, outcome, None).await
    }

    /// As [`Store::finish`], with the blob's progress counted on `scope`
    /// only (the servers this process replicates to).
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn finish_for(
        &self,
        job: &ClaimedJob,
        server: &ServerUrl,
        owner: &str,
        outcome: &JobOutcome,
        scope: Option<&[ServerUrl]>,
    ) -> Result<Recorded, Error> {
        let mut tx = self.write().await?;
        let now = to_millis(SystemTime::now());
        let recorded = self.finish_in(&mut tx, job, server, owner, outcome, scope, now).await?;
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(recorded)
    }

    /// As [`Store::finish_for`] for several jobs, in one transaction: the
    /// cost of a commit is shared by every job that finished meanwhile.
    ///
    /// # Errors
    ///
    /// Database failures (nothing is recorded then).
    pub async fn finish_many(
        &self,
        finished: &[(&ClaimedJob, &ServerUrl, &JobOutcome)],
        owner: &str,
        scope: Option<&[ServerUrl]>,
    ) -> Result<Vec<Recorded>, Error> {
        let mut tx = self.write().await?;
        let now = to_millis(SystemTime::now());
        let mut recorded = Vec::with_capacity(finished.len());
        for (job, server, outcome) in finished {
            recorded.push(self.finish_in(&mut tx, job, server, owner, outcome, scope, now).await?);
        }
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(recorded)
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_in(
        &self,
        tx: &mut sqlx::SqliteConnection,
        job: &ClaimedJob,
        server: &ServerUrl,
        owner: &str,
        outcome: &JobOutcome,
        scope: Option<&[ServerUrl]>,
        now: i64,
    ) -> Result<Recorded, Error> {
        let settle = match outcome {
            JobOutcome::Stored { method, url, status, bytes_sent } => Settle {
                job_state: "done",
                replica_state: "stored",
                method: Some(method),
                url: url.as_deref(),
                status: *status,
                reason: None,
                run_at: None,
                bytes_sent: *bytes_sent,
                gave_up: false,
            },
            JobOutcome::Retry { run_at, status, reason, bytes_sent } => Settle {
                job_state: "queued",
                replica_state: "pending",
                method: None,
                url: None,
                status: *status,
                reason: Some(reason),
                run_at: Some(to_millis(*run_at)),
                bytes_sent: *bytes_sent,
                gave_up: false,
            },
            JobOutcome::Failed { status, reason, bytes_sent } => {
                Settle::dead(*status, reason, *bytes_sent)
            }
            JobOutcome::GaveUp { status, reason, bytes_sent } => {
                Settle { gave_up: true, ..Settle::dead(*status, reason, *bytes_sent) }
            }
            JobOutcome::Released => {
                sqlx::query(
                    "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL,
                         attempts = max(attempts - 1, 0), updated_at = ?3
                     WHERE id = ?1 AND lease_owner = ?2 AND state = 'leased'",
                )
                .bind(job.id)
                .bind(owner)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
                let progress = self.blob_progress(&mut *tx, &job.blob.sha256, scope).await?;
                return Ok(Recorded { progress, released: 0 });
            }
        };
        self.settle(&mut *tx, job.id, &job.blob.sha256, server, Some(owner), &settle, now).await?;
        let failed = !matches!(outcome, JobOutcome::Stored { .. });
        let released = self.release_waiting(&mut *tx, &job.blob.sha256, now, failed).await?;
        let progress = self.blob_progress(&mut *tx, &job.blob.sha256, scope).await?;
        Ok(Recorded { progress, released })
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        tx: &mut sqlx::SqliteConnection,
        job_id: i64,
        hash: &Sha256,
        server: &ServerUrl,
        owner: Option<&str>,
        settle: &Settle<'_>,
        now: i64,
    ) -> Result<(), Error> {
        let job = sqlx::query(
            "UPDATE jobs SET state = ?2, run_at = coalesce(?3, run_at), last_error = ?4,
                 lease_owner = NULL, lease_until = NULL, updated_at = ?5
             WHERE id = ?1 AND (?6 IS NULL OR (lease_owner = ?6 AND state = 'leased'))",
        )
        .bind(job_id)
        .bind(settle.job_state)
        .bind(settle.run_at)
        .bind(settle.reason)
        .bind(now)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        if job.rows_affected() == 0 && settle.replica_state != "stored" {
            // Someone else owns the job now; their outcome will be recorded.
            return Ok(());
        }
        sqlx::query(
            "UPDATE replicas SET state = ?3, method = coalesce(?4, method), url = coalesce(?5, url),
                 last_status = coalesce(?6, last_status), reason = ?7, attempts = attempts + 1,
                 bytes_sent = bytes_sent + ?8, updated_at = ?9, gave_up = ?10,
                 stored_at = CASE WHEN ?3 = 'stored' THEN ?9 ELSE stored_at END,
                 verified_at = CASE WHEN ?3 = 'stored' THEN ?9 ELSE verified_at END
             WHERE sha256 = ?1 AND server = ?2",
        )
        .bind(hash.to_hex())
        .bind(server.as_str())
        .bind(settle.replica_state)
        .bind(settle.method)
        .bind(settle.url)
        .bind(settle.status.map(i64::from))
        .bind(settle.reason)
        .bind(settle.bytes_sent as i64)
        .bind(now)
        .bind(settle.gave_up)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Queues again the replicas on these servers whose retries ran out
    /// (the server was down for a long time, say), and returns how many.
    /// Refused replicas stay failed.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn requeue_gave_up(&self, servers: &[ServerUrl]) -> Result<u64, Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        let mut requeued = 0;
        for server in servers {
            sqlx::query(
                "INSERT OR IGNORE INTO jobs (sha256, server, kind, state, run_at, created_at, updated_at)
                 SELECT sha256, server, 'upload', 'queued', ?2, ?2, ?2 FROM replicas
                 WHERE server = ?1 AND state = 'failed' AND gave_up = 1",
            )
            .bind(server.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
            let reset = sqlx::query(
                "UPDATE replicas SET state = 'pending', gave_up = 0, updated_at = ?2
                 WHERE server = ?1 AND state = 'failed' AND gave_up = 1",
            )
            .bind(server.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
            requeued += reset.rows_affected();
        }
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(requeued)
    }

    /// Extends every lease `owner` holds and records that it is alive.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn renew_leases(&self, owner: &str, lease_until: SystemTime) -> Result<(), Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        sqlx::query("UPDATE jobs SET lease_until = ?2 WHERE lease_owner = ?1 AND state = 'leased'")
            .bind(owner)
            .bind(to_millis(lease_until))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
        sqlx::query("UPDATE runners SET heartbeat_at = ?2 WHERE id = ?1")
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))
    }

    /// The blobs of the next `limit` jobs `server`'s worker will claim
    /// (due now, in claim order), with their sizes, without claiming them:
    /// what a batch token is signed for ahead of the claims.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn upcoming(
        &self,
        server: &ServerUrl,
        limit: u32,
    ) -> Result<Vec<(Sha256, u64)>, Error> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT j.sha256, b.size
             FROM (SELECT id, sha256, run_at FROM jobs
                   WHERE server = ?1 AND state = 'queued' AND run_at <= ?2 AND kind IN ('upload', 'replace')
                   ORDER BY run_at, id LIMIT ?3) j
             JOIN blobs b ON b.sha256 = j.sha256
             ORDER BY j.run_at, j.id",
        )
        .bind(server.as_str())
        .bind(to_millis(SystemTime::now()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(hash, size)| {
                let sha256 =
                    hash.parse().map_err(|_| self.corrupt(format!("job hash {hash:?}")))?;
                Ok((sha256, size as u64))
            })
            .collect()
    }

    /// When the next job of `server` becomes claimable: the earliest
    /// `run_at` of a queued job or lease end of a leased one.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn next_due(&self, server: &ServerUrl) -> Result<Option<SystemTime>, Error> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT min(CASE state WHEN 'queued' THEN run_at ELSE lease_until END)
             FROM jobs WHERE server = ? AND state IN ('queued', 'leased')",
        )
        .bind(server.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.sql(e))?;
        Ok(next.map(super::from_millis))
    }

    /// Jobs not yet done or dead (waiting ones included), over the given
    /// servers.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn open_jobs(&self, servers: &[ServerUrl]) -> Result<u64, Error> {
        let mut total = 0;
        for server in servers {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE server = ? AND state IN ('queued', 'leased', 'waiting')",
            )
            .bind(server.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.sql(e))?;
            total += count as u64;
        }
        Ok(total)
    }

    /// Registers a process working the queue, and takes back the leases of
    /// processes on the same host that are no longer running (`is_alive`
    /// says which pids are). Returns how many jobs were taken back.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn register_runner(
        &self,
        id: &str,
        host: &str,
        pid: u32,
        is_alive: impl Fn(u32) -> bool,
    ) -> Result<u64, Error> {
        let now = to_millis(SystemTime::now());
        let mut tx = self.write().await?;
        let others: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, pid FROM runners WHERE host = ?")
                .bind(host)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
        let mut reclaimed = 0;
        for (other, other_pid) in others {
            if u32::try_from(other_pid).is_ok_and(&is_alive) {
                continue;
            }
            let released = sqlx::query(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = ?2
                 WHERE lease_owner = ?1 AND state = 'leased'",
            )
            .bind(&other)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
            reclaimed += released.rows_affected();
            sqlx::query("DELETE FROM runners WHERE id = ?")
                .bind(&other)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.sql(e))?;
        }
        sqlx::query(
            "INSERT INTO runners (id, host, pid, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?4)",
        )
        .bind(id)
        .bind(host)
        .bind(i64::from(pid))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))?;
        Ok(reclaimed)
    }

    /// Removes a process's registration at a clean exit.
    ///
    /// # Errors
    ///
    /// Database failures.
    pub async fn unregister_runner(&self, id: &str) -> Result<(), Error> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM runners WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.sql(e))?;
        tx.commit().await.map_err(|e| self.sql(e))
    }
}

/// The columns a settled job writes.
struct Settle<'a> {
    job_state: &'static str,
    replica_state: &'static str,
    method: Option<&'a str>,
    url: Option<&'a str>,
    status: Option<u16>,
    reason: Option<&'a str>,
    run_at: Option<i64>,
    bytes_sent: u64,
    /// Failed by running out of attempts, not by a refusal.
    gave_up: bool,
}

impl<'a> Settle<'a> {
    fn dead(status: Option<u16>, reason: &'a str, bytes_sent: u64) -> Self {
        Self {
            job_state: "dead",
            replica_state: "failed",
            method: None,
            url: None,
            status,
            reason: Some(reason),
            run_at: None,
            bytes_sent,
            gave_up: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::test_support::temp_store;
    use crate::store::{ReplicaState, Retry, Strategy};

    fn server() -> ServerUrl {
        ServerUrl::parse("http://a.test").unwrap()
    }

    fn blob(content: &[u8]) -> LocalBlob {
        LocalBlob {
            sha256: Sha256::digest(content),
            size: content.len() as u64,
            mime: "text/plain".into(),
            path: std::path::PathBuf::from("/data/x"),
        }
    }

    fn later(secs: u64) -> SystemTime {
        SystemTime::now() + Duration::from_secs(secs)
    }

    async fn state_of(store: &Store) -> ReplicaState {
        store.blob_statuses(None).await.unwrap()[0].replicas[0].state
    }

    fn servers() -> Vec<ServerUrl> {
        ["http://a.test", "http://b.test", "http://c.test"]
            .iter()
            .map(|s| ServerUrl::parse(s).unwrap())
            .collect()
    }

    fn stored() -> JobOutcome {
        JobOutcome::Stored {
            method: "uploaded",
            url: Some("u".into()),
            status: Some(201),
            bytes_sent: 1,
        }
    }

    /// Mirror-first: one server uploads, the others wait for a holder.
    #[tokio::test]
    async fn mirror_strategy_releases_the_others_once_one_server_holds_the_blob() {
        let (store, _dir) = temp_store().await;
        let s = servers();
        store.enqueue(&[blob(b"a")], &s, Strategy::Mirror, Retry::Failed).await.unwrap();
        assert!(store.claim(&s[1], "me", 5, later(60), 5).await.unwrap().is_empty(), "b waits");
        assert_eq!(store.open_jobs(&s).await.unwrap(), 3, "waiting jobs are open work");
        let job = store.claim(&s[0], "me", 5, later(60), 5).await.unwrap().remove(0);

        store.finish(&job, &s[0], "me", &stored()).await.unwrap();
        assert_eq!(store.claim(&s[1], "me", 5, later(60), 5).await.unwrap().len(), 1);
        assert_eq!(store.claim(&s[2], "me", 5, later(60), 5).await.unwrap().len(), 1);
        let holders = store.holders(&blob(b"a").sha256, &s[1]).await.unwrap();
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].server, "http://a.test");
    }

    /// When the first server refuses the blob for good, the next one
    /// uploads instead of waiting forever.
    #[tokio::test]
    async fn mirror_strategy_moves_on_when_the_uploader_fails() {
        let (store, _dir) = temp_store().await;
        let s = servers();
        store.enqueue(&[blob(b"a")], &s, Strategy::Mirror, Retry::Failed).await.unwrap();
        let job = store.claim(&s[0], "me", 5, later(60), 5).await.unwrap().remove(0);
        let failed =
            JobOutcome::Failed { status: Some(413), reason: "too large".into(), bytes_sent: 0 };
        store.finish(&job, &s[0], "me", &failed).await.unwrap();
        assert_eq!(store.claim(&s[1], "me", 5, later(60), 5).await.unwrap().len(), 1);
        assert!(store.claim(&s[2], "me", 5, later(60), 5).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_claimed_job_is_not_claimed_twice() {
        let (store, _dir) = temp_store().await;
        store
            .enqueue(&[blob(b"a"), blob(b"b")], &[server()], Strategy::Upload, Retry::Failed)
            .await
            .unwrap();
        let first = store.claim(&server(), "one", 10, later(60), 5).await.unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].attempt, 1);
        assert!(store.claim(&server(), "two", 10, later(60), 5).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_expired_lease_is_claimed_again() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        store.claim(&server(), "dead", 10, SystemTime::now(), 5).await.unwrap();
        let again = store.claim(&server(), "alive", 10, later(60), 5).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt, 2, "the crashed claim counts as an attempt");
    }

    #[tokio::test]
    async fn stored_settles_the_blob() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        let job = store.claim(&server(), "me", 1, later(60), 5).await.unwrap().remove(0);
        let stored = JobOutcome::Stored {
            method: "uploaded",
            url: Some("u".into()),
            status: Some(201),
            bytes_sent: 1,
        };
        let progress = store.finish(&job, &server(), "me", &stored).await.unwrap().progress;
        assert_eq!(progress, BlobProgress { stored: 1, pending: 0, failed: 0 });
        assert_eq!(state_of(&store).await, ReplicaState::Stored);
        assert_eq!(store.open_jobs(&[server()]).await.unwrap(), 0);
        assert_eq!(
            store
                .enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed)
                .await
                .unwrap()
                .already_stored,
            1
        );
    }

    #[tokio::test]
    async fn retry_waits_for_its_time_and_survives_reopen() {
        let (store, dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        let job = store.claim(&server(), "me", 1, later(60), 5).await.unwrap().remove(0);
        let retry = JobOutcome::Retry {
            run_at: later(3600),
            status: Some(503),
            reason: "busy".into(),
            bytes_sent: 0,
        };
        store.finish(&job, &server(), "me", &retry).await.unwrap();
        store.close().await;

        let store = Store::open(&dir.path().join("test.db")).await.unwrap();
        assert!(store.claim(&server(), "me", 1, later(60), 5).await.unwrap().is_empty());
        let due = store.next_due(&server()).await.unwrap().unwrap();
        assert!(due > later(3500), "backoff kept across the reopen");
        assert_eq!(store.open_jobs(&[server()]).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn failed_is_final_and_named_again_on_the_next_push() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        let job = store.claim(&server(), "me", 1, later(60), 5).await.unwrap().remove(0);
        let failed =
            JobOutcome::Failed { status: Some(413), reason: "too large".into(), bytes_sent: 0 };
        let progress = store.finish(&job, &server(), "me", &failed).await.unwrap().progress;
        assert_eq!(progress.failed, 1);
        assert!(progress.is_settled());
        let replica = &store.blob_statuses(None).await.unwrap()[0].replicas[0];
        assert_eq!((replica.state, replica.last_status), (ReplicaState::Failed, Some(413)));
        assert_eq!(replica.reason.as_deref(), Some("too large"));

        assert_eq!(
            store
                .enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed)
                .await
                .unwrap()
                .jobs,
            1
        );
        assert_eq!(state_of(&store).await, ReplicaState::Pending);
    }

    #[tokio::test]
    async fn a_job_that_keeps_dying_ends_dead_with_a_reason() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                store.claim(&server(), "crashy", 1, SystemTime::now(), 3).await.unwrap().len(),
                1
            );
        }
        assert!(
            store.claim(&server(), "crashy", 1, SystemTime::now(), 3).await.unwrap().is_empty()
        );
        let replica = &store.blob_statuses(None).await.unwrap()[0].replicas[0];
        assert_eq!(replica.state, ReplicaState::Failed);
        assert!(replica.reason.as_deref().unwrap().contains("gave up after 3 attempts"));
    }

    #[tokio::test]
    async fn replicas_that_ran_out_of_retries_are_queued_again_refused_ones_not() {
        let (store, _dir) = temp_store().await;
        store
            .enqueue(&[blob(b"a"), blob(b"b")], &[server()], Strategy::Upload, Retry::Failed)
            .await
            .unwrap();
        let mut jobs = store.claim(&server(), "me", 2, later(60), 5).await.unwrap();
        let gave_up =
            JobOutcome::GaveUp { status: Some(503), reason: "down".into(), bytes_sent: 0 };
        let refused =
            JobOutcome::Failed { status: Some(413), reason: "too large".into(), bytes_sent: 0 };
        store.finish(&jobs.remove(0), &server(), "me", &gave_up).await.unwrap();
        store.finish(&jobs.remove(0), &server(), "me", &refused).await.unwrap();
        assert_eq!(store.open_jobs(&[server()]).await.unwrap(), 0);

        assert_eq!(store.requeue_gave_up(&[server()]).await.unwrap(), 1);
        let again = store.claim(&server(), "me", 5, later(60), 5).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].blob.sha256, blob(b"a").sha256);
    }

    #[tokio::test]
    async fn released_jobs_give_their_attempt_back() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        let job = store.claim(&server(), "me", 1, later(60), 5).await.unwrap().remove(0);
        store.finish(&job, &server(), "me", &JobOutcome::Released).await.unwrap();
        let again = store.claim(&server(), "me", 1, later(60), 5).await.unwrap();
        assert_eq!(again[0].attempt, 1);
    }

    #[tokio::test]
    async fn a_dead_runners_leases_come_back_at_once() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        store.register_runner("old", "host", 4242, |_| true).await.unwrap();
        store.claim(&server(), "old", 1, later(3600), 5).await.unwrap();

        let alive = store.register_runner("other", "host", 1, |pid| pid != 4242).await.unwrap();
        assert_eq!(alive, 1);
        assert_eq!(store.claim(&server(), "other", 1, later(60), 5).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_lost_lease_does_not_overwrite_the_new_owner() {
        let (store, _dir) = temp_store().await;
        store.enqueue(&[blob(b"a")], &[server()], Strategy::Upload, Retry::Failed).await.unwrap();
        let stale =
            store.claim(&server(), "slow", 1, SystemTime::now(), 5).await.unwrap().remove(0);
        store.claim(&server(), "fresh", 1, later(60), 5).await.unwrap();
        let retry = JobOutcome::Retry {
            run_at: later(10),
            status: None,
            reason: "x".into(),
            bytes_sent: 0,
        };
        store.finish(&stale, &server(), "slow", &retry).await.unwrap();
        let owner: Option<String> = sqlx::query_scalar("SELECT lease_owner FROM jobs")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(owner.as_deref(), Some("fresh"));
    }
}
