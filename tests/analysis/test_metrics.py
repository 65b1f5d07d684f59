"""Stopping-speed metrics and cross-checks on synthetic timelines with known answers."""

from __future__ import annotations

import json

import pytest

from orchestrator.analysis.attempts import build_attempts
from orchestrator.analysis.figures import MetricsSettings
from orchestrator.analysis.logs import parse_throttle_log, parse_worm_log
from orchestrator.analysis.metrics import compute_metrics

OFF = 1_764_049_200.0  # t_wall - t_mono on the lab's kernel
A = "198.18.8.2"
T_FIRST = 800.0
N = 10
BLOCK_T = 800.601
SPAN = (OFF + 799.0, OFF + 805.0)


def dst(i: int) -> str:
    return f"198.18.9.{10 + i}"


def t_attempt(i: int) -> float:
    return T_FIRST + 0.1 * i


def jl(*objs) -> list[str]:
    return [json.dumps(o) for o in objs]


def worm_lines(n: int = N, proto: str = "tcp", src: str = A, off: float = OFF) -> list[str]:
    lines = [{"event": "start", "t_mono": T_FIRST - 0.05, "t_wall": T_FIRST - 0.05 + off, "pid": 1,
              "generation": 0, "params": {"rate": 10.0, "protocol": proto, "port": 8080}}]
    for i in range(n):
        lines.append({"event": "attempt", "i": i, "t_mono": t_attempt(i), "t_wall": t_attempt(i) + off,
                      "due_mono": t_attempt(i), "t_done_mono": t_attempt(i) + 3, "src": src, "sport": 40000 + i,
                      "dst": dst(i), "dport": 8080, "protocol": proto, "outcome": "timeout", "generation": 0,
                      "future_key": "ignored"})
    lines.append({"event": "stop", "t_mono": 804.0, "t_wall": 804.0 + off, "reason": "max_attempts",
                  "attempts": n})
    return jl(*lines)


def tev(event: str, t: float, i: int | None, ql: int, off: float = OFF, proto: str = "tcp") -> dict:
    d = {"event": event, "t_mono": t, "t_wall": t + off, "src": A, "queue_len": ql}
    if i is not None:
        d.update(dst=dst(i), sport=40000 + i, dport=8080, proto=proto)
    return d


def throttle_events(mode: str = "host", policy: str = "packets", off: float = OFF, skip: tuple = ()) -> list[dict]:
    """passed 0,1; queued 2..5; released 2; blocked at 6 (queue over its limit of 4); the queued 3..5
    discarded at the block; 7..9 dropped on arrival."""
    evs = [{"event": "config", "t_mono": 790.0, "t_wall": 790.0 + off, "mode": mode, "policy": policy,
            "working_set_size": 0, "delay_queue_limit": 4, "release_period_s": 0.5, "protocols": ["tcp", "udp"]}]
    evs += [tev("passed", t_attempt(i) + 0.001, i, 0, off) for i in (0, 1)]
    evs += [tev("queued", t_attempt(i) + 0.001, i, i - 1, off) for i in (2, 3, 4, 5)]
    evs += [tev("released", 800.55, 2, 3, off)]
    evs += [tev("blocked", BLOCK_T, 6, 5, off)]
    evs += [tev("dropped", BLOCK_T, i, 0, off) for i in (3, 4, 5)]
    evs += [tev("dropped", t_attempt(i) + 0.001, i, 0, off) for i in (7, 8, 9)]
    return [e for k, e in enumerate(evs) if k not in skip]


def wire(rows: list[tuple[float, int]] | list[tuple[float, int, str]]):
    """Attempt table from (mono time, attempt index[, proto]) rows, stamped with wall time."""
    rows = sorted(rows)
    return build_attempts([t + OFF for t, *_ in rows], [A] * len(rows), [dst(r[1]) for r in rows],
                          [40000 + r[1] for r in rows], [8080] * len(rows),
                          [r[2] if len(r) > 2 else "tcp" for r in rows])


def host_wire() -> list[tuple[float, int]]:
    """What a sniffer after a host throttle sees: the two passed SYNs and the released one."""
    return [(t_attempt(0) + 0.002, 0), (t_attempt(1) + 0.002, 1), (800.551, 2)]


def run(rows, worm=True, throttle_evs=None, sniffer=None, **kw):
    w = parse_worm_log(worm_lines()) if worm is True else worm
    t = parse_throttle_log(jl(*(throttle_events() if throttle_evs is None else throttle_evs)))
    return compute_metrics(wire(rows) if rows is not None else None, w, t,
                           settings=MetricsSettings(sniffer=sniffer, **kw), capture_span=SPAN)


