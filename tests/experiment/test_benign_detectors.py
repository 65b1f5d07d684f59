"""Detectors' false positives over hosts (root, slow): `kind: benign` with `hosts: 2` and half of each host's
connections to stale targets (no server there), through TRW in each host, in a namespace lab. With seed 2 at
10 connections/s over 4 s, TRW's model replayed over each host's own schedule blocks the second host (seed 3)
1.12 s in, on its 14th connection, and never the first (seed 2: its successes keep pulling the walk back);
the daemons' own event logs say the same, within the stopping-time tolerance, and so does summary.csv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.analysis.falsepos import schedule_attempts, trw_block
from orchestrator.experiment.rundir import RunDir
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore
from tests.support.privatelab import private_lab
from workload.schedule import GenSpec, generate

REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def test_the_schedules_model_blocks_the_second_host_only():
    """The pure half (no root): what the lab run below must measure."""
    got = []
    for k in range(2):
        s = generate(GenSpec(servers=tuple(f"198.18.9.{i}" for i in range(2, 12)),
                             stale=tuple(f"198.18.9.{i}" for i in range(12, 32)), miss=0.5, rate=10.0,
                             duration_s=4.0, seed=2 + k, tcp_port=8081))
        got.append(trw_block(schedule_attempts(s), {}))
    assert got[0]["blocked_s"] is None
    assert got[1]["block_conn"] == 14 and got[1]["blocked_s"] == pytest.approx(1.12, abs=0.01)


@pytest.mark.root
@pytest.mark.slow
def test_trw_falsely_blocks_the_host_its_model_says_when_it_says(tmp_path, monkeypatch):
    name, lab, state = private_lab(tmp_path, monkeypatch, "benign-detectors-lab.yaml", "fp-")
    exp = tmp_path / "fp.yaml"
    exp.write_text(json.dumps({
        "experiment": "fp", "kind": "benign", "lab": str(lab), "seed": 2, "rates": [10],
        "benign": {"servers": 10, "duration_s": 4, "timeout_s": 2, "hosts": 2, "miss": 0.5},
        "mechanisms": [{"name": "trw", "placement": "host"}]}))
    out = tmp_path / "run"
    try:
        r = cli("run", str(exp), "--out", str(out), "--index", str(tmp_path / "i.sqlite"))
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        lifecycle.down(name, store=StateStore(state))
    (t,) = RunDir(out).trials()
    assert t["status"] == "ok", t.get("reason")
    m = t["measured"]
    hosts = {h["host"]: h for h in m["per_host"]}
    assert list(hosts) == ["blade1", "blade2"]
    assert hosts["blade1"]["t_block_s"] is None and hosts["blade1"]["model_block_s"] is None
    b2 = hosts["blade2"]
    assert b2["cause"] == "threshold" and b2["model_block_s"] == pytest.approx(1.12, abs=0.03)
    assert b2["t_block_s"] == pytest.approx(b2["model_block_s"], abs=0.02), b2
    assert t["agreement"]["ok"] and t["agreement"]["hosts_agree"] == 2
    assert (m["fp"]["hosts"], m["fp"]["false_block_hosts"], m["fp"]["fp_rate"]) == (2, 1, 0.5)
    assert m["misses"] > 20 and all(x["misses"] > 0 for x in m["per_host"])
    (row,) = RunDir(out).summary()
    assert (row["hosts"], row["false_block_hosts"], row["fp_rate"]) == (2, 1, 0.5)
    # 1 block in (4 s + 1.12 s) of benign use: ~700 per host-hour
    assert row["fp_per_host_hour"] == pytest.approx(3600 / (4 + b2["t_block_s"]), rel=0.01)
    tdir = out / "trials" / t["trial"]
    events = [json.loads(ln) for ln in (tdir / "mechanism-blade2.jsonl").read_text().splitlines() if ln.strip()]
    assert [e["event"] for e in events].count("blocked") == 1          # blade2's own daemon blocked it, once
    rows = (tdir / "benign-blade2.csv").read_text().splitlines()
    assert rows[0].startswith("i,t_sched,") and len(rows) - 1 == b2["connections"]
