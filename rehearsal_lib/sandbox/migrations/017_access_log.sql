-- Access log of the exam API, kept 30 days (see retention_purge in 019).
CREATE TABLE access_log (
    id           bigserial PRIMARY KEY,
    candidate_id text NULL,
    path         text NOT NULL,
    status       integer NOT NULL CONSTRAINT access_log_status_check CHECK (status BETWEEN 100 AND 599),
    created_at   timestamptz NOT NULL DEFAULT now(),
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX idx_access_log_created_at ON access_log (created_at);
-- Backfill: the API's request log of the last 25 days, kept in log files until this release
-- (200 entries, inside the 30-day window; generated deterministically for the sandbox).
INSERT INTO access_log (candidate_id, path, status, created_at, payload)
SELECT 'cand-' || lpad((1 + (i * 37) % 60)::text, 4, '0'),
       (ARRAY['/v1/sessions', '/v1/sessions/{id}/answers', '/v1/sessions/{id}/submit', '/v1/exam-mode'])[1 + (i * 7) % 4],
       (ARRAY[200, 201, 201, 404])[1 + (i * 11) % 4],
       now() - make_interval(secs => (i * 10799) % (25 * 86400)),
       jsonb_build_object('agent', 'exam-client/3.1', 'ms', 3 + (i * 13) % 88)
FROM generate_series(1, 200) AS i;
