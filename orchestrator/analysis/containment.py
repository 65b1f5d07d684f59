"""Black-box containment figures from the wire, the same for every mechanism (docs/mechanisms.md): pure
functions of the capture's columns, no I/O.

- `worm_times`: the worm's new attempts seen on the wire (retransmissions not counted), or — with the capture
  in front of a gateway or wire mechanism — the first answers coming back (what got through);
- `figures`: contained_s (first attempt → last one on the wire, when the wire then stays silent of the worm for
  quiet_s to the end of the trial; None when never contained), out_before_contained (the attempts on the wire
  up to then), wire_rate (attempts per second after the first second, while the worm still offered new ones:
  what a limiter lets out);
- `block_contradicted`: a mechanism's own block time against the wire (the worm seen after it is a finding).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from typing import Any

import numpy as np

from mechanisms.ratelimit.model import OFFER_END_S, wire_rate
from orchestrator.analysis.pcap import TCP_ACK, TCP_RST, TCP_SYN

QUIET_S = 5.0              # wire silence that says the worm was contained
BLOCK_TOLERANCE_S = 0.25   # a packet this close after a block time still counts as before it (clock and capture)


def _v4(a: str) -> int:
    return int(ipaddress.IPv4Address(a))


def worm_times(att, *, src: str, scan: str, dport: int, protocol: str) -> np.ndarray:
    """Sorted capture times of the worm's new attempts (from src into the scanned range on its port)."""
    net = ipaddress.ip_network(scan)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    mask = ((att.src == _v4(src)) & (att.dst >= lo) & (att.dst <= hi) & (att.dport == dport)
            & (att.proto == (6 if protocol == "tcp" else 17)) & att.attempt & ~att.repeat)
    return np.sort(att.ts[mask])


def answer_times(pk, *, src: str, scan: str, dport: int, unseen: Collection[str] = ()) -> np.ndarray:
    """Sorted times of the first answer (RST, or SYN+ACK) to each of the worm's attempts (destination, source
    port) from the scanned range on its port — what passed a mechanism in front of which the capture stands.
    Answers from `unseen` addresses (the gateway's own, which never cross its mechanism) are left out."""
    net = ipaddress.ip_network(scan)
    lo, hi = int(net.network_address), int(net.broadcast_address)
    flags = pk.tcp_flags
    answer = ((flags & TCP_RST) != 0) | ((flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK))
    mask = pk.tcp & (pk.dst == _v4(src)) & (pk.src >= lo) & (pk.src <= hi) & (pk.sport == dport) & answer
    if unseen:
        mask &= ~np.isin(pk.src, np.array([_v4(a) for a in unseen], dtype=np.uint32))
    first: dict[tuple[int, int], float] = {}
    for a, sp, t in zip(pk.src[mask].tolist(), pk.dport[mask].tolist(), pk.ts[mask].tolist(), strict=True):
        if (a, sp) not in first or t < first[(a, sp)]:
            first[(a, sp)] = t
    return np.array(sorted(first.values()), dtype=np.float64)


def figures(times, *, end: float, first: float | None = None, quiet_s: float = QUIET_S,
            block: float | None = None, tolerance_s: float = BLOCK_TOLERANCE_S,
            last_send: float | None = None) -> dict[str, Any]:
    """The containment figures of one trial from the worm's attempt times on the wire (`times`, any order),
    the trial's end and the worm's first attempt (`first`, default the first on the wire), all on one clock.

    Contained: the wire carried the worm last at `last`, and nothing of it from then to `end`, at least
    quiet_s long — or the mechanism logged a block (`block`) that the wire does not contradict (nothing of the
    worm later than tolerance_s after it, to the end: a trial ends soon after a block). A worm that never
    reached the wire is contained at once (contained_s 0, none out). `last_send`: the worm's last new attempt
    (its log), which bounds the wire_rate window (mechanisms/ratelimit: `wire_rate`)."""
    ts = np.sort(np.asarray(times, dtype=np.float64))
    start = first if first is not None else (float(ts[0]) if ts.size else None)
    out: dict[str, Any] = {"wire_attempts": int(ts.size), "quiet_s": quiet_s,
                           "wire_rate": wire_rate(ts.tolist(), until=None if last_send is None
                                                  else last_send + OFFER_END_S) if ts.size else None,
                           "wire_first": float(ts[0]) if ts.size else None,
                           "wire_last": float(ts[-1]) if ts.size else None}
    if start is None:        # nothing to time from: the worm made no attempt that anyone saw
        return out | {"contained": None, "contained_s": None, "out_before_contained": None, "silent_s": None}
    last = float(ts[-1]) if ts.size else start
    silent = end - last
    contained = silent >= quiet_s or (block is not None and last <= block + tolerance_s and end >= block)
    return out | {"contained": contained, "silent_s": round(silent, 6),
                  "contained_by": None if not contained else "quiet" if silent >= quiet_s else "block",
                  "contained_s": max(0.0, last - start) if contained else None,
                  "out_before_contained": int(ts.size) if contained else None}


def block_contradicted(times, block: float | None, *, tolerance_s: float = BLOCK_TOLERANCE_S) -> dict[str, Any] | None:
    """A finding when the wire carried the worm after the mechanism said it blocked it (None: no block, or
    the wire agrees)."""
    if block is None:
        return None
    ts = np.asarray(times, dtype=np.float64)
    after = ts[ts > block + tolerance_s]
    if not after.size:
        return None
    return {"code": "block_contradicted_by_wire", "severity": "error", "count": int(after.size),
            "message": f"the mechanism logged a block, but the wire carried {after.size} of the worm's attempts "
                       f"after it (the last {float(after[-1]) - block:.3f} s later): its block is not a result"}
