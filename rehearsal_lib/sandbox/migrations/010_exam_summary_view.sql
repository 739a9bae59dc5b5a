-- Per-exam reporting view.
CREATE VIEW exam_summary AS
SELECT e.id AS exam_id,
       e.title,
       count(s.id) AS sessions,
       count(s.id) FILTER (WHERE s.status = 'submitted') AS submitted,
       round(avg(s.score), 2) AS avg_score
FROM exams e
LEFT JOIN sessions s ON s.exam_id = e.id
GROUP BY e.id, e.title;
