"""A process a trial depends on, SIGKILLed mid-trial on a real namespace lab (root): the throttle daemon (in the
host, fail-closed; on the wire, fail-open), tcpdump, a target's worm server, the worm's scanner. Each
trial is an error whose reason names the process, its host and how it ended; nothing of it reaches a summary
row; a fail-closed throttle's death stops the worm on the wire, a fail-open one's does not. And a `testbed run`
SIGKILLed mid-sweep is listed as died, not running. One lab for the module, small runs on it (each run
provisions again: a few seconds)."""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.analysis.pcap import read_capture
from orchestrator.experiment.agreement import answered_counts
from orchestrator.experiment.rundir import RunDir
from orchestrator.experiment.runner import RunOptions, run_experiment
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore
from orchestrator.results.publish import Publisher

LABS = Path(__file__).resolve().parents[2] / "labs"
REPO = LABS.parent
BLADE, SCAN, PORT = "198.18.8.2", "198.18.9.0/24", 8080
pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deaths")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESTBED_STATE_DIR", str(tmp / "state"))
        store = StateStore(tmp / "state")
        name = f"t{secrets.token_hex(3)}"
        path = tmp / "lab.yaml"
        path.write_text((LABS / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
        lifecycle.up(path, store=store)          # up before the runs: each run uses it and leaves it up
        try:
            yield tmp, name, path, store
        finally:
            lifecycle.down_all(store=store)


class Killer(threading.Thread):
    """SIGKILLs one process per trial, half a second into the worm's scan: `plan` maps a trial id to the
    file that names the victim's PID (a host agent record, or the worm server's event log for its scanner).
    Only a victim of that trial, while its scan runs: a service record started before this trial's scan (not
    the next trial's), and never once the trial's scanner has exited — a kill that comes too late (a loaded
    machine) is recorded in `missed`, with how late, instead of landing in the next trial."""

    def __init__(self, store: StateStore, lab: str, plan: dict[str, tuple[str, str]]):
        super().__init__(daemon=True)
        self.store, self.lab, self.plan = store, lab, dict(plan)
        self.armed, self.killed, self.done = time.time(), {}, threading.Event()
        self.missed: dict[str, str] = {}

    def prefix(self, where: str) -> Path:
        return self.store.lab_dir(self.lab) / "wire" if where == "wire" else \
            self.store.host_dir(self.lab, where) / "opt"

    def events(self, trial: str) -> list[dict]:
        """The trial's worm server's event log on the blade (complete lines only)."""
        path = self.prefix("blade") / "run" / "worm" / trial / "server.jsonl"
        lines = path.read_text().split("\n")[:-1] if path.exists() else []
        return [json.loads(x) for x in lines if x.strip()]

    def victim(self, trial: str, since: float) -> int | None:
        where, what = self.plan[trial]
        if what == "scanner":
            pids = [e["pid"] for e in self.events(trial) if e.get("event") == "scan_start" and e["t_wall"] > self.armed]
            return pids[-1] if pids else None
        rec = json.loads((self.prefix(where) / "run" / "svc" / f"{what}.json").read_text())
        return rec["pid"] if self.armed < rec["started"] <= since else None

    def scanning_since(self, trial: str) -> float | None:
        for log in (self.prefix("blade") / "run" / "worm" / trial).glob("scan-*.jsonl"):
            first, nl, _ = log.read_text().partition("\n")
            if nl and first.strip() and json.loads(first)["t_wall"] > self.armed:
                return json.loads(first)["t_wall"]
        return None

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while self.plan and time.monotonic() < deadline and not self.done.is_set():
            for trial in list(self.plan):
                since = self.scanning_since(trial)
                if since is None or time.time() < since + 0.5:
                    continue
                if any(e.get("event") == "scan_exit" for e in self.events(trial)):
                    self.missed[trial] = f"its scan had ended when the killer looked, {time.time() - since:.1f} s in"
                    self.plan.pop(trial)
                    continue
                pid = self.victim(trial, since)
                if pid is None:
                    continue
                self.killed[trial] = {"pid": pid, "at": time.time(), "what": self.plan.pop(trial)}
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)


def run_with_kills(tmp: Path, lab_path: Path, store, lab: str, name: str, plan, **spec) -> tuple[RunDir, Killer]:
    exp = {"experiment": name, "kind": "stopping-speed", "lab": str(lab_path), "timeout_s": 20, "repeats": 1,
           "worm": {"port": PORT, "protocols": ["tcp"], "scan": SCAN, "max_attempts": 2000, "lifetime_s": 30},
           **spec}
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(exp))
    killer = Killer(store, lab, plan)
    killer.start()
    try:
        pub = Publisher(tmp / "index.sqlite")
        rdir = run_experiment(path, RunOptions(out=tmp / name, store=store, on_open=pub.opened,
                                               on_finish=pub.finished))
    finally:
        killer.done.set()
        killer.join(5)
    assert not killer.plan and not killer.missed, f"never killed: {killer.plan}, too late: {killer.missed}"
    return rdir, killer


