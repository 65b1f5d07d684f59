"""The false-positive section of a benign run's report and `results show` (orchestrator.results.fpreport): the
rate over hosts, blocks per host-hour, each host's block beside the model's, the survival plot. On fakes."""

from __future__ import annotations

from orchestrator.analysis.falsepos import fp_figures
from orchestrator.experiment.rundir import RunDir, summarise
from orchestrator.results import benignreport, fpreport
from tests.cli.test_common import cli


def rec(mech: str, rate: float, blocks: list[float | None], model: list[float | None] | None) -> dict:
    hosts = [{"host": f"blade{k + 1}", "t_block_s": b, "cause": "threshold" if b is not None else None,
              "model_block_s": None if model is None else model[k], "agree": True} for k, b in enumerate(blocks)]
    first = min((b for b in blocks if b is not None), default=None)
    return {"trial": f"{mech}-tcp-r{rate:g}-1", "kind": "benign", "mechanism": mech, "setting": "", "params": {},
            "placement": "host", "protocol": "tcp", "rate": rate, "repeat": 1, "status": "ok",
            "measured": {"connections": 120, "delay_p50_s": 0.0, "delay_p95_s": 0.0, "delay_p99_s": 0.001,
                         "delay_max_s": 0.002, "dropped": 3, "false_blocks": sum(b is not None for b in blocks),
                         "false_block": {"t_s": first, "cause": "threshold"} if first is not None else None,
                         "fp": fp_figures(hosts, 30.0), "per_host": hosts},
            "model": None if model is None else {"blocked_s": model},
            "agreement": {"ok": True, "hosts": len(hosts), "hosts_agree": len(hosts)} if model else {"ok": None}}


TRIALS = [rec("trw", 1.0, [None] * 4, [None] * 4), rec("trw", 5.0, [23.9, 8.5, 24.9, None], [23.9, 8.5, 24.9, None]),
          rec("none", 5.0, [None] * 4, None)]


def run_dir(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.write_manifest({"experiment": {"experiment": "d", "kind": "benign", "benign": {"duration_s": 30, "hosts": 4}},
                        "lab": {"name": "l", "provider": "netns"}, "started": 0, "status": "complete",
                        "planned": len(TRIALS), "seed": 1, "git": {"commit": "x"}})
    run.write_trials(TRIALS)
    run.write_summary(summarise(TRIALS))
    return run


def test_the_report_has_the_rate_per_host_hour_and_the_survival_plot(tmp_path):
    run = run_dir(tmp_path)
    md_path, html_path = benignreport.build(run)
    md = md_path.read_text()
    assert "## False positives over hosts and time" in md
    assert "| trw |  | 5 | 4 | 3 | 0.750 | 124 | 8.500 | threshold |" in md       # 3 / (87.3 s / 3600) = 123.7
    assert "| trw |  | 1 | 4 | 0 | 0 | 0 | – | – |" in md
    assert ("Trial trw-tcp-r5-1: first false block per host, s after its first connection — blade1 23.900 (model "
            "23.900), blade2 8.500 (model 8.500), blade3 24.900 (model 24.900), blade4 never (model never).") in md
    assert (run.path / "plots" / "benign-survival.png").stat().st_size > 5000
    assert "False positives over hosts and time" in html_path.read_text()


def test_a_single_host_run_has_no_false_positive_section_without_its_figures(tmp_path):
    assert fpreport.section([], [{"mechanism": "williamson", "hosts": None}], 30.0, tmp_path, str) == ([], [], [], {})


def test_results_show_adds_the_hosts_falsely_blocked(tmp_path):
    run = run_dir(tmp_path)
    res = cli("results", "show", str(run.path), "--index", str(tmp_path / "i.sqlite"), state=tmp_path / "state")
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.split()[:1] == ["trw"] and " 5 " in x)
    assert line.split()[-2:] == ["3/4", "123.7"], line


def test_a_benign_trials_progress_line_says_its_connections_and_false_blocks():
    from orchestrator.cli.progress import verdict
    rec = TRIALS[1] | {"reason": "the benign session ended"}
    assert verdict(rec) == ("the benign session ended · 120 connections · 3/4 host(s) falsely blocked · "
                            "agrees with the model")
    assert verdict(TRIALS[2] | {"reason": "the benign session ended"}) == \
        "the benign session ended · 120 connections · 0/4 host(s) falsely blocked"
