"""`testbed run --parallel`: a small sweep's wall time serial and on K lab instances, in the same process, and
whether both runs agree with the model trial for trial. Not run in CI (it builds labs: root).

    flock /tmp/wt-heavy.lock .venv/bin/python benchmarks/bench_parallel.py                 # K = 4
    flock /tmp/wt-heavy.lock .venv/bin/python benchmarks/bench_parallel.py --parallel 2 --rates 100,20,5

labs/stopping-speed.yaml under a random name, a private state directory; every lab it builds is taken down.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--rates", default="1000,100,20,10")
    args = ap.parse_args()
    from orchestrator.experiment import pool
    from orchestrator.experiment.rundir import RunDir
    from orchestrator.experiment.runner import RunOptions, run_experiment
    from orchestrator.lab import lifecycle
    from orchestrator.providers.state import StateStore

    name = f"bp-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        d = Path(tmp)
        lab = d / "lab.yaml"
        lab.write_text((REPO / "labs/stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
        exp = d / "bench.yaml"
        exp.write_text(json.dumps({"experiment": "bench-parallel", "lab": str(lab), "timeout_s": 30,
                                   "rates": [float(r) for r in args.rates.split(",")],
                                   "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"], "lifetime_s": 60}}))
        store = StateStore(d / "state")
        out = {}
        try:
            for label, k in (("serial", 1), (f"parallel {args.parallel}", args.parallel)):
                t0 = time.monotonic()
                rdir = RunDir(run_experiment(exp, RunOptions(out=d / label.replace(" ", "-"), store=store,
                                                             parallel=k)).path)
                wall = time.monotonic() - t0
                trials = rdir.trials()
                agree = sum(bool((t.get("agreement") or {}).get("ok")) for t in trials)
                out[label] = [t["trial"] for t in trials]
                print(f"{label:>12}: {wall:6.1f} s wall, {len(trials)} trials, {agree} agree with the model",
                      flush=True)
        finally:
            for i in range(1, args.parallel + 1):
                lifecycle.down(pool.instance_name(name, i), store=store)
        same = len(set(map(tuple, out.values()))) == 1
        print(f"same trials: {same}")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
