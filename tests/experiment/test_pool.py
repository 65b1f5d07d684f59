"""`--parallel K` on the fake lab (tests/support/fakes.py): K lab instances, trials longest first, the run
directory in plan order and equal to a serial run's, resume, a lost instance, the machine's load per trial,
and the default K."""

from __future__ import annotations

import dataclasses
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator import providers
from orchestrator.errors import ExperimentError
from orchestrator.experiment import pool
from orchestrator.experiment.record import Evaluation, TrialRecord, TrialSpec
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import RunOptions, run_experiment
from orchestrator.experiment.spec import load_experiment
from orchestrator.lab import lifecycle
from tests.experiment.test_trial_fake import experiment_file
from tests.support.fakes import FakeHosts

RATES = [100, 500, 1000]


@pytest.fixture
def labs(tmp_path, store, monkeypatch):
    """Lab sessions on the fake provider, each instance its own lab and host directories; who ran what."""
    monkeypatch.setitem(providers._REGISTRY, "fake", "tests.support.fakes:FakeProvider")
    seen: dict = {"up": [], "trials": {}, "fail": set(), "lock": threading.Lock()}

    @contextmanager
    def session(exp, store, *, keep=False, console=None):
        if exp.lab.name in seen["fail"]:
            raise ExperimentError(f"lab {exp.lab.name} cannot be built")
        lab = lifecycle.up(exp.lab.source, provider="fake", name=exp.lab.name, store=store)
        with seen["lock"]:
            seen["up"].append(lab.name)
        try:
            prov, _ = lifecycle.provider_for(lab.name, store)
            yield FakeHosts(lab, tmp_path / "hosts" / lab.name, prov, attempts=8)
        finally:
            if not keep:
                lifecycle.down(lab.name, store=store)
    seen["session"] = session
    return seen


def _path(tmp_path):
    return experiment_file(tmp_path, rates=RATES, repeats=2)


def _same(run: RunDir):
    keep = ("trial", "index", "protocol", "rate", "repeat", "status", "reason", "files", "agreement")
    return [{k: t.get(k) for k in keep} for t in run.trials()]


def test_three_lab_instances_run_the_sweep_and_write_what_a_serial_run_writes(tmp_path, store, labs):
    serial = run_experiment(_path(tmp_path), RunOptions(out=tmp_path / "serial", store=store, lab=labs["session"]))
    par = run_experiment(_path(tmp_path), RunOptions(out=tmp_path / "par", store=store, lab=labs["session"],
                                                     parallel=3))
    run = RunDir(par.path)
    man = run.manifest()
    assert man["status"] == "complete" and (man["trials"], man["planned"]) == (6, 6)
    assert man["parallel"] == {"instances": 3, "labs": ["stopping-speed", "stopping-speed-2", "stopping-speed-3"]}
    assert sorted(labs["up"][1:]) == ["stopping-speed", "stopping-speed-2", "stopping-speed-3"]
    assert store.names() == []                                        # every instance down again
    assert [t["trial"] for t in run.trials()] == [t["trial"] for t in RunDir(serial.path).trials()]   # plan order
    assert _same(run) == _same(RunDir(serial.path))
    assert (run.path / "summary.csv").read_text() == (serial.path / "summary.csv").read_text()
    for t in run.trials():
        assert set(t["load"]) == {"loadavg_1m", "cpu_busy", "cpus", "runner_cpu_s", "worker_cpu_s", "wall_s",
                                  "trials_running"}
        assert 1 <= t["load"]["trials_running"] <= 3 and t["timing"]["disturbed"] is False
        assert t["timing"]["worm"]["attempts"] == 8 and t["timing"]["tolerance_s"] == 0.02
    assert all(t["load"]["trials_running"] == 1 for t in RunDir(serial.path).trials())


def test_parallel_is_never_more_than_the_trials_left(tmp_path, store, labs):
    path = experiment_file(tmp_path, rates=[100], repeats=1)
    rdir = run_experiment(path, RunOptions(out=tmp_path / "r", store=store, lab=labs["session"], parallel=4))
    assert "parallel" not in RunDir(rdir.path).manifest() and labs["up"] == ["stopping-speed"]   # serial


