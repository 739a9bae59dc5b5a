"""Secrets in every form and every phase: the corpus of encodings a run folder may hold them in.

The forms below are produced here with the standard library's own encoders (not with the
scrubber's), from secrets of a hostile alphabet. Unit tests cover each encoding, JSON validity
after scrubbing, which params values are secrets, the display path and the final sweep; the
integration test runs a real rehearsal against the sandbox with a secret echoed by commands of
two phases and written into the smoke suite's JUnit file, then looks for every form in every file.
"""

from __future__ import annotations

import base64
import html
import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from rehearsal_lib.config import load_params
from rehearsal_lib.evidence import verify_manifest
from rehearsal_lib.results import Check
from rehearsal_lib.runrecord import RunRecord, read_run_record, write_run_record
from rehearsal_lib.secrets import MASK, SecretSet

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "p\"a\\s&s<w'o>rd-ä€"
SECRETS = [HOSTILE, "\"<'&>\\ start-with-quote ü", "tok3n Ω😀/+=?#%"]


def forms(secret: str, user: str = "rehearsal") -> dict[str, str]:
    """Every encoding of a secret a tool in a run may plausibly write (standard-library encoders)."""
    j = json.dumps(secret)[1:-1]
    out = {
        "raw": secret,
        "json": j,
        "json_utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "json_of_json": json.dumps(json.dumps(secret))[1:-1],
        "html": html.escape(secret),
        "html_text": html.escape(secret, quote=False),
        "html_of_json": html.escape(j),
        "json_of_html_of_json": json.dumps(html.escape(j))[1:-1],
        "markupsafe": html.escape(secret, quote=False).replace('"', "&#34;").replace("'", "&#39;"),
        "xml_text": xml_escape(secret),
        "xml_attr": quoteattr(secret)[1:-1],
        "xml_ascii": xml_escape(secret).encode("ascii", "xmlcharrefreplace").decode(),
        "repr": repr(secret)[1:-1],
        "url": quote(secret, safe=""),
        "url_path": quote(secret),
        "url_plus": quote_plus(secret),
        "url_lower": quote(secret, safe="").lower(),
        "b64": base64.b64encode(secret.encode()).decode(),
        "b64_urlsafe": base64.urlsafe_b64encode(secret.encode()).decode(),
        "basic_auth": base64.b64encode(f"{user}:{secret}".encode()).decode(),
    }
    et = ET.tostring(ET.Element("case", name=secret, message=secret), encoding="unicode")
    out["elementtree_attr"] = et.split('name="', 1)[1].split('"', 1)[0]
    return out


def leaked(text: str, secret: str) -> list[str]:
    """The forms of the secret present in text (base64: its stable middle; the ends mix in padding)."""
    found = []
    for name, form in forms(secret).items():
        probe = form[4:-4] if name in ("b64", "b64_urlsafe", "basic_auth") else form
        if probe and probe in text:
            found.append(name)
    return found


# -- each encoding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("form", list(forms(HOSTILE)))
def test_every_encoding_of_a_hostile_secret_is_scrubbed(secret: str, form: str):
    encoded = forms(secret)[form]
    text = f"before {encoded} after"
    secrets = SecretSet([secret])
    assert secrets.found_in(text), form
    scrubbed = secrets.scrub(text)
    assert MASK in scrubbed and scrubbed.startswith("before ") and scrubbed.endswith(" after")
    assert leaked(scrubbed, secret) == []


def test_url_userinfo_and_base64_at_any_alignment():
    url = "postgresql+psycopg://app:p%40ss%2Fw0rd%C3%A4@db:5432/x"
    secrets = SecretSet([url])
    for text in (url, "p@ss/w0rdä", "p%40ss%2Fw0rd%C3%A4", "app:p@ss/w0rdä"):
        assert secrets.scrub(f"<{text}>") == f"<{MASK}>", text
    secret = "s3cr3t-Value-42"
    for prefix in ("", "x", "xy", "user:", "Authorization: Bearer "):
        blob = base64.b64encode((prefix + secret + " and more").encode()).decode()
        assert SecretSet([secret]).found_in(blob), prefix
    assert not SecretSet([secret]).found_in(base64.b64encode(b"an unrelated value of some length").decode())


