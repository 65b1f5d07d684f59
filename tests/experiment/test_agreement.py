"""Measured against predicted: the model fed from a worm log, the worm's attempts on the wire, the verdict."""

from __future__ import annotations

import ipaddress
import json

import numpy as np
import pytest

from orchestrator.analysis.attempts import build_attempts
from orchestrator.experiment import agreement
from orchestrator.experiment.spec import ThrottleSpec
from throttle.model import predict_constant_rate

SRC = "198.18.8.2"
NORMAL = ["198.18.8.254", "198.18.8.253", "198.18.8.252", "198.18.8.251", "198.18.8.250"]


def worm_log(rate: float, n: int, protocol: str = "tcp", t0: float = 100.0) -> list[str]:
    lines = [json.dumps({"event": "start", "t_mono": t0, "t_wall": 1e9 + t0, "params": {"rate": rate}})]
    for i in range(n):
        t = t0 + i / rate
        lines.append(json.dumps({"event": "attempt", "i": i, "t_mono": t, "t_wall": 1e9 + t, "due_mono": t,
                                 "t_done_mono": t + 3.0, "src": SRC, "sport": 40000 + i,
                                 "dst": f"198.18.9.{i % 250 + 2}" if i < 250 else f"198.18.10.{i % 250}",
                                 "dport": 8080, "protocol": protocol, "outcome": "timeout", "generation": 0}))
    return lines


@pytest.mark.parametrize("rate", [5, 20, 100, 1000])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_model_from_a_worm_log_matches_the_constant_rate_prediction(rate, protocol):
    cfg = agreement.throttle_config(ThrottleSpec(), NORMAL)
    m = agreement.model_trial(worm_log(rate, 200), src=SRC, config=cfg, placement="host", protocol=protocol)
    p = predict_constant_rate(rate, protocol=protocol, config=agreement.throttle_config(ThrottleSpec()),
                              initial_working_set=5, placement="host", targets="silent")
    assert m["blocked"] and m["stop_s"] == pytest.approx(p.stop_s, abs=1e-6)
    assert m["out_before_block"] == p.out_before_block
    assert m["queue_curve"][0] == (0.0, 0) and max(q for _, q in m["queue_curve"]) == 100


def test_a_fresh_host_lets_five_out_at_once():
    fresh = agreement.model_trial(worm_log(1000, 200), src=SRC, config=agreement.throttle_config(ThrottleSpec()),
                                  placement="host", protocol="tcp")
    full = agreement.model_trial(worm_log(1000, 200), src=SRC,
                                 config=agreement.throttle_config(ThrottleSpec(), NORMAL), placement="host",
                                 protocol="tcp")
    assert fresh["out_before_block"] == 5 and full["out_before_block"] == 0
    assert fresh["stop_s"] == pytest.approx(full["stop_s"] + 5 / 1000, abs=1e-9)


def test_the_model_ignores_other_sources():
    other = [json.loads(x) for x in worm_log(100, 50)]
    for o in other[1:]:
        o["src"] = "198.18.8.99"
    m = agreement.model_trial([json.dumps(o) for o in other], src=SRC,
                              config=agreement.throttle_config(ThrottleSpec()), placement="host", protocol="tcp")
    assert m == {"stop_s": None, "blocked": False, "out_before_block": 0, "packets_out_before_block": 0,
                 "attempts_before_block": 0, "arrivals": 0, "unseen_arrivals": 0, "queue_curve": []}


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_attempts_the_gateway_takes_for_itself_never_reach_its_throttle(protocol):
    """A scan that hits the gateway's own address is delivered to the gateway, not forwarded through its
    throttle: one queue entry fewer, so the block comes one attempt later — still timed from the worm's
    first attempt, also when that first attempt is the unseen one."""
    cfg = agreement.throttle_config(ThrottleSpec(placement="gateway"), NORMAL)
    log = worm_log(100, 200, protocol)
    every = agreement.model_trial(log, src=SRC, config=cfg, placement="gateway", protocol=protocol)
    gw = agreement.model_trial(log, src=SRC, config=cfg, placement="gateway", protocol=protocol,
                               unseen={"198.18.9.3"})
    # UDP: one datagram; TCP: the SYN and the retransmissions that fall before the attempt ended (3 s)
    assert every["unseen_arrivals"] == 0 and gw["unseen_arrivals"] == (1 if protocol == "udp" else 3)
    assert gw["arrivals"] == every["arrivals"] - gw["unseen_arrivals"]
    assert gw["stop_s"] == pytest.approx(every["stop_s"] + 1 / 100, abs=1e-9)
    first = agreement.model_trial(log, src=SRC, config=cfg, placement="gateway", protocol=protocol,
                                  unseen={"198.18.9.2"})           # the worm's very first target
    assert first["stop_s"] == pytest.approx(gw["stop_s"], abs=1e-9)
    assert first["queue_curve"][0][0] == pytest.approx(0.01)       # its first entry, 10 ms after the first attempt


