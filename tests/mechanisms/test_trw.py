"""TRW's core, model, rules and CLI without root (the daemon's own test is test_trw_daemon.py)."""

from __future__ import annotations

import json
import math
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechanisms.trw import cli
from mechanisms.trw.core import ConfigError, Trw, TrwConfig
from mechanisms.trw.daemon import DaemonOptions, event_line, parse_packet
from mechanisms.trw.model import predict_constant_rate, replay_attempts, replay_worm_log
from mechanisms.trw.rules import TrwRuleSpec

S = "198.18.8.2"


def test_the_papers_arithmetic_blocks_after_four_failures():
    c = TrwConfig()
    assert c.upper == pytest.approx(math.log(99)) and c.step_failure == pytest.approx(math.log(4))
    assert c.upper / c.step_failure == pytest.approx(3.3147, abs=1e-4)
    assert c.failures_to_block() == 4
    t = Trw(c)
    for i in range(4):
        assert t.syn(S, f"198.18.9.{i}", 1000 + i, 80, now=i).verdict == "pass"
        ev = t.answer(S, f"198.18.9.{i}", "reset", now=i + 0.1)
        assert [e.event for e in ev] == (["outcome", "blocked"] if i == 3 else ["outcome"])
    assert t.blocked(S)
    d = t.syn(S, "198.18.9.1", 2000, 80, now=5)       # even a destination already tried
    assert d.verdict == "drop" and d.events[0].reason == "blocked"
    assert t.syn("198.18.8.3", "198.18.9.1", 2000, 80, now=5).verdict == "pass"   # per source


def test_success_walks_back_and_benign_restarts_the_walk():
    t = Trw()
    for i in range(3):                          # 3 successes: ln Λ = 3 ln(1/4) = -4.16 > ln(1/99) = -4.60
        t.syn(S, f"10.0.0.{i}", now=i)
        t.answer(S, f"10.0.0.{i}", "established", now=i)
    assert t.status()[S]["llr"] == pytest.approx(3 * math.log(0.25))
    t.syn(S, "10.0.0.9", now=4)
    ev = t.answer(S, "10.0.0.9", "established", now=4)
    assert [e.event for e in ev] == ["outcome", "benign"] and t.status()[S]["llr"] == 0.0
    for i in range(4):                          # from Λ = 1 again: four failures block
        t.syn(S, f"10.0.1.{i}", now=5)
        t.answer(S, f"10.0.1.{i}", "unreachable", now=5)
    assert t.blocked(S)


def test_only_first_contacts_are_observations_and_timeouts_fail():
    t = Trw(TrwConfig(timeout_s=3.0))
    assert t.syn(S, "10.0.0.1", 1, now=0).events[0].reason == "first-contact"
    assert t.syn(S, "10.0.0.1", 1, now=1).events[0].reason == "pending"       # a retransmission
    assert t.next_due() == 3.0
    assert t.advance(2.999) == []
    ev = t.advance(3.0)
    assert [(e.event, e.reason, e.t) for e in ev] == [("outcome", "timeout", 3.0)]
    assert t.syn(S, "10.0.0.1", 2, now=4).events[0].reason == "known"
    assert t.answer(S, "10.0.0.1", "reset", now=4) == []                     # not pending: no observation
    assert t.answer("198.18.0.9", "10.0.0.1", "reset", now=4) == []          # never seen: ignored
    with pytest.raises(ValueError, match="unknown outcome"):
        t.answer(S, "10.0.0.1", "maybe", now=4)
    t.reset(now=5)
    assert t.status() == {}


@pytest.mark.parametrize("kw, msg", [
    ({"theta0": 1.0}, "theta0 must be a number strictly between 0 and 1"),
    ({"theta1": 0.0}, "theta1 must be"),
    ({"theta1": 0.9}, "theta1 must be below theta0"),
    ({"alpha": 0.99, "beta": 0.5}, "alpha must be below beta"),
    ({"alpha": True}, "alpha must be"),
    ({"timeout_s": 0}, "timeout_s must be a finite number > 0"),
    ({"timeout_s": float("nan")}, "timeout_s must be"),
])
def test_bad_parameters_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        TrwConfig(**kw)


configs = st.builds(lambda t0, t1, a, b: TrwConfig(theta0=max(t0, t1) + 0.01, theta1=min(t0, t1),
                                                   alpha=min(a, b), beta=max(a, b) + 0.001),
                    st.floats(0.02, 0.98), st.floats(0.01, 0.97), st.floats(0.001, 0.49), st.floats(0.5, 0.998))


