-- Exams and their questions.
CREATE TABLE exams (
    id         serial PRIMARY KEY,
    title      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE questions (
    id             serial PRIMARY KEY,
    exam_id        integer NOT NULL,
    position       integer NOT NULL,
    prompt         text NOT NULL,
    correct_answer text NOT NULL,
    UNIQUE (exam_id, position)
);
