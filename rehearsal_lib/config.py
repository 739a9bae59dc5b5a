"""Load and validate `params/<env>.yaml`.

A params file describes one target environment. Secrets never appear in it: they are written as
`${VAR}` (or `${VAR:-default}`) references and resolved from the environment by the code that
needs them (inside the notebook kernel), never by papermill. Every mistake in a file is reported
as one `ConfigError` naming the file, the key and, where known, the line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from rehearsal_lib import extras
from rehearsal_lib import phases as phase_registry
from rehearsal_lib.attachments import EvidenceBlock
from rehearsal_lib.auth_params import ANONYMOUS, AuthBlock
from rehearsal_lib.params_base import (  # noqa: F401 - re-exported: the params vocabulary lives in params_base
    MAX_PARALLEL,
    MAX_SECONDS,
    REF_RE,
    Cleanup,
    CleanupCall,
    JourneyStep,
    PhaseParams,
    RehearsalMarker,
    Severity,
    Strict,
    ZeroRowCheck,
    _takes_bool,
)
from rehearsal_lib.results import printable

SANDBOX_PROVIDED_VARS = ("REHEARSAL_SANDBOX_URL", "REHEARSAL_SANDBOX_DB_URL", "REHEARSAL_SANDBOX_TOKEN",
                         "REHEARSAL_SANDBOX_WEBHOOK_SECRET",
                         "REHEARSAL_SANDBOX_HTTPS_URL", "REHEARSAL_SANDBOX_CA_FILE", "REHEARSAL_SANDBOX_APP_LOG",
                         "REHEARSAL_SANDBOX_ADMIN_DB_URL", "REHEARSAL_SANDBOX_PG_BIN", "REHEARSAL_SANDBOX_BACKUP_DIR",
                         "REHEARSAL_SANDBOX_MIGRATIONS_DIR", "REHEARSAL_SANDBOX_VARIANT",
                         "REHEARSAL_SANDBOX_FAULT_PROXY_URL", "REHEARSAL_SANDBOX_WORKER_PID_FILE")


class ConfigError(Exception):
    """A params file is missing or wrong; the message names the file, the key and the line.

    `also` holds further problems found in the same file, each already formatted the same way.
    """

    def __init__(self, path: Path | str, message: str, key: str | None = None, line: int | None = None,
                 also: list[str] | None = None):
        self.path, self.key, self.line, self.detail = str(path), key, line, message
        self.also = also or []
        super().__init__(_problem_line(self.path, line, key, message))


def _problem_line(path: str, line: int | None, key: str | None, message: str) -> str:
    """One problem as "file:line: key: message"; control characters shown escaped, a long key cut short."""
    where = path + (f":{line}" if line else "")
    if key and len(key) > MAX_KEY_SHOWN:
        key = key[: MAX_KEY_SHOWN - 1] + "…"
    return printable(f"{where}: {key + ': ' if key else ''}{message}")


MAX_KEY_SHOWN = 80


class Environment(Strict):
    kind: Literal["sandbox", "development", "staging", "production"] = "staging"
    description: str = ""


class Target(Strict):
    base_url: str = Field(description="Base URL of the service; may be a ${VAR} reference.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; a ${VAR} reference (it holds a password).")
    auth_token: str | None = Field(None, description="Bearer token for protected endpoints; a ${VAR} reference "
                                                    "(shorthand for a default bearer principal named `default`).")
    auth: AuthBlock | None = Field(None, description="Named principals and their schemes (docs/params.md).")
    timeout_s: float = Field(5.0, gt=0, le=120)
    verify_tls: bool = True
    follow_redirects: bool = Field(False, description="Follow 3xx answers; off: a 3xx to a probe is an error naming "
                                                      "its Location.")

    @field_validator("database_url", "auth_token")
    @classmethod
    def _must_be_reference(cls, value: str | None) -> str | None:
        if value is not None and not REF_RE.search(value):
            raise ValueError("write secrets as a ${VAR} reference resolved from the environment, not inline")
        return value

    @model_validator(mode="after")
    def _default_principal(self) -> Target:
        names = self.principal_names()
        if self.auth_token and self.auth and "default" in self.auth.principals:
            raise ValueError("auth_token defines the principal `default`; target.auth.principals names one too")
        if self.auth and self.auth.default and self.auth.default not in names | {ANONYMOUS}:
            raise ValueError(f"auth.default: no principal {self.auth.default!r} (principals: {sorted(names)})")
        return self

    def principal_names(self) -> set[str]:
        return set(self.auth.principals if self.auth else ()) | ({"default"} if self.auth_token else set())

    def default_principal(self) -> str:
        """The principal a request runs as when it names none (`anonymous` when there is none)."""
        if self.auth and self.auth.default:
            return self.auth.default
        if self.auth_token:
            return "default"
        names = self.principal_names()
        return next(iter(names)) if len(names) == 1 else ANONYMOUS


class SandboxBlock(Strict):
    variant: Literal["default", "faulty"] = "default"
    release_pending: bool = Field(False, description="Start one release behind: the release's migrations (017-019) "
                                                     "are pending, for the migrations phase to apply.")


class Safety(Strict):
    allow_destructive: bool = Field(False, description="Destructive phases may run (never implied in production).")
    sql_statement_timeout_ms: int = Field(5000, ge=100, le=600_000)


class RunOptions(Strict):
    phase_timeout_s: int = Field(600, ge=1, le=MAX_SECONDS, description="Whole seconds.")
    cell_timeout_s: int = Field(300, ge=1, le=MAX_SECONDS, description="Whole seconds (nbclient reads 0 as none).")
    parallel: int = Field(1, ge=1, le=MAX_PARALLEL)


# ---- database phases (issue #4): migrations, retention, backup_recovery, smoke --------------------


def phases_model() -> type[Strict]:
    """The `phases:` section: one optional block per registered phase that has params (phases/__init__.py)."""
    fields: dict[str, Any] = {}
    for spec in phase_registry.registry():
        if spec.params is None:
            continue
        if spec.default_params is not None:
            fields[spec.name] = (spec.params, Field(default_factory=spec.default_params))
        else:
            fields[spec.name] = (spec.params | None, None)
    return create_model("Phases", __base__=Strict, __doc__="One block per phase (its params model).", **fields)


if typing.TYPE_CHECKING:
    class Phases(Strict):
        """Built at import by `phases_model()` from the registry: one attribute per phase's params model."""

        def __getattr__(self, name: str) -> Any: ...
