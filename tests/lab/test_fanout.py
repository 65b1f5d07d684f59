"""The one fan-out helper, without a lab: at most `limit` jobs at once, every job run, results in order, and a
failure raised only after every other job has had its turn; the spread's pending hosts asked in turn."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.experiment.spreadtrial import asking
from orchestrator.lab.fanout import MAX_FANOUT, parallel


class Gauge:
    """Counts the jobs running at once; a job beyond `capacity` fails, as a channel a loaded sshd never opens."""

    def __init__(self, capacity: int):
        self.capacity, self.now, self.peak, self.done = capacity, 0, 0, []
        self.lock = threading.Lock()

    def job(self, i: int, hold: float = 0.01):
        def run() -> int:
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
                over = self.now > self.capacity
            try:
                if over:
                    raise RuntimeError(f"job {i}: more than {self.capacity} open at once")
                time.sleep(hold)
                self.done.append(i)
                return i * 10
            finally:
                with self.lock:
                    self.now -= 1
        return run


def test_at_most_the_limit_run_at_once_and_every_job_runs_in_order():
    g = Gauge(MAX_FANOUT)
    assert parallel([g.job(i) for i in range(200)]) == [i * 10 for i in range(200)]
    assert MAX_FANOUT // 2 < g.peak <= MAX_FANOUT and sorted(g.done) == list(range(200))
    g = Gauge(4)
    assert parallel([g.job(i) for i in range(9)], limit=4) == [i * 10 for i in range(9)] and 1 < g.peak <= 4


def test_a_small_fan_out_runs_everything_at_once():
    g = Gauge(17)
    parallel([g.job(i, hold=0.3) for i in range(17)])
    assert g.peak == 17


def test_the_first_failure_is_raised_after_every_other_job_ran():
    g = Gauge(MAX_FANOUT)
    jobs = [g.job(i) for i in range(40)]
    jobs[3] = lambda: (_ for _ in ()).throw(ValueError("blade4: no"))
    with pytest.raises(ValueError, match="blade4: no"):
        parallel(jobs)
    assert sorted(g.done) == [i for i in range(40) if i != 3]


def test_pending_hosts_are_asked_all_in_a_small_lab_else_in_turn():
    small = [f"blade{i}" for i in range(1, 17)]
    ask = asking(small, 32)
    assert ask(set(small)) == small and ask(set(small)) == small
    hosts = [f"blade{i}" for i in range(1, 201)]
    ask = asking(hosts, 32)
    pending = set(hosts)
    seen: list[str] = []
    for _ in range(7):                                   # ceil(200 / 32) polls cover every host
        turn = ask(pending)
        assert len(turn) == 32
        seen += turn
    assert seen[:200] == hosts and seen[200:] == hosts[:24]      # each once, then round again
    pending -= {f"blade{i}" for i in range(1, 150)}      # most fell: the turn goes on from where it was
    assert ask(pending) == [f"blade{i}" for i in range(150, 182)]
    assert ask(pending) == [f"blade{i}" for i in range(182, 201)] + [f"blade{i}" for i in range(150, 163)]
    assert ask({"blade7", "blade190"}) == ["blade7", "blade190"]
