"""UX checks: each journey of `phases.ux.journeys` runs in headless Chromium (browser.py) and is judged by
`ux.<journey>.completes` (every step did what it says), `ux.<journey>.spinner` (the busy indicator never
outlived its bound; only with `spinner:`) and `ux.<journey>.console_errors` (no console error or uncaught
exception beyond the allowed number). A journey runs once, lazily, in the first of its checks' probes, so
a refused write (production without --allow-destructive) never drives the browser."""

from __future__ import annotations

import html
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rehearsal_lib import extras
from rehearsal_lib.checks.wording import not_configured
from rehearsal_lib.params_base import REF_RE
from rehearsal_lib.phase import Outcome, PhaseRun, describe_exception
from rehearsal_lib.phases.ux.browser import (
    BrowserSession,
    BrowserUnavailable,
    JourneyPlan,
    JourneyResult,
    find_browser,
)
from rehearsal_lib.phases.ux.params import Journey, UxParams
from rehearsal_lib.results import Check


class _Browser:
    """The phase's one browser, started on the first journey that runs; what made it unavailable, if anything."""

    def __init__(self, cfg: UxParams):
        self.cfg = cfg
        self.session: BrowserSession | None = None
        self.unavailable = ""
        if extras.missing("ux"):
            self.unavailable = extras.message("ux", "the ux phase's browser journeys")
            return
        try:
            self.executable = find_browser(cfg.browser)
        except BrowserUnavailable as exc:
            self.unavailable = str(exc)

    def run(self, plan: JourneyPlan) -> JourneyResult | str:
        """The journey's result, or why it could not run (the message every check of it gives as `error`)."""
        if self.unavailable:
            return self.unavailable
        if self.session is None:
            self.session = BrowserSession(self.executable, self.cfg.launch_timeout_s)
        try:
            return self.session.run(plan)
        except BrowserUnavailable as exc:
            self.unavailable = str(exc)
            return self.unavailable
        except Exception as exc:  # noqa: BLE001 - the journey did not run (e.g. no context): its checks' error
            return f"the journey did not run: {describe_exception(exc)}"

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def check_journeys(ctx: PhaseRun[UxParams]) -> list[Check]:
    """Every journey of `phases.ux.journeys`: its checks, with the screenshots shown after each journey."""
    cfg = ctx.settings
    if not cfg.journeys:
        ctx.note(not_configured("phases.ux.journeys", "browser journeys in headless Chromium: each step does what "
                                                      "it says, no spinner outlives its bound, no console errors"))
        return []
    browser = _Browser(cfg)
    checks: list[Check] = []
    try:
        for journey in cfg.journeys:
            checks += _journey(ctx, browser, journey)
    finally:
        browser.close()
    return checks


def _plan(ctx: PhaseRun[UxParams], journey: Journey) -> JourneyPlan:
    """Resolve what the journey needs in the kernel's thread: the principal's headers, the filled values
    (`${VAR}` resolved and masked, `{run_id}` filled), a clean screenshot folder."""
    cfg = ctx.settings
    headers = ctx.auth_headers(journey.principal) if journey.auth and journey.principal != "anonymous" else {}
    values: dict[int, str] = {}
    secret: set[int] = set()
    for i, step in enumerate(journey.steps):
        if step.fill is not None:
            raw = step.fill.value.replace("{run_id}", ctx.run_id)
            if REF_RE.search(raw):
                secret.add(i)
            values[i] = ctx.resolve(raw, secret=i in secret) or ""
    root = Path(ctx.run_dir) if ctx.run_dir else Path(ctx.cached("ux.folder", lambda: tempfile.mkdtemp(
        prefix="rehearsal-ux-")))
    out = root / "ux" / journey.name
    if out.is_dir():
        shutil.rmtree(out)  # a re-run's screenshots must not sit beside an earlier run's
    return JourneyPlan(journey, ctx.base_url, headers, values, secret, out, root if ctx.run_dir else None,
                       (cfg.viewport.width, cfg.viewport.height), cfg.thumbnail_scale, ctx.run_id,
                       ctx.params.target.verify_tls)


