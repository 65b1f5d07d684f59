"""The attempt table's sorting tricks against plain Python: retransmission flags (also when every key's hash
collides with others) and per-source timelines."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.analysis import attempts
from orchestrator.analysis.attempts import build_attempts, int_to_ip, source_timelines


def _random_columns(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    src = (0xC6120000 + rng.integers(1, 9, n)).astype(np.uint32)
    dst = (0xC6130000 + rng.integers(0, 40, n)).astype(np.uint32)
    sport = rng.integers(1000, 1012, n).astype(np.uint16)
    dport = rng.choice(np.array([53, 80], np.uint16), n)
    proto = rng.choice(np.array([6, 17], np.uint8), n)
    ts = 1_764_050_000 + np.sort(rng.random(n)) * 30
    ts[rng.random(n) < 0.02] = np.nan  # Simple Packet Blocks: no timestamp
    return ts, src, dst, sport, dport, proto


def _reference_repeats(src, dst, sport, dport, proto, udp: str) -> list[bool]:
    seen, out = set(), []
    for s, d, sp, dp, p in zip(src.tolist(), dst.tolist(), sport.tolist(), dport.tolist(), proto.tolist(),
                               strict=True):
        key = (s, d, sp, dp, p) if p == 6 or udp != "first_per_destination" else (s, d, dp, p)
        out.append(key in seen)
        seen.add(key)
    return out


@pytest.mark.parametrize("collide", [False, True])
@pytest.mark.parametrize("udp", ["first_per_destination", "first_per_flow"])
def test_repeats_equal_a_set_of_seen_keys(monkeypatch, collide, udp):
    if collide:  # four hash values for thousands of keys: every group is settled exactly
        monkeypatch.setattr(attempts, "_key_hash", lambda k1, k2: (k1 ^ k2) & np.uint64(3))
    for n in (1, 2, 5000):
        ts, src, dst, sport, dport, proto = _random_columns(n)
        att = build_attempts(ts, src, dst, sport, dport, proto, udp=udp)
        ref = _reference_repeats(src, dst, sport, dport, proto, udp)
        assert att.repeat.tolist() == ref
        assert att.attempt.tolist() == [p == 6 or not r for p, r in zip(proto.tolist(), ref, strict=True)]


def test_source_timelines_equal_plain_python():
    ts, src, dst, sport, dport, proto = _random_columns(4000)
    att = build_attempts(ts, src, dst, sport, dport, proto)
    span = (float(np.nanmin(ts)), float(np.nanmax(ts)))
    got = {t.src: t for t in source_timelines(att, bins=6, span=span)}
    assert sorted(got) == sorted({int_to_ip(s) for s in src.tolist()}, key=lambda a: tuple(map(int, a.split("."))))
    width = (span[1] - span[0]) / 6
    for s in set(src.tolist()):
        rows = [i for i in range(len(att)) if att.src[i] == s]
        t = got[int_to_ip(s)]
        tcp = [i for i in rows if att.proto[i] == 6]
        assert t.syn_attempts == len(tcp) and t.syn_retransmissions == sum(bool(att.repeat[i]) for i in tcp)
        assert t.udp_datagrams == len(rows) - len(tcp)
        assert t.udp_attempts == sum(bool(att.attempt[i]) for i in rows if att.proto[i] == 17)
        assert t.distinct_destinations == len({int(att.dst[i]) for i in rows if att.attempt[i]})
        known = [float(att.ts[i]) for i in rows if np.isfinite(att.ts[i])]
        assert (t.first_ts, t.last_ts) == (min(known), max(known))
        new = [float(att.ts[i]) for i in rows if att.attempt[i] and not att.repeat[i] and np.isfinite(att.ts[i])]
        assert t.new_attempt_rate == pytest.approx((len(new) - 1) / (max(new) - min(new)))
        hist = [0] * 6
        for i in rows:
            if att.attempt[i] and np.isfinite(att.ts[i]):
                hist[min(5, max(0, int((att.ts[i] - span[0]) / width)))] += 1
        assert t.histogram == hist