def syns_after(pcap: Path, t: float) -> int:
    """The worm's SYNs on the wire after wall time t (the capture behind a throttle in the host)."""
    pk = read_capture(pcap)
    net = ipaddress.ip_network(SCAN)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    m = pk.syn & (pk.src == int(ipaddress.IPv4Address(BLADE))) & (pk.dst >= lo) & (pk.dst <= hi) & (pk.dport == PORT)
    return int((pk.ts[m] > t).sum())


def summary_rows(rdir: RunDir) -> dict[str, dict]:
    with open(rdir.path / "summary.csv") as fh:
        return {f"{r['protocol']}-r{r['rate']}-1": r for r in csv.DictReader(fh)}


def assert_no_result(rdir: RunDir, trial: dict) -> None:
    """An error: no figures of its own, none in its summary row, and the report says so."""
    assert trial["status"] == "error" and "measured" not in trial and "agreement" not in trial, trial
    row = summary_rows(rdir)[trial["trial"]]
    assert {k: row[k] for k in ("achieved_rate", "stop_s", "out_before_block", "out_after_block", "ok",
                                "errors", "agree")} == {"achieved_rate": "", "stop_s": "", "out_before_block": "",
                                                        "out_after_block": "", "ok": "0", "errors": "1",
                                                        "agree": "false"}
    md = (rdir.path / "report.md").read_text()
    assert f"| {trial['rate']:g} | – | no result (error) |" in md
    assert f"Trial {trial['trial']}: error — {trial['reason']}" in md


def no_throttle_rules(netns: str) -> bool:
    out = subprocess.run(["ip", "netns", "exec", netns, "iptables", "-S"], capture_output=True, text=True).stdout
    return "wtb-throttle" not in out


def test_each_process_killed_mid_trial_makes_an_error_record_and_no_summary_row(lab):
    # rates where the block comes 8-11 s into the scan: the kill, 0.5 s in, has room on a loaded machine
    tmp, name, path, store = lab
    rdir, killer = run_with_kills(tmp, path, store, name, "deaths", {
        "tcp-r10-1": ("blade", "throttle"), "tcp-r11-1": ("sniffer", "capture"),
        "tcp-r12-1": ("target1", "worm-server"), "tcp-r13-1": ("blade", "scanner")}, rates=[10, 11, 12, 13, 1000])
    trials = {t["trial"]: t for t in rdir.trials()}
    man = rdir.manifest()
    assert man["status"] == "complete" and man["experiment"]["throttle"]["fail_open"] is False

    thr = trials["tcp-r10-1"]
    assert thr["reason"].startswith("the throttle daemon on blade was killed by SIGKILL mid-trial (it ran "
                                    "fail-closed: from then on its rules dropped new connections"), thr["reason"]
    assert thr["died"][0] | {"log_tail": None} == {
        "what": "the throttle daemon", "place": "blade", "service": "throttle", "status": -9, "signal": "SIGKILL",
        "how": "was killed by SIGKILL", "when": "mid-trial", "log_tail": None}
    assert thr["fail_open"] is False and "the throttle daemon on blade" in thr["watched"]
    # fail-closed: not one of the worm's SYNs reached the wire after the kill (the sniffer is behind the host)
    kill = killer.killed["tcp-r10-1"]["at"]
    pcap = rdir.path / thr["files"]["pcap"]
    print(f"\nfail-closed, throttle killed at 10/s: {syns_after(pcap, 0) - syns_after(pcap, kill)} worm SYNs on the "
          f"wire before the kill, {syns_after(pcap, kill + 0.01)} after; record: {thr['reason']}")
    assert syns_after(pcap, kill + 0.01) == 0
    assert no_throttle_rules(f"wt.{name}.blade")               # the dead daemon's rules are cleared after

    cap = trials["tcp-r11-1"]
    assert cap["reason"].startswith("tcpdump (the capture) on sniffer was killed by SIGKILL mid-trial; its log "
                                    "ends: tcpdump: listening on exp"), cap["reason"]
    assert cap["capture"]["captured"] == -1 and cap["died"][0]["place"] == "sniffer"

    srv = trials["tcp-r12-1"]
    assert srv["reason"].startswith("the worm server on target1 was killed by SIGKILL mid-trial"), srv["reason"]
    assert "testworm server listening on" in " ".join(srv["died"][0]["log_tail"])

    scan = trials["tcp-r13-1"]
    assert scan["reason"].startswith("the worm's scanner on blade was killed by SIGKILL mid-trial"), scan["reason"]
    assert scan["died"][0]["service"] is None and scan["died"][0]["status"] == -9
    for t in (cap, srv, scan):
        print(f"{t['trial']}: {t['status']}: {t['reason']}")

    for t in (thr, cap, srv, scan):
        assert_no_result(rdir, t)
        assert len(t["died"]) == 1, t["died"]           # the victim, not what its death caused at the stop
    ok = trials["tcp-r1000-1"]                            # the lab is fine after: a clean trial measures
    assert (ok["status"], ok["reason"], ok["agreement"]["ok"]) == ("ok", "blocked", True), ok
    assert summary_rows(rdir)["tcp-r1000-1"]["ok"] == "1" and summary_rows(rdir)["tcp-r1000-1"]["stop_s"] != ""


