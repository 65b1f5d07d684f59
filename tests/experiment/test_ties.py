"""Agreement that a tie cannot flip (issue 20): the daemon's decision jitter measured from its own event log, the
model's set of outcomes, the worm's schedule followed past its log, and the judge — on the paper sweep's trial
that disagreed (tests/fixtures/tie-udp-2ps, its README says what it shows) and on synthetic logs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.experiment import agreement
from orchestrator.experiment.evaluate import evaluate
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.setup import Setup
from orchestrator.experiment.spec import ThrottleSpec, load_experiment

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "tie-udp-2ps"
SRC = "198.18.8.2"
NORMAL = ["198.18.10.254", "198.18.10.253", "198.18.10.252", "198.18.10.251", "198.18.10.250"]


def evaluate_fixture(tmp_path: Path) -> dict:
    """The project's own evaluation of the trial's files, as run_trial calls it after collecting them."""
    for f in ("capture.pcap", "throttle.jsonl", "worm.jsonl"):
        shutil.copy(FIXTURE / f, tmp_path / f)
    exp = load_experiment(REPO / "labs" / "paper-sweep.yaml", machine_routes=[])
    lab = exp.lab
    infected = lab.by_role("blade")[0]
    seg = next(i.segment for i in infected.interfaces if i.segment.startswith("experimental"))
    st = Setup(exp, lab, None, None, infected.name, lab.by_role("injector")[0].name,
               lab.by_role("sniffer")[0].name, lab.by_role("gateway")[0].name, [], seg, [], NORMAL,
               ("injector", "198.18.8.1"), shared_clock=True).for_mechanism(exp.mechanisms[0])
    files = {"pcap": tmp_path / "capture.pcap", "throttle_log": tmp_path / "throttle.jsonl",
             "worm_log": tmp_path / "worm.jsonl"}
    return evaluate(st, TrialSpec(34, "udp", 2.0, 2), files, tmp_path).to_dict()


def test_the_paper_sweeps_tied_trial_agrees_with_the_models_set(tmp_path):
    rec = evaluate_fixture(tmp_path)
    m, mo, ag = rec["measured"], rec["model"], rec["agreement"]
    assert m["stop_s"] == pytest.approx(99.00, abs=0.005) and m["out_before_block"] == 98
    # the strict prediction (exact clock) is the sister repeats' 99.50 s and 99 out — found past the log's end
    assert mo["stop_s"] == pytest.approx(99.50, abs=0.005) and mo["out_before_block"] == 99
    assert mo["observed_until_s"] == pytest.approx(99.453, abs=0.001) and mo["observed_until_s"] < mo["stop_s"]
    assert mo["after_log"] == {"from_attempt": 199, "targets": "the worm's own sequential targets (seed 35)"}
    o = mo["orderings"]
    assert [(round(x["stop_s"], 2), x["out_before_block"]) for x in o["outcomes"]] == [(99.0, 98), (99.5, 99)]
    assert (o["stop_s_min"], o["out_min"], o["out_max"]) == (pytest.approx(99.0, abs=0.001), 98, 99)
    assert o["ties"] == 99 and o["decisive"] == 1 and o["complex"] == 0 and not o["incomplete"]
    # the window: the daemon was at worst 123 µs late on its 98 releases, under the 0.2 ms floor
    j = o["jitter"]
    assert j["releases"] == 98 and j["late_max_s"] == pytest.approx(122.8e-6, abs=1e-6)
    assert j["window_s"] == o["window_s"] == agreement.TIE_WINDOW_FLOOR_S
    assert ag["ok"] is True and ag["ordering"] == "other" and ag["tie_decided"] is True and ag["reasons"] == []
    assert ag["matched"]["stop_s"] == pytest.approx(99.0, abs=0.001)


def test_the_recorded_verdict_was_the_old_models_and_the_set_does_not_accept_anything(tmp_path):
    old = json.loads((FIXTURE / "trial.json").read_text())
    assert old["agreement"]["ok"] is False and old["model"]["blocked"] is False     # what the issue reported
    model = evaluate_fixture(tmp_path)["model"]
    judge = agreement.judge
    # two ticks off (at 99 s the stopping-time tolerance is 3 %, ~3 s: the attempts out tell), too many out, …
    for stop, out in ((97.0, 96), (101.0, 101), (99.0, 101), (99.5, 96), (None, 199)):
        v = judge({"stop_s": stop, "out_before_block": out, "out_after_block": 0}, model)
        assert v["ok"] is False and v["ordering"] is None, (stop, out)
    v = judge({"stop_s": None, "out_before_block": 199, "out_after_block": 0}, model)
    # its 99.5 s block comes after the log ended (99.45 s): what the worm had out by then is compared
    assert v["reasons"] == ["attempts out by the end 199 vs model 99 (the orderings of 99 tie(s) allow "
                            "99.000–99.500 s, 98–99 out)"]
    for stop, out, how in ((99.5, 99, "strict"), (99.0, 98, "other"), (99.0, 99, "other")):
        v = judge({"stop_s": stop, "out_before_block": out, "out_after_block": 0}, model)
        assert v["ok"] is True and v["ordering"] == how, (stop, out)


def udp_log(rate: float, n: int, *, t0: float = 500.0, late: dict[int, float] | None = None, stop: float | None = None,
            max_attempts: int = 2000, lifetime: float = 60.0, protocol: str = "udp") -> list[str]:
    """A test worm's log: sequential scan of 198.18.9.0/24 at `rate` from `t0`, attempt i sent late[i] after due."""
    late = late or {}
    params = {"rate": rate, "protocol": protocol, "port": 8080, "strategy": "sequential", "seed": 9,
              "targets": ["198.18.9.0/24"], "start": None, "hit_list": [], "local_weights": [0.5, 0.25, 0.25],
              "burst": 1, "max_attempts": max_attempts, "lifetime_s": lifetime, "connect_timeout_s": 3.0,
              "source": SRC}
    lines = [{"event": "start", "t_mono": t0 - 0.001, "t_wall": 1e9, "params": params}]
    for i in range(n):
        due = t0 + i / rate
        t = due + late.get(i, 20e-6)
        lines.append({"event": "attempt", "i": i, "t_mono": t, "t_wall": 1e9 + t - t0, "due_mono": due,
                      "t_done_mono": t + 1e-4, "src": SRC, "sport": 53411 if protocol == "udp" else 40000 + i,
                      "dst": f"198.18.9.{i}", "dport": 8080, "protocol": protocol,
                      "outcome": "sent" if protocol == "udp" else "refused", "generation": 0})
    if stop is not None:
        lines.append({"event": "stop", "t_mono": stop, "t_wall": 1e9, "reason": "signal", "attempts": n})
    return [json.dumps(x) for x in lines]


