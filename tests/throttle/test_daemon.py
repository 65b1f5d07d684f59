"""The NFQUEUE daemon inside real network namespaces (MiniLab): what reaches the wire, and when."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.support.minilab import MiniLab
from tests.throttle.netlab import (
    PY,
    Daemon,
    Sniffer,
    add_addresses,
    connect,
    need_tools,
    send_udp,
    throttle_rules,
)

pytestmark = pytest.mark.root

TOPO = {"a": ["lan1"], "gw": ["lan1", "lan2"], "t": ["lan2"]}


@pytest.fixture
def lab():
    need_tools("iptables", "iptables-restore", "tcpdump")
    with MiniLab(TOPO, gateway="gw") as lab:
        yield lab


def test_sixth_new_destination_leaves_one_period_later(lab, tmp_path):
    dsts = add_addresses(lab, "t", "lan2", 10, 6)
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host", "--period", "1.0")
    cfg = d.wait_ready()
    assert (cfg["mode"], cfg["policy"], cfg["working_set_size"], cfg["initial_state"]) == \
        ("host", "packets", 5, "fresh")
    sniff = Sniffer(lab, "t", "lan2", "tcp[tcpflags] & tcp-syn != 0")
    sent = connect(lab, "a", dsts, hold=1.6)
    syns = sniff.stop()
    assert d.stop() == 0
    ev = d.events()
    kinds = [(e["event"], e["dst"]) for e in ev if e["event"] in ("passed", "queued", "released")]
    assert kinds == [("passed", x) for x in dsts[:5]] + [("queued", dsts[5]), ("released", dsts[5])]
    queued = next(e for e in ev if e["event"] == "queued")
    released = next(e for e in ev if e["event"] == "released")
    assert released["due_mono"] - queued["t_mono"] == pytest.approx(1.0, abs=1e-6)
    assert 0 <= released["t_mono"] - released["due_mono"] < 0.02
    assert (queued["sport"], released["sport"]) == (sent[5][1], sent[5][1])
    # on the wire, on the other side of the gateway
    seen = {}
    sport_of = {x[0]: x[1] for x in sent}
    for t, src, sport, dst, dport, _ in syns:
        assert src == lab.addr("a") and dport == 8080 and sport == sport_of[dst]
        seen.setdefault(dst, []).append(t)
    assert sorted(seen) == sorted(dsts)
    first = min(seen[x][0] for x in dsts[:5])
    assert max(seen[x][0] for x in dsts[:5]) - first < 0.2
    assert 0.95 < seen[dsts[5]][0] - queued["t_wall"] < 1.2
    # host placement: a held SYN is not retransmitted by the sender's own stack
    assert len(seen[dsts[5]]) == 1


def test_scan_blocks_at_the_limit_then_reset_unblocks(lab, tmp_path):
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host")
    d.wait_ready()
    a = lab.addr("a")
    sniff = Sniffer(lab, "gw", "lan1", f"src host {a} and ((tcp[tcpflags] & tcp-syn != 0) or udp)")
    scan = [f"198.18.203.{i}" for i in range(1, 111)] + ["198.18.204.1"]   # no route beyond gw
    connect(lab, "a", scan, gap=0.001)
    st = d.status()["sources"][a]
    assert st["blocked"] and st["queue_len"] == 0 and st["working_set"] == scan[:5]
    # nothing new passes: neither a working-set hit, nor a new destination, nor UDP
    connect(lab, "a", [scan[0], "198.18.204.2"])
    send_udp(lab, "a", [scan[1]])
    time.sleep(1.2)                     # a released packet would have left by now
    on_wire = sniff.stop()

    ev = d.events()
    blocked = [e for e in ev if e["event"] == "blocked"]
    assert len(blocked) == 1 and blocked[0]["dst"] == scan[105] and blocked[0]["queue_len"] == 100
    i = ev.index(blocked[0])
    assert [e["event"] for e in ev[1:i]] == ["passed"] * 5 + ["queued"] * 100
    flushed = ev[i + 1:i + 101]
    assert {(e["event"], e["reason"]) for e in flushed} == {("dropped", "flushed")}
    assert [e["dst"] for e in flushed] == scan[5:105]
    after = ev[i + 101:]
    assert {(e["event"], e["reason"]) for e in after} == {("dropped", "blocked")}
    assert {e["dst"] for e in after} >= {*scan[106:], scan[0], "198.18.204.2", scan[1]}
    assert {p[3] for p in on_wire} == set(scan[:5])
    assert all(p[0] < blocked[0]["t_wall"] for p in on_wire)

    # reset: the source is unblocked and starts again from the initial (fresh) state
    r = d.cli("reset")
    assert r.returncode == 0 and "reset every source" in r.stdout, r.stderr
    assert d.status()["sources"] == {}
    sniff = Sniffer(lab, "gw", "lan1", f"src host {a} and tcp[tcpflags] & tcp-syn != 0")
    connect(lab, "a", ["198.18.204.3"])
    on_wire = sniff.stop()
    assert [p[3] for p in on_wire] == ["198.18.204.3"]
    tail = d.events()[len(ev):]
    assert [(e["event"], e.get("src"), e.get("reason")) for e in tail][:2] == \
        [("reset", None, None), ("passed", a, "room")]
    m = d.cli("mark", "--why", "check")          # what it holds now, into its log (the runner: before the worm)
    assert m.returncode == 0, m.stderr
    said = json.loads(m.stdout)
    assert said["sources"][a]["working_set"] == ["198.18.204.3"] and said["sources"][a]["state"] == "partial"
    assert d.events("state") == [said]
    assert d.stop() == 0


def test_gateway_mode_keeps_two_sources_apart(tmp_path):
    need_tools("iptables", "iptables-restore", "tcpdump")
    with MiniLab({"a1": ["lan1"], "a2": ["lan1"], "gw": ["lan1", "lan2"], "t": ["lan2"]}, gateway="gw") as lab:
        dsts = add_addresses(lab, "t", "lan2", 10, 8)
        d = Daemon(lab, "gw", tmp_path / "ev.jsonl", "--mode", "gateway", "--working-set", "2", "--limit", "3",
                   "--period", "5")
        assert d.wait_ready()["hook"] == "FORWARD"
        sniff = Sniffer(lab, "t", "lan2", "tcp[tcpflags] & tcp-syn != 0")
        connect(lab, "a1", dsts[:6])                  # 2 pass, 3 queue, the 6th blocks a1
        connect(lab, "a2", dsts[:3])                  # a2 has its own working set: 2 pass, 1 queued
        time.sleep(0.3)
        on_wire = sniff.stop()
        st = d.status()["sources"]
        a1, a2 = lab.addr("a1"), lab.addr("a2")
        assert st[a1]["blocked"] and st[a1]["queue_len"] == 0 and st[a1]["working_set"] == dsts[:2]
        assert not st[a2]["blocked"] and st[a2]["queue_len"] == 1 and st[a2]["working_set"] == dsts[:2]
        assert sorted((p[1], p[3]) for p in on_wire) == sorted([(a1, dsts[0]), (a1, dsts[1]),
                                                                (a2, dsts[0]), (a2, dsts[1])])
        # a one-source reset leaves the other alone
        assert d.cli("reset", "--src", a1).returncode == 0
        st = d.status()["sources"]
        assert a1 not in st and st[a2]["queue_len"] == 1
        assert d.stop() == 0
        assert throttle_rules(lab, "gw") == []


SINK = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 5001)); srv.listen(1); print("ready", flush=True)
c, _ = srv.accept(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
print(n, flush=True)
"""