else:
    Phases = phases_model()


class Waiver(Strict):
    check: str
    owner: str
    reason: str
    expires: dt.date


class Attestation(Strict):
    check: str = Field(pattern=r"^[a-z0-9_.]+$")
    title: str
    by: str | None = None
    at: dt.datetime | None = None
    status: Literal["pass", "fail", "manual"] = "manual"
    note: str = ""
    severity: Severity = "major"


class Signoff(Strict):
    """Who must sign the run off after it (`rehearse signoff`): until every required role approves, the decision
    reads "GO — awaiting sign-off: ..."; one rejection makes it NO-GO."""

    required_roles: list[str] = Field(min_length=1, description="Roles that must approve, e.g. DevOps Lead.")

    @field_validator("required_roles")
    @classmethod
    def _distinct_roles(cls, roles: list[str]) -> list[str]:
        cleaned = [" ".join(r.split()) for r in roles]
        if any(not r for r in cleaned):
            raise ValueError("a role must not be empty")
        if len({r.casefold() for r in cleaned}) != len(cleaned):
            raise ValueError("each role is named once")
        return cleaned


class Risk(Strict):
    """A known risk for the risk register (seed: Observed Weak Points)."""

    risk: str
    impact: Literal["high", "medium", "low"] = "medium"
    likelihood: Literal["high", "medium", "low"] = "medium"
    mitigation: str = ""
    owner: str = ""


class Gate(Strict):
    waivers: list[Waiver] = Field(default_factory=list)
    severity_overrides: dict[str, Severity] = Field(default_factory=dict)
    warn_is_condition: bool = Field(False, description="A `warn` result makes the run CONDITIONAL GO.")


PRINCIPAL_FIELDS = ("principal", "refuse_as")


