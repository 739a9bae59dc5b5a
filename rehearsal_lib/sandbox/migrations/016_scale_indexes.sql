-- Indexes that keep the integrity checks' cost flat as the data grows (benchmarks/bench_scale.py).
-- The submit event of a session (also the API's "was it submitted" lookup): the duplicate-submit and
-- missing-submit checks read these ~1 in 12 events instead of every event.
CREATE INDEX idx_events_submitted_session_id ON events (session_id) WHERE type = 'submitted';
-- Defect indexes: they hold exactly the rows a zero-row check looks for (PostgreSQL keeps a partial index
-- in step with every write), so they are empty on healthy data and the check reads nothing else.
CREATE INDEX idx_sessions_unscored ON sessions (id) WHERE status = 'submitted' AND score IS NULL;
CREATE INDEX idx_sessions_status_mismatch ON sessions (id) WHERE (status = 'submitted') <> (submitted_at IS NOT NULL);