def model_of(lines, limit=10, window=agreement.TIE_WINDOW_FLOOR_S, protocol="udp"):
    cfg = agreement.throttle_config(ThrottleSpec(delay_queue_limit=limit), NORMAL)
    return agreement.model_trial(lines, src=SRC, config=cfg, placement="host", protocol=protocol, tie_window_s=window)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_two_per_second_with_a_limit_of_ten_allows_9_0_and_9_5_s(protocol):
    """labs/ties.yaml's trials: the tie at 9.0 s decides. The worm stopped at 9.3 s (after a block at 9.0 s):
    the 9.5 s block is predicted from its schedule."""
    lines = udp_log(2.0, 19, stop=500.0 + 9.3, protocol=protocol)
    m = model_of(lines, protocol=protocol)
    assert [(round(o["stop_s"], 2), o["out_before_block"]) for o in m["orderings"]["outcomes"]] == [(9.0, 8), (9.5, 9)]
    assert round(m["stop_s"], 2) == 9.5           # 20 µs after each tick, the exact clock lets the release go first
    for stop, out in ((9.0, 8), (9.5, 9)):
        assert agreement.judge({"stop_s": stop + 3e-4, "out_before_block": out, "out_after_block": 0}, m)["ok"]
    for stop, out in ((7.0, 6), (11.0, 10), (8.0, 7), (10.0, 9)):        # a tick or two off: no
        assert not agreement.judge({"stop_s": stop, "out_before_block": out, "out_after_block": 0}, m)["ok"]
    strict = model_of(lines, protocol=protocol, window=0.0)    # without the window: only the strict prediction
    assert strict["orderings"]["outcomes"] == [strict["orderings"]["strict"]]
    assert not agreement.judge({"stop_s": 9.0, "out_before_block": 8, "out_after_block": 0}, strict)["ok"]


