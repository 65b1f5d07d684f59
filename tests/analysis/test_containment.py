"""Containment figures from the wire, on synthetic captures (capgen): contained_s, out_before_contained,
wire_rate, the answers in front of a gateway mechanism, and a block the wire contradicts."""

from __future__ import annotations

import pytest

from orchestrator.analysis.attempts import extract_attempts
from orchestrator.analysis.containment import answer_times, block_contradicted, figures, worm_times
from orchestrator.analysis.pcap import read_capture
from tests.analysis.capgen import T0, frames, syn, write_pcap

SRC, SCAN, PORT = "198.18.8.10", "198.18.9.0/24", 8080


def capture(tmp_path, pkts):
    path = tmp_path / "c.pcap"
    write_pcap(path, frames(pkts))
    return read_capture(path)


def at(p, t):
    p.time = T0 + t
    return p


def test_a_blocked_worm_is_contained_at_its_last_attempt_on_the_wire(tmp_path):
    pkts = [at(syn(SRC, f"198.18.9.{i + 1}", 40000 + i, PORT), i * 0.05) for i in range(6)]
    pkts += [at(syn(SRC, "198.18.9.3", 40002, PORT), 1.05)]            # a retransmission: not a new attempt
    pkts += [at(syn(SRC, "198.18.7.5", 41000, PORT), 0.3),             # outside the scan: not the worm's
             at(syn("198.18.8.11", "198.18.9.9", 40000, PORT), 0.4)]   # another source
    ts = worm_times(extract_attempts(capture(tmp_path, pkts)), src=SRC, scan=SCAN, dport=PORT, protocol="tcp")
    assert ts.tolist() == pytest.approx([T0 + i * 0.05 for i in range(6)])
    f = figures(ts, end=T0 + 10.0, first=T0)
    assert f["contained"] and f["contained_s"] == pytest.approx(0.25) and f["out_before_contained"] == 6
    assert f["silent_s"] == pytest.approx(9.75) and f["wire_attempts"] == 6


def test_a_worm_still_on_the_wire_at_the_end_is_not_contained():
    ts = [T0 + i / 20 for i in range(200)]                     # 20/s for 10 s, to the end of the trial
    f = figures(ts, end=T0 + 10.5)
    assert not f["contained"] and f["contained_s"] is None and f["out_before_contained"] is None
    assert f["wire_rate"] == pytest.approx(20.0)


def test_quiet_s_decides_and_the_first_attempt_comes_from_the_worms_log():
    ts = [T0 + 1.0, T0 + 2.0]
    assert figures(ts, end=T0 + 6.5, first=T0)["contained_s"] is None           # 4.5 s of silence < 5
    f = figures(ts, end=T0 + 6.5, first=T0, quiet_s=4.0)
    assert f["contained_s"] == pytest.approx(2.0) and f["out_before_contained"] == 2


def test_a_block_the_wire_agrees_with_contains_the_worm_without_waiting_for_quiet_s():
    ts = [T0 + i / 20 for i in range(4)]                       # 4 out, blocked at the 4th answer, trial ends soon
    f = figures(ts, end=T0 + 0.5, first=T0, block=T0 + 0.151)
    assert f["contained"] and f["contained_by"] == "block" and f["contained_s"] == pytest.approx(0.15)
    assert f["out_before_contained"] == 4
    assert not figures(ts + [T0 + 0.45], end=T0 + 0.5, first=T0, block=T0 + 0.151)["contained"]  # contradicted
    assert figures(ts, end=T0 + 6, first=T0)["contained_by"] == "quiet"


def test_a_worm_that_never_reached_the_wire_is_contained_at_once():
    f = figures([], end=T0 + 30, first=T0)
    assert f["contained"] and f["contained_s"] == 0.0 and f["out_before_contained"] == 0 and f["wire_rate"] is None
    assert figures([], end=T0 + 30)["contained"] is None       # no attempt seen anywhere: nothing to judge


def test_wire_rate_is_what_a_limiter_lets_out_after_the_first_second():
    burst = [T0 + i * 0.001 for i in range(5)]                 # a bucket's burst of 5 at once
    then = [T0 + 1.5 + i * 0.5 for i in range(20)]             # then 2/s
    assert figures(burst + then, end=T0 + 12)["wire_rate"] == pytest.approx(2.0)


def test_answers_in_front_of_a_gateway_mechanism(tmp_path):
    pkts = []
    for i in range(4):                                         # 4 SYNs, 3 answered (RST), one of those twice
        pkts.append(at(syn(SRC, f"198.18.9.{i + 1}", 40000 + i, PORT), i * 0.1))
    for i, t in ((0, 0.01), (1, 0.11), (1, 0.12), (2, 0.21)):
        pkts.append(at(syn(f"198.18.9.{i + 1}", SRC, PORT, 40000 + i, flags="RA"), t))
    pkts.append(at(syn("198.18.9.254", SRC, PORT, 40003, flags="RA"), 0.31))   # the gateway's own address
    ts = answer_times(capture(tmp_path, pkts), src=SRC, scan=SCAN, dport=PORT, unseen={"198.18.9.254"})
    assert ts.tolist() == pytest.approx([T0 + 0.01, T0 + 0.11, T0 + 0.21])


def test_a_block_the_wire_contradicts_is_a_finding():
    ts = [T0 + 0.1, T0 + 0.2, T0 + 0.3, T0 + 2.0]
    f = block_contradicted(ts, T0 + 0.3)
    assert f["code"] == "block_contradicted_by_wire" and f["count"] == 1 and "1.700 s later" in f["message"]
    assert block_contradicted(ts, T0 + 1.9) is None and block_contradicted(ts, None) is None