def test_short_values_are_refused_and_named():
    secrets = SecretSet()
    assert secrets.add("abc", "${PIN} (phases.smoke.env.PIN)") is False
    assert secrets.refused == ["${PIN} (phases.smoke.env.PIN)"] and not secrets
    assert secrets.scrub("abc abc") == "abc abc"


def test_scrubbed_notebook_stays_valid_and_holds_no_form(tmp_path: Path):
    secret = HOSTILE
    evidence = {"output_tail": "\n".join(forms(secret).values()), "nested": json.dumps({"v": secret})}
    check = Check(id="smoke.command", phase="smoke", title="t", status="pass", evidence=evidence)
    outputs = [new_output("stream", name="stdout", text=f"token is {secret}\nline 2 {secret}\n"),
               new_output("display_data", data=check.bundle())]
    nb = new_notebook(cells=[new_code_cell(f"print({secret!r})", outputs=outputs)])
    path = tmp_path / "01_smoke.ipynb"
    nbformat.write(nb, str(path))
    before = path.read_text()
    assert leaked(before, secret)  # the notebook file holds JSON-escaped and nested forms
    assert SecretSet([secret]).scrub_file(path)
    after = path.read_text()
    nbformat.validate(nbformat.read(str(path), as_version=4))
    assert leaked(after, secret) == [] and MASK in after


def test_scrubbing_json_never_breaks_an_escape_sequence(tmp_path: Path):
    # "nabc-1234" follows a backslash: a text-level replacement would leave `\***` (invalid JSON)
    path = tmp_path / "results.json"
    # (the newline's "n" is not the secret's); after a literal backslash it is the secret
    path.write_text(json.dumps({"observed": "line\nabc-1234-end", "path": "C:\\nabc-1234", "n": 9876543}))
    secrets = SecretSet(["nabc-1234", "9876543"])
    assert secrets.scrub_file(path)
    data = json.loads(path.read_text())
    assert data == {"observed": "line\nabc-1234-end", "path": "C:\\***", "n": MASK}


# -- which values are secrets --------------------------------------------------------------------------
PARAMS = """
name: corpus
environment: {kind: staging}
target:
  base_url: ${CORPUS_BASE}
  database_url: ${CORPUS_DB_URL}
  auth_token: ${CORPUS_TOKEN:-default-token-value}
phases:
  webhooks:
    endpoint: /hook
    secret: ${CORPUS_WEBHOOK_SECRET}
  security:
    tls: {url: "${CORPUS_BASE}/tls", ca_file: "${CORPUS_CA}"}
  smoke:
    command: "{python} -c pass"
    env:
      SMOKE_BASE_URL: ${CORPUS_BASE}
      SMOKE_SECRET: ${CORPUS_SMOKE_SECRET}
      SMOKE_PIN: ${CORPUS_PIN}
"""


