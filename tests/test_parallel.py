"""`--parallel 2` on a real namespace lab (root): the same trials and rows as a serial run, each agreeing with
the model, its load recorded, both lab instances down afterwards — the fake-lab tests
(tests/experiment/test_pool.py) check the packing, the redo and resume."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import RunOptions, run_experiment
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.root, pytest.mark.slow]
ROW = ("mechanism", "protocol", "rate", "repeats", "ok", "blocked", "agree", "errors")


def test_two_lab_instances_give_the_serial_runs_trials_and_rows(tmp_path):
    name = f"p-{secrets.token_hex(4)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "labs" / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
    exp = tmp_path / "tiny.yaml"
    exp.write_text(json.dumps({"experiment": "tiny-parallel", "lab": str(lab), "rates": [1000, 200, 100],
                               "timeout_s": 20, "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"],
                                                         "lifetime_s": 60}}))
    store = StateStore(tmp_path / "state")
    try:       # the serial run leaves its lab up; the parallel run's first instance reuses it, builds the second
        serial = RunDir(run_experiment(exp, RunOptions(out=tmp_path / "serial", store=store, keep=True)).path)
        par = RunDir(run_experiment(exp, RunOptions(out=tmp_path / "par", store=store, parallel=2)).path)
        assert par.manifest()["parallel"] == {"instances": 2, "labs": [name, f"{name}-2"]}
        assert [t["trial"] for t in par.trials()] == [t["trial"] for t in serial.trials()] == \
            ["tcp-r1000-1", "tcp-r200-1", "tcp-r100-1"]
        assert [t["index"] for t in par.trials()] == [0, 1, 2]
        assert {t["lab_instance"] for t in par.trials()} == {name, f"{name}-2"}
        assert [{k: r[k] for k in ROW} for r in par.summary()] == [{k: r[k] for k in ROW} for r in serial.summary()]
        assert all(r["agree"] and r["blocked"] == 1 for r in par.summary())
        for t in par.trials():
            assert t["load"]["cpus"] >= 1 and 0 <= t["load"]["cpu_busy"] <= 1 and t["load"]["wall_s"] > 0
            assert t["timing"]["disturbed"] is False and t["timing"]["worm"]["attempts"] > 0
        assert store.load(f"{name}-2") is None                  # the instance the run built is down again
    finally:
        for n in (name, f"{name}-2"):
            lifecycle.down(n, store=store)
            assert store.load(n) is None
