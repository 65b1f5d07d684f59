"""A spread's infections (issue 16), from the test-worm servers' own logs, each confirmed on the wire; and the
epidemic figures of a set of infection times (t_first_s, t_50_s, t_90_s, t_all_s, infected_final) that a
trial and the spread model share. Pure apart from reading the capture in `confirm_on_wire`'s caller.

An infection is a server's `request` event for an accepted trigger (testworm/server.py): its time, the peer
(address and port) that sent it and the generation. The triggering connection is the scan's own: a SYN from
that peer address and port to the server's, and a segment with data (the trigger) on it. An infection the
capture does not show is a finding, never dropped.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.analysis.attempts import ip_to_int
from orchestrator.analysis.packets import TCP_PSH, TCP_SYN, Packets

CSV_COLUMNS = ("host", "infected_at_s", "by", "generation", "confirmed_on_wire", "wire_at_s")
FRACTIONS = (("t_50_s", 0.5), ("t_90_s", 0.9))
FIGURE_KEYS = ("t_first_s", "t_50_s", "t_90_s", "t_all_s")


@dataclass
class Infection:
    host: str
    infected_at_s: float          # from the injection (the initial host's accepted trigger): on the servers'
                                  # clocks, or the capture's (`on_capture_clock`)
    by: str                       # the host (or the injector) whose connection carried the trigger
    generation: int
    peer: str                     # "address:port" of that connection's sender
    confirmed_on_wire: bool | None = None     # None: no capture to check against
    wire_at_s: float | None = None            # the triggering SYN on the wire, from the injection's SYN
    t_wall: float | None = None               # the server's own time of the trigger it took (its clock)
    trigger_wire: float | None = None         # the capture's time of the segment that carried the trigger

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in CSV_COLUMNS}


def trigger_event(events: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The server's first accepted trigger (a host is infected once: later triggers are refused)."""
    return next((e for e in events if e.get("event") == "request" and e.get("cmd") == "trigger"
                 and e.get("ok") is True), None)


def infections_from_logs(logs: Mapping[str, Iterable[Mapping[str, Any]]], names: Mapping[str, str],
                         initial: str) -> list[Infection]:
    """Every infected host's infection, in time order. `logs`: host → its server's events; `names`: address
    → host name (the injector's too). Times are from the initial host's trigger (the injection); [] when the
    initial host's server never took its trigger."""
    first = {h: e for h, evs in logs.items() if (e := trigger_event(evs)) is not None}
    if initial not in first:
        return []
    t0 = float(first[initial]["t_wall"])
    out = []
    for host, e in first.items():
        peer = str(e.get("peer", ""))
        addr = peer.rsplit(":", 1)[0]
        out.append(Infection(host, round(float(e["t_wall"]) - t0, 6), names.get(addr, addr),
                             int(e.get("generation") or 0), peer, t_wall=float(e["t_wall"])))
    return sorted(out, key=lambda i: (i.infected_at_s, i.host))


def confirm_on_wire(infections: list[Infection], pk: Packets, addrs: Mapping[str, str], port: int) -> None:
    """Mark each infection confirmed when the capture holds its triggering connection: a SYN from the peer's
    address and port to the host's `port`, and a data segment on it. `addrs`: host → its address. The SYN's
    capture time goes into wire_at_s (seconds since the epoch, until `wire_relative`), the first data segment's
    into trigger_wire."""
    tcp = pk.tcp
    for inf in infections:
        addr, _, sport = inf.peer.rpartition(":")
        dst = addrs.get(inf.host)
        if not addr or not sport.isdigit() or dst is None:
            inf.confirmed_on_wire = False
            continue
        flow = tcp & (pk.src == ip_to_int(addr)) & (pk.sport == int(sport)) & (pk.dst == ip_to_int(dst)) \
            & (pk.dport == port)
        idx = np.flatnonzero(flow)
        flags = pk.tcp_flags[flow]
        syns = idx[(flags & TCP_SYN) != 0]
        data = idx[(flags & TCP_PSH) != 0]             # the trigger line (sent in one write: PSH)
        inf.confirmed_on_wire = bool(syns.size) and bool(data.size)
        inf.wire_at_s = float(pk.ts[syns[0]]) if syns.size else None
        inf.trigger_wire = float(pk.ts[data[0]]) if data.size else None


