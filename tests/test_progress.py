"""Live progress lines (rehearsal_lib/progress.py), the load engine's timer readings, `rehearse lab`'s
argument pass-through and the wording of sections with nothing configured. No server, no kernel."""

from __future__ import annotations

import io
import re
from array import array
from pathlib import Path

from rehearsal_lib import progress as progress_mod
from rehearsal_lib.cli import _lab_passthrough, build_parser
from rehearsal_lib.load.engine import LoadSpec, Samples, Scenario, _LiveCounter
from rehearsal_lib.progress import LiveLine, Progress

ROOT = Path(__file__).resolve().parent.parent


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_line_without_a_terminal_prints_the_first_line_then_at_most_every_10_s(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    live = LiveLine(lines.append, tty=False)
    live.show("load", "load · stage steady: 1 s of 6 s")
    clock[0] += 5
    live.show("load", "load · stage steady: 6 s of 6 s")
    live.show("jobs", "jobs · waiting: 1 s")  # another phase has its own pace
    clock[0] += 5
    live.show("load", "load · stage spike: 1 s of 3 s")
    assert lines == ["      progress load · stage steady: 1 s of 6 s", "      progress jobs · waiting: 1 s",
                     "      progress load · stage spike: 1 s of 3 s"]
    assert all("\r" not in ln and "\x1b" not in ln for ln in lines)


def test_live_line_in_a_terminal_rewrites_one_line_and_clears_it_before_other_output():
    out, lines = _Tty(), []
    live = LiveLine(lines.append, stream=out)
    live.show("load", "load · stage steady: 1 s")
    live.show("load", "load · stage steady: 2 s")
    live.clear()
    assert lines == []  # nothing through the normal line printer
    assert out.getvalue().count("\r\x1b[2K") == 3 and out.getvalue().endswith("\r\x1b[2K")
    assert "  >>> load · stage steady: 2 s" in out.getvalue()


def test_progress_outside_a_kernel_prints_plain_lines_and_writes_the_runner_file(tmp_path, monkeypatch, capsys):
    line_file = tmp_path / "load.line"
    monkeypatch.setenv(progress_mod.FILE_ENV, str(line_file))
    bar = Progress("load · stage steady", total_s=6, every_s=0.05, scrub=lambda s: s.replace("s3cret", "***"))
    bar.kernel = False
    with bar:
        bar.update("10 sent, token s3cret")
        bar._refresh()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[progress] load · stage steady: 0 s of 6 s")
    assert printed[-1].endswith("10 sent, token *** (done)") and len(printed) == 2  # no line in between (10 s)
    assert line_file.read_text().endswith("10 sent, token *** (done)")


def test_quick_work_shows_no_progress_at_all(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(progress_mod.FILE_ENV, str(tmp_path / "x.line"))
    bar = Progress("sandbox default: starting", delay_s=5)
    bar.kernel = False
    with bar:
        pass
    assert capsys.readouterr().out == "" and not (tmp_path / "x.line").exists()


def test_live_counter_reads_only_the_new_samples_and_judges_errors_per_scenario():
    spec = LoadSpec("http://x", [Scenario("a", "/"), Scenario("b", "/", expect_status=[201])])
    s = Samples()
    for k, code, lat in [(0, 200, 5.0), (1, 201, 7.0), (1, 200, 9.0), (0, -1, 5000.0)]:
        s.scenario.append(k)
        s.status.append(code)
        s.latency_ms.append(lat)
    counter = _LiveCounter(spec)
    first = counter.read(s)
    assert (first.sent, first.errors, first.p95_ms) == (4, 2, 9.0)  # the timeout is not a latency
    s.scenario.extend(array("H", [0]))
    s.status.extend(array("h", [200]))
    s.latency_ms.extend(array("d", [3.0]))
    second = counter.read(s)
    assert (second.sent, second.errors, second.p95_ms) == (5, 2, 3.0)
    assert "5 sent" in second.text() and "2 errors" in second.text()


def test_rehearse_lab_passes_its_arguments_through_untouched():
    assert _lab_passthrough(["lab", "--port", "8899", "--no-browser"]) == ([], ["--port", "8899", "--no-browser"])
    assert _lab_passthrough(["lab", "--ServerApp.port", "8899", "notes.ipynb"]) == (
        [], ["--ServerApp.port", "8899", "notes.ipynb"])
    # a global --project before the command stays rehearse's; everything after `lab` is jupyter's
    assert _lab_passthrough(["--project", "/srv/p", "lab", "--port", "1"]) == (["--project", "/srv/p"], ["--port", "1"])
    assert _lab_passthrough(["--project=/srv/p", "lab"]) == (["--project=/srv/p"], [])
    assert _lab_passthrough(["lab", "--help"]) is None and _lab_passthrough(["run", "x"]) is None
    assert "--port 8899" in build_parser()._subparsers._group_actions[0].choices["lab"].format_help()  # type: ignore[union-attr]


def test_every_section_with_nothing_configured_says_what_it_would_check_and_the_key():
    """One wording (checks.wording.not_configured) for every phase: no hand-written variant is left."""
    stray = []
    for path in sorted((ROOT / "rehearsal_lib" / "phases").glob("*/checks.py")):
        text = path.read_text()
        for m in re.finditer(r'ctx\.note\(f?"([^"]*(?:[Nn]ot configured)[^"]*)"', text):
            if "target.database_url" not in m.group(1):  # "not sampled: no database": not a section of its own
                stray.append(f"{path.parent.name}: {m.group(1)}")
    assert stray == []
    from rehearsal_lib.checks.wording import not_configured

    line = not_configured("phases.preflight.required_settings", "that each named setting is present")
    assert line.startswith("Not configured: phases.preflight.required_settings. This section would check")
    assert "To enable it, set phases.preflight.required_settings" in line
