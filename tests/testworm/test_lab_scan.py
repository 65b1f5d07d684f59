"""The scanner in real namespaces: what it logs (docs/event-logs.md), UDP datagrams on the wire, the lifetime
bound, and the environment interlocks (root namespace, uplink routes) holding before anything is sent."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.support.minilab import MiniLab
from tests.testworm.labkit import ENV, events, keyfile, run_worm, start_server
from testworm.interlocks import read_environment

pytestmark = pytest.mark.root

ATTEMPT_KEYS = {"event": str, "i": int, "t_mono": float, "t_wall": float, "due_mono": float, "t_done_mono": float,
                "src": str, "sport": int, "dst": str, "dport": int, "protocol": str, "outcome": str,
                "generation": int}


def check_log_shape(log, n, rate):
    evs = events(log)
    assert evs[0]["event"] == "start" and evs[-1]["event"] == "stop"
    att = sorted((e for e in evs if e["event"] == "attempt"), key=lambda e: e["i"])
    assert [e["i"] for e in att] == list(range(n))
    for e in att:
        for k, typ in ATTEMPT_KEYS.items():
            assert isinstance(e[k], typ), (k, e)
        assert e["t_done_mono"] >= e["t_mono"] >= e["due_mono"] - 1e-9
        assert abs(e["t_wall"] - e["t_mono"] - (att[0]["t_wall"] - att[0]["t_mono"])) < 0.2
    for a, b in zip(att, att[1:], strict=False):
        assert abs(b["due_mono"] - a["due_mono"] - 1 / rate) < 1e-9
    assert evs[-1]["attempts"] == n
    return evs[0], att, evs[-1]


def test_tcp_scan_logs_each_outcome(tmp_path):
    key = keyfile(tmp_path)
    with MiniLab({"a": ["lan1"], "b": ["lan1"], "c": ["lan1"]}) as lab:
        start_server(lab, "b", tmp_path, key)
        log = tmp_path / "tcp.jsonl"
        r = run_worm(lab, "a", "scan", "--rate", "20", "--port", "7000", "--allow", "198.18.201.0/24",
                     "--strategy", "hit-list", "--hit-list", lab.addr("b"), lab.addr("c"), "198.18.201.9",
                     "--connect-timeout", "0.3", "--log", str(log))
        assert r.returncode == 0, r.stderr
        assert r.stderr == f"testworm scan: stopped (targets_exhausted) after 3 attempts; log {log}\n"
        start, att, stop = check_log_shape(log, 3, 20.0)
        assert start["params"]["strategy"] == "hit-list" and start["params"]["source"] == lab.addr("a")
        assert start["generation"] == 0 and start["params"]["infect"] is False
        assert [(e["dst"], e["outcome"]) for e in att] == \
            [(lab.addr("b"), "connected"), (lab.addr("c"), "refused"), ("198.18.201.9", "timeout")]
        assert all(e["src"] == lab.addr("a") and e["dport"] == 7000 and e["protocol"] == "tcp" for e in att)
        assert len({e["sport"] for e in att}) == 3 and all(1024 <= e["sport"] <= 65535 for e in att)
        assert 0.29 < att[2]["t_done_mono"] - att[2]["t_mono"] < 0.6  # the connect timeout
        assert att[1]["t_done_mono"] - att[1]["t_mono"] < 0.25  # a RST, long before it
        assert stop["reason"] == "targets_exhausted"


RECEIVER = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 9999)); s.settimeout(0.5)
print("ready", flush=True)
got, deadline = [], time.monotonic() + 10
while len(got) < int(sys.argv[1]) and time.monotonic() < deadline:
    try:
        data, peer = s.recvfrom(2048)
    except socket.timeout:
        continue
    got.append([peer[0], peer[1], len(data), data[:30].decode("ascii", "replace")])
print(json.dumps(got), flush=True)
"""


