"""The throttle's model: replay arrivals through the core on a virtual clock, build arrivals from a worm log
(with the sender's SYN retransmissions), and predict stopping speed for a constant scan rate.

Retransmission schedules are offsets (seconds after the first SYN) at which the sender's stack sends the
SYN again while the attempt is still open. `linux` and `linux-classic` were measured on this project's
kernel (see docs/throttle.md and tests/throttle/test_retransmit_schedule.py); `windows2000` is the
documented behaviour of the paper's guest (initial RTO 3 s, doubled, TcpMaxConnectRetransmissions=2).
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .core import ConfigError, Event, Request, Throttle, ThrottleConfig

log = logging.getLogger(__name__)

RETRANSMIT_SCHEDULES: dict[str, tuple[float, ...]] = {
    # Linux 6.18 defaults (tcp_syn_retries=6, tcp_syn_linear_timeouts=4): 1 s RTO, five linear retries,
    # then doubling. Mean of 4 runs, SYN held at a gateway; each fire lands 0-64 ms late (timer wheel).
    "linux": (1.013, 2.036, 3.061, 4.084, 5.108, 7.124, 11.196, 19.388, 35.516),
    # The same kernel with tcp_syn_linear_timeouts=0, i.e. Linux before linear SYN timeouts: 1, 3, 7, 15, 31 s.
    "linux-classic": (1.027, 3.043, 7.107, 15.299, 31.427),
    # Windows 2000 (the paper's guest): 3 s initial RTO, doubled, two retransmissions. Not measured here.
    "windows2000": (3.0, 9.0),
    "none": (),
}
PLACEMENTS = ("gateway", "host", "wire")
TARGET_BEHAVIOURS = ("answer", "silent")


def retransmit_schedule(name: str) -> tuple[float, ...]:
    try:
        return RETRANSMIT_SCHEDULES[name]
    except KeyError:
        raise ConfigError(f"unknown retransmission schedule {name!r}; known: "
                          f"{', '.join(RETRANSMIT_SCHEDULES)}") from None


def _check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise ConfigError(f"unknown placement {placement!r}; known: {', '.join(PLACEMENTS)}")


@dataclass(frozen=True)
class Arrival:
    """One connection-opening packet reaching the throttle. `attempt` identifies the worm's attempt it
    belongs to (several packets when retransmitted); `retransmit` is 0 for the first SYN, k for the k-th."""

    t: float
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    proto: str = "tcp"
    attempt: Any = None
    retransmit: int = 0

    def identity(self) -> Any:
        if self.attempt is not None:
            return (self.src, "attempt", self.attempt)
        if self.sport is not None:
            return (self.src, self.proto, self.dst, self.sport)
        return None


# ---- worm log -----------------------------------------------------------------------------------------

@dataclass
class WormLog:
    start: dict[str, Any] | None
    attempts: list[dict[str, Any]]
    invalid: int = 0
    stop: dict[str, Any] | None = None


_ATTEMPT_KEYS = ("t_mono", "dst", "src")


def read_worm_log(lines: Iterable[str | Mapping[str, Any]]) -> WormLog:
    """Parse worm-log lines (strings or already-decoded dicts). Lines that are not JSON objects, or
    `attempt` lines missing t_mono/src/dst, are skipped, counted in `invalid` and logged once."""
    wl = WormLog(start=None, attempts=[])
    for line in lines:
        if isinstance(line, Mapping):
            obj = dict(line)
        else:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                wl.invalid += 1
                continue
        if not isinstance(obj, dict) or "event" not in obj:
            wl.invalid += 1
            continue
        ev = obj["event"]
        if ev == "attempt":
            if any(k not in obj for k in _ATTEMPT_KEYS) or not isinstance(obj["t_mono"], (int, float)):
                wl.invalid += 1
                continue
            wl.attempts.append(obj)
        elif ev == "start" and wl.start is None:
            wl.start = obj
        elif ev == "stop":
            wl.stop = obj
    if wl.invalid:
        log.warning("worm log: skipped %d invalid line(s)", wl.invalid)
    return wl


def arrivals_from_worm_log(source: WormLog | Iterable[str | Mapping[str, Any]], retransmit: str = "linux",
                           *, schedule: Sequence[float] | None = None) -> list[Arrival]:
    """The arrivals a throttle sees from a worm's log: each attempt's first packet at its `t_mono`, and for
    TCP the sender's retransmissions at `t_mono + offset` for every offset that falls before the attempt's
    `t_done_mono` (an attempt without t_done_mono is taken as open for the whole schedule). UDP has none.
    `schedule` (offsets in s) overrides the named `retransmit` schedule. Sorted by time."""
    offsets = tuple(schedule) if schedule is not None else retransmit_schedule(retransmit)
    wl = source if isinstance(source, WormLog) else read_worm_log(source)
    out: list[Arrival] = []
    for n, a in enumerate(wl.attempts):
        t0 = float(a["t_mono"])
        proto = str(a.get("protocol", "tcp"))
        ident = a.get("i", n)
        base = Arrival(t0, str(a["src"]), str(a["dst"]), a.get("sport"), a.get("dport"), proto, ident, 0)
        out.append(base)
        if proto != "tcp":
            continue
        done = a.get("t_done_mono")
        done = math.inf if done is None else float(done)
        for k, off in enumerate(offsets, 1):
            if t0 + off < done:
                out.append(replace(base, t=t0 + off, retransmit=k))
    out.sort(key=lambda x: (x.t, x.retransmit))
    return out


# ---- replay ---------------------------------------------------------------------------------------------

@dataclass
class SourceReplay:
    """What the throttle did to one source. Times are on the arrivals' clock."""

    src: str
    first_arrival: float
    blocked_at: float | None = None
    out_before_block: int = 0            # attempts with at least one packet out (passed/released) before the block
    packets_out_before_block: int = 0
    arrivals_before_block: int = 0       # packets that reached the throttle up to and including the blocking one
    attempts_before_block: int = 0       # distinct attempts among them
    suppressed_retransmits: int = 0      # host placement: retransmissions not sent while their SYN was held
    queue_curve: list[tuple[float, int]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def stop_s(self) -> float | None:
        """Time from the source's first arrival to its block (None: never blocked)."""
        return None if self.blocked_at is None else self.blocked_at - self.first_arrival

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "first_arrival": self.first_arrival, "blocked_at": self.blocked_at,
                "stop_s": self.stop_s, "out_before_block": self.out_before_block,
                "packets_out_before_block": self.packets_out_before_block,
                "arrivals_before_block": self.arrivals_before_block,
                "attempts_before_block": self.attempts_before_block,
                "suppressed_retransmits": self.suppressed_retransmits,
                "queue_curve": self.queue_curve, "counts": self.counts}


