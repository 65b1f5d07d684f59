"""The trade-off of a benign sweep (orchestrator.results.tradeoff, benignreport): each williamson setting's
measured benign cost beside the model's worm, and the report's section and plot."""

from __future__ import annotations

import pytest

from orchestrator.experiment.rundir import RunDir, summarise
from orchestrator.results import benignreport, tradeoff
from tests.cli.test_common import cli

P = {"release_period_s": 1.0, "delay_queue_limit": 100, "policy": "packets"}


def rec(ws: int, rate: float, p99: float, blocks: int = 0) -> dict:
    setting = f"working_set_size={ws} release_period_s=1 delay_queue_limit=100"
    return {"trial": f"williamson-wss{ws}-tcp-r{rate:g}-1", "kind": "benign", "mechanism": "williamson",
            "setting": setting, "params": P | {"working_set_size": ws}, "placement": "host", "protocol": "tcp",
            "rate": rate, "repeat": 1, "status": "ok",
            "measured": {"connections": 20, "delay_p50_s": 0.0, "delay_p95_s": p99 / 2, "delay_p99_s": p99,
                         "delay_max_s": p99, "dropped": 0, "false_blocks": blocks,
                         "false_block": {"t_s": 7.5, "cause": "limit", "queue_len": 21} if blocks else None},
            "model": {"delay_p99_s": p99}, "agreement": {"ok": True, "share": 1.0}}


TRIALS = [rec(ws, r, p) for ws, r, p in ((1, 1.0, 3.0), (2, 1.0, 2.0), (10, 1.0, 0.001), (1, 5.0, 12.0),
                                          (10, 5.0, 6.0))]


def test_each_setting_and_rate_has_its_cost_and_the_models_worm():
    pts = tradeoff.points(TRIALS, summarise(TRIALS))
    assert [(p["working_set_size"], p["benign_rate"], p["delay_p99_s"]) for p in pts] == \
        [(1, 1.0, 3.0), (2, 1.0, 2.0), (10, 1.0, 0.001), (1, 5.0, 12.0), (10, 5.0, 6.0)]
    by_ws = {p["working_set_size"]: p for p in pts if p["benign_rate"] == 1.0}
    # from an empty working set the worm's first destinations pass at once: the bigger the set, the more out
    assert [by_ws[w]["worm_out_fresh"] for w in (1, 2, 10)] == [6, 7, 15]
    # from the paper's full one (normal destinations) the working set does not change the worm's stop
    assert {by_ws[w]["worm_out_full"] for w in (1, 2, 10)} == {5}
    assert by_ws[1]["worm_stop_s_full"] == pytest.approx(5.25) and by_ws[1]["worm_rate"] == 20.0
    assert tradeoff.settings_swept(pts) and not tradeoff.settings_swept(pts[:1])


def test_other_mechanisms_and_settings_without_params_are_left_out():
    none = rec(1, 1.0, 0.0) | {"mechanism": "none", "setting": "", "params": {}}
    assert tradeoff.points([none], summarise([none])) == []


def test_the_report_of_a_sweep_has_the_trade_off_table_and_plot(tmp_path):
    run = RunDir(tmp_path)
    run.write_manifest({"experiment": {"experiment": "benign-sweep", "kind": "benign", "benign": {"servers": 20}},
                        "lab": {"name": "benign-lab", "provider": "netns"}, "started": 0, "status": "done",
                        "planned": len(TRIALS), "seed": 1, "git": {"commit": "x"}})
    run.write_trials(TRIALS)
    run.write_summary(summarise(TRIALS))
    md_path, html_path = benignreport.build(run)
    md = md_path.read_text()
    assert "## The trade-off: benign cost against the worm's stopping speed" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and line.endswith(" |")][-5:]
    assert rows[:3] == ["| 1 | 1.000 | 100 | 1 | 3 | 3 | 0 | 0 | 5 | 5.250 | 6 | 5.300 |",
                        "| 2 | 1.000 | 100 | 1 | 2 | 2 | 0 | 0 | 5 | 5.250 | 7 | 5.350 |",
                        "| 10 | 1.000 | 100 | 1 | 0.001 | 0.001 | 0 | 0 | 5 | 5.250 | 15 | 5.750 |"]
    assert "from the williamson model (not a worm trial)" in md
    assert (tmp_path / "plots" / "benign-tradeoff.png").stat().st_size > 5000
    assert "benign-tradeoff" in html_path.read_text()


def test_results_show_of_a_benign_run_prints_its_delays_and_false_blocks(tmp_path):
    trials = [*TRIALS, rec(5, 10.0, 9.0, blocks=1)]
    run = RunDir(tmp_path / "run")
    run.write_manifest({"experiment": {"experiment": "b", "kind": "benign"}, "lab": {"name": "l", "provider": "netns"},
                        "started": 0, "status": "complete", "planned": len(trials)})
    run.write_trials(trials)
    run.write_summary(summarise(trials))
    res = cli("results", "show", str(run.path), "--index", str(tmp_path / "i.sqlite"), state=tmp_path / "state")
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if "wss=5" in x)
    assert line.split() == ["williamson", "wss=5", "rps=1", "dql=100", "10",
                            "20", "0", "9", "9", "0", "1", "7.5", "(limit)", "yes"]
    assert f"report: {run.path / 'report.html'}" in res.stdout


def test_the_index_keeps_one_summary_row_per_setting_of_a_sweep(tmp_path):
    from orchestrator.results.index import Index

    run = RunDir(tmp_path / "run")
    run.write_manifest({"run_id": "benign-sweep-1", "experiment": {"experiment": "benign-sweep", "kind": "benign"},
                        "lab": {"name": "l", "provider": "netns"}, "started": 0, "status": "complete"})
    run.write_trials(TRIALS)
    idx = Index(tmp_path / "i.sqlite")
    idx.record(run)          # two settings at the same rate: once a UNIQUE constraint failure
    got = idx.db.execute("SELECT mechanism, rate FROM summary ORDER BY rate, mechanism").fetchall()
    idx.close()
    assert len(got) == len(TRIALS)
    assert ("williamson working_set_size=10 release_period_s=1 delay_queue_limit=100", 1.0) in [tuple(g) for g in got]
