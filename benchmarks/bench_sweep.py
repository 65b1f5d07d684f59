"""The full paper-style sweep on the namespace provider: wall time, and the overhead between trials.

Runs labs/paper-sweep.yaml (rates 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000; TCP and UDP; 3 repeats) — about
half an hour, most of it the slow rates' own stopping times — or a quick subset with --quick. The overhead of
a trial is everything but waiting for the stop condition (reset + start + trigger + collect + analyse; target
≤ 2 s), taken from the phases each trial records. Run as root from the repository root:
    .venv/bin/python benchmarks/bench_sweep.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.experiment.rundir import RunDir  # noqa: E402
from orchestrator.experiment.runner import RunOptions, run_experiment  # noqa: E402
from orchestrator.results.publish import Publisher  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="rates 20, 100, 1000 with 1 repeat")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_sweep: needs root")
    out = a.out or Path(tempfile.mkdtemp(prefix="wt-sweep-")) / "run"
    t0 = time.monotonic()
    pub = Publisher(out.parent / "index.sqlite")
    rdir = run_experiment(REPO / "labs" / "paper-sweep.yaml", RunOptions(
        out=out, rates=[20, 100, 1000] if a.quick else None, repeat=1 if a.quick else None,
        on_open=pub.opened, on_finish=pub.finished))
    wall = time.monotonic() - t0
    trials = RunDir(rdir.path).trials()
    over = [sum(v for k, v in t["phases"].items() if k != "run") for t in trials]
    runs = [t["phases"].get("run", 0) for t in trials]
    phases = sorted({k for t in trials for k in t["phases"]})
    agree = sum(1 for t in trials if (t.get("agreement") or {}).get("ok"))
    print(f"sweep: {len(trials)} trials in {wall:.0f} s wall ({sum(runs):.0f} s waiting for the stop condition)")
    print(f"overhead per trial (target ≤ 2 s): mean {statistics.fmean(over):.2f} s, p50 {statistics.median(over):.2f} s, "
          f"max {max(over):.2f} s")
    for p in phases:
        vals = [t["phases"].get(p, 0) for t in trials]
        print(f"  {p:<8} mean {statistics.fmean(vals):.3f} s  max {max(vals):.3f} s")
    print(f"agreement with the model: {agree}/{len(trials)} trials; run directory: {rdir.path}")


if __name__ == "__main__":
    main()
