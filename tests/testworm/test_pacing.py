"""The schedule and the scan loop against a fake clock: attempts start exactly when due, lateness never
accumulates, and every bound (attempts, lifetime, in-flight, exhaustion, stop signal) holds."""

from __future__ import annotations

import itertools

import pytest

from testworm.errors import InterlockError
from testworm.pacing import Schedule, run_loop


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeDriver:
    """Launching costs `launch_cost` of fake time; an attempt completes `latency` after it started;
    wait() jumps to min(until, next completion) plus `oversleep`."""

    def __init__(self, clock: FakeClock, *, launch_cost=0.0, latency=0.0, oversleep=0.0):
        self.clock, self.launch_cost, self.latency, self.oversleep = clock, launch_cost, latency, oversleep
        self.launched: list[tuple[int, int, float, float]] = []  # (i, dst, due, started)
        self.pending: list[float] = []
        self.aborted = 0
        self.waits = 0

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def launch(self, i, dst, due):
        self.launched.append((i, dst, due, self.clock.t))
        if self.latency > 0:
            self.pending.append(self.clock.t + self.latency)
        self.clock.t += self.launch_cost

    def wait(self, until):
        self.waits += 1
        assert self.waits < 10_000_000, "the loop must not spin for ever"
        nxt = min([until, *self.pending])
        self.clock.t = max(self.clock.t, nxt) + self.oversleep
        self.pending = [p for p in self.pending if p > self.clock.t]

    def abort(self):
        self.aborted += len(self.pending)
        self.pending = []


def loop(driver, clock, *, rate=100.0, n=10**9, targets=None, burst=1, lifetime=1e9, max_in_flight=10**9,
         stop=lambda: None, guard=lambda d: None):
    targets = iter(range(n)) if targets is None else targets
    return run_loop(driver, targets, Schedule(clock(), rate, burst), max_attempts=n, lifetime_s=lifetime,
                    max_in_flight=max_in_flight, clock=clock, guard=guard, stop=stop)


def test_schedule_is_absolute():
    s = Schedule(5.0, 3.0)
    assert [s.due(i) for i in range(4)] == [5.0, 5.0 + 1 / 3, 5.0 + 2 / 3, 6.0]
    assert s.due(3_000_000) == 5.0 + 1_000_000.0  # computed from i, not accumulated
    b = Schedule(0.0, 10.0, burst=20)
    assert [b.due(i) for i in (0, 19, 20, 39, 40)] == [0.0, 0.0, 2.0, 2.0, 4.0]
    with pytest.raises(ValueError):
        Schedule(0.0, 0.0)


@pytest.mark.parametrize("rate", [1.0, 20.0, 1000.0, 5000.0, 10000.0])
def test_every_attempt_starts_exactly_when_due(rate):
    clock = FakeClock()
    d = FakeDriver(clock)
    reason, n = loop(d, clock, rate=rate, n=2000)
    assert (reason, n) == ("max_attempts", 2000)
    start = d.launched[0][3]
    for i, _dst, due, started in d.launched:
        assert due == start + i / rate
        assert started == due
    assert len(d.launched) == 2000


def test_lateness_does_not_accumulate():
    # Each launch costs 30 % of the interval and every wake-up is 40 % of an interval late: each attempt is
    # late, but by a bounded amount, and attempt 10 000 is due (and starts) exactly 10 000 intervals in.
    rate = 1000.0
    clock = FakeClock()
    d = FakeDriver(clock, launch_cost=0.3 / rate, oversleep=0.4 / rate)
    loop(d, clock, rate=rate, n=10_001)
    start = d.launched[0][3]
    lateness = [started - due for _, _, due, started in d.launched]
    assert max(lateness) < 0.75 / rate
    assert d.launched[-1][2] == start + 10.0
    achieved = (len(d.launched) - 1) / (d.launched[-1][3] - d.launched[0][3])
    assert abs(achieved / rate - 1) < 1e-3


def test_a_stall_is_caught_up_on_the_original_schedule():
    rate = 100.0
    clock = FakeClock()
    d = FakeDriver(clock)
    stalled = []

    def stop():
        if len(d.launched) == 50 and not stalled:  # the process is descheduled for 0.25 s
            clock.t += 0.25
            stalled.append(True)
        return None

    loop(d, clock, rate=rate, n=200, stop=stop)
    due = {i: (dd, st) for i, _, dd, st in d.launched}
    # the 25 attempts that fell due during the stall go out at once, then the schedule resumes exactly
    assert all(due[i][1] == due[50][1] for i in range(50, 75))
    assert all(due[i][1] == due[i][0] for i in range(76, 200))
    assert due[199][0] == d.launched[0][3] + 1.99


def test_in_flight_bound_holds_and_slows_the_scan():
    rate, latency, cap = 1000.0, 0.05, 10
    clock = FakeClock()
    d = FakeDriver(clock, latency=latency)
    peak = []
    orig = d.launch

    def launch(i, dst, due):
        peak.append(d.in_flight)
        orig(i, dst, due)
    d.launch = launch
    reason, n = loop(d, clock, rate=rate, n=100, max_in_flight=cap)
    assert (reason, n) == ("max_attempts", 100)
    assert max(peak) == cap - 1
    # at most `cap` attempts per `latency`: 100 attempts need ≥ 9 full latencies
    assert d.launched[-1][3] - d.launched[0][3] >= 9 * latency


def test_lifetime_stops_and_aborts_what_is_in_flight():
    clock = FakeClock()
    d = FakeDriver(clock, latency=10.0)
    reason, n = loop(d, clock, rate=10.0, lifetime=2.0)
    assert reason == "lifetime"
    assert n == 20  # due at 0.0 … 1.9
    assert all(started < d.launched[0][3] + 2.0 for *_, started in d.launched)
    assert d.aborted == 20


def test_max_attempts_waits_for_attempts_in_flight():
    clock = FakeClock()
    d = FakeDriver(clock, latency=3.0)
    reason, n = loop(d, clock, rate=10.0, n=5)
    assert (reason, n, d.aborted) == ("max_attempts", 5, 0)
    assert clock.t >= d.launched[-1][3] + 3.0


def test_targets_exhausted_is_noticed_without_waiting_for_another_interval():
    clock = FakeClock()
    d = FakeDriver(clock)
    reason, n = loop(d, clock, rate=1.0, n=100, targets=iter([7, 8, 9]))
    assert (reason, n) == ("targets_exhausted", 3)
    assert clock.t == d.launched[0][3] + 2.0


def test_stop_signal_is_reported_and_aborts():
    clock = FakeClock()
    d = FakeDriver(clock, latency=5.0)
    reason, n = loop(d, clock, rate=10.0, stop=lambda: "killed" if len(d.launched) >= 7 else None)
    assert (reason, n, d.aborted) == ("killed", 7, 7)


def test_guard_refusal_stops_before_the_launch():
    clock = FakeClock()
    d = FakeDriver(clock)

    def guard(dst):
        if dst == 3:
            raise InterlockError("outside")
    with pytest.raises(InterlockError):
        loop(d, clock, rate=100.0, n=10, guard=guard)
    assert [dst for _, dst, _, _ in d.launched] == [0, 1, 2]


def test_burst_launches_together():
    clock = FakeClock()
    d = FakeDriver(clock)
    loop(d, clock, rate=10.0, n=45, burst=20)
    times = [st - d.launched[0][3] for *_, st in d.launched]
    assert [k for k, _ in itertools.groupby(times)] == [0.0, 2.0, 4.0]
