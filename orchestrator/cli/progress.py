"""`testbed run`'s progress: trials done, the current trial, and an ETA from the model's expected times.

The runner calls `progress(total, done, expected_s)` once the lab is ready, then `.trial(t)` as a trial starts,
`.done(t, record, expected_s)` as it ends (expected_s: the model's stopping time or the timeout, plus the
per-trial overhead — runner.estimate_s), and `.close()`. The ETA is the expected time of the trials left,
scaled by how the finished ones compared with theirs (measured/expected wall time), less the time the current
trial has run. On a terminal a bar (rich) shows it; elsewhere — a log, CI, a pipe — one line per trial.
`Sweep` is the arithmetic alone, clock injected, for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def fmt_s(s: float | None) -> str:
    if s is None:
        return "?"
    s = max(0, round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Sweep:
    """Counts and the ETA of a sweep of `total` trials, `done` of them finished before (a resumed run)."""

    def __init__(self, total: int, done: int, expected_s: float, clock: Callable[[], float] = time.monotonic):
        self.total, self.done, self.left_s = total, done, max(expected_s, 0.0)
        self.clock = clock
        self.spent_s = self.expected_done_s = 0.0
        self.started: float | None = None
        self.current: str | None = None

    def trial(self, label: str) -> None:
        self.current, self.started = label, self.clock()

    def finished(self, expected_s: float, took: float | None = None, share: int = 1) -> float:
        """A trial ended (after `took` s, by default since `trial`); returns its wall time. With `share` K (K
        trials side by side) a trial's expected and measured times count 1/K towards the sweep's wall time."""
        if took is None:
            took = self.clock() - (self.started if self.started is not None else self.clock())
        self.done += 1
        self.spent_s += took / share
        self.expected_done_s += expected_s / share
        self.left_s = max(self.left_s - expected_s / share, 0.0)
        self.current, self.started = None, None
        return took

    def ratio(self) -> float:
        """Measured over expected wall time of the trials finished here (1 before any)."""
        return self.spent_s / self.expected_done_s if self.expected_done_s > 0 else 1.0

    def eta_s(self) -> float:
        running = self.clock() - self.started if self.started is not None else 0.0
        return max(self.left_s * self.ratio() - running, 0.0)


def verdict(rec: dict[str, Any]) -> str:
    """`stopped in 5.250 s · agrees with the model` — what a finished trial measured, in a few words."""
    m = rec.get("measured") or {}
    stop = f"stopped in {m['stop_s']:.3f} s" if m.get("stop_s") is not None else rec.get("reason") or ""
    agree = (rec.get("agreement") or {}).get("ok")
    if rec.get("kind") == "benign" and rec["status"] == "ok":   # the workload alone: its connections, false blocks
        fp = m.get("fp") or {}
        said = [stop, f"{m.get('connections')} connections",
                f"{fp['false_block_hosts']}/{fp['hosts']} host(s) falsely blocked" if fp.get("hosts") else "",
                "" if agree is None else "agrees with the model" if agree else "DISAGREES with the model"]
    elif rec.get("model") is None and rec["status"] == "ok":      # a baseline: no throttle, no model
        said = [stop, f"{m.get('wire_attempts')} attempts on the wire at {m.get('achieved_rate') or 0:.1f}/s"]
    else:
        said = [stop, "" if agree is None else "agrees with the model" if agree else "DISAGREES with the model"]
    return " · ".join(x for x in said if x)


def load_note(rec: dict[str, Any]) -> str:
    """`, 3 running, CPUs 64 % busy, redone 1×` — the machine's load over a trial, as its record has it."""
    ld, timing = rec.get("load") or {}, rec.get("timing") or {}
    out = ""
    if (ld.get("trials_running") or 1) > 1:
        out += f", {ld['trials_running']} running"
    if ld.get("cpu_busy") is not None:
        out += f", CPUs {ld['cpu_busy'] * 100:.0f} % busy"
    if rec.get("redone"):
        out += f", redone {len(rec['redone'])}×"
    if timing.get("disturbed"):
        out += ", DISTURBED: " + "; ".join(timing.get("reasons") or [])
    return out


def label(t) -> str:
    return f"{t.protocol} {t.rate:g}/s #{t.repeat}"


class SweepBar:
    """The runner's progress callback: a bar on a terminal, one line per trial otherwise (on `console`)."""

    def __init__(self, total: int, done: int, expected_s: float, *, console=None):
        if console is None:
            from orchestrator.cli.common import err as console
        self.console = console
        self.sweep = Sweep(total, done, expected_s)
        self.p = None
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("trials"), TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"),
                              console=getattr(console, "real", console), transient=False)   # LazyConsole
            self.p.start()
            self.task = self.p.add_task("sweep", total=total, completed=done, eta=fmt_s(self.sweep.eta_s()))
        else:
            console.print(f"sweep: {total} trials ({done} done before), expected {fmt_s(expected_s)}",
                          highlight=False)

    def trial(self, t) -> None:
        self.sweep.trial(t.id)
        if self.p is not None:
            self.p.update(self.task, description=f"{label(t)}", eta=fmt_s(self.sweep.eta_s()))

    def done(self, t, rec, expected_s: float, *, took: float | None = None, where: str | None = None,
             share: int = 1) -> None:
        """`rec`: the trial's record (a TrialRecord, or its dict as trials.jsonl holds it). A parallel run of
        `share` instances says the trial's own wall time (`took`) and its lab instance (`where`)."""
        rec = rec.to_dict() if hasattr(rec, "to_dict") else rec
        took = self.sweep.finished(expected_s, took, share)
        s = self.sweep
        said = verdict(rec)
        line = (f"trial {s.done}/{s.total} {t.id}: {rec['status']}{' ' + said if said else ''} ({took:.1f} s"
                f"{' on ' + where if where else ''}{load_note(rec)}; eta {fmt_s(s.eta_s())})")
        if self.p is not None:
            self.p.update(self.task, completed=s.done, eta=fmt_s(s.eta_s()))
        self.console.print(line, highlight=False)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