def codes(res, severity=None) -> dict[str, int]:
    return {f.code: f.count for f in res.findings if severity is None or f.severity == severity}


# -------------------------------------------------------------------------------------------- host mode

def test_host_mode_clean_trial():
    res = run(host_wire())
    assert res.sniffer == "after" and res.clock == "mono"
    assert codes(res, "error") == {} and codes(res, "warning") == {}
    (m,) = res.sources
    assert m.src == A and m.first_attempt_basis == "worm_log"
    assert m.first_attempt_mono == T_FIRST and m.first_attempt_wall == T_FIRST + OFF
    assert m.blocked and m.stopping_time_s == pytest.approx(0.601) and m.stopping_time_clock == "mono"
    assert m.blocked_queue_len == 5 and m.max_queue_len == 5
    assert m.worm_attempts == 10 and m.worm_attempts_before_block == 7
    assert m.worm_scan_rate == pytest.approx(10.0) and m.requested_rate == 10.0
    assert m.worm_distinct_destinations == 10
    assert m.wire_attempts_before_block == 3 and m.wire_attempts_after_block == 0
    assert m.wire_new_attempts_before_block == 3 and m.wire_distinct_destinations_before_block == 3
    assert m.throttle_emitted_before_block == 3
    assert m.throttle_events == {"passed": 2, "queued": 4, "released": 1, "blocked": 1, "dropped": 6}
    assert m.wire_scan_rate is None  # the sniffer sees only what the throttle let out


def test_leak_after_block_is_an_error():
    res = run([*host_wire(), (802.0, 7)])
    assert codes(res, "error") == {"wire_after_block": 1}  # not also reported as 'not in throttle log'
    f = next(f for f in res.findings if f.code == "wire_after_block")
    assert f.by_source == {A: 1} and f.examples[0]["dst"] == dst(7) and f.examples[0]["sport"] == 40007
    assert "must be zero" in f.message
    assert res.sources[0].wire_attempts_after_block == 1


def test_packet_released_just_before_block_and_stamped_after_it():
    evs = throttle_events() + [tev("released", BLOCK_T - 0.0005, 3, 2)]
    evs = [e for e in evs if not (e["event"] == "dropped" and e.get("sport") == 40003)]
    res = run([*host_wire(), (BLOCK_T + 0.001, 3)], throttle_evs=evs)
    assert codes(res, "error") == {} and codes(res, "warning") == {"wire_just_after_block": 1}
    assert res.sources[0].wire_attempts_after_block == 1  # counted, said, and explained by the throttle log
    # the same packet without a release line: a leak close to the block is still an error
    res = run([*host_wire(), (BLOCK_T + 0.001, 3)])
    assert codes(res, "error") == {"wire_packet_not_in_throttle_log": 1}


def test_packet_passed_by_throttle_missing_from_wire():
    res = run([r for r in host_wire() if r[1] != 1])
    assert codes(res, "error") == {"throttle_packet_not_on_wire": 1}
    f = res.findings[-1] if res.findings[-1].code == "throttle_packet_not_on_wire" else \
        next(f for f in res.findings if f.code == "throttle_packet_not_on_wire")
    assert f.examples[0] | {"t": 0} == {"src": A, "sport": 40001, "dst": dst(1), "dport": 8080, "proto": "tcp",
                                        "t": 0, "event": "passed"}
    assert "±0.25 s" in f.message


def test_queued_packet_on_wire_without_release_is_an_error():
    res = run([*host_wire(), (800.31, 3)])
    assert codes(res, "error") == {"wire_packet_not_in_throttle_log": 1}


def test_packet_on_wire_outside_tolerance_does_not_match():
    late = [(t_attempt(0) + 0.4, 0), (t_attempt(1) + 0.002, 1), (800.551, 2)]
    assert codes(run(late), "error") == {"throttle_packet_not_on_wire": 1, "wire_packet_not_in_throttle_log": 1}
    assert codes(run(late, tolerance_s=0.5), "error") == {}


def test_retransmission_needs_its_own_decision_under_packets_policy():
    rows = [*host_wire(), (800.5, 0)]  # SYN 0 retransmitted before the block
    assert codes(run(rows), "error") == {"wire_packet_not_in_throttle_log": 1}
    evs = throttle_events() + [tev("passed", 800.499, 0, 0)]
    assert codes(run(rows, throttle_evs=evs), "error") == {}
    assert codes(run(rows, throttle_evs=throttle_events(policy="connections")), "error") == {}
    m = run(rows, throttle_evs=evs).sources[0]
    assert m.wire_attempts_before_block == 4 and m.wire_new_attempts_before_block == 3


