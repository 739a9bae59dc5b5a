-- Runtime flags; exam_mode is the exam freeze flag set before an exam window opens.
CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

INSERT INTO settings (key, value) VALUES ('exam_mode', 'false');
