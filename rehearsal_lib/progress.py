"""Live progress of long work (a load stage, a sandbox start, a wait for a job or a window).

A `Progress` shows one line that changes while the work goes on: elapsed time plus whatever
figures the work reports (requests sent, current rate, errors, running p95 for load).

- In a notebook kernel the line is one display output updated in place (`display(...,
  display_id=True)` + `update`): JupyterLab shows it live; an executed notebook (papermill, nbclient)
  keeps only its last state, one short line, so executed notebooks stay small (no widget state).
- Under `rehearse run` the runner names a file in `REHEARSAL_PROGRESS_FILE` (outside the run folder);
  each update rewrites it with the current line, and the runner shows it (`LiveLine`): a line updated
  in place in a terminal, a plain line at most every `PLAIN_EVERY_S` when stdout is not one (CI logs).
- Outside a kernel (a script) it prints a plain line at most every `PLAIN_EVERY_S`.

Updates come from a timer (`every_s`), never per unit of work: the figures are read from counters
the work keeps anyway (`sample` callable), so progress costs the work nothing measurable.
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Callable
from typing import Any

PLAIN_EVERY_S = 10.0
TAG = "[progress]"  # the text/plain prefix of a progress output
FILE_ENV = "REHEARSAL_PROGRESS_FILE"


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        return False
    shell = get_ipython()  # type: ignore[no-untyped-call]
    return shell is not None and getattr(shell, "kernel", None) is not None


def fmt_elapsed(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.0f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _to_runner(line: str) -> None:
    """The current line for the runner (`REHEARSAL_PROGRESS_FILE`), replaced atomically."""
    path = os.environ.get(FILE_ENV)
    if not path:
        return
    try:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(line)
        os.replace(tmp, path)
    except OSError:
        pass


class LiveLine:
    """How the runner shows phases' progress lines: in a terminal one line rewritten in place (cleared
    before any other output); otherwise a plain line through `emit`, the first at once, then at most
    every `every_s` per phase, so CI logs stay readable."""

    def __init__(self, emit: Callable[[str], None], tty: bool | None = None, every_s: float = PLAIN_EVERY_S,
                 stream: Any = None):
        import sys

        self.stream = stream or sys.stdout
        self.emit = emit
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._shown = False
        self._lock = threading.Lock()

    def show(self, phase: str, line: str) -> None:
        with self._lock:
            if self.tty:
                try:
                    import shutil

                    width = shutil.get_terminal_size().columns - 1
                    self.stream.write("\r\x1b[2K" + f"  >>> {line}"[:width])
                    self.stream.flush()
                    self._shown = True
                except (OSError, ValueError):
                    pass
                return
            now = time.monotonic()
            if now - self._last.get(phase, -self.every_s) >= self.every_s:
                self._last[phase] = now
                self.emit(f"      progress {line}")

    def clear(self) -> None:
        """Erase the live line (before a normal output line)."""
        with self._lock:
            if self.tty and self._shown:
                try:
                    self.stream.write("\r\x1b[2K")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
                self._shown = False


class Progress:
    """One live progress line for `label` (e.g. "load · stage steady").

    `total_s`: the expected duration, for a bar and "of N s"; `sample`: a callable returning the current
    text of the figures (called by the timer); `scrub`: applied to every line shown (secrets);
    `delay_s`: nothing is shown before this much time has passed (nor at the end, if nothing was)."""

    def __init__(self, label: str, total_s: float | None = None, sample: Callable[[], str] | None = None,
                 every_s: float = 1.0, scrub: Callable[[str], str] | None = None, delay_s: float = 0.0):
        self.label, self.total_s, self.sample, self.every_s = label, total_s, sample, every_s
        self.delay_s = delay_s  # show nothing for work that ends sooner (a quick start stays silent)
        self._shown = False
        self.scrub = scrub or (lambda s: s)
        self.text = ""
        self.t0 = time.monotonic()
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_plain = -PLAIN_EVERY_S
        self._lock = threading.Lock()
        self.kernel = _in_kernel()

    # -- what is shown ----------------------------------------------------------------------------
    def line(self, done: bool = False) -> str:
        elapsed = time.monotonic() - self.t0
        when = fmt_elapsed(elapsed) + (f" of {fmt_elapsed(self.total_s)}" if self.total_s and not done else "")
        parts = [when] + ([self.text] if self.text else [])
        return self.scrub(f"{self.label}: {', '.join(parts)}" + (" (done)" if done else ""))

    def _bundle(self, done: bool) -> dict[str, str]:
        line = self.line(done)
        bar = ""
        if self.total_s and not done:
            value = min(1.0, (time.monotonic() - self.t0) / self.total_s)
            bar = f"<progress value='{value:.3f}' max='1' style='width:12em;vertical-align:middle'></progress> "
        return {"text/plain": f"{TAG} {line}",
                "text/html": f"<p style='color:#57606a;margin:2px 0'>{bar}<code>{html.escape(line)}</code></p>"}

    def _show(self, done: bool = False) -> None:
        if not self._shown and (done or time.monotonic() - self.t0 < self.delay_s):
            return  # quick work: no progress at all
        with self._lock:
            self._shown = True
            _to_runner(self.line(done))
            if self.kernel:
                from IPython.display import display

                bundle = self._bundle(done)
                if self._handle is None:
                    self._handle = display(bundle, raw=True, display_id=True)  # type: ignore[no-untyped-call]
                else:
                    self._handle.update(bundle, raw=True)
                return
            now = time.monotonic()
            if done or now - self._last_plain >= PLAIN_EVERY_S:
                self._last_plain = now
                print(f"{TAG} {self.line(done)}", flush=True)

    # -- lifecycle --------------------------------------------------------------------------------
    def update(self, text: str | None = None) -> None:
        """New figures (the timer shows them at its next tick; call `show_now` to show them at once)."""
        if text is not None:
            self.text = text

    def show_now(self) -> None:
        self._show()

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            self._refresh()

    def _refresh(self) -> None:
        if self.sample is not None:
            try:
                self.text = self.sample()
            except Exception:  # noqa: BLE001 - a figure that cannot be read now is read at the next tick
                return
        try:
            self._show()
        except Exception:  # noqa: BLE001 - progress never breaks the work it shows
            pass

    def start(self) -> Progress:
        self.t0 = time.monotonic()
        self._show()
        self._thread = threading.Thread(target=self._tick, name="rehearsal-progress", daemon=True)
        self._thread.start()
        return self

    def finish(self, text: str | None = None) -> None:
        """Stop the timer and show the final line (kept in the executed notebook)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every_s + 1)
        if self.sample is not None and text is None:
            try:
                self.text = self.sample()
            except Exception:  # noqa: BLE001
                pass
        if text is not None:
            self.text = text
        try:
            self._show(done=True)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.finish()
