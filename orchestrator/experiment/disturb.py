"""Was a trial's timing disturbed by the machine? The machine's load during each trial (the load average, the
share of the CPUs that were busy, the runner's own CPU time, how many trials ran beside it) and the timing the
system under test shows in logs the runner does not write: the throttle's release lateness (its event log:
how long after its due tick each verdict came, agreement.decision_jitter) and the worm's send lateness (its
own log: each attempt's send time against its due time). A trial late beyond the agreement's stopping-time
tolerance is flagged and redone — at most MAX_REDOS times — and the record says so (`load`, `timing`,
`redone`). Judging is pure (`judge`); sampling the machine is `LoadMeter`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.experiment.record import TrialRecord, TrialSpec
from orchestrator.experiment.setup import Setup

MAX_REDOS = 2
AFTER_LAST_S = 0.010    # a release due this soon after the worm's last logged attempt is still judged (margin)


# ---------------------------------------------------------------- the machine's load (I/O)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = f[3] + (f[4] if len(f) > 4 else 0)          # idle + iowait
    return sum(f) - idle, sum(f)


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class LoadMeter:
    """The machine's load over one trial: `start()` before it, `stop()` after, → the record's `load`."""

    def __init__(self, running: Callable[[], int] | None = None):
        self.running = running or (lambda: 1)

    def start(self) -> dict[str, Any]:
        return {"wall": time.monotonic(), "ticks": _cpu_ticks(), "load": _loadavg(), "cpu": time.process_time(),
                "thread_cpu": time.thread_time(), "running": self.running()}

    def stop(self, s: Mapping[str, Any]) -> dict[str, Any]:
        wall = time.monotonic() - s["wall"]
        ticks, cpus = _cpu_ticks(), os.cpu_count() or 1
        busy = None
        if ticks and s["ticks"] and ticks[1] > s["ticks"][1]:
            busy = (ticks[0] - s["ticks"][0]) / (ticks[1] - s["ticks"][1])
        return {"loadavg_1m": [s["load"], _loadavg()], "cpu_busy": _r(busy), "cpus": cpus,
                "runner_cpu_s": _r(time.process_time() - s["cpu"]),
                "worker_cpu_s": _r(time.thread_time() - s["thread_cpu"]), "wall_s": _r(wall),
                "trials_running": max(s["running"], self.running())}


def _r(x: float | None, n: int = 4) -> float | None:
    return None if x is None else round(x, n)


# ---------------------------------------------------------------- the timing the system under test shows (pure)


def worm_lateness(lines: Iterable[str]) -> dict[str, Any]:
    """The worm's send lateness from its own log: t_mono − due_mono of its attempts (median, 99th centile, max),
    and the span of its attempts on its clock (`first_mono`, `last_mono`)."""
    late, first, last = [], None, None
    for line in lines:
        if '"attempt"' not in line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "attempt" and isinstance(ev.get("t_mono"), (int, float)) \
                and isinstance(ev.get("due_mono"), (int, float)):
            late.append(max(0.0, ev["t_mono"] - ev["due_mono"]))
            first = ev["t_mono"] if first is None else min(first, ev["t_mono"])
            last = ev["t_mono"] if last is None else max(last, ev["t_mono"])
    late.sort()
    if not late:
        return {"attempts": 0, "late_p50_s": None, "late_p99_s": None, "late_max_s": None}
    return {"attempts": len(late), "late_p50_s": _r(late[len(late) // 2], 6),
            "late_p99_s": _r(late[min(len(late) - 1, int(len(late) * 0.99))], 6), "late_max_s": _r(late[-1], 6),
            "first_mono": first, "last_mono": last}


def release_lateness(lines: Iterable[str]) -> dict[str, Any]:
    """Where the throttle's releases were late, from its event log (its last session, as decision_jitter reads
    it): the worst one's lateness and its due time on the daemon's clock, and the releases late beyond 10 ms
    (`late`: [due_mono, lateness] each, at most 20)."""
    rel: list[tuple[float, float]] = []
    for line in lines:
        if '"config"' in line or '"released"' in line:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "config":
                rel = []
            elif ev.get("event") == "released" and isinstance(ev.get("t_mono"), (int, float)) \
                    and isinstance(ev.get("due_mono"), (int, float)):
                rel.append((float(ev["due_mono"]), max(0.0, float(ev["t_mono"]) - float(ev["due_mono"]))))
    if not rel:
        return {"releases": 0, "worst_due_mono": None, "late": [], "all": []}
    worst = max(rel, key=lambda x: x[1])
    return {"releases": len(rel), "worst_due_mono": worst[0],
            "late": [[d, _r(x, 6)] for d, x in rel if x > 0.010][:20], "all": rel}


def judge(rec: Mapping[str, Any], worm: Mapping[str, Any], tolerance_s: float,
          releases: Mapping[str, Any] | None = None, window: bool = False) -> dict[str, Any]:
    """A trial's `timing`: the throttle's worst release lateness (from the model's jitter, itself from the
    daemon's log) and the worm's 99th-centile send lateness, each against `tolerance_s` (the agreement's
    stopping-time tolerance); `disturbed` when either is beyond it, with the reasons. With the daemon's
    `releases` (release_lateness) it also says when the worst release was due, relative to the worm's first
    attempt (`release_late_at_s`; the worm's attempts span `worm_span_s`), and which releases were late.

    `window` (the worm and the throttle on one clock): a release due after the worm's last attempt is left
    out of the judgement — no attempt is left to be ordered against it, so it cannot move the block or the
    attempts out (it falls while the runner stops the trial: tcp-r1-1 of the paper sweep was once redone
    for a release 31 ms late, due 1 s after the worm's last attempt). It stays in `release_late_max_all_s`."""
    jitter = ((rec.get("model") or {}).get("orderings") or {}).get("jitter") or {}
    release = everything = jitter.get("late_max_s")
    first, last = worm.get("first_mono"), worm.get("last_mono")
    pairs = (releases or {}).get("all")
    if window and pairs and isinstance(last, (int, float)) and isinstance(release, (int, float)):
        release = max((x for d, x in pairs if d <= last + AFTER_LAST_S), default=None)
    reasons = []
    if isinstance(release, (int, float)) and release > tolerance_s:
        reasons.append(f"the throttle released {release * 1000:.1f} ms late (tolerance {tolerance_s * 1000:.0f} ms)")
    p99 = worm.get("late_p99_s")
    if isinstance(p99, (int, float)) and p99 > tolerance_s:
        reasons.append(f"the worm sent 1 % of its attempts over {p99 * 1000:.1f} ms late "
                       f"(tolerance {tolerance_s * 1000:.0f} ms)")
    out = {"release_late_max_s": release, "releases": jitter.get("releases"), "worm": dict(worm),
           "tolerance_s": tolerance_s, "disturbed": bool(reasons), "reasons": reasons}
    if release != everything:
        out["release_late_max_all_s"] = everything
    if releases and isinstance(first, (int, float)) and isinstance(last, (int, float)):
        due = releases.get("worst_due_mono")
        out["release_late_at_s"] = None if due is None else _r(due - first, 3)
        out["worm_span_s"] = _r(last - first, 3)
        out["late_releases"] = [[_r(d - first, 3), x] for d, x in releases.get("late") or []]
    return out


# ---------------------------------------------------------------- a trial, judged and redone when disturbed


def judged_trial(st: Setup, t: TrialSpec, run: Callable[[Setup, TrialSpec], TrialRecord], *,
                 meter: LoadMeter | None = None, redos: int = MAX_REDOS) -> TrialRecord:
    """Run trial `t` with `run` (trial.run_trial), its load and timing in the record; redo it (up to `redos`
    times) while its timing was disturbed. The record kept is the last; `redone` lists the ones before it."""
    meter = meter or LoadMeter()
    before: list[dict[str, Any]] = []
    tol = st.tolerance["stop_abs_s"]
    while True:
        s = meter.start()
        # a try that may still be redone ends as soon as the throttle shows it late (trial.wait_stop); the
        # last one runs to its end whatever happens, and is kept, flagged if need be
        rec = run(dataclasses.replace(st, abort_late_s=tol) if len(before) < redos else st, t)
        if rec.status == "interrupted":
            return rec
        rec.extra["load"] = meter.stop(s)
        rec.extra["timing"] = timing = judge(rec.to_dict(), _log_of(st, rec, "worm_log", worm_lateness),
                                             tol, _log_of(st, rec, "throttle_log", release_lateness),
                                             window=bool(getattr(st, "shared_clock", False)))
        if rec.extra.get("disturbed_early"):          # ended early: never a result, whatever the logs say
            timing["disturbed"] = True
            timing["reasons"] = [rec.extra["disturbed_early"], *timing["reasons"]]
        if before:
            rec.extra["redone"] = before
        if not timing["disturbed"] or len(before) >= redos or st.stop.is_set():
            return rec
        before.append({"started": rec.started, "status": rec.status, "load": rec.extra["load"],
                       "reasons": timing["reasons"], "stop_s": rec.measured.get("stop_s"),
                       "out_before_block": rec.measured.get("out_before_block"),
                       "agreement_ok": (rec.evaluation.agreement or {}).get("ok") if rec.evaluation else None,
                       "timing": {k: timing.get(k) for k in ("release_late_at_s", "worm_span_s", "late_releases")
                                  if k in timing}}
                      | _set_aside(st, rec, len(before) + 1))


def _log_of(st: Setup, rec: TrialRecord, key: str, read: Callable[[Iterable[str]], dict[str, Any]]) -> dict[str, Any]:
    rel = (rec.files or {}).get(key)
    path = st.run.path / rel if rel else None
    if path is None or not path.is_file():
        return read([])
    with open(path) as fh:
        return read(fh)


def _set_aside(st: Setup, rec: TrialRecord, n: int) -> dict[str, Any]:
    """A discarded try's files moved to `trials/<id>/redone-<n>/` (the next try writes the trial's own), so a
    disturbance can be looked at afterwards: {"files": {key: path}} of the moved ones."""
    moved: dict[str, str] = {}
    for key, rel in (rec.files or {}).items():
        src = st.run.path / rel
        if not src.is_file():
            continue
        dest = src.parent / f"redone-{n}" / src.name
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            src.replace(dest)
        except OSError:
            continue
        moved[key] = str(dest.relative_to(st.run.path))
    return {"files": moved} if moved else {}
