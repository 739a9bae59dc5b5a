"""Data retention & privacy: retention windows, purge dry run, PII scan, data-subject export.

All SQL is read-only with the statement timeout; only the export request writes (through the API),
so that check declares ``writes=True``. The PII scan reads a bounded sample and shows counts and
masked examples only, never a value in clear.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from rehearsal_lib.checks.wording import days, not_configured, plural
from rehearsal_lib.phase import Outcome, PhaseRun
from rehearsal_lib.phases.retention.params import RetentionParams
from rehearsal_lib.probes import command
from rehearsal_lib.probes import steps as steps_probe
from rehearsal_lib.probes.sql import identifier, query, quote_ident, split_name
from rehearsal_lib.results import Check


def _overdue(ctx: PhaseRun[RetentionParams], win: Any) -> tuple[int, list[list[Any]]]:
    schema, table = split_name(win.table)
    src = f"{quote_ident(schema)}.{quote_ident(table)}"
    col = quote_ident(win.column)
    _, rows = query(ctx.engine, f"SELECT count(*) FROM {src} WHERE {col} < now() - make_interval(secs => :s)",
                    {"s": win.days * 86400})
    n = int(rows[0][0])
    sample: list[list[Any]] = []
    if n and ctx.settings.evidence_rows:
        _, sample = query(ctx.engine, f"SELECT {col} AS {quote_ident(win.column)}, now() - {col} AS age FROM {src} "
                                      f"WHERE {col} < now() - make_interval(secs => :s) ORDER BY {col} LIMIT :n",
                          {"s": win.days * 86400, "n": ctx.settings.evidence_rows})
    return n, sample


def _when(value: Any) -> str:
    """A timestamp to the second ('2026-10-10 23:02:46 UTC'); anything else as text."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def check_windows(ctx: PhaseRun[RetentionParams]) -> list[Check]:
    """No row is older than its table's retention window."""
    wins = ctx.settings.windows
    if not wins:
        ctx.note(not_configured("phases.retention.windows", "that no row is older than its retention window"))
    out = []
    for win in wins:
        expected = f"no row of {win.table} with {win.column} older than {win.days:g} days"

        def probe(win=win, expected=expected) -> Outcome:
            n, sample = _overdue(ctx, win)
            _, oldest = query(ctx.engine, f"SELECT EXTRACT(EPOCH FROM now() - min({quote_ident(win.column)})) / 86400 "
                                          f"FROM {quote_ident(win.table)}")
            age = round(float(oldest[0][0]), 1) if oldest and oldest[0][0] is not None else None
            evidence: dict[str, Any] = {"rows past the window": n, "oldest row": days(age) if age is not None
                                        else "none (table empty)", "window": days(win.days)}
            if sample:
                evidence["columns"] = [win.column, "age"]
                evidence["sample"] = [[_when(r[0]), days(r[1])] for r in sample]
            metrics = {"rows_past_window": n, "oldest_days": age, "window_days": win.days}
            if n:
                return Outcome("fail", f"{plural(n, 'row')} past the {win.days:g}-day window (oldest {days(age)})",
                               expected, evidence, metrics)
            return Outcome("pass", f"none past the window (oldest {days(age)})" if age is not None else "table empty",
                           expected, evidence, metrics)

        out.append(ctx.run(f"retention.window.{win.table}", f"Retention window of {win.table} ({win.days:g} days)",
                           probe, severity=win.severity, expected=expected))
    return out


def check_purge_dry_run(ctx: PhaseRun[RetentionParams]) -> Check | None:
    """The purge's dry run answers with would-delete counts that match the rows past their windows."""
    cfg = ctx.settings.purge_dry_run
    if cfg is None or not (cfg.sql or cfg.command):
        ctx.note(not_configured("phases.retention.purge_dry_run", "that the purge's dry run would delete exactly the "
                                                                  "rows past their windows (sql or command)"))
        return None
    expected = "dry run answers; would-delete counts equal the rows past each window"

    def probe() -> Outcome:
        evidence: dict[str, Any] = {}
        if cfg.sql:
            _, rows = query(ctx.engine, cfg.sql)
            counts = {str(r[0]): int(r[1]) for r in rows}
            evidence["sql"] = cfg.sql.strip()
        else:
            res = command.run(cfg.command or "", cfg.timeout_s)
            evidence["command"] = res.evidence()
            if not res.ok:
                return Outcome("error" if res.error else "fail", res.describe(), expected, evidence)
            counts = {str(k): int(v) for k, v in json.loads(res.output.strip().splitlines()[-1]).items()}
        overdue = {w.table: _overdue(ctx, w)[0] for w in ctx.settings.windows}
        evidence["columns"] = ["table", "would delete", "rows past the window"]
        evidence["sample"] = [[t, counts.get(t, "not named"), overdue.get(t, "no window")]
                              for t in dict.fromkeys([*counts, *overdue])]
        mismatch = {t: (counts.get(t), n) for t, n in overdue.items() if counts.get(t, 0) != n}
        metrics = {f"{t}.would_delete": n for t, n in counts.items()}
        if mismatch:
            text = "; ".join(f"{t}: would delete {c}, {n} past window" for t, (c, n) in mismatch.items())
            return Outcome("fail", text, expected, evidence, metrics)
        total = sum(counts.values())
        return Outcome("pass", f"would delete {plural(total, 'row')}: "
                       + ", ".join(f"{t} {n}" for t, n in counts.items()),
                       expected, evidence, metrics)

    return ctx.run("retention.purge.dry_run", "Purge dry run", probe, severity="major", expected=expected)


