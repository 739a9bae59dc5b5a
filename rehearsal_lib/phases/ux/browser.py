"""Browser journeys in headless Chromium, driven by Playwright for Python (the system's browser:
`executable_path`, no browser download).

Playwright's sync API refuses to run inside a running asyncio loop (a Jupyter kernel runs one), and its
objects belong to the thread that started them: a `BrowserSession` owns one worker thread, launches the
browser there on first use and runs every journey in it; the caller waits for each journey's
`JourneyResult`. Nothing here records checks: `checks.py` judges the results.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from rehearsal_lib.phases.ux.params import Journey, Step

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = ("install Chromium (Debian/Ubuntu: `apt-get install chromium`) or set phases.ux.browser to the path "
                "of a Chromium or Chrome executable")
MAX_TEXT = 300  # characters kept of one console message or failure


class BrowserUnavailable(Exception):
    """No browser to run journeys in (none found, or it does not start): every journey check is `error`."""


def find_browser(setting: str | None) -> str:
    """The browser executable: `setting` (a path, or a name on PATH) when given, else the first of
    BROWSER_NAMES on PATH. BrowserUnavailable with the install hint when there is none."""
    if setting:
        path = setting if os.sep in setting else shutil.which(setting)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise BrowserUnavailable(f"phases.ux.browser {setting!r} is not an executable file: {INSTALL_HINT}")
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserUnavailable(f"no Chromium or Chrome found on PATH (looked for {', '.join(BROWSER_NAMES)}): "
                             f"{INSTALL_HINT}")


@dataclass
class StepResult:
    n: int
    label: str  # e.g. "click #save": the action and its selector or path, never a filled value
    file_stem: str  # "<n>-<name>", the screenshot's name without extension
    ok: bool = False
    error: str = ""
    duration_s: float = 0.0
    screenshot: str = ""  # the PNG's path relative to the run folder (or absolute when interactive)
    thumbnail: str = ""  # base64 JPEG for the report
    spinner_s: float | None = None  # how long the spinner stayed visible after this step (None: not watched)
    spinner_stuck: bool = False


@dataclass
class JourneyResult:
    name: str
    total_steps: int
    steps: list[StepResult] = field(default_factory=list)
    console_errors: list[dict[str, str]] = field(default_factory=list)
    failed_requests: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""  # the journey could not be run at all (browser, context): every check is `error`
    duration_s: float = 0.0
    launch_s: float | None = None  # the browser's start-up, on the journey that started it
    sheet: str = ""  # base64 JPEG: every step's screenshot with its caption, for the notebook and the report

    @property
    def completed(self) -> bool:
        return not self.error and len(self.steps) == self.total_steps and all(s.ok for s in self.steps)

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)

    @property
    def observed_all(self) -> bool:
        """Every step ran (the last one may have failed): what the page did was seen to the end."""
        return not self.error and len(self.steps) == self.total_steps


class StepFailed(Exception):
    """A step did not do what it says; the message is what was seen."""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def step_label(step: Step) -> str:
    """What a step does, for messages and evidence: the action and its selector or path; a filled value is
    never part of it (it may be a secret)."""
    action = step.action
    if step.goto is not None:
        return f"goto {step.goto}"
    if step.fill is not None:
        return f"fill {step.fill.selector}"
    if step.reload:
        return "reload"
    if step.assert_text is not None:
        return f"assert_text {step.assert_text.selector} contains {step.assert_text.text!r}"
    if step.assert_changes is not None:
        return f"assert_changes {step.assert_changes.selector} ({step.assert_changes.direction})"
    return f"{action} {getattr(step, action)}"


_CLOCK_RE = re.compile(r"(\d+):(\d{2})(?::(\d{2}))?")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


def reading(text: str) -> float | None:
    """The number an element shows: a clock (mm:ss or hh:mm:ss) in seconds, else its first number."""
    clock = _CLOCK_RE.search(text)
    if clock:
        a, b, c = clock.groups()
        return int(a) * 3600 + int(b) * 60 + int(c) if c is not None else int(a) * 60 + int(b)
    number = _NUMBER_RE.search(text)
    return float(number.group()) if number else None


@dataclass
class JourneyPlan:
    """A journey as the worker thread runs it: everything resolved in the caller's thread."""

    journey: Journey
    base_url: str
    headers: dict[str, str]  # sent with requests to the target's origin only
    values: dict[int, str]  # step index -> the resolved fill value
    secret_steps: set[int]  # step indexes whose fill value holds a ${VAR} reference (a secret)
    out_dir: Path
    shown_root: Path | None  # screenshots are named relative to this (the run folder) when set
    viewport: tuple[int, int]
    thumbnail_scale: float
    run_id: str = ""
    verify_tls: bool = True  # target.verify_tls: false accepts the target's certificate unchecked


