"""Benign traffic beside the worm in a namespace lab (root, slow): williamson in the host (working set 2, a delay
queue of 30, so the block falls between release ticks: the combined model has no tie orderings yet), the host
in use at 2 connections/s for 3 s, then a worm at 20/s. The worm is contained with the
attempts out the combined model (benign schedule and worm through one throttle core) predicts; every benign
connection is joined with its SYN on the wire and agrees with the same model's delay; the connections after
the block are dropped, as the model says."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore
from tests.support.privatelab import private_lab

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_a_worm_beside_benign_traffic_is_contained_as_the_combined_model_says(tmp_path, monkeypatch):
    name, lab, state = private_lab(tmp_path, monkeypatch, "benign-lab.yaml", "wb-", {"count: 20": "count: 6"})
    exp = tmp_path / "wb.yaml"
    exp.write_text(json.dumps({
        "experiment": "wb", "kind": "stopping-speed", "lab": str(lab), "seed": 1, "rates": [20],
        "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"], "lifetime_s": 20},
        "benign": {"servers": 6, "rate": 2, "lead_s": 3, "duration_s": 6, "timeout_s": 2},
        "throttle": {"placement": "host", "working_set_size": 2, "release_period_s": 1.0, "delay_queue_limit": 30},
        "sweep": {"working_set_size": [2]}, "timeout_s": 20}))
    out = tmp_path / "run"
    try:
        res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(exp), "--out", str(out),
                              "--index", str(tmp_path / "i.sqlite")], capture_output=True, text=True, cwd=REPO,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    finally:
        lifecycle.down(name, store=StateStore(state))
    (t,) = RunDir(out).trials()
    assert t["status"] == "ok" and t["reason"] == "blocked", t.get("reason")
    m, model, ag = t["measured"], t["model"], t["agreement"]
    assert ag["ok"] and ag["worm_ok"] and ag["benign"]["ok"], ag
    assert m["blocked"] and m["out_after_block"] == 0
    assert m["out_before_block"] == model["out_before_block"]
    assert abs(m["stop_s"] - model["stop_s"]) <= max(0.02, 0.03 * model["stop_s"])
    assert t["setting"].startswith("working_set_size=2") and t["benign_lead_s"] >= 3.0
    with open(out / "trials" / t["trial"] / "benign.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["benign_connections"] == m["benign_before"] + m["benign_after"] >= 6
    before = [r for r in rows if r["phase"] == "before"]
    assert len(before) == m["benign_before"] >= 3 and all(r["wire_s"] for r in before)   # each joined with its SYN
    assert all(r["agree"] == "true" for r in rows if r["agree"])
    assert all(r["model_fate"] == "dropped" and not r["wire_s"] for r in rows if r["phase"] == "attack"
               and r["outcome"] != "ok")
    row = RunDir(out).summary()[0]
    assert row["benign_connections"] == len(rows) and row["benign_agree"] is True
    assert (out / "report.md").read_text().count("The trade-off, both axes measured") == 1