STREAM = r"""
import json, socket, sys, time
s = socket.create_connection((sys.argv[1], 5001), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print(json.dumps({"sport": s.getsockname()[1]}), flush=True)
sys.stdin.readline()                 # first half sent after this line, second half after the next
for half in range(2):
    for _ in range(300):
        s.sendall(b"x" * 1000); time.sleep(0.0005)
    print("half", flush=True)
    if half == 0:
        sys.stdin.readline()
s.close()
"""


def test_established_stream_is_unaffected_even_after_a_block(lab, tmp_path):
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host", "--working-set", "1", "--limit", "2")
    d.wait_ready()
    sink = lab.popen("t", [PY, "-c", SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout.readline().strip() == "ready"
    stream = lab.popen("a", [PY, "-c", STREAM, lab.addr("t")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       text=True)
    sport = json.loads(stream.stdout.readline())["sport"]
    seq0 = d.status()["kernel_queue"]["id_sequence"]
    stream.stdin.write("go\n")
    stream.stdin.flush()
    assert stream.stdout.readline().strip() == "half"
    connect(lab, "a", [f"198.18.203.{i}" for i in range(1, 5)])      # 3 queue-worthy: blocks the source
    st = d.status()
    assert st["sources"][lab.addr("a")]["blocked"]
    stream.stdin.write("go\n")
    stream.stdin.flush()
    assert stream.stdout.readline().strip() == "half"
    stream.wait(timeout=20)
    assert int(sink.stdout.readline()) == 600 * 1000                   # every byte arrived, block or not
    ev = d.events()
    mine = [e for e in ev if e.get("sport") == sport]
    assert [(e["event"], e["reason"]) for e in mine] == [("passed", "room")]     # the SYN, nothing else
    # 600 segments of the stream went out; the kernel queued only the scan's 4 SYNs during it
    assert d.status()["kernel_queue"]["id_sequence"] - seq0 == 4
    assert d.stop() == 0


def test_udp_is_throttled_the_same_way(lab, tmp_path):
    dsts = add_addresses(lab, "t", "lan2", 20, 7)
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host", "--period", "0.5", "--protocols", "udp")
    assert d.wait_ready()["protocols"] == ["udp"]
    sniff = Sniffer(lab, "t", "lan2", "udp")
    sent = send_udp(lab, "a", dsts)
    connect(lab, "a", ["198.18.203.1"] * 1)        # TCP is not hooked with --protocols udp
    time.sleep(1.3)
    on_wire = sniff.stop()
    ev = d.events()
    assert [(e["event"], e["dst"], e["proto"]) for e in ev if e["event"] != "config"] == \
        [("passed", x, "udp") for x in dsts[:5]] + [("queued", dsts[5], "udp"), ("queued", dsts[6], "udp"),
                                                    ("released", dsts[5], "udp"), ("released", dsts[6], "udp")]
    t_first = min(p[0] for p in on_wire)
    when = {p[3]: p[0] - t_first for p in on_wire}
    assert sorted(when) == sorted(dsts)
    assert max(when[x] for x in dsts[:5]) < 0.2
    assert 0.45 < when[dsts[5]] < 0.7 and 0.95 < when[dsts[6]] < 1.2
    assert all(p[2] == s[1] for p in on_wire for s in sent if s[0] == p[3])
    assert d.stop() == 0


def test_sigkill_then_restart_leaves_exactly_one_set_of_rules(lab, tmp_path):
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host", "--queue-num", "7")
    d.wait_ready()
    first = throttle_rules(lab, "a")
    assert len(first) == 4 and sum(f"pid={d.p.pid}" in r for r in first) == 3
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    assert throttle_rules(lab, "a") == first                     # stale, still there
    d2 = Daemon(lab, "a", tmp_path / "ev2.jsonl", "--mode", "host", "--queue-num", "9")
    cfg = d2.wait_ready()
    assert cfg["stale_rules_replaced"] == 4
    second = throttle_rules(lab, "a")
    assert len(second) == 4 and sum(f"pid={d2.p.pid}" in r for r in second) == 3
    assert not any(f"pid={d.p.pid}" in r for r in second)
    assert sum("--queue-num 9" in r for r in second) == 2 and not any("--queue-num 7" in r for r in second)
    # and traffic is throttled by the new daemon
    connect(lab, "a", ["198.18.203.1"])
    assert [e["event"] for e in d2.events()][1:] == ["passed"]
    assert d2.stop() == 0
    assert throttle_rules(lab, "a") == []
    assert d2.events()[-1]["event"] == "stop" and d2.events()[-1]["reason"] == "SIGTERM"


def test_fail_closed_a_dead_daemon_drops_new_connections_until_its_rules_are_cleared(lab, tmp_path):
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host", "--fail-closed")
    assert d.wait_ready()["fail_closed"] is True
    rules = throttle_rules(lab, "a")
    assert rules and not any("--queue-bypass" in r for r in rules)
    refused = d.cli("clear")                                     # not while it lives
    assert refused.returncode == 1 and f"a live throttle daemon (pid {d.p.pid}) owns the rules" in refused.stderr
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    sniff = Sniffer(lab, "gw", "lan1", "tcp[tcpflags] & tcp-syn != 0")
    connect(lab, "a", ["198.18.203.1", "198.18.203.2"], hold=0.3)
    assert sniff.stop() == []                                    # nobody listens: dropped, not let out
    r = d.cli("clear")
    assert (r.returncode, r.stdout.strip()) == (0, "removed the throttle's stale rules") and throttle_rules(lab, "a") == []
    assert d.cli("clear").stdout.strip() == "no throttle rules here"
    sniff = Sniffer(lab, "gw", "lan1", "tcp[tcpflags] & tcp-syn != 0")
    connect(lab, "a", ["198.18.203.3"], hold=0.3)
    assert [x[3] for x in sniff.stop()] == ["198.18.203.3"]      # traffic flows again


def test_sigterm_drops_queued_packets_and_removes_rules(lab, tmp_path):
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host", "--working-set", "1", "--period", "30")
    d.wait_ready()
    sniff = Sniffer(lab, "gw", "lan1", "tcp[tcpflags] & tcp-syn != 0")
    connect(lab, "a", ["198.18.203.1", "198.18.203.2", "198.18.203.3"], hold=0.3)
    assert d.status()["sources"][lab.addr("a")]["queue_len"] == 2
    assert d.stop() == 0
    time.sleep(0.3)
    on_wire = sniff.stop()
    assert [p[3] for p in on_wire] == ["198.18.203.1"]
    shut = [e for e in d.events() if e.get("reason") == "shutdown"]
    assert [(e["event"], e["dst"]) for e in shut] == [("dropped", "198.18.203.2"), ("dropped", "198.18.203.3")]
    assert throttle_rules(lab, "a") == []


def test_status_text_and_unreachable_daemon(lab, tmp_path):
    r = lab.run("a", [PY, "-m", "throttle", "status"])
    assert r.returncode == 1 and "no throttle daemon is listening on @wtb-throttle" in r.stderr
    d = Daemon(lab, "a", tmp_path / "ev.jsonl", "--mode", "host", "--control", str(tmp_path / "ctl.sock"))
    d.wait_ready()
    connect(lab, "a", ["198.18.203.1"])
    r = d.cli("status", "--control", str(tmp_path / "ctl.sock"))
    assert r.returncode == 0 and "mode host" in r.stdout and lab.addr("a") in r.stdout and "198.18.203.1" in r.stdout
    assert d.stop() == 0
    assert not (tmp_path / "ctl.sock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["packets", "connections"])
def test_gateway_sees_retransmissions_and_each_policy_counts_them(lab, tmp_path, policy):
    """At a gateway the sender's stack retransmits a held SYN (+1 s, +2 s): `packets` makes each one a queue
    entry, `connections` joins them to their entry. A full initial working set queues the first SYN."""
    dst = add_addresses(lab, "t", "lan2", 40, 1)[0]
    known = [f"198.18.250.{i}" for i in range(1, 6)]
    d = Daemon(lab, "gw", tmp_path / "ev.jsonl", "--mode", "gateway", "--policy", policy, "--period", "2.5",
               "--initial-working-set", *known)
    cfg = d.wait_ready()
    assert (cfg["policy"], cfg["initial_state"], cfg["initial_working_set"]) == (policy, "full", known)
    sniff = Sniffer(lab, "t", "lan2", "tcp[tcpflags] & tcp-syn != 0")
    sent = connect(lab, "a", [dst], hold=2.9)
    on_wire = sniff.stop()
    assert d.stop() == 0
    ev = [e for e in d.events() if e["event"] in ("queued", "released")]
    sport = sent[0][1]
    assert {e["sport"] for e in ev} == {sport}
    if policy == "packets":
        assert [(e["event"], e["queue_len"], e["reason"]) for e in ev] == [
            ("queued", 1, "entry"), ("queued", 2, "entry"), ("queued", 3, "entry"),
            ("released", 2, "head"), ("released", 1, "same-destination"), ("released", 0, "same-destination")]
    else:
        assert [(e["event"], e["queue_len"], e["reason"]) for e in ev] == [
            ("queued", 1, "entry"), ("queued", 1, "joined"), ("queued", 1, "joined"),
            ("released", 0, "head"), ("released", 0, "head"), ("released", 0, "head")]
    q = [e["t_mono"] - ev[0]["t_mono"] for e in ev if e["event"] == "queued"]
    assert q[1] == pytest.approx(1.0, abs=0.1) and q[2] == pytest.approx(2.0, abs=0.15)
    # all three copies leave together, one period after the first
    assert len(on_wire) == 3 and max(p[0] for p in on_wire) - min(p[0] for p in on_wire) < 0.05
    assert min(p[0] for p in on_wire) - ev[0]["t_wall"] == pytest.approx(2.5, abs=0.1)
