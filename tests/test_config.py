"""Params files: every mistake names the file, the key and the line; the CLI exits 2 and makes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rehearsal_lib.config import ConfigError, load_params, resolve_reference

GOOD = """
name: staging
target:
  base_url: https://staging.example.com
  database_url: ${STAGING_DB_URL}
  auth_token: ${STAGING_TOKEN:-dev}
phases:
  integrity:
    zero_row_checks:
      - name: orphans
        title: No orphans
        sql: SELECT 1 WHERE false
"""


def test_good_file_loads(write_params, monkeypatch):
    monkeypatch.setenv("STAGING_DB_URL", "postgresql://u:p@h/db")
    params = load_params(str(write_params(GOOD)))
    assert params.name == "staging"
    assert params.enabled_phases() == ["preflight", "integrity", "decision"]
    assert params.phases.integrity.zero_row_checks[0].severity == "blocker"


def test_shipped_params_files_validate(root):
    builtin = root / "rehearsal_lib" / "builtin_params"
    for path in sorted([*(root / "params").glob("*.yaml"), *builtin.glob("*.yaml")]):
        env = {"STAGING_DB_URL": "x", "STAGING_API_TOKEN": "x", "PROD_DB_URL": "x", "PROD_API_TOKEN": "x"}
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            assert load_params(str(path)).name


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        (GOOD.replace("  timeout_s", "  x").replace("phases:", "phasse:"), "phasse", 6, "unknown key"),
        (GOOD.replace("  auth_token", "  auth_tokn"), "target.auth_tokn", 5, "unknown key"),
        (GOOD + "run:\n  parallel: many\n", "run.parallel", 13, "integer"),
        (GOOD.replace("        sql: SELECT 1 WHERE false\n", ""), "phases.integrity.zero_row_checks[0].sql", 9,
         "missing"),
        (GOOD.replace("${STAGING_DB_URL}", "postgresql://u:hunter2@h/db"), "target.database_url", 4, "${VAR}"),
        (GOOD.replace("name: staging", "name: staging\nenvironment: {kind: prod}"), "environment.kind", 2,
         "'production'"),
    ],
)
def test_mistakes_name_key_and_line(write_params, monkeypatch, text, key, line, words):
    monkeypatch.setenv("STAGING_DB_URL", "x")
    path = write_params(text)
    with pytest.raises(ConfigError) as err:
        load_params(str(path))
    assert err.value.key == key
    assert err.value.line == line
    assert words in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: {key}: ")


def test_bad_yaml_reports_line(write_params):
    path = write_params("name: x\ntarget:\n  base_url: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_params(str(path))
    assert "invalid YAML" in str(err.value) and err.value.line is not None


def test_missing_file_lists_available(root):
    with pytest.raises(ConfigError) as err:
        load_params("no-such-env", root)
    assert "no such params file" in str(err.value) and "sandbox" in str(err.value)


def test_unset_reference_is_an_error(write_params, monkeypatch):
    monkeypatch.delenv("STAGING_DB_URL", raising=False)
    with pytest.raises(ConfigError) as err:
        load_params(str(write_params(GOOD)))
    assert err.value.key == "target.database_url" and "STAGING_DB_URL" in str(err.value)
    assert err.value.line == 4


def test_resolve_reference_default_and_missing():
    assert resolve_reference("${A:-x}-${B}", {"B": "b"}) == "x-b"
    with pytest.raises(KeyError):
        resolve_reference("${NOPE}", {})


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rehearsal_lib.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_run_with_bad_params_exits_2_and_leaves_no_run_folder(write_params, tmp_path, root):
    path = write_params(GOOD.replace("base_url", "base_ur1"))
    out = tmp_path / "outputs"
    proc = _cli("run", str(path), "--outputs", str(out), cwd=root)
    assert proc.returncode == 2
    assert f"{path}:3: target.base_ur1: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_validate_missing_file_exits_2(root):
    proc = _cli("validate", "nope", cwd=root)
    assert proc.returncode == 2 and "nope.yaml: no such params file" in proc.stderr


def test_cli_usage_error_exits_2(root):
    assert _cli("frobnicate", cwd=root).returncode == 2


def test_extends_merges_and_errors_point_at_the_right_file(write_params, monkeypatch):
    monkeypatch.setenv("STAGING_DB_URL", "x")
    base = write_params(GOOD + "run:\n  parallel: 2\n", "base.yaml")
    child = write_params("extends: base.yaml\nname: production\nenvironment: {kind: production}\n", "prod.yaml")
    params = load_params(str(child))
    assert params.name == "production" and params.is_production and params.run.parallel == 2
    assert params.phases.integrity.zero_row_checks[0].name == "orphans"  # inherited
    base.write_text(base.read_text().replace("parallel: 2", "parallel: lots"))
    with pytest.raises(ConfigError) as err:
        load_params(str(child))
    assert err.value.path == str(base) and err.value.key == "run.parallel" and err.value.line == 13
    write_params("extends: prod.yaml\nname: loop\n", "base.yaml")
    with pytest.raises(ConfigError) as err:
        load_params(str(child))
    assert "extends itself" in str(err.value)


def test_faulty_sandbox_params_differ_only_in_name_and_variant(root):
    good, faulty = load_params("sandbox", root), load_params("sandbox-faulty", root)
    assert faulty.sandbox.variant == "faulty" and good.sandbox.variant == "default"
    assert faulty.phases == good.phases and faulty.gate == good.gate and faulty.target == good.target


def test_cli_lab_starts_jupyterlab_with_passed_options(root):
    proc = _cli("lab", "--version", cwd=root)
    assert proc.returncode == 0 and proc.stdout.strip()[0].isdigit()
    assert _cli("run", "sandbox", "--bogus", cwd=root).returncode == 2


def test_the_run_command_installs_what_the_sandbox_rehearsal_runs(root):
    """The README's run command installs the sandbox extra, not dev; the sandbox's smoke phase runs pytest."""
    import re
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    readme = (root / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith("rehearse run sandbox") and "pip" in line)
    extras = re.search(r"-e '\.\[([a-z,]+)\]'", command).group(1).split(",")  # type: ignore[union-attr]
    assert "dev" not in extras
    installed = {d.split(">")[0].split("[")[0].split("=")[0].strip().lower()
                 for d in [*project["dependencies"], *(d for e in extras for d in project["optional-dependencies"][e])]}
    smoke = load_params("sandbox", root, check_env_vars=False).phases.smoke
    assert smoke.enabled and "-m pytest" in smoke.command
    assert "pytest" in installed


def test_sandbox_provided_vars_are_exactly_what_a_sandbox_provides(tmp_path):
    """config.SANDBOX_PROVIDED_VARS (what `rehearse validate` accepts as set for a sandbox params file) and
    SandboxState.env_vars (what a running sandbox exports) are written in two places: they must agree."""
    from rehearsal_lib.config import SANDBOX_PROVIDED_VARS
    from rehearsal_lib.sandbox.manager import SandboxState

    state = SandboxState(variant="default", home=tmp_path, base_url="http://127.0.0.1:1", db_url="postgresql://x",
                         admin_db_url="postgresql://y", app_pid=0, pg_port=1, app_port=1, token="t" * 16,
                         started_at="2026-12-02T00:00:00Z")
    assert set(state.env_vars()) == set(SANDBOX_PROVIDED_VARS)
