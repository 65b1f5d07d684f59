"""Experiment files: the shipped sweep loads; every bad input names file, key path and reason."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.experiment.runner import estimate_s, plan_trials
from orchestrator.experiment.spec import load_experiment

LABS = Path(__file__).resolve().parents[2] / "labs"

GOOD = f"""\
experiment: t
lab: {LABS / 'stopping-speed.yaml'}
worm: {{scan: 198.18.9.0/24}}
rates: [20, 1000]
"""


def load(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(text))
    return p, load_experiment(p, machine_routes=[])


def problems(tmp_path, text):
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as exc:
        load_experiment(p, machine_routes=[])
    assert exc.value.exit_code == 2 and exc.value.source == str(p)
    return [f"{w.split(' (line')[0]}: {r}" for w, r in exc.value.problems]   # line numbers vary with the text


def test_demo_sweep_is_the_papers_set_up():
    e = load_experiment(LABS / "demo-sweep.yaml", machine_routes=[])
    assert e.spec.rates == [5, 20, 100, 1000] and e.spec.worm.protocols == ["tcp", "udp"]
    assert e.spec.repeats == 1 and e.spec.state == "full" and e.throttled
    assert e.lab.name == "stopping-speed"
    trials = plan_trials(e)
    assert [t.id for t in trials] == ["tcp-r5-1", "tcp-r20-1", "tcp-r100-1", "tcp-r1000-1",
                                      "udp-r5-1", "udp-r20-1", "udp-r100-1", "udp-r1000-1"]
    # planning figures come from the model: 5/s takes ~25 s to stop, 1000/s ~0.1 s
    assert 24 < estimate_s(e, trials[0]) - 2 < 26 and estimate_s(e, trials[3]) < 2.2


def test_overrides_and_defaults(tmp_path):
    _, e = load(tmp_path, GOOD)
    assert [t.id for t in plan_trials(e, rates=[7.5], repeats=2)] == [
        "tcp-r7_5-1", "tcp-r7_5-2", "udp-r7_5-1", "udp-r7_5-2"]
    assert e.spec.throttle.placement == "host" and e.spec.throttle.delay_queue_limit == 100
    assert e.spec.kind == "stopping-speed" and e.spec.gateway_empty == "reset"


@pytest.mark.parametrize("change, expected", [
    (GOOD + "colour: red\n", "colour: unknown key 'colour'"),
    (GOOD.replace("rates: [20, 1000]", "rates: [20, -3]"), "rates.1: rate -3.0 is not a usable scan rate"),
    (GOOD.replace("rates: [20, 1000]", "rates: []"), "rates: "),
    (GOOD.replace("198.18.9.0/24", "198.19.0.0/16"), "worm.scan: 198.19.0.0/16 is not inside the lab's experimental "
     "subnets (198.18.8.0/24, 198.18.9.0/24, 198.18.10.0/24); the worm scans nothing else"),
    (GOOD.replace("198.18.9.0/24", "198.18.9.1/24"), "worm.scan: '198.18.9.1/24' is not a valid CIDR"),
    (GOOD.replace(str(LABS / "stopping-speed.yaml"), "nowhere.yaml"), "lab: lab file "),
    (GOOD + "throttle: none\n", "throttle: a stopping-speed experiment needs a throttle; use kind: baseline"),
    (GOOD + "throttle: {working_set_size: 0}\n", "throttle.working_set_size: Input should be greater than or equal to 1"),
    (GOOD + "throttle: {release_period_s: 0}\n", "throttle.release_period_s: Input should be greater than 0"),
    (GOOD + "infected: target1\n", "infected: target1 is a target, not a blade"),
    (GOOD + "infected: nobody\n", "infected: lab stopping-speed has no host 'nobody'"),
    (GOOD.replace("worm: {", "worm: {strategy: spiral, "), "worm.strategy: Input should be 'sequential', 'random', 'local-preference' or 'hit-list'"),
    (GOOD.replace("worm: {", "worm: {profile: conficker-like, "), "worm.profile: Input should be 'nimda-like'"),
    ("- not\n- a mapping\n", "<top>: an experiment file is a mapping that starts with 'experiment: NAME'"),
])
def test_bad_experiment_files(tmp_path, change, expected):
    found = problems(tmp_path, change)
    assert any(expected in p for p in found), found


def test_the_wire_placement_is_offered_on_namespaces_too(tmp_path):
    _, e = load(tmp_path, GOOD + "throttle: {placement: wire}\n")
    assert e.spec.throttle.placement == "wire" and e.lab.provider == "netns"


def test_a_baseline_needs_no_throttle(tmp_path):
    _, e = load(tmp_path, GOOD + "kind: baseline\nthrottle: none\n")
    assert not e.throttled
