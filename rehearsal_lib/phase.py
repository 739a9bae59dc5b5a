"""What a phase notebook works with: its params, the target, probes' clients and the recorder.

A notebook calls `open_phase(name, env, run_dir)` once; the returned `PhaseRun[P]` (P: the phase's
params model) resolves secrets from the kernel's environment (never from papermill parameters),
starts the project's sandbox when the params ask for it (only outside a run: under `rehearse run`
the runner owns the target, and the phase checks that the target is still the one the run started
with), and records each check as a displayed output.

The public surface for phase authors (docs/adding-a-phase.md): `settings`, `resolve`, `run`
(with `writes=True` for a check that writes to or disrupts the target: the one write-safety
route), `register_restore`, `display`, `figure`, `note`, `cached`, `http`, `engine`,
`auth_for` (a principal's credentials for a request), `auth_headers`, `progress`, `summary`, `close`.

Every check cell can be run again at any time, also after the closing cell: `close()` leaves the phase
usable (its clients reopen on next use), and a re-run whose probe errors does not replace an earlier
real result of the same check (it is shown, with its reason, beside the kept result).
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

import httpx

from rehearsal_lib.auth_params import ANONYMOUS
from rehearsal_lib.config import Params, SandboxBlock, load_params, resolve_reference
from rehearsal_lib.params_base import PhaseParams
from rehearsal_lib.probes.auth import AuthError, Principals
from rehearsal_lib.progress import Progress
from rehearsal_lib.restores import Restore, perform, record_done, record_registered
from rehearsal_lib.results import TARGET_TABLE_CLASS, Check, SeverityT, Status, StatusName, utcnow
from rehearsal_lib.secrets import SecretSet, mask_url


@dataclass
class Outcome:
    """What a probe found; `PhaseRun.run` turns it into a Check."""

    status: StatusName
    observed: str = ""
    expected: str = ""
    evidence: Any = None
    metrics: Mapping[str, float | int | None] = field(default_factory=dict)  # Mapping: a dict[str, int] fits
    severity: SeverityT | None = None  # a probe may raise its check's severity (e.g. a write that landed elsewhere)


def describe_exception(exc: BaseException) -> str:
    """One readable line: the driver's own message for database errors, without SQLAlchemy's boilerplate."""
    orig = getattr(exc, "orig", None)
    name = type(orig or exc).__name__
    text = str(orig if orig is not None else exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("(Background on")]
    message = " ".join(lines[:2]) if lines else repr(exc)
    return f"{name}: {message}"[:500]


_ACTIVE_SECRETS: list[SecretSet] = []  # the secrets of the phase this kernel runs (set by PhaseRun)


def display_bundle(bundle: dict[str, Any]) -> None:
    """Show an output bundle; every string in it is scrubbed of the running phase's secrets first,
    so no display path (case tables, notes, figures) can bypass the scrubber."""
    if _ACTIVE_SECRETS:
        bundle = _ACTIVE_SECRETS[-1].scrub_obj(bundle)
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(bundle, raw=True)  # type: ignore[no-untyped-call]  # IPython.display ships no annotations
            return
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        pass
    print(bundle.get("text/plain", ""))


# What run ids look like inside the ids a rehearsal creates (`rehearse run`'s folders, interactive runs).
RUN_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}|interactive-\d{8}T\d{6}Z-[0-9a-f]{4}")


def run_id_for(run_dir: str) -> str:
    """The run id every record this phase creates carries: the run folder's name under `rehearse run`,
    `interactive-<UTC stamp>-<4 hex>` for a notebook run on its own (no run folder)."""
    name = os.path.basename(run_dir.rstrip("/\\")) if run_dir else ""
    if name:
        return name
    import datetime as dt
    import secrets

    return f"interactive-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"


P = TypeVar("P", bound=PhaseParams)


def write_refusal(params: Params, phase: str, allow_destructive: bool) -> str | None:
    """The one write-safety rule: None when a check of `phase` may write to (or disrupt) the target.

    Production refuses every write unless the run allows destructive steps (`--allow-destructive`);
    elsewhere a destructive phase's writes also need `safety.allow_destructive` (or the flag)."""
    from rehearsal_lib import phases

    if params.is_production and not allow_destructive:
        return "writes refused in a production environment (run with --allow-destructive)"
    destructive = phases.known(phase) and phases.get(phase).destructive
    if destructive and not (params.safety.allow_destructive or allow_destructive):
        return "destructive step not allowed (safety.allow_destructive is false; or run with --allow-destructive)"
    return None


