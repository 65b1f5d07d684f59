"""A spread run's plan, its command lines, its agreement and its summary rows (no lab)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from orchestrator.experiment.runner import estimate_s, plan_trials
from orchestrator.experiment.spec import load_experiment
from orchestrator.experiment.spreadmodel import SpreadParams, predict_spread
from orchestrator.experiment.spreadrun import agreement, canary_on
from orchestrator.experiment.spreadsum import SPREAD_COLUMNS, summarise_spread
from orchestrator.experiment.spreadtrial import with_generations

LABS = Path(__file__).resolve().parents[2] / "labs"


def test_the_paper_spread_plans_deploy_0_once_and_the_mechanism_at_the_rest():
    e = load_experiment(LABS / "spread-paper.yaml", machine_routes=[])
    ids = [t.id for t in plan_trials(e)]
    assert ids[:5] == [f"none-d0-tcp-r20-{i}" for i in range(1, 6)]
    assert ids[5:] == [f"williamson-d{d}-tcp-r20-{i}" for d in ("0_5", "1") for i in range(1, 6)]
    assert [t.id for t in plan_trials(e, repeats=1)] == ["none-d0-tcp-r20-1", "williamson-d0_5-tcp-r20-1",
                                                         "williamson-d1-tcp-r20-1"]
    # the worm's scan of the /22 at 20/s (51 s) and the quiet, plus the trial's overhead
    assert estimate_s(e, plan_trials(e)[0]) == 1024 / 20 + 5 + 8


def test_gateway_and_several_mechanisms(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(textwrap.dedent(f"""\
        experiment: s
        kind: spread
        lab: {LABS / 'paper-testbed.yaml'}
        worm: {{strategy: random, protocols: [tcp], scan: 198.18.8.0/22}}
        rates: [10, 20]
        deploy: [gateway, 1.0]
        mechanisms: [{{name: williamson}}, {{name: none}}]
        """))
    e = load_experiment(p, machine_routes=[])
    assert [t.id for t in plan_trials(e)] == ["williamson-dgateway-tcp-r10-1", "williamson-dgateway-tcp-r20-1",
                                              "williamson-d1-tcp-r10-1", "williamson-d1-tcp-r20-1"]


def test_the_generation_bound_is_raised_in_the_command_line():
    argv = ["python3", "-m", "testworm", "server", "--max-generations", "0", "--allow", "x"]
    assert with_generations(argv, 15) == ["python3", "-m", "testworm", "server", "--max-generations", "15",
                                          "--allow", "x"]
    assert argv[5] == "0"


def test_canaries_cross_each_segment_between_hosts_that_are_not_the_worm():
    e = load_experiment(LABS / "spread-paper.yaml", machine_routes=[])
    assert canary_on(e.lab, "experimental", ["blade1"], "injector") == ("injector", "198.18.8.1")


def test_agreement_with_the_band():
    pred = predict_spread(SpreadParams(hosts=16, range_size=1024, rate=20, max_attempts=20000, lifetime_s=600),
                          replicates=100)
    f = pred.figures
    inside = {"t_50_s": f["t_50_s"]["p50"], "t_all_s": f["t_all_s"]["p50"]}
    assert agreement(pred, inside) == {"ok": True, "checks": {"t_50_s": True, "t_all_s": True},
                                       "band": {"t_50_s": [f["t_50_s"]["p5"], f["t_50_s"]["p95"]],
                                                "t_all_s": [f["t_all_s"]["p5"], f["t_all_s"]["p95"]]}}
    late = agreement(pred, {"t_50_s": f["t_50_s"]["p50"], "t_all_s": f["t_all_s"]["p95"] + 5})
    assert late["ok"] is False and late["checks"] == {"t_50_s": True, "t_all_s": False}
    assert agreement(pred, {"t_50_s": None})["ok"] is False          # the model says it always spreads
    assert agreement(None, {})["ok"] is None


def trial(deploy, rep, status="ok", **m):
    fig = {"infected_final": 16, "t_first_s": 1.0, "t_50_s": 8.0, "t_90_s": 14.0, "t_all_s": 18.0} | m
    return {"trial": f"x-{deploy}-{rep}", "mechanism": "none" if deploy == "0" else "williamson", "deploy": deploy,
            "rate": 20.0, "protocol": "tcp", "repeat": rep, "status": status, "hosts": 16,
            "measured": fig | {"confirmed_on_wire": fig["infected_final"]},
            "model": {"t_50_s": {"p5": 5.0, "p50": 9.5, "p95": 17.0}, "t_all_s": {"p5": 11.0, "p50": 19.0, "p95": 29.0}},
            "agreement": {"ok": status == "ok"}}


def test_summary_rows_per_mechanism_deploy_and_rate():
    rows = summarise_spread([trial("0", 1), trial("0", 2, t_50_s=10.0, t_all_s=22.0),
                             trial("1", 1, infected_final=1, t_first_s=None, t_50_s=None, t_90_s=None, t_all_s=None),
                             trial("1", 2, status="error")])
    assert [c for c in SPREAD_COLUMNS[:12]] == ["mechanism", "deploy", "rate", "hosts", "infected_final", "t_first_s",
                                                "t_50_s", "t_90_s", "t_all_s", "model_t_50_s", "agrees", "repeats"]
    none, full = rows
    assert (none["mechanism"], none["deploy"], none["hosts"], none["repeats"]) == ("none", "0", 16, 2)
    assert (none["t_50_s"], none["t_50_s_min"], none["t_50_s_max"], none["t_all_s"]) == (9.0, 8.0, 10.0, 20.0)
    assert none["model_t_50_s"] == 9.5 and none["agrees"] == "2/2" and none["reached_all"] == 2
    assert none["confirmed_on_wire"] == 32 == none["infections"]
    assert (full["infected_final"], full["t_50_s"], full["reached_all"], full["repeats"], full["errors"]) == \
        (1.0, None, 0, 2, 1)
    assert full["agrees"] == "1/1"


class _Place:
    """A daemon's place whose config shows up after `after` looks."""

    def __init__(self, after: int):
        self.after, self.looks = after, 0

    def contains(self, path: str, needle: str) -> bool:
        assert needle == '"event":"config"'
        self.looks += 1
        return self.looks > self.after


def test_an_emulated_guest_is_polled_gently_and_a_late_daemon_named_with_its_wait():
    import pytest

    from orchestrator.errors import TestbedError
    from orchestrator.experiment.spreadtrial import poll_s
    from orchestrator.experiment.trial import wait_ready

    assert (poll_s(False), poll_s(True)) == (0.5, 2.0)
    now, naps = [0.0], []

    def sleep(s: float) -> None:
        naps.append(s)
        now[0] += s
    wait_ready(_Place(3), "/log", "williamson on blade1", True, clock=lambda: now[0], sleep=sleep)
    assert naps == [0.5, 0.5, 0.5]           # on namespaces: 0.05 s
    with pytest.raises(TestbedError) as e:
        wait_ready(_Place(10**6), "/log", "williamson on blade1", True, clock=lambda: now[0], sleep=sleep)
    assert str(e.value) == "williamson on blade1 did not come up within 60 s (an emulated guest)"
    wait_ready(_Place(1), "/log", "x", False, clock=lambda: now[0], sleep=sleep)
    assert naps[-1] == 0.05
