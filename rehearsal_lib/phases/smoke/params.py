"""Params of the smoke phase: its block under `phases.smoke` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from pydantic import Field, field_validator

from rehearsal_lib.params_base import (
    MAX_SECONDS,
    PhaseParams,
)


class SmokeParams(PhaseParams):
    enabled: bool = True
    command: str | None = Field(None, description="The team's smoke command ({python} {junit} {package}).")
    junit_path: str = Field("{junit}", description="Where the command writes its JUnit XML: {junit}, or a path "
                                                    "relative to the run folder's smoke/ (never outside it).")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment; values may be ${VAR}.")
    min_tests: int = Field(1, ge=0)
    timeout_s: float = Field(300, gt=0, le=MAX_SECONDS)

    @field_validator("junit_path")
    @classmethod
    def _inside_run_folder(cls, value: str) -> str:
        """The tool deletes a stale file there before the command runs: it must stay inside the run folder."""
        if value != "{junit}" and not junit_path_is_safe(value):
            raise ValueError("must be {junit} or a relative path inside the run folder's smoke/ folder "
                             "(no absolute path, no '..', no placeholder)")
        return value


def junit_path_is_safe(value: str) -> bool:
    """A relative path with no '..', no '~' and no placeholder (so it cannot leave the folder it is joined to)."""
    from pathlib import PurePosixPath, PureWindowsPath

    if not value or "{" in value or "}" in value or value.startswith("~") or "\\" in value:
        return False
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    return not (posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts)
