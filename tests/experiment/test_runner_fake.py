"""run_experiment on the fake provider and host set (tests/support/fakes.py): the run directory opened,
the sweep, the lab brought up and down, the hooks, resume and failure — without root."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from orchestrator import providers
from orchestrator.errors import ExperimentError
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import RunOptions, run_experiment
from orchestrator.lab import lifecycle
from orchestrator.results.index import Index
from orchestrator.results.publish import Publisher
from tests.experiment.test_trial_fake import experiment_file
from tests.support.fakes import FakeHosts


@pytest.fixture
def fake(tmp_path, store, monkeypatch):
    """A lab session on the fake provider: built and removed by orchestrator.lab.lifecycle, its hosts fake."""
    monkeypatch.setitem(providers._REGISTRY, "fake", "tests.support.fakes:FakeProvider")
    seen: dict = {"hosts": None, "up": 0}

    @contextmanager
    def session(exp, store, *, keep=False, console=None):
        lab = lifecycle.up(exp.lab.source, provider="fake", name=exp.lab.name, store=store)
        seen["up"] += 1
        try:
            prov, _ = lifecycle.provider_for(lab.name, store)
            seen["hosts"] = FakeHosts(lab, tmp_path / "hosts", prov, attempts=8)
            yield seen["hosts"]
        finally:
            if not keep:
                lifecycle.down(lab.name, store=store)
    seen["session"] = session
    return seen


def test_a_sweep_on_the_fake_lab_writes_every_trial_and_takes_the_lab_down(tmp_path, store, fake):
    path = experiment_file(tmp_path, rates=[50, 100], repeats=2)
    pub = Publisher(tmp_path / "index.sqlite")
    rdir = run_experiment(path, RunOptions(out=tmp_path / "run", store=store, lab=fake["session"],
                                           on_open=pub.opened, on_finish=pub.finished))
    run = RunDir(rdir.path)
    man = run.manifest()
    assert man["status"] == "complete" and (man["trials"], man["planned"]) == (4, 4)
    assert (man["emulated"], man["domain_type"]) == (False, None)          # from the provider's clock
    trials = run.trials()
    assert [t["trial"] for t in trials] == ["tcp-r50-1", "tcp-r50-2", "tcp-r100-1", "tcp-r100-2"]
    assert all(t["status"] == "ok" and t["measured"]["wire_attempts"] == 8 for t in trials)
    assert [(r["rate"], r["repeats"], r["ok"]) for r in run.summary()] == [(50.0, 2, 2), (100.0, 2, 2)]
    assert store.load("stopping-speed") is None and fake["up"] == 1        # built once, and down again
    assert (run.path / "report.md").is_file()                             # the publisher's, after the run
    idx = Index(tmp_path / "index.sqlite")
    assert [(r["run_id"], r["status"], r["ok"]) for r in idx.runs()] == [(man["run_id"], "complete", 4)]
    idx.close()


def test_a_resumed_run_does_only_the_trials_it_had_not_done(tmp_path, store, fake):
    path = experiment_file(tmp_path, rates=[50, 100])
    rdir = run_experiment(path, RunOptions(out=tmp_path / "run", store=store, lab=fake["session"]))
    run = RunDir(rdir.path)
    first = run.trials()
    run.write_trials(first[:1])                            # as if it had been interrupted after one trial
    man = run.manifest()
    run.write_manifest(man | {"status": "interrupted"})
    run_experiment(path, RunOptions(resume=run.path, store=store, lab=fake["session"]))
    again = run.trials()
    assert [t["trial"] for t in again] == ["tcp-r50-1", "tcp-r100-1"]
    assert again[0] == first[0] and again[1]["started"] > first[1]["started"]
    assert run.manifest()["status"] == "complete" and not (run.path / "report.md").exists()   # no publisher


def test_a_lab_that_cannot_be_built_fails_the_run_and_says_why(tmp_path, store):
    @contextmanager
    def broken(exp, store, *, keep=False, console=None):
        raise ExperimentError("the fake lab cannot be built")
        yield
    path = experiment_file(tmp_path)
    opened: list = []
    with pytest.raises(ExperimentError, match="the fake lab cannot be built"):
        run_experiment(path, RunOptions(out=tmp_path / "run", store=store, lab=broken, on_open=opened.append,
                                        on_finish=lambda r: pytest.fail("a failed run is not finished")))
    man = RunDir(tmp_path / "run").manifest()
    assert (man["status"], man["error"], man["trials"]) == ("failed", "the fake lab cannot be built", 0)
    assert [r.path for r in opened] == [tmp_path / "run"]


def test_bad_overrides_are_refused_before_anything_is_made(tmp_path, store, fake):
    path = experiment_file(tmp_path)
    with pytest.raises(Exception, match="rate"):
        run_experiment(path, RunOptions(rates=[-1.0], out=tmp_path / "run", store=store, lab=fake["session"]))
    assert not (tmp_path / "run").exists() and fake["up"] == 0


def test_the_manifest_keeps_its_keys(tmp_path, store, fake):
    rdir = run_experiment(experiment_file(tmp_path), RunOptions(out=tmp_path / "run", store=store,
                                                                lab=fake["session"]))
    man = json.loads((rdir.path / "manifest.json").read_text())
    assert {"run_id", "experiment", "spec_hash", "source", "lab", "seed", "git", "versions", "machine", "argv",
            "plan", "started", "status", "runner", "emulated", "domain_type", "tolerance", "retransmit",
            "retransmit_why", "finished", "trials", "planned"} <= set(man)
