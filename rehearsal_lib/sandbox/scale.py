"""Bulk seed of the sandbox at scale (``rehearse sandbox up --scale 100k``), generated inside PostgreSQL.

On top of the deterministic seed (:mod:`rehearsal_lib.sandbox.seed`, left unchanged), ``seed_scale(conn, n)``
adds exactly ``n`` answers and the sessions and events they belong to, all with ``generate_series`` in a
handful of set-based statements (no row-by-row Python), deterministic (hashes of the row number, no
``random()``):

- sessions: about n / 6.7, two in three submitted with 7-10 answers, the rest in progress with 0-6
  (the seed's distribution), started over the past year (old rows), scored from their answers;
- answers: exactly n, 75% correct, one per (session, question) like the API's upsert;
- events: one ``started`` per session, one ``answered`` per answer, one ``submitted`` per submitted
  session (about 1.25 n);
- access_log (when the release's migration 017 is applied): n rows filling the 30-day retention window
  up to its edge (29.9 days old), with JSON payloads the PII scan reads;
- data_exports (migration 018): n / 1000 rows filling the 60-day window.

Every planted row satisfies the integrity checks and the retention windows, so a scaled default sandbox
rehearses the same verdicts as the small one; only the cost of the checks grows.
"""

from __future__ import annotations

import re
import time

import psycopg

SCALE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")
MAX_SCALE = 20_000_000


def parse_scale(text: str | int) -> int:
    """``"100k"`` -> 100000, ``"1M"`` -> 1000000, ``"2500"`` -> 2500 (answers rows)."""
    if isinstance(text, int):
        n = text
    else:
        m = SCALE_RE.match(text)
        if not m:
            raise ValueError(f"bad scale {text!r}: a number of answers rows, e.g. 1000, 100k or 1M")
        n = int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()])
    if not 0 <= n <= MAX_SCALE:
        raise ValueError(f"scale {n} out of range 0..{MAX_SCALE:,}")
    return n


# h(i, salt): a deterministic non-negative pseudo-random integer of row i.
_H = "(hashint8({i}::bigint * 7919 + {salt}) & 2147483647)"


def _h(i: str, salt: int) -> str:
    return _H.format(i=i, salt=salt)


def _table_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]  # type: ignore[index]


