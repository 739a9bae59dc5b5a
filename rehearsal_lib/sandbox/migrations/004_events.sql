-- Append-only audit trail of a session.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    session_id  uuid NOT NULL,
    type        text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL DEFAULT '{}'::jsonb
);
