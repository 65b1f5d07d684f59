"""The scheduler (experiment/schedule.py): `--shard I/N` parsed, trials packed longest first, shards that
cover the plan once with the plan's own indices (and so its seeds) — pure, no lab."""

from __future__ import annotations

import pytest

from orchestrator.errors import UsageError
from orchestrator.experiment import schedule
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.runner import estimate_s, plan_trials
from orchestrator.experiment.spec import load_experiment
from tests.experiment.test_runner import LABS


@pytest.mark.parametrize(("text", "want"), [("1/1", (1, 1)), ("2/4", (2, 4)), (" 3 / 3 ", (3, 3))])
def test_a_shard_is_i_of_n(text, want):
    assert schedule.parse_shard(text) == want


@pytest.mark.parametrize(("text", "message"), [
    ("2", "--shard takes I/N (this machine's share I of N, e.g. 2/4), not '2'"),
    ("a/b", "--shard takes I/N"),
    ("0/2", "--shard 0/2: I must be 1 to 2 (shards are numbered from 1)"),
    ("3/2", "--shard 3/2: I must be 1 to 2"),
    ("1/0", "--shard 1/0: the shard count N must be 1 to 1000"),
])
def test_a_bad_shard_is_a_usage_error_that_says_what_is_wanted(text, message):
    with pytest.raises(UsageError) as e:
        schedule.parse_shard(text)
    assert e.value.exit_code == 2 and message in e.value.message


def test_packing_puts_the_longest_first_on_the_least_loaded_bin():
    w = {"a": 10.0, "b": 7.0, "c": 5.0, "d": 4.0, "e": 1.0}
    bins = schedule.pack(list(w), w.__getitem__, 2)
    assert bins == [["a", "d"], ["b", "c", "e"]]           # 14 and 13
    assert schedule.makespan(list(w), w.__getitem__, 2) == 14.0
    assert schedule.makespan(list(w), w.__getitem__, 1) == 27.0
    assert schedule.pack([], w.__getitem__, 3) == [[], [], []]
    with pytest.raises(ValueError):
        schedule.pack(list(w), w.__getitem__, 0)


def test_equal_weights_keep_the_plan_order_round_robin():
    assert schedule.pack([1, 2, 3, 4, 5], lambda x: 1.0, 2) == [[1, 3, 5], [2, 4]]


def test_the_shards_of_the_paper_sweep_cover_it_once_with_its_own_indices():
    exp = load_experiment(LABS / "paper-sweep.yaml", machine_routes=[])
    plan = plan_trials(exp)
    assert len(plan) == 60

    def est(t: TrialSpec) -> float:
        return estimate_s(exp, t)
    for n in (1, 2, 3, 7):
        shards = [schedule.shard_of(plan, est, (i, n)) for i in range(1, n + 1)]
        ids = [t.id for s in shards for t in s]
        assert sorted(ids) == sorted(t.id for t in plan) and len(set(ids)) == 60
        for s in shards:
            assert [t.index for t in s] == sorted(t.index for t in s)            # each in plan order
            assert all(plan[t.index] == t for t in s)                          # same index: same seed
        loads = [sum(est(t) for t in s) for s in shards]
        assert max(loads) - min(loads) <= max(est(t) for t in plan)            # balanced within one trial
    # the same call gives the same share (what every machine of a matrix relies on)
    assert schedule.shard_of(plan, est, (2, 3)) == schedule.shard_of(plan_trials(exp), est, (2, 3))