def test_worm_attempt_the_throttle_never_saw():
    evs = throttle_events(skip=(len(throttle_events()) - 1,))  # drop the last line: attempt 9's decision
    res = run(host_wire(), throttle_evs=evs)
    assert codes(res, "warning") == {"worm_attempt_not_in_throttle_log": 1}
    assert codes(res, "error") == {}


def test_attempt_on_wire_not_in_worm_log_is_reported():
    other = build_attempts([800.3 + OFF], [A], ["198.18.9.200"], [5555], [22], ["tcp"])
    base = wire(host_wire())
    merged = build_attempts(list(base.ts) + list(other.ts), list(base.src) + list(other.src),
                            list(base.dst) + list(other.dst), list(base.sport) + list(other.sport),
                            list(base.dport) + list(other.dport), list(base.proto) + list(other.proto))
    res = compute_metrics(merged, parse_worm_log(worm_lines()), parse_throttle_log(jl(*throttle_events())),
                          capture_span=SPAN)
    assert codes(res)["wire_attempt_not_in_worm_log"] == 1
    assert codes(res, "error") == {"wire_packet_not_in_throttle_log": 1}


# ----------------------------------------------------------------------------------- gateway/wire mode

def gateway_wire(skip=()) -> list[tuple[float, int]]:
    """A sniffer before the throttle sees every attempt the worm makes."""
    return [(t_attempt(i) + 0.0005, i) for i in range(N) if i not in skip]


def test_gateway_mode_sniffer_before_throttle():
    res = run(gateway_wire(), throttle_evs=throttle_events(mode="gateway"))
    assert res.sniffer == "before"
    assert codes(res, "error") == {} and codes(res, "warning") == {}
    (m,) = res.sources
    assert m.wire_scan_rate == pytest.approx(10.0, rel=1e-3) and m.worm_scan_rate == pytest.approx(10.0)
    assert m.wire_attempts_before_block == 7 and m.wire_attempts_after_block == 3  # expected: no leak check here
    assert m.stopping_time_s == pytest.approx(0.601)


def test_gateway_mode_missing_packet_is_seen_by_two_checks():
    res = run(gateway_wire(skip=(4,)), throttle_evs=throttle_events(mode="wire"))
    assert codes(res, "error") == {"throttle_packet_not_on_wire": 1, "worm_attempt_not_on_wire": 1}


def test_caller_overrides_sniffer_position():
    res = run(gateway_wire(), sniffer="before")
    assert res.sniffer == "before" and codes(res, "error") == {}
    assert codes(run(gateway_wire(), sniffer="after"), "error")  # the same capture read as 'after' fails


# ------------------------------------------------------------------------------------ clocks, sources

def test_throttle_on_another_kernel_compares_wall_clocks():
    other = throttle_events(off=OFF)
    for e in other:  # same wall times, monotonic clock 5000 s apart
        e["t_mono"] += 5000.0
    res = run(host_wire(), throttle_evs=other)
    assert res.clock == "wall" and "different clocks" in res.findings[0].message
    assert res.sources[0].stopping_time_s == pytest.approx(0.601, abs=1e-6)
    assert res.sources[0].stopping_time_clock == "wall"
    assert codes(res, "error") == {} and codes(res, "warning") == {}


def test_without_worm_log_the_first_attempt_comes_from_the_capture():
    res = run(host_wire(), worm=None)
    (m,) = res.sources
    assert m.src == A and m.first_attempt_basis == "capture"
    assert m.stopping_time_s == pytest.approx(BLOCK_T - t_attempt(0) - 0.002)
    assert m.stopping_time_clock == "wall" and m.worm_attempts == 0


def test_source_never_blocked():
    evs = [e for e in throttle_events() if e["event"] not in ("blocked",)]
    res = run(host_wire(), throttle_evs=evs)
    m = res.sources[0]
    assert not m.blocked and m.stopping_time_s is None and m.wire_attempts_after_block is None
    assert "not_blocked" in codes(res, "info")


def test_capture_started_late():
    res = compute_metrics(wire(host_wire()), parse_worm_log(worm_lines()), parse_throttle_log(jl(*throttle_events())),
                          capture_span=(OFF + 800.3, OFF + 805))
    assert "capture_started_late" in codes(res, "error")


