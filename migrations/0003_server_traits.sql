-- What else a client learns about a server and must not forget on restart
-- (field cases B02 and B07).

-- 1 once `HEAD /upload` (BUD-06) got 400, 404, 405, 501 or no answer:
-- uploads then go straight to PUT.
ALTER TABLE servers ADD COLUMN preflight_unsupported INTEGER NOT NULL DEFAULT 0;

-- The smallest body size the server refused as too large (413, or a
-- connection cut repeatedly mid-body while smaller blobs got through).
-- Blobs of this size or more are not sent to it again.
ALTER TABLE servers ADD COLUMN refused_size INTEGER;