def _ip(s):
    return int(ipaddress.IPv4Address(s))


def _columns(rows):
    """(ts, src, dst, sport, dport, proto) rows as the capture's columns, for build_attempts."""
    return (np.array([r[0] for r in rows]), np.array([_ip(r[1]) for r in rows], dtype=np.uint32),
            np.array([_ip(r[2]) for r in rows], dtype=np.uint32), np.array([r[3] for r in rows], dtype=np.uint16),
            np.array([r[4] for r in rows], dtype=np.uint16), np.array([r[5] for r in rows], dtype=np.uint8))


def test_wire_counts_split_the_worms_own_attempts_at_the_block():
    rows = [  # (ts, src, dst, sport, dport, proto)
        (10.00, SRC, "198.18.8.254", 50000, 80, 6),         # normal traffic: not the worm's
        (10.10, SRC, "198.18.9.2", 40000, 8080, 6),
        (10.20, SRC, "198.18.9.3", 40001, 8080, 6),
        (11.20, SRC, "198.18.9.3", 40001, 8080, 6),         # its retransmission
        (10.30, "198.18.8.3", "198.18.9.4", 40002, 8080, 6),  # another host
        (10.40, SRC, "198.18.9.5", 40003, 9999, 6),         # another port
        (12.00, SRC, "198.18.9.6", 40004, 8080, 6),         # after the block
    ]
    rows.sort()
    att = build_attempts(*_columns(rows))
    w = agreement.wire_counts(att, src=SRC, scan="198.18.9.0/24", dport=8080, protocol="tcp", block_wall=11.5,
                              first_wall=10.1)
    assert (w["out_before_block"], w["packets_out_before_block"], w["out_after_block"]) == (2, 3, 1)
    assert w["wire_attempts"] == 3 and w["wire_packets"] == 4
    assert agreement.wire_counts(att, src=SRC, scan="198.18.9.0/24", dport=8080, protocol="udp", block_wall=None,
                                 first_wall=None)["wire_attempts"] == 0


@pytest.mark.parametrize("measured, model, ok, reason", [
    ({"stop_s": 1.010, "out_before_block": 1, "out_after_block": 0}, {"stop_s": 1.005, "out_before_block": 1}, True, None),
    ({"stop_s": 1.050, "out_before_block": 1, "out_after_block": 0}, {"stop_s": 1.010, "out_before_block": 1}, False,
     "stopping time 1.05 s vs model 1.01 s"),
    ({"stop_s": 24.9, "out_before_block": 24, "out_after_block": 0}, {"stop_s": 24.2, "out_before_block": 23}, True, None),
    ({"stop_s": 0.1, "out_before_block": 2, "out_after_block": 0}, {"stop_s": 0.1, "out_before_block": 0}, False,
     "attempts out before the block 2 vs model 0"),
    ({"stop_s": 0.1, "out_before_block": 0, "out_after_block": 3}, {"stop_s": 0.1, "out_before_block": 0}, False,
     "3 worm attempt(s) on the wire after the block"),
    ({"stop_s": None, "out_before_block": 60, "out_after_block": 0}, {"stop_s": None, "out_before_block": 60}, True, None),
    ({"stop_s": None, "out_before_block": 60, "out_after_block": 0}, {"stop_s": 30.0, "out_before_block": 60}, False,
     "blocked by the model only"),
])
def test_judge(measured, model, ok, reason):
    v = agreement.judge(measured, model)
    assert v["ok"] is ok
    if reason:
        assert reason in v["reasons"]
    assert v["tolerance"] == {"stop_abs_s": 0.02, "stop_rel": 0.03, "out": 1}


