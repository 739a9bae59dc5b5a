-- The latest answer of a session to a question (upserted by the API).
CREATE TABLE answers (
    id          bigserial PRIMARY KEY,
    session_id  uuid NOT NULL,
    question_id integer NOT NULL,
    answer      text NOT NULL,
    answered_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT answers_session_question_key UNIQUE (session_id, question_id)
);
