"""The alembic driver's keys validate as documented (no server needed)."""

from __future__ import annotations

import pytest
import yaml

from rehearsal_lib.config import ConfigError, load_params


def load(tmp_path, alembic: dict):
    doc = {"name": "x", "environment": {"kind": "staging"}, "target": {"base_url": "http://127.0.0.1:9"},
           "phases": {"migrations": {"driver": "alembic", "alembic": alembic}}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_params(str(path), check_env_vars=False)


def test_python_and_url_env_are_accepted(tmp_path):
    a = load(tmp_path, {"config": "${INI}", "python": "${APP_PY}", "url_env": "DATABASE_URL"}).phases.migrations.alembic
    assert (a.python, a.url_env, a.timeout_s) == ("${APP_PY}", "DATABASE_URL", 600)


def test_url_env_needs_python_and_a_variable_name(tmp_path):
    with pytest.raises(ConfigError, match="url_env needs `python`"):
        load(tmp_path, {"config": "alembic.ini", "url_env": "DATABASE_URL"})
    with pytest.raises(ConfigError, match="url_env"):
        load(tmp_path, {"config": "alembic.ini", "python": "/usr/bin/python3", "url_env": "DATABASE URL; rm"})
