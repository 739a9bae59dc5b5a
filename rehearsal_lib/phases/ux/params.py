"""Params of the ux phase: its block under `phases.ux` in params/<env>.yaml (docs/params.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rehearsal_lib.params_base import MAX_SECONDS, PhaseParams, Severity, Strict, as_field, check_regex

ACTIONS = ("goto", "click", "fill", "wait_for", "reload", "assert_text", "assert_selector", "assert_changes")


class FillStep(Strict):
    selector: str
    value: str = Field(description="Text typed into the field; may hold {run_id} and ${VAR} (resolved, masked).")


class TextExpect(Strict):
    selector: str
    text: str = Field(description="The element's visible text must contain this.")


class ChangeExpect(Strict):
    selector: str
    within_s: float = Field(3, gt=0, le=600, description="The element's text must change within this many seconds.")
    direction: Literal["any", "down", "up"] = Field(
        "any", description="down/up: the number it shows (a mm:ss or hh:mm:ss clock in seconds, else the first "
                           "number) must fall/rise, e.g. a countdown timer.")


class Step(Strict):
    """One browser step: exactly one action key, plus an optional `name` and `timeout_s`."""

    name: str | None = Field(None, pattern=r"^[a-z0-9_]{1,40}$",
                             description="The step's name in the screenshot's file name (default: the action).")
    timeout_s: float | None = Field(None, gt=0, le=600, description="Default: the journey's step_timeout_s.")
    goto: str | None = Field(None, description="A path on target.base_url (or a full URL); may hold {run_id}.")
    click: str | None = Field(None, description="A selector (CSS, or Playwright's text=… / role=…).")
    fill: FillStep | None = None
    wait_for: str | None = Field(None, description="A selector that must become visible.")
    reload: bool | None = Field(None, description="true: reload the page.")
    assert_text: TextExpect | None = None
    assert_selector: str | None = Field(None, description="A selector that must be visible now (no waiting).")
    assert_changes: ChangeExpect | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [a for a in ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(f"a step takes exactly one of {', '.join(ACTIONS)} (got {', '.join(given) or 'none'})")
        if self.reload is False:
            raise ValueError("reload: write `reload: true` or leave the step out")
        return self

    @property
    def action(self) -> str:
        return next(a for a in ACTIONS if getattr(self, a) is not None)


class Spinner(Strict):
    selector: str = Field(description="The busy indicator, e.g. .spinner or [aria-busy=true].")
    max_s: float = Field(5, gt=0, le=600, description="After each step it may stay visible at most this long.")


class Journey(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]{1,40}$", description="The check ids' middle part: ux.<name>.*")
    title: str | None = None
    principal: str | None = as_field()
    auth: bool = Field(True, description="false: the browser sends no credentials (anonymous).")
    writes: bool = Field(True, description="The journey writes to the target (production refuses it without "
                                           "--allow-destructive); false for a read-only journey.")
    severity: Severity = "major"
    spinner: Spinner | None = None
    max_console_errors: int = Field(0, ge=0)
    ignore_console: list[str] = Field(default_factory=list,
                                      description="Regexes: console errors matching one are not counted.")
    step_timeout_s: float = Field(10, gt=0, le=600)
    steps: list[Step] = Field(min_length=1)

    @field_validator("ignore_console")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_regex(pattern)
        return value

    @model_validator(mode="after")
    def _as(self) -> Journey:
        from rehearsal_lib.params_base import check_as

        check_as(self.auth, self.principal)
        return self


class Viewport(Strict):
    width: int = Field(1024, ge=200, le=4096)
    height: int = Field(640, ge=200, le=4096)


class UxParams(PhaseParams):
    enabled: bool = True
    browser: str | None = Field(None, description="Path of a Chromium/Chrome executable; default: the first of "
                                                  "chromium, chromium-browser, google-chrome on PATH.")
    launch_timeout_s: float = Field(30, gt=0, le=MAX_SECONDS)
    viewport: Viewport = Field(default_factory=Viewport)
    thumbnail_scale: float = Field(0.5, gt=0, le=1, description="The report's screenshots: JPEG at this scale "
                                                               "(the run folder keeps full-size PNGs).")
    journeys: list[Journey] = Field(default_factory=list)

    @field_validator("journeys")
    @classmethod
    def _unique(cls, value: list[Journey]) -> list[Journey]:
        names = [j.name for j in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"journey names must be unique: {', '.join(dupes)}")
        return value