@dataclass
class Replay:
    config: ThrottleConfig
    sources: dict[str, SourceReplay]
    events: list[Event]
    placement: str = "gateway"


class _Tally:
    """Per-source bookkeeping shared by replay() and the constant-rate prediction."""

    def __init__(self) -> None:
        self.sources: dict[str, SourceReplay] = {}
        self.out_ids: dict[str, set] = {}
        self.seen_ids: dict[str, set] = {}
        self.held: dict[Any, int] = {}     # attempt identity -> packets of it in the delay queue
        self.events: list[Event] = []

    def arrival(self, a: Arrival) -> SourceReplay:
        sr = self.sources.get(a.src)
        if sr is None:
            sr = self.sources[a.src] = SourceReplay(a.src, a.t, queue_curve=[(a.t, 0)])
            self.out_ids[a.src] = set()
            self.seen_ids[a.src] = set()
        if sr.blocked_at is None:
            sr.arrivals_before_block += 1
            ident = a.identity()
            self.seen_ids[a.src].add(ident if ident is not None else object())
        return sr

    def absorb(self, events: list[Event]) -> None:
        for e in events:
            self.events.append(e)
            sr = self.sources[e.src] if e.src is not None else None
            if sr is None:
                continue
            sr.counts[e.event] = sr.counts.get(e.event, 0) + 1
            a: Arrival | None = e.ref
            ident = a.identity() if a is not None else None
            if e.event == "queued":
                if ident is not None:
                    self.held[ident] = self.held.get(ident, 0) + 1
            elif e.event in ("released", "dropped") and e.reason != "blocked" and ident is not None:
                left = self.held.get(ident, 0) - 1
                if left > 0:
                    self.held[ident] = left
                else:
                    self.held.pop(ident, None)
            if e.event in ("passed", "released") and sr.blocked_at is None:
                sr.packets_out_before_block += 1
                self.out_ids[e.src].add(ident if ident is not None else object())
            if e.event == "blocked":
                sr.blocked_at = e.t
                sr.out_before_block = len(self.out_ids[e.src])
                sr.attempts_before_block = len(self.seen_ids[e.src])
            if sr.queue_curve[-1][1] != e.queue_len or e.event == "blocked":
                sr.queue_curve.append((e.t, e.queue_len))

    def finish(self) -> None:
        for src, sr in self.sources.items():
            if sr.blocked_at is None:
                sr.out_before_block = len(self.out_ids[src])
                sr.attempts_before_block = len(self.seen_ids[src])


