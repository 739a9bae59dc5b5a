"""The operator's project, not the package's folder (issue #19): where params/, outputs/ and notebooks/
are found, the shipped notebooks and built-in environments, `--project`, `notebooks eject` and the
stale-notebook warning of `rehearse validate`. No kernel, no server: the fast subset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rehearsal_lib import cli, phases
from rehearsal_lib.config import BUILTIN_PARAMS, load_params, params_path, project_root
from rehearsal_lib.phases import SHIPPED_NOTEBOOKS, notebook_for
from rehearsal_lib.runner import outputs_root

PACKAGE = Path(phases.__file__).resolve().parent.parent


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder as the current directory, no project set (as in an operator's fresh repository)."""
    monkeypatch.delenv("REHEARSAL_PROJECT_DIR", raising=False)
    monkeypatch.delenv("REHEARSAL_OUTPUTS", raising=False)
    folder = tmp_path / "my-service"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_project_is_the_current_directory_never_the_package(empty: Path):
    assert project_root() == empty
    assert outputs_root() == empty / "outputs"
    assert not (empty / "outputs").exists()  # nothing is written by looking


def test_project_is_the_nearest_parent_holding_params(empty: Path, monkeypatch: pytest.MonkeyPatch):
    (empty / "params").mkdir()  # no notebooks/: a project needs none of its own
    deep = empty / "src" / "app"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert project_root() == empty