def test_judge_without_a_model_checks_only_leaks():
    assert agreement.judge({"out_after_block": 0}, None)["ok"] is True
    assert agreement.judge({"out_after_block": 1}, None)["ok"] is False


def test_clock_offset_from_the_packets_the_throttle_accepted():
    rows = [(100.30, SRC, "198.18.9.2", 40000, 8080), (101.31, SRC, "198.18.9.3", 40001, 8080),
            (102.29, SRC, "198.18.9.4", 40002, 8080), (102.50, "198.18.8.3", "198.18.9.5", 40003, 8080)]
    att = build_attempts(np.array([r[0] for r in rows]), np.array([_ip(r[1]) for r in rows], dtype=np.uint32),
                         np.array([_ip(r[2]) for r in rows], dtype=np.uint32),
                         np.array([r[3] for r in rows], dtype=np.uint16), np.array([r[4] for r in rows], dtype=np.uint16),
                         np.array([6] * len(rows), dtype=np.uint8))
    verdicts = [{"event": "config", "t_wall": 90.0},
                {"event": "released", "t_wall": 100.0, "src": SRC, "dst": "198.18.9.2", "sport": 40000, "dport": 8080, "proto": "tcp"},
                {"event": "passed", "t_wall": 101.0, "src": SRC, "dst": "198.18.9.3", "sport": 40001, "dport": 8080, "proto": "tcp"},
                {"event": "released", "t_wall": 102.0, "src": SRC, "dst": "198.18.9.4", "sport": 40002, "dport": 8080, "proto": "tcp"},
                {"event": "queued", "t_wall": 102.4, "src": SRC, "dst": "198.18.9.9", "sport": 40009, "dport": 8080, "proto": "tcp"},
                {"event": "released", "t_wall": 103.0, "src": SRC, "dst": "198.18.9.7", "sport": 40007, "dport": 8080, "proto": "tcp"}]
    offset, matched = agreement.clock_offset(att, verdicts, src=SRC)
    assert matched == 3 and offset == pytest.approx(0.30)      # the median of 0.30, 0.31, 0.29
    assert agreement.clock_offset(att, [], src=SRC) == (None, 0)


def test_the_senders_schedule_follows_its_kernel():
    assert agreement.sender_schedule("4\n")[0] == "linux"
    assert agreement.sender_schedule("")[0] == "linux-classic"          # Debian 12's 6.1 kernel: no such sysctl
    assert agreement.sender_schedule("0") == ("linux-classic", "tcp_syn_linear_timeouts 0: 1, 3, 7, 15 s…")
    assert "not measured here" in agreement.sender_schedule("2")[1]


