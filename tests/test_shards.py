"""Two shards and their merge on a real namespace lab (root): the merged run has the whole run's trials and
rows — the fake-lab test (tests/results/test_merge.py) checks the same byte for byte, and every refusal."""

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


def test_two_shards_on_a_real_lab_merge_into_the_whole_run(tmp_path):
    name = f"t-{secrets.token_hex(4)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "labs" / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
    exp = tmp_path / "tiny.yaml"
    exp.write_text(json.dumps({"experiment": "tiny-shards", "lab": str(lab), "rates": [1000, 200, 100],
                               "timeout_s": 20, "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"],
                                                         "lifetime_s": 60}}))
    store = StateStore(tmp_path / "state")
    try:       # the first run leaves the lab up, the others reuse it (built once), the finally takes it down
        runs = [run_experiment(exp, RunOptions(out=tmp_path / out, store=store, keep=True, shard=shard))
                for out, shard in (("s1", (1, 2)), ("s2", (2, 2)), ("whole", None))]
        merged = merge([runs[0].path, runs[1].path], tmp_path / "merged")
        whole = RunDir(runs[2].path)
        assert sorted(len(RunDir(r.path).trials()) for r in runs[:2]) == [1, 2]
        assert [t["trial"] for t in merged.trials()] == [t["trial"] for t in whole.trials()] == \
            ["tcp-r1000-1", "tcp-r200-1", "tcp-r100-1"]
        assert [t["index"] for t in merged.trials()] == [0, 1, 2]          # the plan's, and so the seeds
        assert [{k: r[k] for k in ROW} for r in merged.summary()] == [{k: r[k] for k in ROW} for r in whole.summary()]
        assert all(r["agree"] and r["blocked"] == 1 for r in merged.summary())
    finally:
        lifecycle.down(name, store=store)
        assert store.load(name) is None
