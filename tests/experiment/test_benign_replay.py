"""A replayed trace in a namespace lab (root, slow): tests/fixtures/benign-trace.csv, ten TCP connections over
5 s between two servers, through williamson with a working set of one destination, run twice with the same
seed (two `testbed run`s on one lab). Both runs replay the same connections to the same servers; every
connection's delay on the wire agrees with the model's (the same for both), so the two runs' delays agree
with each other connection by connection; the switches between servers wait for a release."""

from __future__ import annotations

import csv
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "tests" / "fixtures" / "benign-trace.csv"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def rows(out: Path) -> list[dict[str, str]]:
    (t,) = RunDir(out).trials()
    assert t["status"] == "ok", t.get("reason")
    assert t["agreement"]["ok"], t["agreement"]
    with open(out / "trials" / t["trial"] / "benign.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_replayed_trace_gives_the_same_delays_on_two_runs_with_the_same_seed(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root: builds a namespace lab")
    state = tmp_path / "state"
    monkeypatch.setenv("TESTBED_STATE_DIR", str(state))
    name = f"replay-{secrets.token_hex(2)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "labs" / "stopping-speed.yaml").read_text().replace("name: stopping-speed",
                                                                              f"name: {name}"))
    exp = tmp_path / "replay.yaml"
    exp.write_text(json.dumps({
        "experiment": "replay", "kind": "benign", "lab": str(lab), "seed": 3, "rates": [1],
        "benign": {"servers": 2, "trace": str(TRACE), "duration_s": 6, "timeout_s": 5},
        "throttle": {"placement": "host", "working_set_size": 1, "release_period_s": 1.0, "delay_queue_limit": 20}}))
    runs = [tmp_path / "run1", tmp_path / "run2"]
    try:
        first = cli("run", str(exp), "--out", str(runs[0]), "--index", str(tmp_path / "i.sqlite"), "--keep")
        assert first.returncode == 0, first.stderr[-3000:]
        again = cli("run", str(exp), "--out", str(runs[1]), "--index", str(tmp_path / "i.sqlite"))
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"using lab {name}, which is already up" in again.stderr + again.stdout
    finally:
        lifecycle.down(name, store=StateStore(state))
    a, b = rows(runs[0]), rows(runs[1])
    assert len(a) == len(b) == 10
    assert [(r["t_sched"], r["dst"], r["dport"]) for r in a] == [(r["t_sched"], r["dst"], r["dport"]) for r in b]
    assert len({r["dst"] for r in a}) == 2 and all(r["outcome"] == "ok" for r in a + b)
    assert [r["model_wire_s"] for r in a] == [r["model_wire_s"] for r in b]      # the same schedule: one model
    for x, y in zip(a, b, strict=True):      # each within max(20 ms, 3 %) of the model: of each other within twice
        model = float(x["model_wire_s"])
        assert abs(float(x["wire_s"]) - float(y["wire_s"])) <= 2 * max(0.02, 0.03 * model), (x, y)
    waited = [float(r["wire_s"]) for r in a if float(r["model_wire_s"]) > 0.1]
    assert len(waited) >= 3 and all(w > 0.1 for w in waited)