def _principal_refs(obj: Any, where: str) -> Iterator[tuple[str, str]]:
    """(location, name) of every principal named in a params tree (fields `principal` — the `as:` key — and
    `refuse_as`)."""
    if isinstance(obj, BaseModel):
        for key in type(obj).model_fields:
            value = getattr(obj, key)
            if key in PRINCIPAL_FIELDS and value is not None:
                for name in value if isinstance(value, list) else [value]:
                    yield f"{where}.{'as' if key == 'principal' else key}", name
            elif key != "principals":
                yield from _principal_refs(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            yield from _principal_refs(item, f"{where}[{i}]")
    elif isinstance(obj, dict):
        for k, item in obj.items():
            yield from _principal_refs(item, f"{where}.{k}")


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Release(Strict):
    """What is being released: shown first in the report, recorded in results.json; a declared version must be
    the one the target runs (preflight.release.version)."""

    name: str | None = Field(None, description="The product or service released, e.g. orders-api.")
    version: str | None = Field(None, description="The version under test; checked against the running version.")
    commit: str | None = Field(None, description="The commit of the release (the application's, not Rehearsal's).")
    change_url: str | None = Field(None, pattern=r"^https?://", description="Link to the change (PR, ticket, notes).")


class Params(Strict):
    name: str = Field(description="A slug: it names the folder outputs/<name>/ the runs go to.")
    environment: Environment = Field(default_factory=Environment)
    target: Target
    release: Release | None = Field(None, description="What is being released (name, version, commit, change_url).")
    sandbox: SandboxBlock | None = None
    safety: Safety = Field(default_factory=Safety)
    run: RunOptions = Field(default_factory=RunOptions)
    phases: Phases = Field(default_factory=Phases)
    gate: Gate = Field(default_factory=Gate)
    attestations: list[Attestation] = Field(default_factory=list)
    signoff: Signoff | None = Field(None, description="Roles that sign the run off after it (rehearse signoff).")
    risks: list[Risk] = Field(default_factory=list)
    evidence: EvidenceBlock = Field(default_factory=EvidenceBlock, description="Files, globs and command outputs "
                                    "kept in the run folder (docs/params.md, evidence.attach).")

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not NAME_RE.match(value) or ".." in value:
            raise ValueError("must be a slug of at most 64 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit and without '..' (it names the folder outputs/<name>/)")
        return value

    @model_validator(mode="after")
    def _known_principals(self) -> Params:
        """Every `as:` (and every principal a protected endpoint must refuse) names a principal of target.auth."""
        known = self.target.principal_names() | {ANONYMOUS}
        for where, name in _principal_refs(self, "phases"):
            if name not in known:
                raise ValueError(f"{where}: no principal {name!r} in target.auth (known: {sorted(known)})")
        if self.target.auth:
            for pname, principal in self.target.auth.principals.items():
                for where, name in _principal_refs(principal, f"target.auth.principals.{pname}"):
                    if name not in known:
                        raise ValueError(f"{where}: no principal {name!r} in target.auth (known: {sorted(known)})")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment.kind == "production"

    def enabled_phases(self) -> list[str]:
        """Enabled phases in run order (decision last)."""
        out = []
        for phase in phase_registry.registry():
            block = getattr(self.phases, phase.name, None)
            if block is not None and block.enabled:
                out.append(phase.name)
        return out

    def references(self) -> list[tuple[str, str, bool]]:
        """Every `${VAR}` reference in the file as (variable, key that uses it, has a default)."""
        return [(m.group(1), key, m.group(2) is not None)
                for key, value in string_values(self.model_dump(mode="json")) for m in REF_RE.finditer(value)]


def string_values(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string of a params document with its dotted key (`phases.smoke.env.TOKEN`, `journey[0].path`)."""
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from string_values(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from string_values(v, f"{key}[{i}]")


PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_PARAMS = PACKAGE_DIR / "builtin_params"  # the built-in environments (sandbox, sandbox-faulty), package data


def project_root(start: Path | None = None) -> Path:
    """The operator's project folder (its params/, outputs/ and optional notebooks/): `--project DIR`
    (which sets `$REHEARSAL_PROJECT_DIR`), else `$REHEARSAL_PROJECT_DIR`, else the nearest parent of the
    current directory holding `params/`, else the current directory. Never the installed package."""
    if os.environ.get("REHEARSAL_PROJECT_DIR"):
        return Path(os.environ["REHEARSAL_PROJECT_DIR"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params").is_dir():
            return candidate
    return here


def params_path(env: str, root: Path | None = None) -> Path:
    """`ENV` names `params/ENV.yaml` in the project, else a built-in environment of that name (sandbox,
    sandbox-faulty); a value ending in .yaml/.yml is a path."""
    if env.endswith((".yaml", ".yml")) or os.sep in env:
        return Path(env).resolve()
    own = (root or project_root()) / "params" / f"{env}.yaml"
    builtin = BUILTIN_PARAMS / f"{env}.yaml"
    return builtin if not own.is_file() and builtin.is_file() else own


def builtin_envs() -> list[str]:
    """The environments the package ships (usable from any folder)."""
    return sorted(p.stem for p in BUILTIN_PARAMS.glob("*.yaml"))


def _line_index(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map key paths (tuples of str/int) to 1-based line numbers."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            lines.update(_line_index(value_node, sub))
            lines[sub] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_index(item, (*path, i)))
    return lines


def _known_keys() -> set[str]:
    """Every key name the params models accept (for did-you-mean hints)."""
    names: set[str] = set()
    pending: list[type[BaseModel]] = [Params]
    while pending:
        model = pending.pop()
        for name, field in model.model_fields.items():
            names.add(field.alias or name)
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in pending:
                        pending.append(inner)
    return names


def _explain(err: ErrorDetails, loc: tuple[Any, ...]) -> str:
    """A pydantic error in an operator's words, with a hint where one helps."""
    import difflib

    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] != "extra_forbidden":
        return err["msg"]
    key = str(loc[-1])
    if len(loc) == 2 and loc[0] == "phases" and phase_registry.known(key):
        built = ", ".join(p.name for p in phase_registry.registry() if phase_registry.notebook_for(p.name) is not None)
        return f"phase '{key}' has no notebook yet (phases available now: {built})"
    close = difflib.get_close_matches(key, sorted(_known_keys()), n=1, cutoff=0.75)
    hint = f"; did you mean '{close[0]}'?" if close else " (check its spelling and indentation)"
    return "unknown key" + hint


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


Origin = dict[tuple, tuple[Path, int]]


MAX_PARAMS_BYTES = 1_000_000
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000  # nodes after alias expansion: a real params file has a few hundred
NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: nesting depth and alias expansion are limited while the
    document is composed (before anything is built), and duplicate keys are collected."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth, self.nodes = 0, 0
        self.sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded
        self.duplicates: list[tuple[str, int, int]] = []  # (key, line, line of the first one)

    def _grow(self, count: int, mark: yaml.Mark) -> None:
        self.nodes += count
        if self.nodes > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand to more than {MAX_YAML_NODES:,} nodes (an alias bomb?)", mark)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            assert node is not None  # an alias always resolves to a node (or raises)
            if id(node) not in self.sizes:
                raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", mark)
            self._grow(self.sizes[id(node)], mark)
            return node
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        before = self.nodes
        self._grow(1, mark)
        try:
            node = super().compose_node(parent, index)
            assert node is not None  # a composed event is always a node (the stream's end is handled elsewhere)
        finally:
            self.depth -= 1
        self.sizes[id(node)] = self.nodes - before
        return node

    # types-PyYAML types Composer.compose_mapping_node's `anchor` as dict[Any, Node]; it is the anchor's name
    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:  # type: ignore[override]
        node = super().compose_mapping_node(anchor)  # type: ignore[arg-type]
        first: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            if key in first:
                self.duplicates.append((key_node.value, line, first[key]))
            else:
                first[key] = line
        return node


# Booleans as YAML 1.2 has them: only true/false. PyYAML (YAML 1.1) also reads yes/no/on/off as booleans,
# so `allow_destructive: yes` or `enabled: off` would pass a strict boolean unseen; here they stay text
# and the params model refuses them by name.
_ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))

