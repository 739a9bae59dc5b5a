"""One poll-until loop for every check that waits for something (a job's row, readiness, a log line)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class PollResult(Generic[T]):
    """The last value `fn` returned, seconds since the poll started, how many calls, and whether the
    timeout ended it (`done` never held)."""

    value: T
    elapsed_s: float
    attempts: int
    timed_out: bool


def poll_until(fn: Callable[[], T], *, timeout_s: float, interval_s: float,
               done: Callable[[T], bool] = bool, clock: Callable[[], float] = time.monotonic,
               started: float | None = None) -> PollResult[T]:
    """Call `fn` until `done(value)` holds or `timeout_s` has passed, sleeping `interval_s` between calls.

    `fn` is always called at least once; the timeout is checked after each call, so the last value is read
    at or after the deadline when it times out. `started` (a `clock` reading) counts time already spent,
    e.g. by the command that took the service down."""
    t0 = clock() if started is None else started
    attempts = 0
    while True:
        value = fn()
        attempts += 1
        if done(value):
            return PollResult(value, clock() - t0, attempts, False)
        if clock() - t0 >= timeout_s:
            return PollResult(value, clock() - t0, attempts, True)
        time.sleep(interval_s)
