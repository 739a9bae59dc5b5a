"""The phase registry: the built-in phases plus those other packages register.

Built-ins live in `rehearsal_lib/phases/<name>/` (each package's `SPEC`); a third-party package
adds a phase through the `rehearsal.phases` entry point group, naming a `PhaseSpec`, as papermill
registers its engines:

    [project.entry-points."rehearsal.phases"]
    cache_warmup = "acme_rehearsal.cache_warmup:SPEC"

The registry decides the run order, the catalogue `rehearse validate` shows, and the `phases:`
section of the params model (config.py builds it from the registry).
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from pathlib import Path

from rehearsal_lib.phases.spec import PhaseSpec

ENTRY_POINT_GROUP = "rehearsal.phases"
BUILTIN = ("preflight", "migrations", "deploy", "webhooks", "jobs", "retention", "load", "faults", "integrity",
           "security", "observability", "backup_recovery", "smoke", "ux", "decision")
LAST = "decision"  # reads every other phase's results: always runs last


class RegistryError(Exception):
    """A registered phase cannot be loaded or clashes with another; the message names the entry point."""


def _builtin(name: str) -> PhaseSpec:
    spec = importlib.import_module(f"rehearsal_lib.phases.{name}").SPEC
    assert isinstance(spec, PhaseSpec) and spec.name == name
    return spec


def _load_plugin(ep: object) -> PhaseSpec:
    """One entry point's PhaseSpec; RegistryError naming the entry point when it is not a usable phase."""
    name, value = getattr(ep, "name", "?"), getattr(ep, "value", "?")
    where = f"entry point {name!r} = {value!r} ({ENTRY_POINT_GROUP})"
    try:
        spec = ep.load()  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is named, not a traceback
        raise RegistryError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(spec, PhaseSpec):
        raise RegistryError(f"{where} is a {type(spec).__name__}, not a rehearsal PhaseSpec")
    if spec.name != name:
        raise RegistryError(f"{where} names phase {spec.name!r}: the entry point's name must be the phase name")
    if spec.params is None or spec.notebook is None:
        raise RegistryError(f"{where}: a registered phase needs params and a notebook")
    dist = getattr(ep, "dist", None)
    if dist is not None:
        object.__setattr__(spec, "package", f"{dist.metadata['Name']} {dist.version}")
    return spec


@functools.cache
def _registry() -> tuple[tuple[PhaseSpec, ...], tuple[str, ...]]:
    specs = [_builtin(n) for n in BUILTIN]
    names = {s.name for s in specs}
    problems: list[str] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            spec = _load_plugin(ep)
        except RegistryError as exc:
            problems.append(str(exc))
            continue
        if spec.name in names:
            problems.append(f"phase {spec.name!r} of {spec.package} is already registered")
            continue
        names.add(spec.name)
        specs.append(spec)
    return tuple(sorted(specs, key=lambda s: (s.name == LAST, s.order, s.name))), tuple(problems)


def registry() -> tuple[PhaseSpec, ...]:
    """Every usable phase in run order (the decision phase last); a broken plugin is left out and named
    by `problems()` (load_params refuses to run while there is one)."""
    return _registry()[0]


def problems() -> tuple[str, ...]:
    """What is wrong with the registered (third-party) phases: each names its entry point."""
    return _registry()[1]


def all_phases() -> tuple[PhaseSpec, ...]:
    return registry()


def get(name: str) -> PhaseSpec:
    """The spec of a registered phase; KeyError for an unknown name."""
    for spec in registry():
        if spec.name == name:
            return spec
    raise KeyError(name)


def known(name: str) -> bool:
    return any(s.name == name for s in registry())


SHIPPED_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"  # package data: the built-in notebooks


def notebooks_dir(root: Path | None = None) -> Path:
    """The project's notebooks/ folder: optional overrides of built-in phase notebooks."""
    from rehearsal_lib.config import project_root

    return (root or project_root()) / "notebooks"


def notebook_for(name: str, root: Path | None = None) -> Path | None:
    """The phase's notebook, or None when the phase has none yet. A built-in phase's notebook is the
    project's `notebooks/<file>` when there is one (an override, e.g. ejected and edited), else the one
    shipped in the package; a plugin names its own by absolute path."""
    spec = get(name)
    if spec.notebook is None:
        return None
    path = Path(spec.notebook)
    if not path.is_absolute():
        own = notebooks_dir(root) / path
        path = own if own.is_file() else SHIPPED_NOTEBOOKS / path
    return path if path.is_file() else None


def shipped_notebook(name: str) -> Path | None:
    """The notebook the package ships for a built-in phase (None for a plugin or a phase without one)."""
    spec = get(name)
    if spec.notebook is None or Path(spec.notebook).is_absolute():
        return None
    path = SHIPPED_NOTEBOOKS / spec.notebook
    return path if path.is_file() else None


def by_name() -> dict[str, PhaseSpec]:
    return {s.name: s for s in registry()}


# declared for type checkers; at run time the module's __getattr__ below computes them
PHASES: tuple[PhaseSpec, ...]
BY_NAME: dict[str, PhaseSpec]


def __getattr__(name: str) -> object:
    """`PHASES` (every phase in run order) and `BY_NAME` (name -> spec), computed from the registry."""
    if name == "PHASES":
        return registry()
    if name == "BY_NAME":
        return by_name()
    raise AttributeError(name)