def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text (a UTF-8 BOM is allowed) without control characters; nothing of the file is echoed."""
    message = "not UTF-8 text: a params file is YAML saved as UTF-8 (is this a binary, Latin-1 or UTF-16 file?)"
    try:
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, message, line=raw[: exc.start].count(b"\n") + 1) from None
    bad = NOT_TEXT.search(text)
    if bad:
        raise ConfigError(path, message, line=text[: bad.start()].count("\n") + 1)
    return text


TOP_LEVEL_HINT = "a params file is a mapping with name:, target:, phases: ..."


def _looks_like_params(path: Path, data: Any) -> dict:
    """Refuse, without echoing any of its content, a file that is clearly not a params file.

    The rule: the top level must be a mapping, and at most half of its keys may be ones a params
    file does not have (a misspelling close to a real key counts as a params key)."""
    import difflib

    if not isinstance(data, dict):
        kind = {"str": "plain text", "list": "a list", "int": "a number", "float": "a number", "bool": "a boolean"}
        what = "empty" if data is None else f"{kind.get(type(data).__name__, 'a single value')}, not a mapping"
        raise ConfigError(path, f"does not look like a Rehearsal params file: its top level is {what} "
                                f"({TOP_LEVEL_HINT})")
    known = sorted({*Params.model_fields, "extends"})
    odd = [k for k in data if not isinstance(k, str)
           or (k not in known and not difflib.get_close_matches(k, known, n=1, cutoff=0.75))]
    if not data or len(odd) * 2 > len(data):
        raise ConfigError(path, f"does not look like a Rehearsal params file: {len(odd)} of its {len(data)} "
                                f"top-level keys are not params keys ({TOP_LEVEL_HINT})")
    return data


def _read_yaml(path: Path) -> tuple[dict, Origin]:
    """Parse one params file; return its mapping and where each key path stands (file, line)."""
    try:
        size = path.stat().st_size
        if size > MAX_PARAMS_BYTES:
            raise ConfigError(path, f"{size:,} bytes is too large for a params file (at most {MAX_PARAMS_BYTES:,})")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, f"cannot read the file: {exc.strerror or type(exc).__name__}") from None
    loader = _ParamsLoader(_decode(path, raw))
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(path, f"invalid YAML: {problem[:200]}", line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise ConfigError(path, f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()
    data = _looks_like_params(path, data)
    if loader.duplicates:
        key, line, first = loader.duplicates[0]
        also = [_problem_line(str(path), ln, k, f"duplicate key (first at line {f})")
                for k, ln, f in loader.duplicates[1:]]
        raise ConfigError(path, f"duplicate key (first at line {first}); a key may appear once in a mapping",
                          key=key, line=line, also=also)
    lines = _line_index(node) if node is not None else {}
    return data, {k: (path, v) for k, v in lines.items()}


def _merge(base: Any, override: Any) -> Any:
    """Deep-merge mappings (override wins); lists and scalars are replaced whole."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return override


