"""The shared helpers in rehearsal_lib/probes/: placeholders, percentile, poll_until (no server)."""

from __future__ import annotations

import time

import pytest

from rehearsal_lib.load.engine import Scenario, _Template
from rehearsal_lib.probes.placeholders import PlaceholderError, expand, expand_text, names, partial, unknown
from rehearsal_lib.probes.poll import poll_until
from rehearsal_lib.probes.stats import percentile

# ------------------------------------------------------------------------------------------ placeholders


def test_expand_fills_strings_in_dicts_and_lists():
    tpl = {"id": "rehearsal-{run_id}", "items": [{"n": "{n}"}, "x{run_id}y"], "k": 3, "none": None}
    out = expand(tpl, {"run_id": "r1", "n": 7}, "json")
    assert out == {"id": "rehearsal-r1", "items": [{"n": 7}, "xr1y"], "k": 3, "none": None}


def test_a_whole_placeholder_keeps_its_type_an_embedded_one_is_text():
    assert expand("{n}", {"n": 5}, "json") == 5
    assert expand("n={n}", {"n": 5}, "json") == "n=5"
    assert expand_text("{n}", {"n": 5}, "path") == "5"


def test_unknown_name_raises_naming_it_where_and_the_known_names():
    with pytest.raises(PlaceholderError) as exc:
        expand({"a": [1, {"b": "x{sesion_id}"}]}, {"run_id": "r", "session_id": "s"}, "json")
    assert str(exc.value) == "unknown placeholder {sesion_id} in json.a[1].b (known here: {run_id}, {session_id})"
    assert exc.value.name == "sesion_id" and exc.value.where == "json.a[1].b"
    with pytest.raises(PlaceholderError, match=r"in path \(known here: none\)"):
        expand_text("/x/{id}", {}, "path")


def test_what_is_not_a_placeholder_stays_text():
    text = '{"a": 1} {} {Name} ${HOME} ${token} {a-b}'
    assert expand(text, {}, "body") == text
    assert list(names(text)) == []


def test_functions_are_called_per_use_and_take_arguments():
    calls = iter(range(10))
    values = {"seq": lambda: next(calls), "randint": lambda a, b: a + b, "worker": 3}
    assert expand("{seq}-{seq}", values, "path") == "0-1"
    assert expand("{randint:2:5}", values, "json") == 7
    with pytest.raises(PlaceholderError, match=r"arguments given to a placeholder that takes none: \{worker:1:2\}"):
        expand("{worker:1:2}", values, "path")


def test_partial_fills_only_known_names_and_unknown_lists_the_rest():
    tpl = {"p": "/s/{run_id}/{session_id}", "q": ["{randint:1:3}"]}
    assert partial(tpl, {"run_id": "r"}) == {"p": "/s/r/{session_id}", "q": ["{randint:1:3}"]}
    assert unknown(tpl, {"run_id", "randint"}) == ["session_id"]


def test_load_template_unknown_placeholder_is_named():
    tpl = _Template(Scenario("a", "/s/{session_id}", headers={"X-Run": "{runid}"}), {}, {"session_id": ["s1"]}, 0)
    with pytest.raises(PlaceholderError, match=r"unknown placeholder \{runid\} in headers.X-Run"):
        tpl.render()


def test_load_template_renders_builtins_and_pools():
    sc = Scenario("a", "/s/{session_id}/{seq}", json={"q": "{randint:4:4}", "w": "{worker}", "u": "{uuid}"})
    tpl = _Template(sc, {}, {"session_id": ["a", "b"]}, 1)
    path1, _, body1 = tpl.render()
    path2, _, _ = tpl.render()
    assert (path1, path2) == ("/s/b/1", "/s/a/2")  # the pool cycles from the worker's offset
    assert b'"q": 4' in body1 and b'"w": 1' in body1


# ------------------------------------------------------------------------------------------ percentile


def test_percentile_nearest_rank_known_values():
    assert percentile([], 95) is None
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([10, 20, 30], 0) == 10 and percentile([10, 20, 30], 100) == 30
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0  # unsorted input; always one of the samples
    assert percentile(list(range(1, 21)), 95) == 19  # ceil(0.95 * 20) = 19th value, no interpolation


# ------------------------------------------------------------------------------------------ poll_until


def test_poll_until_done():
    seen = iter([0, 0, 3])
    r = poll_until(lambda: next(seen), timeout_s=5, interval_s=0.01, done=lambda v: v == 3)
    assert r.value == 3 and r.attempts == 3 and not r.timed_out and r.elapsed_s < 1


def test_poll_until_times_out_with_the_last_value():
    t0 = time.monotonic()
    r = poll_until(lambda: "waiting", timeout_s=0.2, interval_s=0.05, done=lambda v: False)
    assert r.timed_out and r.value == "waiting" and r.attempts >= 3
    assert 0.2 <= r.elapsed_s < 1 and time.monotonic() - t0 >= 0.2


def test_poll_until_counts_time_already_spent():
    r = poll_until(lambda: 0, timeout_s=1, interval_s=0.01, done=lambda v: False, started=time.monotonic() - 5)
    assert r.timed_out and r.attempts == 1 and r.elapsed_s >= 5
