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
