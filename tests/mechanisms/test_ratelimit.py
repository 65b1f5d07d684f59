"""The rate limiter's rules and token-bucket model, without root."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechanisms.ratelimit import cli
from mechanisms.ratelimit.model import (
    OFFER_END_S,
    TokenBucket,
    predict,
    predict_constant_rate,
    predict_worm_log,
    wire_rate,
)
from mechanisms.ratelimit.rules import ConfigError, RateLimitConfig, render


def test_render_host_default():
    s = render(RateLimitConfig())
    assert s.startswith("add table ip wtb_ratelimit\ndelete table ip wtb_ratelimit\ntable ip wtb_ratelimit {\n")
    assert "type filter hook output priority filter; policy accept;" in s
    assert 'oifname "lo" accept' in s
    assert ('ct state new meta l4proto { tcp, udp } add @sources { ip saddr limit rate over 2/second burst 5 '
            'packets } counter drop comment "wtb-ratelimit"') in s


def test_render_gateway_interface_protocol_and_fractional_rates():
    s = render(RateLimitConfig(new_per_s=0.5, burst=1, placement="gateway", protocols=("tcp",), interface="exp0"))
    assert "hook forward" in s and 'iifname != "exp0" accept' in s
    assert "meta l4proto tcp add @sources { ip saddr limit rate over 30/minute burst 1 packets }" in s
    assert RateLimitConfig(new_per_s=1 / 3600).nft_rate() == "1/hour"
    assert "lo" not in render(RateLimitConfig(placement="gateway"))


@pytest.mark.parametrize("kw, msg", [
    ({"new_per_s": 0}, "new_per_s must be a finite number > 0"),
    ({"new_per_s": float("inf")}, "new_per_s must be"),
    ({"new_per_s": 0.3333}, "is not a whole number per second, minute or hour"),
    ({"burst": 0}, "burst must be an integer in 1..1000000"),
    ({"burst": 2.5}, "burst must be"),
    ({"placement": "wire"}, "unknown placement 'wire'; known: host, gateway"),
    ({"protocols": ("icmp",)}, "protocols must be a non-empty subset of tcp,udp"),
    ({"protocols": ()}, "protocols must be"),
    ({"interface": "a b"}, "bad interface name"),
])
def test_bad_parameters(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        RateLimitConfig(**kw)


def test_bucket_starts_full_and_refills():
    b = TokenBucket(2, 5)
    assert [b.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert b.take(0.49) is False and b.take(0.5) is True and b.take(0.6) is False
    assert b.take(10.0) and b.tokens == pytest.approx(4)


def test_wire_rate_skips_the_first_second():
    assert wire_rate([0, 0, 0, 0, 0] + [1.5 + i * 0.5 for i in range(11)]) == pytest.approx(2.0)
    assert wire_rate([]) is None and wire_rate([0, 2]) is None


def test_wire_rate_ends_with_the_worms_offer():
    """The rate-limit trial on VMs (TCG) that read 1.76/s: 2/s on the wire while the worm offered 20/s, then its
    last attempt's SYN, dropped, retransmitted 3.6 s after it was sent (its connect timeout, 3 s, came late on
    the emulated guest), alone after a 2.2 s gap. The limiter's figure is the rate while the worm offered."""
    wire = [0, 0.04, 0.09, 0.15, 0.2, 0.54] + [1.05 + 0.5 * i for i in range(26)] + [15.8]
    last_send = 12.2
    assert wire_rate(wire) == pytest.approx(1.76, abs=0.01)
    assert wire_rate(wire, until=last_send + OFFER_END_S) == pytest.approx(2.0)
    assert wire_rate(wire, until=1.2) is None                  # fewer than two after the first second


