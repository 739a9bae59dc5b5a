"""The faults and deploy params: clear validation errors, and the sandbox blocks (shipped commented out until
the sandbox supports them) validate once uncommented. No servers."""

from __future__ import annotations

import pytest
import yaml

from rehearsal_lib.config import BUILTIN_PARAMS, ConfigError, load_params
from rehearsal_lib.load.engine import Samples
from rehearsal_lib.phases import get
from rehearsal_lib.restores import Restore, pending, record_registered

BASE = {"name": "p", "environment": {"kind": "staging"}, "target": {"base_url": "http://127.0.0.1:9"}}
TRAFFIC = {"scenarios": [{"name": "read", "path": "/x"}]}


def load(tmp_path, phases: dict):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**BASE, "phases": phases}))
    return load_params(str(path))


@pytest.mark.parametrize(("block", "message"), [
    ({"traffic": TRAFFIC, "scenarios": [{"name": "a", "inject": {"type": "reboot"}}]},
     "`type` must be one of command, process, pg_terminate, proxy"),
    ({"scenarios": [{"name": "a", "inject": {"type": "command", "inject": "x", "restore": "y"}}]},
     "no traffic"),
    ({"traffic": TRAFFIC, "scenarios": [{"name": "a", "inject": {"type": "command", "inject": "x", "restore": "y"},
                                         "during": {"must_succeed": ["login"]}}]},
     "login not among the traffic scenarios (read)"),
    ({"traffic": TRAFFIC, "scenarios": [{"name": "a", "inject": {"type": "command", "inject": "x", "restore": "y"},
                                         "nothing_lost": {"scenario": "read", "table": "t"}}]},
     "has no ack_field"),
    ({"traffic": TRAFFIC, "scenarios": [{"name": "a", "inject": {"type": "pg_terminate", "application_name": "x",
                                                                 "database_url": "postgresql://u:pw@h/db"}}]},
     "${VAR} reference"),
    ({"traffic": TRAFFIC, "scenarios": [{"name": "a", "inject": {"type": "proxy", "api_url": "http://h:1",
                                                                 "proxy": "redis", "action": "toxic"}}]},
     "action: toxic needs a `toxic:` block"),
    ({"traffic": TRAFFIC, "scenarios": [{"name": "a", "inject": {"type": "command", "inject": "x", "restore": "y"},
                                         "logged": {"file": "/l", "pattern": "(unclosed"}}]},
     "regex does not compile"),
    ({"traffic": TRAFFIC, "scenarios": [{"name": "a", "inject": {"type": "command", "inject": "x", "restore": "y"},
                                         "nothing_lost": {"scenario": "read", "table": "t; drop"}}]},
     "not a plain SQL identifier"),
])
def test_faults_params_refuse_with_a_clear_reason(tmp_path, block, message):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, {"faults": block})
    assert message in str(exc.value) and "phases.faults" in str(exc.value)


def test_deploy_params_need_traffic_for_a_cutover(tmp_path):
    with pytest.raises(ConfigError, match="set phases.deploy.traffic"):
        load(tmp_path, {"deploy": {"cutover": {"command": "./deploy.sh"}}})
    assert load(tmp_path, {"deploy": {"plan": {"command": "terraform plan -detailed-exitcode"}}}).phases.deploy.plan


def test_both_phases_are_disruptive_and_deploy_runs_after_migrations():
    faults, deploy = get("faults"), get("deploy")
    assert faults.disruptive and deploy.disruptive and faults.built and deploy.built
    assert get("migrations").order < deploy.order < get("webhooks").order


def test_sandbox_blocks_validate(tmp_path, monkeypatch):
    """The faults/deploy blocks of builtin_params/sandbox.yaml validate with the variables the sandbox provides."""
    path = BUILTIN_PARAMS / "sandbox.yaml"
    monkeypatch.setenv("REHEARSAL_SANDBOX_FAULT_PROXY_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REHEARSAL_SANDBOX_WORKER_PID_FILE", "/tmp/none.pid")
    params = load_params(str(path))
    assert [s.name for s in params.phases.faults.scenarios] == ["redis_down", "worker_killed", "db_latency",
                                                                "db_backends_terminated"]
    assert params.phases.deploy.cutover.expected_version == "1.5.0" and params.phases.deploy.abort_drill


def test_samples_keep_acked_ids_aligned_when_merged():
    a, b = Samples(), Samples()
    for s, n in ((a, 3), (b, 2)):
        for i in range(n):
            s.status.append(201)
            s.scenario.append(0)
            s.offset_s.append(i)
            s.latency_ms.append(1)
    a.acked, b.acked = {1: "a1"}, {0: "b0", 1: "b1"}
    merged = Samples()
    merged.extend(a)
    merged.extend(b)
    assert merged.acked == {1: "a1", 3: "b0", 4: "b1"}


def test_old_restore_records_stay_readable(tmp_path):
    """A run folder written before `kind: url` existed (no `url` key) still lists its pending restores."""
    path = tmp_path / "restores" / "observability.jsonl"
    path.parent.mkdir()
    path.write_text('{"event": "registered", "check": "c", "description": "d", "kind": "http", "method": "PUT", '
                    '"path": "/admin/health", "json_body": {"healthy": true}, "auth": true, "command": "", '
                    '"timeout_s": 30.0, "id": "ab12"}\n')
    record_registered(tmp_path, "observability", Restore("u", kind="url", method="POST", url="${X}/proxies/r",
                                                         json_body={"enabled": True}), "c2")
    got = pending(tmp_path, "observability")
    assert [r.kind for _, r in got] == ["http", "url"] and got[1][1].url == "${X}/proxies/r"
