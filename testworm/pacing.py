"""The absolute pacing schedule and the scan loop, independent of sockets and of the real clock.

Attempt i is due at start + i/rate (with a burst b: start + floor(i/b)·b/rate), computed from i every time,
never by adding sleeps, so lateness never accumulates: an attempt that is late is launched as soon as
possible and the ones after it are still due on the original schedule. `run_loop` drives any `Driver` (the
TCP and UDP ones in drivers.py, or a fake in the tests) against an injectable clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol


class Schedule:
    __slots__ = ("start", "rate", "burst")

    def __init__(self, start: float, rate: float, burst: int = 1):
        if not rate > 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.start, self.rate, self.burst = start, rate, burst

    def due(self, i: int) -> float:
        if self.burst == 1:
            return self.start + i / self.rate
        return self.start + (i // self.burst) * self.burst / self.rate


class Driver(Protocol):
    """What the loop needs from an I/O engine."""

    @property
    def in_flight(self) -> int: ...

    def launch(self, i: int, dst: int, due: float) -> None:
        """Start attempt i to dst now (due is when the schedule wanted it, for the log)."""

    def wait(self, until: float) -> None:
        """Handle completions and timeouts; return by `until` (earlier is fine, e.g. after a completion)."""

    def abort(self) -> None:
        """Give up every attempt still in flight (logging each one)."""


def run_loop(driver: Driver, targets: Iterator[int], schedule: Schedule, *, max_attempts: int,
             lifetime_s: float, max_in_flight: int, clock: Callable[[], float],
             guard: Callable[[int], None], stop: Callable[[], str | None]) -> tuple[str, int]:
    """Launch attempts on schedule until a bound is reached; return (stop reason, attempts launched).

    Reasons: `max_attempts` / `targets_exhausted` (after the attempts in flight finished), `lifetime` and
    whatever `stop()` returns (`killed`, `signal`), which abort the attempts in flight at once. `guard(dst)`
    is called before every launch and raises to refuse a target.
    """
    end = schedule.start + lifetime_s
    i = 0
    nxt = schedule.due(0)
    pending = next(targets, None)
    while True:
        now = clock()
        reason = stop()
        if reason is None and now >= end:
            reason = "lifetime"
        if reason is not None:
            driver.abort()
            return reason, i
        while pending is not None and i < max_attempts and nxt <= now and driver.in_flight < max_in_flight:
            guard(pending)
            driver.launch(i, pending, nxt)
            i += 1
            nxt = schedule.due(i)
            pending = next(targets, None) if i < max_attempts else pending
            now = clock()
        finished = pending is None or i >= max_attempts
        if finished and driver.in_flight == 0:
            return ("max_attempts" if i >= max_attempts else "targets_exhausted"), i
        until = end if finished or driver.in_flight >= max_in_flight else min(nxt, end)
        driver.wait(until)