# ------------------------------------------------------------------------------------------ PII


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask(kind: str, value: str) -> str:
    """A masked example: e-mail j***@e***.org, phone/card ****0958."""
    if kind == "email" and "@" in value:
        local, _, domain = value.partition("@")
        host, _, tld = domain.rpartition(".")
        return f"{local[:1]}***@{host[:1]}***.{tld}"
    digits = re.sub(r"\D", "", value)
    return f"****{digits[-4:]}" if len(digits) >= 4 else "****"


def find_pii(text: str, patterns: dict[str, re.Pattern[str]]) -> list[tuple[str, str]]:
    """(kind, match) pairs in one value; card numbers only when they pass the Luhn check."""
    found = []
    for kind, rx in patterns.items():
        for m in rx.finditer(text):
            value = m.group(0)
            if kind == "card":
                digits = re.sub(r"\D", "", value)
                if not 13 <= len(digits) <= 19 or not _luhn(digits):
                    continue
            found.append((kind, value))
    return found


def pii_sample(ctx: PhaseRun[RetentionParams], table: str, column: str, n: int) -> tuple[list[str], str]:
    """Up to ``n`` non-null values of ``table.column`` as text, and which rows they are.

    A plain table gives its newest rows (up to n/2, from the heap's last pages by a TID range scan: what the
    release under rehearsal wrote last) and its first rows for the rest, each row once; a table of at most n
    rows is read whole. Anything else (a view) gives its first n rows. The cost stays bounded by n whatever
    the table's size."""
    src, col = quote_ident(table), quote_ident(column)
    _, info = query(ctx.engine, "SELECT c.relkind::text, c.reltuples, c.relpages, pg_relation_size(c.oid) / "
                                "current_setting('block_size')::int FROM pg_class c WHERE c.oid = to_regclass(:t)",
                    {"t": identifier(table).as_string()})
    if not info or info[0][0] != "r" or n < 2:
        _, rows = query(ctx.engine, f"SELECT {col}::text FROM {src} WHERE {col} IS NOT NULL LIMIT :n", {"n": n})
        return [r[0] for r in rows], f"the first {n} rows"
    _, tuples, relpages, pages = info[0]
    per_page = tuples / relpages if tuples and tuples > 0 and relpages else 8.0
    first_page = max(0, int(pages) - int(n / 2 / max(per_page, 1.0)) - 2)
    _, newest = query(ctx.engine, f"SELECT ctid::text, {col}::text FROM {src} WHERE ctid >= '({first_page},0)'::tid "
                                  f"AND {col} IS NOT NULL ORDER BY ctid DESC LIMIT :h", {"h": n // 2})
    _, first = query(ctx.engine, f"SELECT ctid::text, {col}::text FROM {src} WHERE {col} IS NOT NULL LIMIT :r",
                     {"r": n - len(newest)})
    seen: dict[str, Any] = {str(r[0]): r[1] for r in first}
    seen.update((str(r[0]), r[1]) for r in newest)
    return list(seen.values()), f"the newest {len(newest)} and the first {len(first)} rows"


def check_pii(ctx: PhaseRun[RetentionParams]) -> list[Check]:
    """A bounded sample of each configured column holds no e-mail, phone or card number in clear."""
    cfg = ctx.settings.pii_scan
    if not cfg.columns:
        ctx.note(not_configured("phases.retention.pii_scan.columns", "that a sample of each listed column holds no "
                                                                     "e-mail, phone or card number in clear"))
        return []
    patterns = {k: re.compile(v) for k, v in cfg.patterns.items()}
    out = []
    for col in cfg.columns:
        expected = f"no {'/'.join(patterns)} in a sample of up to {cfg.sample_rows} rows"

        def probe(col=col, expected=expected) -> Outcome:
            values, picked = pii_sample(ctx, col.table, col.column, cfg.sample_rows)
            rows = [(v,) for v in values]
            counts = dict.fromkeys(patterns, 0)
            examples: list[str] = []
            hit_rows = 0
            for (value,) in rows:
                hits = find_pii(value or "", patterns)
                hit_rows += bool(hits)
                for kind, match in hits:
                    counts[kind] += 1
                    if len(examples) < 5:
                        examples.append(f"{kind}: {mask(kind, match)}")
            evidence = {"rows_scanned": len(rows), "rows_picked": picked, "rows_with_pii": hit_rows,
                        "matches": ", ".join(f"{n} {k}" for k, n in counts.items()), "masked_examples": examples}
            metrics = {"rows_scanned": len(rows), "rows_with_pii": hit_rows, **counts}
            if hit_rows:
                kinds = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
                return Outcome("fail", f"{hit_rows} of {plural(len(rows), 'row')} hold plaintext PII ({kinds})",
                               expected, evidence, metrics)
            return Outcome("pass", f"none in {plural(len(rows), 'row')}", expected, evidence, metrics)

        out.append(ctx.run(f"retention.pii.{col.table}.{col.column}", f"No plaintext PII in {col.table}.{col.column}",
                           probe, severity=col.severity, expected=expected))
    return out


# ------------------------------------------------------------------------------------------ export


def check_export(ctx: PhaseRun[RetentionParams]) -> list[Check]:
    """A data-subject export requested through the API holds the expected datasets; its checksum recorded."""
    cfg = ctx.settings.export
    if cfg is None:
        ctx.note(not_configured("phases.retention.export", "that a data-subject export requested through the API "
                                                           "holds the expected datasets"))
        return []
    step = cfg.request
    state: dict[str, Any] = {}

    expected = steps_probe.expected_text(step)

    def request() -> Outcome:
        saved: dict[str, Any] = {"run_id": ctx.run_id}
        out, res = steps_probe.run_step(ctx.http, step, saved, principals=ctx.principals,
                                        resolve=lambda text: ctx.resolve(text) or "", secret=ctx.secrets.add,
                                        expected=expected)
        if out.status == "pass" and not isinstance(res.body, dict):
            return Outcome("fail", res.describe() + "; body is not JSON", expected, out.evidence, out.metrics)
        if out.status == "pass":
            state["doc"], state["raw"] = res.body, res.text
        return out

    first = ctx.run("retention.export.request", step.title or "Data-subject export requested", request,
                    severity=step.severity, expected=expected, writes=True)
    expected = f"datasets {', '.join(cfg.expected_datasets) or '(any)'} present; checksum recorded"

    def datasets() -> Outcome:
        if "doc" not in state:
            return Outcome("skip", f"not tried: the export request {first.status}ed", expected)
        doc = state["doc"]
        data = doc.get(cfg.datasets_field)
        if not isinstance(data, dict):
            return Outcome("fail", f"no '{cfg.datasets_field}' object in the export", expected,
                           {"fields": sorted(doc)})
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        sizes = {k: (len(v) if isinstance(v, list | dict) else 1) for k, v in data.items()}
        missing = [d for d in cfg.expected_datasets if d not in data]
        evidence: dict[str, Any] = {"datasets": sizes, "sha256": digest,
                                    "response_sha256": hashlib.sha256(state["raw"].encode()).hexdigest()}
        stated = doc.get(cfg.checksum_field) if cfg.checksum_field else None
        if stated is not None:
            evidence["stated_checksum"] = stated
        metrics = {"datasets": len(data), "records": sum(sizes.values())}
        if missing:
            return Outcome("fail", f"missing dataset(s): {', '.join(missing)}", expected, evidence, metrics)
        if stated is not None and stated != digest:
            return Outcome("fail", f"stated checksum {str(stated)[:16]}… differs from the content's {digest[:16]}…",
                           expected, evidence, metrics)
        return Outcome("pass", f"{plural(len(data), 'dataset')}, {plural(sum(sizes.values()), 'record')}; "
                               f"sha256 {digest[:16]}…",
                       expected, evidence, metrics)

    return [first, ctx.run("retention.export.datasets", "Export holds the expected datasets", datasets,
                           severity="major", expected=expected)]
