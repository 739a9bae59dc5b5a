-- Referential integrity.
ALTER TABLE questions
    ADD CONSTRAINT questions_exam_id_fkey FOREIGN KEY (exam_id) REFERENCES exams (id);
ALTER TABLE sessions
    ADD CONSTRAINT sessions_exam_id_fkey FOREIGN KEY (exam_id) REFERENCES exams (id);
ALTER TABLE answers
    ADD CONSTRAINT answers_session_id_fkey FOREIGN KEY (session_id) REFERENCES sessions (id),
    ADD CONSTRAINT answers_question_id_fkey FOREIGN KEY (question_id) REFERENCES questions (id);
ALTER TABLE events
    ADD CONSTRAINT events_session_id_fkey FOREIGN KEY (session_id) REFERENCES sessions (id);
