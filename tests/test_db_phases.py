"""The database phases (migrations, retention, backup_recovery, smoke) fail honestly, and say why.

SQL against the real sandbox PostgreSQL (a default sandbox in a temporary home; every write goes to
a scratch database or to a migrations directory made for the test), HTTP against a small real
misbehaving server, commands as real processes. The alembic driver runs a real tiny alembic project.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import textwrap
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from conftest import run

from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.backup_recovery import checks as backup_recovery
from rehearsal_lib.phases.migrations import checks as migrations
from rehearsal_lib.phases.retention import checks as retention
from rehearsal_lib.phases.retention.params import PiiScan
from rehearsal_lib.phases.smoke import checks as smoke
from rehearsal_lib.probes.command import with_database
from rehearsal_lib.sandbox.database import MIGRATIONS_DIR

pytestmark = pytest.mark.integration



def make(tmp_path: Path, monkeypatch, name: str, block: dict, sandbox=None, base_url: str = "http://127.0.0.1:9",
         kind: str = "staging", db_url: str | None = None) -> PhaseRun:
    """A PhaseRun of one phase against the test sandbox's database (URLs as ${VAR} references)."""
    target: dict = {"base_url": base_url, "timeout_s": 2}
    if sandbox is not None:
        monkeypatch.setenv("T_DB", db_url or sandbox.db_url)
        monkeypatch.setenv("T_ADMIN", sandbox.admin_db_url)
        monkeypatch.setenv("T_TOKEN", sandbox.token)
        target.update(database_url="${T_DB}", auth_token="${T_TOKEN}")
    doc = {"name": "probe", "environment": {"kind": kind}, "target": target, "phases": {name: block},
           "safety": {"allow_destructive": True}}  # writes go to scratch databases or test-made ones
    path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return PhaseRun(name, str(path), params=load_params(str(path)))


def copy_migrations(tmp_path: Path) -> Path:
    d = tmp_path / "migs"
    shutil.copytree(MIGRATIONS_DIR, d)
    return d


# ------------------------------------------------------------------------------------------ migrations


def test_failed_migration_stops_the_phase_with_its_error(tmp_path, monkeypatch, sandbox):
    d = copy_migrations(tmp_path)
    (d / "090_broken.sql").write_text("CREATE TABLE t090 (id int);\nALTER TABLE no_such_table ADD COLUMN x int;\n")
    (d / "091_later.sql").write_text("CREATE TABLE t091 (id int);\n")
    ctx = make(tmp_path, monkeypatch, "migrations", {
        "sql_dir": {"directory": str(d)}, "apply_database_url": "${T_ADMIN}", "expected_pending": ["090", "091"],
        "postconditions": {"tables": ["sessions"]}}, sandbox)
    run = migrations.MigrationsRun(ctx)
    plan, apply, after = run.plan(), run.apply(), run.none_pending()
    post = migrations.check_postconditions_after(run)
    assert plan.status == "pass" and plan.metrics["pending"] == 2
    assert apply.status == "fail" and "migration 090 failed" in apply.observed and "no_such_table" in apply.observed
    rows = apply.evidence["migrations"]
    assert [r["status"] for r in rows] == ["failed", "not tried"]
    assert after.status == "skip" and "090 failed" in after.observed
    assert [c.status for c in post] == ["skip"]
    # the database is as the migration tool left it: the failed migration rolled back and unrecorded
    with sa.create_engine(sandbox.admin_db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('t090')")).scalar() is None
        assert conn.execute(sa.text("SELECT count(*) FROM schema_migrations WHERE version >= '090'")).scalar() == 0


def test_unexpected_pending_and_missing_directory(tmp_path, monkeypatch, sandbox):
    d = copy_migrations(tmp_path)
    (d / "095_extra.sql").write_text("SELECT 1;\n")
    ctx = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(d)}, "apply": False}, sandbox)
    run = migrations.MigrationsRun(ctx)
    plan = run.plan()
    assert plan.status == "fail" and plan.observed == "1 unexpected pending migration: 095"
    assert run.apply().status == "skip" and run.none_pending().status == "skip"
    (d / "095_extra.sql").unlink()
    (d / "003_answers.sql").write_text((d / "003_answers.sql").read_text() + "-- edited after it ran\n")
    edited = migrations.MigrationsRun(ctx).plan()
    assert edited.status == "fail" and edited.observed == "applied migration(s) changed since: 003_answers"
    gone = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(tmp_path / "nope")}}, sandbox)
    check = migrations.MigrationsRun(gone).plan()
    assert check.status == "error" and "does not exist" in check.observed