def test_a_parallel_run_resumes_with_the_trials_it_had_not_done(tmp_path, store, labs):
    rdir = run_experiment(_path(tmp_path), RunOptions(out=tmp_path / "r", store=store, lab=labs["session"],
                                                      parallel=2))
    run = RunDir(rdir.path)
    first = run.trials()
    run.write_trials([first[0], first[3]])
    run.write_manifest(run.manifest() | {"status": "interrupted"})
    run_experiment(_path(tmp_path), RunOptions(resume=run.path, store=store, lab=labs["session"], parallel=2))
    again = run.trials()
    assert [t["trial"] for t in again] == [t["trial"] for t in first]
    assert again[0] == first[0] and again[3] == first[3] and again[1]["started"] > first[1]["started"]


def test_a_lab_instance_that_cannot_be_built_leaves_its_trials_to_the_others(tmp_path, store, labs):
    labs["fail"].add("stopping-speed-2")
    rdir = run_experiment(_path(tmp_path), RunOptions(out=tmp_path / "r", store=store, lab=labs["session"],
                                                      parallel=2))
    man = RunDir(rdir.path).manifest()
    assert man["status"] == "complete" and man["trials"] == 6
    assert man["parallel"]["lost"] == ["lab stopping-speed-2 cannot be built"]


def test_when_every_instance_is_lost_the_run_fails_and_says_why(tmp_path, store, labs):
    labs["fail"] |= {"stopping-speed", "stopping-speed-2"}
    with pytest.raises(ExperimentError, match="cannot be built"):
        run_experiment(_path(tmp_path), RunOptions(out=tmp_path / "r", store=store, lab=labs["session"], parallel=2))
    man = RunDir(tmp_path / "r").manifest()
    assert man["status"] == "failed" and man["trials"] == 0 and len(man["parallel"]["lost"]) == 2


def test_instance_names_are_lab_names():
    assert pool.instance_name("stopping-speed", 1) == "stopping-speed"
    assert pool.instance_name("stopping-speed", 12) == "stopping-speed-12"
    long = "a" * 24
    assert pool.instance_name(long, 3) == "a" * 22 + "-3" and len(pool.instance_name(long, 16)) == 24
    assert pool.instance_name("abcdefghijklmnopqrstu-vw", 2) == "abcdefghijklmnopqrstu-2"