def _load_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, Origin]:
    """A file and, through `extends: other.yaml` (relative to it), the files it builds on."""
    data, origin = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data, origin
    line = origin.get(("extends",), (path, None))[1]
    if not isinstance(parent, str) or not parent.endswith((".yaml", ".yml")):
        raise ConfigError(path, "must be the path of another params file (.yaml or .yml)", key="extends", line=line)
    base_path = (path.parent / parent).resolve()
    if base_path in seen or base_path == path:
        raise ConfigError(path, f"extends itself through {parent}", key="extends", line=line)
    if not base_path.is_file():
        raise ConfigError(path, f"no such params file {base_path}", key="extends", line=line)
    base, base_origin = _load_with_extends(base_path, (*seen, path))
    merged = _merge(base, data)
    return merged, {**base_origin, **{k: v for k, v in origin.items() if k != ("extends",)}}


def load_params(env: str, root: Path | None = None, check_env_vars: bool = True) -> Params:
    """Read, parse and validate a params file; raise ConfigError with file, key and line."""
    path = params_path(env, root)
    if not path.is_file():
        named = not env.endswith((".yaml", ".yml")) and os.sep not in env
        available = sorted({*(p.stem for p in path.parent.glob("*.yaml") if path.parent.is_dir()),
                            *(builtin_envs() if named else [])})
        hint = f" (available: {', '.join(available)})" if available else ""
        raise ConfigError(path, f"no such params file{hint}")
    data, origin = _load_with_extends(path)
    broken = phase_registry.problems()
    if broken:  # a phase package is installed but unusable: fix or uninstall it before anything runs
        raise ConfigError(path, f"an installed phase cannot be used: {broken[0]}", key="phases",
                          also=[_problem_line(str(path), None, "phases", f"an installed phase cannot be used: {b}")
                                for b in broken[1:]])

    def where(loc: tuple) -> tuple[Path, int | None]:
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in origin:
                return origin[loc[:cut]]
        return path, None

    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        # a misspelt key also makes the real one "missing": report the unknown key, the cause, first
        errors = sorted(exc.errors(), key=lambda e: (e["type"] != "extra_forbidden", where(tuple(e["loc"]))[1] or 0))
        problems = []
        for err in errors:
            loc = tuple(err["loc"])
            file, line = where(loc)
            problems.append((file, line, _dotted(loc), _explain(err, loc)))
        file, line, key, message = problems[0]
        also = [_problem_line(str(f), ln, k, m) for f, ln, k, m in problems[1:]]
        raise ConfigError(file, message, key=key, line=line, also=also) from None
    if params.sandbox is not None and extras.missing("sandbox"):
        file, line = where(("sandbox",))
        raise ConfigError(file, extras.message("sandbox", "the sandbox"), key="sandbox", line=line)
    security = getattr(params.phases, "security", None)
    if security is not None and security.enabled and security.fuzz is not None and extras.missing("fuzz"):
        file, line = where(("phases", "security", "fuzz"))
        raise ConfigError(file, extras.message("fuzz", "phases.security.fuzz"), key="phases.security.fuzz", line=line)
    for phase in params.enabled_phases():
        if phase_registry.notebook_for(phase, root) is None:
            file, line = where(("phases", phase))
            raise ConfigError(file, f"phase '{phase}' is enabled but has no notebook in notebooks/",
                              key=f"phases.{phase}.enabled", line=line)
    if check_env_vars:
        provided = set(SANDBOX_PROVIDED_VARS) if params.sandbox else set()
        unset = []
        for var, key, has_default in params.references():
            if var not in os.environ and var not in provided and not has_default:
                file, line = where(tuple(_split_key(key)))
                unset.append((file, line, key, f"references ${{{var}}}, which is not set in the environment"))
        if unset:
            file, line, key, message = unset[0]
            raise ConfigError(file, message, key=key, line=line,
                              also=[_problem_line(str(f), ln, k, m) for f, ln, k, m in unset[1:]])
        empty = [(*where(tuple(_split_key(key))), key, message) for key, message in _empty_required(params, provided)]
        if empty:
            file, line, key, message = empty[0]
            raise ConfigError(file, message, key=key, line=line,
                              also=[_problem_line(str(f), ln, k, m) for f, ln, k, m in empty[1:]])
    return params


