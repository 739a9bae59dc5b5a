-- Planted defects of the `faulty` sandbox variant. Applied as superuser after migrations + seed.
-- The database-level defects of rehearsal_lib/sandbox/defects.py (app-level ones live in the app's
-- modules, branching on the variant); nothing else may differ from `default`.

-- 1. orphaned_answer: an answer whose session does not exist, as if bulk-loaded with triggers
--    (and so foreign keys) off.
SET session_replication_role = replica;
INSERT INTO answers (session_id, question_id, answer, answered_at)
VALUES ('00000000-0000-4000-8000-00000000dead',
        (SELECT min(id) FROM questions),
        'orphaned',
        TIMESTAMPTZ '2025-06-02 12:00:00+00');
RESET session_replication_role;

-- 2. duplicate_submit: a second 'submitted' event for the first submitted session.
INSERT INTO events (session_id, type, occurred_at, payload)
SELECT e.session_id, 'submitted', e.occurred_at + INTERVAL '2 seconds', e.payload || '{"retry": true}'::jsonb
FROM events e
WHERE e.type = 'submitted'
ORDER BY e.id
LIMIT 1;

-- 3. missing_index: the index on answers(session_id) was never created.
DROP INDEX idx_answers_session_id;

-- 4. exam_mode_off: the exam freeze flag was not set.
UPDATE settings SET value = 'false' WHERE key = 'exam_mode';

-- webhooks / jobs (the other defects of these phases are app-level: sandbox/webhooks.py, jobs.py, worker.py)
-- webhook_processed_twice: the idempotency guard (unique delivery id) was lost.
DROP INDEX uq_webhook_deliveries_delivery_id;
-- job_dedupe_missing: the unique job key was lost, so concurrent triggers enqueue the job twice.
DROP INDEX uq_jobs_dedupe_key;
-- security: rls_off_answers: row-level security was switched off on answers (policies stay, unused).
ALTER TABLE answers DISABLE ROW LEVEL SECURITY;

-- ---- database phases (issue #4): migrations, retention; the backup's defects are in backups.py ----

-- release_already_applied is not planted here: the faulty variant starts fully migrated
--    (params/sandbox-faulty.yaml: release_pending: false), so the release's 017-019 ran before the rehearsal.

-- rls_disabled: row-level security is off on data_exports.
ALTER TABLE data_exports DISABLE ROW LEVEL SECURITY;

-- row_past_retention: an access-log row older than its 30-day window.
INSERT INTO access_log (candidate_id, path, status, created_at, payload)
VALUES ('cand-0007', '/v1/sessions', 201, now() - INTERVAL '45 days', '{"agent": "exam-client/3.1"}');

-- plaintext_pii: an access-log payload carrying a plaintext e-mail address and phone number.
INSERT INTO access_log (candidate_id, path, status, created_at, payload)
VALUES ('cand-0012', '/v1/sessions', 201, now() - INTERVAL '1 day',
        '{"agent": "exam-client/3.1", "contact": "jane.doe@example.org", "phone": "+44 20 7946 0958"}');
