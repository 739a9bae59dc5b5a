-- Lookup indexes for the API's access paths.
CREATE INDEX idx_questions_exam_id ON questions (exam_id);
CREATE INDEX idx_sessions_exam_id ON sessions (exam_id);
CREATE INDEX idx_answers_session_id ON answers (session_id);
CREATE INDEX idx_events_session_id ON events (session_id);
