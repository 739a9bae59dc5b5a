"""Shared fixtures: the project root, a params-file writer, and a default sandbox per test module."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def write_params(tmp_path: Path):
    """Write a params YAML file into tmp_path and return its path."""

    def write(text: str, name: str = "env.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return write


@pytest.fixture(autouse=True)
def _project_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(ROOT))
    os.environ.pop("REHEARSAL_OUTPUTS", None)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    """A real default sandbox in a temporary home, started once per test module and stopped after it."""
    from rehearsal_lib.sandbox import start_sandbox, stop_sandbox

    home = tmp_path_factory.mktemp("sbx")
    yield start_sandbox("default", home=home)
    stop_sandbox("default", home=home)