def replay(arrivals: Iterable[Arrival], config: ThrottleConfig | None = None, *, placement: str = "gateway",
           until: float | None = None) -> Replay:
    """Feed `arrivals` (sorted by time) through a fresh core on a virtual clock, then let it run to `until`
    (default: until every queue has drained). `placement="host"`: a retransmission is not sent while an
    earlier packet of its attempt is still held (what Linux does when the throttle sits in the sender's own
    OUTPUT hook — measured, see docs/throttle.md); `gateway`/`wire`: every retransmission arrives."""
    _check_placement(placement)
    core = Throttle(config or ThrottleConfig(), clock=lambda: 0.0)
    tally = _Tally()
    last = -math.inf
    for a in arrivals:
        if a.t < last:
            raise ValueError(f"arrivals are not sorted by time ({a.t} after {last})")
        last = a.t
        tally.absorb(core.advance(a.t))
        sr = tally.arrival(a)
        if placement == "host" and a.retransmit and tally.held.get(a.identity(), 0) > 0:
            sr.suppressed_retransmits += 1
            continue
        req = Request(a.src, a.dst, a.sport, a.dport, a.proto, ref=a)
        tally.absorb(core.submit(req, a.t).events)
    end = until
    if end is None:
        while (due := core.next_due()) is not None:
            tally.absorb(core.advance(due))
    elif end >= last:
        tally.absorb(core.advance(end))
    tally.finish()
    return Replay(core.config, tally.sources, tally.events, placement)


# ---- constant-rate prediction ------------------------------------------------------------------------

@dataclass
class Prediction:
    """Predicted stopping speed for one source scanning new destinations at a constant rate.
    stop_s is relative to the first attempt (None: not blocked within the horizon)."""

    stop_s: float | None
    out_before_block: int
    packets_out_before_block: int
    attempts_before_block: int
    arrivals_before_block: int
    params: dict[str, Any]
    queue_curve: list[tuple[float, int]] = field(default_factory=list)

    def to_dict(self, curve: bool = False) -> dict[str, Any]:
        d = {"stop_s": self.stop_s, "out_before_block": self.out_before_block,
             "packets_out_before_block": self.packets_out_before_block,
             "attempts_before_block": self.attempts_before_block,
             "arrivals_before_block": self.arrivals_before_block, "blocked": self.stop_s is not None,
             "params": self.params}
        if curve:
            d["queue_curve"] = self.queue_curve
        return d