def seed_scale(conn: psycopg.Connection, n: int) -> dict[str, float | int]:
    """Add exactly ``n`` answers (and their sessions and events; access_log and data_exports rows when those
    tables exist) to a seeded database; returns the rows added per table and the seconds taken.

    ``conn`` must be an autocommit superuser connection (row-level security on sessions and answers)."""
    t0 = time.perf_counter()
    added: dict[str, float | int] = {}
    if n <= 0:
        return {"answers": 0, "seconds": 0.0}
    # candidate sessions: enough for n answers (mean 6.67 per session), cut at the n-th answer below
    cand = n // 6 + 20
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = off")
        conn.execute("SET LOCAL work_mem = '64MB'")
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute(f"""
            CREATE TEMP TABLE scale_sessions ON COMMIT DROP AS
            WITH base AS (
                SELECT i, {_h('i', 1)} % 3 <> 0 AS submitted, {_h('i', 2)} AS h2, {_h('i', 3)} AS h3
                FROM generate_series(1, {cand}) AS i
            ), counted AS (
                SELECT i, submitted, h3,
                       CASE WHEN submitted THEN 7 + h2 % 4 ELSE h2 % 7 END AS n_ans
                FROM base
            ), cum AS (
                SELECT *, sum(n_ans) OVER (ORDER BY i) AS upto FROM counted
            )
            SELECT i, md5('scale-session-' || i)::uuid AS id,
                   'cand-s' || lpad((1 + {_h('i', 4)} % greatest({cand} / 2, 1))::text, 7, '0') AS candidate_id,
                   (SELECT array_agg(id ORDER BY id) FROM exams)[1 + i % (SELECT count(*) FROM exams)] AS exam_id,
                   submitted,
                   (n_ans - greatest(upto - {n}, 0))::int AS n_ans,
                   timestamptz '2025-06-02 08:00+00' - make_interval(secs => (h3 % (365 * 86400))::double precision)
                       AS started_at
            FROM cum WHERE upto - n_ans < {n}
        """)
        conn.execute("CREATE INDEX ON scale_sessions (i)")
        # answers: the k-th answer of a session answers the question at position (offset + k) mod 10 of its
        # exam (distinct per session), about 100 s after the previous one; 75% correct
        conn.execute(f"""
            CREATE TEMP TABLE scale_answers ON COMMIT DROP AS
            SELECT s.i, s.id AS session_id, k, q.id AS question_id,
                   CASE WHEN {_h('s.i * 16 + k', 5)} % 4 <> 0 THEN q.correct_answer
                        ELSE (ARRAY['I don''t know', '42', 'Berlin', 'X', 'n/a', 'Zn'])[1 + {_h('s.i * 16 + k', 6)} % 6]
                   END AS answer,
                   s.started_at + make_interval(secs => (k * 100 + {_h('s.i * 16 + k', 7)} % 80)::double precision)
                       AS answered_at
            FROM scale_sessions s
            CROSS JOIN LATERAL generate_series(1, s.n_ans) AS k
            JOIN questions q ON q.exam_id = s.exam_id
                 AND q.position = 1 + ({_h('s.i', 8)} % 10 + k) % 10
        """)
        conn.execute("""
            CREATE TEMP TABLE scale_scores ON COMMIT DROP AS
            SELECT a.i, count(*) FILTER (WHERE lower(btrim(a.answer)) = lower(btrim(q.correct_answer))) AS score
            FROM scale_answers a JOIN questions q ON q.id = a.question_id GROUP BY a.i
        """)
        cur = conn.execute("""
            INSERT INTO sessions (id, candidate_id, exam_id, status, started_at, submitted_at, score)
            SELECT s.id, s.candidate_id, s.exam_id,
                   CASE WHEN s.submitted THEN 'submitted' ELSE 'in_progress' END, s.started_at,
                   CASE WHEN s.submitted
                        THEN s.started_at + make_interval(secs => (s.n_ans * 100 + 200)::double precision) END,
                   CASE WHEN s.submitted THEN coalesce(sc.score, 0) END
            FROM scale_sessions s LEFT JOIN scale_scores sc ON sc.i = s.i ORDER BY s.i
        """)
        added["sessions"] = cur.rowcount
        cur = conn.execute("""
            INSERT INTO answers (session_id, question_id, answer, answered_at)
            SELECT session_id, question_id, answer, answered_at FROM scale_answers ORDER BY i, k
        """)
        added["answers"] = cur.rowcount
        cur = conn.execute("""
            INSERT INTO events (session_id, type, occurred_at, payload)
            SELECT session_id, type, occurred_at, payload FROM (
                SELECT s.i, 0 AS k, s.id AS session_id, 'started' AS type, s.started_at AS occurred_at,
                       jsonb_build_object('candidate_id', s.candidate_id) AS payload
                FROM scale_sessions s
                UNION ALL
                SELECT a.i, a.k, a.session_id, 'answered', a.answered_at,
                       jsonb_build_object('question_id', a.question_id)
                FROM scale_answers a
                UNION ALL
                SELECT s.i, 99, s.id, 'submitted',
                       s.started_at + make_interval(secs => (s.n_ans * 100 + 200)::double precision),
                       jsonb_build_object('score', coalesce(sc.score, 0))
                FROM scale_sessions s LEFT JOIN scale_scores sc ON sc.i = s.i WHERE s.submitted
            ) e ORDER BY i, k
        """)
        added["events"] = cur.rowcount
        if _table_exists(conn, "public.access_log"):
            # the whole 30-day window, up to 29.9 days old: every row inside it, the oldest near its edge
            cur = conn.execute(f"""
                INSERT INTO access_log (candidate_id, path, status, created_at, payload)
                SELECT 'cand-s' || lpad((1 + {_h('i', 9)} % greatest({cand} / 2, 1))::text, 7, '0'),
                       (ARRAY['/v1/sessions', '/v1/sessions/{{id}}/answers', '/v1/sessions/{{id}}/submit',
                              '/v1/exam-mode'])[1 + {_h('i', 10)} % 4],
                       (ARRAY[200, 201, 201, 404])[1 + {_h('i', 11)} % 4],
                       now() - make_interval(secs => ({_h('i', 12)} % (2990 * 864))::double precision),
                       jsonb_build_object('agent', 'exam-client/3.1', 'ms', 3 + {_h('i', 13)} % 88)
                FROM generate_series(1, {n}) AS i
            """)
            added["access_log"] = cur.rowcount
        if _table_exists(conn, "public.data_exports"):
            cur = conn.execute(f"""
                INSERT INTO data_exports (candidate_id, requested_at, datasets, checksum)
                SELECT 'cand-s' || lpad((1 + {_h('i', 14)} % greatest({cand} / 2, 1))::text, 7, '0'),
                       now() - make_interval(secs => ({_h('i', 15)} % (5990 * 864))::double precision), '{{}}', NULL
                FROM generate_series(1, {max(n // 1000, 1)}) AS i
            """)
            added["data_exports"] = cur.rowcount
    added["seconds"] = round(time.perf_counter() - t0, 3)
    return added