class BrowserSession:
    """One headless Chromium for a phase run, in its own worker thread (see the module docstring)."""

    def __init__(self, executable: str, launch_timeout_s: float = 30):
        self.executable = executable
        self.launch_timeout_s = launch_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rehearsal-ux")
        self._pw: Any = None
        self._browser: Any = None
        self.launch_s: float | None = None

    def _ensure(self) -> Any:
        if self._browser is None:
            from playwright.sync_api import sync_playwright

            t0 = time.perf_counter()
            self._pw = sync_playwright().start()
            try:
                self._browser = self._pw.chromium.launch(executable_path=self.executable, headless=True,
                                                         timeout=self.launch_timeout_s * 1000,
                                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
            except Exception as exc:
                self._pw.stop()
                self._pw = None
                raise BrowserUnavailable(f"{self.executable} did not start: {_clip(str(exc).splitlines()[0])}; "
                                         f"{INSTALL_HINT}") from exc
            self.launch_s = round(time.perf_counter() - t0, 3)
        return self._browser

    def run(self, plan: JourneyPlan) -> JourneyResult:
        """Run one journey (in the worker thread); BrowserUnavailable when the browser cannot start."""
        return self._pool.submit(self._run, plan).result()

    def _run(self, plan: JourneyPlan) -> JourneyResult:
        started = self._browser is None
        browser = self._ensure()
        result = run_journey(browser, plan)
        result.launch_s = self.launch_s if started else None
        return result

    def close(self) -> None:
        def stop() -> None:
            if self._browser is not None:
                try:
                    self._browser.close()
                finally:
                    self._browser = None
                    if self._pw is not None:
                        self._pw.stop()
                        self._pw = None

        try:
            self._pool.submit(stop).result(timeout=60)
        finally:
            self._pool.shutdown(wait=False)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def run_journey(browser: Any, plan: JourneyPlan) -> JourneyResult:
    """Run `plan`'s steps in a fresh browser context (no cookies, empty storage); stop at the first step
    that fails. Screenshots after every step, the failing one included."""
    from playwright.sync_api import Error as PlaywrightError

    journey = plan.journey
    result = JourneyResult(journey.name, len(journey.steps))
    t_start = time.perf_counter()
    width, height = plan.viewport
    context = browser.new_context(viewport={"width": width, "height": height}, ignore_https_errors=not plan.verify_tls)
    try:
        origin = _origin(plan.base_url)
        if plan.headers:
            def add_headers(route: Any) -> None:
                route.continue_(headers={**route.request.headers, **plan.headers})

            context.route(lambda url: _origin(url) == origin, add_headers)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        _listen(page, result)
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        for n, step in enumerate(journey.steps, start=1):
            name = step.name or step.action
            label = f"{step.name}: {step_label(step)}" if step.name else step_label(step)
            res = StepResult(n, label, f"{n:02d}-{name}")
            result.steps.append(res)
            timeout_s = step.timeout_s or journey.step_timeout_s
            t0 = time.perf_counter()
            try:
                _do(page, step, plan, n - 1, timeout_s)
                res.ok = True
            except StepFailed as exc:
                res.error = _clip(str(exc))
            except PlaywrightError as exc:
                res.error = _clip(_playwright_message(exc))
                if page.is_closed() or not browser.is_connected():  # the browser, not the page, failed
                    result.error = f"the browser closed during step {n} ({label}): {res.error}"
                    break
            res.duration_s = round(time.perf_counter() - t0, 3)
            if journey.spinner is not None:
                res.spinner_s, res.spinner_stuck = _spinner(page, journey.spinner.selector, journey.spinner.max_s)
            _screenshot(page, cdp, res, plan)
            if not res.ok:
                break
        result.duration_s = round(time.perf_counter() - t_start, 3)
        result.sheet = contact_sheet(context, result, max(100, round(plan.viewport[0] * plan.thumbnail_scale)))
    finally:
        result.duration_s = result.duration_s or round(time.perf_counter() - t_start, 3)
        context.close()
    return result


SHEET_CSS = ("body{margin:8px;font:13px system-ui,sans-serif;color:#1f2328;background:#fff}"
             "figure{display:inline-block;vertical-align:top;margin:4px;width:%dpx}"
             "img{width:100%%;border:1px solid #d0d7de;display:block}figcaption{margin-top:3px}"
             ".bad{color:#cf222e;font-weight:600}code{font-size:12px}")


def contact_sheet(context: Any, result: JourneyResult, width: int) -> str:
    """Every step's downscaled screenshot with its caption, rendered by the browser itself as one JPEG (base64;
    "" when it cannot be made): an image output shows in any notebook viewer, trusted or not, and in the report."""
    import html as _html

    if not any(s.thumbnail for s in result.steps):
        return ""
    columns = max(1, 1100 // (width + 8))  # a page about 1100 px wide
    figures = []
    for s in result.steps:
        state = "ok" if s.ok else f"<span class='bad'>FAILED</span>: {_html.escape(s.error)}"
        spin = f" · spinner {s.spinner_s:.1f} s" if s.spinner_s else ""
        img = f"<img src='data:image/jpeg;base64,{s.thumbnail}'>" if s.thumbnail else "<i>(no screenshot)</i>"
        figures.append(f"<figure>{img}<figcaption><b>{s.n}</b> · <code>{_html.escape(s.label)}</code> — {state} "
                       f"({s.duration_s:.2f} s{spin})</figcaption></figure>")
    page = None
    try:
        page = context.new_page()
        page.set_viewport_size({"width": columns * (width + 8) + 16, "height": 200})
        page.set_content(f"<style>{SHEET_CSS % width}</style>{''.join(figures)}", timeout=10_000)
        return base64.b64encode(page.screenshot(type="jpeg", quality=70, full_page=True, timeout=10_000)).decode()
    except Exception:  # noqa: BLE001 - the sheet is a view of the evidence, not evidence: its absence is shown
        return ""
    finally:
        if page is not None:
            page.close()


def _playwright_message(exc: Exception) -> str:
    """Playwright's message without its call log."""
    text = str(exc).split("Call log:", 1)[0].strip()
    return " ".join(text.split())


def _listen(page: Any, result: JourneyResult) -> None:
    """Console errors, uncaught exceptions and failed requests (no answer, or 4xx/5xx) as evidence."""

    def console(msg: Any) -> None:
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            result.console_errors.append({"kind": "console", "text": _clip(msg.text), "url": where})

    def page_error(exc: Any) -> None:
        result.console_errors.append({"kind": "uncaught", "text": _clip(str(exc)), "url": page.url})

    def failed(request: Any) -> None:
        result.failed_requests.append({"method": request.method, "url": _clip(request.url),
                                       "failure": _clip(request.failure or "failed")})

    def response(resp: Any) -> None:
        if resp.status >= 400:
            result.failed_requests.append({"method": resp.request.method, "url": _clip(resp.url),
                                           "status": resp.status})

    page.on("console", console)
    page.on("pageerror", page_error)
    page.on("requestfailed", failed)
    page.on("response", response)


def _do(page: Any, step: Step, plan: JourneyPlan, index: int, timeout_s: float) -> None:
    from playwright.sync_api import expect

    ms = timeout_s * 1000
    if step.goto is not None:
        path = step.goto.replace("{run_id}", plan.run_id)
        target = path if re.match(r"^https?://", path) else urljoin(plan.base_url + "/", path.lstrip("/"))
        resp = page.goto(target, timeout=ms, wait_until="load")
        if resp is not None and resp.status >= 400:
            raise StepFailed(f"GET {step.goto} answered {resp.status}")
    elif step.click is not None:
        page.locator(step.click).first.click(timeout=ms)
    elif step.fill is not None:
        field_ = page.locator(step.fill.selector).first
        value = plan.values[index]
        if index in plan.secret_steps and (field_.get_attribute("type", timeout=ms) or "text").lower() != "password":
            raise StepFailed(f"refused to type a secret (${{…}}) into {step.fill.selector}, which is not a password "
                             "field: the screenshot would show it")
        field_.fill(value, timeout=ms)
    elif step.wait_for is not None:
        try:
            page.locator(step.wait_for).first.wait_for(state="visible", timeout=ms)
        except Exception as exc:
            raise StepFailed(f"{step.wait_for} did not become visible within {timeout_s:g} s") from exc
    elif step.reload:
        resp = page.reload(timeout=ms, wait_until="load")
        if resp is not None and resp.status >= 400:
            raise StepFailed(f"the reload answered {resp.status}")
    elif step.assert_selector is not None:
        try:
            expect(page.locator(step.assert_selector).first).to_be_visible(timeout=ms)
        except AssertionError as exc:
            raise StepFailed(f"{step.assert_selector} is not visible (waited {timeout_s:g} s)") from exc
    elif step.assert_text is not None:
        loc = page.locator(step.assert_text.selector).first
        try:
            expect(loc).to_contain_text(step.assert_text.text, timeout=ms)
        except AssertionError as exc:
            seen = _text(loc)
            raise StepFailed(f"expected {step.assert_text.selector} to contain {step.assert_text.text!r}, found "
                             f"{seen!r} (waited {timeout_s:g} s)") from exc
    elif step.assert_changes is not None:
        _assert_changes(page, step, timeout_s)


def _text(loc: Any) -> str:
    try:
        return _clip(" ".join(loc.inner_text(timeout=1000).split()))
    except Exception:  # noqa: BLE001 - only for the message
        return "(no such element)"


def _assert_changes(page: Any, step: Step, timeout_s: float) -> None:
    assert step.assert_changes is not None
    want = step.assert_changes
    loc = page.locator(want.selector).first
    first = " ".join(loc.inner_text(timeout=timeout_s * 1000).split())
    before = reading(first)
    if want.direction != "any" and before is None:
        raise StepFailed(f"{want.selector} shows no number or clock to count {want.direction}: {first!r}")
    deadline = time.monotonic() + want.within_s
    now = first
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = " ".join(loc.inner_text(timeout=timeout_s * 1000).split())
        if now == first:
            continue
        after = reading(now)
        if want.direction == "any":
            return
        if after is not None and before is not None and (after < before if want.direction == "down"
                                                          else after > before):
            return
        raise StepFailed(f"{want.selector} went from {first!r} to {now!r}: not counting {want.direction}")
    raise StepFailed(f"{want.selector} still shows {now!r} after {want.within_s:g} s")


def _spinner(page: Any, selector: str, max_s: float) -> tuple[float, bool]:
    """How long the spinner stayed visible after a step (0 when it was not), and whether it outlived max_s."""
    loc = page.locator(selector).first
    t0 = time.perf_counter()
    try:
        if not loc.is_visible():
            return 0.0, False
        loc.wait_for(state="hidden", timeout=max_s * 1000)
    except Exception:  # noqa: BLE001 - a timeout (or a page gone) is a spinner that did not end
        return round(time.perf_counter() - t0, 3), True
    return round(time.perf_counter() - t0, 3), False


def _screenshot(page: Any, cdp: Any, res: StepResult, plan: JourneyPlan) -> None:
    """The viewport as PNG in the run folder, and a downscaled JPEG (Chromium scales it) for the report."""
    path = plan.out_dir / f"{res.file_stem}.png"
    try:
        page.screenshot(path=str(path), timeout=10_000)
        res.screenshot = str(path.relative_to(plan.shown_root)) if plan.shown_root else str(path)
        width, height = plan.viewport
        x, y = page.evaluate("[window.scrollX, window.scrollY]")
        shot = cdp.send("Page.captureScreenshot", {"format": "jpeg", "quality": 60, "clip": {
            "x": x, "y": y, "width": width, "height": height, "scale": plan.thumbnail_scale}})
        res.thumbnail = shot["data"]
    except Exception as exc:  # noqa: BLE001 - a missing screenshot is said in the step, not fatal
        res.screenshot = res.screenshot or f"(no screenshot: {_clip(_playwright_message(exc))})"

