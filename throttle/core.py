"""The virus throttle's algorithm (Williamson; Twycross & Williamson 2003, §3): pure, no I/O, injectable clock.

Per source address: a working set of recently contacted destinations (LRU), a delay queue released one
entry per period, and a blocked flag set when the queue would grow past its limit. The NFQUEUE daemon and
the model both drive this one class; every decision comes back as events (see docs/throttle.md).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

POLICIES = ("packets", "connections")
RELEASE_CLOCKS = ("armed", "free")

PASS, QUEUE, DROP = "pass", "queue", "drop"


class ThrottleError(Exception):
    """Base of the throttle's own errors: the message is meant for a user, no traceback needed."""


class ConfigError(ThrottleError, ValueError):
    """An invalid throttle parameter."""


def _int_param(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class ThrottleConfig:
    """The throttle's parameters, named after HP's shipped throttle where they fit.

    release_clock: `armed` (default) — the first release comes one period after the entry that made an
    empty queue non-empty, then one per period while the queue is non-empty; `free` — releases fall on the
    fixed grid clock_origin_s + k * release_period_s, as the paper's kernel thread woke once a second.
    """

    working_set_size: int = 5
    release_period_s: float = 1.0
    delay_queue_limit: int = 100
    policy: str = "packets"
    initial_working_set: tuple[str, ...] = ()
    release_clock: str = "armed"
    clock_origin_s: float = 0.0

    def __post_init__(self) -> None:
        _int_param("working_set_size", self.working_set_size, 1)
        _int_param("delay_queue_limit", self.delay_queue_limit, 0)
        p = self.release_period_s
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
            raise ConfigError(f"release_period_s must be a finite number > 0, got {p!r}")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown policy {self.policy!r}; known: {', '.join(POLICIES)}")
        if self.release_clock not in RELEASE_CLOCKS:
            raise ConfigError(f"unknown release_clock {self.release_clock!r}; known: {', '.join(RELEASE_CLOCKS)}")
        if not math.isfinite(self.clock_origin_s):
            raise ConfigError("clock_origin_s must be finite")
        iws = tuple(self.initial_working_set)
        object.__setattr__(self, "initial_working_set", iws)
        if len(set(iws)) != len(iws):
            raise ConfigError("initial_working_set lists a destination twice")
        if len(iws) > self.working_set_size:
            raise ConfigError(f"initial_working_set has {len(iws)} destinations, more than "
                              f"working_set_size={self.working_set_size}")

    @property
    def initial_state(self) -> str:
        """`fresh` (empty working sets), `full` (initial set fills them) or `partial` (in between)."""
        n = len(self.initial_working_set)
        return "fresh" if n == 0 else "full" if n == self.working_set_size else "partial"

    def to_dict(self) -> dict[str, Any]:
        d = {"policy": self.policy, "working_set_size": self.working_set_size,
             "delay_queue_limit": self.delay_queue_limit, "release_period_s": self.release_period_s,
             "release_clock": self.release_clock, "initial_working_set": list(self.initial_working_set),
             "initial_state": self.initial_state}
        if self.release_clock == "free":
            d["clock_origin_s"] = self.clock_origin_s
        return d


@dataclass(slots=True)
class Request:
    """One packet that opens a connection (TCP SYN, UDP datagram of a new flow). `ref` is opaque to the
    core (the daemon's NFQUEUE packet, the model's attempt); it comes back in the events about it.
    Treat as immutable (not frozen only because frozen dataclasses are slow to build on the hot path)."""

    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    proto: str = "tcp"
    ref: Any = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Event:
    """One decision about one packet (or a reset). `t` is the algorithm's time: for `released` the tick
    it was due at, otherwise the time of the call that made the decision.

    reason — passed: `hit` (in the working set) | `room` (added to a working set with room);
    queued: `entry` (a new queue entry) | `joined` (connections policy: a retransmission joined its entry);
    released: `head` | `same-destination`; blocked: `limit`;
    dropped: `blocked` (the source is blocked) | `flushed` (queued when the block came) | `reset` | `shutdown`.
    """

    event: str
    t: float
    src: str | None
    dst: str | None = None
    sport: int | None = None
    dport: int | None = None
    proto: str | None = None
    queue_len: int = 0
    reason: str | None = None
    ref: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "t": self.t, "src": self.src, "dst": self.dst, "sport": self.sport,
                "dport": self.dport, "proto": self.proto, "queue_len": self.queue_len, "reason": self.reason}


@dataclass
class Decision:
    """What happened to a submitted packet (`pass`, `queue` or `drop`) and every event the call produced,
    in order: releases that fell due before it first, then the decision itself (and a block's drops)."""

    verdict: str
    events: list[Event]


