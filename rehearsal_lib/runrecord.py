"""run.json as a typed record: what the runner saw of a run (`RunRecord`), read and written in one place.

The runner writes it at the start, on every phase change and every heartbeat, and at the end;
`collect()`, the report, `rehearse list`/`report`/`verify`, `--resume` and each phase's target
identity check read it. The JSON on disk keeps the keys and value shapes it always had: only the
keys a run actually set are written (a crashed run's file lacks `finished_at`, `duration_s`...),
and keys this version does not know (from an older or newer rehearse) are kept as they are.

Reading is tolerant of missing keys (defaults) and strict about shape: a file that is not JSON,
or whose key holds the wrong kind of value (`phases` not a list), is `UnreadableFile`, one line
naming the file and the key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rehearsal_lib.results import UnreadableFile, read_json_file

if TYPE_CHECKING:
    from rehearsal_lib.config import Gate

RUN_META = "run.json"


class _Record(BaseModel):
    """Unknown keys are kept (and written back); values are validated when read and when assigned."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


class PhaseRecord(_Record):
    """One phase of the plan: `pending`/`running` while the run goes on, then its outcome."""

    name: str
    outcome: str = "ok"  # pending, running, ok, error, refused, interrupted, not_run
    reason: str = ""
    duration_s: float = 0.0
    notebook: str | None = None  # the executed notebook's file name in notebooks/


class LockRecord(_Record):
    """The run lock files this run (or attempt) held, and the stale locks it took over."""

    files: list[str] = Field(default_factory=list)
    took_over: list[str] = Field(default_factory=list)


class SandboxRecord(_Record):
    """The built-in sandbox target, when the params file asks for one."""

    variant: str | None = None
    started_by_run: bool = False
    start_s: float | None = None
    replaced: str | None = None  # the note when an orphan sandbox was stopped and replaced


class TargetRecord(_Record):
    base_url: str | None = None  # password masked


class RestoreRecord(_Record):
    """A restore the runner ran for a phase that ended without doing it (restores.py)."""

    phase: str | None = None
    check: str | None = None  # the check that registered it
    description: str | None = None
    ok: bool = False
    observed: str = ""
    at: str | None = None


class AttachmentFile(_Record):
    """One file of an evidence attachment as copied into the run folder (attachments.py)."""

    path: str  # relative to the run folder
    sha256: str
    bytes: int


class AttachmentRecord(_Record):
    """One `evidence.attach` entry as the runner found it at the end of the run (attachments.py)."""

    name: str
    title: str = ""
    kind: str = "path"  # path, glob, command
    source: str = ""
    required: bool = False
    status: str = "attached"  # attached, missing, failed (a command that did not exit 0; its output is kept)
    problem: str | None = None
    files: list[AttachmentFile] = Field(default_factory=list)


class Resumption(_Record):
    """One `rehearse run ENV --resume RUN_DIR` attempt on this folder."""

    at: str | None = None
    by: str | None = None
    after: str | None = None  # how the earlier attempt ended (crash line, interrupted...)
    phases: list[str] = Field(default_factory=list)  # run again
    kept: list[str] = Field(default_factory=list)  # finished before: outcome and notebook kept
    previous_duration_s: float | None = None
    lock: LockRecord | None = None
    duration_s: float | None = None
    target_identity_before: dict[str, Any] | None = None
    note: str | None = None  # e.g. the target is not the one the first attempt ran against


