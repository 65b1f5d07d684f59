"""Results: summaries, the run directory, the index, regressions, JUnit and the report — from files alone."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import ResultsError, RunDir, summarise
from orchestrator.results.index import Index
from orchestrator.results.regress import compare, junit_xml
from orchestrator.results.report import build_report


def trial(proto, rate, rep, stop, out, *, status="ok", model_stop=None, model_out=None, after=0, ok=True,
          achieved=None):
    return {"trial": f"{proto}-r{rate:g}-{rep}", "protocol": proto, "rate": float(rate), "repeat": rep,
            "status": status, "reason": None if status == "ok" else "not blocked within 5 s", "duration_s": 2.0,
            "measured": {"stop_s": stop, "out_before_block": out, "out_after_block": after, "blocked": stop is not None,
                         "achieved_rate": achieved or rate, "first_attempt_wall": 1000.0},
            "model": {"stop_s": model_stop if model_stop is not None else stop,
                      "out_before_block": model_out if model_out is not None else out},
            "agreement": {"ok": ok, "reasons": [] if ok else ["stopping time off"]}}


def manifest(run_id="exp-1", **kw):
    return {"run_id": run_id, "experiment": {"experiment": "exp", "kind": "stopping-speed",
                                             "worm": {"profile": None}, "state": "full", "timeout_s": 30,
                                             "throttle": {"placement": "host", "working_set_size": 5,
                                                          "delay_queue_limit": 100, "release_period_s": 1.0,
                                                          "policy": "packets"}},
            "spec_hash": "abc", "lab": {"name": "stopping-speed", "provider": "netns", "spec_hash": "def"},
            "machine": {"hostname": "m", "cpus": 2}, "versions": {"kernel": "6.1"}, "git": {"commit": "1234567"},
            "seed": 1, "started": 1_700_000_000.0, "status": "complete", "planned": 4, **kw}


def make_run(path: Path, trials, **kw) -> RunDir:
    run = RunDir(path)
    path.mkdir(parents=True)
    run.write_manifest(manifest(**kw))
    run.write_trials(trials)
    run.write_summary(summarise(trials))
    return run


def test_summary_means_spread_and_counts():
    rows = summarise([trial("tcp", 20, 1, 5.0, 5), trial("tcp", 20, 2, 5.5, 4), trial("tcp", 20, 3, None, 9, status="timeout"),
                      trial("tcp", 20, 4, None, None, status="error"), trial("udp", 5, 1, 24.8, 24)])
    tcp = next(r for r in rows if r["protocol"] == "tcp")
    assert tcp["stop_s"] == pytest.approx(5.25) and tcp["stop_s_min"] == 5.0 and tcp["stop_s_max"] == 5.5
    assert tcp["stop_s_sd"] == pytest.approx(0.35355, abs=1e-4)
    assert tcp["out_before_block"] == pytest.approx(6.0)           # the timed-out trial measured 9 out
    assert (tcp["repeats"], tcp["ok"], tcp["blocked"]) == (4, 2, 2)
    assert [r["protocol"] for r in rows] == ["tcp", "udp"]


def test_summary_has_one_row_per_mechanism_in_the_order_they_ran():
    def rec(mech, proto, rate, **m):
        return {"trial": f"{mech}-{proto}-{rate}", "mechanism": mech, "protocol": proto, "rate": rate,
                "status": "ok", "measured": m, "agreement": {"ok": True}}
    rows = summarise([rec("trw", "tcp", 200, contained=True, contained_s=0.02, out_before_contained=4),
                      rec("trw", "tcp", 20, contained=True, contained_s=0.15, out_before_contained=4),
                      rec("rate-limit", "tcp", 20, contained=False, wire_rate=2.02),
                      rec("rate-limit", "tcp", 20, contained=False, wire_rate=1.98),
                      rec("none", "tcp", 20, contained=False, wire_rate=19.9)])
    assert [(r["mechanism"], r["rate"]) for r in rows] == [("trw", 20), ("trw", 200), ("rate-limit", 20),
                                                            ("none", 20)]
    assert (rows[0]["contained"], rows[0]["contained_s"], rows[0]["out_before_contained"]) == (1, 0.15, 4)
    assert rows[2]["wire_rate"] == pytest.approx(2.0) and rows[2]["contained"] == 0 and rows[2]["repeats"] == 2
    assert rows[2]["contained_s"] is None


def test_run_dir_round_trip_and_csv(tmp_path):
    run = make_run(tmp_path / "r", [trial("tcp", 100, 1, 1.01, 1), trial("udp", 100, 1, 1.01, 1)])
    assert [t["trial"] for t in run.trials()] == ["tcp-r100-1", "udp-r100-1"]
    with open(run.path / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:10] == ["mechanism", "protocol", "rate", "achieved_rate", "achieved_rate_sd", "stop_s",
                                  "stop_s_sd", "stop_s_min", "stop_s_max", "stop_s_model"]
    assert {"out_before_block", "out_before_block_model", "out_after_block", "repeats", "contained_s",
            "out_before_contained", "wire_rate"} <= set(rows[0])
    assert rows[0]["mechanism"] == ""           # records from before mechanisms were named
    assert rows[0]["stop_s"] == "1.01" and rows[0]["agree"] == "true"
    assert run.summary()[0]["stop_s"] == 1.01
    assert not list(run.path.glob(".*.tmp"))                   # nothing half-written left behind
    with pytest.raises(ResultsError, match="is not a run directory"):
        RunDir(tmp_path / "nothing").manifest()


def test_index_records_lists_and_finds(tmp_path):
    idx = Index(tmp_path / "index.sqlite")
    a = make_run(tmp_path / "a", [trial("tcp", 20, 1, 5.0, 5)], run_id="exp-20260101-000000-aaaa")
    b = make_run(tmp_path / "b", [trial("tcp", 20, 1, 5.1, 5)], run_id="exp-20260102-000000-bbbb",
                 started=1_800_000_000.0)
    assert idx.record(a) == "exp-20260101-000000-aaaa"
    idx.record(b)
    idx.record(b)                                               # re-indexing replaces, never duplicates
    assert [r["run_id"] for r in idx.runs()] == ["exp-20260102-000000-bbbb", "exp-20260101-000000-aaaa"]
    assert idx.runs()[0]["ok"] == 1 and idx.runs()[0]["trials"] == 1
    assert idx.find("exp-20260101").path.resolve() == a.path.resolve()
    assert idx.find(str(b.path)).path == b.path
    with pytest.raises(ResultsError, match="matches 2 runs"):
        idx.find("exp-2026")
    with pytest.raises(ResultsError, match="no run 'zzz'"):
        idx.find("zzz")
    rows = idx.db.execute("SELECT protocol, rate, stop_s, agree FROM summary WHERE run_id LIKE 'exp-20260102%'").fetchall()
    assert rows == [("tcp", 20.0, 5.1, 1)]
    idx.close()


def test_compare_finds_regressions_and_improvements(tmp_path):
    base = make_run(tmp_path / "base", [trial("tcp", 20, 1, 5.0, 5), trial("tcp", 100, 1, 1.0, 1),
                                        trial("udp", 20, 1, 5.0, 5), trial("udp", 5, 1, 25.0, 24)])
    new = make_run(tmp_path / "new", [trial("tcp", 20, 1, 5.8, 5), trial("tcp", 100, 1, 1.0, 4),
                                      trial("udp", 20, 1, 4.0, 5, after=2, ok=False), trial("udp", 1, 1, None, 0)])
    rows = {(c.protocol, c.rate): c for c in compare(base, new, tolerance=0.10)}
    assert rows[("tcp", 20)].verdict == "regression" and rows[("tcp", 20)].reasons == ["stopping time 5.000 s → 5.800 s"]
    assert rows[("tcp", 100)].reasons == ["attempts out before the block 1 → 4"]
    assert set(rows[("udp", 20)].reasons) == {"the measurement no longer agrees with the model",
                                              "2 worm attempt(s) on the wire after the block"}
    assert rows[("udp", 5)].verdict == "missing" and rows[("udp", 1)].verdict == "missing"
    same = {(c.protocol, c.rate): c.verdict for c in compare(base, base)}
    assert set(same.values()) == {"ok"}
    better = make_run(tmp_path / "better", [trial("tcp", 20, 1, 4.0, 5)])
    assert {c.verdict for c in compare(base, better) if c.rate == 20 and c.protocol == "tcp"} == {"improved"}


def test_junit_has_one_case_per_protocol_and_rate(tmp_path):
    run = make_run(tmp_path / "r", [trial("tcp", 20, 1, 5.0, 5), trial("tcp", 20, 2, 5.1, 5, ok=False),
                                    trial("udp", 20, 1, 5.0, 5), trial("udp", 100, 1, None, None, status="error")])
    root = ET.fromstring(junit_xml(run))
    assert root.tag == "testsuite" and root.get("name") == "exp" and root.get("tests") == "3"
    assert root.get("failures") == "1" and root.get("errors") == "1"     # more in test_junit.py
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert set(cases) == {("exp.tcp", "rate 20/s"), ("exp.udp", "rate 20/s"), ("exp.udp", "rate 100/s")}
    fail = cases[("exp.tcp", "rate 20/s")].find("failure")
    assert fail is not None and fail.get("message") == "tcp-r20-2: stopping time off"
    assert list(cases[("exp.udp", "rate 20/s")]) == []
    assert cases[("exp.udp", "rate 100/s")].find("error").text == "udp-r100-1: error: not blocked within 5 s"


def test_report_is_rebuilt_from_the_run_directory_alone(tmp_path):
    run = make_run(tmp_path / "r", [trial("tcp", 20, 1, 5.25, 5), trial("tcp", 1000, 1, 0.1, 0),
                                    trial("udp", 20, 1, 5.25, 5), trial("udp", 1000, 1, 0.1, 0, ok=False)])
    (run.path / "trials" / "tcp-r20-1").mkdir(parents=True)
    (run.path / "trials" / "tcp-r20-1" / "throttle.jsonl").write_text(
        "".join(json.dumps({"event": "queued", "t_wall": 1000.0 + i / 20, "queue_len": i}) + "\n" for i in range(1, 101)))
    ts = run.trials()
    ts[0]["files"] = {"throttle_log": "trials/tcp-r20-1/throttle.jsonl"}
    run.write_trials(ts)
    md, page = build_report(run)
    text = md.read_text()
    assert "| test worm | tcp | 20 | 20 | 5.250 | – | 5.250 | 5 | 5 | 0 | 1/1 | yes | – | < 5 s, ≤ 5 packets |" in text
    assert "| test worm | udp | 1,000 | 1,000 | 0.100 | – | 0.100 | 0 | 0 | 0 | 1/1 | NO | – |" in text
    assert "Trial udp-r1000-1: ok — stopping time off" in text
    assert "400 attempts/s" in text
    for name in ("stopping-time", "attempts-out", "queue-length", "achieved-rate"):
        assert (run.path / "plots" / f"{name}.png").stat().st_size > 5000
        assert f"](plots/{name}.png)" in text
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == 4 and "<table>" in html
    assert not re.search(r'src="(?!data:)', html)               # self-contained: no external files


def test_the_report_shows_what_the_ties_allow_and_how_many_trials_a_tie_decided(tmp_path):
    def tied(rep, stop, out, decided):
        t = trial("udp", 2, rep, stop, out, model_stop=9.5, model_out=9)
        t["model"]["orderings"] = {"window_s": 0.0002 * rep, "ties": 9, "decisive": 1, "out_min": 8, "out_max": 9,
                                   "outcomes": [{"stop_s": 9.0, "blocked": True, "out_before_block": 8},
                                                {"stop_s": 9.5, "blocked": True, "out_before_block": 9}]}
        t["agreement"].update(ordering="other" if decided else "strict", tie_decided=decided)
        return t
    never = trial("udp", 1, 1, None, 30)
    never["model"]["orderings"] = {"window_s": 0.0002, "ties": 30, "decisive": 0, "out_min": 30, "out_max": 30,
                                   "outcomes": [{"stop_s": None, "blocked": False, "out_before_block": 30}]}
    run = make_run(tmp_path / "r", [tied(1, 9.0, 8, True), tied(2, 9.5, 9, False), tied(3, 9.5, 9, False), never])
    text = build_report(run)[0].read_text()
    assert "| test worm | udp | 2 | 2 | 9.333 ± 0.289 | 8.616–10.051 | 9.500 (9–9.500) | 8.667 | 9 (8–9) | 0 | 3/3 | yes | 1/3 |" in text
    assert "| test worm | udp | 1 | 1 | not stopped | – | not stopped | 30 | 30 | 0 | 1/1 | yes | 0/1 |" in text
    assert "a window of 0.2–0.6 ms" in text
    assert "In 3 of 4 trial(s) the ties could decide the outcome; **1** was decided by one" in text


def test_an_error_trials_figures_are_never_averaged_in_and_its_row_says_no_result(tmp_path):
    died = trial("tcp", 20, 2, 0.4, 256, status="error", achieved=3.0)   # figures it should not have: ignored
    died["reason"] = "the throttle daemon on blade was killed by SIGKILL mid-trial"
    alone = trial("tcp", 100, 1, None, None, status="error")
    run = make_run(tmp_path / "r", [trial("tcp", 20, 1, 5.25, 5), died, alone])
    rows = {r["rate"]: r for r in run.summary()}
    assert (rows[20]["stop_s"], rows[20]["out_before_block"], rows[20]["achieved_rate"]) == (5.25, 5, 20)
    assert (rows[20]["repeats"], rows[20]["ok"], rows[20]["errors"], rows[20]["agree"]) == (2, 1, 1, True)
    assert (rows[100]["stop_s"], rows[100]["out_before_block"], rows[100]["ok"], rows[100]["errors"],
            rows[100]["agree"]) == (None, None, 0, 1, False)
    md = build_report(run)[0].read_text()
    assert "| test worm | tcp | 100 | – | no result (error) | – | – | – | – | – | 0/1 | NO | – | < 5 s |" in md
    assert "Trial tcp-r20-2: error — the throttle daemon on blade was killed by SIGKILL mid-trial" in md


RUNNER = """
import sys, time
from orchestrator.experiment.rundir import RunDir, runner_record
from orchestrator.results.index import Index
sys.path.insert(0, {tests!r})
from tests.results.test_results import manifest
run = RunDir({path!r})
run.path.mkdir(parents=True)
run.write_manifest(manifest(run_id="exp-20260301-000000-dead", status="running", runner=runner_record(),
                            source="labs/x.yaml"))