class _Entry:
    __slots__ = ("dst", "key", "packets", "t")

    def __init__(self, dst: str, key: tuple | None, req: Request, t: float):
        self.dst = dst
        self.key = key
        self.packets = [req]
        self.t = t


class _Source:
    __slots__ = ("src", "ws", "queue", "by_key", "blocked", "blocked_at", "arm", "k", "next_release",
                 "npackets")

    def __init__(self, src: str, initial: Iterable[str]):
        self.src = src
        self.ws: OrderedDict[str, None] = OrderedDict((d, None) for d in initial)
        self.queue: list[_Entry] = []
        self.by_key: dict[tuple, _Entry] = {}
        self.blocked = False
        self.blocked_at: float | None = None
        self.arm = 0.0
        self.k = 0
        self.next_release: float | None = None
        self.npackets = 0


class Throttle:
    """The throttle for any number of sources (host mode sees one or a few, gateway mode many).

    Every method that takes `now` first processes the releases due at or before `now`, so the state is
    always that of time `now`; times must not go backwards. Without `now` the injected clock is read.
    """

    def __init__(self, config: ThrottleConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config or ThrottleConfig()
        self.clock = clock
        self._sources: dict[str, _Source] = {}
        self._heap: list[tuple[float, str]] = []
        self._now = -math.inf
        self.counts: dict[str, int] = {k: 0 for k in ("passed", "queued", "released", "blocked",
                                                       "dropped", "reset")}

    # ---- time ------------------------------------------------------------------------------------
    def _time(self, now: float | None) -> float:
        if now is None:
            now = self.clock()
        if now < self._now:
            if self._now - now > 1e-9:
                raise ValueError(f"time went backwards: {now} < {self._now}")
            now = self._now
        self._now = now
        return now

    def next_due(self) -> float | None:
        """When the next release falls due (any source), or None when every delay queue is empty."""
        h = self._heap
        while h:
            due, src = h[0]
            s = self._sources.get(src)
            if s is not None and s.next_release == due:
                return due
            heapq.heappop(h)
        return None

    def advance(self, now: float | None = None) -> list[Event]:
        """Release every queue head due at or before `now`; return the events (stamped with due times)."""
        return self._advance(self._time(now))

    def _advance(self, now: float) -> list[Event]:
        out: list[Event] = []
        h = self._heap
        while h and h[0][0] <= now:
            due, src = heapq.heappop(h)
            s = self._sources.get(src)
            if s is None or s.next_release != due:
                continue
            self._release(s, due, out)
        return out

    def _arm(self, s: _Source, t: float) -> None:
        c = self.config
        if c.release_clock == "armed":
            s.arm, s.k = t, 1
        else:
            s.arm = c.clock_origin_s
            s.k = math.floor((t - s.arm) / c.release_period_s) + 1
            while s.arm + s.k * c.release_period_s <= t:
                s.k += 1
        s.next_release = s.arm + s.k * c.release_period_s
        heapq.heappush(self._heap, (s.next_release, s.src))

    def _release(self, s: _Source, due: float, out: list[Event]) -> None:
        head = s.queue[0]
        dst = head.dst
        keep: list[_Entry] = []
        leaving: list[_Entry] = []
        for e in s.queue:
            (leaving if e.dst == dst else keep).append(e)
        s.queue = keep
        ws = s.ws
        ws[dst] = None
        ws.move_to_end(dst)
        while len(ws) > self.config.working_set_size:
            ws.popitem(last=False)
        n = len(s.queue) + len(leaving)
        for i, e in enumerate(leaving):
            n -= 1
            if e.key is not None:
                s.by_key.pop(e.key, None)
            reason = "head" if i == 0 else "same-destination"
            for r in e.packets:
                s.npackets -= 1
                out.append(self._ev("released", due, r, n, reason))
        if s.queue:
            s.k += 1
            s.next_release = s.arm + s.k * self.config.release_period_s
            heapq.heappush(self._heap, (s.next_release, s.src))
        else:
            s.next_release = None

    # ---- decisions -------------------------------------------------------------------------------
    def _ev(self, kind: str, t: float, r: Request, qlen: int, reason: str) -> Event:
        self.counts[kind] += 1
        return Event(kind, t, r.src, r.dst, r.sport, r.dport, r.proto, qlen, reason, r.ref)

    def _source(self, src: str) -> _Source:
        s = self._sources.get(src)
        if s is None:
            s = self._sources[src] = _Source(src, self.config.initial_working_set)
        return s

    def submit(self, req: Request, now: float | None = None) -> Decision:
        """Decide about one connection-opening packet at time `now`."""
        now = self._time(now)
        events = self._advance(now) if self._heap and self._heap[0][0] <= now else []
        s = self._source(req.src)
        c = self.config
        if s.blocked:
            events.append(self._ev("dropped", now, req, 0, "blocked"))
            return Decision(DROP, events)
        ws = s.ws
        if req.dst in ws:
            ws.move_to_end(req.dst)
            events.append(self._ev("passed", now, req, len(s.queue), "hit"))
            return Decision(PASS, events)
        key = None
        if c.policy == "connections" and req.sport is not None:
            key = (req.dst, req.sport, req.proto)
            e = s.by_key.get(key)
            if e is not None:
                e.packets.append(req)
                s.npackets += 1
                events.append(self._ev("queued", now, req, len(s.queue), "joined"))
                return Decision(QUEUE, events)
        if len(ws) < c.working_set_size:
            ws[req.dst] = None
            events.append(self._ev("passed", now, req, len(s.queue), "room"))
            return Decision(PASS, events)
        if len(s.queue) >= c.delay_queue_limit:
            self._block(s, req, now, events)
            return Decision(DROP, events)
        e = _Entry(req.dst, key, req, now)
        s.queue.append(e)
        s.npackets += 1
        if key is not None:
            s.by_key[key] = e
        events.append(self._ev("queued", now, req, len(s.queue), "entry"))
        if len(s.queue) == 1:
            self._arm(s, now)
        return Decision(QUEUE, events)

    def _block(self, s: _Source, req: Request, now: float, events: list[Event]) -> None:
        s.blocked = True
        s.blocked_at = now
        events.append(self._ev("blocked", now, req, len(s.queue), "limit"))
        self._flush(s, now, "flushed", events)

    def _flush(self, s: _Source, now: float, reason: str, events: list[Event]) -> None:
        n = len(s.queue)
        for e in s.queue:
            n -= 1
            for r in e.packets:
                events.append(self._ev("dropped", now, r, n, reason))
        s.queue = []
        s.by_key.clear()
        s.npackets = 0
        s.next_release = None

    def reset(self, src: str | None = None, now: float | None = None) -> list[Event]:
        """Return one source (or every source) to the initial state; packets still queued are dropped."""
        now = self._time(now)
        events = self._advance(now)
        targets = list(self._sources) if src is None else [src] if src in self._sources else []
        for name in targets:
            self._flush(self._sources.pop(name), now, "reset", events)
        self.counts["reset"] += 1
        events.append(Event("reset", now, src, queue_len=0, reason=None))
        return events

    def drop_all(self, now: float | None = None, reason: str = "shutdown") -> list[Event]:
        """Drop every queued packet (e.g. when the daemon stops), without releasing what is due."""
        now = self._time(now)
        events: list[Event] = []
        for s in self._sources.values():
            if s.queue:
                self._flush(s, now, reason, events)
        return events

    def clone(self) -> Throttle:
        """An independent copy of the whole state, for what-if runs (the model deciding an arrival before a
        release tick instead of after it). Requests are shared between the two: treat them as immutable."""
        c = Throttle(self.config, self.clock)
        c._now, c._heap, c.counts = self._now, list(self._heap), dict(self.counts)
        for name, s in self._sources.items():
            n = c._sources[name] = _Source(name, ())
            n.ws = OrderedDict(s.ws)
            copies: dict[int, _Entry] = {}
            for e in s.queue:
                x = copies[id(e)] = _Entry(e.dst, e.key, e.packets[0], e.t)
                x.packets = list(e.packets)
                n.queue.append(x)
            n.by_key = {k: copies[id(e)] for k, e in s.by_key.items()}
            n.blocked, n.blocked_at, n.arm, n.k = s.blocked, s.blocked_at, s.arm, s.k
            n.next_release, n.npackets = s.next_release, s.npackets
        return c

    # ---- inspection ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Per source: working set (least recently used first), queue length (entries and packets),
        blocked flag and time, next release. As of the last call that took a time."""
        return {src: {"working_set": list(s.ws), "queue_len": len(s.queue), "queued_packets": s.npackets,
                      "blocked": s.blocked, "blocked_at": s.blocked_at, "next_release": s.next_release}
                for src, s in self._sources.items()}

    def queue_len(self, src: str) -> int:
        s = self._sources.get(src)
        return len(s.queue) if s else 0

    def is_blocked(self, src: str) -> bool:
        s = self._sources.get(src)
        return bool(s and s.blocked)
