-- 1 once the server refused an upload token that covers several blobs
-- (several `x` tags, or one token used for several requests): it gets a
-- token of its own per request from then on.
ALTER TABLE servers ADD COLUMN batch_tokens_refused INTEGER NOT NULL DEFAULT 0;
