"""Hostile or sloppy params files (tests/hostile_params/): each is refused by the real CLI with exit 2,
one clear line, no traceback, nothing of a non-params file echoed, and quickly.

The corpus keeps one small file per case found by the adversarial pass over the CLI: alias bombs,
deep nesting, wrong encodings, duplicate keys, sloppy booleans and timeouts, names and paths that
leave the run folder, empty required values and files that are not params files at all.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from rehearsal_lib.cli import build_parser
from rehearsal_lib.config import (
    MAX_PARAMS_BYTES,
    ConfigError,
    Params,
    RunOptions,
    Strict,
    _takes_bool,
    load_params,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "hostile_params"
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
NOT_PARAMS = "does not look like a Rehearsal params file"
NOT_UTF8 = "not UTF-8 text"
FAKE_HASH = "FAKEHASH"  # every line of the fake shadow file holds it (or its fake salt)
SHADOW_BITS = (FAKE_HASH, "$6$", "Zm9vYmFyYmF6", "daemon", "alice", "19700")

# file -> (words the one error line holds, strings that must never be printed)
CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "billion_laughs.yaml": ("aliases expand to more than", ("lol",)),
    "recursive_alias.yaml": ("an alias refers to a node that contains it", ()),
    "deep_nesting.yaml": ("nested deeper than 64 levels", ("[[[",)),
    "latin1.yaml": (NOT_UTF8, ("Caf", "caf")),
    "utf16_bom.yaml": (NOT_UTF8, ("base_url",)),
    "utf16_le_no_bom.yaml": (NOT_UTF8, ("base_url",)),
    "binary.yaml": (NOT_UTF8, ("ELF",)),
    "duplicate_key.yaml": ("kind: duplicate key (first at line 6)", ()),
    "bool_yes.yaml": ("safety.allow_destructive: Value error, must be true or false", ()),
    "bool_yes_unquoted.yaml": ("safety.allow_destructive: Value error, must be true or false", ()),  # YAML 1.1
    "bool_on_unquoted.yaml": ("safety.allow_destructive: Value error, must be true or false", ()),
    "bool_no_string.yaml": ("target.verify_tls: Value error, must be true or false", ()),
    "cell_timeout_half.yaml": ("run.cell_timeout_s: Input should be a valid integer", ()),
    "cell_timeout_huge.yaml": ("run.cell_timeout_s: Input should be less than or equal to 86400", ()),
    "phase_timeout_inf.yaml": ("run.phase_timeout_s: Input should be a finite number", ()),
    "smoke_timeout_nan.yaml": ("phases.smoke.timeout_s: Input should be a finite number", ()),
    "name_dotdot.yaml": ("name: Value error, must be a slug", ()),
    "name_dot.yaml": ("name: Value error, must be a slug", ()),
    "name_slash.yaml": ("name: Value error, must be a slug", ()),
    "junit_path_absolute.yaml": ("phases.smoke.junit_path: Value error, must be {junit} or a relative path", ()),
    "junit_path_dotdot.yaml": ("phases.smoke.junit_path: Value error, must be {junit} or a relative path", ()),
    "empty_base_url.yaml": ("target.base_url: resolves to an empty value", ()),
    "empty_base_url_literal.yaml": ("target.base_url: Value error, must not be empty", ()),
    "fake_shadow": (NOT_PARAMS, SHADOW_BITS),
    "shadow_as_yaml.yaml": (NOT_PARAMS, SHADOW_BITS),
    "extends_fake_shadow.yaml": ("extends: must be the path of another params file (.yaml or .yml)", SHADOW_BITS),
    "extends_shadow_yaml.yaml": (NOT_PARAMS, SHADOW_BITS),
    "top_level_list.yaml": (NOT_PARAMS, (FAKE_HASH, "list-item")),
    "empty.yaml": (NOT_PARAMS + ": its top level is empty", ()),
    "escape_in_key.yaml": ("\\x1b[2J\\x07: unknown key", ()),
}
# the file names the first line of a shown problem, and a file that is not params shows nothing more
ONE_LINE = {"fake_shadow", "shadow_as_yaml.yaml", "extends_fake_shadow.yaml", "extends_shadow_yaml.yaml",
            "top_level_list.yaml", "latin1.yaml", "utf16_bom.yaml", "utf16_le_no_bom.yaml", "binary.yaml",
            "billion_laughs.yaml", "deep_nesting.yaml", "recursive_alias.yaml"}
CPU_BUDGET_S = 2.0


def _cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the real CLI; return the process and the CPU seconds it used (load on the box does not count)."""
    env = {k: v for k, v in os.environ.items() if k != "REHEARSAL_HOSTILE_UNSET"}
    env["REHEARSAL_PROJECT_DIR"] = str(ROOT)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "rehearsal_lib.cli", *args], capture_output=True, cwd=CORPUS,
                          env=env, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return proc, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_the_corpus_is_complete():
    on_disk = {p.name for p in CORPUS.iterdir() if not p.name.startswith(".")}
    assert on_disk == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_params_file_is_refused_cleanly(name: str):
    words, never = CASES[name]
    proc, cpu_s = _cli("validate", str(CORPUS / name))
    out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, out
    assert words in out, out
    assert "Traceback" not in out and "Error:" not in out.replace("Value error", ""), out
    for secret in never:
        assert secret not in out, f"echoed {secret!r}: {out}"
    assert not RAW_CONTROL.search(out.replace("\n", "")), repr(out)
    lines = proc.stderr.decode().strip().splitlines()
    assert lines[0].startswith(f"rehearse: {CORPUS / name.replace('extends_shadow_yaml', 'shadow_as_yaml')}"), out
    if name in ONE_LINE:
        assert len(lines) == 1, out
    assert cpu_s < CPU_BUDGET_S, f"{name}: {cpu_s:.2f} s of CPU"


