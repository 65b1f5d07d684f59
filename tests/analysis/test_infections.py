"""A spread's infections from the worm servers' logs, confirmed on the wire; and the epidemic's figures."""

from __future__ import annotations

import math

from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from orchestrator.analysis.infections import (
    blocked_at,
    confirm_on_wire,
    curve,
    epidemic,
    findings,
    infections_from_logs,
    read_csv,
    wire_relative,
    write_csv,
)
from orchestrator.analysis.pcap import read_capture
from tests.analysis.capgen import T0, eth, write_pcap

A, B, C, INJ = "198.18.8.4", "198.18.8.5", "198.18.8.6", "198.18.8.3"
NAMES = {A: "a", B: "b", C: "c", INJ: "injector"}
ADDRS = {"a": A, "b": B, "c": C}


def trig(t, peer, gen, ok=True):
    return {"event": "request", "t_wall": T0 + t, "peer": peer, "cmd": "trigger", "generation": gen, "ok": ok}


LOGS = {
    "a": [{"event": "listening", "t_wall": T0 - 1}, trig(0.0, f"{INJ}:41000", 0)],
    "b": [trig(1.5, f"{A}:42001", 1), trig(2.0, f"{C}:43001", 3, ok=False)],   # infected once
    "c": [trig(3.25, f"{B}:44002", 2)],
}


def test_infections_from_the_servers_logs_in_time_order():
    got = infections_from_logs(LOGS, NAMES, "a")
    assert [(i.host, i.infected_at_s, i.by, i.generation, i.peer) for i in got] == [
        ("a", 0.0, "injector", 0, f"{INJ}:41000"), ("b", 1.5, "a", 1, f"{A}:42001"), ("c", 3.25, "b", 2, f"{B}:44002")]


def test_no_infection_without_the_initial_trigger():
    assert infections_from_logs({"b": LOGS["b"]}, NAMES, "a") == []


def flow(t, src, sport, dst, data=True):
    out = [(t, bytes(eth(IP(src=src, dst=dst), TCP(sport=sport, dport=8080, flags="S"))))]
    if data:
        out.append((t + 0.002, bytes(eth(IP(src=src, dst=dst), TCP(sport=sport, dport=8080, flags="PA"),
                                         Raw(b'{"cmd": "trigger"}\n')))))
    return out


def test_each_infection_is_confirmed_by_its_connection_on_the_wire(tmp_path):
    # a's and b's triggers are on the wire; c's connection is a SYN without its trigger: not confirmed
    frames = flow(T0 + 0.01, INJ, 41000, A) + flow(T0 + 1.4, A, 42001, B) + flow(T0 + 3.2, B, 44002, C, data=False)
    frames += flow(T0 + 2.0, A, 42009, C)          # another connection to c, from another port: not c's
    pk = read_capture(write_pcap(tmp_path / "c.pcap", sorted(frames)))
    infs = infections_from_logs(LOGS, NAMES, "a")
    confirm_on_wire(infs, pk, ADDRS, 8080)
    wire_relative(infs)
    assert [(i.host, i.confirmed_on_wire) for i in infs] == [("a", True), ("b", True), ("c", False)]
    assert [i.wire_at_s for i in infs] == [0.0, 1.39, 3.19]
    f = findings(infs)
    assert [(x["kind"], x["host"], x["peer"]) for x in f] == [("infection-not-on-wire", "c", f"{B}:44002")]
    assert "capture does not show" in f[0]["detail"]


def test_infections_csv_round_trip(tmp_path):
    infs = infections_from_logs(LOGS, NAMES, "a")
    rows = read_csv(write_csv(infs, tmp_path / "infections.csv"))
    assert list(rows[0]) == ["host", "infected_at_s", "by", "generation", "confirmed_on_wire", "wire_at_s"]
    assert [(r["host"], r["infected_at_s"], r["by"], r["generation"]) for r in rows] == [
        ("a", "0.0", "injector", "0"), ("b", "1.5", "a", "1"), ("c", "3.25", "b", "2")]


def test_epidemic_figures():
    times = [0.0, 1.0, 2.0, 3.0, math.inf, 5.0, 6.0, 7.0, 8.0, 9.0]       # 9 of 10 fall
    e = epidemic(times, 10)
    assert e == {"hosts": 10, "infected_final": 9, "t_first_s": 1.0, "t_50_s": 5.0, "t_90_s": 9.0, "t_all_s": None}
    assert epidemic([0.0], 16) == {"hosts": 16, "infected_final": 1, "t_first_s": None, "t_50_s": None,
                                   "t_90_s": None, "t_all_s": None}
    assert curve(times, [0, 0.5, 2, 100]) == [1, 1, 3, 9]


def test_blocked_at_from_the_mechanisms_log():
    ev = [{"event": "config", "t_wall": T0}, {"event": "blocked", "t_wall": T0 + 5.25, "src": A}]
    assert blocked_at(ev, T0 + 0.25) == 5.0
    assert blocked_at(ev[:1], T0) is None
