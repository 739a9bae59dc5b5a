"""Deterministic seed data of the sandbox ``exam`` database."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

SEED = 20250602
BASE_TIME = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
N_SESSIONS = 60
N_SUBMITTED = 40

# (title, [(prompt, correct_answer), ...]) -- ten questions per exam.
EXAMS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Arithmetic Basics",
        [
            (f"What is {a} + {b}?", str(a + b))
            for a, b in [(7, 5), (12, 9), (23, 19), (4, 38), (56, 7), (15, 15), (81, 11), (9, 64), (33, 27), (48, 6)]
        ],
    ),
    (
        "European Capitals",
        [
            (f"What is the capital of {country}?", city)
            for country, city in [
                ("France", "Paris"),
                ("Spain", "Madrid"),
                ("Italy", "Rome"),
                ("Portugal", "Lisbon"),
                ("Austria", "Vienna"),
                ("Poland", "Warsaw"),
                ("Greece", "Athens"),
                ("Norway", "Oslo"),
                ("Ireland", "Dublin"),
                ("Hungary", "Budapest"),
            ]
        ],
    ),
    (
        "Chemical Symbols",
        [
            (f"What is the chemical symbol of {element}?", symbol)
            for element, symbol in [
                ("hydrogen", "H"),
                ("oxygen", "O"),
                ("sodium", "Na"),
                ("iron", "Fe"),
                ("gold", "Au"),
                ("silver", "Ag"),
                ("potassium", "K"),
                ("carbon", "C"),
                ("lead", "Pb"),
                ("helium", "He"),
            ]
        ],
    ),
]

WRONG = ["I don't know", "42", "Berlin", "X", "n/a", "Zn"]

# The score rule, shared with the API: answers equal to the correct answer, ignoring case and
# surrounding blanks.
SCORE_SQL = """
SELECT count(*)
FROM answers a JOIN questions q ON q.id = a.question_id
WHERE a.session_id = %(sid)s AND lower(btrim(a.answer)) = lower(btrim(q.correct_answer))
"""


def seed(conn: psycopg.Connection) -> dict[str, int]:
    """Insert the seed data into a freshly migrated database; returns row counts."""
    rng = random.Random(SEED)
    question_ids: dict[int, list[tuple[int, str]]] = {}
    with conn.transaction(), conn.cursor() as cur:
        for n, (title, questions) in enumerate(EXAMS):
            cur.execute(
                "INSERT INTO exams (title, created_at) VALUES (%s, %s) RETURNING id",
                (title, BASE_TIME - timedelta(days=30 - n)),
            )
            exam_id = cur.fetchone()[0]  # type: ignore[index]
            question_ids[exam_id] = []
            for pos, (prompt, correct) in enumerate(questions, start=1):
                cur.execute(
                    "INSERT INTO questions (exam_id, position, prompt, correct_answer)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    (exam_id, pos, prompt, correct),
                )
                question_ids[exam_id].append((cur.fetchone()[0], correct))  # type: ignore[index]

        exam_ids = sorted(question_ids)
        submitted = set(rng.sample(range(N_SESSIONS), N_SUBMITTED))
        sessions, answers, events = [], [], []
        for i in range(N_SESSIONS):
            sid = uuid.UUID(int=rng.getrandbits(128), version=4)
            exam_id = exam_ids[i % len(exam_ids)]
            started = BASE_TIME + timedelta(minutes=7 * i, seconds=rng.randint(0, 59))
            is_submitted = i in submitted
            qs = question_ids[exam_id]
            n_answered = rng.randint(7, len(qs)) if is_submitted else rng.randint(0, 6)
            t = started
            events.append((sid, "started", started, Jsonb({"candidate_id": f"cand-{i + 1:04d}"})))
            for qid, correct in rng.sample(qs, n_answered):
                t += timedelta(seconds=rng.randint(20, 180))
                text = correct if rng.random() < 0.75 else rng.choice(WRONG)
                answers.append((sid, qid, text, t))
                events.append((sid, "answered", t, Jsonb({"question_id": qid})))
            submitted_at = t + timedelta(minutes=2) if is_submitted else None
            sessions.append((sid, f"cand-{i + 1:04d}", exam_id, started, submitted_at))

        cur.executemany(
            "INSERT INTO sessions (id, candidate_id, exam_id, status, started_at, submitted_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (sid, cand, ex, "in_progress" if sub is None else "submitted", st, sub)
                for sid, cand, ex, st, sub in sessions
            ],
        )
        cur.executemany(
            "INSERT INTO answers (session_id, question_id, answer, answered_at) VALUES (%s, %s, %s, %s)",
            answers,
        )
        for sid, _cand, _ex, _st, sub in sessions:
            if sub is None:
                continue
            cur.execute(SCORE_SQL, {"sid": sid})
            score = cur.fetchone()[0]  # type: ignore[index]
            cur.execute("UPDATE sessions SET score = %s WHERE id = %s", (score, sid))
            events.append((sid, "submitted", sub, Jsonb({"score": score})))
        events.sort(key=lambda e: (e[2], str(e[0])))
        cur.executemany("INSERT INTO events (session_id, type, occurred_at, payload) VALUES (%s, %s, %s, %s)", events)
        cur.execute("UPDATE settings SET value = 'true' WHERE key = 'exam_mode'")
    return {"exams": len(exam_ids), "sessions": len(sessions), "answers": len(answers), "events": len(events)}