def test_the_model_judges_the_same_window():
    """The model's own tail (retransmissions let out after the worm's last attempt) is outside it too."""
    p = predict_constant_rate(20, 12.8, new_per_s=2, burst=5)
    assert p.last_send == pytest.approx(12.75) and p.out_times[-1] > p.last_send + OFFER_END_S
    tail_free = wire_rate([t for t in p.out_times if t <= p.last_send + OFFER_END_S])
    assert p.wire_rate == pytest.approx(tail_free) and p.wire_rate == pytest.approx(2.0, rel=0.02)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([0.5, 1, 2, 5, 10]), st.integers(1, 20), st.floats(5, 500), st.sampled_from(["tcp", "udp"]))
def test_a_fast_worm_is_let_out_at_new_per_s(new_per_s, burst, factor, proto):
    rate = new_per_s * factor                        # the worm is faster than the limit
    duration = max(20 / new_per_s, 3.0) + 2 * burst / new_per_s
    if rate * duration > 200_000:
        return
    p = predict_constant_rate(rate, duration, new_per_s=new_per_s, burst=burst, protocol=proto)
    # never more than the bucket allows over any run: burst + rate × span
    span = p.out_times[-1] - p.out_times[0]
    assert p.out <= burst + new_per_s * span + 1
    assert p.out_times[:burst] == sorted(p.out_times[:burst]) and p.out_times[burst - 1] < 1 / rate * burst + 1e-9
    # once the burst has drained (within the first second at the lab's 20/s against burst 5)
    drained = burst / (rate - new_per_s) + 1 / new_per_s
    assert wire_rate(p.out_times, skip_s=drained) == pytest.approx(new_per_s, rel=0.10)
    assert p.passed == p.out                        # every packet let out is a distinct attempt (answered)


def test_a_slow_worm_is_not_limited():
    p = predict_constant_rate(1, 30, new_per_s=2, burst=5)
    assert (p.out, p.packets, p.attempts) == (30, 30, 30)


def test_dropped_syns_are_retransmitted_until_the_connect_timeout():
    got = predict([(0.0, "s", "tcp"), (0.0, "s", "tcp")], new_per_s=0.1, burst=1)["s"]
    # the second attempt's SYN and its retransmissions at +1.013, +2.036 s (3.061 is past the 3 s timeout)
    assert (got.attempts, got.packets, got.out) == (2, 4, 1)
    udp = predict([(0.0, "s", "udp"), (0.0, "s", "udp")], new_per_s=0.1, burst=1)["s"]
    assert (udp.packets, udp.out) == (2, 1)


def test_model_from_a_worm_log_per_source():
    lines = [json.dumps({"event": "start", "t_mono": 0, "t_wall": 0, "params": {"connect_timeout_s": 1.0}})]
    lines += [json.dumps({"event": "attempt", "t_mono": i * 0.05, "src": src, "dst": f"10.0.0.{i}",
                          "protocol": "tcp", "outcome": "refused"}) for i in range(40) for src in ("a", "b")]
    got = predict_worm_log(lines, new_per_s=2, burst=5)
    assert set(got) == {"a", "b"} and got["a"].to_dict() == got["b"].to_dict()
    assert got["a"].attempts == 40 and got["a"].out == 5 + 3        # 2 s of refill (+ one retransmission)


def test_cli(capsys):
    assert cli.main(["predict", "--rate", "20", "--duration", "11", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["worm"]
    assert d["attempts"] == 220 and d["wire_rate"] == pytest.approx(2, rel=0.05)
    assert cli.main(["render", "--placement", "gateway"]) == 0
    assert "hook forward" in capsys.readouterr().out


@pytest.mark.parametrize("argv, code, msg", [
    (["predict"], 2, "give one of --rate or --worm-log"),
    (["predict", "--rate", "5", "--protocol", "sctp"], 2, "unknown protocol 'sctp'"),
    (["predict", "--rate", "5", "--burst", "0"], 2, "burst must be an integer"),
    (["predict", "--worm-log", "/nonexistent"], 1, "cannot read /nonexistent"),
    (["render", "--protocols", "tcp,gre"], 2, "protocols must be a non-empty subset"),
])
def test_cli_bad_input(capsys, argv, code, msg):
    assert cli.main(argv) == code
    assert msg in capsys.readouterr().err