def test_environment_variable_then_project_option(empty: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]):
    other = tmp_path / "other"
    (other / "params").mkdir(parents=True)
    monkeypatch.setenv("REHEARSAL_PROJECT_DIR", str(other))
    assert project_root() == other
    third = tmp_path / "third"
    third.mkdir()
    assert cli.main(["--project", str(third), "list", "sandbox"]) == 0
    assert f"no runs of sandbox in {third / 'outputs' / 'sandbox'}" in capsys.readouterr().out
    assert cli.main(["list", "sandbox", "--project", str(other)]) == 0  # after the command too
    assert str(other / "outputs" / "sandbox") in capsys.readouterr().out
    assert cli.main(["--project", str(tmp_path / "missing"), "list", "sandbox"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_builtin_environments_work_from_an_empty_folder(empty: Path, capsys: pytest.CaptureFixture[str]):
    assert params_path("sandbox") == BUILTIN_PARAMS / "sandbox.yaml"
    assert BUILTIN_PARAMS.is_relative_to(PACKAGE)
    assert load_params("sandbox-faulty").sandbox.variant == "faulty"  # extends the built-in sandbox.yaml
    assert cli.main(["validate", "sandbox"]) == 0
    out = capsys.readouterr().out
    assert "sandbox: OK (sandbox)" in out and "decision" in out
    assert cli.main(["validate", "nonesuch"]) == 2
    err = capsys.readouterr().err
    assert "no such params file" in err and "sandbox, sandbox-faulty" in err


def test_a_project_params_file_wins_over_the_builtin(empty: Path):
    (empty / "params").mkdir()
    (empty / "params" / "sandbox.yaml").write_text(
        f"extends: {BUILTIN_PARAMS / 'sandbox.yaml'}\nname: sandbox\nphases: {{load: {{enabled: false}}}}\n")
    assert params_path("sandbox") == empty / "params" / "sandbox.yaml"
    assert "load" not in load_params("sandbox").enabled_phases()


def test_shipped_notebooks_are_package_data_and_a_project_copy_overrides(empty: Path):
    assert SHIPPED_NOTEBOOKS == PACKAGE / "notebooks"
    for spec in phases.registry():
        if spec.notebook is None:  # a phase not built yet
            assert notebook_for(spec.name) is None
            continue
        assert notebook_for(spec.name) == SHIPPED_NOTEBOOKS / str(spec.notebook), spec.name
    (empty / "notebooks").mkdir()
    own = empty / "notebooks" / "04_jobs.ipynb"
    own.write_text((SHIPPED_NOTEBOOKS / "04_jobs.ipynb").read_text())
    assert notebook_for("jobs") == own
    assert notebook_for("integrity") == SHIPPED_NOTEBOOKS / "08_integrity.ipynb"


def test_notebooks_eject_copies_stamps_and_refuses_to_overwrite(empty: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["notebooks", "eject", "jobs", "smoke"]) == 0
    ejected = sorted(p.name for p in (empty / "notebooks").iterdir())
    assert ejected == ["04_jobs.ipynb", "12_smoke.ipynb"]
    nb = json.loads((empty / "notebooks" / "04_jobs.ipynb").read_text())
    shipped = json.loads((SHIPPED_NOTEBOOKS / "04_jobs.ipynb").read_text())
    assert nb["cells"] == shipped["cells"]
    assert nb["metadata"]["rehearsal"]["version"] == cli.tool_version()
    assert nb["metadata"]["rehearsal"]["phase"] == "jobs"
    assert notebook_for("jobs") == empty / "notebooks" / "04_jobs.ipynb"
    capsys.readouterr()

    (empty / "notebooks" / "04_jobs.ipynb").write_text("edited")
    assert cli.main(["notebooks", "eject", "jobs", "integrity"]) == 2  # nothing is copied when one exists
    assert "04_jobs.ipynb: already exists" in capsys.readouterr().err
    assert (empty / "notebooks" / "04_jobs.ipynb").read_text() == "edited"
    assert not (empty / "notebooks" / "08_integrity.ipynb").exists()
    assert cli.main(["notebooks", "eject", "jobs", "--force"]) == 0
    assert json.loads((empty / "notebooks" / "04_jobs.ipynb").read_text())["cells"] == shipped["cells"]

    assert cli.main(["notebooks", "eject", "nonesuch"]) == 2
    assert "no such phase" in capsys.readouterr().err
    assert cli.main(["notebooks", "eject"]) == 2  # all of them: jobs and smoke are there already
    assert cli.main(["notebooks", "eject", "--force"]) == 0
    assert len(list((empty / "notebooks").glob("*.ipynb"))) == len(list(SHIPPED_NOTEBOOKS.glob("*.ipynb")))


def test_validate_warns_when_an_ejected_notebook_is_older_than_the_tool(empty: Path,
                                                                        capsys: pytest.CaptureFixture[str]):
    assert cli.main(["notebooks", "eject", "jobs", "integrity"]) == 0
    capsys.readouterr()
    assert cli.main(["validate", "sandbox"]) == 0
    assert "warning" not in capsys.readouterr().err  # just ejected: current
    path = empty / "notebooks" / "04_jobs.ipynb"
    nb = json.loads(path.read_text())
    nb["metadata"]["rehearsal"]["version"] = "0.0.1"
    path.write_text(json.dumps(nb))
    assert cli.main(["validate", "sandbox"]) == 0  # a warning, not an error
    err = capsys.readouterr().err
    assert f"warning: {path}: ejected from rehearsal 0.0.1, older than the installed {cli.tool_version()}" in err
    assert "08_integrity" not in err


def test_this_repository_uses_the_shipped_notebooks_and_params():
    """A clone is a project like any other: its params/ holds the examples, the sandbox params and
    the notebooks are the package's (edited in place by contributors)."""
    root = PACKAGE.parent
    assert not (root / "notebooks").exists()
    assert os.environ["REHEARSAL_PROJECT_DIR"] == str(root)
    assert params_path("sandbox") == BUILTIN_PARAMS / "sandbox.yaml"
    assert notebook_for("preflight") == SHIPPED_NOTEBOOKS / "01_preflight.ipynb"


CWD_CELL = """
import os
from rehearsal_lib.phase import open_phase, Outcome
ph = open_phase("preflight", env, run_dir)
here = os.getcwd()
ph.run("preflight.cwd", "The kernel works in the project folder", lambda: Outcome(
    "pass" if here == os.environ["EXPECTED_CWD"] else "fail", here))
ph.summary()
"""


@pytest.mark.integration  # real kernels
def test_a_run_uses_the_project_override_the_shipped_notebooks_and_works_in_the_project(
        empty: Path, monkeypatch: pytest.MonkeyPatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from rehearsal_lib.runner import Runner

    (empty / "params").mkdir()
    (empty / "params" / "scratch.yaml").write_text(
        "name: scratch\nenvironment: {kind: staging}\ntarget: {base_url: 'http://127.0.0.1:9', timeout_s: 1}\n"
        "run: {cell_timeout_s: 600, phase_timeout_s: 900}\nphases: {integrity: {enabled: false}}\n")
    (empty / "notebooks").mkdir()
    params = new_code_cell('env = "scratch"\nrun_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(CWD_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(empty / "notebooks" / "01_preflight.ipynb"))
    monkeypatch.setenv("EXPECTED_CWD", str(empty))
    sub = empty / "src"
    sub.mkdir()
    monkeypatch.chdir(sub)  # the project is found from a subfolder
    summary = Runner("scratch", progress=lambda s: None).run()
    assert summary.run_dir.parent.parent == empty / "outputs"
    by_id = {c.id: c for c in summary.checks}
    assert by_id["preflight.cwd"].status == "pass", by_id["preflight.cwd"].observed  # not the notebooks' folder
    assert {p.name: p.outcome for p in summary.phases} == {"preflight": "ok", "decision": "ok"}  # shipped decision