def test_answers_count_what_got_through_a_throttle_the_capture_stands_in_front_of(tmp_path):
    """In front of a gateway or wire throttle the capture sees every SYN the worm sent, so what got through
    is counted from the answers coming back: one per (destination, source port), timed by its first answer,
    split at the block; answers the gateway gives for its own address, other ports, other hosts, data
    segments and SYNs are not answers to the worm's attempts."""
    from orchestrator.analysis.pcap import read_capture
    from tests.analysis.capgen import frames, syn, write_pcap

    t0 = 1_764_050_000.0
    pkts = []
    for ts, s, d, sp, dp, flags in [
        (0.000, SRC, "198.18.9.2", 40000, 8080, "S"),            # the worm's SYNs: not answers
        (0.001, "198.18.9.2", SRC, 8080, 40000, "SA"),           # a target accepts: out
        (0.002, "198.18.9.2", SRC, 8080, 40000, "R"),            # ... and resets the same connection: not again
        (1.000, "198.18.9.7", SRC, 8080, 40001, "RA"),           # the gateway's RST for an empty address: out
        (1.500, "198.18.9.1", SRC, 8080, 40002, "RA"),           # the gateway's own address: never throttled
        (1.600, "198.18.10.5", SRC, 8080, 40003, "RA"),          # outside the scanned range
        (1.700, "198.18.9.8", SRC, 80, 40004, "RA"),             # not the worm's port
        (1.800, "198.18.9.8", "198.18.8.3", 8080, 40005, "RA"),  # to another host
        (1.900, "198.18.9.8", SRC, 8080, 40006, "A"),            # a data segment, not an answer
        (2.003, "198.18.9.9", SRC, 8080, 40007, "RA"),           # within 5 ms of the block: released before it
        (2.500, "198.18.9.10", SRC, 8080, 40008, "RA"),          # after the block: a leak
    ]:
        p = syn(s, d, sp, dp, flags=flags)
        p.time = t0 + ts
        pkts.append(p)
    pk = read_capture(write_pcap(tmp_path / "c.pcap", frames(pkts)))
    got = agreement.answered_counts(pk, src=SRC, scan="198.18.9.0/24", dport=8080, block_wall=t0 + 2.0,
                                    unseen={"198.18.9.1"})
    assert got == {"answered": 4, "out_before_block": 3, "out_after_block": 1, "answer_tolerance_s": 0.005}
    unblocked = agreement.answered_counts(pk, src=SRC, scan="198.18.9.0/24", dport=8080, block_wall=None)
    assert unblocked == {"answered": 5, "out_before_block": 5, "out_after_block": 0}   # .1 counts when seen
    # the trial's evaluation counts them from one streamed pass's answer rows: the same figures
    from orchestrator.analysis.scan import scan_capture
    answers = scan_capture(tmp_path / "c.pcap", answers=True).answers
    assert agreement.answered_counts(answers, src=SRC, scan="198.18.9.0/24", dport=8080, block_wall=t0 + 2.0,
                                     unseen={"198.18.9.1"}) == got
    assert agreement.answered_counts(answers, src=SRC, scan="198.18.9.0/24", dport=8080,
                                     block_wall=None) == unblocked


@pytest.mark.parametrize("throttled,placement,protocol,empty,expect", [
    (True, "gateway", "tcp", "reset", True),
    (True, "wire", "tcp", "reset", True),
    (True, "host", "tcp", "reset", False),        # the capture is after the throttle: SYNs are counted
    (True, "gateway", "udp", "reset", False),     # ICMP errors are rate-limited by the kernel
    (True, "gateway", "tcp", "blackhole", False),  # nothing answers an empty address
    (False, "host", "tcp", "reset", False),       # a baseline: nothing to count through
])
def test_when_attempts_out_are_counted_from_answers(throttled, placement, protocol, empty, expect):
    from types import SimpleNamespace as NS

    from orchestrator.experiment.setup import answers_measurable
    st = NS(contained_by=NS(placement=placement) if throttled else None, exp=NS(spec=NS(gateway_empty=empty)))
    assert answers_measurable(st, NS(protocol=protocol)) is expect


def test_a_vm_sniffers_clock_is_tied_to_the_throttles_by_what_it_passed_at_once():
    """Measured on a VM lab: the sniffer VM's clock ran 0.566 s behind the hypervisor's throttle. The first SYN
    of each connection passed at once is on the wire as the throttle decides; a retransmission passed later
    (its destination released meanwhile) is matched to its first SYN, an outlier the median ignores."""
    rows = [(100.000 + k * 0.01, SRC, f"198.18.10.{250 + k}", 50000 + k, 80, 6) for k in range(5)]
    rows.append((101.000, SRC, "198.18.9.0", 40000, 8080, 6))
    att = build_attempts(*_columns(rows))
    verdicts = [{"event": "passed", "src": SRC, "dst": f"198.18.10.{250 + k}", "sport": 50000 + k, "dport": 80,
                 "proto": "tcp", "t_wall": 100.566 + k * 0.01} for k in range(5)]
    verdicts += [{"event": "passed", "src": SRC, "dst": "198.18.9.0", "sport": 40000, "dport": 8080,
                  "proto": "tcp", "t_wall": 103.0},                      # a retransmission, 2 s after the first
                 {"event": "released", "src": SRC, "dst": "198.18.9.7", "sport": 40007, "dport": 8080,
                  "proto": "tcp", "t_wall": 101.5}]                      # held: says nothing of the clocks
    assert agreement.answer_clock(att, verdicts, src=SRC) == pytest.approx(-0.566, abs=1e-6)
    assert agreement.answer_clock(att, verdicts[:2], src=SRC) is None     # too few to tie the clocks
    assert agreement.answer_tolerance(False) == 0.005 and agreement.answer_tolerance(True) == 0.020