class RunRecord(_Record):
    """Everything the runner records in run.json, in the order a fresh run writes it."""

    env: str | None = None
    run_id: str | None = None
    params_file: str | None = None
    environment_kind: str | None = None
    environment_description: str | None = None
    started_at: str | None = None  # ISO 8601 timestamps, as written
    tool_versions: dict[str, str] = Field(default_factory=dict)
    project_commit: str | None = None  # the rehearsal tool's own commit, not the release's
    release: dict[str, Any] | None = None  # params `release:` as declared, plus observed_version at the start
    executed_by: str | None = None
    gate: dict[str, Any] = Field(default_factory=dict)  # config.Gate as JSON
    phases: list[PhaseRecord] = Field(default_factory=list)
    lock: LockRecord | None = None
    runner_pid: int | None = None
    runner_host: str | None = None
    heartbeat_at: str | None = None
    notes: list[str] = Field(default_factory=list)
    sandbox: SandboxRecord | None = None
    secret_warnings: list[str] = Field(default_factory=list)
    target: TargetRecord | None = None
    target_identity: dict[str, Any] | None = None  # target.read_identity() at the start
    runner_error: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    interrupted: bool = False
    resumed: list[Resumption] = Field(default_factory=list)
    secret_found_in: list[str] = Field(default_factory=list)  # files the final sweep found holding a secret
    restores: list[RestoreRecord] = Field(default_factory=list)  # run by the runner after a killed phase
    signoff_roles: list[str] = Field(default_factory=list)  # params signoff.required_roles at the start
    owners: dict[str, str] = Field(default_factory=dict)  # phase -> params phases.<phase>.owner at the start
    attachments: list[AttachmentRecord] = Field(default_factory=list)  # params evidence.attach, at the end

    @property
    def recorded(self) -> bool:
        """False for the empty record of a folder without run.json (or with `{}` in it)."""
        return bool(self.model_fields_set or self.model_extra)

    def gate_policy(self) -> Gate:
        """The run's gate as a `config.Gate`."""
        from rehearsal_lib.config import Gate

        return Gate.model_validate(self.gate)


def _loc(loc: tuple[int | str, ...]) -> str:
    """('phases', 2, 'duration_s') -> 'phases[2].duration_s'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number",
               float: "a number", type(None): "null"}


def _first_problem(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """The first error of a validation, on one line: 'key phases: Input should be a valid list (found a string)'."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    msg = re.sub(r"a valid dictionary( or instance of \w+)?", "an object", first["msg"])
    line = f"key {_loc((*prefix, *first['loc']))}: {msg}"
    if first["type"] != "missing":
        line += f" (found {_JSON_TYPES.get(type(first['input']), type(first['input']).__name__)})"
    if len(errors) > 1:
        line += f"; and {len(errors) - 1} more problem(s)"
    return " ".join(line.split())


def read_run_record(run_dir: Path, *, required: bool = False) -> RunRecord:
    """run.json of `run_dir` (an empty record when there is none, unless `required`); UnreadableFile
    naming the file when it is truncated, not JSON, or a key holds the wrong kind of value."""
    path = run_dir / RUN_META
    if not required and not path.is_file():
        return RunRecord()
    data = read_json_file(path)
    try:
        record = RunRecord.model_validate(data)
        record.gate_policy()  # collect() decides with it
    except ValidationError as exc:
        prefix = ("gate",) if exc.title == "Gate" else ()
        raise UnreadableFile(path, f"not a run record: {_first_problem(exc, prefix)}") from None
    return record


def _mark_changed(model: BaseModel) -> None:
    """Count a field whose value differs from its default as set (a default list appended to in place),
    so that `exclude_unset` writes it; recursively."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if name not in model.model_fields_set and value != info.get_default(call_default_factory=True):
            model.model_fields_set.add(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                _mark_changed(item)


def record_json(record: RunRecord) -> dict[str, Any]:
    """The record as the JSON object written to run.json: the keys set, plus unknown keys as read."""
    _mark_changed(record)
    return record.model_dump(mode="json", exclude_unset=True)


def write_run_record(run_dir: Path, record: RunRecord) -> None:
    """Write run.json atomically (a reader never sees half a file)."""
    tmp = run_dir / (RUN_META + ".tmp")
    tmp.write_text(json.dumps(record_json(record), indent=2, default=str))
    tmp.replace(run_dir / RUN_META)
