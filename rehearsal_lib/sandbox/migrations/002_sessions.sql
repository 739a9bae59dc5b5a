-- One candidate sitting one exam.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    candidate_id text NOT NULL,
    exam_id      integer NOT NULL,
    status       text NOT NULL DEFAULT 'in_progress'
                 CONSTRAINT sessions_status_check CHECK (status IN ('in_progress', 'submitted')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    submitted_at timestamptz NULL
);