def test_a_path_without_yaml_suffix_is_refused_the_same(tmp_path: Path):
    """`rehearse validate ../../etc/shadow` style: a relative path to a file that is not params."""
    proc, _ = _cli("validate", "./fake_shadow")
    out = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 2 and NOT_PARAMS in out and len(out.strip().splitlines()) == 1
    assert not any(bit in out for bit in SHADOW_BITS), out


def test_parallel_is_capped_like_the_params_file(tmp_path: Path):
    proc, _ = _cli("run", "sandbox", "--parallel", "99999", "--outputs", str(tmp_path / "out"))
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "--parallel: must be a whole number from 1 to 16, not '99999'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    for bad in ("0", "-1", "17", "2.5", "lots"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", "sandbox", "--parallel", bad])
    assert build_parser().parse_args(["run", "sandbox", "--parallel", "16"]).parallel == 16
    assert RunOptions.model_fields["parallel"].metadata[-1].le == 16


# ---- the loader's rules, one by one ------------------------------------------------------------

BASE = "name: ok\ntarget:\n  base_url: http://127.0.0.1:9\n"


def _load(tmp_path: Path, text: str, name: str = "env.yaml") -> Params:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_params(str(path))


def test_anchors_aliases_and_merge_keys_still_work(tmp_path: Path):
    text = BASE + textwrap.dedent("""
        risks:
          - &r {risk: one, impact: high}
          - *r
        phases:
          preflight:
            journey:
              - &s {name: one, path: /a, method: GET, expect_status: 200}
              - {<<: *s, name: two, expect_status: 204}
        """)
    params = _load(tmp_path, text)
    assert [r.risk for r in params.risks] == ["one", "one"]
    assert [(s.name, s.path, s.expect_status) for s in params.phases.preflight.journey] == [
        ("one", "/a", 200), ("two", "/a", 204)]


@pytest.mark.parametrize("text", [
    BASE + "environment: {kind: production, kind: sandbox}\n",  # flow mapping, same line
    BASE + "name: other\n",
    BASE + "risks:\n  - risk: a\n    risk: b\n",
])
def test_duplicate_keys_are_an_error_anywhere(tmp_path: Path, text: str):
    with pytest.raises(ConfigError, match="duplicate key"):
        _load(tmp_path, text)


def test_alias_budget_counts_expanded_nodes(tmp_path: Path):
    """Aliases are cheap in the file and expensive once expanded: the budget counts the expansion."""
    levels = [BASE, "x0: &x0 [" + ", ".join(["a"] * 50) + "]\n"]
    levels += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 50) + "]\n" for i in range(1, 4)]
    with pytest.raises(ConfigError, match="aliases expand to more than"):
        _load(tmp_path, "".join(levels))


def test_nesting_at_the_limit_loads_and_beyond_is_refused(tmp_path: Path):
    deep = BASE + "phases:\n  webhooks:\n    endpoint: /h\n    secret: ${S:-x}\n    payload: " + "{a: " * 58 + "1" + \
        "}" * 58 + "\n"
    assert _load(tmp_path, deep).phases.webhooks is not None
    with pytest.raises(ConfigError, match="nested deeper than 64"):
        _load(tmp_path, deep.replace("{a: " * 58, "{a: " * 70).replace("}" * 58, "}" * 70))


