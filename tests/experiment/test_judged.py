"""The models of trw, rate-limit and none beside their wire figures: when they agree, and when not."""

from __future__ import annotations

import json

import mechanisms
from orchestrator.experiment import judged
from orchestrator.experiment.mechspec import MechanismRun

TOL = {"stop_abs_s": 0.02, "stop_rel": 0.03}


def run(name, **params):
    d = mechanisms.get(name)
    return MechanismRun(name, "host", d.validate(params), False, d)


def worm_log(rate, n, outcome="refused", src="198.18.8.10"):
    lines = [{"event": "start", "t_mono": 0.0, "t_wall": 100.0}]
    for i in range(n):
        t = i / rate
        lines.append({"event": "attempt", "i": i, "t_mono": t, "t_wall": 100 + t, "t_done_mono": t + 0.001,
                      "src": src, "sport": 40000 + i, "dst": f"198.18.9.{i + 1}", "dport": 8080,
                      "protocol": "tcp", "outcome": outcome})
    return [json.dumps(x) for x in lines]


def test_trw_blocks_after_four_failures_as_its_model_says():
    m = run("trw")
    p = judged.model(m, worm_log(20, 50), "198.18.8.10")
    assert p["blocked"] and p["out_before_block"] == 4 and abs(p["stop_s"] - 0.151) < 0.002
    ok = {"contained": True, "contained_s": 0.15, "out_before_contained": 4}
    assert judged.judge(m, ok, p, **TOL)["ok"]
    v = judged.judge(m, ok | {"out_before_contained": 6}, p, **TOL)
    assert not v["ok"] and v["stop_ok"] and not v["out_ok"]
    v = judged.judge(m, {"contained": False, "contained_s": None, "out_before_contained": None}, p, **TOL)
    assert not v["ok"] and not v["stop_ok"]


def test_rate_limit_agrees_within_ten_percent():
    m = run("rate-limit", new_per_s=2, burst=5)
    p = judged.model(m, worm_log(20, 200), "198.18.8.10")
    assert abs(p["wire_rate"] - 2.0) < 0.1
    assert judged.judge(m, {"wire_rate": 2.15}, p, **TOL)["ok"]
    v = judged.judge(m, {"wire_rate": 2.5}, p, **TOL)
    assert not v["ok"] and v["new_per_s"] == 2.0 and v["rate_error"] > 0.1
    assert judged.judge(m, {"wire_rate": None}, p, **TOL)["ok"] is False


def test_none_needs_every_attempt_on_the_wire_and_no_containment():
    m = run("none")
    assert judged.model(m, worm_log(20, 5), "198.18.8.10") is None
    assert judged.judge(m, {"attempts": 40, "wire_attempts": 40, "contained": False}, None, **TOL)["ok"]
    v = judged.judge(m, {"attempts": 40, "wire_attempts": 39, "contained": False}, None, **TOL)
    assert not v["ok"] and not v["every_attempt_on_wire"]
    assert not judged.judge(m, {"attempts": 40, "wire_attempts": 40, "contained": True}, None, **TOL)["ok"]