def test_udp_scan_sends_one_datagram_per_target(tmp_path):
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        rx = lab.popen("b", [sys.executable, "-c", RECEIVER, "40"], stdout=subprocess.PIPE, text=True)
        assert rx.stdout.readline() == "ready\n"
        # 40 datagrams to b's address (a hit list may repeat) at 200/s, 376 bytes each
        log = tmp_path / "udp.jsonl"
        r = run_worm(lab, "a", "scan", "--profile", "slammer-like", "--rate", "200", "--port", "9999",
                     "--allow", "198.18.201.0/24", "--strategy", "hit-list", "--hit-list", *[lab.addr("b")] * 40,
                     "--log", str(log))
        assert r.returncode == 0, r.stderr
        got = json.loads(rx.stdout.readline())
        rx.wait(timeout=10)
        start, att, stop = check_log_shape(log, 40, 200.0)
        assert start["params"]["profile"] == "slammer-like" and start["params"]["protocol"] == "udp"
        assert [e["outcome"] for e in att] == ["sent"] * 40
        assert len(got) == 40
        assert {(src, sport) for src, sport, _, _ in got} == {(lab.addr("a"), att[0]["sport"])}
        assert {n for _, _, n, _ in got} == {376}
        assert got[0][3].startswith("testworm benign probe")


def test_lifetime_bounds_the_scan(tmp_path):
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        log = tmp_path / "life.jsonl"
        t0 = time.monotonic()
        # nobody answers most of a /24, so attempts are still in flight when the lifetime ends
        r = run_worm(lab, "a", "scan", "--rate", "50", "--port", "7000", "--allow", "198.18.201.0/24",
                     "--strategy", "random", "--seed", "3", "--lifetime", "1", "--connect-timeout", "3",
                     "--log", str(log), timeout=15)
        wall = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        evs = events(log)
        stop = evs[-1]
        att = [e for e in evs if e["event"] == "attempt"]
        assert stop["reason"] == "lifetime"
        assert 40 <= stop["attempts"] <= 50 and len(att) == stop["attempts"]  # 50 fall due within 1 s
        first = min(e["due_mono"] for e in att)
        assert max(e["t_mono"] for e in att) < first + 1.0
        assert stop["t_mono"] - first < 1.5  # it did not wait for the 3 s connect timeouts
        aborted = [e for e in att if e.get("aborted")]
        assert aborted and all(e["outcome"] == "timeout" and e["t_done_mono"] < first + 1.5 for e in aborted)
        assert wall < 10.0


def _in_root_netns() -> bool:
    env = read_environment(probe=False)
    return env.own_netns is not None and env.own_netns in env.root_netns