def test_a_utf8_bom_is_fine_and_a_huge_file_is_refused_unread(tmp_path: Path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_params(str(path)).name == "ok"
    path.write_bytes(BASE.encode() + b"#" * MAX_PARAMS_BYTES)
    with pytest.raises(ConfigError, match="too large for a params file"):
        load_params(str(path))


def test_a_misspelt_params_file_still_gets_its_hints(tmp_path: Path):
    """The not-params rule stops at clearly foreign files; typos in a real one keep their did-you-mean."""
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "nmae: ok\ntaget:\n  base_url: http://x\n")
    assert "did you mean 'name'?" in str(err.value)


def _bool_fields() -> list[tuple[type, str]]:
    found, pending, seen = [], [Params], set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if _takes_bool(field.annotation):
                found.append((model, name))
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, Strict):
                        pending.append(inner)
    return found


@pytest.mark.parametrize("value", ["yes", "no", "true", "on", 1, 0])
def test_every_boolean_is_strict(value):
    fields = _bool_fields()
    assert len(fields) > 20  # the safety switches and every enabled/auth/verify flag
    for model, name in fields:
        alias = model.model_fields[name].alias or name
        with pytest.raises(ValidationError) as err:
            model.model_validate({alias: value})
        assert any(e["loc"] == (alias,) and "true or false" in e["msg"] for e in err.value.errors()), (model, name)


def test_timeouts_are_whole_seconds_within_bounds(tmp_path: Path):
    params = _load(tmp_path, BASE + "run: {cell_timeout_s: 1, phase_timeout_s: 30.0}\n")
    assert params.run.cell_timeout_s == 1 and params.run.phase_timeout_s == 30
    for bad in ("0", "0.5", "-1", ".inf", ".nan", "86401"):
        with pytest.raises(ConfigError, match="run.cell_timeout_s"):
            _load(tmp_path, BASE + f"run: {{cell_timeout_s: {bad}}}\n")


@pytest.mark.parametrize("name", ["staging", "sandbox-faulty", "prod.eu_1", "A1"])
def test_good_names_still_load(tmp_path: Path, name: str):
    assert _load(tmp_path, BASE.replace("name: ok", f"name: {name}")).name == name


@pytest.mark.parametrize("name", ["..", ".", "-x", ".hidden", "a/b", "a..b", "", "x" * 65, "ä"])
def test_names_that_are_not_a_slug_are_refused(tmp_path: Path, name: str):
    with pytest.raises(ConfigError, match="name"):
        _load(tmp_path, BASE.replace("name: ok", f"name: {yaml.safe_dump(name).splitlines()[0]}"))