def test_udp_every_datagram_is_matched_but_attempts_are_per_destination():
    lines = worm_lines(n=2, proto="udp")
    evs = [{"event": "config", "t_mono": 790.0, "t_wall": 790.0 + OFF, "mode": "host", "policy": "packets",
            "protocols": ["udp"]},
           tev("passed", t_attempt(0) + 0.001, 0, 0, proto="udp"), tev("passed", t_attempt(1) + 0.001, 1, 0, proto="udp")]
    rows = build_attempts([t_attempt(0) + 0.002 + OFF, t_attempt(1) + 0.002 + OFF], [A, A], [dst(0), dst(0)],
                          [40000, 40001], [8080, 8080], ["udp", "udp"])
    # both datagrams go to dst(0):8080 on the wire, but the worm log says the second went to dst(1)
    res = compute_metrics(rows, parse_worm_log(lines), parse_throttle_log(jl(*evs)), capture_span=SPAN)
    assert codes(res, "error") == {"throttle_packet_not_on_wire": 1, "wire_packet_not_in_throttle_log": 1}
    assert rows.totals()["udp_attempts"] == 1 and rows.totals()["udp_datagrams"] == 2
    assert res.sources[0].wire_attempts == 1


# --------------------------------------------------------------------------------------------- log readers

def test_worm_log_reader_skips_and_counts_invalid_lines():
    lines = worm_lines(n=3)
    lines.insert(1, "not json at all")
    lines.insert(2, json.dumps({"event": "attempt", "t_wall": 1.0, "src": A}))
    lines.insert(3, json.dumps({"event": "attempt", "t_mono": 1.0, "t_wall": 2.0, "src": A, "sport": 70000,
                                "dst": dst(0), "dport": 1, "protocol": "tcp"}))
    lines.insert(4, json.dumps([1, 2]))
    lines.insert(5, json.dumps({"event": "attempt", "t_mono": 1.0, "t_wall": 2.0, "src": "nope", "sport": 1,
                                "dst": dst(0), "dport": 1, "protocol": "tcp"}))
    lines.insert(6, json.dumps({"event": "heartbeat", "t_mono": 1.0, "t_wall": 2.0}))
    lines.append('{"event": "attempt", "t_mo')
    log = parse_worm_log(lines, path="worm.jsonl")
    assert len(log.attempts) == 3 and len(log.starts) == 1 and len(log.stops) == 1
    iss = log.issues
    assert iss.invalid == 6 and iss.lines == 12
    assert [r for _, r in iss.examples] == ["not JSON", "missing 't_mono'", "attempt: 'sport' is not a port number",
                                            "not a JSON object", "attempt: 'src' is not an IPv4 address"]
    assert iss.unknown_events == {"heartbeat": 1}
    res = compute_metrics(None, log, None)
    f = next(f for f in res.findings if f.code == "log_invalid_lines")
    assert f.count == 6 and "6 of 12 lines invalid" in f.message and f.examples[0] == {
        "log": "worm", "line": 2, "reason": "not JSON"}


def test_worm_log_file_cut_short(tmp_path):
    path = tmp_path / "worm.jsonl"
    path.write_text("\n".join(worm_lines(n=2)) + '\n{"event": "attempt", "t_m')
    from orchestrator.analysis.logs import read_worm_log
    log = read_worm_log(path)
    assert len(log.attempts) == 2 and log.issues.examples == [(5, "not JSON (cut short: no newline at the end)")]


def test_throttle_log_reader():
    lines = jl(*throttle_events())
    lines.append(json.dumps({"event": "blocked", "t_mono": 1.0, "t_wall": 2.0, "src": "198.18.8.3"}))  # src only
    lines.append(json.dumps({"event": "passed", "t_mono": 1.0, "t_wall": 2.0, "src": A, "dst": dst(0)}))
    lines.append(json.dumps({"event": "queued", "t_mono": 1.0, "t_wall": 2.0, "src": A, "dst": dst(0),
                             "sport": 1, "dport": 2, "proto": "icmp"}))
    lines.append(json.dumps({"event": "reset", "t_mono": 1.0, "t_wall": 2.0, "src": None}))
    log = parse_throttle_log(lines)
    assert log.mode == "host" and log.policy == "packets" and log.protocols == {"tcp", "udp"}
    assert log.issues.invalid == 2
    assert [r for _, r in log.issues.examples] == ["passed: missing 'sport'", "queued: 'proto' is 'icmp', not tcp or udp"]
    assert log.events[-2].event == "blocked" and log.events[-2].dst is None
    assert log.events[-1].event == "reset" and log.events[-1].src is None


def test_missing_log_file_is_a_clear_error(tmp_path):
    from orchestrator.analysis.errors import LogReadError
    from orchestrator.analysis.logs import read_throttle_log
    with pytest.raises(LogReadError, match="nope.jsonl: no such file"):
        read_throttle_log(tmp_path / "nope.jsonl")


def test_settings_are_validated():
    with pytest.raises(ValueError, match="sniffer position"):
        MetricsSettings(sniffer="sideways")
    with pytest.raises(ValueError, match="clock"):
        MetricsSettings(clock="sundial")