def test_apply_refused_in_production_without_flag(tmp_path, monkeypatch, sandbox):
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    d = copy_migrations(tmp_path)
    (d / "096_new.sql").write_text("CREATE TABLE t096 (id int);\n")
    ctx = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(d)}, "expected_pending": ["096"],
                                                     "apply_database_url": "${T_ADMIN}"}, sandbox, kind="production")
    run = migrations.MigrationsRun(ctx)
    run.plan()
    apply, trip = run.apply(), run.roundtrip()
    assert apply.status == "skip" and "production" in apply.observed
    assert trip.status == "skip" and "production" in trip.observed


def test_postconditions_fail_per_family_naming_what_is_wrong(tmp_path, monkeypatch, sandbox):
    ctx = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(MIGRATIONS_DIR)}, "postconditions": {
        "tables": ["sessions", "no_such_table"],
        "columns": {"sessions": [{"name": "score", "type": "text"}, {"name": "nope"}]},
        "indexes": [{"table": "answers", "name": "idx_nope"}],
        "foreign_keys": [{"table": "answers", "columns": ["question_id"], "references": "exams"}],
        "check_constraints": [{"table": "sessions", "name": "no_check"}],
        "functions": ["no_function"],
        "rls": [{"table": "exams", "enabled": True, "min_policies": 1},
                {"table": "data_exports", "enabled": True, "min_policies": 5}]}}, sandbox)
    by_id = {c.id: c for c in migrations.check_postconditions(ctx)}
    assert {c.status for c in by_id.values()} == {"fail"}
    assert by_id["migrations.post.tables"].observed == "table no_such_table missing"
    cols = by_id["migrations.post.columns"].observed
    assert "sessions.score is integer, not text" in cols and "sessions.nope missing" in cols
    assert "idx_nope" in by_id["migrations.post.indexes"].observed
    assert "answers(question_id) -> exams" in by_id["migrations.post.foreign_keys"].observed
    assert "no_check" in by_id["migrations.post.check_constraints"].observed
    assert "no_function" in by_id["migrations.post.functions"].observed
    rls = by_id["migrations.post.rls"].observed
    assert "row-level security off on exams (declared on)" in rls
    assert "1 policy on data_exports, expected at least 5" in rls
    assert ["no_such_table", "no", "table no_such_table missing"] in by_id["migrations.post.tables"].evidence["sample"]


def test_roundtrip_fails_when_a_down_script_does_not_undo(tmp_path, monkeypatch, sandbox):
    d = copy_migrations(tmp_path)
    (d / "down" / "019_retention_purge.sql").write_text("SELECT 1;\n")  # forgets to drop the function
    sql_dir = {"directory": str(d), "down_directory": str(d / "down")}
    ctx = make(tmp_path, monkeypatch, "migrations", {"sql_dir": sql_dir, "apply_database_url": "${T_ADMIN}"}, sandbox)
    check = migrations.MigrationsRun(ctx).roundtrip()
    assert check.status == "fail" and "schema differs after down/up of 017, 018, 019" in check.observed
    assert check.evidence["down_restores_previous"] is False
    none = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(d)},
                                                      "apply_database_url": "${T_ADMIN}"}, sandbox)
    skipped = migrations.MigrationsRun(none).roundtrip()
    assert skipped.status == "skip" and "no down scripts" in skipped.observed


def test_command_driver_counts_pending_lines_and_reports_a_failing_plan(tmp_path, monkeypatch, sandbox):
    plan = tmp_path / "plan.py"
    plan.write_text("print('Planned operations:')\nprint('  exams.0007_add_deadline')\nprint('  exams.0008_idx')\n")
    ctx = make(tmp_path, monkeypatch, "migrations", {"driver": "command", "command": {
        "plan_command": f"{{python}} {plan}", "pending_regex": r"^\s+\w+\.\d{4}_"}}, sandbox)
    check = migrations.MigrationsRun(ctx).plan()
    assert check.status == "fail" and check.metrics["pending"] == 2
    assert "exams.0007_add_deadline" in check.observed and "Planned operations" in check.evidence["plan_output"][
        "output_tail"]
    broken = make(tmp_path, monkeypatch, "migrations", {"driver": "command", "command": {
        "plan_command": "{python} -c 'import sys; sys.exit(3)'"}}, sandbox)
    check = migrations.MigrationsRun(broken).plan()
    assert check.status == "error" and "exited 3" in check.observed


