"""The ux phase in a real headless Chromium (skipped, with the reason, when none is installed) against pages
served by a small real HTTP server in this module: a healthy page passes every kind of step, a spinner that
never ends fails `spinner`, a resume that loses the answer fails `completes` naming the assertion, a console
error is recorded, and a browser that is not there is `error` with the install hint, never pass.

All journeys run in ONE phase run (one browser start) in a module fixture; each test reads its journey's
checks."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rehearsal_lib import extras
from rehearsal_lib.config import load_params
from rehearsal_lib.phase import PhaseRun
from rehearsal_lib.phases.ux import checks as ux
from rehearsal_lib.phases.ux.browser import BROWSER_NAMES, reading
from rehearsal_lib.phases.ux.params import Journey
from rehearsal_lib.results import Check

TOKEN = "ux-test-t0ken-4f1c"
SECRET = "ux-test-s3cret-9b2e"
RUN_ID = "20260101T000000Z-abc123"
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")

OK_PAGE = """<!doctype html><title>ok</title><link rel="icon" href="data:,">
<p id="spinner" hidden>Loading…</p>
<input id="cand"><input id="pw" type="password"><button id="go">Go</button>
<p id="out"></p><p id="who"></p><span id="timer">00:30</span>
<img src="http://127.0.0.1:{other}/pixel.png" alt="">
<script>
let left = 30;
setInterval(() => { left--; timer.textContent = "00:" + String(left).padStart(2, "0"); }, 300);
if (localStorage.getItem("name")) out.textContent = "Hello " + localStorage.getItem("name");
go.onclick = async () => {
  spinner.hidden = false;
  const r = await fetch("/api/me");
  who.textContent = r.status === 200 ? "me: ok" : "me: " + r.status;
  setTimeout(() => {
    spinner.hidden = true;
    out.textContent = "Hello " + cand.value;
    localStorage.setItem("name", cand.value);
  }, 200);
};
</script>"""
SPINNER_PAGE = """<!doctype html><title>spinner</title><link rel="icon" href="data:,">
<p id="spinner" hidden>Loading…</p><button id="go">Go</button><p id="done" hidden>requested</p>
<script>go.onclick = () => { spinner.hidden = false; done.hidden = false; };</script>"""
RESUME_PAGE = """<!doctype html><title>resume</title><link rel="icon" href="data:,">
<input id="answer"><button id="save">Save</button><p id="saved">No answer saved</p>
<script>save.onclick = () => { saved.textContent = "Saved: " + answer.value; };  // memory only</script>"""
CONSOLE_PAGE = """<!doctype html><title>console</title><link rel="icon" href="data:,">
<p id="x">loading</p>
<script>
console.error("boom: the widget failed to render");
fetch("/missing").then((r) => { x.textContent = "fetched " + r.status; });
</script>"""