def test_an_empty_reference_is_refused_only_where_a_value_is_required(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("REHEARSAL_HOSTILE_UNSET", raising=False)
    monkeypatch.setenv("REHEARSAL_HOSTILE_EMPTY", "")
    for ref in ("${REHEARSAL_HOSTILE_UNSET:-}", "${REHEARSAL_HOSTILE_EMPTY}", " ${REHEARSAL_HOSTILE_UNSET:-} "):
        with pytest.raises(ConfigError) as err:
            _load(tmp_path, BASE.replace("http://127.0.0.1:9", f"'{ref}'"))
        assert err.value.key == "target.base_url" and err.value.line == 3
    # an optional token may be empty on purpose (no Authorization header); --no-env skips the check
    assert _load(tmp_path, BASE + "  auth_token: ${REHEARSAL_HOSTILE_UNSET:-}\n").target.auth_token
    path = tmp_path / "noenv.yaml"
    path.write_text(BASE.replace("http://127.0.0.1:9", "${REHEARSAL_HOSTILE_UNSET:-}"))
    assert load_params(str(path), check_env_vars=False).name == "ok"
    with pytest.raises(ConfigError, match=r"phases.webhooks.secret: resolves to an empty value"):
        _load(tmp_path, BASE + "phases:\n  webhooks: {endpoint: /h, secret: '${REHEARSAL_HOSTILE_EMPTY}'}\n")


def test_shipped_params_and_examples_still_validate(root: Path, monkeypatch):
    for var in ("STAGING_DB_URL", "STAGING_API_TOKEN", "PROD_DB_URL", "PROD_API_TOKEN"):
        monkeypatch.setenv(var, "x")
    builtin = root / "rehearsal_lib" / "builtin_params"
    for path in sorted([*(root / "params").glob("*.yaml"), *builtin.glob("*.yaml")]):
        assert load_params(str(path)).name, path


# ---- smoke.junit_path: the tool writes or deletes only inside the run folder -------------------

JUNIT_WRITER = ("{python} -c \"import sys; open(sys.argv[1], 'w').write("
                "'<testsuite><testcase classname=\\'c\\' name=\\'t\\'/></testsuite>')\" {junit}")


def _smoke_ctx(tmp_path: Path, junit_path: str):
    from rehearsal_lib.phase import PhaseRun

    params = Params.model_validate({"name": "smoke-paths", "target": {"base_url": "http://127.0.0.1:9"},
                                    "phases": {"smoke": {"command": JUNIT_WRITER, "junit_path": junit_path,
                                                         "timeout_s": 60}}})
    run_dir = tmp_path / "run"
    (run_dir / "smoke").mkdir(parents=True)
    return PhaseRun("smoke", "smoke-paths", str(run_dir), params=params, needs_target=False), run_dir


def test_a_relative_junit_path_is_written_inside_the_run_folder(tmp_path: Path):
    from rehearsal_lib.phases.smoke.checks import check_smoke

    ctx, run_dir = _smoke_ctx(tmp_path, "reports/junit.xml")
    command, cases = check_smoke(ctx)
    assert (command.status, cases.status) == ("pass", "pass"), (command.observed, cases.observed)
    assert (run_dir / "smoke" / "reports" / "junit.xml").is_file()
    assert cases.evidence["junit"] == "smoke/reports/junit.xml"


def test_a_junit_path_leaving_the_run_folder_through_a_symlink_deletes_nothing(tmp_path: Path):
    """The params file passes (a relative path), but smoke/out points elsewhere: nothing there is touched."""
    from rehearsal_lib.phases.smoke.checks import check_smoke

    victim_dir = tmp_path / "elsewhere"
    victim_dir.mkdir()
    victim = victim_dir / "junit.xml"
    victim.write_text("precious")
    ctx, run_dir = _smoke_ctx(tmp_path, "out/junit.xml")
    (run_dir / "smoke" / "out").symlink_to(victim_dir)
    command, cases = check_smoke(ctx)
    assert victim.read_text() == "precious"
    assert (command.status, cases.status) == ("error", "error")
    assert "leaves the run folder" in command.observed and "not run" in command.observed


def test_environment_description_is_in_the_report_header(tmp_path: Path):
    """docs/params.md says environment.description is shown in the report; the header shows it."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from rehearsal_lib.evidence import collect, write_summary_md
    from rehearsal_lib.report import summary_html
    from rehearsal_lib.runrecord import RunRecord, write_run_record

    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell("x")]), str(run / "notebooks" / "08_integrity.ipynb"))
    write_run_record(run, RunRecord.model_validate({"env": "t", "run_id": "r1", "environment_kind": "staging",
                                                    "environment_description": "EU staging <cluster b>",
                                                    "phases": [{"name": "integrity", "outcome": "ok"}]}))
    summary = collect(run)
    assert "<td>Description</td><td>EU staging &lt;cluster b&gt;</td>" in summary_html(summary)
    # Markdown text is escaped like HTML text (summary.md is also the GitHub step summary, rendered as HTML)
    assert "**Description:** EU staging &lt;cluster b&gt;" in write_summary_md(summary).read_text()


def test_docs_yaml_examples_load_with_the_strict_loader_and_validate(root: Path, tmp_path: Path):
    """Every ```yaml example in the docs is a params file, or a block of one, that the strict loader accepts."""
    from rehearsal_lib.config import _merge, _ParamsLoader

    checked = 0
    for doc in ("docs/params.md", "README.md", "docs/sandbox.md", "docs/adding-a-phase.md"):
        for n, block in enumerate(re.findall(r"^```ya?ml\n(.*?)^```", (root / doc).read_text(), re.S | re.M)):
            path = tmp_path / f"{Path(doc).stem}-{n}.yaml"
            path.write_text(block)
            data = yaml.safe_load(block)
            assert isinstance(data, dict), (doc, n)
            wraps = [data, {"phases": data}, {"phases": {"preflight": data}}]
            base = {"name": "docs", "target": {"base_url": "http://127.0.0.1:9"}}
            problems = []
            for wrap in wraps:
                path.write_text(yaml.safe_dump(_merge(base, wrap) if "name" not in wrap else wrap))
                try:
                    load_params(str(path), check_env_vars=False)
                    break
                except ConfigError as exc:
                    problems.append(str(exc))
            else:
                raise AssertionError(f"{doc} example {n}: {min(problems, key=len)}")
            # the block itself, as written, passes the loader's own rules (no duplicate key, no bomb...)
            loader = _ParamsLoader(block)
            loader.get_single_node()
            assert not loader.duplicates, (doc, n, loader.duplicates)
            loader.dispose()
            checked += 1
    assert checked >= 10
