"""`testbed run` end to end on namespace labs (root): results, timeouts, resume, reports rebuilt from files."""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.lab import lifecycle
from orchestrator.providers.netns import namespaces
from orchestrator.providers.state import StateStore
from orchestrator.results.index import Index

LABS = Path(__file__).resolve().parents[2] / "labs"
REPO = LABS.parent
pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    name = f"r{secrets.token_hex(3)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((LABS / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
    yield tmp_path, name, lab
    lifecycle.down_all(store=StateStore(tmp_path / "state"))


def experiment(tmp_path: Path, lab: Path, **over) -> Path:
    spec = {"experiment": "e2e", "kind": "stopping-speed", "lab": str(lab),
            "worm": {"port": 8080, "protocols": ["tcp", "udp"], "scan": "198.18.9.0/24", "max_attempts": 3000,
                     "lifetime_s": 60},
            "rates": [200, 1000], "repeats": 1, "timeout_s": 20, **over}
    p = tmp_path / "exp.yaml"
    p.write_text(json.dumps(spec))       # JSON is YAML
    return p


def cli(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, **kw)


def test_a_small_sweep_end_to_end(env):
    tmp, name, lab = env
    exp = experiment(tmp, lab)
    out, index, junit = tmp / "run", tmp / "index.sqlite", tmp / "junit.xml"
    # one trial after another: this test reads the serial progress lines (test_parallel.py has K of them)
    r = cli("run", str(exp), "--out", str(out), "--index", str(index), "--junit", str(junit), "--parallel", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"report: {out / 'report.html'}" in r.stdout
    # not a terminal: one line per trial, with the count and the ETA from the model's expected times
    assert re.search(r"^sweep: 4 trials \(0 done before\), expected \d+s$", r.stderr, re.M), r.stderr[-2000:]
    assert re.search(r"^trial 1/4 tcp-r200-1: ok stopped in 0\.\d+ s · agrees with the model \(\d+\.\d s"
                     r"(, CPUs \d+ % busy)?(, redone \d×)?; eta \d+s\)$", r.stderr, re.M), r.stderr[-2000:]
    assert re.search(r"^trial 4/4 udp-r1000-1: ok .*; eta 0s\)$", r.stderr, re.M)

    run = RunDir(out)
    man = run.manifest()
    assert man["status"] == "complete" and man["trials"] == 4 and man["seed"] == 1
    assert len(man["spec_hash"]) == 64 and man["lab"]["name"] == name and man["git"]["commit"]
    assert man["versions"]["tcpdump"].startswith("tcpdump version") and man["machine"]["cpus"] >= 1

    trials = run.trials()
    assert [t["trial"] for t in trials] == ["tcp-r200-1", "tcp-r1000-1", "udp-r200-1", "udp-r1000-1"]
    for t in trials:
        assert t["status"] == "ok" and t["reason"] == "blocked", t
        assert t["state"] == "full" and len(t["initial_working_set"]) == 5
        # the throttle's own log says what it met: started fresh, filled by the normal traffic before the worm
        assert t["state_met"]["state"] == "full"
        assert sorted(t["state_met"]["working_set"]) == sorted(t["initial_working_set"])
        tlog = [json.loads(x) for x in (out / t["files"]["throttle_log"]).read_text().splitlines()]
        assert tlog[0]["initial_state"] == "fresh"
        assert [x["why"] for x in tlog if x["event"] == "state"] == ["worm"]
        m, mo, ag = t["measured"], t["model"], t["agreement"]
        assert m["blocked"] and mo["blocked"]
        assert abs(m["stop_s"] - mo["stop_s"]) <= max(0.020, 0.03 * mo["stop_s"]), t
        assert abs(m["out_before_block"] - mo["out_before_block"]) <= 1 and m["out_after_block"] == 0
        assert ag["ok"] is True
        assert abs(m["achieved_rate"] - t["rate"]) / t["rate"] < 0.02
        assert t["capture"]["dropped"] == 0 and t["capture"]["captured"] == t["capture"]["received"]
        # the end marker came from the gateway (the injector had left the LAN) and was in the file before SIGINT
        end = t["capture"]["canary"]["end"]
        assert (end["src"], end["dst"], end["port"]) == ("gateway", "198.18.8.255", 9), t["capture"]
        assert t["capture"]["end_seen_s"] == end["seen_after_s"] is not None and "why" not in end
        assert m["max_queue_len"] == 100 and m["throttle_events"]["blocked"] == 1
        for f in ("pcap", "throttle_log", "worm_log"):
            assert (out / t["files"][f]).stat().st_size > 0
        # about 100 queued attempts at the block: the stopping time is 100/rate (the working set was full)
        assert mo["stop_s"] == pytest.approx(100 / t["rate"] + (0.01 if t["rate"] < 101 else 0), abs=0.011)

    with open(out / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["protocol"], r["rate"]) for r in rows] == [("tcp", "200"), ("tcp", "1000"), ("udp", "200"), ("udp", "1000")]
    assert all(r["agree"] == "true" and r["out_after_block"] == "0" and r["repeats"] == "1" for r in rows)

    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "0"
    idx = Index(index)
    assert [x["run_id"] for x in idx.runs()] == [man["run_id"]]
    idx.close()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    assert not [n for n in namespaces.list_netns() if n.startswith(f"wt.{name}.")]      # the lab is gone

    # the report is rebuilt from the run directory alone, elsewhere
    copy = tmp / "copy"
    shutil.copytree(out, copy)
    for f in ("report.md", "report.html"):
        (copy / f).unlink()
    shutil.rmtree(copy / "plots")
    r = cli("report", str(copy))
    assert r.returncode == 0, r.stderr
    table = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| test worm")]
    assert [line for line in (copy / "report.md").read_text().splitlines() if line.startswith("| test worm")] == table
    assert len(list((copy / "plots").glob("*.png"))) == 4