def clock_offsets(infections: Sequence[Infection]) -> dict[str, float]:
    """Each infected host's clock against the capture's, tied by the trigger it took: its server's time of the
    trigger minus the capture's time of the segment that carried it (the clocks' offset plus that segment's
    way into the server, ~ms). Hosts whose trigger the capture does not show have none."""
    return {i.host: round(i.t_wall - i.trigger_wire, 6) for i in infections
            if i.t_wall is not None and i.trigger_wire is not None}


def on_capture_clock(infections: list[Infection], initial: str) -> bool:
    """infected_at_s from the capture's clock: each infection at its trigger's segment on the wire, from the
    initial infection's. For a lab whose hosts keep their own clocks (VMs: no shared kernel, no time sync), where
    the servers' times are on as many clocks as hosts. An infection the capture does not show keeps its server's
    time (and is a finding). False, nothing changed: the initial trigger is not on the capture."""
    t0 = next((i.trigger_wire for i in infections if i.host == initial), None)
    if t0 is None:
        return False
    for i in infections:
        if i.trigger_wire is not None:
            i.infected_at_s = round(i.trigger_wire - t0, 6)
    infections.sort(key=lambda i: (i.infected_at_s, i.host))
    return True


def wire_relative(infections: list[Infection]) -> None:
    """wire_at_s from the initial infection's SYN on the wire (None for all when it is not there)."""
    t0 = infections[0].wire_at_s if infections else None
    for inf in infections:
        t = inf.wire_at_s
        inf.wire_at_s = round(t - t0, 6) if t is not None and t0 is not None else None


def findings(infections: list[Infection]) -> list[dict[str, Any]]:
    return [{"kind": "infection-not-on-wire", "host": i.host, "by": i.by, "peer": i.peer,
             "detail": f"{i.host}'s server took a trigger from {i.peer} at {i.infected_at_s:.3f} s that the "
                       "capture does not show"} for i in infections if i.confirmed_on_wire is False]


def write_csv(infections: Sequence[Infection], path: str | Path) -> Path:
    p = Path(path)
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for i in infections:
            w.writerow(i.row())
    return p


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- the epidemic's figures, shared with the model

def epidemic(times: Sequence[float], hosts: int) -> dict[str, Any]:
    """The figures of one spread: `times` are the infection times (inf or absent: never) of `hosts`
    vulnerable hosts, the initial one among them at 0. t_first_s: the second host; t_50_s / t_90_s: when at
    least half / 90 % of the hosts are infected; t_all_s: all of them (None: never)."""
    fell = sorted(t for t in times if t is not None and math.isfinite(t))
    out: dict[str, Any] = {"hosts": hosts, "infected_final": len(fell)}

    def at(count: int) -> float | None:
        return round(fell[count - 1], 6) if 0 < count <= len(fell) else None

    out["t_first_s"] = at(2)
    for key, frac in FRACTIONS:
        out[key] = at(max(1, math.ceil(frac * hosts)))
    out["t_all_s"] = at(hosts)
    return out


def curve(times: Sequence[float], grid: Sequence[float]) -> list[int]:
    """Infected hosts at each time of `grid` (a host counts from its infection time on)."""
    t = np.sort(np.asarray([x for x in times if x is not None and math.isfinite(x)], dtype=float))
    return [int(v) for v in np.searchsorted(t, np.asarray(grid, dtype=float), side="right")]


def blocked_at(events: Iterable[Mapping[str, Any]], t0_wall: float) -> float | None:
    """When a mechanism's event log (docs/event-logs.md) first blocks a source, from the injection."""
    e = next((e for e in events if e.get("event") == "blocked"), None)
    return round(float(e["t_wall"]) - t0_wall, 6) if e is not None and "t_wall" in e else None
