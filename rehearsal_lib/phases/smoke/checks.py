"""Smoke tests: run the team's own smoke command, keep its JUnit XML in the run folder, show its cases."""

from __future__ import annotations

import html
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rehearsal_lib.checks.wording import not_configured
from rehearsal_lib.phase import Outcome, PhaseRun, display_bundle
from rehearsal_lib.phases.smoke.params import SmokeParams, junit_path_is_safe
from rehearsal_lib.probes import command
from rehearsal_lib.results import Check, StatusName

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # rehearsal_lib/ (this file is phases/smoke/checks.py)


def parse_junit(path: Path) -> list[dict[str, Any]]:
    """Test cases of a JUnit XML file: name, classname, time, status (passed/failed/error/skipped), message."""
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        status, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                status = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or el.text or "")[:300]
                break
        cases.append({"name": tc.get("name", ""), "classname": tc.get("classname", ""),
                      "time_s": float(tc.get("time") or 0), "status": status, "message": message})
    return cases


def _show_cases(cases: list[dict[str, Any]]) -> None:
    left = "style='text-align:left'"
    rows = "".join(f"<tr><td {left}>{html.escape(c['status'])}</td><td {left}><code>{html.escape(c['classname'])}."
                   f"{html.escape(c['name'])}</code></td><td>{c['time_s']:.3f}</td><td {left}>"
                   f"{html.escape(c['message'])}</td></tr>" for c in cases)
    display_bundle({"text/html": f"<p><b>Smoke test cases</b> ({len(cases)})</p><table><tr><th {left}>status</th>"
                           f"<th {left}>test case</th><th>s</th><th {left}>message</th></tr>{rows}</table>",
              "text/plain": "\n".join(f"{c['status']}: {c['classname']}.{c['name']}" for c in cases)})


def junit_file(setting: str, out_dir: Path) -> Path | None:
    """Where the command's JUnit XML is read, and a stale one deleted: `{junit}` is `out_dir/junit.xml`,
    another value a path relative to `out_dir`. None when it would lead outside `out_dir` (absolute,
    '..', a placeholder, or a symlink pointing out)."""
    if setting in ("", "{junit}"):
        return out_dir / "junit.xml"
    if not junit_path_is_safe(setting):
        return None
    path = out_dir / setting
    return path if path.resolve().is_relative_to(out_dir.resolve()) else None


def check_smoke(ctx: PhaseRun[SmokeParams]) -> list[Check]:
    """The smoke command exits 0 and its JUnit XML holds at least `min_tests` cases, none failing."""
    cfg = ctx.settings
    if not cfg.command:
        ctx.note(not_configured("phases.smoke.command", "that the smoke command exits 0 and its JUnit XML holds "
                                                        "enough cases, none failing"))
        return []
    out_dir = Path(ctx.run_dir) / "smoke" if ctx.run_dir else Path(tempfile.mkdtemp(prefix="rehearsal-smoke-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    expected = f"JUnit XML with >= {cfg.min_tests} test case(s), none failed or in error"
    junit = junit_file(cfg.junit_path, out_dir)
    if junit is None:
        why = (f"phases.smoke.junit_path {cfg.junit_path!r} leaves the run folder's smoke/ folder: the command was "
               "not run and no file was touched")
        return [ctx.run("smoke.command", "Smoke command", lambda: Outcome("error", why), severity="blocker",
                        expected="the smoke command exits 0"),
                ctx.run("smoke.junit", "Smoke test cases (JUnit)", lambda: Outcome("error", why), severity="blocker",
                        expected=expected)]
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)  # a stale file from an earlier command must not pass for this one's
    places = {"junit": str(junit), "package": str(PACKAGE_DIR)}
    result: dict[str, Any] = {}

    def run() -> Outcome:
        expected = "the smoke command exits 0"
        # placeholders first, then ${VAR} references: a resolved secret is never read as a template
        env = {k: ctx.resolve(command.fill(v, f"env.{k}", **places)) or "" for k, v in cfg.env.items()}
        assert cfg.command  # check_smoke returned above when no command is configured
        res = command.run(cfg.command, cfg.timeout_s, env=env, **places)
        result["res"] = res
        if ctx.run_dir and junit.is_relative_to(Path(ctx.run_dir)):  # the suite may write secrets into it
            ctx.secrets.scrub_file(junit)
        status: StatusName = "pass" if res.ok else ("error" if res.error else "fail")
        return Outcome(status, res.describe(), expected, res.evidence(), {"duration_s": round(res.duration_s, 3)})

    first = ctx.run("smoke.command", "Smoke command", run, severity="blocker")

    def cases() -> Outcome:
        if not junit.is_file():
            return Outcome("fail", f"no JUnit XML at {junit.name} after the smoke command ({first.status})", expected)
        found = parse_junit(junit)
        _show_cases(found)
        bad = [c for c in found if c["status"] in ("failed", "error")]
        counts = {s: sum(c["status"] == s for c in found) for s in ("passed", "failed", "error", "skipped")}
        evidence = {"junit": str(junit.relative_to(ctx.run_dir)) if ctx.run_dir else str(junit),
                    "cases": [{k: v for k, v in c.items() if k != "classname"} for c in found[:50]]}
        if bad:
            return Outcome("fail", f"{len(bad)} of {len(found)} failed: " + ", ".join(c["name"] for c in bad[:5]),
                           expected, evidence, counts)
        if len(found) < cfg.min_tests:
            return Outcome("fail", f"{len(found)} test case(s), fewer than {cfg.min_tests}", expected, evidence,
                           counts)
        return Outcome("pass", f"{counts['passed']} passed, {counts['skipped']} skipped", expected, evidence, counts)

    return [first, ctx.run("smoke.junit", "Smoke test cases (JUnit)", cases, severity="blocker", expected=expected)]
