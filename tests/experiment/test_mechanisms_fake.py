"""Every mechanism of an experiment swept on the fake host set: started and stopped through its registry
descriptor (or the user's commands), named in the trial ids and records, its daemon watched."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import mechanism_of, mechanism_roles, plan_trials
from orchestrator.experiment.setup import Setup
from orchestrator.experiment.spec import load_experiment
from orchestrator.experiment.trial import run_trial
from tests.experiment.test_trial_fake import experiment_file
from tests.support.fakes import FakeHosts, FakeProvider

REPO = Path(__file__).resolve().parents[2]


def mechs(tmp_path) -> list[dict]:
    role = tmp_path / "roles" / "mine" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- ansible.builtin.debug: {msg: mine}\n")
    return [{"name": "trw", "params": {"alpha": 0.01}}, {"name": "rate-limit", "params": {"new_per_s": 2}},
            {"name": "none"},
            {"name": "mine", "custom": {"role": "roles/mine", "start": "echo {iface} {protocol} > {run}/started",
                                        "stop": "rm {run}/started"}}]


@pytest.fixture
def swept(tmp_path, store):
    path = experiment_file(tmp_path, kind="stopping-speed", throttle=None, mechanisms=mechs(tmp_path), rates=[20, 100])
    text = path.read_text().replace('"throttle": null, ', "").replace('"kind": "stopping-speed", ', "")
    path.write_text(text)
    exp = load_experiment(path, machine_routes=[])
    hosts = FakeHosts(exp.lab, tmp_path / "hosts", FakeProvider(store), attempts=240)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    st = Setup.resolve(exp, exp.lab, hosts, run)
    st.shared_clock = True
    return exp, st, hosts


def test_every_mechanism_is_swept_and_named_in_the_ids(swept):
    exp, _, _ = swept
    assert [t.id for t in plan_trials(exp)] == [
        "trw-tcp-r20-1", "trw-tcp-r100-1", "rate-limit-tcp-r20-1", "rate-limit-tcp-r100-1",
        "none-tcp-r20-1", "none-tcp-r100-1", "mine-tcp-r20-1", "mine-tcp-r100-1"]


def test_each_mechanism_runs_through_its_descriptor(swept):
    exp, st, hosts = swept
    recs = {}
    for t in plan_trials(exp, rates=[100]):
        hosts.log.clear()
        rec = run_trial(st.for_mechanism(mechanism_of(exp, t)), t)
        assert rec.status == "ok", rec.reason
        recs[rec.mechanism] = (rec, list(hosts.log))
    trw, log = recs["trw"]
    assert trw.placement == "host" and trw.fail_open is False and "the trw daemon on blade" in trw.watched
    assert ("blade", "start trw") in log and ("blade", "stop trw") in log
    rl, log = recs["rate-limit"]
    cmds = [w for h, w in log if h == "blade" and w.startswith("fake-module mechanisms.ratelimit")]
    assert cmds == ["fake-module mechanisms.ratelimit apply", "fake-module mechanisms.ratelimit clear"]
    assert rl.fail_open is None                                      # no daemon: nothing to fail open
    none, log = recs["none"]
    assert none.placement is None and not any("mechanisms" in w or "throttle" in w for _, w in log)
    mine, _ = recs["mine"]
    assert mine.mechanism == "mine" and mine.placement == "host"
    assert hosts.services == {}                                       # nothing left running


def test_a_custom_mechanisms_commands_are_filled_per_trial(swept, tmp_path):
    exp, st, hosts = swept
    t = plan_trials(exp, rates=[100])[-1]
    st = st.for_mechanism(mechanism_of(exp, t))
    hosts.services.clear()
    run_dir = Path(hosts.prefix("blade"), "run", "mechanisms", t.id)
    seen = {}
    real_sh = hosts.sh

    def spy(host, script, timeout=60.0):
        if "started" in script:
            seen.setdefault(host, []).append(script)
        return real_sh(host, script, timeout)
    hosts.sh = spy
    assert run_trial(st, t).status == "ok"
    start, stop = seen["blade"]
    iface = st.throttle_iface
    assert start.endswith(f"echo {iface} tcp > {run_dir}/started") and stop == f"rm {run_dir}/started"


def test_roles_are_installed_on_the_host_that_carries_each_mechanism(swept, tmp_path):
    exp, _, _ = swept
    roles = {r.name: (r.path, r.hosts) for r in mechanism_roles(exp)}
    assert roles == {"trw": (REPO / "mechanisms/trw/role", ("blade",)),
                     "rate-limit": (REPO / "mechanisms/ratelimit/role", ("blade",)),
                     "mine": ((tmp_path / "roles" / "mine").resolve(), ("blade",))}


def test_every_mechanism_gets_wire_figures_and_a_verdict(swept):
    exp, st, hosts = swept
    got = {}
    for t in plan_trials(exp, rates=[100]):
        rec = run_trial(st.for_mechanism(mechanism_of(exp, t)), t)
        got[rec.mechanism] = rec
    for name, rec in got.items():       # the fake wire carries all 240 attempts at 100/s, to the end of the trial
        m = rec.measured
        assert (m["wire_attempts"], m["contained"], m["contained_s"]) == (240, False, None), name
        assert m["wire_rate"] == pytest.approx(100.0, rel=0.01) and m["quiet_s"] == 5.0
    none = got["none"].evaluation
    assert none.model is None and none.agreement["ok"] and none.agreement["every_attempt_on_wire"]
    rl = got["rate-limit"].evaluation        # the fake applies no bucket: 100/s against the model's 2/s
    assert rl.model["wire_rate"] == pytest.approx(2.0, rel=0.05) and rl.agreement["ok"] is False
    assert rl.agreement["rate_error"] > 10
    # every probe timed out: the model blocks at the 4th failure, timeout_s (3 s) after the 4th attempt — when
    # all 240 were out; the fake wire never went quiet, so it disagrees
    trw = got["trw"].evaluation
    assert trw.model["blocked"] and trw.model["stop_s"] == pytest.approx(3.03, abs=0.01)
    assert trw.model["out_before_block"] == 240 and trw.agreement["ok"] is False
    assert got["mine"].evaluation.agreement == {"ok": None}


def test_a_sniffer_on_its_own_clock_is_tied_to_the_worms(swept):
    """VMs (issue 15): the capture 0.5 s ahead of the worm; trw's figures are the shared clock's once tied."""
    exp, st, hosts = swept
    st.shared_clock, hosts.capture_offset_s = False, 0.5
    t = next(t for t in plan_trials(exp, rates=[100]) if t.mechanism == "trw")
    rec = run_trial(st.for_mechanism(mechanism_of(exp, t)), t)
    m = rec.measured
    assert m["capture_clock_matches"] == 240 and m["capture_clock_offset_s"] == pytest.approx(0.5, abs=1e-3)
    assert (m["wire_attempts"], m["contained"]) == (240, False)
    assert m["wire_rate"] == pytest.approx(100.0, rel=0.01)
    assert "capture_clock_unaligned" not in {f["code"] for f in rec.evaluation.findings}


def test_a_capture_that_matches_nothing_leaves_contained_s_unmeasured(swept):
    exp, st, hosts = swept
    st.shared_clock, hosts.capture_offset_s, hosts.capture_sport_shift = False, 0.5, 7
    t = next(t for t in plan_trials(exp, rates=[100]) if t.mechanism == "trw")
    rec = run_trial(st.for_mechanism(mechanism_of(exp, t)), t)
    assert rec.measured["capture_clock_matches"] == 0 and rec.measured["contained_s"] is None
    f = next(f for f in rec.evaluation.findings if f["code"] == "capture_clock_unaligned")
    assert f["severity"] == "error" and "contained_s is not measured" in f["message"]
    assert rec.evaluation.agreement["ok"] is False