def test_a_trial_that_times_out_is_recorded_and_the_sweep_goes_on(env):
    tmp, name, lab = env
    exp = experiment(tmp, lab, rates=[2, 1000], timeout_s=2,
                     worm={"port": 8080, "protocols": ["tcp"], "scan": "198.18.9.0/24", "lifetime_s": 60})
    out = tmp / "run"
    r = cli("run", str(exp), "--out", str(out), "--index", str(tmp / "i.sqlite"))
    assert r.returncode == 0, r.stderr[-2000:]
    slow, fast = RunDir(out).trials()
    assert (slow["status"], slow["reason"]) == ("timeout", "not blocked within 2 s")
    assert slow["measured"]["blocked"] is False and slow["measured"]["stop_s"] is None
    assert slow["model"]["blocked"] is False          # nor does the model block 2/s within 2 s
    assert (fast["status"], fast["reason"]) == ("ok", "blocked")
    rows = RunDir(out).summary()
    assert [(r["rate"], r["ok"], r["blocked"]) for r in rows] == [(2, 0, 0), (1000, 1, 1)]


def test_an_interrupted_run_resumes_where_it_stopped(env):
    tmp, name, lab = env
    exp = experiment(tmp, lab, rates=[1000, 500, 250],
                     worm={"port": 8080, "protocols": ["tcp"], "scan": "198.18.9.0/24", "lifetime_s": 60})
    out, index = tmp / "run", tmp / "i.sqlite"
    # serial, so a trial is still running when SIGTERM comes (side by side, all three end together)
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(exp), "--out", str(out), "--index",
                          str(index), "--parallel", "1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "trials.jsonl").exists() and (out / "trials.jsonl").read_text().count("\n") >= 1:
                break
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    assert "run interrupted after" in stderr and f"--resume {out}" in stderr
    done = RunDir(out).trials()
    assert 1 <= len(done) < 3 and RunDir(out).manifest()["status"] == "interrupted"
    assert not [n for n in namespaces.list_netns() if n.startswith(f"wt.{name}.")]      # torn down on SIGTERM

    r = cli("run", str(exp), "--resume", str(out), "--index", str(index))
    assert r.returncode == 0, r.stderr[-2000:]
    trials = RunDir(out).trials()
    assert [t["trial"] for t in trials] == ["tcp-r1000-1", "tcp-r500-1", "tcp-r250-1"]
    assert trials[0] == done[0]                                   # what was measured is kept, not redone
    assert [(t["trial"], t["status"], t["reason"]) for t in trials] == [
        (t["trial"], "ok", "blocked") for t in trials]
    assert RunDir(out).manifest()["status"] == "complete"


