"""The benign schedule: which connection is due when, to which server, by which protocol — a pure function of
its parameters and seed (no clock, no sockets), so the same seed always gives the same schedule.

A session is a sequence of *pages*. Pages arrive at `rate / burst` per second — a Poisson process (exponential
gaps) or periodically (every `burst / rate` s, the first at 0) — during `duration_s`; each page opens `burst`
connections at the same instant (a web page fetching several objects at once), so the mean connection rate is
`rate`. Each connection independently picks a server by popularity — `zipf` (server k of n, counted from 1 in
the order given, with weight 1/k^s) or `uniform` — and is UDP (a DNS-like lookup) with probability
`udp_fraction`, otherwise TCP. At most `max_connections` connections.

A *miss* (`miss`, a fraction in [0, 1]; default 0): each connection goes, with probability `miss`, to one of
the `stale` addresses instead (uniformly) — a lab address that runs no server, the stale entry (an old DNS
answer, a moved service) that makes a benign host's first contact fail, the everyday false positive of a
scan detector. Its `server` index counts on after the servers (n, n + 1, … over `stale`), and `miss` is true.
With `miss` 0 no draw is made for it: the schedule is the one it was without.

Only `random.Random(seed).random()` is used (Mersenne Twister, stable across Python versions); exponential gaps,
popularity and protocol draws are derived from it here, not by library helpers whose algorithms may change.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

POPULARITIES = ("zipf", "uniform")
ARRIVALS = ("poisson", "periodic")
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class Conn:
    """One scheduled connection: due `t` seconds after the session starts."""

    i: int          # position in the schedule, from 0
    t: float        # seconds after the start
    page: int       # the page (burst) it belongs to; a replayed trace has one page per connection
    server: int     # index into the server list
    addr: str       # the server's address
    protocol: str   # tcp | udp
    port: int
    miss: bool = False   # to a stale address (no server there): the connection fails


@dataclass(frozen=True)
class GenSpec:
    """What a generated session is made of (validated by params.gen_spec)."""

    servers: tuple[str, ...]
    rate: float                 # mean new connections per second
    duration_s: float
    burst: int = 1
    popularity: str = "zipf"
    zipf_s: float = 1.0
    arrivals: str = "poisson"
    udp_fraction: float = 0.0
    tcp_port: int = 8080
    udp_port: int = 5353
    seed: int = 0
    max_connections: int = 1_000_000
    stale: tuple[str, ...] = ()     # addresses with no server, reached by the `miss` share of connections
    miss: float = 0.0


def popularity_weights(n: int, popularity: str, zipf_s: float = 1.0) -> list[float]:
    """Normalised weight of each of n servers (index 0 is the most popular under zipf)."""
    if popularity == "uniform":
        return [1.0 / n] * n
    if popularity != "zipf":
        raise ValueError(f"popularity {popularity!r}: expected one of {', '.join(POPULARITIES)}")
    raw = [1.0 / (k ** zipf_s) for k in range(1, n + 1)]
    total = math.fsum(raw)
    return [w / total for w in raw]


def page_times(spec: GenSpec, rng: random.Random) -> Iterable[float]:
    """Page start times in [0, duration_s), increasing."""
    page_rate = spec.rate / spec.burst
    if spec.arrivals == "periodic":
        k = 0
        while k / page_rate < spec.duration_s:
            yield k / page_rate
            k += 1
        return
    t = 0.0
    while True:
        t += -math.log(1.0 - rng.random()) / page_rate
        if t >= spec.duration_s:
            return
        yield t


def generate(spec: GenSpec) -> list[Conn]:
    """The schedule of a generated session (a pure function of `spec`)."""
    rng = random.Random(spec.seed)
    cum = []
    acc = 0.0
    for w in popularity_weights(len(spec.servers), spec.popularity, spec.zipf_s):
        acc += w
        cum.append(acc)
    cum[-1] = 1.0
    out: list[Conn] = []
    for page, t in enumerate(page_times(spec, rng)):
        for _ in range(spec.burst):
            if len(out) >= spec.max_connections:
                return out
            miss = spec.miss > 0 and bool(spec.stale) and rng.random() < spec.miss
            if miss:
                k = min(int(rng.random() * len(spec.stale)), len(spec.stale) - 1)
                server, addr = len(spec.servers) + k, spec.stale[k]
            else:
                server = min(bisect.bisect_right(cum, rng.random()), len(cum) - 1)
                addr = spec.servers[server]
            udp = spec.udp_fraction > 0 and rng.random() < spec.udp_fraction
            out.append(Conn(len(out), t, page, server, addr, "udp" if udp else "tcp",
                            spec.udp_port if udp else spec.tcp_port, miss))
    return out


def fingerprint(conns: Sequence[Conn]) -> str:
    """SHA-256 of the schedule's canonical JSON (times to the nanosecond): equal schedules, equal prints."""
    h = hashlib.sha256()
    for c in conns:
        h.update(json.dumps([c.i, round(c.t, 9), c.page, c.server, c.addr, c.protocol, c.port]).encode())
        h.update(b"\n")
    return h.hexdigest()


def new_destinations(conns: Sequence[Conn], working_set: int) -> int:
    """Connections to a server that is not among the `working_set` servers used most recently (an LRU list
    that starts empty): the new destinations a Williamson throttle with that working set would see, were every
    connection of the schedule let through at once. A description of the schedule, not the throttle's model."""
    recent: list[int] = []
    misses = 0
    for c in conns:
        if c.server in recent:
            recent.remove(c.server)
        else:
            misses += 1
            if len(recent) >= working_set:
                recent.pop(0)
        recent.append(c.server)
    return misses


def summary(conns: Sequence[Conn], duration_s: float | None = None, working_set: int = 5) -> dict:
    """Counts a reader checks a schedule by: connections, pages, distinct servers, per protocol, the mean rate,
    and the new destinations against an LRU working set of `working_set` servers (and their rate)."""
    servers = {c.server for c in conns}
    protos = {p: sum(1 for c in conns if c.protocol == p) for p in PROTOCOLS}
    span = duration_s if duration_s is not None else (conns[-1].t if conns else 0.0)
    new = new_destinations(conns, working_set)
    misses = sum(1 for c in conns if c.miss)
    return {"connections": len(conns), "pages": len({c.page for c in conns}), "servers_used": len(servers),
            **({"misses": misses} if misses else {}),
            "per_protocol": protos, "span_s": span,
            "rate_per_s": (len(conns) / span) if span > 0 else None,
            "working_set": working_set, "new_destinations": new,
            "new_destinations_per_s": (new / span) if span > 0 else None}


def to_csv(conns: Sequence[Conn]) -> str:
    """The schedule as a replayable trace CSV (time, destination index, protocol, port)."""
    lines = ["time,destination,protocol,port"]
    lines += [f"{c.t!r},{c.server},{c.protocol},{c.port}" for c in conns]
    return "\n".join(lines) + "\n"


def to_jsonl(conns: Sequence[Conn]) -> str:
    return "".join(json.dumps(asdict(c)) + "\n" for c in conns)
