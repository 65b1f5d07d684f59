"""The rate limiter's model: a token bucket per source (as nft's `limit`: starts full with `burst` tokens,
refills at `new_per_s`, a connection-opening packet passes when a whole token is there), fed with the worm's
schedule — from its log, or a constant rate — and the sender's SYN retransmissions of attempts whose SYN
was dropped (`throttle.model`'s measured schedules; a dropped SYN in the sender's own output hook is
retransmitted on the RTO timer, until the worm's connect timeout closes the attempt). An attempt is out when
one of its packets passes; an answered attempt (the lab's targets or gateway answer) sends nothing more.

`wire_rate(times, until=…)` is the figure the limiter is judged by, the same function for the wire and the model,
over the time the worm still offered new attempts.
Pure: stdlib and `throttle.model`'s schedules.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from throttle.model import WormLog, read_worm_log, retransmit_schedule

from .rules import ConfigError


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = float(burst)
        self.last: float | None = None

    def take(self, t: float) -> bool:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (t - self.last) * self.rate)
        self.last = t
        if self.tokens >= 1 - 1e-9:
            self.tokens -= 1
            return True
        return False


OFFER_END_S = 0.25    # a packet this soon after the worm's last new attempt still counts as offered (clock ties)


def wire_rate(times: Iterable[float], skip_s: float = 1.0, until: float | None = None) -> float | None:
    """Attempts per second after the first `skip_s` seconds: (n − 1) / (t_n − t_1) over the attempts first seen
    later than skip_s after the first one (None with fewer than two). `until`: only those up to then — the
    worm's last new attempt (+ OFFER_END_S): what the bucket let out while the worm offered more than it; the
    retransmissions that trickle out after the worm stopped are bounded by the sender's timers, not the
    limiter (on emulated guests their timing races the worm's connect timeout)."""
    ts = sorted(times)
    if not ts:
        return None
    later = [t for t in ts if t > ts[0] + skip_s and (until is None or t <= until)]
    if len(later) < 2 or later[-1] == later[0]:
        return None
    return (len(later) - 1) / (later[-1] - later[0])


@dataclass
class Prediction:
    out_times: list[float] = field(default_factory=list)    # when each attempt that got out got out
    attempts: int = 0
    packets: int = 0                                         # connection-opening packets offered
    passed: int = 0
    last_send: float | None = None                           # the last attempt's first packet

    @property
    def out(self) -> int:
        return len(self.out_times)

    @property
    def wire_rate(self) -> float | None:
        return wire_rate(self.out_times, until=None if self.last_send is None else self.last_send + OFFER_END_S)

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "out": self.out, "packets": self.packets, "passed": self.passed,
                "wire_rate": self.wire_rate}


def predict(attempts: Iterable[tuple[float, str, str]], *, new_per_s: float, burst: int,
            retransmit: str = "linux", connect_timeout_s: float = 3.0) -> dict[str, Prediction]:
    """`attempts`: (t, src, protocol) of each attempt's first packet. Per source, what the bucket lets out."""
    offsets = retransmit_schedule(retransmit)
    if not connect_timeout_s > 0:
        raise ConfigError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
    heap: list[tuple[float, int, int, str, str]] = []     # (t, seq, k-th packet, src, protocol)
    for seq, (t, src, proto) in enumerate(attempts):
        heapq.heappush(heap, (float(t), seq, 0, src, proto))
    buckets: dict[str, TokenBucket] = {}
    out: dict[str, Prediction] = {}
    starts: dict[int, float] = {}
    for _ in range(10_000_000):                                # bounded: every attempt has ≤ 10 packets
        if not heap:
            break
        t, seq, k, src, proto = heapq.heappop(heap)
        p = out.setdefault(src, Prediction())
        b = buckets.setdefault(src, TokenBucket(new_per_s, burst))
        if k == 0:
            p.attempts += 1
            starts[seq] = t
            p.last_send = t
        p.packets += 1
        if b.take(t):
            p.passed += 1
            p.out_times.append(t)
        elif proto == "tcp" and k < len(offsets) and starts[seq] + offsets[k] < starts[seq] + connect_timeout_s:
            heapq.heappush(heap, (starts[seq] + offsets[k], seq, k + 1, src, proto))
    return out


def predict_constant_rate(rate: float, duration_s: float, *, new_per_s: float, burst: int,
                          protocol: str = "tcp", retransmit: str = "linux",
                          connect_timeout_s: float = 3.0) -> Prediction:
    """A worm at `rate` attempts/s for `duration_s` from one source."""
    if not 0 < rate <= 100_000 or not 0 < duration_s <= 3600 or rate * duration_s > 1_000_000:
        raise ConfigError("rate must be in (0, 100000], duration_s in (0, 3600], at most 1e6 attempts")
    n = int(rate * duration_s + 1e-9)
    got = predict(((i / rate, "src", protocol) for i in range(n)), new_per_s=new_per_s, burst=burst,
                  retransmit=retransmit, connect_timeout_s=connect_timeout_s)
    return got.get("src", Prediction())


def predict_worm_log(source: WormLog | Iterable[str | Mapping[str, Any]], *, new_per_s: float, burst: int,
                     retransmit: str = "linux", connect_timeout_s: float | None = None) -> dict[str, Prediction]:
    """The worm's logged attempts (their send times) through the bucket. The connect timeout is the worm's
    own (its start line), else 3 s."""
    wl = source if isinstance(source, WormLog) else read_worm_log(source)
    if connect_timeout_s is None:
        connect_timeout_s = float(((wl.start or {}).get("params") or {}).get("connect_timeout_s", 3.0))
    atts: Sequence[tuple[float, str, str]] = [(float(a["t_mono"]), a["src"], a.get("protocol", "tcp"))
                                              for a in sorted(wl.attempts, key=lambda a: a["t_mono"])]
    return predict(atts, new_per_s=new_per_s, burst=burst, retransmit=retransmit,
                   connect_timeout_s=connect_timeout_s)


def predict_registry(worm_log: Iterable[str | Mapping[str, Any]], params: Mapping[str, Any], *,
                     placement: str = "host") -> dict[str, dict[str, Any]]:
    """The registry's model shape: per source blocked (never), stop_s None, the attempts out, wire_rate."""
    got = predict_worm_log(worm_log, new_per_s=params["new_per_s"], burst=params["burst"])
    return {src: {"blocked": False, "stop_s": None, "out_before_block": p.out, "wire_rate": p.wire_rate}
            for src, p in got.items()}
