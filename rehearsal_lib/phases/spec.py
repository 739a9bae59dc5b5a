"""`PhaseSpec`: what the runner, the params model and the report need to know about one phase.

A phase is a package: its params model (a `PhaseParams` subclass), its checks (functions taking a
`PhaseRun[ItsParams]`), its notebook, and one `PhaseSpec` naming them. Built-in phases live in
`rehearsal_lib/phases/<name>/`; other packages register theirs under the `rehearsal.phases` entry
point group (docs/adding-a-phase.md). This module imports nothing of the rest of the package, so a
phase package can import it while the params model is being built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of a rehearsal.

    name: the key under `phases:` and the prefix of its check ids (`<name>.<family>.<check>`).
    order: where it runs (built-ins 1–13; the decision phase always runs last).
    seed: the section of the hand-filled rehearsal templates this phase automates.
    destructive: it writes to the target (its writing checks declare `writes=True`; production
        refuses them without `--allow-destructive`); under --parallel it runs alone.
    disruptive: it briefly degrades the target (e.g. toggles readiness); it runs alone and its
        restores run at the runner level.
    params: its block's model (a `PhaseParams` subclass); None for a phase not built yet.
    default_params: a params file without the block gets this (e.g. the phase switched off);
        None: the block is absent and the phase does not run.
    notebook: the notebook's file name among the shipped notebooks (`rehearsal_lib/notebooks/`; a project's
        `notebooks/` copy overrides it), or an absolute path
        (a phase package ships its own); None for a phase not built yet.
    """

    name: str
    title: str
    order: float
    seed: str = ""
    destructive: bool = False
    disruptive: bool = False
    params: type | None = None
    default_params: Callable[[], Any] | None = None
    notebook: str | Path | None = None
    package: str = "rehearsal"  # the distribution that provides it (shown by `rehearse validate`)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"phase name {self.name!r} must be a lowercase slug (letters, digits, '_')")
        if self.params is not None:
            from rehearsal_lib.params_base import PhaseParams

            if not (isinstance(self.params, type) and issubclass(self.params, PhaseParams)):
                raise ValueError(f"phase {self.name}: params must be a subclass of rehearsal_lib.api.PhaseParams")

    @property
    def runs_alone(self) -> bool:
        """Under --parallel this phase runs with no other phase beside it: it changes or loads the
        target in ways that would skew or break what runs concurrently."""
        return self.destructive or self.disruptive

    @property
    def number(self) -> str:
        """The phase's number as the report shows it ("Phase 4 · Job Queue & Scheduler")."""
        return f"{self.order:g}"

    @property
    def notebook_name(self) -> str:
        """The executed notebook's file name in a run folder's notebooks/."""
        return Path(self.notebook).name if self.notebook is not None else f"{self.name}.ipynb"

    @property
    def built(self) -> bool:
        return self.params is not None and self.notebook is not None
