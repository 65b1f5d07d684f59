"""A spread on a real namespace lab (root, slow; small: 4 blades, a /28 scan): every blade infected, each
infection confirmed on the wire, infections.csv and summary.csv written, the report's curve; with the throttle
on every blade the daemons run on all four carriers and their logs are collected."""

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

LABS = Path(__file__).resolve().parents[2] / "labs"
REPO = LABS.parent


@pytest.mark.root
@pytest.mark.slow
def test_a_spread_across_four_blades(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root: builds a namespace lab")
    state = tmp_path / "state"
    monkeypatch.setenv("TESTBED_STATE_DIR", str(state))
    name = f"sp{secrets.token_hex(3)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((LABS / "paper-testbed.yaml").read_text().replace("name: paper-testbed", f"name: {name}")
                   .replace("count: 16", "count: 4"))
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "experiment": "spread-small", "kind": "spread", "lab": str(lab),
        "worm": {"strategy": "random", "port": 8080, "protocols": ["tcp"], "scan": "198.18.8.0/28",
                 "max_attempts": 200, "lifetime_s": 10},
        "rates": [20], "vulnerable": "blade", "initial": "blade1", "deploy": [0.0, 1.0],
        "mechanisms": [{"name": "williamson", "placement": "host"}], "repeats": 1, "timeout_s": 30,
        "quiet_s": 3, "seed": 3}))
    out = tmp_path / "run"
    try:
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(exp), "--out", str(out),
                            "--index", str(tmp_path / "i.sqlite")], capture_output=True, text=True, cwd=REPO,
                           timeout=900, env=os.environ | {"TESTBED_STATE_DIR": str(state)})
    finally:
        store = StateStore(state)
        if store.load(name) is not None:
            lifecycle.down(name, store=store)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = {t["deploy"]: t for t in RunDir(out).trials()}
    assert sorted(trials) == ["0", "1"]
    free, held = trials["0"], trials["1"]
    assert free["status"] == "ok" and held["status"] == "ok", (free.get("reason"), held.get("reason"))
    m = free["measured"]
    assert m["infected_final"] == 4 and m["confirmed_on_wire"] == 4 and m["t_all_s"] is not None
    assert free["findings"] == []
    rows = list(csv.DictReader((out / free["files"]["infections"]).open()))
    assert sorted(r["host"] for r in rows) == ["blade1", "blade2", "blade3", "blade4"]
    assert all(r["confirmed_on_wire"] == "True" for r in rows)
    assert {r["by"] for r in rows if r["host"] == "blade1"} == {"injector"}
    assert held["carriers"] == ["blade1", "blade2", "blade3", "blade4"]
    assert {f"{b}:mechanism" for b in held["carriers"]} <= set(held["files"])
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert {s["deploy"] for s in summary} == {"0", "1"} and "model_t_50_s" in summary[0]
    report = (out / "report.md").read_text()
    assert "infection tree" in report.lower() or "infected" in report.lower()