ALEMBIC_ENV = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                            poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""

ALEMBIC_REVS = {
    "a1_items.py": '''"""create items"""
from alembic import op
import sqlalchemy as sa
revision, down_revision = "a1", None
def upgrade():
    op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text, nullable=False))
def downgrade():
    op.drop_table("items")
''',
    "b2_items_index.py": '''"""index items by name"""
from alembic import op
revision, down_revision = "b2", "a1"
def upgrade():
    op.create_index("ix_items_name", "items", ["name"])
def downgrade():
    op.drop_index("ix_items_name", table_name="items")
''',
}


def test_alembic_driver_on_a_real_tiny_project(tmp_path, monkeypatch, sandbox):
    proj = tmp_path / "alembic-proj"
    (proj / "mig" / "versions").mkdir(parents=True)
    (proj / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/mig\n"
                                      "sqlalchemy.url = postgresql+psycopg://nobody@127.0.0.1:9/none\n")
    (proj / "mig" / "env.py").write_text(ALEMBIC_ENV)
    for name, body in ALEMBIC_REVS.items():
        (proj / "mig" / "versions" / name).write_text(body)
    dbname = f"alembic_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sandbox.admin_db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{dbname}"')
    try:
        db = with_database(sandbox.admin_db_url, dbname)
        monkeypatch.setenv("T_APPLY", db)
        ctx = make(tmp_path, monkeypatch, "migrations", {
            "driver": "alembic", "alembic": {"config": str(proj / "alembic.ini")}, "apply_database_url": "${T_APPLY}",
            "expected_pending": ["a1", "b2"], "postconditions": {
                "tables": ["items"], "columns": {"items": [{"name": "name", "type": "text"}]},
                "indexes": [{"table": "items", "name": "ix_items_name"}]}}, sandbox, db_url=db)
        run = migrations.MigrationsRun(ctx)
        plan, apply, after = run.plan(), run.apply(), run.none_pending()
        assert plan.status == "pass" and [p["migration"] for p in plan.evidence["pending"]] == ["a1", "b2"]
        assert apply.status == "pass" and [r["status"] for r in apply.evidence["migrations"]] == ["applied"] * 2
        assert after.status == "pass"
        assert {c.status for c in migrations.check_postconditions(ctx)} == {"pass"}
        trip = run.roundtrip()
        assert trip.status == "pass" and trip.evidence["down_changed_schema"] is True
        # a revision the release did not announce is an unexpected pending migration
        (proj / "mig" / "versions" / "c3_more.py").write_text(
            '"""more"""\nrevision, down_revision = "c3", "b2"\ndef upgrade():\n    pass\ndef downgrade():\n    pass\n')
        again = migrations.MigrationsRun(ctx).plan()
        assert again.status == "fail" and again.observed == "1 unexpected pending migration: c3"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.dispose()


