"""run_trial on the fake host set (tests/support/fakes.py): every step of a trial, its record and what it
leaves running, without root, namespaces or SSH."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.experiment.record import TrialSpec
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.setup import Setup
from orchestrator.experiment.spec import load_experiment
from orchestrator.experiment.trial import run_trial
from tests.support.fakes import FakeHosts, FakeProvider

LABS = Path(__file__).resolve().parents[2] / "labs"


def experiment_file(tmp: Path, **over) -> Path:
    spec = {"experiment": "fake", "kind": "baseline", "lab": str(LABS / "stopping-speed.yaml"),
            "worm": {"strategy": "sequential", "port": 8080, "protocols": ["tcp"], "scan": "198.18.9.0/24",
                     "max_attempts": 2000, "lifetime_s": 30},
            "rates": [100], "repeats": 1, "timeout_s": 5, "throttle": "none", "state": "fresh", "seed": 3} | over
    path = tmp / "fake.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture
def setup(tmp_path, store):
    exp = load_experiment(experiment_file(tmp_path), machine_routes=[])
    hosts = FakeHosts(exp.lab, tmp_path / "hosts", FakeProvider(store), attempts=12)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    st = Setup.resolve(exp, exp.lab, hosts, run)
    st.shared_clock = True
    return st, hosts


def test_a_baseline_trial_counts_the_worms_syns_on_the_wire_and_stops_at_its_bound(setup):
    st, hosts = setup
    rec = run_trial(st, TrialSpec(0, "tcp", 100.0, 1))
    assert (rec.status, rec.reason) == ("ok", "worm stopped: max_attempts")
    assert rec.measured["wire_attempts"] == 12 and rec.measured["attempts"] == 12
    assert rec.evaluation is not None and rec.evaluation.model is None and rec.placement is None
    assert list(rec.phases) == ["reset", "start", "trigger", "run", "collect", "analyse"]
    assert rec.capture is not None and rec.capture["captured"] == 12
    assert sorted(rec.files or {}) == ["blade:server.jsonl", "pcap", "worm_log"]
    assert (st.run.path / rec.files["pcap"]).is_file()
    assert sorted(rec.watched) == ["tcpdump (the capture) on sniffer", "the worm server on blade",
                                   "the worm server on target1", "the worm server on target2",
                                   "the worm's scanner on blade"]
    assert hosts.services == {}                                   # nothing left running
    downs = [w for h, w in hosts.log if h == "injector" and w.startswith("ip link set ") and w.endswith(" down")]
    assert len(downs) == 1                     # the injector left the experiment once it had triggered the worm


def test_the_record_is_what_trials_jsonl_held_before_it_was_typed(setup):
    st, _ = setup
    d = run_trial(st, TrialSpec(0, "tcp", 100.0, 1)).to_dict()
    # one key more than before it was typed: the mechanism (none: the control group), after the index
    assert list(d) == ["trial", "index", "mechanism", "protocol", "rate", "repeat", "state", "initial_working_set",
                       "placement", "fail_open", "started", "status", "reason", "phases", "triggered", "capture",
                       "files", "measured", "findings", "model", "agreement", "watched", "duration_s"]
    assert d["trial"] == "tcp-r100-1" and d["mechanism"] == "none" and d["model"] is None
    assert json.loads(json.dumps(d)) == d


def test_a_worm_server_that_dies_makes_the_trial_an_error_naming_it(setup):
    st, hosts = setup
    hosts.kill[("target1", "worm-server")] = -9
    rec = run_trial(st, TrialSpec(0, "tcp", 100.0, 1))
    assert rec.status == "error" and rec.evaluation is None
    assert rec.reason.startswith("the worm server on target1 was killed by SIGKILL")
    assert rec.died and rec.died[0]["place"] == "target1" and rec.died[0]["signal"] == "SIGKILL"
    assert rec.died[0]["log_tail"] == ["worm-server: fake death with status -9"]
    assert hosts.services == {}


def test_a_trigger_the_injector_refuses_is_an_error_and_stops_what_started(setup, monkeypatch):
    st, hosts = setup
    real = hosts.sh

    def refuse(host, script, timeout=60.0):
        if "testworm trigger" in script:
            from orchestrator.localrun import Result
            return Result(["sh"], 2, "", "refused: bad key")
        return real(host, script, timeout)
    monkeypatch.setattr(hosts, "sh", refuse)
    rec = run_trial(st, TrialSpec(0, "tcp", 100.0, 1))
    assert (rec.status, rec.reason) == ("error", "the injector's trigger was refused: refused: bad key")
    assert rec.triggered is None and "trigger" not in rec.phases
    assert hosts.services == {}


def test_a_mechanism_in_the_host_is_started_watched_and_stopped(tmp_path, store):
    exp = load_experiment(experiment_file(tmp_path, kind="stopping-speed", state="full", throttle={
        "placement": "host", "working_set_size": 5, "delay_queue_limit": 100, "release_period_s": 1.0,
        "policy": "packets"}), machine_routes=[])
    hosts = FakeHosts(exp.lab, tmp_path / "hosts", FakeProvider(store), attempts=6)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    st = Setup.resolve(exp, exp.lab, hosts, run)
    rec = run_trial(st, TrialSpec(0, "tcp", 100.0, 1))
    assert rec.placement == "host" and rec.fail_open is False
    assert "the throttle daemon on blade" in rec.watched
    assert ("blade", "start throttle") in hosts.log and ("blade", "stop throttle") in hosts.log
    assert (rec.status, rec.reason) == ("ok", "worm stopped: max_attempts"), rec.reason
    assert rec.evaluation is not None and rec.evaluation.model is not None
    assert hosts.services == {}
    # just before the trigger the throttle logged what it held: the normal traffic's destinations, full
    assert hosts.log.index(("blade", "throttle mark")) < next(i for i, (h, w) in enumerate(hosts.log)
                                                              if w.startswith("ip link set") and w.endswith(" down"))
    met = rec.to_dict()["state_met"]
    assert met["state"] == "full" and met["working_set"] == st.normal and len(st.normal) == 5


@pytest.mark.parametrize("script", ["ping -c 1 198.18.9.1", "true; nc 198.18.9.1 80", "rm -rf relative/dir",
                                    "cat /etc/passwd", "ls /tmp | xargs -r python3 -c pass"])
def test_the_fake_hosts_refuse_anything_but_their_short_list_on_their_own_files(setup, script):
    _, hosts = setup
    with pytest.raises(AssertionError, match="fake hosts"):
        hosts.sh("blade", script)


def test_the_fake_hosts_run_no_program_they_do_not_play(setup):
    _, hosts = setup
    with pytest.raises(AssertionError, match="does not know how to run"):
        hosts.access.run("blade", ["python3", "-c", "import socket"])
