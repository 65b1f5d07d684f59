"""Delays joined from a log and a capture's SYN times, and their distribution, on hand-made records."""

from __future__ import annotations

import numpy as np
import pytest

from workload.analysis import attempts_on_wire, distribution, join, quantile, summarize
from workload.pcap import Packet

W0, M0 = 1_764_050_000.0, 500.0  # wall and monotonic clocks at the session start (wall: ~0.2 µs resolution)


def conn(i, due, *, sport=40000 + 0, proto="tcp", outcome="ok", send=0.0001, est=0.0005, answer=0.001, dst="198.18.201.2"):
    return {"event": "conn", "i": i, "t_sched": due, "protocol": proto, "src": "198.18.201.1", "sport": sport,
            "dst": dst, "dport": 8080 if proto == "tcp" else 5353, "outcome": outcome,
            "due_mono": M0 + due, "due_wall": W0 + due, "t_mono": M0 + due + send,
            "t_established_mono": None if est is None else M0 + due + est,
            "t_answer_mono": None if answer is None else M0 + due + answer}


def syn(t, sport, flags=0x02, proto="tcp", dst="198.18.201.2"):
    return Packet(W0 + t, proto, "198.18.201.1", sport, dst, 8080 if proto == "tcp" else 5353, flags)


def test_quantiles_interpolate_like_numpy():
    rng = np.random.default_rng(1)
    for n in (1, 2, 3, 10, 101, 1000):
        v = sorted(rng.exponential(size=n).tolist())
        for q in (0.0, 0.5, 0.95, 0.99, 1.0):
            assert quantile(v, q) == pytest.approx(float(np.percentile(v, q * 100)))
    assert distribution([1.0, None, 2.0]) == {"n": 2, "p50": 1.5, "p95": 1.95, "p99": 1.99, "max": 2.0}
    assert distribution([]) == {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}


def test_wire_delay_is_from_the_schedule_to_the_first_syn():
    conns = [conn(0, 0.0, sport=40000), conn(1, 1.0, sport=40001), conn(2, 2.0, sport=40002, proto="udp")]
    pk = [syn(0.0002, 40000), syn(0.0003, 40000, flags=0x12),    # a SYN-ACK is not an attempt
          syn(1.9, 40001), syn(2.9, 40001),                       # held 0.9 s (a throttle), then retransmitted
          syn(2.004, 40002, proto="udp", flags=0)]
    rows = join(conns, attempts_on_wire(pk))
    assert [r["wire_s"] for r in rows] == pytest.approx([0.0002, 0.9, 0.004], abs=1e-6)
    assert [r["retransmissions"] for r in rows] == [0, 1, 0]
    assert rows[0]["send_s"] == pytest.approx(0.0001) and rows[0]["established_s"] == pytest.approx(0.0005)
    assert rows[0]["answer_s"] == pytest.approx(0.001)


def test_a_reused_four_tuple_is_matched_connection_by_connection():
    conns = [conn(0, 0.0, sport=40000), conn(1, 5.0, sport=40000), conn(2, 9.0, sport=40000)]
    pk = [syn(0.01, 40000), syn(1.01, 40000), syn(5.02, 40000), syn(30.0, 40000)]
    rows = join(conns, attempts_on_wire(pk))
    assert [r["wire_s"] for r in rows] == pytest.approx([0.01, 0.02, 21.0], abs=1e-6)
    assert [r["retransmissions"] for r in rows] == [1, 0, 0]


def test_a_held_syn_is_its_own_connections_when_the_ports_are_reused_within_the_slack():
    # a throttle held connection 0's SYN 4.757 s; once it was answered the kernel gave connection 1, due 0.44 s
    # later, the same ports (seen in a benign sweep): the SYN before 0's establishment is 0's, not 1's
    conns = [conn(0, 0.0, sport=40000, est=4.7576), conn(1, 5.2, sport=40000, est=0.0012)]
    pk = [syn(4.757, 40000), syn(5.201, 40000)]
    rows = join(conns, attempts_on_wire(pk))
    assert [r["wire_s"] for r in rows] == pytest.approx([4.757, 0.001], abs=1e-6)
    assert [r["retransmissions"] for r in rows] == [0, 0]


def test_connections_missing_from_the_wire_and_the_counts():
    conns = [conn(0, 0.0, sport=1), conn(1, 0.1, sport=2, outcome="timeout", est=None, answer=None),
             conn(2, 0.2, sport=3, outcome="refused", est=None, answer=None),
             conn(3, 0.3, sport=4, outcome="reset", answer=None),
             conn(4, 0.4, sport=5, outcome="unreachable", est=None, answer=None)]
    pk = [syn(0.001, 1), syn(0.102, 2), syn(0.203, 3), syn(0.304, 4), syn(-5.0, 5)]  # the last one: long before
    rows = join(conns, attempts_on_wire(pk))
    s = summarize(rows, scheduled=7, with_capture=True)
    assert s["connections"] == 5 and s["scheduled"] == 7 and s["not_logged"] == 2
    assert (s["ok"], s["dropped"], s["refused"], s["unreachable"]) == (1, 1, 2, 1)
    assert (s["on_wire"], s["not_on_wire"], s["syn_retransmissions"]) == (4, 1, 0)
    assert s["delay_wire_s"]["max"] == pytest.approx(0.004, abs=1e-6) and s["delay_wire_s"]["n"] == 4
    assert s["delay_answer_s"]["n"] == 1 and s["delay_established_s"]["n"] == 2


def test_without_a_capture_there_are_no_wire_columns():
    rows = join([conn(0, 0.0)], None)
    assert rows[0]["wire_s"] is None
    assert "delay_wire_s" not in summarize(rows)