def test_a_bad_experiment_file_builds_nothing(env, tmp_path):
    tmp, name, lab = env
    exp = experiment(tmp, lab, rates=[0])
    before = namespaces.list_netns()
    r = cli("run", str(exp), "--out", str(tmp / "run"))
    assert r.returncode == 2
    assert f"error: {exp}: 1 problem" in r.stderr and "rates.0 (line 1): rate 0.0 is not a usable scan rate" in r.stderr
    assert namespaces.list_netns() == before and not (tmp / "run").exists()


def test_the_wire_placement_outside_an_unmodified_host(env):
    """The throttle on the switch side of the blade's veth (bridge netfilter): the host's own stack does not
    know its SYNs are held, retransmits them, and the retransmissions count — the paper's physics."""
    tmp, name, lab = env
    exp = experiment(tmp, lab, rates=[20, 1000], throttle={"placement": "wire"},
                     worm={"port": 8080, "protocols": ["tcp"], "scan": "198.18.9.0/24", "lifetime_s": 60})
    out = tmp / "run"
    r = cli("run", str(exp), "--out", str(out), "--index", str(tmp / "i.sqlite"))
    assert r.returncode == 0, r.stderr[-2000:]
    slow, fast = RunDir(out).trials()
    for t in (slow, fast):
        assert t["status"] == "ok" and t["placement"] == "wire" and t["agreement"]["ok"], t
        # the capture stands in front of the throttle: what got through is counted from the gateway's RSTs
        m, mo = t["measured"], t["model"]
        assert m["out_measured_from"] == "answers" and m["out_after_block"] == 0, t
        assert abs(m["out_before_block"] - mo["out_before_block"]) <= 1, t
        assert t["measured"]["achieved_rate_wire"] == pytest.approx(t["rate"], rel=0.02)
        assert t["initial_working_set"][0].startswith("198.18.10.")   # normal traffic crossed the wire
    # at 20/s in the host it takes 100 queue entries of new attempts: 5.25 s; on the wire the retransmitted
    # SYNs fill the queue too, and the worm is stopped sooner
    assert slow["model"]["stop_s"] < 3.5 and slow["measured"]["stop_s"] < 3.5
    assert slow["measured"]["throttle_events"]["queued"] >= 100


