-- Background job queue: claimed by the worker with FOR UPDATE SKIP LOCKED; dedupe_key makes a
-- trigger idempotent (two triggers of one key enqueue one job).
CREATE TABLE jobs (
    id          bigserial PRIMARY KEY,
    type        text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    dedupe_key  text,
    status      text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    failures    integer     NOT NULL DEFAULT 0,
    last_error  text,
    run_after   timestamptz NOT NULL DEFAULT now(),
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    picked_at   timestamptz,
    finished_at timestamptz
);
CREATE UNIQUE INDEX uq_jobs_dedupe_key ON jobs (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX idx_jobs_queued ON jobs (run_after, id) WHERE status = 'queued';