def predict_constant_rate(rate: float, *, protocol: str = "tcp", config: ThrottleConfig | None = None,
                          initial_working_set: int | None = None, retransmit: str = "linux",
                          placement: str = "gateway", connect_timeout_s: float = 3.0,
                          targets: str = "answer", horizon_s: float = 3600.0,
                          max_attempts: int | None = None) -> Prediction:
    """Simulate one source opening connections to new destinations at `rate` per second from t=0.

    Closed loop: an attempt ends when a packet of it leaves the throttle and the target answers
    (`targets="answer"`: refused or accepted at once) or at `connect_timeout_s` (the worm's, 3 s by
    default; `targets="silent"`: only then). While open, TCP attempts are retransmitted on the `retransmit`
    schedule (not while held, with placement="host"). `initial_working_set` destinations (other than the
    scan's) are already in the working set; None takes config.initial_working_set.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"rate must be a number > 0, got {rate!r}")
    if protocol not in ("tcp", "udp"):
        raise ConfigError(f"unknown protocol {protocol!r}; known: tcp, udp")
    if targets not in TARGET_BEHAVIOURS:
        raise ConfigError(f"unknown targets behaviour {targets!r}; known: {', '.join(TARGET_BEHAVIOURS)}")
    if not connect_timeout_s > 0:
        raise ConfigError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
    if not horizon_s > 0:
        raise ConfigError(f"horizon_s must be > 0, got {horizon_s!r}")
    _check_placement(placement)
    offsets = retransmit_schedule(retransmit) if protocol == "tcp" else ()
    cfg = config or ThrottleConfig()
    if initial_working_set is not None:
        if isinstance(initial_working_set, bool) or not isinstance(initial_working_set, int) \
                or not 0 <= initial_working_set <= cfg.working_set_size:
            raise ConfigError(f"initial working set must be an integer in 0..{cfg.working_set_size}, "
                              f"got {initial_working_set!r}")
        cfg = replace(cfg, initial_working_set=tuple(f"known-{i}" for i in range(initial_working_set)))
    if cfg.release_clock == "free":
        raise ConfigError("the constant-rate prediction needs the armed release clock (a free clock's "
                          "phase relative to the first attempt is unknown)")
    src = "worm"
    core = Throttle(cfg, clock=lambda: 0.0)
    tally = _Tally()
    open_until: dict[int, float] = {}   # attempt -> time it ends (inf while unanswered)
    starts: dict[int, float] = {}
    heap: list[tuple[float, int, int]] = [(0.0, 0, 0)]   # (time, attempt, k-th retransmission)
    blocked = False
    limit_n = max_attempts if max_attempts is not None else math.inf

    def absorb(events: list[Event]) -> None:
        nonlocal blocked
        tally.absorb(events)
        for e in events:
            if e.event == "blocked":
                blocked = True
            elif e.event in ("passed", "released") and targets == "answer":
                i = e.ref.attempt
                if open_until.get(i, -1.0) > e.t:
                    open_until[i] = e.t

    while heap and not blocked:
        t, i, k = heapq.heappop(heap)
        if t > horizon_s:
            break
        absorb(core.advance(t))
        if blocked:
            break
        if k == 0:
            starts[i] = t
            open_until[i] = t + connect_timeout_s
            if i + 1 < limit_n:
                heapq.heappush(heap, ((i + 1) / rate, i + 1, 0))
        elif not t < open_until[i]:
            continue
        a = Arrival(t, src, f"new-{i}", 40000 + i % 20000 if protocol == "tcp" else None, None, protocol,
                    i, k)
        sr = tally.arrival(a)
        if placement == "host" and k and tally.held.get(a.identity(), 0) > 0:
            sr.suppressed_retransmits += 1
        else:
            absorb(core.submit(Request(src, a.dst, a.sport, None, protocol, ref=a), t).events)
        if k < len(offsets):
            nxt = starts[i] + offsets[k]
            if nxt < open_until[i]:
                heapq.heappush(heap, (nxt, i, k + 1))
    tally.finish()
    sr = tally.sources.get(src)
    params = {"rate": rate, "protocol": protocol, **cfg.to_dict(), "retransmit": retransmit,
              "retransmit_offsets_s": list(offsets), "placement": placement,
              "connect_timeout_s": connect_timeout_s, "targets": targets, "horizon_s": horizon_s,
              "max_attempts": max_attempts}
    params["initial_working_set"] = len(cfg.initial_working_set)
    if sr is None:
        return Prediction(None, 0, 0, 0, 0, params)
    return Prediction(sr.stop_s, sr.out_before_block, sr.packets_out_before_block, sr.attempts_before_block,
                      sr.arrivals_before_block, params, sr.queue_curve)