# An env.py as many real projects write it: the engine comes from the app's own settings (an environment
# variable), and the `sqlalchemy.url` Rehearsal passes in is ignored.
ROGUE_ENV = """
import os
from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(os.environ["ROGUE_APP_DATABASE_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""

USER_REVS = {
    "u1_user.py": '''"""create user"""
from alembic import op
import sqlalchemy as sa
revision, down_revision = "u1", None
def upgrade():
    op.create_table("user", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
def downgrade():
    op.drop_table("user")
''',
    "u2_created_at.py": '''"""user.created_at"""
from alembic import op
import sqlalchemy as sa
revision, down_revision = "u2", "u1"
def upgrade():
    op.add_column("user", sa.Column("created_at", sa.DateTime(timezone=True)))
def downgrade():
    op.drop_column("user", "created_at")
''',
}


def alembic_project(tmp_path: Path, env_py: str, revs: dict[str, str]) -> Path:
    proj = tmp_path / f"alembic-{uuid.uuid4().hex[:6]}"
    (proj / "mig" / "versions").mkdir(parents=True)
    (proj / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/mig\n"
                                      "sqlalchemy.url = postgresql+psycopg://nobody@127.0.0.1:9/none\n")
    (proj / "mig" / "env.py").write_text(env_py)
    for name, body in revs.items():
        (proj / "mig" / "versions" / name).write_text(body)
    return proj / "alembic.ini"


@pytest.fixture
def databases(sandbox):
    """Create empty databases on the sandbox server by name; dropped after the test."""
    admin = sa.create_engine(sandbox.admin_db_url, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def create(label: str) -> str:
        name = f"{label}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        made.append(name)
        return with_database(sandbox.admin_db_url, name)

    yield create
    with admin.connect() as conn:
        for name in made:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def test_alembic_env_ignoring_the_url_never_downgrades_the_live_database(tmp_path, monkeypatch, sandbox, databases):
    """The issue's case: env.py builds its engine from its own settings. The round trip must prove its writes
    land on the scratch database before the downgrade, and stop with a blocker error when they do not."""
    from alembic import command as alembic_command
    from alembic.config import Config

    ini = alembic_project(tmp_path, ROGUE_ENV, USER_REVS)
    live = databases("live")
    monkeypatch.setenv("ROGUE_APP_DATABASE_URL", live)
    alembic_command.upgrade(Config(str(ini)), "head")  # the live database is at head, with data
    with sa.create_engine(live).begin() as conn:
        conn.execute(sa.text('INSERT INTO "user" (name, created_at) VALUES (\'ada\', \'2026-01-02T03:04:05Z\')'))
    ctx = make(tmp_path, monkeypatch, "migrations", {
        "driver": "alembic", "alembic": {"config": str(ini)}, "apply_database_url": "${T_ADMIN}",
        "expected_pending": ["u1", "u2"]}, sandbox, db_url=live)
    run = migrations.MigrationsRun(ctx)
    plan, trip = run.plan(), run.roundtrip()
    # the live database was never downgraded: the column's data and the version are as they were
    # (a downgrade -1 / upgrade head there drops created_at and adds it back empty)
    with sa.create_engine(live).connect() as conn:
        assert conn.execute(sa.text('SELECT created_at IS NOT NULL FROM "user"')).scalar() is True
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "u2"
    assert trip.status == "error" and trip.severity == "blocker"
    assert trip.observed.startswith("the migration tool did not write to the scratch database; its env.py probably "
                                    "ignores the URL it is given")
    assert "the downgrade was not run" in trip.observed and trip.evidence["scratch_version_table"] == []
    assert plan.status == "pass" and "u1, u2 already applied before this rehearsal (not rehearsed)" in plan.observed


def test_alembic_apply_that_lands_in_another_database_is_a_blocker_error(tmp_path, monkeypatch, sandbox, databases):
    ini = alembic_project(tmp_path, ROGUE_ENV, USER_REVS)
    intended, elsewhere = databases("intended"), databases("elsewhere")
    monkeypatch.setenv("ROGUE_APP_DATABASE_URL", elsewhere)
    monkeypatch.setenv("T_APPLY", intended)
    block = {"driver": "alembic", "alembic": {"config": str(ini)}, "apply_database_url": "${T_APPLY}",
             "expected_pending": ["u1", "u2"], "postconditions": {"tables": ["user"]}}
    run = migrations.MigrationsRun(make(tmp_path, monkeypatch, "migrations", block, sandbox, db_url=intended))
    plan, apply, after = run.plan(), run.apply(), run.none_pending()
    post = migrations.check_postconditions_after(run)
    assert plan.status == "pass" and plan.metrics["pending"] == 2
    assert apply.status == "error" and apply.severity == "blocker"
    assert "did not write to the database apply_database_url names: after applying u1 its version table there " \
           "records nothing" in apply.observed
    assert [r["status"] for r in apply.evidence["migrations"]] == ["not recorded where intended", "not tried"]
    assert after.status == "skip" and [c.status for c in post] == ["skip"]
    with sa.create_engine(elsewhere).connect() as conn:  # where the write really went
        assert conn.execute(sa.text("SELECT to_regclass('\"user\"')")).scalar() is not None
    # apply_database_url naming another database than the target's: stopped before anything is applied
    monkeypatch.setenv("T_APPLY", elsewhere)
    other = migrations.MigrationsRun(make(tmp_path, monkeypatch, "migrations", block, sandbox, db_url=intended))
    other.plan()
    mismatch = other.apply()
    assert mismatch.status == "error" and "apply_database_url reaches database elsewhere_" in mismatch.observed
    assert "but the target's database_url reaches intended_" in mismatch.observed


def test_roundtrip_whose_downgrade_changes_nothing_is_error(tmp_path, monkeypatch, sandbox, databases):
    noop = '"""data only"""\nrevision, down_revision = "c3", "b2"\ndef upgrade():\n    pass\n' \
           'def downgrade():\n    pass\n'
    ini = alembic_project(tmp_path, ALEMBIC_ENV, {**ALEMBIC_REVS, "c3_noop.py": noop})
    ctx = make(tmp_path, monkeypatch, "migrations", {
        "driver": "alembic", "alembic": {"config": str(ini)}, "apply_database_url": "${T_ADMIN}"}, sandbox,
        db_url=databases("live"))
    trip = migrations.MigrationsRun(ctx).roundtrip()
    assert trip.status == "error" and trip.observed == ("downgrade -1 changed nothing on the scratch database: the "
                                                        "round trip proved nothing")
    assert trip.evidence["down_changed_schema"] is False and trip.evidence["scratch_version_table"] == ["c3"]


def test_command_roundtrip_that_changes_the_live_schema_is_a_blocker_failure(tmp_path, monkeypatch, sandbox,
                                                                           databases):
    live = databases("live")
    with sa.create_engine(live).begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (id int PRIMARY KEY)"))
    monkeypatch.setenv("ROGUE_APP_DATABASE_URL", live)
    script = tmp_path / "roundtrip.py"  # "runs on a scratch copy", but connects to the app's own database
    script.write_text("import os, sqlalchemy as sa\n"
                      "with sa.create_engine(os.environ['ROGUE_APP_DATABASE_URL']).begin() as c:\n"
                      "    c.execute(sa.text('ALTER TABLE accounts ADD COLUMN note text'))\n")
    ctx = make(tmp_path, monkeypatch, "migrations", {"driver": "command", "command": {
        "plan_command": "{python} -c 'pass'", "roundtrip_command": f"{{python}} {script}"}}, sandbox, db_url=live)
    trip = migrations.MigrationsRun(ctx).roundtrip()
    assert trip.status == "fail" and trip.severity == "blocker"
    assert trip.observed == ("the LIVE database changed during the roundtrip_command, a step meant to touch only a "
                             "scratch database: column accounts.note added")
    assert trip.evidence["command"]["exit_code"] == 0


def test_expected_pending_already_applied_is_shown_as_not_rehearsed_and_apply_skips(tmp_path, monkeypatch, sandbox):
    ctx = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(MIGRATIONS_DIR)},
                                                     "expected_pending": ["019"], "apply_database_url": "${T_ADMIN}"},
               sandbox)
    run = migrations.MigrationsRun(ctx)
    plan, apply, after = run.plan(), run.apply(), run.none_pending()
    assert plan.status == "pass"
    assert plan.observed == "0 pending; 019 already applied before this rehearsal (not rehearsed)"
    assert plan.evidence["pending"] == [{"migration": "019", "name": "", "announced by the release": "yes",
                                         "status": "already applied before this rehearsal (not rehearsed)"}]
    assert apply.status == "skip" and apply.severity == "blocker"
    assert apply.observed == "nothing to apply: 019 already applied before this rehearsal (not rehearsed)"
    assert after.status == "pass"
    # part of the release pending: that part is applied, the check still says what was not rehearsed
    d = copy_migrations(tmp_path)
    (d / "098_new.sql").write_text("CREATE TABLE t098 (id int);\n")
    part = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(d)}, "expected_pending": [
        "018", "098"], "apply_database_url": "${T_ADMIN}"}, sandbox)
    run = migrations.MigrationsRun(part)
    run.plan()
    apply = run.apply()
    assert apply.status == "skip" and re.fullmatch(
        r"1 applied in [\d.]+ ms; 018 already applied before this rehearsal \(not rehearsed\)", apply.observed)
    assert [r["migration"] for r in apply.evidence["migrations"]] == ["098"]
    # announced but unknown to the tool: the plan fails
    unknown = make(tmp_path, monkeypatch, "migrations", {"sql_dir": {"directory": str(MIGRATIONS_DIR)},
                                                         "expected_pending": ["077"]}, sandbox)
    assert migrations.MigrationsRun(unknown).plan().observed == "announced by the release but no such migration: 077"


# ------------------------------------------------------------------------------------------ retention


def test_retention_window_and_purge_mismatch_fail(tmp_path, monkeypatch, sandbox):
    ctx = make(tmp_path, monkeypatch, "retention", {
        "windows": [{"table": "sessions", "column": "started_at", "days": 30}],
        "purge_dry_run": {"sql": "SELECT 'sessions', 0"}}, sandbox)
    [window] = retention.check_windows(ctx)
    assert window.status == "fail" and window.metrics["rows_past_window"] >= 60
    assert "past the 30-day window" in window.observed and window.evidence["sample"]
    purge = retention.check_purge_dry_run(ctx)
    assert purge.status == "fail" and "sessions: would delete 0," in purge.observed


def test_pii_finds_and_masks_emails_phones_and_luhn_valid_cards():
    patterns = {k: re.compile(v) for k, v in PiiScan().patterns.items()}
    text = json.dumps({"mail": "jane.doe@example.org", "tel": "+44 20 7946 0958", "card": "4111 1111 1111 1111",
                       "not_card": "4111 1111 1111 1112", "uuid": "00000000-0000-4000-8000-00000000dead"})
    found = retention.find_pii(text, patterns)
    assert sorted(k for k, _ in found) == ["card", "email", "phone"]
    assert [retention.mask(k, v) for k, v in sorted(found)] == ["****1111", "j***@e***.org", "****0958"]


def test_pii_scan_fails_on_plaintext_email_with_masked_example(tmp_path, monkeypatch, sandbox):
    with sa.create_engine(sandbox.admin_db_url).begin() as conn:
        conn.execute(sa.text("INSERT INTO access_log (path, status, payload) VALUES ('/x', 200, "
                             "'{\"email\": \"max.mustermann@example.com\"}')"))
    try:
        ctx = make(tmp_path, monkeypatch, "retention", {"pii_scan": {"columns": [
            {"table": "access_log", "column": "payload"}]}}, sandbox)
        [check] = retention.check_pii(ctx)
        assert check.status == "fail" and "hold plaintext PII (1 email)" in check.observed
        assert check.evidence["masked_examples"] == ["email: m***@e***.com"]
        assert "mustermann" not in json.dumps(check.model_dump(mode="json"))
    finally:
        with sa.create_engine(sandbox.admin_db_url).begin() as conn:
            conn.execute(sa.text("DELETE FROM access_log WHERE payload ? 'email'"))


class ExportServer(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        docs = {"/no-datasets": {"id": "1"}, "/missing": {"datasets": {"sessions": []}},
                "/bad-checksum": {"datasets": {"sessions": [1], "answers": []}, "checksum": "0" * 64}}
        if self.path == "/boom":
            body, status = b'{"error": "internal"}', 500
        else:
            body, status = json.dumps(docs.get(self.path, {})).encode(), 201
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def export_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ExportServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("path,status,reason", [
    ("/boom", "fail", "HTTP 500"), ("/no-datasets", "fail", "no 'datasets' object"),
    ("/missing", "fail", "missing dataset(s): answers"), ("/bad-checksum", "fail", "stated checksum 0000"),
])
def test_export_fails_honestly(tmp_path, monkeypatch, export_server, path, status, reason):
    ctx = make(tmp_path, monkeypatch, "retention", {"export": {
        "request": {"name": "export", "method": "POST", "path": path, "json": {"candidate_id": "c"},
                    "expect_status": 201, "auth": False}, "expected_datasets": ["sessions", "answers"]}},
               base_url=export_server)
    checks = retention.check_export(ctx)
    failing = [c for c in checks if c.status != "pass"]
    assert failing[0].status == status and reason in failing[0].observed


def test_export_refused_in_production_and_unreachable_is_error(tmp_path, monkeypatch, export_server):
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    block = {"export": {"request": {"name": "e", "method": "POST", "path": "/x", "expect_status": 201}}}
    req, data = retention.check_export(make(tmp_path, monkeypatch, "retention", block, base_url=export_server,
                                            kind="production"))
    assert req.status == "skip" and "production" in req.observed and data.status == "skip"
    [req, _] = retention.check_export(make(tmp_path, monkeypatch, "retention", block, base_url="http://127.0.0.1:9"))
    assert req.status == "error" and "connection failed" in req.observed


# ------------------------------------------------------------------------------------------ backup & recovery


def test_backup_missing_stale_and_empty(tmp_path, monkeypatch, sandbox):
    ctx = make(tmp_path, monkeypatch, "backup_recovery", {"backup": {"path": str(tmp_path / "none")}}, sandbox)
    age, size = backup_recovery.check_backup(ctx)
    assert age.status == "error" and "does not exist" in age.observed and size.status == "skip"
    d = tmp_path / "bk"
    d.mkdir()
    (d / "old.dump").write_bytes(b"")
    os.utime(d / "old.dump", (0, 1_000_000_000))
    ctx = make(tmp_path, monkeypatch, "backup_recovery", {"backup": {"path": str(d), "max_age_hours": 1,
                                                                     "min_size_bytes": 10}}, sandbox)
    age, size = backup_recovery.check_backup(ctx)
    assert age.status == "fail" and "old.dump is" in age.observed and age.metrics["rpo_s"] > 3600
    assert size.status == "fail" and size.observed == "0 bytes"


def test_restore_of_a_corrupt_backup_fails_and_drops_its_scratch_database(tmp_path, monkeypatch, sandbox):
    from rehearsal_lib.sandbox.manager import _pg_bin

    d = tmp_path / "bk"
    d.mkdir()
    (d / "exam.dump").write_bytes(b"PGDMP" + b"\0garbage" * 20)
    monkeypatch.setenv("T_BIN", str(_pg_bin()))
    ctx = make(tmp_path, monkeypatch, "backup_recovery", {
        "backup": {"path": str(d)}, "restore": {"scratch_database_url": "${T_ADMIN}", "pg_bin_dir": "${T_BIN}",
                                                "tables": [{"name": "sessions"}]}}, sandbox)
    restored, counts = backup_recovery.check_restore(ctx)
    assert restored.status == "fail" and "pg_restore exited 1" in restored.observed
    assert "pg_restore: error" in restored.evidence["output_tail"]
    assert counts.status == "skip"
    with sa.create_engine(sandbox.admin_db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_database WHERE datname LIKE 'rehearsal_restore_%'"
                                    )).scalar() == 0
    assert sandbox.admin_db_url.split("@")[0].split(":")[-1] not in json.dumps(restored.model_dump(mode="json"))


def test_restore_missing_rows_fails_with_counts(tmp_path, monkeypatch, sandbox):
    """A real pg_dump of the sandbox restores; compared with a table holding more rows, it falls short."""
    from rehearsal_lib.sandbox.backups import backup_dir
    from rehearsal_lib.sandbox.manager import _pg_bin

    monkeypatch.setenv("T_BIN", str(_pg_bin()))
    ctx = make(tmp_path, monkeypatch, "backup_recovery", {
        "backup": {"path": str(backup_dir(Path(sandbox.home)))},
        "restore": {"scratch_database_url": "${T_ADMIN}", "pg_bin_dir": "${T_BIN}",
                    "tables": [{"name": "exams"}, {"name": "sessions"}]}}, sandbox)
    with sa.create_engine(sandbox.admin_db_url).begin() as conn:
        conn.execute(sa.text("INSERT INTO exams (title, created_at) VALUES ('after the backup', now())"))
    try:
        restored, counts = backup_recovery.check_restore(ctx)
        assert restored.status == "pass" and restored.metrics["restore_s"] > 0
        assert counts.status == "fail" and counts.observed == "exams: 3 restored vs 4 in the source"
        assert ["exams", 4, 3, 1] in counts.evidence["sample"]
    finally:
        with sa.create_engine(sandbox.admin_db_url).begin() as conn:
            conn.execute(sa.text("DELETE FROM exams WHERE title = 'after the backup'"))


def test_rollback_and_restart_fail_honestly(tmp_path, monkeypatch, sandbox, export_server):
    fails = {"command": "{python} -c 'import sys; sys.exit(4)'", "timeout_s": 120}  # exits at once
    ctx = make(tmp_path, monkeypatch, "backup_recovery", {"rollback": fails, "restart": {
        **fails, "count_tables": ["sessions"], "service_checks": [{"name": "s", "path": "/x"}]}}, sandbox,
               base_url=sandbox.base_url)
    rollback = backup_recovery.check_rollback(ctx)
    assert rollback.status == "fail" and "exited 4" in rollback.observed
    rto, counts, service = backup_recovery.check_restart(ctx)
    assert rto.status == "fail" and "exited 4" in rto.observed
    assert counts.status == "skip" and service.status == "skip"
    # a service whose health never answers (the export server has no GET routes): not ready in time
    # (`true`, not a Python start-up that a busy machine can stretch past the whole timeout)
    never = make(tmp_path, monkeypatch, "backup_recovery", {"rollback": {"command": "true", "timeout_s": 3}},
                 base_url=export_server)
    check = backup_recovery.check_rollback(never)
    assert check.status == "fail" and "not answering 3 s after the rollback" in check.observed


def test_restart_refused_in_production(tmp_path, monkeypatch, sandbox):
    monkeypatch.delenv("REHEARSAL_ALLOW_DESTRUCTIVE", raising=False)
    ctx = make(tmp_path, monkeypatch, "backup_recovery", {"restart": {"command": "true", "count_tables": ["exams"]},
                                                          "rollback": {"command": "true"}}, sandbox, kind="production")
    assert backup_recovery.check_rollback(ctx).status == "skip"
    rto, counts = backup_recovery.check_restart(ctx)
    assert rto.status == "skip" and "production" in rto.observed and counts.status == "skip"


# ------------------------------------------------------------------------------------------ smoke


def test_smoke_failing_suite_and_missing_program(tmp_path, monkeypatch):
    suite = tmp_path / "test_team_smoke.py"
    suite.write_text(textwrap.dedent("""
        def test_ok():
            assert True
        def test_checkout_broken():
            assert 1 == 2, "checkout answers 500"
    """))
    ctx = make(tmp_path, monkeypatch, "smoke", {
        "command": f"{{python}} -m pytest {suite} -q -p no:cacheprovider --junitxml={{junit}}"})
    ctx.run_dir = str(tmp_path / "run")
    cmd, junit = smoke.check_smoke(ctx)
    assert cmd.status == "fail" and "exited 1" in cmd.observed
    assert junit.status == "fail" and junit.observed == "1 of 2 failed: test_checkout_broken"
    assert (tmp_path / "run" / "smoke" / "junit.xml").is_file() and junit.evidence["junit"] == "smoke/junit.xml"
    missing = make(tmp_path, monkeypatch, "smoke", {"command": "no-such-smoke-tool --run"})
    cmd, junit = smoke.check_smoke(missing)
    assert cmd.status == "error" and "cannot run" in cmd.observed
    assert junit.status == "fail" and "no JUnit XML" in junit.observed


# ------------------------------------------------------------------------------------------ sandbox support


def test_sandbox_restart_keeps_the_port_and_backup_and_export_exist(sandbox):
    import httpx

    from rehearsal_lib.sandbox import sandbox_status

    home = Path(sandbox.home).parent
    proc = run([sys.executable, "-m", "rehearsal_lib.sandbox.ops", "restart"], 300,
               "the sandbox app did not restart", env={**os.environ, "REHEARSAL_SANDBOX_HOME": str(home),
                                                        "REHEARSAL_SANDBOX_VARIANT": "default"})
    assert proc.returncode == 0, proc.stderr
    state = sandbox_status("default", home=home)
    assert state is not None and state.app_port == sandbox.app_port and state.app_pid != sandbox.app_pid
    assert sandbox.token not in proc.stdout + proc.stderr
    dumps = list((Path(sandbox.home) / "backups").glob("exam-*.dump"))
    assert len(dumps) == 1 and dumps[0].read_bytes()[:5] == b"PGDMP"
    auth = {"Authorization": f"Bearer {sandbox.token}"}
    made = httpx.post(f"{sandbox.base_url}/v1/data-exports", json={"candidate_id": "cand-0002"}, headers=auth)
    assert made.status_code == 201 and set(made.json()["datasets"]) == {"sessions", "answers", "events"}
    again = httpx.get(f"{sandbox.base_url}/v1/data-exports/{made.json()['id']}", headers=auth).json()
    assert again["checksum"] == made.json()["checksum"]
    assert httpx.post(f"{sandbox.base_url}/v1/data-exports", json={"candidate_id": "nobody"},
                      headers=auth).status_code == 404
    assert httpx.post(f"{sandbox.base_url}/v1/data-exports", json={"candidate_id": "x"}).status_code == 401


def test_restart_that_loses_rows_fails_the_counts(tmp_path, monkeypatch, sandbox):
    """A 'restart' that loses a row (here: deletes one) fails the counts check, naming the table."""
    admin = sa.create_engine(sandbox.admin_db_url)
    with admin.begin() as conn:
        conn.execute(sa.text("INSERT INTO exams (title) VALUES ('lost in restart')"))
    script = tmp_path / "lossy_restart.py"
    script.write_text("import os, sqlalchemy as sa\n"
                      "with sa.create_engine(os.environ['T_ADMIN']).begin() as c:\n"
                      "    c.execute(sa.text(\"DELETE FROM exams WHERE title = 'lost in restart'\"))\n")
    ctx = make(tmp_path, monkeypatch, "backup_recovery", {"restart": {
        "command": f"{{python}} {script}", "timeout_s": 120, "count_tables": ["exams", "sessions"]}}, sandbox,
               base_url=sandbox.base_url)
    rto, counts = backup_recovery.check_restart(ctx)
    assert rto.status == "pass"
    assert counts.status == "fail" and counts.observed == "rows lost: exams -1"
    assert any(row[0] == "exams" and row[3] == "-1" for row in counts.evidence["sample"])
    admin.dispose()
