"""What a benign session suffered: each connection's delay, joined with a capture's connection starts, and the
distribution and counts over the session. Pure functions of the records; `analyse(log, capture)` reads files.

Delays, all from the connection's *scheduled* time:
- `wire_s`: → its first SYN (UDP: its datagram) on the wire, from the capture (wall clock: `due_wall` in the
  log against the capture's timestamps); a SYN queued by a throttle shows up here.
- `send_s`: → when the generator called connect()/send() (its own lateness; part of `wire_s`).
- `established_s`: → the handshake completed (TCP, from the log's monotonic clock).
- `answer_s`: → the first byte of the answer.

Join: by (protocol, src, sport, dst, dport); a connection takes the first packet of its key not before its
scheduled wall time minus `slack_s` (clock granularity) and not taken by an earlier connection; the SYNs of
that key after it and before the next connection of the key are its retransmissions. Percentiles interpolate
linearly between the closest ranks (NumPy's default), so p50 of [1, 2] is 1.5.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

from testworm.eventlog import read_events

from . import pcap

OUTCOMES = ("ok", "refused", "reset", "timeout", "unreachable", "bad_answer")
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def quantile(sorted_values: Sequence[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values: Iterable[float | None]) -> dict[str, float | int | None]:
    v = sorted(x for x in values if x is not None)
    out: dict[str, float | int | None] = {"n": len(v)}
    for name, q in QUANTILES:
        out[name] = quantile(v, q) if v else None
    out["max"] = v[-1] if v else None
    return out


def attempts_on_wire(packets: Iterable[pcap.Packet]) -> dict[tuple, list[float]]:
    """Times of every SYN-without-ACK and every datagram, by (protocol, src, sport, dst, dport), sorted."""
    by: dict[tuple, list[float]] = {}
    for p in packets:
        if p.proto == "tcp" and p.flags & (pcap.TCP_SYN | pcap.TCP_ACK) != pcap.TCP_SYN:
            continue
        by.setdefault((p.proto, p.src, p.sport, p.dst, p.dport), []).append(p.ts)
    for v in by.values():
        v.sort()
    return by


def join(conns: Sequence[dict], wire: dict[tuple, list[float]] | None, slack_s: float = 1.0) -> list[dict]:
    """One row per connection record (in schedule order) with its delays; wire columns None without a capture."""
    rows = []
    by_key: dict[tuple, list[dict]] = {}
    for c in sorted(conns, key=lambda c: c["i"]):
        key = (c["protocol"], c["src"], c["sport"], c["dst"], c["dport"])
        by_key.setdefault(key, []).append(c)
        rows.append(_row(c))
    if wire is not None:
        pos = {r["i"]: r for r in rows}
        for key, cs in by_key.items():
            times = wire.get(key, [])
            cs.sort(key=lambda c: c["due_wall"])
            j = 0
            for k, c in enumerate(cs):
                j = max(j, bisect.bisect_left(times, c["due_wall"] - slack_s))
                r = pos[c["i"]]
                if j >= len(times):
                    continue
                est = c.get("t_established_mono")
                own = est is not None and times[j] <= c["due_wall"] + (est - c["due_mono"]) + slack_s
                if (k + 1 < len(cs) and times[j] >= cs[k + 1]["due_wall"] - slack_s and not own):
                    continue  # not seen (the next connection of this key starts before the next packet)
                # (`own`: an established connection's SYN came before it was established, even when a throttle
                # held it until after the next connection of the same ports was due)
                r["wire_s"] = times[j] - c["due_wall"]
                nxt = cs[k + 1]["due_wall"] - slack_s if k + 1 < len(cs) else math.inf
                end = bisect.bisect_left(times, nxt, j + 1)
                r["retransmissions"] = end - j - 1 if c["protocol"] == "tcp" else 0
                j = end
    return rows


def _row(c: dict) -> dict:
    def since(t):
        return None if t is None else t - c["due_mono"]
    return {"i": c["i"], "t_sched": c.get("t_sched"), "protocol": c["protocol"], "dst": c["dst"],
            "dport": c["dport"], "outcome": c["outcome"], "send_s": since(c["t_mono"]),
            "established_s": since(c.get("t_established_mono")), "answer_s": since(c.get("t_answer_mono")),
            "wire_s": None, "retransmissions": None}


def summarize(rows: Sequence[dict], *, scheduled: int | None = None, with_capture: bool = False) -> dict:
    """Counts and distributions over a session's rows. `dropped`: no answer in time (timeouts);
    `refused`: refused or reset; `not_logged`: scheduled connections with no record (the session stopped
    early)."""
    outcomes = {o: 0 for o in OUTCOMES}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    out = {"connections": len(rows), "outcomes": outcomes, "ok": outcomes["ok"], "dropped": outcomes["timeout"],
           "refused": outcomes["refused"] + outcomes["reset"], "unreachable": outcomes["unreachable"]}
    if scheduled is not None:
        out["scheduled"] = scheduled
        out["not_logged"] = scheduled - len(rows)
    if with_capture:
        seen = [r for r in rows if r["wire_s"] is not None]
        out["on_wire"] = len(seen)
        out["not_on_wire"] = len(rows) - len(seen)
        out["syn_retransmissions"] = sum(r["retransmissions"] or 0 for r in seen)
        out["delay_wire_s"] = distribution(r["wire_s"] for r in seen)
    out["delay_send_s"] = distribution(r["send_s"] for r in rows)
    out["delay_established_s"] = distribution(r["established_s"] for r in rows)
    out["delay_answer_s"] = distribution(r["answer_s"] for r in rows if r["outcome"] == "ok")
    return out


def analyse(log_path: str, capture_path: str | None = None, slack_s: float = 1.0) -> tuple[list[dict], dict]:
    """(rows, summary) of one session's log, joined with a capture when one is given."""
    evs = read_events(log_path)
    conns = [e for e in evs if e.get("event") == "conn"]
    start = next((e for e in evs if e.get("event") == "start"), None)
    wire = attempts_on_wire(pcap.read_packets(capture_path)) if capture_path else None
    rows = join(conns, wire, slack_s)
    return rows, summarize(rows, scheduled=start.get("connections") if start else None,
                           with_capture=capture_path is not None)
