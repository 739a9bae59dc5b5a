"""Docs that run: every ```yaml example in docs/*.md (and README.md) parses, and every one that is a
whole params file, a `phases:` fragment or a phase's block validates through load_params."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rehearsal_lib import phases as phase_registry
from rehearsal_lib.config import load_params

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^```ya?ml[ \t]*\n(.*?)^```", re.S | re.M)
MINIMAL = {"name": "docs-example", "environment": {"kind": "staging"}, "target": {"base_url": "http://127.0.0.1:9"}}


def examples() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            out.append((f"{doc.name}:{text[:m.start()].count(chr(10)) + 1}", m.group(1)))
    return out


def _phase_fields() -> dict[str, list[str]]:
    """Each key a phase's params model accepts -> the phases that accept it."""
    owners: dict[str, list[str]] = {}
    for spec in phase_registry.registry():
        for key in (spec.params.model_fields if spec.params else ()):
            owners.setdefault(key, []).append(spec.name)
    return owners


def as_params_file(data: object) -> dict | None:
    """The example as a whole params file, or None when it is not one (a fragment of something else)."""
    if not isinstance(data, dict):
        return None
    if "target" in data:
        return data
    if set(data) == {"phases"}:
        return {**MINIMAL, **data}
    names = {s.name for s in phase_registry.registry()}
    if data and set(data) <= names:  # a phase's block shown on its own
        return {**MINIMAL, "phases": data}
    owners = _phase_fields()
    phases = {owners[k][0] for k in data if len(owners.get(k, [])) == 1}
    if len(phases) == 1 and all(k in owners for k in data):  # keys of one phase's block, e.g. `journey:`
        return {**MINIMAL, "phases": {phases.pop(): data}}
    return None


EXAMPLES = examples()


def test_the_docs_have_yaml_examples():
    assert len(EXAMPLES) >= 10
    assert any(where.startswith("rehearsing-fastapi-alembic.md") for where, _ in EXAMPLES)


@pytest.mark.parametrize("where,text", EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_yaml_example_parses_and_validates(where, text, tmp_path):
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        pytest.fail(f"{where}: does not parse: {exc}")
    doc = as_params_file(data)
    if doc is None:
        pytest.skip(f"{where}: a fragment of no params block")
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    load_params(str(path), check_env_vars=False)  # raises ConfigError with the key and the line


def test_a_broken_example_is_caught(tmp_path):
    """The guard itself: the issue's flow mapping with `?` inside does not parse; a wrong key does not validate."""
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load("- {name: list_orders, path: /v1/orders?limit=1, expect_status: 200}")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(as_params_file({"phases": {"migrations": {"driver": "alembic", "alembic": {
        "config": "alembic.ini", "pyhton": "/usr/bin/python3"}}}})), encoding="utf-8")
    from rehearsal_lib.config import ConfigError

    with pytest.raises(ConfigError, match="pyhton"):
        load_params(str(path), check_env_vars=False)