@given(configs)
def test_all_failures_block_after_failures_to_block(c):
    t = Trw(c)
    n = 0
    for i in range(10_000):
        t.syn(S, f"d{i}", now=i)
        n += 1
        if any(e.event == "blocked" for e in t.answer(S, f"d{i}", "reset", now=i)):
            break
    assert n == c.failures_to_block() == math.ceil(c.upper / c.step_failure - 1e-12)
    assert (n - 1) * c.step_failure < c.upper <= n * c.step_failure + 1e-9


@settings(max_examples=60)
@given(configs, st.floats(0.5, 500), st.floats(0, 2), st.lists(st.sampled_from(
    ["refused", "connected", "timeout", "unreachable"]), min_size=1, max_size=80))
def test_the_model_is_the_core_walking_the_logged_outcomes(c, rate, rtt, outcomes):
    atts = [{"t_mono": i / rate, "t_done_mono": i / rate + (c.timeout_s if o == "timeout" else rtt),
             "src": S, "dst": f"198.18.9.{i}", "sport": 30000 + i, "dport": 80, "outcome": o}
            for i, o in enumerate(outcomes)]
    sp = replay_attempts(atts, c).sources[S]
    assert sp.attempts == len(atts)
    if sp.blocked_at is None:
        assert sp.out_before_block == len(atts)
    else:
        # every attempt sent before the block left, none after it; the block came with an observation
        assert sp.out_before_block == sum(a["t_mono"] < sp.blocked_at for a in atts) or \
            sp.out_before_block == sum(a["t_mono"] <= sp.blocked_at for a in atts)
        assert sp.walk[-1][0] == sp.blocked_at and sp.walk[-1][1] >= c.upper - 1e-9
        assert sp.block_attempt is not None and atts[sp.block_attempt]["outcome"] != "connected"
    # the walk: ln Λ moves by one step per observation, from 0 again after a benign verdict
    llr = 0.0
    for e in replay_attempts(atts, c).events:
        if e.event == "outcome":
            llr += c.step_success if e.reason == "established" else c.step_failure
            assert e.llr == pytest.approx(llr, abs=1e-9)
        elif e.event == "benign":
            assert llr <= c.lower + 1e-9
            llr = 0.0


@given(st.floats(1, 5000))
def test_a_resetting_lab_blocks_every_rate_after_four_attempts(rate):
    p = predict_constant_rate(rate, answer="reset", rtt_s=0.0, max_attempts=50)
    assert (p.out_before_block, p.block_attempt) == (4, 3)
    assert p.stop_s == pytest.approx(3 / rate)


def test_silent_targets_block_one_timeout_after_the_fourth_attempt():
    p = predict_constant_rate(20, answer="timeout", max_attempts=200)
    assert p.stop_s == pytest.approx(3.15) and p.out_before_block == 63     # every SYN sent by 3.15 s
    assert predict_constant_rate(20, answer="established", max_attempts=100).stop_s is None


def test_replay_of_a_worm_log_reads_lines_and_skips_bad_ones():
    lines = [json.dumps({"event": "start", "t_mono": 0, "t_wall": 0, "params": {}}), "not json"]
    for i in range(6):
        lines.append(json.dumps({"event": "attempt", "i": i, "t_mono": 1 + i * 0.05, "t_done_mono": 1.0001 + i * 0.05,
                                 "src": S, "dst": f"198.18.9.{i}", "sport": 4000 + i, "dport": 80,
                                 "protocol": "tcp", "outcome": "refused"}))
    rep = replay_worm_log(lines)
    sp = rep.sources[S]
    assert (sp.block_attempt, sp.out_before_block, sp.failures) == (3, 4, 4)
    assert sp.stop_s == pytest.approx(0.1501, abs=1e-6)


def _ip(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, socket.inet_aton(src),
                       socket.inet_aton(dst)) + payload


def _tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 0, 0, 0)


def test_parse_packet_tells_syns_from_answers():
    assert parse_packet(_ip(6, "1.1.1.1", "2.2.2.2", _tcp(1000, 80, 0x02))) == ("syn", "1.1.1.1", "2.2.2.2", 1000, 80)
    assert parse_packet(_ip(6, "2.2.2.2", "1.1.1.1", _tcp(80, 1000, 0x12))) == \
        ("established", "1.1.1.1", "2.2.2.2", 1000, 80)
    assert parse_packet(_ip(6, "2.2.2.2", "1.1.1.1", _tcp(80, 1000, 0x14))) == ("reset", "1.1.1.1", "2.2.2.2", 1000, 80)
    inner = _ip(6, "1.1.1.1", "2.2.2.2", _tcp(1000, 80, 0x02))
    icmp = bytes([3, 1, 0, 0, 0, 0, 0, 0]) + inner
    assert parse_packet(_ip(1, "3.3.3.3", "1.1.1.1", icmp)) == ("unreachable", "1.1.1.1", "2.2.2.2", 1000, 80)
    assert parse_packet(_ip(6, "1.1.1.1", "2.2.2.2", _tcp(1000, 80, 0x10))) is None      # a bare ACK
    assert parse_packet(_ip(17, "1.1.1.1", "2.2.2.2", b"\0" * 8)) is None
    assert parse_packet(b"\x60" + b"\0" * 39) is None and parse_packet(b"") is None


