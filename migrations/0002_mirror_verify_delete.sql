-- Mirror-first replication, verification and deletion.
--
-- Jobs gain the state 'waiting': a replica that will be mirrored once some
-- server holds the blob. Replicas gain the states 'missing' and 'corrupt'
-- (found by verify) and 'deleted'.

-- 1 once a server answered /mirror with 404, 405 or 501.
ALTER TABLE servers ADD COLUMN mirror_unsupported INTEGER NOT NULL DEFAULT 0;

-- When a server last confirmed it holds the replica (verify, or the upload).
ALTER TABLE replicas ADD COLUMN verified_at INTEGER;

-- When the blob was deleted everywhere on request.
ALTER TABLE blobs ADD COLUMN deleted_at INTEGER;

CREATE INDEX jobs_by_blob ON jobs (sha256, state);

-- At most one open job per (blob, server, kind), waiting ones included.
DROP INDEX jobs_open;
CREATE UNIQUE INDEX jobs_open ON jobs (sha256, server, kind)
    WHERE state IN ('queued', 'leased', 'waiting');

-- 1 when the replica failed because its retries ran out on transient
-- errors (the server may be back later), not because it was refused.
ALTER TABLE replicas ADD COLUMN gave_up INTEGER NOT NULL DEFAULT 0;

-- The source path's bytes when they are not valid UTF-8 (`source` then
-- holds a lossy form for display).
ALTER TABLE blobs ADD COLUMN source_raw BLOB;