def _field_at(parts: list[str | int]) -> Any:
    """The model field a key path of the params file names (None inside dicts or for unknown keys)."""
    model: Any = Params
    field = None
    for part in parts:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        model = next((t for arg in (field.annotation, *typing.get_args(field.annotation))
                      for t in (arg, *typing.get_args(arg)) if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return field


def _empty_required(params: Params, provided: set[str]) -> list[tuple[str, str]]:
    """(key, message) for each required value that is nothing but references resolving to an empty string."""
    values = {key: value for key, value in string_values(params.model_dump(mode="json", by_alias=True))
              if REF_RE.search(value)}
    out = []
    for key, value in values.items():
        if any(m.group(1) in provided and m.group(1) not in os.environ for m in REF_RE.finditer(value)):
            continue  # the sandbox fills it in when it starts
        field = _field_at(_split_key(key))
        try:
            resolved = resolve_reference(value)
        except KeyError:
            continue
        if field is not None and field.is_required() and not resolved.strip():
            out.append((key, f"resolves to an empty value ({value}); this key is required"))
    return out


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        parts.append(int(piece[1:-1]) if piece.startswith("[") else piece)
    return parts


def resolve_reference(value: str, environ: dict[str, str] | None = None) -> str:
    """Expand `${VAR}` / `${VAR:-default}` from the environment; a missing variable raises KeyError."""
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        raise KeyError(var)

    return REF_RE.sub(sub, value)