idx = Index({index!r}); idx.record(run); idx.close()
print("ready", flush=True)
time.sleep(60)
"""


def test_a_run_whose_runner_was_sigkilled_is_listed_as_died(tmp_path):
    """The runner records itself (PID and kernel start time) in the manifest and the index at its start; a
    SIGKILL leaves the manifest `running`, and `results list` / `show` say it died instead."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[2]
    path, index = tmp_path / "run", tmp_path / "index.sqlite"
    p = subprocess.Popen([sys.executable, "-c", RUNNER.format(tests=str(root), path=str(path), index=str(index))],
                         cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        from orchestrator.experiment.rundir import run_status
        assert run_status(RunDir(path).manifest()) == "running"          # its runner is alive
        assert Index(index).runs()[0]["status"] == "running"
    finally:
        p.kill()
        p.wait(10)
    man = RunDir(path).manifest()
    assert man["status"] == "running" and man["runner"]["pid"] == p.pid
    assert run_status(man) == "died"
    assert [r["status"] for r in Index(index).runs()] == ["died"]
    cli = [sys.executable, "-m", "orchestrator.cli", "results"]
    env = {"COLUMNS": "250", "PATH": "/usr/bin:/bin"}
    listed = subprocess.run([*cli, "list", "--index", str(index)], capture_output=True, text=True, cwd=root, env=env)
    assert listed.returncode == 0 and "exp-20260301-000000-dead" in listed.stdout, listed.stderr
    assert " died " in listed.stdout and "running" not in listed.stdout
    shown = subprocess.run([*cli, "show", str(path), "--index", str(index)], capture_output=True, text=True,
                           cwd=root, env=env)
    assert shown.returncode == 0, shown.stderr
    assert (f"status: died — its runner (pid {p.pid} on {man['runner']['host']}) is gone but the manifest says "
            "running") in " ".join(shown.stdout.split())
    assert f"continue it with: testbed run labs/x.yaml --resume {path}" in " ".join(shown.stdout.split())
    js = subprocess.run([*cli, "show", str(path), "--index", str(index), "--json"], capture_output=True, text=True,
                        cwd=root, env=env)
    assert json.loads(js.stdout)["status"] == "died"


def test_run_status_is_the_manifests_unless_a_running_runner_is_gone(tmp_path):
    import os
    import socket

    from orchestrator.experiment.rundir import run_status, runner_record
    from orchestrator.localrun import pid_start_time
    me = runner_record()
    assert me["pid"] == os.getpid() and me["starttime"] == pid_start_time(os.getpid()) and me["boot_id"]
    assert run_status({"status": "running", "runner": me}) == "running"
    assert run_status({"status": "running", "runner": me | {"starttime": me["starttime"] + 1}}) == "died"  # reused
    assert run_status({"status": "running", "runner": me | {"boot_id": "another-boot"}}) == "died"
    assert run_status({"status": "running", "runner": me | {"host": socket.gethostname() + "-x"}}) == "running"
    assert run_status({"status": "running"}) == "running"          # a run from before runners were recorded
    assert run_status({"status": "complete", "runner": me | {"pid": 1, "starttime": None}}) == "complete"


def test_a_run_still_running_is_not_resumed_by_another_runner(tmp_path):
    from orchestrator.errors import ExperimentError
    from orchestrator.experiment.rundir import runner_record
    from orchestrator.experiment.runner import RunOptions, run_experiment
    from orchestrator.experiment.spec import load_experiment
    exp = Path(__file__).resolve().parents[2] / "labs" / "demo-sweep.yaml"
    run = make_run(tmp_path / "r", [], status="running", runner=runner_record(),
                   spec_hash=load_experiment(exp).spec_hash)
    with pytest.raises(ExperimentError, match=r"run exp-1 is still running \(pid \d+ on .*\); resume it once it "
                                              "has stopped"):
        run_experiment(exp, RunOptions(resume=run.path))
    assert run.manifest()["runner"] == runner_record()                  # untouched


def test_a_file_that_is_not_an_index_is_exit_2_with_what_it_is(tmp_path):
    bad = tmp_path / "notadb"
    bad.write_text("hello, not SQLite\n")
    with pytest.raises(ResultsError, match=r"notadb is not an index of runs \(file is not a database\)"):
        Index(bad)
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "results", "list", "--index", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == (f"error: {bad} is not an index of runs (file is not a database)\n"
                        "hint: give --index the SQLite file `testbed run` writes (results/index.sqlite), "
                        "or move this file away to start a new index\n")
    assert bad.read_text() == "hello, not SQLite\n"                 # left as it was