NO_SOCKETS = """
import socket, sys
class NoSockets(socket.socket):
    def __init__(self, *a, **k):
        print("testworm: a socket was about to be created", file=sys.stderr)
        raise SystemExit(99)
socket.socket = NoSockets
from testworm.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [
    ["scan", "--rate", "10", "--port", "7000", "--allow", "198.18.201.0/24", "--log", "{tmp}/never.jsonl"],
    ["scan", "--profile", "slammer-like", "--allow", "198.18.0.0/15", "--log", "{tmp}/never.jsonl"],
    ["server", "--listen", "0.0.0.0:7000", "--key", "{key}", "--state-dir", "{tmp}/state"],
    ["trigger", "198.18.201.2:7000", "--key", "{key}", "--rate", "10"],
    ["kill", "198.18.201.2:7000", "--key", "{key}"],
])
def test_root_namespace_interlock_refuses_before_any_socket(tmp_path, argv):
    if not _in_root_netns():
        pytest.skip("the test runner is not in the machine's root network namespace")
    key = keyfile(tmp_path)
    argv = [a.format(tmp=tmp_path, key=key) for a in argv]
    # run for real in this (root) namespace, with socket creation made impossible: should the interlock
    # ever fail, the test fails (exit 99) instead of a packet leaving the machine
    r = subprocess.run([sys.executable, "-c", NO_SOCKETS, *argv], env=ENV, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("testworm: refusing to run outside a lab: this is the machine's root network "
                               "namespace")
    assert r.stderr.rstrip().endswith("(tests only: --i-know-this-is-not-a-lab)")
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "never.jsonl").exists() and not (tmp_path / "state").exists()


def test_uplink_route_interlock_and_the_test_override(tmp_path):
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        # give a an "uplink": a veth pair inside a's namespace and a default route through it
        ns = lab.ns("a")
        for cmd in (["link", "add", "up0", "type", "veth", "peer", "name", "up1"], ["link", "set", "up0", "up"],
                    ["link", "set", "up1", "up"], ["addr", "add", "203.0.113.2/24", "dev", "up0"],
                    ["route", "add", "default", "via", "203.0.113.1"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True, capture_output=True)
        log = tmp_path / "up.jsonl"
        scan = ["scan", "--rate", "10", "--port", "7000", "--allow", "198.18.201.0/24", "--strategy", "hit-list",
                "--hit-list", lab.addr("b"), "--log", str(log)]
        r = run_worm(lab, "a", *scan)
        assert r.returncode == 2
        assert r.stderr == ("testworm: refusing to run outside a lab: route 0.0.0.0/0 via 203.0.113.1 (dev up0): "
                            "gateway outside the lab ranges (tests only: --i-know-this-is-not-a-lab)\n")
        assert not log.exists()
        r = run_worm(lab, "a", *scan, "--i-know-this-is-not-a-lab")
        assert r.returncode == 0, r.stderr
        assert "WARNING: lab interlocks overridden" in r.stderr
        start = events(log, "start")[0]
        assert start["params"]["override"] == ["route 0.0.0.0/0 via 203.0.113.1 (dev up0): gateway outside the "
                                               "lab ranges"]
        assert [e["outcome"] for e in events(log, "attempt")] == ["refused"]
        # the override never widens the allow-list
        r = run_worm(lab, "a", *scan[:-2], "--targets", "198.18.202.0/24", "--log", str(log),
                     "--i-know-this-is-not-a-lab")
        assert r.returncode == 2 and "not inside the allow-list" in r.stderr


def test_a_lab_gateway_is_not_an_uplink(tmp_path):
    with MiniLab({"a": ["lan1"], "gw": ["lan1", "lan2"], "t": ["lan2"]}, gateway="gw") as lab:
        log = tmp_path / "gw.jsonl"
        r = run_worm(lab, "a", "scan", "--rate", "10", "--port", "7000", "--allow", "198.18.201.0/24",
                     "198.18.202.0/24", "--strategy", "hit-list", "--hit-list", lab.addr("t"), "--log", str(log))
        assert r.returncode == 0, r.stderr
        assert [(e["dst"], e["outcome"]) for e in events(log, "attempt")] == [(lab.addr("t"), "refused")]


def test_scan_with_a_key_triggers_a_server_it_finds(tmp_path):
    key = keyfile(tmp_path)
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        state = start_server(lab, "b", tmp_path, key)
        log = tmp_path / "inj.jsonl"
        r = run_worm(lab, "a", "scan", "--rate", "10", "--port", "7000", "--allow", "198.18.201.0/24",
                     "--strategy", "hit-list", "--hit-list", lab.addr("b"), "--key", str(key), "--log", str(log),
                     "--max-generations", "1")
        assert r.returncode == 0, r.stderr
        inf = events(log, "infect")
        assert [(e["dst"], e["dport"], e["generation"], e["ok"], e["reply"]) for e in inf] == \
            [(lab.addr("b"), 7000, 1, True, "scanning")]
        child = state / "scan-001-gen1.jsonl"
        deadline = time.monotonic() + 20
        while not events(child, "stop") and time.monotonic() < deadline:
            time.sleep(0.05)
        cstart = events(child, "start")[0]
        assert cstart["generation"] == 1 and cstart["params"]["infect"] is False  # 1 = the bound
        assert cstart["params"]["seed"] != 0  # derived per host from the parent's seed
        assert [(e["dst"], e["outcome"]) for e in events(child, "attempt")] == [(lab.addr("b"), "connected")]
        assert events(child, "stop")[0]["reason"] == "targets_exhausted"
