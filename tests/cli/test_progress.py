"""`testbed run`'s progress: the ETA from the model's expected times, scaled by how the finished trials
compared with theirs, and one line per trial when the output is not a terminal."""

from __future__ import annotations

import io
from dataclasses import dataclass

from rich.console import Console

from orchestrator.cli.progress import Sweep, SweepBar, fmt_s


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@dataclass
class T:
    protocol: str
    rate: float
    repeat: int

    @property
    def id(self) -> str:
        return f"{self.protocol}-r{self.rate:g}-{self.repeat}"


def test_eta_is_the_expected_time_left_scaled_by_the_finished_trials():
    clock = Clock()
    s = Sweep(total=4, done=0, expected_s=40.0, clock=clock)
    assert s.eta_s() == 40.0                       # nothing measured yet: the model's figure as it is
    s.trial("a")
    clock.t += 4.0
    assert s.eta_s() == 36.0                       # the current trial's time counts down
    assert s.finished(10.0) == 4.0                 # took 4 s where 10 were expected: the rest goes faster
    assert s.ratio() == 0.4 and s.eta_s() == 30.0 * 0.4
    s.trial("b")
    clock.t += 26.0                                # far slower than expected: never a negative ETA
    assert s.eta_s() == 0.0
    s.finished(10.0)
    assert s.done == 2 and s.ratio() == 1.5 and s.eta_s() == 20.0 * 1.5


def test_trials_side_by_side_count_a_share_of_their_time_towards_the_eta():
    s = Sweep(total=4, done=0, expected_s=20.0, clock=Clock())      # 4 trials of 10 s expected on 2 instances
    assert s.finished(10.0, took=12.0, share=2) == 12.0            # the trial's own wall time, as it was
    assert s.ratio() == 1.2 and s.eta_s() == 15.0 * 1.2


def test_a_resumed_sweep_counts_the_trials_done_before():
    s = Sweep(total=8, done=5, expected_s=9.0, clock=Clock())
    assert (s.done, s.total, s.eta_s()) == (5, 8, 9.0)


def test_fmt_s():
    assert [fmt_s(x) for x in (None, -1, 0.4, 59, 61, 3600 + 61)] == ["?", "0s", "0s", "59s", "1m01s", "1h01m"]


def test_off_a_terminal_one_line_per_trial_with_count_verdict_and_eta():
    buf = io.StringIO()
    con = Console(file=buf, width=200, color_system=None)       # not a terminal: no bar
    bar = SweepBar(2, 0, 20.0, console=con)
    rec = {"status": "ok", "measured": {"stop_s": 5.25}, "model": {"stop_s": 5.25}, "agreement": {"ok": True}}
    for t in (T("tcp", 20, 1), T("udp", 20, 1)):
        bar.trial(t)
        bar.done(t, rec, 10.0)
    bar.close()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "sweep: 2 trials (0 done before), expected 20s"
    assert lines[1].startswith("trial 1/2 tcp-r20-1: ok stopped in 5.250 s · agrees with the model (")
    assert lines[2].startswith("trial 2/2 udp-r20-1: ok stopped in 5.250 s") and lines[2].endswith("; eta 0s)")
    assert len(lines) == 3


def test_a_disagreeing_trial_and_a_baseline_trial_say_so():
    buf = io.StringIO()
    bar = SweepBar(2, 0, 10.0, console=Console(file=buf, width=200, color_system=None))
    t = T("tcp", 5, 1)
    bar.trial(t)
    bar.done(t, {"status": "ok", "measured": {"stop_s": 9.0}, "model": {}, "agreement": {"ok": False}}, 5.0)
    bar.trial(t)
    bar.done(t, {"status": "ok", "measured": {"wire_attempts": 50, "achieved_rate": 5.0}, "model": None}, 5.0)
    out = buf.getvalue()
    assert "ok stopped in 9.000 s · DISAGREES with the model" in out
    assert "tcp-r5-1: ok 50 attempts on the wire at 5.0/s (" in out


def test_a_parallel_trials_line_says_its_own_time_its_lab_and_the_load():
    buf = io.StringIO()
    bar = SweepBar(4, 0, 20.0, console=Console(file=buf, width=300, color_system=None))
    rec = {"status": "ok", "measured": {"stop_s": 5.25}, "model": {"stop_s": 5.25}, "agreement": {"ok": True},
           "load": {"trials_running": 3, "cpu_busy": 0.634}, "redone": [{}],
           "timing": {"disturbed": True, "reasons": ["the throttle released 31.0 ms late (tolerance 20 ms)"]}}
    bar.done(T("tcp", 20, 1), rec, 10.0, took=12.04, where="ss-2", share=2)
    assert buf.getvalue().splitlines()[1] == (
        "trial 1/4 tcp-r20-1: ok stopped in 5.250 s · agrees with the model (12.0 s on ss-2, 3 running, CPUs 63 % "
        "busy, redone 1×, DISTURBED: the throttle released 31.0 ms late (tolerance 20 ms); eta 18s)")
