"""The response assertion engine (rehearsal_lib/probes/assertions.py), request bodies (probes/bodies.py) and
the params that declare them: JSON paths, every expectation kind with its failure message, headers,
saved values, one body per request."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rehearsal_lib.params_base import HeaderExpect, JourneyStep, JsonExpect
from rehearsal_lib.phases.preflight.params import FreezeFlags, VersionCheck, freeze_slug
from rehearsal_lib.probes import assertions as a
from rehearsal_lib.probes.bodies import body_spec, encode, shown_body
from rehearsal_lib.probes.placeholders import PlaceholderError

DOC = {"a": {"b": [{"c": 1}, {"c": 2}]}, "items": [{"id": 3, "at": "2024-01-01"}, {"id": 1, "at": "2024-01-02"}],
       "name": "notes", "n": 2.0, "flag": True, "none": None, "weird key": {"x": "y"}}


def rule(**kw) -> JsonExpect:
    return JsonExpect(**kw)


def test_paths_select_keys_indexes_and_wildcards():
    assert a.select(DOC, "$") == [DOC]
    assert a.select(DOC, "$.a.b[0].c") == [1]
    assert a.select(DOC, "$.a.b[-1].c") == [2]
    assert a.select(DOC, "$.items[*].id") == [3, 1]
    assert a.select(DOC, "$['weird key'].x") == ["y"]
    assert a.select(DOC, "$.a.b[5].c") == [] and a.select(DOC, "$.nope") == []
    for bad in ("a.b", "$..a", "$.a[?(@.x)]", "$.a b"):
        with pytest.raises(a.PathError):
            a.parse_path(bad)


def test_each_expectation_passes_and_fails_naming_path_expected_observed():
    assert a.check_json(DOC, "$.name", rule(equals="notes")) == []
    assert a.check_json(DOC, "$.name", rule(equals="todo")) == ['$.name: expected "todo", observed "notes"']
    assert a.check_json(DOC, "$.n", rule(equals=2)) == []  # 2 == 2.0 as JSON
    assert a.check_json(DOC, "$.flag", rule(equals=1)) == ["$.flag: expected 1, observed true"]
    assert a.check_json(DOC, "$.none", rule(equals=None)) == []
    assert a.check_json(DOC, "$.a.b[0].c", rule(exists=True)) == []
    assert a.check_json(DOC, "$.a.b[9].c", rule(exists=True)) == [
        "$.a.b[9].c: expected to exist, observed nothing at that path"]
    assert a.check_json(DOC, "$.name", rule(exists=False)) == ['$.name: expected absent, observed "notes"']
    assert a.check_json(DOC, "$.n", rule(type="integer")) == []  # 2.0 is an integer in JSON terms
    assert a.check_json(DOC, "$.name", rule(type="number")) == [
        '$.name: expected type number, observed string "notes"']
    assert a.check_json(DOC, "$.name", rule(regex="^no")) == []
    assert a.check_json(DOC, "$.name", rule(regex=r"^\d+$")) == [
        r'$.name: expected to match /^\d+$/, observed "notes"']
    assert a.check_json(DOC, "$.items", rule(length=2)) == []
    assert a.check_json(DOC, "$.items", rule(length=3)) == ["$.items: expected length 3, observed length 2"]
    assert a.check_json(DOC, "$.items[*].id", rule(min_length=3)) == [
        "$.items[*].id: expected matches at least 3, observed matches 2"]
    assert a.check_json(DOC, "$.missing", rule(type="string")) == [
        '$.missing: expected type "string", observed nothing at that path']


def test_wildcards_apply_to_every_item():
    assert a.check_json(DOC, "$.items[*].id", rule(type="integer")) == []
    fails = a.check_json(DOC, "$.items[*].at", rule(regex="-01$"))
    assert fails == ['$.items[*].at (item "2024-01-02"): expected to match /-01$/, observed "2024-01-02"']


def test_ordered_lists_by_key_or_value():
    assert a.check_json(DOC, "$.items", rule(ordered={"by": "at"})) == []
    assert a.check_json(DOC, "$.items[*].id", rule(ordered="desc")) == []
    assert a.check_json(DOC, "$.items", rule(ordered={"by": "id", "order": "asc"})) == [
        "$.items: expected ordered by id asc, observed 3 before 1 at positions 0 and 1"]
    assert a.check_json(DOC, "$.name", rule(ordered="asc")) == [
        '$.name: expected a list ordered asc, observed string "notes"']
    assert a.check_json(DOC, "$.items", rule(ordered={"by": "nope"})) == [
        "$.items: expected every item to have 'nope' (ordered by it), item 0 has not"]


def test_values_shown_are_truncated():
    long = {"x": "y" * 1000}
    (fail,) = a.check_json(long, "$.x", rule(equals="z"))
    assert len(fail) < 200 and fail.endswith("…")


def test_headers_and_latency():
    headers = {"Content-Type": "application/json", "X-Request-ID": "abc"}
    assert a.check_header(headers, "content-type", HeaderExpect(regex="json")) == []
    assert a.check_header(headers, "X-Request-Id", HeaderExpect(equals="xyz")) == [
        'header X-Request-Id: expected "xyz", observed "abc"']
    assert a.check_header(headers, "X-Version", HeaderExpect(exists=True)) == [
        "header X-Version: expected present, observed no such header"]
    step = JourneyStep(name="s", path="/", max_ms=10, expect={"$.name": {"equals": "notes"}},
                       expect_headers={"X-Request-ID": {"regex": "^[a-f]+$"}})
    assert a.check_response(step, DOC, headers, 5.0) == []
    assert a.check_response(step, DOC, headers, 25.0) == ["latency: expected at most 10 ms, observed 25 ms"]
    assert a.check_response(step, None, headers, 5.0, is_json=False) == [
        "body: expected JSON for $.name, observed a body that is not JSON"]


def test_saved_values_from_paths_headers_and_fields():
    assert a.extract("$.a.b[1].c", DOC, {}) == (True, 2, "")
    assert a.extract("$.items[*].id", DOC, {})[2] == "$.items[*].id selects 2 values, not one"
    assert a.extract("header:location", DOC, {"Location": "/x/1"}) == (True, "/x/1", "")
    assert a.extract("name", DOC, {}) == (True, "notes", "")
    assert a.extract("nope", DOC, {})[2] == "response has no 'nope'"


def test_version_read_by_path_header_regex_and_the_default_shape():
    body = {"build": {"version": "2.1.0"}}
    assert a.read_version(VersionCheck(json_path="$.build.version"), body, "", {}) == ("2.1.0", "$.build.version")
    assert a.read_version(VersionCheck(header="X-App-Version"), None, "", {"x-app-version": "3"}) == (
        "3", "header X-App-Version")
    assert a.read_version(VersionCheck(regex=r"v(\d+\.\d+)"), None, "app v4.2 ok", {})[0] == "4.2"
    assert a.read_version(None, {"service": "api", "version": "1"}, "", {}) == ("1", "field version")
    assert a.read_version(VersionCheck(json_path="$.version"), body, "", {})[1] == (
        "$.version selects nothing, not one version value")
    with pytest.raises(ValidationError, match="exactly one of json_path, header or regex"):
        VersionCheck(json_path="$.v", header="X")


def test_freeze_mapping_slugs_and_validation():
    assert freeze_slug("$.maintenance_freeze") == "maintenance_freeze"
    assert freeze_slug("$.flags['jobs'].state") == "flags_jobs_state"
    with pytest.raises(ValidationError, match="same check id"):
        FreezeFlags(endpoint="/f", expect={"$.a_b": 1, "$.a.b": 1})
    with pytest.raises(ValidationError):
        FreezeFlags(endpoint="/f", expect={"a": 1})


def test_one_body_per_request_and_params_errors():
    with pytest.raises(ValidationError, match="one body: json and form/files"):
        JourneyStep(name="s", path="/", json={"a": 1}, form={"b": 2})
    with pytest.raises(ValidationError, match="needs its `content_type`"):
        JourneyStep(name="s", path="/", body="x")
    with pytest.raises(ValidationError, match="exactly one of content or path"):
        JourneyStep(name="s", path="/", files={"f": {}})
    with pytest.raises(ValidationError, match="must start with"):
        JourneyStep(name="s", path="/", expect={"items": {"exists": True}})
    with pytest.raises(ValidationError, match="at least one of"):
        JourneyStep(name="s", path="/", expect={"$.items": {}})
    with pytest.raises(ValidationError, match="not a field name"):
        JourneyStep(name="s", path="/", save={"t": "a b"})
    JourneyStep(name="s", path="/", form={"a": "1"}, files={"f": {"content": "hi"}})  # multipart


def test_bodies_encode_with_placeholders(tmp_path):
    values = {"run_id": "r1"}
    form = JourneyStep(name="s", path="/", form={"username": "u-{run_id}", "n": 2, "ok": True})
    assert encode(body_spec(form), values) == (b"username=u-r1&n=2&ok=true", "application/x-www-form-urlencoded")
    raw = JourneyStep(name="s", path="/", body="<x>{run_id}</x>", content_type="application/xml")
    assert encode(body_spec(raw), values) == (b"<x>r1</x>", "application/xml")
    js = JourneyStep(name="s", path="/", json={"a": "{run_id}"})
    assert json.loads(encode(body_spec(js), values)[0]) == {"a": "r1"}
    f = tmp_path / "up.bin"
    f.write_bytes(b"\x00\x01bytes")
    multi = JourneyStep(name="s", path="/", form={"title": "t {run_id}"},
                        files={"doc": {"content": "hello {run_id}", "filename": "a.txt", "content_type": "text/plain"},
                               "bin": {"path": str(f)}})
    content, ctype = encode(body_spec(multi), values)
    assert ctype.startswith("multipart/form-data; boundary=")
    assert b'name="title"\r\n\r\nt r1' in content and b"hello r1" in content and b"\x00\x01bytes" in content
    assert b'filename="up.bin"' in content
    assert shown_body(body_spec(multi), values) == {"form": {"title": "t r1"}, "files": {"doc": "a.txt",
                                                                                          "bin": str(f)}}
    with pytest.raises(PlaceholderError, match=r"\{typo\} in form.username"):
        encode(body_spec(JourneyStep(name="s", path="/", form={"username": "{typo}"})), values)
    refs = encode(body_spec(JourneyStep(name="s", path="/", form={"password": "${PW}"})), {},
                  resolve=lambda t: t.replace("${PW}", "s3cret"))
    assert refs[0] == b"password=s3cret"


def test_load_scenarios_send_form_multipart_and_raw_bodies():
    from rehearsal_lib.load.engine import Scenario, _Template
    from rehearsal_lib.phases.load.params import LoadScenario

    login = LoadScenario(name="login", method="POST", path="/token", form={"username": "u{seq}", "password": "pw"})
    tpl = _Template(Scenario("login", "/token", "POST", body=body_spec(login)), {}, {}, 0)
    assert tpl.render() == ("/token", {"content-type": "application/x-www-form-urlencoded"},
                            b"username=u1&password=pw")
    static = _Template(Scenario("raw", "/x", "POST", body={"body": "a,b", "content_type": "text/csv"}), {}, {}, 0)
    assert static.static and static.render() == ("/x", {"content-type": "text/csv"}, b"a,b")
    up = _Template(Scenario("up", "/u", "POST", body={"form": {}, "files": {"f": {"content": "n{seq}"}}}), {}, {}, 0)
    (_, h1, b1), (_, h2, b2) = up.render(), up.render()
    assert h1["content-type"].startswith("multipart/form-data; boundary=") and b"n1" in b1 and b"n2" in b2
    assert h1["content-type"] != h2["content-type"]  # a fresh boundary per request
    with pytest.raises(ValidationError, match="one body"):
        LoadScenario(name="x", path="/", json={"a": 1}, body="x", content_type="text/plain")
