"""`sweep:` in a benign experiment (orchestrator.experiment.sweepspec): each setting of a mechanism's swept
parameters runs over every rate under its own label; bad sweeps fail before anything is built, naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.experiment import sweepspec
from orchestrator.experiment.runner import mechanism_of, mechanism_roles, plan_trials
from orchestrator.experiment.spec import load_experiment
from tests.cli.test_common import cli

LABS = Path(__file__).resolve().parents[2] / "labs"


def write(tmp: Path, **over) -> Path:
    shutil.copy(LABS / "benign-lab.yaml", tmp / "benign-lab.yaml")
    spec = {"experiment": "s", "kind": "benign", "lab": "benign-lab.yaml", "benign": {"servers": 5},
            "rates": [1, 5], "throttle": {"working_set_size": 5, "delay_queue_limit": 20},
            "sweep": {"working_set_size": [1, 2, 10]}} | over
    path = tmp / "s.yaml"
    path.write_text(json.dumps({k: v for k, v in spec.items() if v is not None}))     # None: the key left out
    return path


def test_labs_benign_sweep_runs_each_working_set_over_both_rates():
    exp = load_experiment(LABS / "benign-sweep.yaml", machine_routes=[])
    assert [m.params["working_set_size"] for m in exp.mechanisms] == [1, 2, 5, 10]
    assert {m.params["delay_queue_limit"] for m in exp.mechanisms} == {100}
    ids = [t.id for t in plan_trials(exp)]
    assert ids[:3] == ["williamson-wss1-tcp-r1-1", "williamson-wss1-tcp-r5-1", "williamson-wss2-tcp-r1-1"]
    assert len(ids) == len(set(ids)) == 8


def test_each_trial_runs_its_own_setting_and_the_role_is_installed_once(tmp_path):
    exp = load_experiment(write(tmp_path, throttle=None,
                                mechanisms=[{"name": "williamson", "params": {"delay_queue_limit": 20}},
                                            {"name": "none"}]), machine_routes=[])
    ts = plan_trials(exp)
    assert [t.id for t in ts][::2] == ["williamson-wss1-tcp-r1-1", "williamson-wss2-tcp-r1-1",
                                       "williamson-wss10-tcp-r1-1", "none-tcp-r1-1"]
    got = [(mechanism_of(exp, t).params.get("working_set_size"), mechanism_of(exp, t).params.get("delay_queue_limit"))
           for t in ts[::2]]
    assert got == [(1, 20), (2, 20), (10, 20), (None, None)]
    assert len(mechanism_roles(exp)) <= 1


def test_a_grid_over_two_keys_in_the_order_written(tmp_path):
    exp = load_experiment(write(tmp_path, sweep={"working_set_size": [2, 5], "release_period_s": [0.5, 1]}),
                          machine_routes=[])
    assert [m.label for m in exp.mechanisms] == ["williamson-wss2-rps0.5", "williamson-wss2-rps1",
                                                 "williamson-wss5-rps0.5", "williamson-wss5-rps1"]
    assert [t.id for t in plan_trials(exp)][:2] == ["williamson-wss2-rps0_5-tcp-r1-1", "williamson-wss2-rps0_5-tcp-r5-1"]


def test_labels_fall_back_to_the_whole_name_when_initials_clash():
    assert sweepspec.short("working_set_size", ["working_set_size", "with_some_sauce"]) == "working_set_size"
    assert sweepspec.label("x", {"a_b": 3, "c": "p"}, ["a_b", "c"]) == "x-ab3-cp"


@pytest.mark.parametrize("over, where, says", [
    ({"sweep": {"working_sett_size": [1, 2]}}, "sweep.working_sett_size", "no mechanism of this experiment takes "
                                                                          "working_sett_size"),
    ({"sweep": {"working_set_size": [1, 0]}}, "sweep.working_set_size.1", "working_set_size must be in"),
    ({"sweep": {"working_set_size": [2, 2]}}, "sweep.working_set_size", "a value is named twice"),
    ({"sweep": {"working_set_size": []}}, "sweep.working_set_size", "at least 1 item"),
    ({"sweep": {"working_set_size": "5"}}, "sweep.working_set_size", "valid list"),
    ({"sweep": {"working_set_size": [1.5]}}, "sweep.working_set_size.0", "must be an int"),
    ({"sweep": {"working_set_size": list(range(1, 66))}}, "sweep.working_set_size", "at most 64 items"),
    ({"kind": "baseline", "benign": None, "worm": {"scan": "198.18.9.0/24"}}, "sweep",
     "a sweep runs in kind: benign and kind: stopping-speed experiments"),
])
def test_a_bad_sweep_names_its_key(tmp_path, over, where, says):
    with pytest.raises(SpecError) as exc:
        load_experiment(write(tmp_path, **over), machine_routes=[])
    text = str(exc.value)
    assert where in text and says in text, text


def test_a_bad_sweep_is_exit_2_through_run_and_nothing_is_built(tmp_path):
    path = write(tmp_path, sweep={"working_set_size": [1, -3]})
    res = cli("run", str(path), state=tmp_path / "state")
    assert res.returncode == 2 and "sweep.working_set_size.1" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "state" / "labs").exists()
