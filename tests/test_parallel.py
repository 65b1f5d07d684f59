"""`--parallel 2`, and two shards with their merge, on one real namespace lab (root): each gives the serial
run's trials and rows, each agreeing with the model, the load recorded, every lab instance down afterwards —
the fake-lab tests check the packing, the redo and resume (tests/experiment/test_pool.py) and the merge byte
for byte with every refusal (tests/results/test_merge.py)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import RunOptions, run_experiment
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore
from orchestrator.results.merge import merge

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.root, pytest.mark.slow]
ROW = ("mechanism", "protocol", "rate", "repeats", "ok", "blocked", "agree", "errors")
TRIALS = ["tcp-r1000-1", "tcp-r200-1", "tcp-r100-1"]


def _rows(run: RunDir) -> list[dict]:
    return [{k: r[k] for k in ROW} for r in run.summary()]


def test_two_lab_instances_and_two_merged_shards_give_the_serial_runs_trials_and_rows(tmp_path):
    name = f"p-{secrets.token_hex(4)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "labs" / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
    exp = tmp_path / "tiny.yaml"
    exp.write_text(json.dumps({"experiment": "tiny-parallel", "lab": str(lab), "rates": [1000, 200, 100],
                               "timeout_s": 20, "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"],
                                                         "lifetime_s": 60}}))
    store = StateStore(tmp_path / "state")
    try:       # the serial run leaves its lab up; the shards reuse it, the parallel run's first instance too
        serial = RunDir(run_experiment(exp, RunOptions(out=tmp_path / "serial", store=store, keep=True)).path)
        assert [t["trial"] for t in serial.trials()] == TRIALS
        assert all(r["agree"] and r["blocked"] == 1 for r in serial.summary())

        shards = [run_experiment(exp, RunOptions(out=tmp_path / f"s{i}", store=store, keep=True, shard=(i, 2)))
                  for i in (1, 2)]
        assert sorted(len(RunDir(r.path).trials()) for r in shards) == [1, 2]
        merged = merge([r.path for r in shards], tmp_path / "merged")
        assert [t["trial"] for t in merged.trials()] == TRIALS
        assert [t["index"] for t in merged.trials()] == [0, 1, 2]          # the plan's, and so the seeds
        assert _rows(merged) == _rows(serial)

        par = RunDir(run_experiment(exp, RunOptions(out=tmp_path / "par", store=store, parallel=2)).path)
        assert par.manifest()["parallel"] == {"instances": 2, "labs": [name, f"{name}-2"]}
        assert [t["trial"] for t in par.trials()] == TRIALS and [t["index"] for t in par.trials()] == [0, 1, 2]
        assert {t["lab_instance"] for t in par.trials()} == {name, f"{name}-2"}
        assert _rows(par) == _rows(serial)
        for t in par.trials():
            assert t["load"]["cpus"] >= 1 and 0 <= t["load"]["cpu_busy"] <= 1 and t["load"]["wall_s"] > 0
            assert t["timing"]["disturbed"] is False and t["timing"]["worm"]["attempts"] > 0
        assert store.load(f"{name}-2") is None                  # the instance the run built is down again
    finally:
        for n in (name, f"{name}-2"):
            lifecycle.down(n, store=store)
            assert store.load(n) is None