class _Other(BaseHTTPRequestHandler):
    """Another origin: records whether the target's credentials reached it."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _Other.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PIXEL)))
        self.end_headers()
        self.wfile.write(PIXEL)

    def log_message(self, *args: object) -> None:
        pass


class _Target(BaseHTTPRequestHandler):
    other_port = 0

    def do_GET(self) -> None:  # noqa: N802
        pages = {"/ok": OK_PAGE.replace("{other}", str(self.other_port)), "/spinner": SPINNER_PAGE,
                 "/resume": RESUME_PAGE, "/console": CONSOLE_PAGE}
        if self.path == "/api/me":
            ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
            self._send(200 if ok else 401, b'{"me": "ok"}' if ok else b'{"error": "unauthorized"}', "application/json")
        elif self.path in pages:
            self._send(200, pages[self.path].encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b'{"error": "not found"}', "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _browser() -> str | None:
    return next((n for n in BROWSER_NAMES if shutil.which(n)), None)


NO_BROWSER = (f"no Chromium on PATH ({', '.join(BROWSER_NAMES)}): apt-get install chromium" if _browser() is None
              else "playwright is not installed: pip install -e '.[ux]'" if extras.missing("ux") else "")
needs_browser = pytest.mark.skipif(bool(NO_BROWSER), reason=NO_BROWSER)

JOURNEYS: list[dict[str, Any]] = [
    {"name": "healthy", "spinner": {"selector": "#spinner", "max_s": 3}, "steps": [
        {"goto": "/ok"},
        {"fill": {"selector": "#cand", "value": "rehearsal-{run_id}"}},
        {"name": "password", "fill": {"selector": "#pw", "value": "${UX_TEST_SECRET}"}},
        {"click": "#go"},
        {"wait_for": "#who"},
        {"assert_text": {"selector": "#who", "text": "me: ok"}},
        {"assert_text": {"selector": "#out", "text": f"Hello rehearsal-{RUN_ID}"}},
        {"assert_changes": {"selector": "#timer", "direction": "down", "within_s": 3}},
        {"reload": True},
        {"name": "resumed", "assert_text": {"selector": "#out", "text": f"Hello rehearsal-{RUN_ID}"}},
        {"assert_selector": "#timer"},
    ]},
    {"name": "stuck_spinner", "spinner": {"selector": "#spinner", "max_s": 0.5}, "steps": [
        {"goto": "/spinner"}, {"click": "#go"}, {"assert_selector": "#done"}]},
    {"name": "lost_answer", "step_timeout_s": 1, "steps": [
        {"goto": "/resume"}, {"fill": {"selector": "#answer", "value": "B"}}, {"click": "#save"},
        {"assert_text": {"selector": "#saved", "text": "Saved: B"}}, {"reload": True},
        {"name": "last_answer", "assert_text": {"selector": "#saved", "text": "Saved: B"}}]},
    {"name": "noisy_console", "steps": [
        {"goto": "/console"}, {"assert_text": {"selector": "#x", "text": "fetched 404"}}]},
    {"name": "secret_in_view", "steps": [
        {"goto": "/ok"}, {"fill": {"selector": "#cand", "value": "${UX_TEST_SECRET}"}}]},
]


def _phase(tmp_path: Path, base_url: str, ux_block: dict[str, Any]) -> PhaseRun[Any]:
    doc = {"name": "uxprobe", "environment": {"kind": "staging"},
           "target": {"base_url": base_url, "auth_token": "${UX_TEST_TOKEN}", "timeout_s": 5},
           "phases": {"ux": ux_block}}
    path = tmp_path / "uxprobe.yaml"
    path.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / RUN_ID
    run_dir.mkdir(exist_ok=True)
    return PhaseRun("ux", str(path), str(run_dir), params=load_params(str(path)))


@pytest.fixture(scope="module")
def journeys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Check], Path, list[dict]]]:
    """Every journey above in one phase run against the module's two servers: (checks by id, run folder,
    what the phase displayed)."""
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    _Target.other_port = other.server_address[1]
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    for httpd in (other, target):
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    mp = pytest.MonkeyPatch()
    mp.setenv("UX_TEST_TOKEN", TOKEN)
    mp.setenv("UX_TEST_SECRET", SECRET)
    tmp = tmp_path_factory.mktemp("ux")
    try:
        ctx = _phase(tmp, f"http://127.0.0.1:{target.server_address[1]}", {"journeys": JOURNEYS})
        shown: list[dict] = []
        ctx.display = shown.append  # type: ignore[method-assign] - keep what the notebook would show
        found = ux.check_journeys(ctx)
        yield {c.id: c for c in found}, tmp / RUN_ID, shown
    finally:
        mp.undo()
        for httpd in (other, target):
            httpd.shutdown()


@pytest.mark.integration
@needs_browser
def test_a_healthy_page_passes_every_step_with_a_screenshot_each(journeys):
    checks, run_dir, shown = journeys
    done = checks["ux.healthy.completes"]
    assert done.status == "pass", done.observed
    assert done.observed.startswith("11 steps in ")
    assert checks["ux.healthy.spinner"].status == "pass", checks["ux.healthy.spinner"].observed
    assert checks["ux.healthy.console_errors"].status == "pass", checks["ux.healthy.console_errors"].evidence
    shots = sorted(p.name for p in (run_dir / "ux" / "healthy").iterdir())
    assert shots[:4] == ["01-goto.png", "02-fill.png", "03-password.png", "04-click.png"] and len(shots) == 11
    assert [s["screenshot"] for s in done.evidence["steps"]][0] == "ux/healthy/01-goto.png"
    assert (run_dir / "ux" / "healthy" / "01-goto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the notebook's and the report's copy: one JPEG of the downscaled screenshots with their captions, a sane size
    head = next(i for i, b in enumerate(shown) if b["text/plain"].startswith("Journey healthy: 11 of 11 steps ok"))
    sheet = shown[head + 1]
    jpeg = base64.b64decode(sheet["image/jpeg"])
    assert jpeg[:3] == b"\xff\xd8\xff" and 20_000 < len(jpeg) < 400_000, len(jpeg)
    assert sheet["text/plain"].splitlines()[0] == "1. goto /ok: ok (ux/healthy/01-goto.png)"
    # the principal's token reached the target's API (the page says "me: ok"), never the other origin
    assert _Other.seen and all(h is None for h in _Other.seen), _Other.seen


@pytest.mark.integration
@needs_browser
def test_a_spinner_that_never_ends_fails_spinner_naming_the_step(journeys):
    checks, _, _ = journeys
    spin = checks["ux.stuck_spinner.spinner"]
    assert spin.status == "fail"
    assert spin.observed == ("#spinner still visible after step 2 (click #go): not hidden within 0.5 s; also after "
                             "1 more step(s)"), spin.observed
    assert checks["ux.stuck_spinner.completes"].status == "pass"  # the steps themselves worked


@pytest.mark.integration
@needs_browser
def test_a_resume_that_loses_the_answer_fails_completes_naming_the_assertion(journeys):
    checks, run_dir, _ = journeys
    done = checks["ux.lost_answer.completes"]
    assert done.status == "fail"
    assert done.observed == ("step 6 of 6 (last_answer: assert_text #saved contains 'Saved: B') failed: expected "
                             "#saved to contain 'Saved: B', found 'No answer saved' (waited 1 s)"), done.observed
    assert (run_dir / "ux" / "lost_answer" / "06-last_answer.png").is_file()  # the failing step's screenshot
    # every step ran (the last one failed), so the console was observed to the end
    assert checks["ux.lost_answer.console_errors"].status == "pass"


@pytest.mark.integration
@needs_browser
def test_console_errors_and_failed_requests_are_recorded(journeys):
    checks, _, _ = journeys
    noisy = checks["ux.noisy_console.console_errors"]
    assert noisy.status == "fail"
    assert "boom: the widget failed to render" in noisy.observed and "1 failed request(s)" in noisy.observed
    texts = [e["text"] for e in noisy.evidence["console_errors"]]
    assert any("boom" in t for t in texts) and any("404" in t for t in texts), texts
    assert [(r["method"], r["url"].rsplit("/", 1)[1], r["status"]) for r in noisy.evidence["failed_requests"]] == [
        ("GET", "missing", 404)]
    assert checks["ux.noisy_console.completes"].status == "pass"


@pytest.mark.integration
@needs_browser
def test_a_secret_is_never_typed_into_a_visible_field_nor_written_anywhere(journeys):
    checks, run_dir, shown = journeys
    refused = checks["ux.secret_in_view.completes"]
    assert refused.status == "fail" and "refused to type a secret" in refused.observed
    everything = json.dumps([c.model_dump(mode="json") for c in checks.values()]) + json.dumps(shown)
    assert SECRET not in everything and TOKEN not in everything
    assert not [p for p in run_dir.rglob("*") if SECRET in p.name or TOKEN in p.name]


def test_a_missing_browser_is_error_with_the_install_hint_never_pass(tmp_path):
    ctx = _phase(tmp_path, "http://127.0.0.1:9", {"browser": str(tmp_path / "no-such-chromium"),
                                                   "journeys": JOURNEYS[1:2]})
    found = ux.check_journeys(ctx)
    assert [c.id for c in found] == ["ux.stuck_spinner.completes", "ux.stuck_spinner.spinner",
                                     "ux.stuck_spinner.console_errors"]
    for check in found:
        assert check.status == "error", check
        assert "is not an executable file" in check.observed and "apt-get install chromium" in check.observed
        assert "phases.ux.browser" in check.observed
    assert not (tmp_path / RUN_ID / "ux").exists()


def test_without_the_ux_extra_the_checks_are_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "ux", ("rehearsal_no_such_module",))
    ctx = _phase(tmp_path, "http://127.0.0.1:9", {"journeys": JOURNEYS[3:4]})
    found = ux.check_journeys(ctx)
    assert {c.status for c in found} == {"error"}
    assert "needs: pip install 'rehearsal[ux]'" in found[0].observed


def test_production_refuses_a_writing_journey_and_runs_a_read_only_one(tmp_path):
    doc = {"name": "prod", "environment": {"kind": "production"},
           "target": {"base_url": "http://127.0.0.1:9"},
           "phases": {"ux": {"browser": str(tmp_path / "none"), "journeys": [
               {"name": "writes", "steps": [{"goto": "/"}]},
               {"name": "reads", "writes": False, "steps": [{"goto": "/"}]}]}}}
    path = tmp_path / "prod.yaml"
    path.write_text(yaml.safe_dump(doc))
    found = ux.check_journeys(PhaseRun("ux", str(path), params=load_params(str(path))))
    status = {c.id: c.status for c in found}
    assert status["ux.writes.completes"] == "skip" and status["ux.writes.console_errors"] == "skip"
    assert status["ux.reads.completes"] == "error"  # it tried: no browser here (the path above)


def test_steps_take_exactly_one_action_and_clocks_read_as_seconds():
    with pytest.raises(ValidationError, match="exactly one of"):
        Journey.model_validate({"name": "j", "steps": [{"goto": "/", "click": "#a"}]})
    with pytest.raises(ValidationError, match="exactly one of"):
        Journey.model_validate({"name": "j", "steps": [{"name": "nothing"}]})
    with pytest.raises(ValidationError, match="contradicts"):
        Journey.model_validate({"name": "j", "auth": False, "as": "admin", "steps": [{"reload": True}]})
    assert (reading("time left 29:58"), reading("1:00:05"), reading("7 s"), reading("none")) == (1798, 3605, 7.0, None)