def test_the_gateway_placement_throttles_forwarded_traffic(env):
    """The throttle on the gateway (the paper's per-source array, on forwarded traffic): the sniffer on the
    blade's segment stands in front of it, so it measures the worm's own rate and the stopping time, and the
    attempts out only from the answers that come back (TCP); the held SYNs are the blade's, which its stack retransmits, so TCP is stopped sooner than
    UDP at the same rate."""
    tmp, name, lab = env
    exp = experiment(tmp, lab, rates=[20, 100], throttle={"placement": "gateway"},
                     worm={"port": 8080, "protocols": ["tcp", "udp"], "scan": "198.18.9.0/24", "lifetime_s": 60})
    out = tmp / "run"
    r = cli("run", str(exp), "--out", str(out), "--index", str(tmp / "i.sqlite"))
    assert r.returncode == 0, r.stderr[-2000:]
    trials = {t["trial"]: t for t in RunDir(out).trials()}
    assert sorted(trials) == ["tcp-r100-1", "tcp-r20-1", "udp-r100-1", "udp-r20-1"]
    for t in trials.values():
        m, mo = t["measured"], t["model"]
        assert t["status"] == "ok" and t["reason"] == "blocked" and t["placement"] == "gateway", t
        assert t["agreement"]["ok"] is True and m["blocked"] and m["throttle_events"]["blocked"] == 1, t
        assert abs(m["stop_s"] - mo["stop_s"]) <= max(0.020, 0.03 * mo["stop_s"]), t
        if t["protocol"] == "tcp":     # counted from the answers that came back (the gateway's RSTs)
            assert m["out_measured_from"] == "answers" and m["out_after_block"] == 0, t
            assert abs(m["out_before_block"] - mo["out_before_block"]) <= 1, t
        else:                          # ICMP errors are rate-limited by the kernel: not counted
            assert m["out_before_block"] is None and m["out_after_block"] is None
        assert m["achieved_rate_wire"] == pytest.approx(t["rate"], rel=0.02)
        # the sequential scan hits the gateway's own address on the targets' subnet: delivered to the gateway,
        # never queued by its throttle, so the model leaves it out (with it, UDP at 20/s came out 50 ms early)
        assert mo["unseen_arrivals"] >= 1
    for k in ("udp-r20-1", "udp-r100-1"):
        assert abs(trials[k]["measured"]["stop_s"] - trials[k]["model"]["stop_s"]) <= 0.020, trials[k]
    # UDP at 20/s: 100 queue entries of new datagrams (one more attempt than in the host, for the gateway's
    # own address): 5.30 s; TCP: the blade's retransmissions join the queue, and it is stopped sooner
    assert trials["udp-r20-1"]["model"]["stop_s"] == pytest.approx(5.30, abs=0.02)
    assert trials["tcp-r20-1"]["measured"]["stop_s"] < 3.5
    assert trials["tcp-r20-1"]["measured"]["throttle_events"]["queued"] >= 100
    md = (out / "report.md").read_text()
    assert "Throttle in the **gateway**" in md and "stands in front of this throttle" in md
    assert "In 4 trial(s) the scan hit the gateway's own addresses" in md


def test_a_lab_that_cannot_be_built_fails_the_run_and_says_why(env):
    tmp, name, lab = env
    exp = experiment(tmp, lab)
    r = cli("run", str(exp), "--out", str(tmp / "run"), "--index", str(tmp / "i.sqlite"),
            env={**os.environ, "TESTBED_FAULT_FAIL": "after-veth"})
    assert r.returncode == 1 and "injected failure at step 'after-veth'" in r.stderr
    man = RunDir(tmp / "run").manifest()
    assert man["status"] == "failed" and "injected failure at step 'after-veth'" in man["error"]
    assert man["trials"] == 0 and not [n for n in namespaces.list_netns() if n.startswith(f"wt.{name}.")]


def test_a_lab_that_is_up_from_another_lab_file_is_not_measured(env):
    tmp, name, lab = env
    other = tmp / "other.yaml"
    edited = lab.read_text().replace("count: 2", "count: 3")
    assert edited != lab.read_text()
    other.write_text(edited)
    lifecycle.up(other, name=name, store=StateStore(tmp / "state"))
    r = cli("run", str(experiment(tmp, lab)), "--out", str(tmp / "run"), "--index", str(tmp / "i.sqlite"))
    assert r.returncode == 1, r.stdout[-2000:]
    assert f"lab {name} is up, built from another version of its lab file ({other}" in r.stderr
    assert f"`testbed down {name}` and run again" in r.stderr
    man = RunDir(tmp / "run").manifest()
    assert man["status"] == "failed" and man["trials"] == 0
    assert lifecycle.status(name, store=StateStore(tmp / "state")).state == "up"     # not ours to take down
