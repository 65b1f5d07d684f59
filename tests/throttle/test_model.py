"""The model: arrivals from a worm log (with retransmissions), replay, constant-rate prediction, `predict` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from throttle.core import ConfigError, ThrottleConfig
from throttle.model import (
    RETRANSMIT_SCHEDULES,
    Arrival,
    arrivals_from_worm_log,
    predict_constant_rate,
    read_worm_log,
    replay,
)

SRC = "198.18.8.2"
LINUX = RETRANSMIT_SCHEDULES["linux"]


def attempt(i, t, dst, sport, done, protocol="tcp", **kw):
    return {"event": "attempt", "i": i, "t_mono": t, "t_wall": 1e9 + t, "due_mono": t, "t_done_mono": done,
            "src": SRC, "sport": sport, "dst": dst, "dport": 8080, "protocol": protocol, "outcome": "timeout",
            "generation": 0, **kw}


def test_retransmissions_only_while_the_attempt_is_open():
    lines = [json.dumps({"event": "start", "t_mono": 99.0, "t_wall": 1e9, "pid": 1, "generation": 0,
                         "params": {"rate": 20.0}}),
             json.dumps(attempt(0, 100.0, "198.18.8.17", 40000, 100.001)),   # refused at once: no retransmit
             json.dumps(attempt(1, 100.5, "198.18.8.18", 40001, 103.5)),     # held, then timed out at 3 s
             json.dumps(attempt(2, 100.6, "198.18.8.19", 40002, 102.0)),     # released after 1.4 s
             json.dumps(attempt(3, 100.7, "198.18.8.20", 40003, 110.0, protocol="udp")),
             "not json", json.dumps({"event": "attempt", "t_mono": 1.0}), ""]
    arr = arrivals_from_worm_log(lines)
    got = [(round(a.t, 3), a.dst, a.sport, a.retransmit) for a in arr]
    assert got == [(100.0, "198.18.8.17", 40000, 0),
                   (100.5, "198.18.8.18", 40001, 0),
                   (100.6, "198.18.8.19", 40002, 0),
                   (100.7, "198.18.8.20", 40003, 0),
                   (round(100.5 + LINUX[0], 3), "198.18.8.18", 40001, 1),
                   (round(100.6 + LINUX[0], 3), "198.18.8.19", 40002, 1),
                   (round(100.5 + LINUX[1], 3), "198.18.8.18", 40001, 2)]
    assert {a.attempt for a in arr if a.dst == "198.18.8.18"} == {1}
    wl = read_worm_log(lines)
    assert wl.invalid == 2 and len(wl.attempts) == 4 and wl.start["params"]["rate"] == 20.0


def test_other_schedules_and_an_explicit_one():
    lines = [attempt(0, 0.0, "d", 1, 21.0)]
    assert [a.t for a in arrivals_from_worm_log(lines, "windows2000")] == [0.0, 3.0, 9.0]
    assert [a.t for a in arrivals_from_worm_log(lines, "none")] == [0.0]
    assert [round(a.t, 3) for a in arrivals_from_worm_log(lines, "linux")] == [0.0, *LINUX[:8]]
    assert [a.t for a in arrivals_from_worm_log(lines, schedule=[0.5])] == [0.0, 0.5]
    with pytest.raises(ConfigError, match="unknown retransmission schedule 'bsd'"):
        arrivals_from_worm_log(lines, "bsd")


def test_linux_schedule_is_linear_then_exponential():
    # what was measured on this kernel (tests/throttle/test_retransmit_schedule.py measures it again)
    nominal = [1, 2, 3, 4, 5, 7, 11, 19, 35]
    assert len(LINUX) == len(nominal)
    for got, want in zip(LINUX, nominal, strict=True):
        assert want <= got < want + 0.6


def test_replay_reports_block_out_count_and_queue_curve():
    cfg = ThrottleConfig(working_set_size=2, delay_queue_limit=3)
    arr = [Arrival(0.1 * i, SRC, f"d{i}", 1000 + i, attempt=i) for i in range(8)]
    rep = replay(arr, cfg)
    sr = rep.sources[SRC]
    # d0, d1 pass; d2..d4 queue (t 0.2..0.4); d5 at 0.5 would be the 4th entry: block
    assert sr.blocked_at == pytest.approx(0.5) and sr.stop_s == pytest.approx(0.5)
    assert sr.out_before_block == 2 and sr.packets_out_before_block == 2
    assert sr.arrivals_before_block == 6 and sr.attempts_before_block == 6
    assert [(round(t, 3), n) for t, n in sr.queue_curve] == [(0.0, 0), (0.2, 1), (0.3, 2), (0.4, 3), (0.5, 3),
                                                              (0.5, 2), (0.5, 1), (0.5, 0)]
    assert sr.counts == {"passed": 2, "queued": 3, "blocked": 1, "dropped": 5}


def test_replay_host_placement_suppresses_retransmissions_of_held_syns():
    cfg = ThrottleConfig(working_set_size=1, release_period_s=5.0)
    arr = [Arrival(0.0, SRC, "d0", 1, attempt=0), Arrival(0.1, SRC, "d1", 2, attempt=1),
           Arrival(1.1, SRC, "d1", 2, attempt=1, retransmit=1), Arrival(2.1, SRC, "d1", 2, attempt=1, retransmit=2)]
    gw = replay(arr, cfg, placement="gateway").sources[SRC]
    host = replay(arr, cfg, placement="host").sources[SRC]
    assert gw.counts["queued"] == 3 and gw.suppressed_retransmits == 0
    assert host.counts["queued"] == 1 and host.suppressed_retransmits == 2
    with pytest.raises(ConfigError, match="unknown placement"):
        replay(arr, cfg, placement="switch")
    with pytest.raises(ValueError, match="not sorted"):
        replay(list(reversed(arr)), cfg)


def test_prediction_without_retransmissions_by_hand():
    # 5 pass at once (t 0..0.2); entries from 0.25 at 20/s; releases at 1.25, 2.25, …; the arrival at 5.5 s
    # finds 105 entries minus 5 releases = 100 queued: it blocks. Out: 5 + 5 releases.
    p = predict_constant_rate(20, retransmit="none")
    assert p.stop_s == pytest.approx(5.5) and p.out_before_block == 10 and p.attempts_before_block == 111
    # a full working set at 200/s: the 101st attempt (t = 0.5 s) blocks and nothing got out
    p = predict_constant_rate(200, retransmit="none", initial_working_set=5)
    assert p.stop_s == pytest.approx(0.5) and p.out_before_block == 0
    # UDP has no retransmissions, whatever the schedule says
    assert predict_constant_rate(20, protocol="udp").stop_s == pytest.approx(5.5)
    # below one new destination per period a fresh working set never fills the queue
    p = predict_constant_rate(0.9, retransmit="none", horizon_s=300)
    assert p.stop_s is None and p.out_before_block == 270 and p.attempts_before_block == 271


def test_prediction_with_retransmissions():
    none = predict_constant_rate(20, retransmit="none")
    lin = predict_constant_rate(20, retransmit="linux")
    conn = predict_constant_rate(20, retransmit="linux", config=ThrottleConfig(policy="connections"))
    host = predict_constant_rate(20, retransmit="linux", placement="host")
    assert lin.stop_s < none.stop_s
    assert lin.arrivals_before_block > lin.attempts_before_block       # retransmissions were counted
    assert conn.stop_s == pytest.approx(none.stop_s)                     # joined, not counted
    assert host.stop_s == pytest.approx(none.stop_s)                     # suppressed by the sender's stack
    # the paper's guest: Windows 2000, 21 s connect timeout, working set full from normal use
    w2k = predict_constant_rate(20, retransmit="windows2000", connect_timeout_s=21.0, initial_working_set=5)
    assert w2k.stop_s < 5.0 and w2k.packets_out_before_block <= 5


def test_prediction_agrees_with_replaying_an_equivalent_worm_log():
    # silent targets: every attempt stays open until its 3 s timeout, so the worm log is known in advance
    rate = 12.0
    lines = [attempt(i, i / rate, f"198.18.{9 + i // 250}.{i % 250}", 30000 + i, i / rate + 3.0) for i in range(400)]
    rep = replay(arrivals_from_worm_log(lines, "linux"))
    sr = rep.sources[SRC]
    p = predict_constant_rate(rate, retransmit="linux", targets="silent")
    assert sr.stop_s == pytest.approx(p.stop_s)
    assert sr.out_before_block == p.out_before_block
    assert sr.arrivals_before_block == p.arrivals_before_block


@pytest.mark.parametrize("kw, msg", [({"rate": 0}, "rate must be"), ({"rate": 5, "protocol": "icmp"}, "protocol"),
                                     ({"rate": 5, "initial_working_set": 6}, "0..5"),
                                     ({"rate": 5, "retransmit": "macos"}, "schedule"),
                                     ({"rate": 5, "targets": "maybe"}, "targets")])
def test_prediction_refuses_bad_parameters(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        predict_constant_rate(**kw)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "throttle", *args], capture_output=True, text=True, timeout=60)


def test_predict_cli_json():
    r = run_cli("predict", "--rate", "20", "--retransmit", "none", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["stop_s"] == pytest.approx(5.5) and d["out_before_block"] == 10
    assert d["params"]["retransmit"] == "none" and d["params"]["initial_state"] == "fresh"
    r = run_cli("predict", "--rate", "200", "--initial-working-set", "5", "--working-set", "5", "--period", "1",
                "--limit", "100", "--protocol", "udp", "--policy", "connections")
    assert r.returncode == 0 and "blocked after 0.500 s; 0 attempts out" in r.stdout


@pytest.mark.parametrize("args, msg", [
    (["--rate", "20", "--working-set", "0"], "working_set_size must be >= 1"),
    (["--rate", "20", "--period", "0"], "release_period_s must be a finite number > 0"),
    (["--rate", "20", "--limit", "-1"], "delay_queue_limit must be >= 0"),
    (["--rate", "20", "--policy", "sessions"], "unknown policy 'sessions'"),
    (["--rate", "-3"], "rate must be a number > 0"),
    (["--rate", "x"], "not a number"),
])
def test_predict_cli_bad_input_is_one_clear_line(args, msg):
    r = run_cli("predict", *args)
    assert r.returncode == 2
    assert msg in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_bug_in_a_verb_is_one_line_and_debug_shows_its_traceback(capsys, monkeypatch):
    from throttle import cli

    def broken(*a, **k):
        raise ZeroDivisionError("float division by zero")
    monkeypatch.setattr(cli, "predict_constant_rate", broken)
    line = "throttle predict: internal error: ZeroDivisionError: float division by zero (a bug; --debug shows " \
           "the traceback)\n"
    assert cli.main(["predict", "--rate", "20"]) == 1
    assert capsys.readouterr().err == line
    assert cli.main(["predict", "--rate", "20", "--debug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in broken" in err and err.endswith(line)
