"""The suite's own rules (tests/conftest.py): waits fail saying what never happened, and a test that
starts a server without the integration marker fails, so `pytest -m "not integration"` stays fast."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import finish, run, wait_for

HERE = Path(__file__).resolve().parent


def test_wait_for_returns_the_value_or_fails_naming_what_never_came():
    calls = iter([None, [], "ready"])
    assert wait_for(lambda: next(calls), 10, "never", interval=0.01) == "ready"
    with pytest.raises(pytest.fail.Exception, match=r"^preflight did not finish within 0.2 s$"):
        wait_for(lambda: False, 0.2, "preflight did not finish", interval=0.05)


def test_finish_stops_an_overrunning_process_and_fails_with_its_output():
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(600)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"(?s)the job did not end within 1 s.*started"):
        finish(proc, 1, "the job did not end")
    assert proc.poll() is not None and time.monotonic() - t0 < 300  # stopped, not waited for


UNMARKED = '''
import socket
import subprocess
import sys

import pytest


def test_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)


def test_uses_the_sandbox_fixture(sandbox):
    pass


def test_starts_a_server_program():
    subprocess.run([sys.executable, "-m", "http.server", "--help"], capture_output=True)


def test_plain_subprocess():
    assert subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).returncode == 0


@pytest.mark.integration
def test_marked_may_listen():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
'''


def test_a_server_in_an_unmarked_test_fails_with_the_reason(tmp_path: Path):
    """A scratch suite with this conftest: each way of starting a server without the marker fails, before
    the sandbox fixture starts anything; a marked test and a plain subprocess pass."""
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    integration: starts a server\n")
    (tmp_path / "test_scratch.py").write_text(UNMARKED)
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-rA",
               str(tmp_path)], 300, "the scratch suite did not end", cwd=tmp_path).stdout
    advice = "but is not marked integration: mark it @pytest.mark.integration"
    assert f"test_listens starts a server (listens on a socket) {advice}" in out, out
    assert f"test_uses_the_sandbox_fixture uses the sandbox fixture {advice}" in out, out
    assert f"test_starts_a_server_program starts a server (python -m http.server) {advice}" in out, out
    assert "2 failed, 2 passed, 1 error in " in out, out  # the sandbox one errors at setup: nothing started
    assert "PASSED test_scratch.py::test_plain_subprocess" in out
    assert "PASSED test_scratch.py::test_marked_may_listen" in out


def _readme_test_command() -> str:
    """The command in the README's code block after **Install and run the tests**."""
    readme = (HERE.parent / "README.md").read_text()
    after = readme.split("**Install and run the tests**", 1)[1]
    block = after.split("```bash\n", 1)[1].split("\n```", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert len(lines) == 1, f"the README's test command block holds {len(lines)} lines, expected one: {block!r}"
    return lines[0].strip()


def _ci_run_command() -> str:
    """The one command `.ci/run` runs (its lines that are not comments, `set` or `cd`)."""
    script = (HERE.parent / ".ci" / "run").read_text()
    lines = [ln.strip() for ln in script.splitlines()[1:]
             if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd "))]
    assert len(lines) == 1, f".ci/run runs {len(lines)} commands, expected one: {lines}"
    return lines[0]


def test_ci_runs_exactly_the_readme_test_command_with_ruff_and_mypy_before_pytest():
    readme, ci = _readme_test_command(), _ci_run_command()
    assert ci == readme, f".ci/run and the README's test command differ:\n  .ci/run: {ci}\n  README:  {readme}"
    steps = [step.strip() for step in readme.split("&&")]
    ruff = next((i for i, s in enumerate(steps) if s.startswith(".venv/bin/ruff check")), None)
    mypy = next((i for i, s in enumerate(steps) if s.split()[0] == ".venv/bin/mypy"), None)
    pytest_ = next((i for i, s in enumerate(steps) if "-m pytest" in s), None)
    assert ruff is not None and mypy is not None and pytest_ is not None, f"ruff, mypy and pytest must all run: {steps}"
    assert ruff < pytest_ and mypy < pytest_, f"ruff and mypy must run before pytest: {steps}"
    assert all(d in steps[ruff].split() for d in ("rehearsal_lib", "tests", "benchmarks")), steps[ruff]
    # the pytest steps together select every test: `-m "not alone"` on the workers, then `-m alone`
    marks = [s.split(" -m ", 2)[-1] for s in steps if "-m pytest" in s]
    assert marks == ['"not alone"', "alone"], marks
