"""Infection across real namespaces: it spreads from server to server, one generation per hop, and stops at
the generation bound; a host without a server is scanned but never infected.

Hosts on one LAN, in address order: a=.1 b=.2 x=.3 (no server) c=.4 d=.5 inj=.6 (the injector, no server).
Every scanner scans sequentially from the address after its own, two attempts, generation bound 2:
  a (gen 0) → .2 b connected, infected (gen 1)   .3 x refused
  b (gen 1) → .3 x refused                       .4 c connected, infected (gen 2)
  c (gen 2) → .5 d connected, NOT triggered      .6 refused          (gen 3 would exceed the bound)
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.minilab import MiniLab
from tests.testworm.labkit import client, events, keyfile, start_server, status, wait_for

pytestmark = pytest.mark.root

SERVERS = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    key = keyfile(tmp)
    with MiniLab({h: ["lan1"] for h in ("a", "b", "x", "c", "d", "inj")}) as lab:
        states = {h: start_server(lab, h, tmp, key, "--max-generations", "2") for h in SERVERS}
        code, reply, err = client(lab, "inj", "trigger", "a", key, "--rate", "20", "--strategy", "sequential",
                                  "--start", "self", "--max-attempts", "2", "--targets", "198.18.201.0/28",
                                  "--connect-timeout", "0.5", "--lifetime", "20")
        assert code == 0, (reply, err)
        wait_for(lambda: status(lab, "inj", "c", key)["state"] == "done", "c's scan to finish", timeout=30)
        final = {h: status(lab, "inj", h, key) for h in SERVERS}
        logs = {h: sorted(states[h].glob("scan-*.jsonl")) for h in SERVERS}
        yield lab, final, logs, states


def attempts(log):
    return [(e["dst"], e["outcome"], e["generation"]) for e in sorted(events(log, "attempt"), key=lambda e: e["i"])]


def infections(log):
    return [(e["dst"], e["generation"], e["ok"]) for e in events(log, "infect")]


def test_infection_spreads_one_generation_per_hop(chain):
    lab, final, logs, _ = chain
    assert [(final[h]["state"], final[h]["generation"], final[h]["scans"]) for h in ("a", "b", "c")] == \
        [("done", 0, 1), ("done", 1, 1), ("done", 2, 1)]
    assert attempts(logs["a"][0]) == [("198.18.201.2", "connected", 0), ("198.18.201.3", "refused", 0)]
    assert infections(logs["a"][0]) == [("198.18.201.2", 1, True)]
    assert attempts(logs["b"][0]) == [("198.18.201.3", "refused", 1), ("198.18.201.4", "connected", 1)]
    assert infections(logs["b"][0]) == [("198.18.201.4", 2, True)]
    for h in ("a", "b", "c"):
        assert [e["reason"] for e in events(logs[h][0], "stop")] == ["max_attempts"]


def test_spread_stops_at_the_generation_bound(chain):
    lab, final, logs, states = chain
    # c found d's server but, at generation 2 = the bound, does not trigger it
    assert attempts(logs["c"][0]) == [("198.18.201.5", "connected", 2), ("198.18.201.6", "refused", 2)]
    assert infections(logs["c"][0]) == []
    assert events(logs["c"][0], "start")[0]["params"]["infect"] is False
    assert (final["d"]["state"], final["d"]["scans"], final["d"]["generation"]) == ("idle", 0, None)
    assert final["d"]["counts"]["probes"] == 1  # c's connect found it, and nothing more happened
    assert logs["d"] == []


def test_a_host_without_a_server_is_never_infected(chain):
    lab, final, logs, _ = chain
    x = lab.addr("x")
    seen = [o for h in ("a", "b") for d, o, _ in attempts(logs[h][0]) if d == x]
    assert seen == ["refused", "refused"]  # scanned twice, nothing listening
    assert all(d != x for h in SERVERS for log in logs[h] for d, _, _ in infections(log))
    r = subprocess.run(["ip", "netns", "pids", lab.ns("x")], capture_output=True, text=True, check=True)
    assert r.stdout.split() == []  # no process at all runs in x: nothing was started there
