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


def write_detectors(tmp: Path, **over) -> Path:
    shutil.copy(LABS / "benign-detectors-lab.yaml", tmp / "benign-detectors-lab.yaml")
    spec = {"experiment": "d", "kind": "benign", "lab": "benign-detectors-lab.yaml", "rates": [1], "seed": 4,
            "benign": {"servers": 10, "duration_s": 5, "hosts": 4, "miss": 0.1},
            "mechanisms": [{"name": "trw"}]} | over
    path = tmp / "d.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("over, where, says", [
    ({"benign": {"servers": 10, "hosts": 5}}, "benign.hosts",
     "lab benign-detectors-lab has 4 blade(s); 5 hosts need as many"),
    ({"benign": {"servers": 10, "miss": 1.5}}, "benign.miss", "less than or equal to 1"),
    ({"benign": {"servers": 10, "miss": -0.1}}, "benign.miss", "greater than or equal to 0"),
    ({"benign": {"servers": 30, "miss": 0.1}}, "benign.miss",
     "every target of lab benign-detectors-lab runs a workload server (30 servers, 30 target(s))"),
    ({"benign": {"servers": 10, "hosts": 2}, "mechanisms": [{"name": "trw", "placement": "gateway"}]},
     "mechanisms.0.placement", "benign.hosts 2: each host carries its own trw, so its placement must be host"),
    ({"benign": {"servers": 10, "hosts": 0}}, "benign.hosts", "greater than or equal to 1"),
])
def test_bad_hosts_or_miss_name_the_key_before_anything_is_built(tmp_path, over, where, says):
    text = problems(write_detectors(tmp_path, **over))
    assert where in text and says in text, text


def test_a_miss_needs_a_generated_schedule(tmp_path):
    (tmp_path / "t.csv").write_text("0,0,tcp,\n")
    text = problems(write_detectors(tmp_path, benign={"servers": 2, "trace": "t.csv", "miss": 0.2}))
    assert "benign.miss" in text and "miss applies to a generated schedule only" in text


def test_hosts_and_miss_are_for_kind_benign_only(tmp_path):
    shutil.copy(LABS / "benign-detectors-lab.yaml", tmp_path / "benign-detectors-lab.yaml")
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"experiment": "s", "lab": "benign-detectors-lab.yaml", "rates": [1],
                                "worm": {"scan": "198.18.9.0/24"}, "benign": {"servers": 2, "hosts": 2}}))
    text = problems(path)
    assert "benign.hosts" in text and "hosts is for kind: benign" in text


def test_each_host_has_its_own_seed_and_misses_only_to_targets_without_a_server(tmp_path):
    exp = load_experiment(write_detectors(tmp_path), machine_routes=[])
    from orchestrator.experiment import benignspec
    lab = exp.lab
    assert benignspec.blades_of(exp.spec, lab) == ["blade1", "blade2", "blade3", "blade4"]
    stale = benignspec.stale_targets(exp.spec, lab)
    assert stale == [f"target{i}" for i in range(11, 31)]
    assert not set(stale) & {h.name for h in lab.by_role("target")[:10]}

    class St:
        pass
    st = St()
    st.exp, st.exp_ranges = exp, ["198.18.8.0/24", "198.18.9.0/24"]
    ips = ["198.18.9.30", "198.18.9.31"]
    a0 = benign.session_args(st, TrialSpec(0, "tcp", 1.0, 1), None, stale=ips)
    a3 = benign.session_args(st, TrialSpec(0, "tcp", 1.0, 1), None, host=3, stale=ips)
    assert a0[a0.index("--seed") + 1] == "4" and a3[a3.index("--seed") + 1] == "7"
    assert a0[a0.index("--miss"):] == ["--miss", "0.1", "--stale", *ips]
    one = load_experiment(write(tmp_path), machine_routes=[])       # no miss: the command line it always was
    st.exp = one
    assert "--miss" not in benign.session_args(st, TrialSpec(0, "tcp", 1.0, 1), None, stale=ips)
    assert benignspec.blades_of(one.spec, one.lab) == ["blade"] and benignspec.stale_targets(one.spec, one.lab) == []


def test_the_mechanism_is_installed_on_every_benign_host(tmp_path):
    from orchestrator.experiment.runner import mechanism_roles
    exp = load_experiment(write_detectors(tmp_path), machine_routes=[])
    (role,) = mechanism_roles(exp)
    assert role.name == "trw" and role.hosts == ("blade1", "blade2", "blade3", "blade4")


def test_labs_benign_detectors_yaml_runs_three_mechanisms_on_four_hosts():
    exp = load_experiment(LABS / "benign-detectors.yaml", machine_routes=[])
    b = exp.spec.benign
    assert (b.hosts, b.miss, b.servers, exp.spec.rates) == (4, 0.1, 10, [1, 5])
    assert [m.name for m in exp.mechanisms] == ["trw", "williamson", "none"]
    assert len(plan_trials(exp)) == 6


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
