"""The result model: one `Check` per verified item, carried inside the executed notebook.

A check is displayed as a readable HTML badge and, in the same output, as JSON under the
`application/vnd.rehearsal.check+json` mimetype, so the executed notebook alone is the evidence
and every later artefact (results.json, junit.xml, report.html) is derived from it.
"""

from __future__ import annotations

import datetime as dt
import enum
import html
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator

if TYPE_CHECKING:  # nbformat costs ~1.8 s to import: phase kernels never need it
    import nbformat

CHECK_MIME = "application/vnd.rehearsal.check+json"
TARGET_TABLE_CLASS = "rh-target"  # the "which target" table each phase shows first (shown once in the report)


class Status(enum.StrEnum):
    """A check's status. Each member is its string value (`Status.FAIL == "fail"`), so results.json,
    junit.xml, the notebooks' check bundles and pydantic validation from strings are unchanged."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    ERROR = "error"
    SKIP = "skip"
    MANUAL = "manual"


# a status written as its string (a probe's Outcome("pass", ...)): type checkers accept both spellings
StatusName = Status | Literal["pass", "fail", "warn", "error", "skip", "manual"]
FAILING = frozenset({Status.FAIL, Status.ERROR})  # the statuses that fail a check (a gate, a red badge)
WORST_FIRST = (Status.ERROR, Status.FAIL, Status.WARN, Status.MANUAL, Status.SKIP, Status.PASS)
STATUS_RANK = {s: i for i, s in enumerate(WORST_FIRST)}  # sort key: 0 is the worst
SeverityT = Literal["blocker", "major", "minor", "info"]
MAX_EVIDENCE_CHARS = 20_000

STATUS_STYLE = {
    "pass": ("#1a7f37", "#dafbe1", "PASS"),
    "fail": ("#cf222e", "#ffebe9", "FAIL"),
    "error": ("#8250df", "#fbefff", "ERROR"),
    "warn": ("#9a6700", "#fff8c5", "WARN"),
    "skip": ("#57606a", "#f6f8fa", "SKIP"),
    "manual": ("#0969da", "#ddf4ff", "MANUAL"),
}


# C0 controls but tab and newline, DEL, C1 controls, lone surrogates and the two non-characters: none
# is allowed in XML 1.0, and a terminal obeys them (ESC[2J clears the screen)
CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Text with its control characters (all but tab and newline) shown as visible escapes, e.g. `\\x1b`.

    Whatever a target sends ends up in junit.xml, report.html and the operator's terminal: none of
    them may receive a raw NUL, BEL or ANSI escape sequence. CRLF line ends become plain newlines."""
    if not CONTROL_CHARS.search(text):
        return text
    return CONTROL_CHARS.sub(_escape_char, text.replace("\r\n", "\n"))


def printable_tree(value: Any) -> Any:
    """`printable` applied to every string (keys included) of nested dicts and lists."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_tree(v) for v in value]
    return value


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Check(BaseModel):
    """One verified item with what was expected, what was seen and the evidence."""

    id: str = Field(pattern=r"^[a-z0-9_]+(\.[a-zA-Z0-9_\-]+)+$")
    phase: str
    title: str
    status: Status
    severity: SeverityT = "major"
    expected: str = ""
    observed: str = ""
    evidence: Any = None
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    started_at: str = Field(default_factory=utcnow)
    duration_s: float = 0.0
    waiver: dict[str, str] | None = None

    @field_validator("title", "expected", "observed", mode="after")
    @classmethod
    def _printable_text(cls, value: str) -> str:
        """Target text enters the result model here: control characters become visible escapes."""
        return printable(value)

    @field_validator("evidence", "waiver", mode="after")
    @classmethod
    def _printable_evidence(cls, value: Any) -> Any:
        return printable_tree(value)

    def bounded(self) -> Check:
        """A copy whose evidence is at most MAX_EVIDENCE_CHARS of JSON."""
        text = json.dumps(self.evidence, default=str)
        if len(text) <= MAX_EVIDENCE_CHARS:
            return self
        return self.model_copy(update={"evidence": {"truncated": True, "excerpt": text[:MAX_EVIDENCE_CHARS]}})

    def badge_html(self) -> str:
        fg, bg, label = STATUS_STYLE[self.status]
        esc = html.escape
        rows = ""
        for name, value in (("expected", self.expected), ("observed", self.observed)):
            if value:
                rows += f"<div><b>{name}</b>: {esc(value)}</div>"
        if self.metrics:
            rows += "<div><b>metrics</b>: " + esc(", ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items()))
            rows += "</div>"
        if self.waiver:
            rows += f"<div><b>waiver</b>: {esc(json.dumps(self.waiver))}</div>"
        evidence = ""
        if self.evidence not in (None, "", [], {}):
            is_open = " open" if self.status in FAILING else ""
            evidence = f"<details{is_open}><summary>evidence</summary>{evidence_html(self.evidence)}</details>"
        return (
            f"<div class='rehearsal-check' id='{check_anchor(self.id)}' data-check-id='{esc(self.id)}' "
            f"data-status='{self.status}' style='border-left:6px solid {fg};background:{bg};padding:6px 10px;"
            "margin:4px 0;font-family:system-ui,sans-serif;font-size:13px;text-align:left'>"
            f"<span style='background:{fg};color:#fff;border-radius:3px;padding:1px 6px;font-weight:600'>"
            f"{label}</span> <b>{esc(self.title)}</b> <code>{esc(self.id)}</code> "
            f"<span style='color:#57606a'>[{self.severity}, {self.duration_s:.2f} s]</span>{rows}{evidence}</div>"
        )

    def text(self) -> str:
        return f"[{self.status.upper()}] {self.id} — {self.title}: {self.observed or self.expected}"

    def bundle(self) -> dict[str, Any]:
        """The display bundle: custom JSON plus HTML and text fallbacks."""
        checked = self.bounded()
        return {
            CHECK_MIME: checked.model_dump(mode="json"),
            "text/html": checked.badge_html(),
            "text/plain": checked.text(),
        }


def tally(checks: Iterable[Check]) -> dict[Status, int]:
    """How many checks have each status (only the statuses present), in order of first appearance."""
    counts: dict[Status, int] = {}
    for c in checks:
        status = Status(c.status)
        counts[status] = counts.get(status, 0) + 1
    return counts


def format_counts(counts: dict[str, int] | dict[Status, int]) -> str:
    """Status counts as one phrase, e.g. "3 fail, 10 pass" (empty when there are none)."""
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def check_anchor(check_id: str) -> str:
    """The HTML id of a check's badge, for links from summary tables."""
    return "check-" + "".join(ch if ch.isalnum() else "-" for ch in check_id)


