"""Benign traffic beside the worm (orchestrator.analysis.wormbenign): the split at the worm's first attempt, the
williamson model of the benign schedule and the worm together, the summary's benign columns; and the worm's
stopping figures counting only the worm's port on a capture that holds both."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from orchestrator.analysis import wormbenign as wb
from orchestrator.analysis.attempts import build_attempts
from orchestrator.experiment import agreement

SRC = "198.18.8.2"
PARAMS = {"working_set_size": 2, "release_period_s": 1.0, "delay_queue_limit": 4, "policy": "packets"}


def conn(i, t, dst):
    return {"event": "conn", "i": i, "t_sched": t, "due_mono": 100.0 + t, "due_wall": 1000.0 + t, "src": SRC,
            "sport": 41000 + i, "dst": dst, "dport": 8081, "protocol": "tcp", "outcome": "ok",
            "t_established_mono": 100.0 + t + 0.001, "t_done_mono": 100.0 + t + 0.001}


def worm_attempt(i, t, dst):
    return {"event": "attempt", "i": i, "t_mono": 100.0 + t, "t_wall": 1000.0 + t, "src": SRC, "dst": dst,
            "sport": 50000 + i, "dport": 8080, "protocol": "tcp", "t_done_mono": 100.0 + t + 0.001}


def test_the_split_is_at_the_worms_first_attempt():
    rows = [{"i": i, "due_wall": 1000.0 + t} for i, t in enumerate((0.0, 1.0, 4.9, 5.0, 6.0))]
    before, after = wb.split(rows, 1005.0)
    assert [r["i"] for r in before] == [0, 1, 2] and [r["i"] for r in after] == [3, 4]
    assert wb.split(rows, None) == (rows, [])


def test_benign_destinations_fill_the_working_set_the_worm_then_meets():
    # two benign servers a and b fill the working set (size 2); the worm's first target is a (a hit: out at once),
    # its next ones new: queued, the queue of 4 fills on the 5th new one, and the host is blocked
    conns = [conn(0, 0.0, "a"), conn(1, 0.5, "b")]
    worm = [worm_attempt(k, 2.0 + 0.01 * k, d) for k, d in enumerate(["a", "w1", "w2", "w3", "w4", "w5"])]
    m = wb.combined_model(conns, worm, PARAMS, src=SRC)
    assert m["blocked"] and m["stop_s"] == pytest.approx(0.05)          # the 5th new destination, 50 ms in
    assert m["out_before_block"] == 1                                     # a, from the working set
    assert [m["per_conn"][i]["fate"] for i in (0, 1)] == ["passed", "passed"]


def test_a_benign_connection_after_the_worm_waits_behind_it_or_is_dropped():
    conns = [conn(0, 0.0, "a"), conn(1, 0.5, "b"), conn(2, 2.5, "c"), conn(3, 2.6, "a")]
    worm = [worm_attempt(k, 2.0 + 0.1 * k, f"w{k}") for k in range(3)]   # three new ones: queued, no block
    m = wb.combined_model(conns, worm, PARAMS | {"delay_queue_limit": 100}, src=SRC)
    per = m["per_conn"]
    assert not m["blocked"] and m["out_before_block"] == 3             # all three released, one a period
    assert per[2]["fate"] == "released" and per[2]["queued_behind"] == 3
    assert per[2]["wire_s"] == pytest.approx(6.0 - 2.5)                 # behind three: the 4th release, at 6.0
    assert per[3]["fate"] == "passed" and per[3]["wire_s"] == 0.0       # a: still in the working set at 2.6


def test_benign_figures_before_and_during_the_attack():
    rows = [{"i": 0, "wire_s": 0.001, "outcome": "ok"}, {"i": 1, "wire_s": 1.0, "outcome": "ok"},
            {"i": 2, "wire_s": 3.0, "outcome": "ok"}, {"i": 3, "wire_s": None, "outcome": "timeout"}]
    f = wb.figures(rows[:2], rows[2:], 1.0)
    assert f["benign_connections"] == 4 and (f["benign_before"], f["benign_after"]) == (2, 2)
    assert f["benign_p99_s"] == pytest.approx(1.0, abs=0.02) and f["benign_p99_attack_s"] == pytest.approx(3.0)
    assert f["benign_dropped"] == 1 and f["benign_rate"] == 1.0
    model = {"per_conn": {0: {"wire_s": 0.0}, 1: {"wire_s": 1.0}, 2: {"wire_s": 3.0}, 3: {"wire_s": None}}}
    mf = wb.model_figures(model, rows[:2], rows[2:])
    assert mf["benign_p99_s_model"] == pytest.approx(1.0, abs=0.02) and mf["benign_p99_attack_s_model"] == 3.0


def test_row_figures_average_repeats_and_agree_only_when_every_repeat_did():
    t = {"measured": {"benign_rate": 1.0, "benign_connections": 10, "benign_p50_s": 0.0, "benign_p99_s": 1.0,
                      "benign_p99_attack_s": 3.0, "benign_dropped": 2},
         "model": {"benign_p99_s_model": 1.0}, "agreement": {"benign": {"ok": True}}}
    u = t | {"measured": t["measured"] | {"benign_p99_s": 2.0}, "agreement": {"benign": {"ok": False}}}
    r = wb.row_figures([t, u])
    assert (r["benign_connections"], r["benign_dropped"], r["benign_p99_s"], r["benign_agree"]) == (20, 4, 1.5, False)


def test_the_worms_wire_counts_leave_the_workloads_ports_out():
    ip = ipaddress.IPv4Address
    rows = sorted([  # (ts, dst, sport, dport): the worm's 8080 beside the workload's 8081 on the same targets
        (9.0, "198.18.9.2", 41000, 8081), (9.5, "198.18.9.3", 41001, 8081),       # benign, before the worm
        (10.0, "198.18.9.2", 50000, 8080), (10.05, "198.18.9.3", 50001, 8080),    # the worm
        (10.1, "198.18.9.4", 41002, 8081), (10.2, "198.18.9.5", 50002, 8080),
        (11.0, "198.18.9.6", 41003, 8081),                                         # benign after the block
    ])
    att = build_attempts(np.array([r[0] for r in rows]), np.full(len(rows), int(ip(SRC)), dtype=np.uint32),
                         np.array([int(ip(r[1])) for r in rows], dtype=np.uint32),
                         np.array([r[2] for r in rows], dtype=np.uint16), np.array([r[3] for r in rows], dtype=np.uint16),
                         np.full(len(rows), 6, dtype=np.uint8))
    w = agreement.wire_counts(att, src=SRC, scan="198.18.9.0/24", dport=8080, protocol="tcp", block_wall=10.5,
                              first_wall=10.0)
    assert (w["wire_attempts"], w["out_before_block"], w["out_after_block"]) == (3, 3, 0)
    assert w["wire_first"] == 10.0


def test_benign_csv_names_each_connections_phase_as_the_split_does(tmp_path):
    from orchestrator.experiment.wormbenign import write_rows
    rows = [{"i": 0, "due_wall": 99.0, "wire_s": 0.5}, {"i": 1, "due_wall": 100.0, "wire_s": None},
            {"i": 2, "due_wall": None}]
    write_rows(tmp_path / "benign.csv", rows, 100.0)
    head, *lines = (tmp_path / "benign.csv").read_text().splitlines()
    assert head.startswith("i,t_sched,") and head.endswith(",phase")
    assert [(ln.split(",")[0], ln.split(",")[-1]) for ln in lines] == [("0", "before"), ("1", "attack"), ("2", "attack")]
    assert lines[0].split(",")[head.split(",").index("wire_s")] == "0.500000"
    write_rows(tmp_path / "alone.csv", rows[:1], None)                        # no worm attempt: all before
    assert (tmp_path / "alone.csv").read_text().splitlines()[1].endswith(",before")