def test_a_fail_open_throttle_on_the_wire_lets_the_worm_out_when_it_dies_and_the_trial_is_still_an_error(lab):
    """The throttle on the switch side of the blade's veth (run on this machine, in the lab's switch namespace),
    fail-open: killed, the worm's SYNs go straight through — the gateway's answers show them — and the trial
    is an error all the same."""
    tmp, name, path, store = lab
    rdir, killer = run_with_kills(tmp, path, store, name, "wire", {"tcp-r20-1": ("wire", "throttle")},
                                  rates=[20], throttle={"placement": "wire", "fail_open": True})
    (t,) = rdir.trials()
    assert t["fail_open"] is True and rdir.manifest()["experiment"]["throttle"]["fail_open"] is True
    assert t["reason"].startswith("the throttle daemon on the wire of blade was killed by SIGKILL mid-trial (it ran "
                                  "fail-open, as the experiment asked: from then on new connections went out "
                                  "unthrottled)"), t["reason"]
    assert t["died"][0]["place"] == "the wire of blade" and t["placement"] == "wire"
    assert_no_result(rdir, t)
    # the sniffer is in front of this throttle: what got through shows as the gateway's answers
    pk = read_capture(rdir.path / t["files"]["pcap"])
    kill = killer.killed["tcp-r20-1"]["at"]
    got = answered_counts(pk, src=BLADE, scan=SCAN, dport=PORT, block_wall=kill, tolerance_s=0.01)
    print(f"\nwire, fail-open, throttle killed at 20/s: {got['out_before_block']} worm SYNs answered before the "
          f"kill, {got['out_after_block']} after (the trial lasted {t['phases']['run']:.2f} s after the trigger)")
    assert got["out_after_block"] >= 1, got            # fail-closed it is 0 (the host test above)
    assert no_throttle_rules(f"wt.{name}.switch")             # the dead daemon's rules are cleared after


def test_a_sigkilled_testbed_run_is_listed_as_died_not_running(lab):
    tmp, name, path, store = lab
    exp = tmp / "killed.yaml"
    exp.write_text(json.dumps({"experiment": "killed", "lab": str(path), "rates": [1000, 999], "timeout_s": 20,
                               "worm": {"port": PORT, "protocols": ["tcp"], "scan": SCAN, "lifetime_s": 30}}))
    out, index = tmp / "killed", tmp / "killed.sqlite"
    cli = [sys.executable, "-m", "orchestrator.cli"]
    p = subprocess.Popen([*cli, "run", str(exp), "--out", str(out), "--index", str(index)], cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "trials.jsonl").exists() and (out / "trials.jsonl").read_text().count("\n") >= 1):
            assert time.monotonic() < deadline and p.poll() is None, "the run never recorded a trial"
            time.sleep(0.05)
    finally:
        os.killpg(p.pid, signal.SIGKILL)        # the runner and whatever it had started, at once
        p.wait(10)
    man = RunDir(out).manifest()
    assert man["status"] == "running" and man["runner"]["pid"] == p.pid      # what a SIGKILL leaves
    listed = subprocess.run([*cli, "results", "list", "--index", str(index), "--json"], capture_output=True,
                            text=True, cwd=REPO)
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [(man["run_id"], "died")]
    shown = subprocess.run([*cli, "results", "show", str(out), "--index", str(index)], capture_output=True,
                           text=True, cwd=REPO, env={**os.environ, "COLUMNS": "250"})
    assert "status: died — its runner (pid" in shown.stdout and f"--resume {out}" in shown.stdout, shown.stdout
