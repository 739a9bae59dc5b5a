"""The Status enum: one place for the failing set, the worst-first order and status tallies."""

from __future__ import annotations

import json

from rehearsal_lib.results import FAILING, STATUS_RANK, WORST_FIRST, Check, Status, format_counts, tally


def _check(n: int, status: str) -> Check:
    return Check(id=f"a.c{n}", phase="a", title="t", status=status)


def test_status_values_and_serialisation_are_the_strings_of_every_file_format():
    assert [s.value for s in Status] == ["pass", "fail", "warn", "error", "skip", "manual"]
    check = _check(1, "fail")
    assert check.status is Status.FAIL and check.status == "fail" and f"{check.status}" == "fail"
    assert check.model_dump(mode="json")["status"] == "fail"
    assert json.dumps(check.model_dump()) == json.dumps(check.model_dump(mode="json"))
    assert '"status":"fail"' in check.model_dump_json()
    assert check.text().startswith("[FAIL] a.c1")


def test_failing_set_and_worst_first_order():
    assert FAILING == {"fail", "error"}
    assert WORST_FIRST[0] == "error" and WORST_FIRST[-1] == "pass" and set(WORST_FIRST) == set(Status)
    assert sorted(["pass", "skip", "fail", "warn", "manual", "error"], key=STATUS_RANK.__getitem__) == [
        "error", "fail", "warn", "manual", "skip", "pass"]


def test_tally_counts_each_status_and_formats_as_before():
    checks = [_check(1, "pass"), _check(2, "fail"), _check(3, "pass"), _check(4, "error")]
    checks.append(checks[0].model_copy(update={"status": "warn"}))  # model_copy keeps the plain string
    counts = tally(checks)
    assert counts == {"pass": 2, "fail": 1, "error": 1, "warn": 1}
    assert all(isinstance(s, Status) for s in counts)
    assert json.dumps(counts) == '{"pass": 2, "fail": 1, "error": 1, "warn": 1}'
    assert format_counts(counts) == "1 error, 1 fail, 2 pass, 1 warn"