class RestoreHandle:
    """A registered restore: `run()` performs it now (once) and marks it done in the run folder."""

    def __init__(self, ctx: PhaseRun[Any], restore: Restore):
        self.ctx, self.restore = ctx, restore
        self.result: tuple[bool, str] | None = None

    def done(self, ok: bool, observed: str) -> None:
        """The check undid the disruption its own way; a failed attempt stays pending, so it is tried
        again (at the end of the check, or by the runner)."""
        if ok:
            self.result = (ok, observed)
            self._mark_done()

    def _mark_done(self) -> None:
        ctx = self.ctx
        ctx._pending_restores.pop(self.restore.id, None)
        if ctx.run_dir and self.result is not None:
            record_done(ctx.run_dir, ctx.name, self.restore.id, self.result[0], ctx.secrets.scrub(self.result[1]),
                        by="check")

    def run(self) -> tuple[bool, str]:
        """Perform the restore now (once) and mark it done."""
        if self.result is None:
            ctx = self.ctx
            self.result = perform(self.restore, base_url=ctx.base_url, auth_token=ctx.auth_token,
                                  verify=ctx.params.target.verify_tls, timeout_s=ctx.params.target.timeout_s,
                                  run_id=ctx.run_id)
            self._mark_done()
        return self.result


class PhaseRun(Generic[P]):
    """One phase of one environment, as seen from inside the notebook kernel."""

    def __init__(self, name: str, env: str, run_dir: str = "", params: Params | None = None,
                 needs_target: bool = True):
        self.name = name
        self.env = env
        self.run_dir = run_dir
        self.run_id = run_id_for(run_dir)
        self.params = params or load_params(env)
        self.secrets = SecretSet()
        _ACTIVE_SECRETS[:] = [self.secrets]
        self.checks: list[Check] = []
        self._cache: dict[str, Any] = {}
        self._pending_restores: dict[str, RestoreHandle] = {}
        self._current_check = ""
        self.sandbox_started = False
        self.sandbox_state: Any = None  # the running sandbox (SandboxState) when the target is one
        self.base_url, self.database_url, self.auth_token = "", None, None
        # under `rehearse run` (the runner sets REHEARSAL_RUN_ID): the runner owns the target's lifecycle
        self.under_run = bool(os.environ.get("REHEARSAL_RUN_ID") and run_dir)
        if not needs_target:
            self.secrets.add_params(self.params)
            return
        if self.params.sandbox is not None:
            self._attach_sandbox(self.params.sandbox)
        self.secrets.add_params(self.params)  # the whole run's secrets, not only those this phase resolves
        self.base_url = (self.resolve(self.params.target.base_url, secret=False) or "").rstrip("/")
        self.database_url = self.resolve(self.params.target.database_url)
        self.auth_token = self.resolve(self.params.target.auth_token)
        if self.under_run:
            self._check_target_identity()

    # -- configuration -------------------------------------------------------------------------
    def _attach_sandbox(self, sbx: SandboxBlock) -> None:
        """Interactive use starts the sandbox when none runs; under a run, only attach to the running one
        (the one the runner started; `_check_target_identity` says when it is gone or another)."""
        from rehearsal_lib.sandbox import apply_sandbox_env, ensure_sandbox, sandbox_status

        if self.under_run:
            state, started = sandbox_status(sbx.variant), False
            if state is None:
                return
        else:
            with self.progress(f"sandbox {sbx.variant}: starting (or attaching)", delay_s=1.0):
                state, started = ensure_sandbox(sbx.variant, release_pending=sbx.release_pending)
            if started:
                _to_terminal(f"rehearsal: {self.name} started the sandbox ({sbx.variant}); it keeps running after "
                             f"this notebook. Stop it with: {stop_command(sbx.variant)}")
        self.sandbox_started = started
        self.sandbox_state = state
        apply_sandbox_env(state)
        for value in state.secret_values():
            self.secrets.add(value)

    def _check_target_identity(self) -> None:
        """`<phase>.target.identity` (blocker): the target is the one the runner recorded at the start.

        A dead or different target is `error`, and the phase stops (TargetChanged) before any probe."""
        import json
        from pathlib import Path

        from rehearsal_lib.runrecord import read_run_record
        from rehearsal_lib.target import TargetChanged, compare, expected_identity, read_identity, unreadable

        differences: list[str] = []

        def probe() -> Outcome:
            expected = ("the target answers as when the run started (base URL, version answer, database server "
                        "and start time, sandbox instance)")
            try:
                start = read_run_record(Path(self.run_dir), required=True).target_identity
            except ValueError as exc:  # UnreadableFile: missing, truncated or of the wrong shape
                return Outcome("error", f"cannot read the run's recorded identity: {exc}", expected)
            if not start:
                return Outcome("error", "the run recorded no identity of the target at its start", expected)
            start, update = expected_identity(Path(self.run_dir), start)
            if update is not None:
                expected = (f"the target answers as the {update['phase']} phase left it ({update['reason']}; "
                            "same base URL, database server and sandbox instance)")
            now = json.loads(self.secrets.scrub(json.dumps(
                read_identity(self.params, self.base_url, self.database_url, self.sandbox_state))))
            diffs, same = compare(start, now)
            evidence = ({"at_start": start, "now": now} if update is None else
                        {"expected (left by the " + update["phase"] + " phase)": start, "now": now,
                         "changed_by": {k: v for k, v in update.items() if k != "identity"}})
            if diffs:
                differences.extend(diffs)
                return Outcome("error", "not the target this run started with: " + "; ".join(diffs), expected,
                               evidence)
            if not same:
                return Outcome("error", f"nothing identifies the target, at the start or now: {unreadable(now)}",
                               expected, evidence)
            since = (f"as the {update['phase']} phase left it ({update['reason']})" if update is not None
                     else "as at the start of the run")
            return Outcome("pass", f"same {', '.join(same)} {since}", expected, evidence)

        check = self.run(f"{self.name}.target.identity", "The target is the one this run started with", probe,
                         severity="blocker")
        if differences:
            raise TargetChanged(f"{self.name} did not run its checks: {check.observed}")

    def accept_target_change(self, reason: str) -> dict[str, Any] | None:
        """Record the identity this phase leaves the target in (a deploy changes the version it serves on
        purpose), so later phases compare against it and say which phase changed it. Only under a run."""
        if not self.under_run:
            return None
        from pathlib import Path

        from rehearsal_lib.target import read_identity, record_update

        now = json.loads(self.secrets.scrub(json.dumps(
            read_identity(self.params, self.base_url, self.database_url, self.sandbox_state))))
        return record_update(Path(self.run_dir), self.name, now, self.secrets.scrub(reason))

    def resolve(self, value: str | None, secret: bool = True) -> str | None:
        """A params value with its `${VAR}` references resolved from this kernel's environment; the result
        is masked in every output as a secret unless `secret=False` (a URL, a path)."""
        if value is None:
            return None
        try:
            resolved = resolve_reference(value)
        except KeyError as exc:
            raise RuntimeError(f"params reference ${{{exc.args[0]}}} is not set in this kernel's environment") from None
        if secret:
            self.secrets.add(resolved)
        return resolved

    @property
    def settings(self) -> P:
        """This phase's block of the params file (its params model)."""
        block: P = getattr(self.params.phases, self.name)
        return block

    def progress(self, label: str, total_s: float | None = None, sample: Callable[[], str] | None = None,
                 every_s: float = 1.0, delay_s: float = 0.0) -> Progress:
        """A live progress line for long work, used as a context manager (rehearsal_lib/progress.py):
        updated in place in the notebook, shown by `rehearse run` in the terminal; `sample` returns the
        current figures and is called on a timer (every `every_s`), never per unit of work."""
        return Progress(f"{self.name} · {label}", total_s=total_s, sample=sample, every_s=every_s,
                        scrub=self.secrets.scrub, delay_s=delay_s)

    # -- clients ---------------------------------------------------------------------------------
    @cached_property
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=self.params.target.timeout_s,
                            verify=self.params.target.verify_tls,
                            follow_redirects=self.params.target.follow_redirects)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """One object per phase run shared by its check functions (e.g. a sender with its counters)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _write_refusal(self) -> str | None:
        """`write_refusal` for this phase; the runner passes --allow-destructive as REHEARSAL_ALLOW_DESTRUCTIVE."""
        return write_refusal(self.params, self.name, os.environ.get("REHEARSAL_ALLOW_DESTRUCTIVE") == "1")

    def register_restore(self, restore: Restore) -> RestoreHandle:
        """Declare how to undo a disruption before causing it. The check calls `handle.run()` when it is
        done; if the phase is killed first (timeout, Ctrl-C, crash), the runner runs it after the phase.
        Only inside a check declared with `writes=True`."""
        if not self._current_check:
            raise RuntimeError("register_restore belongs inside the probe of a check run with writes=True")
        handle = RestoreHandle(self, restore)
        self._pending_restores[restore.id] = handle
        if self.run_dir:
            record_registered(self.run_dir, self.name, restore, self._current_check)
        return handle

    @cached_property
    def principals(self) -> Principals:
        """The principals of target.auth (and `default` from target.auth_token), resolved once per phase run."""
        from rehearsal_lib.auth_params import BearerScheme, Principal

        target = self.params.target
        specs: dict[str, Principal] = dict(target.auth.principals) if target.auth else {}
        if target.auth_token:
            specs["default"] = BearerScheme(scheme="bearer", token=target.auth_token)
        login = httpx.Client(base_url=self.base_url, timeout=target.timeout_s, verify=target.verify_tls,
                             follow_redirects=target.follow_redirects)
        self._cache["principals.client"] = login

        def resolve(ref: str) -> str | None:
            return self.resolve(ref)

        return Principals(specs, target.default_principal(), login, resolve, self.secrets.add)

    def auth_for(self, name: str | None = None, enabled: bool = True) -> httpx.Auth | None:
        """The credentials of principal `name` (None: the target's default; `anonymous` or `enabled=False`:
        none) as an httpx.Auth for `probes.http.request(..., auth=...)`. Its token is obtained on first use."""
        return self.principals.get(name, enabled)

    def principal_name(self, name: str | None = None, enabled: bool = True) -> str:
        """Who a request runs as, for messages: the principal's name or `anonymous`."""
        return self.principals.name_of(name, enabled)

    def wants_auth(self, name: str | None = None, enabled: bool = True) -> bool:
        """The request means to run authenticated (`auth` on, not `as: anonymous`), even when no principal is
        configured: then a 401/403 says the credentials are missing, not that the behaviour was judged."""
        return enabled and name != ANONYMOUS

    def auth_headers(self, name: str | None = None) -> dict[str, str]:
        """The headers of a principal's credential, obtained now (default: the target's default principal)."""
        auth = self.principals.get(name)
        if auth is None:
            return {}
        cred = auth.credential()
        if cred.params:
            raise AuthError(f"principal '{auth.name}' sends its key as a query parameter; this request takes "
                            "headers only")
        return dict(cred.headers)

    @cached_property
    def engine(self) -> Any:
        """A read-only SQLAlchemy engine with a statement timeout (every transaction is READ ONLY)."""
        if not self.database_url:
            raise RuntimeError("target.database_url is not configured for this environment")
        from rehearsal_lib.probes.sql import read_only_engine

        return read_only_engine(self.database_url, self.params.safety.sql_statement_timeout_ms,
                                connect_timeout_s=self.params.target.timeout_s)

    # -- recording -------------------------------------------------------------------------------
    def record(self, check: Check) -> Check:
        """Display a check in the notebook (badge + JSON bundle) and keep it.

        A check run again in the same kernel (a re-run cell) replaces its earlier record only with a real
        result: when the re-run is an `error` and the earlier record was not, the earlier record is kept
        and shown again (its badge and bundle, so the notebook's record is unchanged) with a note giving
        the re-run's error."""
        check = self._scrubbed(check)
        earlier = next((c for c in self.checks if c.id == check.id), None)
        if earlier is not None and check.status == Status.ERROR and earlier.status != Status.ERROR:
            display_bundle(earlier.bundle())
            self.note(f"Re-run of {check.id} at {check.started_at} gave an error, not a result: {check.observed} "
                      f"— the earlier result ({earlier.status.upper()} at {earlier.started_at}) is kept.")
            return earlier
        self.checks = [c for c in self.checks if c.id != check.id] + [check]
        display_bundle(check.bundle())
        return check

    def _scrubbed(self, check: Check) -> Check:
        if not self.secrets:
            return check
        data = check.model_dump(mode="json")
        scrubbed = self.secrets.scrub_obj(data)
        if scrubbed == data:
            return check
        if scrubbed["metrics"] != data["metrics"]:  # a metric whose value is a secret: not a number any more
            scrubbed["metrics"] = {k: v for k, v in scrubbed["metrics"].items() if not isinstance(v, str)}
        return Check.model_validate(scrubbed)

    def run(self, check_id: str, title: str, probe: Callable[[], Outcome], severity: SeverityT = "major",
            expected: str = "", writes: bool = False) -> Check:
        """Run one probe and record its outcome; an exception becomes an `error` with the reason.

        `expected` is what the check requires, kept even when the probe raises before saying so.
        `writes`: the probe writes to (or disrupts) the target, so where writes are refused
        (`write_refusal`: production without --allow-destructive, a destructive phase without
        safety.allow_destructive) it does not run and the check is `skip` with the reason.
        """
        refusal = self._write_refusal() if writes else None
        if refusal:
            probe = lambda: Outcome("skip", refusal, expected)  # noqa: E731
        started, t0 = utcnow(), time.perf_counter()
        self._current_check = check_id if writes else ""
        try:
            out = probe()
        except Exception as exc:  # noqa: BLE001 - any failure of a probe is evidence, not a crash
            out = Outcome("error", observed=describe_exception(exc), expected=expected,
                          evidence={"traceback": traceback.format_exc(limit=3)})
        finally:
            self._current_check = ""
            for handle in list(self._pending_restores.values()):  # a probe that forgot its restore
                handle.run()
        if not (out.expected or expected):  # a probe that raised before saying what it requires
            out.expected = self._expected_of(check_id, title)
        check = Check(id=check_id, phase=self.name, title=title, status=Status(out.status),
                      severity=out.severity or severity,
                      expected=out.expected or expected, observed=out.observed, evidence=out.evidence,
                      metrics=dict(out.metrics), started_at=started, duration_s=round(time.perf_counter() - t0, 4))
        return self.record(check)

    def _expected_of(self, check_id: str, title: str) -> str:
        """`expected` for a check whose probe gave none (it raised first): what an earlier run of the
        same check in this kernel required, else its title (the requirement in words)."""
        earlier = next((c for c in self.checks if c.id == check_id and c.expected), None)
        return earlier.expected if earlier is not None else title

    def figure(self, fig: Any) -> None:
        """Show a plotly figure; its JSON stays in the notebook and the report renders it offline.

        Viewers without the plotly renderer (plain nbconvert, code hosts) get a short HTML note instead.
        """
        import html

        title = fig.layout.title.text or "chart"
        note = (f"<p><i>Chart “{html.escape(title)}”: open this notebook in JupyterLab or see the run's "
                "report.html to view it.</i></p>")
        display_bundle({"application/vnd.plotly.v1+json": fig.to_plotly_json(), "text/html": note,
                  "text/plain": f"<figure: {title}>"})

    def display(self, bundle: dict[str, Any]) -> None:
        """Show an output bundle (mimetype -> data) in the notebook, scrubbed of this run's secrets."""
        display_bundle(bundle)

    def note(self, text: str) -> None:
        """A short line of narrative output, e.g. why a section has no checks."""
        import html

        display_bundle({"text/html": f"<p style='color:#57606a'><i>{html.escape(text)}</i></p>", "text/plain": text})

    # -- narrative -------------------------------------------------------------------------------
    def describe_target(self) -> None:
        """Show which environment and target this phase runs against (secrets masked)."""
        import html

        rows = {
            "environment": f"{self.params.name} ({self.params.environment.kind})",
            "phase": self.name,
            "base URL": self.base_url or "(none)",
            "database": mask_url(self.database_url) if self.database_url else "(none)",
            "auth token": "set (hidden)" if self.auth_token else "(none)",
            "principals": ", ".join(sorted(self.params.target.principal_names())) or "(none)",
            "run folder": self.run_dir or "(interactive: not part of a run)",
            "run id": f"{self.run_id} (carried by every record this phase creates)",
        }
        if self.params.sandbox is not None:
            rows["sandbox"] = f"variant {self.params.sandbox.variant}" + (
                f" (started by this notebook; stop it with: {stop_command(self.params.sandbox.variant)})"
                if self.sandbox_started else "")
        left = "style='text-align:left'"
        body = "".join(f"<tr><th {left}>{html.escape(k)}</th><td {left}>{html.escape(v)}</td></tr>"
                       for k, v in rows.items())
        display_bundle({"text/html": f"<table class='{TARGET_TABLE_CLASS}'>{body}</table>",
                  "text/plain": "\n".join(f"{k}: {v}" for k, v in rows.items())})

    def summary(self) -> None:
        """A table of this phase's checks, worst first."""
        import html

        from rehearsal_lib.results import STATUS_RANK as order
        from rehearsal_lib.results import tally

        counts = tally(self.checks)
        left = "style='text-align:left'"
        rows = "".join(
            f"<tr><td {left}>{c.status.upper()}</td><td {left}>{c.severity}</td><td {left}><code>"
            f"{html.escape(c.id)}</code></td><td {left}>{html.escape(c.observed)}</td></tr>"
            for c in sorted(self.checks, key=lambda c: order[c.status])
        )
        head = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: order[kv[0]]))
        display_bundle({"text/html": f"<p><b>{self.name}</b>: {head or 'no checks'}</p><table><tr>"
                                     f"<th {left}>status</th>"
                               f"<th {left}>severity</th><th {left}>check</th><th {left}>observed</th></tr>{rows}"
                               "</table>",
                  "text/plain": f"{self.name}: {head or 'no checks'}"})

    def close(self) -> None:
        """Run pending restores and release the clients. The phase stays usable: a check cell run after
        this reopens the clients it needs (`http`, `engine` are created again on next use)."""
        for handle in list(self._pending_restores.values()):
            handle.run()
        client = self.__dict__.pop("http", None)
        if client is not None:
            with suppress(Exception):
                client.close()
        self.__dict__.pop("principals", None)  # rebuilt (and logged in again) on next use
        login = self._cache.pop("principals.client", None)
        if login is not None:
            with suppress(Exception):
                login.close()
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            with suppress(Exception):
                engine.dispose()


def stop_command(variant: str) -> str:
    """The command that stops this sandbox variant."""
    return "rehearse sandbox down" + (f" --variant {variant}" if variant != "default" else "")


def _to_terminal(message: str) -> None:
    """A line on the kernel process's own stderr, i.e. the terminal of a plain `papermill` run (or of
    the Jupyter server), not the notebook: ipykernel keeps the original stderr's descriptor."""
    import sys

    fd = getattr(sys.stderr, "_original_stdstream_copy", None)
    try:
        if isinstance(fd, int):
            os.write(fd, (message + "\n").encode("utf-8", "replace"))
        elif sys.__stderr__ is not None:
            sys.__stderr__.write(message + "\n")
            sys.__stderr__.flush()
    except OSError:
        pass


def open_phase(name: str, env: str, run_dir: str = "", needs_target: bool = True) -> PhaseRun[Any]:
    """Entry point for phase notebooks: load params, attach the target, show what runs where."""
    ctx: PhaseRun[Any] = PhaseRun(name, env, run_dir, needs_target=needs_target)
    ctx.describe_target()
    return ctx
