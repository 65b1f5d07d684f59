"""A `benign:` block beside the worm and a `sweep:` in a stopping-speed experiment (wormbenignspec,
sweepspec): what each refuses, by key and line, exit 2, before anything is built; the plan of a swept run;
the summary's setting and benign columns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.experiment.rundir import BESIDE_COLUMNS, SUMMARY_COLUMNS, RunDir, summarise
from orchestrator.experiment.runner import plan_trials
from orchestrator.experiment.spec import load_experiment
from orchestrator.results import tradeoff
from tests.cli.test_common import cli

LABS = Path(__file__).resolve().parents[2] / "labs"


def write(tmp: Path, **over) -> Path:
    shutil.copy(LABS / "benign-lab.yaml", tmp / "benign-lab.yaml")
    spec = {"experiment": "w", "kind": "stopping-speed", "lab": "benign-lab.yaml",
            "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"]}, "rates": [20, 200],
            "benign": {"servers": 20, "rate": 1, "lead_s": 5, "duration_s": 15},
            "throttle": {"working_set_size": 5}, "sweep": {"working_set_size": [1, 10]}} | over
    path = tmp / "w.yaml"
    path.write_text(json.dumps({k: v for k, v in spec.items() if v is not None}, indent=1))
    return path


def test_labs_benign_worm_sweeps_the_working_set_over_both_scan_rates():
    exp = load_experiment(LABS / "benign-worm.yaml", machine_routes=[])
    b = exp.spec.benign
    assert exp.spec.kind == "stopping-speed" and b is not None and (b.rate, b.lead_s) == (1.0, 10.0)
    assert [m.params["working_set_size"] for m in exp.mechanisms] == [1, 2, 5, 10]
    ids = [t.id for t in plan_trials(exp)]
    assert ids[:3] == ["williamson-wss1-tcp-r20-1", "williamson-wss1-tcp-r200-1", "williamson-wss2-tcp-r20-1"]
    assert len(ids) == 8


@pytest.mark.parametrize("over, where, says", [
    ({"benign": {"servers": 20, "lead_s": 5, "duration_s": 15}}, "benign.rate",
     "beside the worm the benign block needs the workload's own rate"),
    ({"benign": {"servers": 20, "rate": 1, "lead_s": 15, "duration_s": 15}}, "benign.lead_s",
     "the lead (15 s) must be shorter than the session (benign.duration_s 15 s)"),
    ({"benign": {"servers": 20, "rate": 1, "protocols": ["udp"]}}, "benign.protocols",
     "in each trial's protocol"),
    ({"benign": {"servers": 20, "rate": 0}}, "benign.rate", "greater than 0"),
    ({"benign": {"servers": 30, "rate": 1}}, "benign.servers", "has 20 target(s)"),
    ({"kind": "benign", "worm": None, "rates": [1], "sweep": None, "benign": {"servers": 20, "rate": 1}},
     "benign.rate", "kind: benign takes the workload's rates from rates:"),
    ({"kind": "benign", "worm": None, "rates": [1], "sweep": None, "benign": {"servers": 20, "lead_s": 2}},
     "benign.lead_s", "kind: benign runs no worm to lead"),
    ({"kind": "spread", "throttle": None, "sweep": None, "mechanisms": [{"name": "williamson"}]}, "benign",
     "not yet in kind: spread"),
    ({"kind": "baseline", "throttle": "none"}, "sweep",
     "a sweep runs in kind: benign and kind: stopping-speed experiments"),
])
def test_a_bad_benign_block_beside_the_worm_names_its_key_and_line(tmp_path, over, where, says):
    with pytest.raises(SpecError) as exc:
        load_experiment(write(tmp_path, **over), machine_routes=[])
    text = str(exc.value)
    assert f"{where} (line " in text and says in text, text


def test_a_bad_benign_block_is_exit_2_through_run_and_nothing_is_built(tmp_path):
    res = cli("run", str(write(tmp_path, benign={"servers": 20, "duration_s": 5})), state=tmp_path / "state")
    assert res.returncode == 2 and "benign.rate" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "state" / "labs").exists()


def rec(ws: int, rate: float, stop: float, out: int, p99: float) -> dict:
    setting = f"working_set_size={ws} release_period_s=1 delay_queue_limit=100"
    return {"trial": f"williamson-wss{ws}-tcp-r{rate:g}-1", "mechanism": "williamson", "setting": setting,
            "params": {"working_set_size": ws}, "protocol": "tcp", "rate": rate, "repeat": 1, "status": "ok",
            "measured": {"stop_s": stop, "out_before_block": out, "out_after_block": 0, "blocked": True,
                         "benign_rate": 1.0, "benign_connections": 20, "benign_p50_s": 0.0, "benign_p99_s": p99,
                         "benign_p99_attack_s": 2.0, "benign_dropped": 3},
            "model": {"stop_s": stop, "out_before_block": out, "benign_p99_s_model": p99},
            "agreement": {"ok": True, "benign": {"ok": True}}}


def test_summary_rows_of_a_swept_run_have_a_setting_and_the_benign_columns(tmp_path):
    trials = [rec(1, 20, 5.3, 6, 2.6), rec(10, 20, 5.75, 15, 0.001), rec(1, 200, 0.52, 6, 2.6)]
    rows = summarise(trials)
    assert [(r["setting"].split()[0], r["rate"]) for r in rows] == [("working_set_size=1", 20.0),
                                                                     ("working_set_size=1", 200.0),
                                                                     ("working_set_size=10", 20.0)]
    r = rows[0]
    assert (r["stop_s"], r["out_before_block"], r["benign_p99_s"], r["benign_p99_s_model"], r["benign_dropped"],
            r["benign_agree"]) == (5.3, 6.0, 2.6, 2.6, 3, True)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_summary(rows)
    head = (run.path / "summary.csv").read_text().splitlines()[0].split(",")
    assert head == BESIDE_COLUMNS and head[:2] == ["mechanism", "setting"] and "benign_p99_attack_s" in head
    assert summarise([{k: v for k, v in t.items() if k not in ("setting", "params")} | {
        "measured": {"stop_s": 1.0}} for t in trials[:1]])[0].keys() <= set(SUMMARY_COLUMNS) | {"mechanism"}


def test_the_trade_off_table_has_both_axes_measured_with_the_model_beside():
    rows = summarise([rec(10, 20, 5.75, 15, 0.001), rec(1, 20, 5.3, 6, 2.6)])
    pts = tradeoff.measured_points(rows)
    assert [p["working_set_size"] for p in pts] == [1, 10]
    head, body = tradeoff.measured_table(pts, lambda v: "–" if v is None else f"{v:g}")
    assert head[3:8] == ["stop s", "model stop s", "worm out", "model out", "benign /s"]
    assert body[0][2:7] == ["20", "5.3", "5.3", "6", "6"] and body[0][10:12] == ["2.6", "2.6"]
    assert body[1][10] == "0.001" and body[1][-1] == "yes"