def _journey(ctx: PhaseRun[UxParams], browser: _Browser, journey: Journey) -> list[Check]:
    got: dict[str, JourneyResult | str] = {}

    def result() -> JourneyResult | str:
        if "r" not in got and browser.unavailable:  # no login, no folder: nothing will run
            got["r"] = browser.unavailable
        if "r" not in got:
            try:
                plan = _plan(ctx, journey)
            except Exception as exc:  # noqa: BLE001 - e.g. a principal that cannot log in: the journey's error
                got["r"] = f"the journey could not be prepared: {type(exc).__name__}: {exc}"
                return got["r"]
            got["r"] = browser.run(plan)
            if isinstance(got["r"], JourneyResult):
                _show(ctx, journey, got["r"])
        return got["r"]

    prefix = f"ux.{journey.name}"
    title = journey.title or journey.name.replace("_", " ")
    n = len(journey.steps)
    expected = f"all {n} steps of the journey succeed in headless Chromium"

    def completes() -> Outcome:
        r = result()
        if isinstance(r, str):
            return Outcome("error", r, expected)
        if r.error:
            return Outcome("error", r.error, expected, {"steps": [_step_evidence(s) for s in r.steps]})
        evidence = {"steps": [_step_evidence(s) for s in r.steps], "failed_requests": r.failed_requests[:20]}
        metrics = {"steps_ok": sum(s.ok for s in r.steps), "duration_s": r.duration_s}
        if r.launch_s is not None:
            metrics["browser_start_s"] = r.launch_s
        bad = r.failed_step
        if bad is not None:
            return Outcome("fail", f"step {bad.n} of {n} ({bad.label}) failed: {bad.error}", expected, evidence,
                           metrics)
        return Outcome("pass", f"{n} steps in {r.duration_s:.1f} s", expected, evidence, metrics)

    checks = [ctx.run(f"{prefix}.completes", f"Journey completes: {title}", completes, severity=journey.severity,
                      expected=expected, writes=journey.writes)]

    spinner = journey.spinner
    if spinner is not None:
        sp_expected = f"{spinner.selector} visible at most {spinner.max_s:g} s after each step"

        def spinner_check() -> Outcome:
            r = result()
            if isinstance(r, str):
                return Outcome("error", r, sp_expected)
            watched = [s for s in r.steps if s.spinner_s is not None]
            longest = max((s.spinner_s or 0.0 for s in watched), default=0.0)
            evidence = [{"step": s.n, "label": s.label, "visible_s": s.spinner_s} for s in watched]
            metrics = {"spinner_max_s": longest}
            stuck = [s for s in watched if s.spinner_stuck]
            if stuck:
                s = stuck[0]
                return Outcome("fail", f"{spinner.selector} still visible after step {s.n} ({s.label}): not "
                                       f"hidden within {spinner.max_s:g} s"
                                       + (f"; also after {len(stuck) - 1} more step(s)" if len(stuck) > 1 else ""),
                               sp_expected, evidence, metrics)
            if not r.observed_all:
                return Outcome("error", _stopped(r, "the spinner after the steps that did not run"), sp_expected,
                               evidence, metrics)
            return Outcome("pass", f"longest visible {longest:.2f} s over {n} steps (allowed {spinner.max_s:g} s)",
                           sp_expected, evidence, metrics)

        checks.append(ctx.run(f"{prefix}.spinner", f"No spinner hangs: {title}", spinner_check,
                              severity=journey.severity, expected=sp_expected, writes=journey.writes))

    ce_expected = f"at most {journey.max_console_errors} console error(s) or uncaught exception(s)"

    def console_check() -> Outcome:
        r = result()
        if isinstance(r, str):
            return Outcome("error", r, ce_expected)
        ignored = [re.compile(p) for p in journey.ignore_console]
        counted = [e for e in r.console_errors if not any(p.search(e["text"]) for p in ignored)]
        evidence = {"console_errors": counted[:20], "ignored": len(r.console_errors) - len(counted),
                    "failed_requests": r.failed_requests[:20]}
        metrics = {"console_errors": len(counted), "failed_requests": len(r.failed_requests)}
        requests = f"; {len(r.failed_requests)} failed request(s)" if r.failed_requests else ""
        if len(counted) > journey.max_console_errors:
            return Outcome("fail", f"{len(counted)} console error(s), first: {counted[0]['text']}{requests}",
                           ce_expected, evidence, metrics)
        if not r.observed_all:
            return Outcome("error", _stopped(r, "the console during the steps that did not run"), ce_expected,
                           evidence, metrics)
        return Outcome("pass", f"{len(counted)} console error(s){requests}", ce_expected, evidence, metrics)

    checks.append(ctx.run(f"{prefix}.console_errors", f"No console errors: {title}", console_check,
                          severity="minor" if journey.severity in ("minor", "info") else "major",
                          expected=ce_expected, writes=journey.writes))
    return checks


def _stopped(r: JourneyResult, unseen: str) -> str:
    last = r.steps[-1] if r.steps else None
    where = f"at step {last.n} of {r.total_steps} ({last.label})" if last else "before its first step"
    return f"the journey stopped {where}: {unseen} was not observed"


def _step_evidence(s: Any) -> dict[str, Any]:
    out = {"step": s.n, "action": s.label, "ok": s.ok, "s": s.duration_s, "screenshot": s.screenshot}
    if s.error:
        out["error"] = s.error
    if s.spinner_s:
        out["spinner_s"] = s.spinner_s
    return out


def _show(ctx: PhaseRun[UxParams], journey: Journey, r: JourneyResult) -> None:
    """The journey's steps as one image (each step's downscaled screenshot and caption, made by the browser; the
    PNGs stay in the run folder), then its console errors and failed requests."""
    esc = html.escape
    ok = sum(s.ok for s in r.steps)
    head = f"Journey {journey.name}: {ok} of {r.total_steps} steps ok in {r.duration_s:.1f} s"
    ctx.display({"text/html": f"<p><b>{esc(head)}</b></p>", "text/plain": head})
    steps = "\n".join(f"{s.n}. {s.label}: {'ok' if s.ok else s.error} ({s.screenshot})" for s in r.steps)
    if r.sheet:
        ctx.display({"image/jpeg": r.sheet, "text/plain": steps})
    else:
        ctx.display({"text/plain": steps + "\n(the screenshots could not be put together: see the run folder)"})
    console = "".join(f"<li><code>{esc(e['kind'])}</code> {esc(e['text'])}</li>" for e in r.console_errors[:20])
    requests = "".join(f"<li>{esc(str(q.get('status') or q.get('failure')))} {esc(q['method'])} {esc(q['url'])}</li>"
                       for q in r.failed_requests[:20])
    if console or requests:
        text = [f"console {e['kind']}: {e['text']}" for e in r.console_errors[:20]] + [
            f"request {q['method']} {q['url']}: {q.get('status') or q.get('failure')}" for q in r.failed_requests[:20]]
        ctx.display({"text/html": (f"<p>Console errors:</p><ul>{console}</ul>" if console else "")
                     + (f"<p>Failed requests:</p><ul>{requests}</ul>" if requests else ""),
                     "text/plain": "\n".join(text)})
