-- Blobs we know, where their bytes are, and which servers hold them.
-- Times are unix milliseconds.

CREATE TABLE blobs (
    sha256      TEXT PRIMARY KEY NOT NULL,
    size        INTEGER NOT NULL,
    mime        TEXT NOT NULL,
    -- Absolute path of the local file the blob was read from, if any.
    source      TEXT,
    created_at  INTEGER NOT NULL
) STRICT;

-- One row per (blob, server): what we know of that copy.
CREATE TABLE replicas (
    sha256      TEXT NOT NULL REFERENCES blobs (sha256),
    server      TEXT NOT NULL,
    -- pending | stored | failed
    state       TEXT NOT NULL,
    -- uploaded | present (the server had it already)
    method      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    reason      TEXT,
    url         TEXT,
    bytes_sent  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    stored_at   INTEGER,
    PRIMARY KEY (sha256, server)
) STRICT;

CREATE INDEX replicas_by_server_state ON replicas (server, state);

-- The work queue. A job moves queued -> leased -> done | dead, or back to
-- queued with a later run_at when it is to be retried.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL REFERENCES blobs (sha256),
    server      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL,
    run_at      INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- At most one open job per (blob, server, kind).
CREATE UNIQUE INDEX jobs_open ON jobs (sha256, server, kind)
    WHERE state IN ('queued', 'leased');
CREATE INDEX jobs_claim ON jobs (server, state, run_at);

-- What we learned about each server.
CREATE TABLE servers (
    url             TEXT PRIMARY KEY NOT NULL,
    -- base64 | base64url: the token encoding the server last accepted.
    token_encoding  TEXT,
    updated_at      INTEGER NOT NULL
) STRICT;

-- Processes working the queue, so that one restarting on the same host can
-- take back the leases of one that was killed without waiting them out.
CREATE TABLE runners (
    id           TEXT PRIMARY KEY NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) STRICT;