PRE = "<pre style='white-space:pre-wrap;max-height:20em;overflow:auto;margin:4px 0'>"
CELL = "style='border:1px solid #d0d7de;padding:2px 6px;text-align:left'"


def evidence_html(evidence: Any) -> str:
    """Evidence for people: a SQL query as code, row samples as a table, the rest as JSON."""
    esc = html.escape
    if not isinstance(evidence, dict):
        return PRE + esc(json.dumps(evidence, indent=2, default=str)) + "</pre>"
    rest = dict(evidence)
    out = ""
    if isinstance(rest.get("query"), str):
        out += "<div><b>query</b></div>" + PRE + esc(rest.pop("query")) + "</pre>"
    columns, sample = rest.get("columns"), rest.get("sample")
    if isinstance(columns, list) and isinstance(sample, list):
        rest.pop("columns"), rest.pop("sample")
        head = "".join(f"<th {CELL}>{esc(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td {CELL}>{esc(str(v))}</td>" for v in row) + "</tr>" for row in sample)
        shown = f"{len(sample)} {'row' if len(sample) == 1 else 'rows'} shown"
        out += (f"<div><b>sample</b> ({shown})</div><table style='border-collapse:collapse;"
                f"margin:4px 0'><tr>{head}</tr>{body}</table>")
    scalars = {k: v for k, v in rest.items() if isinstance(v, str | int | float | bool) or v is None}
    out += "".join(f"<div><b>{esc(str(k))}</b>: {esc(str(v))}</div>" for k, v in scalars.items())
    nested = {k: v for k, v in rest.items() if k not in scalars}
    if nested:
        out += PRE + esc(json.dumps(nested, indent=2, default=str)) + "</pre>"
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def checks_from_notebook(nb: dict) -> list[Check]:
    """Every check recorded in an executed notebook, in execution order (last record of an id wins)."""
    found: dict[str, Check] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if CHECK_MIME in data:
                payload = data[CHECK_MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                check = Check.model_validate(payload)
                found.pop(check.id, None)
                found[check.id] = check
    return list(found.values())


def notebook_error(nb: dict) -> str | None:
    """The error an executed notebook stopped on, if any (papermill marks it or an error output)."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}".strip()
    return None


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """A notebook as nbformat objects (for the report)."""
    import nbformat

    read_notebook_json(path)  # UnreadableFile naming the file, never a traceback
    return nbformat.read(str(path), as_version=4)


class UnreadableFile(ValueError):
    """A run-folder file (run.json, results.json, manifest.json, a notebook) that cannot be read:
    truncated, not JSON, or not the expected shape. The message is one line naming the file."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: unreadable: {problem}")


def read_json_file(path: Path, kind: type = dict) -> Any:
    """The JSON in `path` (a `kind`, dict by default); UnreadableFile naming the file when it is truncated,
    not JSON or not a `kind`. Every reader of run-folder JSON goes through here."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UnreadableFile(path, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise UnreadableFile(path, "not UTF-8 text") from None
    except ValueError as exc:
        raise UnreadableFile(path, f"not valid JSON (truncated or edited?): {exc}") from None
    if not isinstance(data, kind):
        raise UnreadableFile(path, f"not a JSON {'object' if kind is dict else kind.__name__}")
    return data


def read_notebook_json(path: Path) -> dict:
    """A notebook as plain JSON: enough to read checks back, without nbformat's import cost."""
    nb = read_json_file(path)
    if not isinstance(nb.get("cells", []), list):
        raise UnreadableFile(path, "not a notebook (no list of cells)")
    return nb
