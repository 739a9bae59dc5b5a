"""The phase catalogue: names, order, titles and which phases change the target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Phase:
    number: int
    name: str
    title: str
    destructive: bool = False
    disruptive: bool = False  # briefly degrades the target (e.g. toggles readiness), harmless to data

    @property
    def runs_alone(self) -> bool:
        """Under --parallel this phase runs with no other phase beside it: it changes or loads the
        target in ways that would skew or break what runs concurrently."""
        return self.destructive or self.disruptive

    @property
    def notebook_name(self) -> str:
        return f"{self.number:02d}_{self.name}.ipynb"


PHASES: tuple[Phase, ...] = (
    Phase(1, "preflight", "Preflight"),
    Phase(2, "migrations", "Database Migrations", destructive=True),
    Phase(3, "webhooks", "Webhook Processing"),
    Phase(4, "jobs", "Job Queue & Scheduler"),
    Phase(5, "retention", "Data Retention & Privacy"),
    Phase(6, "load", "Performance & Load", destructive=True),
    Phase(7, "faults", "Failure Injection", destructive=True),
    Phase(8, "integrity", "Data Integrity"),
    Phase(9, "security", "Security Validation"),
    Phase(10, "observability", "Observability", disruptive=True),
    Phase(11, "backup_recovery", "Backup & Recovery", destructive=True),
    Phase(12, "smoke", "Smoke Tests"),
    Phase(13, "decision", "Go / No-Go Decision"),
)
BY_NAME = {p.name: p for p in PHASES}


def phase(name: str) -> Phase:
    return BY_NAME[name]


def notebooks_dir(root: Path | None = None) -> Path:
    from rehearsal_lib.config import project_root

    return (root or project_root()) / "notebooks"


def notebook_for(name: str, root: Path | None = None) -> Path | None:
    """The phase's notebook in notebooks/, or None when the phase has none yet."""
    path = notebooks_dir(root) / BY_NAME[name].notebook_name
    return path if path.is_file() else None
