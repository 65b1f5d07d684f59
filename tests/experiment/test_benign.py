"""`kind: benign` experiment files (orchestrator.experiment.benignspec) and the benign trial's pure parts
(the generator's command line, its allow-list, the plan, the summary file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.errors import SpecError
from orchestrator.experiment import benign
from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import plan_trials
from orchestrator.experiment.spec import load_experiment

LABS = Path(__file__).resolve().parents[2] / "labs"


def write(tmp: Path, **over) -> Path:
    shutil.copy(LABS / "benign-lab.yaml", tmp / "benign-lab.yaml")
    spec = {"experiment": "b", "kind": "benign", "lab": "benign-lab.yaml",
            "benign": {"servers": 20, "duration_s": 5}, "rates": [0.5, 2], "seed": 4} | over
    path = tmp / "b.yaml"
    path.write_text(json.dumps(spec))
    return path


def problems(path: Path) -> str:
    with pytest.raises(SpecError) as exc:
        load_experiment(path, machine_routes=[])
    return str(exc.value)


def test_labs_benign_yaml_is_williamson_at_half_to_ten_per_second():
    exp = load_experiment(LABS / "benign.yaml", machine_routes=[])
    assert exp.spec.kind == "benign" and exp.spec.worm is None and exp.spec.rates == [0.5, 1, 2, 5, 10]
    (m,) = exp.mechanisms
    assert (m.name, m.placement, m.params["working_set_size"], m.params["release_period_s"]) == \
        ("williamson", "host", 5, 1.0)
    assert [t.id for t in plan_trials(exp)] == ["tcp-r0_5-1", "tcp-r1-1", "tcp-r2-1", "tcp-r5-1", "tcp-r10-1"]


def test_a_benign_experiment_with_mechanisms_plans_each_over_rates_and_protocols(tmp_path):
    exp = load_experiment(write(tmp_path, benign={"servers": 3, "protocols": ["tcp", "udp"]},
                                mechanisms=[{"name": "williamson"}, {"name": "none"}]), machine_routes=[])
    assert [t.id for t in plan_trials(exp)] == [
        "williamson-tcp-r0_5-1", "williamson-tcp-r2-1", "williamson-udp-r0_5-1", "williamson-udp-r2-1",
        "none-tcp-r0_5-1", "none-tcp-r2-1", "none-udp-r0_5-1", "none-udp-r2-1"]


@pytest.mark.parametrize("over, where, says", [
    ({"benign": {"srvers": 3}}, "benign.srvers", "unknown key"),
    ({"benign": {"popularity": "pareto"}}, "benign.popularity", "'zipf' or 'uniform'"),
    ({"benign": {"duration_s": 0}}, "benign.duration_s", "greater than 0"),
    ({"benign": {"servers": 21}}, "benign.servers", "has 20 target(s); 21 servers need as many"),
    ({"benign": {"trace": "nowhere.csv"}}, "benign.trace", "nowhere.csv does not exist"),
    ({"benign": None}, "benign", "kind: benign needs a benign: block"),
    ({"worm": {"scan": "198.18.9.0/24"}}, "worm", "kind: benign runs no worm"),
    ({"infected": "target1"}, "infected", "target1 is a target, not a blade"),
])
def test_a_bad_benign_file_names_the_key(tmp_path, over, where, says):
    text = problems(write(tmp_path, **over))
    assert where in text and says in text


@pytest.mark.parametrize("text, says", [
    ("time,destination,protocol,port\n0,0,tcp,\n0.5,x,tcp,\n", "t.csv line 3: destination 'x' is not an index"),
    ("0,0,tcp,\n1,3,tcp,\n", "t.csv line 2: destination 3, but only 2 server(s) (0 … 1); give more benign.servers "
                            "or benign.wrap: true"),
    ("1,0,tcp,\n0.5,1,tcp,\n", "t.csv line 2: time 0.5 is before the previous line's 1.0"),
    ("# nothing\n", "no connections in the trace"),
])
def test_a_bad_trace_is_refused_before_a_lab_is_built_naming_its_line(tmp_path, text, says):
    (tmp_path / "t.csv").write_text(text)
    got = problems(write(tmp_path, benign={"servers": 2, "trace": "t.csv"}))
    assert "benign.trace" in got and says in got, got


def test_a_trace_with_more_destinations_than_servers_wraps_when_asked(tmp_path):
    (tmp_path / "t.csv").write_text("0,0,tcp,\n1,3,tcp,\n")
    exp = load_experiment(write(tmp_path, benign={"servers": 2, "trace": "t.csv", "wrap": True}), machine_routes=[])
    assert exp.spec.benign.wrap


@pytest.mark.parametrize("benign_block, where", [
    ({"servers": 0}, "benign.servers (line"),
    ({"burst": 101}, "benign.burst (line"),
    ({"protocols": ["icmp"]}, "benign.protocols.0 (line"),
    ({"arrivals": "bursty"}, "benign.arrivals (line"),
    ({"servers": 30}, "benign.servers (line"),
])
def test_a_bad_benign_block_is_exit_2_through_validate_and_run(tmp_path, benign_block, where):
    from tests.cli.test_common import cli
    path = tmp_path / "b.yaml"
    shutil.copy(LABS / "benign-lab.yaml", tmp_path / "benign-lab.yaml")
    path.write_text("experiment: b\nkind: benign\nlab: benign-lab.yaml\nrates: [1]\nbenign:\n"
                    + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in benign_block.items()))
    for verb in ("validate", "run"):
        res = cli(verb, str(path), state=tmp_path / "state")
        assert res.returncode == 2 and where in res.stderr and "Traceback" not in res.stderr, (verb, res.stderr)
    assert not (tmp_path / "state" / "labs").exists()


def test_every_other_kind_still_needs_its_worm(tmp_path):
    path = write(tmp_path, kind="stopping-speed")
    text = problems(path)
    assert "worm" in text and "Field required" in text


def test_the_generator_runs_the_trials_rate_and_seed_and_reaches_only_its_servers(tmp_path, monkeypatch):
    exp = load_experiment(write(tmp_path, benign={"servers": 3, "burst": 2, "popularity": "uniform", "duration_s": 5}),
                          machine_routes=[])

    class St:
        pass
    st = St()
    st.exp, st.exp_ranges = exp, ["198.18.8.0/24", "198.18.9.0/24", "198.18.10.0/24"]
    args = benign.session_args(st, TrialSpec(1, "udp", 2.0, 1), None)
    want = {"--rate": "2", "--duration": "5", "--burst": "2", "--popularity": "uniform", "--udp-fraction": "1",
            "--seed": "4", "--tcp-port": "8081", "--udp-port": "5354"}
    assert {k: args[args.index(k) + 1] for k in want} == want
    assert benign.session_args(st, TrialSpec(0, "tcp", 2.0, 1), "/p/trace.csv")[:4] == \
        ["--trace", "/p/trace.csv", "--trace-ports", "lab"]
    assert benign.allow_list(st, ["198.18.9.2", "198.18.9.3"]) == ["198.18.9.0/24"]


def test_a_benign_run_writes_its_own_summary_columns(tmp_path):
    run = RunDir(tmp_path)
    rec = {"trial": "tcp-r2-1", "kind": "benign", "mechanism": "williamson", "setting": "working_set_size=5",
           "protocol": "tcp", "rate": 2.0, "status": "ok",
           "measured": {"connections": 18, "delay_p50_s": 0.0004, "delay_p95_s": 1.001, "delay_p99_s": 1.0036,
                        "delay_max_s": 1.0043, "dropped": 0, "false_blocks": 0, "false_block": None},
           "model": {"delay_p99_s": 1.0}, "agreement": {"ok": True, "share": 1.0}}
    from orchestrator.experiment.rundir import summarise
    run.write_summary(summarise([rec]))
    head, row = (tmp_path / "summary.csv").read_text().splitlines()
    assert head.startswith("mechanism,setting,protocol,benign_rate,connections,delay_p50_s,delay_p95_s,delay_p99_s")
    assert row.startswith("williamson,working_set_size=5,tcp,2,18,0.0004,1.001,1.0036")
    assert run.summary()[0]["agree"] is True and run.summary()[0]["false_blocks"] == 0
