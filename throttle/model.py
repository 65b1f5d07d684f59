"""The throttle's model: replay arrivals through the core on a virtual clock, build arrivals from a worm log
(with the sender's SYN retransmissions), and predict stopping speed for a constant scan rate.

Retransmission schedules are offsets (seconds after the first SYN) at which the sender's stack sends the
SYN again while the attempt is still open. `linux` and `linux-classic` were measured on this project's
kernel (see docs/throttle.md and tests/throttle/test_retransmit_schedule.py); `windows2000` is the
documented behaviour of the paper's guest (initial RTO 3 s, doubled, TcpMaxConnectRetransmissions=2).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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


ENDED_BY_ITSELF = ("max_attempts", "lifetime", "targets_exhausted", "error")


def schedule_after_log(source: WormLog | Iterable[str | Mapping[str, Any]], *, src: str, retransmit: str = "linux",
                       targets: Callable[[int], Iterator[str]] | None = None, answered: bool = True,
                       unseen: Iterable[str] = ()) -> WormSchedule | None:
    """The worm's schedule past the end of its log (see WormSchedule): its rate, bursts and bounds from the
    log's `start` line, the schedule's origin from the due time of its last attempt, how late it sends from
    the median of (t_mono − due_mono). None when there is nothing to continue: the worm ended by itself (its
    `stop` line says max_attempts, lifetime, targets_exhausted or error), or the log has no start line with a
    rate, or no attempt of `src`. `targets(first)` yields the destinations from attempt `first` on (the
    worm's own generator); without it, new destinations never seen before."""
    wl = source if isinstance(source, WormLog) else read_worm_log(source)
    p = (wl.start or {}).get("params") or {}
    rate = p.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        return None
    if wl.stop is not None and wl.stop.get("reason") in ENDED_BY_ITSELF:
        return None
    own = [a for a in wl.attempts if a["src"] == src and isinstance(a.get("i"), int)]
    if not own:
        return None
    burst = p["burst"] if isinstance(p.get("burst"), int) and p["burst"] >= 1 else 1
    last = max(own, key=lambda a: a["i"])
    due = last.get("due_mono")
    origin = (float(due) if isinstance(due, (int, float)) else float(last["t_mono"])) \
        - (last["i"] // burst) * burst / rate
    late = sorted(float(a["t_mono"]) - float(a["due_mono"]) for a in own
                  if isinstance(a.get("due_mono"), (int, float)))
    cut = float(wl.stop["t_mono"]) if wl.stop is not None and isinstance(wl.stop.get("t_mono"), (int, float)) \
        else max(float(a.get("t_done_mono") or a["t_mono"]) for a in wl.attempts)
    protocol = str(p.get("protocol") or last.get("protocol", "tcp"))
    lifetime = p.get("lifetime_s")
    first = last["i"] + 1
    timeout = p.get("connect_timeout_s")
    return WormSchedule(
        src=src, protocol=protocol, cut=cut, origin=origin, rate=float(rate), first=first,
        max_attempts=int(p["max_attempts"]) if isinstance(p.get("max_attempts"), int) else 2**62,
        end=origin + float(lifetime) if isinstance(lifetime, (int, float)) else math.inf,
        targets=(lambda: targets(first)) if targets is not None else (lambda: (f"unlogged-{i}" for i in itertools.count(first))),
        burst=burst, lateness=late[len(late) // 2] if late else 0.0,
        sport=last.get("sport") if protocol == "udp" else None, dport=p.get("port", last.get("dport")),
        offsets=retransmit_schedule(retransmit) if protocol == "tcp" else (),
        connect_timeout_s=float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else 3.0,
        answered=answered, unseen=frozenset(unseen),
        still_open=tuple((a["i"], float(a["t_mono"]), str(a["dst"]), a.get("sport")) for a in own
                         if a.get("aborted") and protocol == "tcp"))


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
    ties: list[Tie] = field(default_factory=list)     # arrivals within the tie window of a release tick
    complex_ties: int = 0                              # of them, ties whose orders leave different states
    unexplored: bool = False                           # the late run met an ordering no run of it can follow


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
            if e.src is None:
                continue
            src = e.src
            sr = self.sources[src]
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
                self.out_ids[src].add(ident if ident is not None else object())
            if e.event == "blocked":
                sr.blocked_at = e.t
                sr.out_before_block = len(self.out_ids[src])
                sr.attempts_before_block = len(self.seen_ids[src])
            if sr.queue_curve[-1][1] != e.queue_len or e.event == "blocked":
                sr.queue_curve.append((e.t, e.queue_len))

    def finish(self) -> None:
        for src, sr in self.sources.items():
            if sr.blocked_at is None:
                sr.out_before_block = len(self.out_ids[src])
                sr.attempts_before_block = len(self.seen_ids[src])


# ---- ties at the release tick ---------------------------------------------------------------------------

TIE_ORDERS = ("exact", "arrival", "release")
BEFORE_TICK_S = 1e-6     # an arrival decided before its tick is decided this long before it


@dataclass(frozen=True)
class Ties:
    """How the replay decides an arrival that falls within `window_s` of a release tick of its own source —
    closer than the daemon's decision jitter, so that either may in truth have been decided first.

    prefer: `exact` — by the exact times (the strict prediction; ties are only recorded); `arrival` — the
    arrival first (the queue fills early); `release` — the release first (late; the arrival is then decided at
    the tick itself, so the two orders leave the release clock in the same phase). A tie whose arrival's
    destination is in the working set is *complex*: its two orders leave different working sets, so what
    follows can differ; `choices` gives each complex tie's order by its turn (0: `prefer`, 1: the other; past
    the end: `prefer`). Every other tie leaves the same state either way, except that an arrival decided
    first sees the queue longer by what the tick releases (docs/throttle.md, "Ties at the release tick")."""

    window_s: float
    prefer: str = "exact"
    choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        w = self.window_s
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"the tie window must be a finite number of seconds >= 0, got {w!r}")
        if self.prefer not in TIE_ORDERS:
            raise ConfigError(f"unknown tie order {self.prefer!r}; known: {', '.join(TIE_ORDERS)}")


@dataclass
class Tie:
    """An arrival within the tie window of its source's release tick, and which the replay decided first.
    `alternative`: the release went first here, but had the arrival gone first it would have blocked the
    source — that block (`blocked_at`, and what was out by then)."""

    t: float
    tick: float
    src: str
    order: str
    complex: bool = False
    alternative: dict[str, Any] | None = None


def _first(a: Arrival, tick: float, now: float) -> float:
    """When an arrival decided before its tick is decided: at its own time if that is before the tick."""
    return max(now, a.t if a.t < tick else tick - BEFORE_TICK_S)


class _Probe:
    """The late run's what-if for one tick: the arrivals tied to it decided *before* its release, on a clone
    of the core taken just before it. The first of them that blocks is one more reachable outcome."""

    def __init__(self, eng: _Engine, src: str, tick: float):
        self.src, self.tick = src, tick
        self.core = eng.core.clone()
        self.held = dict(eng.tally.held)
        self.out = set(eng.tally.out_ids.get(src, ()))
        sr = eng.tally.sources.get(src)
        self.packets = sr.packets_out_before_block if sr else 0
        self.now = eng.now
        self.done = False

    def feed(self, a: Arrival, placement: str) -> dict[str, Any] | None:
        ident = a.identity()
        if self.done or (placement == "host" and a.retransmit and self.held.get(ident, 0) > 0):
            return None
        self.now = t = _first(a, self.tick, self.now)
        for e in self.core.submit(Request(a.src, a.dst, a.sport, a.dport, a.proto, ref=a), t).events:
            if e.event == "blocked":
                self.done = True
                return {"blocked_at": t, "out_before_block": len(self.out), "packets_out_before_block": self.packets}
            if e.event == "queued" and ident is not None:
                self.held[ident] = self.held.get(ident, 0) + 1
            elif e.event in ("passed", "released"):
                self.out.add(ident if ident is not None else object())
                self.packets += 1
        return None


class _Engine:
    """A fresh core on a virtual clock fed one arrival at a time, ties decided by a `Ties` rule."""

    def __init__(self, config: ThrottleConfig, placement: str, ties: Ties | None):
        self.core = Throttle(config, clock=lambda: 0.0)
        self.tally = _Tally()
        self.placement = placement
        self.rule = ties if ties is not None and ties.window_s > 0 else None
        self.now = -math.inf
        self.ties: list[Tie] = []
        self.complex = 0
        self.unexplored = False     # an ordering this run's choices cannot reach (see _group_member)
        self.probe: _Probe | None = None
        self.observers: list[Callable[[list[Event]], None]] = []

    def absorb(self, events: list[Event]) -> None:
        self.tally.absorb(events)
        for f in self.observers:
            f(events)

    def advance(self, t: float) -> None:
        if t > self.now:
            self.now = t
            self.absorb(self.core.advance(t))

    def blocked(self, src: str) -> bool:
        sr = self.tally.sources.get(src)
        return sr is not None and sr.blocked_at is not None

    def suppressed(self, a: Arrival) -> bool:
        """Host placement: the sender's stack does not retransmit a SYN while the throttle holds it."""
        return self.placement == "host" and bool(a.retransmit) and self.tally.held.get(a.identity(), 0) > 0

    def arrival(self, a: Arrival, valid: Callable[[Arrival], bool] | None = None) -> None:
        rule = self.rule
        self.advance(a.t - rule.window_s if rule else a.t)    # ticks before the window go first in any order
        if valid is not None and not valid(a):
            return
        t = max(a.t, self.now)
        if rule is not None:
            tie = self._tie(a, rule)
            if tie is not None:
                self.ties.append(tie)
                if tie.order == "release" and rule.prefer != "exact":
                    t = max(tie.tick, self.now)
                elif tie.order == "arrival":
                    t = _first(a, tie.tick, self.now)
            else:
                self._group_member(a, rule)
        self.advance(t)
        sr = self.tally.arrival(a)
        if self.suppressed(a):
            sr.suppressed_retransmits += 1
            return
        self.absorb(self.core.submit(Request(a.src, a.dst, a.sport, a.dport, a.proto, ref=a), t).events)

    def _tie(self, a: Arrival, rule: Ties) -> Tie | None:
        due = self.core.next_due()
        if due is None or due > a.t + rule.window_s:
            return None
        st = self.core.status().get(a.src)
        tick = st["next_release"] if st else None
        if st is None or tick is None or tick > a.t + rule.window_s:
            return None
        complex_ = a.dst in st["working_set"]
        if rule.prefer == "exact":
            order = "release" if a.t >= tick else "arrival"
        else:
            order = rule.prefer
            if complex_:
                k, self.complex = self.complex, self.complex + 1
                if k < len(rule.choices) and rule.choices[k]:
                    order = "arrival" if order == "release" else "release"
        tie = Tie(a.t, tick, a.src, order, complex_)
        if order == "release" and rule.prefer == "release":
            self.probe = _Probe(self, a.src, tick)
            tie.alternative = self.probe.feed(a, self.placement)
        return tie

    def _group_member(self, a: Arrival, rule: Ties) -> None:
        """In the late run, an arrival within the window of a tick an earlier arrival already let go first:
        the orders that decide both before that release are the probe's. If this one's destination was in the
        working set, such an order also changes what follows — which no run follows (marked unexplored)."""
        p = self.probe
        if p is not None and a.t > p.tick + rule.window_s:
            self.probe = p = None
        if p is None or a.src != p.src:
            return
        if not p.done and a.dst in p.core.status()[a.src]["working_set"]:
            self.unexplored = True
        alt = p.feed(a, self.placement)
        if alt is not None:
            self.ties.append(Tie(a.t, p.tick, a.src, "release", False, alt))


def replay(arrivals: Iterable[Arrival], config: ThrottleConfig | None = None, *, placement: str = "gateway",
           until: float | None = None, ties: Ties | None = None, more: WormSchedule | None = None) -> Replay:
    """Feed `arrivals` (sorted by time) through a fresh core on a virtual clock, then let it run to `until`
    (default: until every queue has drained). `placement="host"`: a retransmission is not sent while an
    earlier packet of its attempt is still held (what Linux does when the throttle sits in the sender's own
    OUTPUT hook — measured, see docs/throttle.md); `gateway`/`wire`: every retransmission arrives.
    `ties`: how arrivals within its window of a release tick are decided (default: by the exact times).
    `more`: the worm's schedule after the arrivals end, followed until its source is blocked or it ends."""
    _check_placement(placement)
    eng = _Engine(config or ThrottleConfig(), placement, ties)
    last = -math.inf
    for a in arrivals:
        if a.t < last:
            raise ValueError(f"arrivals are not sorted by time ({a.t} after {last})")
        last = a.t
        eng.arrival(a)
    if more is not None:
        cont = _Continuation(more, eng)
        while not eng.blocked(more.src) and (nxt := cont.next()) is not None:
            eng.arrival(nxt, cont.valid)
    core = eng.core
    if until is None:
        while (due := core.next_due()) is not None:
            eng.absorb(core.advance(due))
    elif until >= max(last, eng.now):
        eng.absorb(core.advance(until))
    eng.tally.finish()
    return Replay(core.config, eng.tally.sources, eng.tally.events, placement, eng.ties, eng.complex,
                  eng.unexplored)


# ---- the worm's schedule past its log -------------------------------------------------------------------

@dataclass(frozen=True)
class WormSchedule:
    """The worm's own schedule after its log ends (the runner stops it once the throttle blocks, so a block
    the model puts later can only come from here). Attempt i is due at origin + i/rate (in bursts of `burst`,
    as the worm paces them) and sent `lateness` after that, never before `cut` (where the log ends): attempts
    `first`, first + 1, … while i < max_attempts, the time is before `end` (the worm's lifetime) and
    `targets()` yields destinations. TCP attempts are retransmitted at `offsets` while open — until a packet
    of theirs leaves the throttle and is answered at once (`answered`), or `connect_timeout_s`; `still_open`
    lists the log's attempts in flight when it ended, (attempt, first SYN time, dst, sport), retransmitted
    likewise after `cut`. Destinations in `unseen` never reach the throttle (their attempts take their turn).
    `sport` is the worm's one UDP socket's port; a TCP attempt after the log gets 65536 + i, standing for
    the ephemeral port its kernel would have chosen."""

    src: str
    protocol: str
    cut: float
    origin: float
    rate: float
    first: int
    max_attempts: int
    end: float
    targets: Callable[[], Iterator[str]]
    burst: int = 1
    lateness: float = 0.0
    sport: int | None = None
    dport: int | None = None
    offsets: tuple[float, ...] = ()
    connect_timeout_s: float = 3.0
    answered: bool = True
    still_open: tuple[tuple[Any, float, str, int | None], ...] = ()
    unseen: frozenset[str] = frozenset()

    def due(self, i: int) -> float:
        return self.origin + (i // self.burst) * self.burst / self.rate


class _Continuation:
    """A WormSchedule run against an engine: closed loop, an attempt ends when the throttle lets it out."""

    def __init__(self, s: WormSchedule, eng: _Engine):
        self.s = s
        self.heap: list[tuple[float, int, Any, int, str, int | None]] = []
        self.seq = 0
        self.open_until: dict[Any, float] = {}
        self.targets = s.targets()
        self.i = s.first
        eng.observers.append(self._observe)
        for ident, t0, dst, sport in s.still_open:
            self.open_until[ident] = t0 + s.connect_timeout_s
            for k, off in enumerate(s.offsets, 1):
                if t0 + off >= s.cut and off < s.connect_timeout_s:
                    self._push(t0 + off, ident, k, dst, sport)
        self._launch()

    def _push(self, t: float, ident: Any, k: int, dst: str, sport: int | None) -> None:
        heapq.heappush(self.heap, (t, self.seq, ident, k, dst, sport))
        self.seq += 1

    def _launch(self) -> None:
        s, i = self.s, self.i
        t = max(s.due(i) + s.lateness, s.cut)
        if i >= s.max_attempts or t >= s.end or (dst := next(self.targets, None)) is None:
            return
        self.i += 1
        self._push(t, i, 0, dst, s.sport if s.protocol == "udp" else 65536 + i)

    def _observe(self, events: list[Event]) -> None:
        if not self.s.answered:
            return
        for e in events:
            if e.event in ("passed", "released") and e.ref is not None:
                ident = e.ref.attempt
                if e.t < self.open_until.get(ident, -math.inf):
                    self.open_until[ident] = e.t

    def next(self) -> Arrival | None:
        s = self.s
        while self.heap:
            t, _, ident, k, dst, sport = heapq.heappop(self.heap)
            if k == 0:
                self._launch()
                if s.protocol == "tcp":
                    self.open_until[ident] = t + s.connect_timeout_s
                    for j, off in enumerate(s.offsets, 1):
                        if off < s.connect_timeout_s:
                            self._push(t + off, ident, j, dst, sport)
            if dst not in s.unseen:
                return Arrival(t, s.src, dst, sport, s.dport, s.protocol, ident, k)
        return None

    def valid(self, a: Arrival) -> bool:
        return a.retransmit == 0 or a.t < self.open_until.get(a.attempt, math.inf)

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
        d: dict[str, Any] = {"stop_s": self.stop_s, "out_before_block": self.out_before_block,
             "packets_out_before_block": self.packets_out_before_block,
             "attempts_before_block": self.attempts_before_block,
             "arrivals_before_block": self.arrivals_before_block, "blocked": self.stop_s is not None,
             "params": self.params}
        if curve:
            d["queue_curve"] = self.queue_curve
        return d


def _check_run(rate: float, protocol: str, targets: str, connect_timeout_s: float, horizon_s: float) -> None:
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


def _prediction_config(config: ThrottleConfig | None, initial_working_set: int | None) -> ThrottleConfig:
    """The throttle's configuration for a prediction: `initial_working_set` destinations already known, and
    the armed release clock (a free clock's phase relative to the first attempt is unknown)."""
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
    return cfg


def _prediction(sr, params: dict) -> Prediction:
    """The source's tally as a prediction (nothing attempted: no source)."""
    if sr is None:
        return Prediction(None, 0, 0, 0, 0, params)
    return Prediction(sr.stop_s, sr.out_before_block, sr.packets_out_before_block, sr.attempts_before_block,
                      sr.arrivals_before_block, params, sr.queue_curve)


def predict_constant_rate(rate: float, *, protocol: str = "tcp", config: ThrottleConfig | None = None,
                          initial_working_set: int | None = None, retransmit: str = "linux",
                          placement: str = "gateway", connect_timeout_s: float = 3.0,
                          targets: str = "answer", horizon_s: float = 3600.0,
                          max_attempts: int | None = None,
                          on_out: Callable[[int, float], None] = lambda attempt, t: None) -> Prediction:
    """Simulate one source opening connections to new destinations at `rate` per second from t=0.

    Closed loop: an attempt ends when a packet of it leaves the throttle and the target answers
    (`targets="answer"`: refused or accepted at once) or at `connect_timeout_s` (the worm's, 3 s by
    default; `targets="silent"`: only then). While open, TCP attempts are retransmitted on the `retransmit`
    schedule (not while held, with placement="host"). `initial_working_set` destinations (other than the
    scan's) are already in the working set; None takes config.initial_working_set. `on_out(attempt, t)` is
    told of every packet that leaves the throttle while its attempt is still open (the spread model's hook).
    """
    _check_run(rate, protocol, targets, connect_timeout_s, horizon_s)
    _check_placement(placement)
    offsets = retransmit_schedule(retransmit) if protocol == "tcp" else ()
    cfg = _prediction_config(config, initial_working_set)
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
                    on_out(i, e.t)
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
    params = {"rate": rate, "protocol": protocol, **cfg.to_dict(), "retransmit": retransmit,
              "retransmit_offsets_s": list(offsets), "placement": placement,
              "connect_timeout_s": connect_timeout_s, "targets": targets, "horizon_s": horizon_s,
              "max_attempts": max_attempts}
    params["initial_working_set"] = len(cfg.initial_working_set)
    return _prediction(tally.sources.get(src), params)