def test_a_block_after_the_log_is_not_one_the_trial_could_see():
    """Stopped at its timeout before any block: a block the model finds later in the worm's schedule agrees
    with "not blocked", counted by what was out when the log ended."""
    lines = udp_log(2.0, 10, stop=500.0 + 4.9)
    m = model_of(lines)
    assert m["observed_until_s"] == pytest.approx(4.9, abs=1e-4)
    assert round(m["stop_s"], 2) == 9.5
    assert m["orderings"]["strict"]["out_at_log_end"] == 4                 # released at 1, 2, 3, 4 s
    assert agreement.judge({"stop_s": None, "out_before_block": 4, "out_after_block": 0}, m)["ok"]
    assert not agreement.judge({"stop_s": None, "out_before_block": 9, "out_after_block": 0}, m)["ok"]


def test_a_worm_that_ended_by_itself_is_not_continued():
    lines = udp_log(2.0, 19) + [json.dumps({"event": "stop", "t_mono": 510.0, "t_wall": 1e9,
                                                 "reason": "max_attempts", "attempts": 19})]
    m = model_of(lines)
    assert m["after_log"] is None and m["observed_until_s"] is None
    assert [o["blocked"] for o in m["orderings"]["outcomes"]] == [True, False]    # the early ordering still blocks


def test_a_worm_whose_targets_do_not_match_its_start_line_is_continued_to_new_addresses():
    lines = [json.loads(x) for x in udp_log(2.0, 19, stop=509.3)]
    lines[0]["params"]["seed"], lines[0]["params"]["strategy"] = 1, "random"
    m = model_of([json.dumps(x) for x in lines])
    assert m["after_log"]["targets"].startswith("new destinations: the worm's random targets do not give")
    assert round(m["stop_s"], 2) == 9.5


def test_the_100_per_second_note_1_00_s_with_0_out_or_1_01_s_with_1_out():
    """README's demo table: at 100/s the 101st entry and the first release both fall at 1.00 s."""
    lines = udp_log(100.0, 130, late={0: 40e-6}, stop=500.0 + 1.3, protocol="tcp")
    m = model_of(lines, limit=100, protocol="tcp")
    assert [(round(o["stop_s"], 2), o["out_before_block"]) for o in m["orderings"]["outcomes"]] == [(1.0, 0), (1.01, 1)]
    for stop, out in ((1.0, 0), (1.01, 1)):
        assert agreement.judge({"stop_s": stop, "out_before_block": out, "out_after_block": 0}, m)["ok"]


def test_decision_jitter_from_the_daemons_releases():
    ev = [{"event": "config"}, {"event": "released", "t_mono": 11.0, "due_mono": 10.0},     # an earlier session
          {"event": "config"},
          {"event": "released", "t_mono": 1.0001, "due_mono": 1.0},
          {"event": "released", "t_mono": 2.0009, "due_mono": 2.0},
          {"event": "queued", "t_mono": 2.5},
          {"event": "released", "t_mono": 3.00002, "due_mono": 3.0}]
    j = agreement.decision_jitter(ev, period_s=1.0)
    assert j["releases"] == 3 and j["late_max_s"] == pytest.approx(0.0009) and j["window_s"] == pytest.approx(0.0009)
    assert j["late_median_s"] == pytest.approx(0.0001)
    none = agreement.decision_jitter([], period_s=1.0)       # blocked before its first release: the floor
    assert none == {"window_s": 0.0002, "releases": 0, "late_max_s": None, "late_median_s": None, "floor_s": 0.0002}
    slow = agreement.decision_jitter([{"event": "released", "t_mono": 3.0, "due_mono": 1.0}], period_s=1.0)
    assert slow["window_s"] == 0.5               # never more than half the period


def test_never_blocked_the_model_counts_what_was_out_when_the_log_ended():
    """At 1/s the queue never grows: stopped at its 30 s timeout, the worm's schedule runs on to its 60 s
    lifetime in the model, but the attempts out it gives are those by the log's end, as the trial saw."""
    m = model_of(udp_log(1.0, 30, stop=500.0 + 29.5), limit=100)
    assert m["blocked"] is False and m["out_before_block"] == 29          # the 30th still queued at the end
    assert m["orderings"]["outcomes"] == [{"stop_s": None, "blocked": False, "out_before_block": 29,
                                           "out_at_log_end": 29}]
    assert agreement.judge({"stop_s": None, "out_before_block": 29, "out_after_block": 0}, m)["ordering"] == "strict"
