-- Score of a submitted session: the number of correctly answered questions.
ALTER TABLE sessions
    ADD COLUMN score integer NULL CONSTRAINT sessions_score_check CHECK (score >= 0);
