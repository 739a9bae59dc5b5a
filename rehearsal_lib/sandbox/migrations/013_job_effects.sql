-- What jobs did: one job_effects row per processing of a job, and the reminders a
-- schedule_reminders job plans (send_at = base_at + the reminder offsets).
CREATE TABLE job_effects (
    id           bigserial PRIMARY KEY,
    job_id       bigint      NOT NULL REFERENCES jobs (id),
    type         text        NOT NULL,
    dedupe_key   text,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_job_effects_job_id ON job_effects (job_id);
CREATE TABLE reminders (
    id       bigserial PRIMARY KEY,
    job_id   bigint      NOT NULL REFERENCES jobs (id),
    target   text        NOT NULL,
    base_at  timestamptz NOT NULL,
    send_at  timestamptz NOT NULL
);
CREATE INDEX idx_reminders_job_id ON reminders (job_id);