def test_the_default_is_four_labs_per_cpu_within_memory_and_the_trials(tmp_path, monkeypatch):
    exp = load_experiment(_path(tmp_path), machine_routes=[])
    monkeypatch.setattr(pool.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(pool, "available_mib", lambda: 20000)
    assert pool.default_parallel(exp, 60) == 8 and pool.default_parallel(exp, 3) == 3
    monkeypatch.setattr(pool, "available_mib", lambda: 1500)
    assert pool.default_parallel(exp, 60) == 2                                  # 512 MiB a lab
    monkeypatch.setattr(pool, "available_mib", lambda: 100)
    assert pool.default_parallel(exp, 60) == 1
    vm = exp.__class__(**{**exp.__dict__, "lab": exp.lab.__class__(**{**exp.lab.__dict__, "provider": "libvirt"})})
    assert pool.default_parallel(vm, 60) == 1


# ---------------------------------------------------------------- the pool alone, on stand-ins for the lab and trial


@dataclasses.dataclass
class _Setup:
    name: str
    run: RunDir
    tolerance: dict = dataclasses.field(default_factory=lambda: {"stop_abs_s": 0.02})
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    abort_late_s: float | None = None


def _pool(tmp_path, monkeypatch, k, todo, late=lambda t, n: 0.001, lost=(), unloadable=()):
    """pool.sweep_parallel on stand-ins (instance i is lab `lab`, `lab-2`, …): `late(t, n)` is the throttle's
    release lateness of try n of trial t; `lost` cannot be built, `unloadable` not even loaded."""
    seen: dict = {"order": [], "on": {}, "recorded": [], "tries": {}}
    lock = threading.Lock()

    def instance(exp, i):
        name = pool.instance_name(exp.lab.name, i)
        if name in unloadable:
            raise ExperimentError(f"lab {name}: its lab file cannot be loaded")
        return SimpleNamespace(lab=SimpleNamespace(name=name))
    monkeypatch.setattr(pool, "instance", instance)

    @contextmanager
    def session(exp, store, *, keep=False, console=None):
        if exp.lab.name in lost:
            raise ExperimentError(f"lab {exp.lab.name} cannot be built")
        yield exp.lab.name

    def trial(st, t):
        with lock:
            seen["order"].append(t.id)
            seen["on"].setdefault(st.name, []).append(t.id)
            n = seen["tries"][t.id] = seen["tries"].get(t.id, 0) + 1
        time.sleep(0.02)
        r = TrialRecord(t.id, t.index, t.protocol, t.rate, t.repeat, "full", [], "host", False, time.time(),
                        status="ok")
        r.evaluation = Evaluation({"stop_s": 1.0}, [], {"orderings": {"jitter": {"late_max_s": late(t, n)}}},
                                  {"ok": True})
        return r

    sh = pool.sweep_parallel(SimpleNamespace(lab=SimpleNamespace(name="lab")), k, todo, session=session,
                             store=None, stop=threading.Event(), prepare=lambda e, name: _Setup(name, RunDir(tmp_path)),
                             trial=trial, record=lambda t, rec: seen["recorded"].append(rec),
                             estimate=lambda t: 1000 / t.rate)
    return sh, seen


def test_one_instance_takes_the_trials_longest_first(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([50, 2, 200, 10])]
    sh, seen = _pool(tmp_path, monkeypatch, 1, todo)
    assert seen["order"] == ["tcp-r2-1", "tcp-r10-1", "tcp-r50-1", "tcp-r200-1"] and sh.errors == []
    assert [r.extra["load"]["trials_running"] for r in seen["recorded"]] == [1, 1, 1, 1]
    assert {r.extra["lab_instance"] for r in seen["recorded"]} == {"lab"}


def test_two_instances_start_with_the_two_longest_trials(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([50, 2, 200, 10, 100, 5])]
    sh, seen = _pool(tmp_path, monkeypatch, 2, todo)
    assert set(seen["order"][:2]) == {"tcp-r2-1", "tcp-r5-1"} and set(seen["on"]) == {"lab", "lab-2"}
    assert sorted(seen["order"]) == sorted(t.id for t in todo) and sh.ready and len(seen["recorded"]) == 6


def test_a_disturbed_trial_in_a_parallel_run_is_redone_on_its_instance_and_recorded_once(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([5, 10, 20])]
    sh, seen = _pool(tmp_path, monkeypatch, 2, todo, late=lambda t, n: 0.5 if (t.rate, n) == (10, 1) else 0.001)
    assert seen["tries"] == {"tcp-r5-1": 1, "tcp-r10-1": 2, "tcp-r20-1": 1}
    rec = {r.trial: r for r in seen["recorded"]}
    assert len(seen["recorded"]) == 3 and rec["tcp-r10-1"].extra["timing"]["disturbed"] is False
    assert rec["tcp-r10-1"].extra["redone"][0]["reasons"] == ["the throttle released 500.0 ms late (tolerance 20 ms)"]
    assert "redone" not in rec["tcp-r5-1"].extra


def test_the_instances_left_finish_the_queue_when_one_is_lost(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([5, 10, 20, 40])]
    sh, seen = _pool(tmp_path, monkeypatch, 3, todo, lost={"lab-2"})
    assert [str(e) for e in sh.errors] == ["lab lab-2 cannot be built"]
    assert sorted(seen["order"]) == sorted(t.id for t in todo) and set(seen["on"]) == {"lab", "lab-3"}


def test_an_instance_whose_lab_cannot_be_loaded_is_lost_with_its_error_not_silently(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([5, 10, 20])]
    sh, seen = _pool(tmp_path, monkeypatch, 2, todo, unloadable={"lab-2"})
    assert [str(e) for e in sh.errors] == ["lab lab-2: its lab file cannot be loaded"]
    assert list(sh.lost) == ["lab-2"] and sh.ready == ["lab"]
    assert sorted(seen["order"]) == sorted(t.id for t in todo) and set(seen["on"]) == {"lab"}


# ---------------------------------------------------------------- the option


@pytest.mark.parametrize("text, k", [("auto", None), (None, None), (" 3 ", 3), ("1", 1), ("64", 64)])
def test_parallel_is_a_count_or_auto(text, k):
    assert pool.parse_parallel(text) == k


@pytest.mark.parametrize("text, message", [
    ("0", "--parallel 0: the number of lab instances must be 1 to 64"),
    ("65", "--parallel 65: the number of lab instances must be 1 to 64"),
    ("-1", "--parallel takes a number of lab instances (1 to 64) or auto, not '-1'"),
    ("2.5", "--parallel takes a number of lab instances (1 to 64) or auto, not '2.5'"),
    ("x", "--parallel takes a number of lab instances (1 to 64) or auto, not 'x'"),
])
def test_a_bad_parallel_is_a_usage_error_naming_the_option(text, message):
    from orchestrator.errors import UsageError
    with pytest.raises(UsageError) as e:
        pool.parse_parallel(text)
    assert e.value.exit_code == 2 and message in e.value.message


def test_the_command_line_refuses_parallel_0_with_exit_2_before_building_anything(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(_path(tmp_path)), "--parallel", "0",
                        "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2],
                       env={"TESTBED_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "--parallel 0: the number of lab instances must be 1 to 64" in r.stderr
    assert not (tmp_path / "r").exists()


def test_parallel_and_shard_combine_the_shards_trials_on_the_instances(tmp_path, store, labs):
    rdir = run_experiment(_path(tmp_path), RunOptions(out=tmp_path / "r", store=store, lab=labs["session"],
                                                      parallel=2, shard=(1, 2)))
    run = RunDir(rdir.path)
    man = run.manifest()
    assert man["status"] == "complete" and man["parallel"]["instances"] == 2
    assert [t["trial"] for t in run.trials()] == man["shard"]["trials"] and len(man["shard"]["trials"]) == 3


def _gated(tmp_path, monkeypatch, k, todo, builds, build_s=0.15):
    """pool.sweep_parallel whose lab sessions take `build_s` to come up: when each instance was up, when each
    trial started and on which instance."""
    seen: dict = {"up": {}, "start": {}, "on": {}, "building": 0, "most": 0}
    lock = threading.Lock()
    t0 = time.monotonic()
    monkeypatch.setattr(pool, "instance", lambda exp, i: SimpleNamespace(lab=SimpleNamespace(
        name=pool.instance_name(exp.lab.name, i))))

    @contextmanager
    def session(exp, store, *, keep=False, console=None):
        with lock:
            seen["building"] += 1
            seen["most"] = max(seen["most"], seen["building"])
        time.sleep(build_s)
        with lock:
            seen["building"] -= 1
            seen["up"][exp.lab.name] = time.monotonic() - t0
        yield exp.lab.name

    def trial(st, t):
        with lock:
            seen["start"][t.id] = time.monotonic() - t0
            seen["on"][t.id] = st.name
        time.sleep(0.3 if t.rate < 10 else 0.02)
        r = TrialRecord(t.id, t.index, t.protocol, t.rate, t.repeat, "full", [], "host", False, time.time(),
                        status="ok")
        r.evaluation = Evaluation({"stop_s": 1.0}, [], {"orderings": {"jitter": {"late_max_s": 0.001}}}, {"ok": True})
        return r

    sh = pool.sweep_parallel(SimpleNamespace(lab=SimpleNamespace(name="lab")), k, todo, session=session,
                             store=None, stop=threading.Event(), prepare=lambda e, name: _Setup(name, RunDir(tmp_path)),
                             trial=trial, record=lambda t, rec: None, estimate=lambda t: 1000 / t.rate, builds=builds)
    return sh, seen


def test_the_first_instance_up_starts_the_longest_trial_while_the_others_are_built(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([50, 2, 200, 5, 100, 1000])]
    sh, seen = _gated(tmp_path, monkeypatch, 4, todo, builds=1)
    assert sh.errors == [] and seen["most"] == 1                     # one instance built at a time
    first = min(seen["up"], key=seen["up"].get)
    assert seen["on"]["tcp-r2-1"] == first                          # the longest, on the first one up
    assert seen["start"]["tcp-r2-1"] < max(seen["up"].values())     # … before the last one was up
    assert seen["start"]["tcp-r2-1"] < seen["start"]["tcp-r5-1"]


def test_by_default_every_instance_is_built_at_once_and_a_gate_bounds_them(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([2, 5, 20, 50, 100, 200])]
    sh, seen = _gated(tmp_path, monkeypatch, 4, todo, builds=None, build_s=0.2)
    assert sh.errors == [] and seen["most"] == 4 and len(seen["start"]) == 6
    sh, seen = _gated(tmp_path, monkeypatch, 4, todo, builds=2, build_s=0.2)
    assert sh.errors == [] and seen["most"] == 2 and len(seen["start"]) == 6


def test_an_instance_whose_turn_to_be_built_comes_after_the_queue_is_empty_is_not_built(tmp_path, monkeypatch):
    todo = [TrialSpec(i, "tcp", r, 1) for i, r in enumerate([200, 500, 1000])]
    sh, seen = _gated(tmp_path, monkeypatch, 3, todo, builds=1, build_s=0.4)
    # the first up runs all three (0.02 s each) while the second is built; the third finds nothing to do
    assert len(seen["up"]) == 2 and len(seen["start"]) == 3 and sh.errors == []
