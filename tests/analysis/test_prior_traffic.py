"""Analysis that agrees with the runner: the host's own traffic before the worm (the runner's normal traffic
and its retransmissions) is left out of the wire counts and raises no "not in the worm log" warning; a capture
"ended early" only when the throttle log shows packets for the wire after its end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestrator.analysis.attempts import build_attempts
from orchestrator.analysis.logs import parse_throttle_log, parse_worm_log
from orchestrator.analysis.metrics import compute_metrics
from tests.analysis.test_metrics import (
    BLOCK_T,
    OFF,
    SPAN,
    A,
    codes,
    host_wire,
    jl,
    tev,
    throttle_events,
    worm_lines,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "tie-udp-2ps"
NORMAL = [f"198.18.10.{254 - i}" for i in range(3)]


def normal_rows(times: list[float]) -> list[tuple[float, str, int]]:
    """The normal traffic's SYNs (mono times): to 198.18.10.254…252, port 80, one source port each."""
    return [(t, d, 50000 + k) for t in times for k, d in enumerate(NORMAL)]


def with_normal(times: list[float], throttle_t: float | None = None):
    base = [(t, f"198.18.9.{10 + i}", 40000 + i, 8080) for t, i in host_wire()]
    rows = sorted(base + [(t, d, sp, 80) for t, d, sp in normal_rows(times)])
    att = build_attempts([r[0] + OFF for r in rows], [A] * len(rows), [r[1] for r in rows], [r[2] for r in rows],
                         [r[3] for r in rows], ["tcp"] * len(rows))
    evs = throttle_events()
    if throttle_t is not None:          # the throttle passed them (the working set had room): say so in its log
        extra = []
        for t in sorted(set(times)):
            for k, d in enumerate(NORMAL):
                e = tev("passed", t - 0.0005, None, 0)
                e.update(dst=d, sport=50000 + k, dport=80, proto="tcp")
                extra.append(e)
        evs = [evs[0], *extra, *evs[1:]]
    return compute_metrics(att, parse_worm_log(worm_lines()), parse_throttle_log(jl(*evs)), capture_span=SPAN)


def test_normal_traffic_just_before_the_worm_and_its_retransmission_after_are_the_hosts_own():
    # 0.1 s before the worm's first attempt (within the matching tolerance), retransmitted after it started
    res = with_normal([799.9, 800.45], throttle_t=799.9)
    assert codes(res, "warning") == {} and codes(res, "error") == {}
    f = next(f for f in res.findings if f.code == "prior_traffic")
    assert f.severity == "info" and f.count == 3 and f.by_source == {A: 3}
    assert "left out of the wire counts" in f.message
    (m,) = res.sources
    assert m.wire_attempts_before_block == 3 and m.wire_new_attempts_before_block == 3   # the worm's alone
    assert m.wire_attempts == 3 and m.wire_distinct_destinations == 3


def test_the_hosts_own_packets_after_the_block_are_still_a_leak():
    res = with_normal([799.9, 800.9], throttle_t=799.9)          # retransmitted 0.3 s after the block
    assert codes(res, "error")["wire_after_block"] == 3


def test_without_the_rule_they_would_double_the_count():
    res = with_normal([799.9], throttle_t=799.9)
    assert res.sources[0].wire_attempts_before_block == 3        # not 6


def test_traffic_first_seen_after_the_worm_started_is_still_a_stranger():
    res = with_normal([800.35])                                  # not before the first attempt: not the host's
    assert codes(res)["wire_attempt_not_in_worm_log"] == 3 and "prior_traffic" not in codes(res)


def test_a_quiet_wire_before_the_block_is_no_early_end_with_the_sniffer_after():
    # the last packet the throttle let out (800.55) is inside the capture; the capture's last packet is well
    # before the block at 800.601 + 5 s: nothing could be on the wire in between
    late = [{**e, "t_mono": e["t_mono"] + 5, "t_wall": e["t_wall"] + 5} if e["event"] in ("blocked", "dropped")
            else e for e in throttle_events()]
    res = compute_metrics(build_attempts([t + OFF for t, _ in host_wire()], [A] * 3,
                                         [f"198.18.9.{10 + i}" for _, i in host_wire()],
                                         [40000 + i for _, i in host_wire()], [8080] * 3, ["tcp"] * 3),
                          parse_worm_log(worm_lines()), parse_throttle_log(jl(*late)),
                          capture_span=(OFF + 799.0, OFF + 801.0))
    assert "capture_ended_early" not in codes(res)
    assert res.sources[0].blocked_wall == BLOCK_T + 5 + OFF


def test_an_early_end_with_packets_let_out_after_it_is_said():
    evs = throttle_events()
    evs.append(tev("released", BLOCK_T - 0.01, 3, 2))        # let out just before the block, after the end
    res = compute_metrics(build_attempts([t + OFF for t, _ in host_wire()], [A] * 3,
                                                            [f"198.18.9.{10 + i}" for _, i in host_wire()],
                                                            [40000 + i for _, i in host_wire()], [8080] * 3,
                                                            ["tcp"] * 3),
                          parse_worm_log(worm_lines()), parse_throttle_log(jl(*evs)),
                          capture_span=(OFF + 799.0, OFF + 800.2))
    f = next(f for f in res.findings if f.code == "capture_ended_early")
    assert f.severity == "warning" and f.by_source == {A: 2}       # the release at 800.55 and this one
    assert "the throttle log has 2 packet(s) for the wire after that end" in f.message


def test_testbed_analyse_on_a_real_trial_agrees_with_the_runner_and_warns_of_nothing():
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "analyse", str(FIXTURE / "capture.pcap"),
                          "--throttle-log", str(FIXTURE / "throttle.jsonl"), "--worm-log", str(FIXTURE / "worm.jsonl"),
                          "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    trial = json.loads((FIXTURE / "trial.json").read_text())
    assert [f["code"] for f in d["findings"] if f["severity"] != "info"] == []
    prior = next(f for f in d["findings"] if f["code"] == "prior_traffic")
    assert prior["count"] == len(trial["initial_working_set"]) == 5           # the normal traffic's 5 flows
    assert {e["dst"] for e in prior["examples"]} == set(trial["initial_working_set"])
    (s,) = d["metrics"]["sources"]
    assert s["wire_attempts_before_block"] == trial["measured"]["out_before_block"] == 98