def test_every_reference_of_the_params_file_is_a_secret_unless_public(write_params, monkeypatch):
    env = {"CORPUS_BASE": "https://api.example.test", "CORPUS_DB_URL": "postgresql://ro:db-pass-word@db/x",
           "CORPUS_WEBHOOK_SECRET": "whsec-" + HOSTILE, "CORPUS_CA": "/etc/ssl/corpus-ca.pem",
           "CORPUS_SMOKE_SECRET": HOSTILE, "CORPUS_PIN": "42"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CORPUS_TOKEN", raising=False)
    params = load_params(str(write_params(PARAMS)))
    secrets = SecretSet()
    secrets.add_params(params)
    for value in ("db-pass-word", "whsec-" + HOSTILE, HOSTILE, "default-token-value"):
        assert secrets.found_in(value), value
    for public in ("https://api.example.test", "/etc/ssl/corpus-ca.pem"):  # base URL (also as SMOKE_BASE_URL), CA
        assert not secrets.found_in(public), public
    assert secrets.refused == ["${CORPUS_PIN} (phases.smoke.env.SMOKE_PIN)"]


# -- every phase, every display path --------------------------------------------------------------------
def test_a_phase_scrubs_secrets_it_did_not_resolve_and_every_display(write_params, monkeypatch, capsys):
    """The smoke phase's secret echoed in another phase's evidence, and the JUnit case table
    (shown directly, not as a check) are both scrubbed inside the kernel."""
    from rehearsal_lib.phase import PhaseRun, display_bundle
    from rehearsal_lib.phases.smoke.checks import _show_cases

    monkeypatch.setenv("CORPUS_SMOKE_SECRET", HOSTILE)
    path = write_params("""
        name: corpus
        target: {base_url: "http://127.0.0.1:9"}
        phases:
          smoke: {command: "{python} -c pass", env: {SMOKE_SECRET: "${CORPUS_SMOKE_SECRET}"}}
        """)
    ph = PhaseRun("backup_recovery", str(path), needs_target=False)
    evidence = {"output_tail": "\n".join(forms(HOSTILE).values())}
    rec = ph.record(Check(id="backup_recovery.rollback", phase="backup_recovery", title="t", status="pass",
                          observed=f"echoed {HOSTILE}", evidence=evidence))
    assert leaked(json.dumps(rec.model_dump(), ensure_ascii=False), HOSTILE) == []
    _show_cases([{"name": f"test_{HOSTILE}", "classname": "smoke", "time_s": 0.1, "status": "skipped",
                  "message": html.escape(HOSTILE)}])
    display_bundle({"text/html": f"<p>{html.escape(HOSTILE)}</p>", "text/plain": HOSTILE})
    out = capsys.readouterr().out
    assert leaked(out, HOSTILE) == [] and MASK in out


# -- the final sweep ------------------------------------------------------------------------------------
def test_sweep_failure_is_no_go_naming_the_file_and_the_file_is_redacted(tmp_path: Path):
    from rehearsal_lib.runner import finalize

    secret = HOSTILE
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    (run / "smoke").mkdir()
    ok = Check(id="smoke.command", phase="smoke", title="Smoke command", status="pass", severity="blocker")
    nbformat.write(new_notebook(cells=[new_code_cell("x", outputs=[new_output("display_data", data=ok.bundle())])]),
                   str(run / "notebooks" / "12_smoke.ipynb"))
    write_run_record(run, RunRecord.model_validate({"env": "t", "run_id": "r1",
                                                    "phases": [{"name": "smoke", "outcome": "ok"}]}))
    # a binary artefact (not UTF-8) cannot be scrubbed in place: the sweep must catch it
    (run / "smoke" / "capture.bin").write_bytes(b"\xff\xfe\x00binary " + secret.encode() + b" \xc3")
    summary = finalize(run, SecretSet([secret]))
    assert summary.decision.decision == "NO-GO"
    assert "run.secret_sweep.1: secret found in smoke/capture.bin" in summary.decision.blockers
    results = json.loads((run / "results.json").read_text())
    assert results["decision"] == "NO-GO" and any("secret found in smoke/capture.bin" in b
                                                  for b in results["reasons"]["blockers"])
    for name in ("report.html", "junit.xml", "summary.md"):
        assert "secret found in smoke/capture.bin" in (run / name).read_text(), name
    assert read_run_record(run).secret_found_in == ["smoke/capture.bin"]
    assert b"Redacted by Rehearsal" in (run / "smoke" / "capture.bin").read_bytes()
    for f in run.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    assert verify_manifest(run) == []
    # rebuilding the report later keeps the finding, though the file no longer holds the secret
    assert finalize(run).decision.decision == "NO-GO"


# -- a full run against the real sandbox -----------------------------------------------------------------
SUITE = '''
"""A smoke suite that echoes its secret in every encoding and writes it into its JUnit file."""
import base64, html, json, os, sys, urllib.parse
import xml.etree.ElementTree as ET

secret = os.environ["SMOKE_SECRET"]
print("raw", secret)
print("json", json.dumps(secret), json.dumps(secret, ensure_ascii=False))
print("html", html.escape(secret), "url", urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret))
print("b64", base64.b64encode(secret.encode()).decode(), base64.urlsafe_b64encode(secret.encode()).decode())
print("Authorization: Basic", base64.b64encode(("rehearsal:" + secret).encode()).decode())
suite = ET.Element("testsuite", name="corpus", tests="2")
ET.SubElement(suite, "testcase", classname="corpus", name="test_" + secret, time="0.01")
case = ET.SubElement(suite, "testcase", classname="corpus", name="test_skipped", time="0.01")
ET.SubElement(case, "skipped", message="skipped with " + secret).text = secret
ET.SubElement(suite, "system-out").text = "token=" + secret
root = ET.Element("testsuites")
root.append(suite)
ET.ElementTree(root).write(sys.argv[1], encoding="utf-8", xml_declaration=True)
'''

FULL_RUN = """
name: secrets-corpus
environment: {kind: sandbox}
target:
  base_url: ${REHEARSAL_SANDBOX_URL}
  database_url: ${REHEARSAL_SANDBOX_DB_URL}
  auth_token: ${REHEARSAL_SANDBOX_TOKEN:-sandbox-dev-token}
sandbox: {variant: default}
safety: {allow_destructive: true}
run: {phase_timeout_s: 180, cell_timeout_s: 120}
phases:
  preflight: {enabled: false}
  integrity: {enabled: false}
  backup_recovery:
    # another phase's command prints the smoke suite's secret (the phase never resolves it)
    rollback:
      command: "{python} -c \\"import os, json; v = os.environ['CORPUS_SECRET']; print(v); print(json.dumps(v))\\""
      timeout_s: 30
  smoke:
    command: "{python} SUITE {junit}"
    env: {SMOKE_SECRET: "${CORPUS_SECRET}", SMOKE_BASE_URL: "${REHEARSAL_SANDBOX_URL}", SMOKE_PIN: "${CORPUS_PIN}"}
    min_tests: 2
    timeout_s: 60
"""


@pytest.mark.integration
def test_full_run_hostile_secret_echoed_by_commands_is_in_no_file(tmp_path: Path, monkeypatch):
    from rehearsal_lib.runner import Runner

    suite = tmp_path / "suite.py"
    suite.write_text(SUITE)
    params = tmp_path / "secrets-corpus.yaml"
    params.write_text(textwrap.dedent(FULL_RUN).replace("SUITE", str(suite)))
    monkeypatch.setenv("CORPUS_SECRET", HOSTILE)
    monkeypatch.setenv("CORPUS_PIN", "42")  # too short to mask: a warning, not a secret
    monkeypatch.setenv("REHEARSAL_SANDBOX_HOME", str(tmp_path / "sandbox-home"))  # the run starts and stops it
    lines: list[str] = []
    summary = Runner(str(params), root=ROOT, outputs=tmp_path / "outputs", progress=lines.append).run()
    run = summary.run_dir
    by_id = {c.id: c for c in summary.checks}
    assert {"smoke.command", "backup_recovery.rollback"} <= set(by_id), "\n".join(lines)
    # the commands really ran and echoed it (masked), and scrubbing broke no evidence
    assert by_id["smoke.command"].status == "pass", by_id["smoke.command"]
    assert by_id["smoke.junit"].status == "pass", by_id["smoke.junit"]
    assert by_id["backup_recovery.rollback"].status == "pass", by_id["backup_recovery.rollback"]
    assert MASK in by_id["backup_recovery.rollback"].evidence["output_tail"]
    assert MASK in by_id["smoke.command"].evidence["output_tail"]
    assert summary.decision.decision == "GO", summary.decision.blockers
    meta = json.loads((run / "run.json").read_text())
    assert "secret_found_in" not in meta
    warning = "${CORPUS_PIN} (phases.smoke.env.SMOKE_PIN) is shorter than 4 characters: not masked as a secret"
    assert meta["secret_warnings"] == [warning] and f"  warning: {warning}" in lines
    files = sorted(p for p in run.rglob("*") if p.is_file())
    names = {p.relative_to(run).as_posix() for p in files}
    assert {"results.json", "junit.xml", "report.html", "smoke/junit.xml", "logs/smoke.log",
            "logs/backup_recovery.log", "notebooks/12_smoke.ipynb"} <= names, names
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        assert leaked(text, HOSTILE) == [], path.relative_to(run)
    ET.parse(run / "smoke" / "junit.xml")  # still well-formed after scrubbing
    for nb in (run / "notebooks").glob("*.ipynb"):
        nbformat.validate(nbformat.read(str(nb), as_version=4))
    assert verify_manifest(run) == []


def test_a_secret_as_summary_md_escapes_it_is_masked_too():
    """summary.md's md filter escapes `|`, backticks and backslashes with a backslash: that spelling of a
    secret is one the scrubber and the final sweep know."""
    from rehearsal_lib.secrets import SecretSet
    from rehearsal_lib.views import md

    secret = "pa|ss`wo<rd>&x\\y-1234567890"
    known = SecretSet()
    known.add(secret)
    row = f"| observed | {md(secret)} |"
    assert str(md(secret)) in row and "***" in known.scrub(row) and str(md(secret)) not in known.scrub(row)