def test_event_lines_are_json_in_the_event_log_schema():
    t = Trw()
    e = t.syn(S, "198.18.9.1", 4000, 80, now=1).events[0]
    d = json.loads(event_line(e, 1.5, 1700000000.0))
    assert d == {"event": "passed", "t_mono": 1.5, "t_wall": 1700000000.0, "src": S, "dst": "198.18.9.1",
                 "sport": 4000, "dport": 80, "proto": "tcp", "reason": "first-contact", "llr": 0.0}


def test_rules_queue_syns_out_and_answers_in():
    host = TrwRuleSpec("host", 3, None, False, 42).lines()
    assert host[0] == ":WTB-TRW - [0:0]"
    assert host[1].startswith("-A WTB-TRW -p tcp --syn -m conntrack --ctstate NEW") and "--queue-bypass" in host[1]
    assert all('--comment "wtb-trw pid=42 q=3 mode=host"' in ln for ln in host[1:])
    assert host[-2].startswith("-I OUTPUT 1 ! -o lo -m conntrack --ctdir ORIGINAL")
    assert host[-1].startswith("-I INPUT 1 ! -i lo -m conntrack --ctdir REPLY")
    closed = TrwRuleSpec("host", 0, "eth1", True).lines()
    assert "--queue-bypass" not in closed[1] and all("--queue-bypass" in ln for ln in closed[2:5])
    assert "-o eth1" in closed[-2] and "-i eth1" in closed[-1]
    gw = TrwRuleSpec("gateway").lines()
    assert gw[-2].startswith("-I FORWARD 1 ") and gw[-1].startswith("-I OUTPUT 1 ! -o lo ")


@pytest.mark.parametrize("kw, msg", [({"mode": "wire"}, "unknown mode 'wire'; known: host, gateway"),
                                     ({"mode": "host", "queue_num": 70000}, "queue number must be in 0..65535"),
                                     ({"mode": "gateway", "interface": "eth0"}, "--interface is for host mode"),
                                     ({"mode": "host", "interface": "x" * 20}, "bad interface name")])
def test_daemon_options_are_checked_before_anything_is_acquired(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        DaemonOptions(**kw).validate()


def test_cli_predict_and_replay(capsys, tmp_path):
    assert cli.main(["predict", "--rate", "20"]) == 0
    assert "by the outcome of attempt 4; 4 attempts out" in capsys.readouterr().out
    assert cli.main(["predict", "--rate", "200", "--answer", "timeout", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stop_s"] == pytest.approx(3.015)
    log = tmp_path / "w.jsonl"
    log.write_text("".join(json.dumps({"event": "attempt", "t_mono": i, "t_done_mono": i + 0.01, "src": S,
                                       "dst": f"10.0.0.{i}", "outcome": "refused"}) + "\n" for i in range(5)))
    assert cli.main(["replay", str(log)]) == 0
    assert capsys.readouterr().out == f"{S}: blocked 3.010 s after its first attempt, by the outcome of " \
                                      "attempt 4; 4 attempts out\n"


@pytest.mark.parametrize("argv, code, msg", [
    (["predict", "--rate", "20", "--theta1", "0.9"], 2, "trw predict: error: theta1 must be below theta0"),
    (["predict", "--rate", "-1"], 2, "rate must be a number in (0, 1e6)"),
    (["predict", "--rate", "5", "--answer", "maybe"], 2, "unknown answer 'maybe'"),
    (["replay", "/nonexistent/worm.jsonl"], 1, "trw replay: error: cannot read /nonexistent/worm.jsonl"),
    (["run", "--mode", "wire"], 2, "trw run: error: unknown mode 'wire'"),
    (["status", "--control", "@wtb-trw-test-nobody"], 1, "trw status: error: no TRW daemon is listening on @wtb-trw-test-nobody"),
])
def test_cli_bad_input(capsys, argv, code, msg):
    assert cli.main(argv) == code
    assert msg in capsys.readouterr().err


def test_cli_bad_argument_types_exit_2(capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["predict", "--rate", "x"])
    assert ex.value.code == 2 and "not a number: 'x'" in capsys.readouterr().err
